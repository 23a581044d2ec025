"""jax's persistent compilation cache for the command line.

Compiling the four libraries' training loops is most of what `jaxlinear compare` spends after
its imports (~0.2-0.4 s per library on a 2-core CPU). jax can keep compiled programs on disk
and load them on the next run with the same shapes instead of compiling again; the command
line turns that on. Library users decide for themselves (`jax_compilation_cache_dir`).
"""

from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENT_VARIABLE = "JAXLINEAR_CACHE_DIR"


def cache_dir() -> Path | None:
    """Where the cache lives: `$JAXLINEAR_CACHE_DIR` (empty: no cache), else
    `$XDG_CACHE_HOME/jaxlinear/xla`, else `~/.cache/jaxlinear/xla`."""
    configured = os.environ.get(ENVIRONMENT_VARIABLE)
    if configured is not None:
        return Path(configured) if configured else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxlinear" / "xla"


def enable_compilation_cache() -> Path | None:
    """Points jax's persistent cache at `cache_dir()`; returns it, or `None` when off.

    A cache the user set for jax (`JAX_COMPILATION_CACHE_DIR`) is left as it is, and a folder
    that cannot be created only means running without a cache.
    """
    import jax

    if jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    folder = cache_dir()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(folder, os.W_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # jax caches only programs that took a second to compile by default; these take less,
    # and a cache hit (tens of milliseconds) still saves most of their cost.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
