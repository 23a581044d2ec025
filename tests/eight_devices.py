"""Checks on 8 simulated CPU devices, shared by tests/test_scaling.py (in-memory data) and
tests/test_stream_parallel.py (data directories).

Simulated devices exist only when `XLA_FLAGS=--xla_force_host_platform_device_count=8` is set
before jax is imported, so each check is a script run in a subprocess (`run_check`) that
prints JSON; the scripts (tests/data_parallel_check.py, tests/stream_parallel_check.py) use
`flat` and `difference_row` to compare a run on 8 devices with the same run on one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def run_check(script: Path, *args) -> dict:
    """Runs `script *args` with 8 simulated devices (no compilation cache); its JSON."""
    environment = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAXLINEAR_CACHE_DIR": "",
    }
    result = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def flat(weights) -> np.ndarray:
    """Canonical weights as one vector: `W` then `b`."""
    return np.concatenate([np.ravel(weights.weight), np.ravel(weights.bias)])


def difference_row(library: str, mode: str, batch: str, one, many, initial) -> dict:
    """How far the 8-device weights `many` are from the one-device `one`, and how far
    training moved `one` from `initial` (all `flat`), both relative to `max |one|`."""
    scale = np.abs(one).max()
    return {
        "library": library,
        "mode": mode,
        "batch": batch,
        "relative_difference": float(np.abs(many - one).max() / scale),
        "relative_change": float(np.abs(one - initial).max() / scale),
    }
