"""How long the command line takes to start, each command timed in a fresh process.

Five commands, run once per round in an order shuffled per round (so load that comes and
goes hits them alike), for `runs` rounds:

- `python -c "import jax"`: the reference a quick answer is measured against;
- `python -c "import jax, flax.linen, flax.nnx, equinox, penzai.pz, optax"`: what any
  command that trains must load;
- `jaxlinear --help`;
- `jaxlinear compare --libraries nosuch --quiet`: an argument error, which must exit 2;
- `jaxlinear compare --quiet`: the default comparison, end to end, twice: with an empty
  compilation cache (`compare_cold`: a first run, which compiles the four training loops)
  and with a warm one (`compare`: every later run with the same shapes; see
  `jaxlinear._cache`). Both caches live in a temporary folder, never the user's.

Each time is the wall time of the whole child process, from start to exit, in seconds.
Imports nothing heavy, so the process that times the others stays small and idle.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

LIBRARY_IMPORTS = "import jax, flax.linen, flax.nnx, equinox, penzai.pz, optax"
_TIMEOUT_S = 600  # a command that takes this long is broken, not slow


class CommandFailed(RuntimeError):
    """A start-up command exited with another code than expected, or did not finish."""


@dataclasses.dataclass(frozen=True)
class StartupCommand:
    """One command to time.

    Attributes:
      key: its name in the JSON (`import_jax`, `import_libraries`, `help`,
        `argument_error`, `compare`).
      label: the command as a user would type it.
      argv: what is run (with the full path of the interpreter or script).
      exit_code: the exit code it must end with.
      environment: called before each run for the variables to set in its environment
        (the compilation cache folder of the `compare` runs).
    """

    key: str
    label: str
    argv: tuple[str, ...]
    exit_code: int = 0
    environment: Callable[[], dict[str, str]] = dict


def jaxlinear_argv() -> tuple[str, ...]:
    """The `jaxlinear` script on PATH, or `python -m jaxlinear.cli` where there is none."""
    script = shutil.which("jaxlinear")
    return (script,) if script else (sys.executable, "-m", "jaxlinear.cli")


def startup_commands(cache_root: str = "") -> list[StartupCommand]:
    """The six commands `measure_startup` times (see the module docstring); their
    compilation caches are made under `cache_root`."""
    python, cli = sys.executable, jaxlinear_argv()
    error = ("compare", "--libraries", "nosuch", "--quiet")
    warm_cache = {"JAXLINEAR_CACHE_DIR": os.path.join(cache_root, "warm")}
    cold_runs = itertools.count()

    def empty_cache() -> dict[str, str]:
        return {"JAXLINEAR_CACHE_DIR": os.path.join(cache_root, f"cold-{next(cold_runs)}")}

    compare = (*cli, "compare", "--quiet")
    return [
        StartupCommand("import_jax", 'python -c "import jax"', (python, "-c", "import jax")),
        StartupCommand(
            "import_libraries", f'python -c "{LIBRARY_IMPORTS}"', (python, "-c", LIBRARY_IMPORTS)
        ),
        StartupCommand("help", "jaxlinear --help", (*cli, "--help")),
        StartupCommand("argument_error", shlex.join(("jaxlinear", *error)), (*cli, *error), 2),
        StartupCommand(
            "compare_cold",
            "jaxlinear compare --quiet  (empty compilation cache)",
            compare,
            environment=empty_cache,
        ),
        StartupCommand(
            "compare",
            "jaxlinear compare --quiet  (warm compilation cache)",
            compare,
            environment=lambda: warm_cache,
        ),
    ]


def measure_startup(runs: int, *, seed: int = 0, advance: Callable[[], None] | None = None) -> dict:
    """Times every start-up command `runs` times, in fresh processes.

    Args:
      runs: rounds; each runs every command once.
      seed: seeds the order of the commands within each round.
      advance: called after each command run (`6 * runs` calls).

    Returns `{"runs", "jaxlinear", "commands": {key: {"command", "argv", "exit_code",
    "samples_s", "median_s", "min_s", "max_s"}}}`, times in seconds, `samples_s` in round
    order (so ratios can be taken within a round).

    Raises:
      CommandFailed: a command exited with another code than expected; the message has the
        end of its stderr.
    """
    with tempfile.TemporaryDirectory(prefix="jaxlinear-startup-") as cache_root:
        commands = startup_commands(cache_root)
        warm = next(command for command in commands if command.key == "compare")
        _time_command(warm)  # fills the warm cache; not a sample
        samples: dict[str, list[float]] = {command.key: [] for command in commands}
        rng = random.Random(seed)
        for _ in range(runs):
            for command in rng.sample(commands, len(commands)):
                samples[command.key].append(_time_command(command))
                if advance is not None:
                    advance()
    return {
        "runs": runs,
        "jaxlinear": shlex.join(jaxlinear_argv()),
        "commands": {
            command.key: {
                "command": command.label,
                "argv": list(command.argv),
                "exit_code": command.exit_code,
                "samples_s": samples[command.key],
                "median_s": statistics.median(samples[command.key]),
                "min_s": min(samples[command.key]),
                "max_s": max(samples[command.key]),
            }
            for command in commands
        },
    }


def _time_command(command: StartupCommand) -> float:
    """Wall seconds of one run of `command`, from start to exit; checks its exit code."""
    environment = {**os.environ, **command.environment()}
    start = time.perf_counter()
    try:
        finished = subprocess.run(
            command.argv,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,  # read as it comes, so a full pipe never stalls the child
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"`{command.label}` did not finish in {_TIMEOUT_S} s") from None
    seconds = time.perf_counter() - start
    if finished.returncode != command.exit_code:
        raise CommandFailed(
            f"`{command.label}` exited with {finished.returncode}, expected "
            f"{command.exit_code}; its stderr ends:\n{finished.stderr[-2000:]}"
        )
    return seconds
