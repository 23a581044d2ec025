"""The whole benchmark in order, and the `jaxlinear bench` command.

The command line imports this module only when `jaxlinear bench` runs. The modules that
import jax are imported inside `run_bench`, so `--startup` times its child processes from
a parent that never loads jax.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.metadata
import os
import platform
import sys
from collections.abc import Callable, Iterator

from jaxlinear._registry import LIBRARY_NAMES, get_library
from jaxlinear.bench.options import BenchSizes, plan_from_args
from jaxlinear.bench.targets import bench_targets, startup_targets

# `progress(phase, total)` returns a function to call after each of the phase's units of work.
Progress = Callable[[str, int], Callable[[], None]]
_VERSIONS = ("jax", "flax", "equinox", "penzai", "optax", "numpy")


def run_bench(
    sizes: BenchSizes,
    libraries: list[str] | tuple[str, ...] = LIBRARY_NAMES,
    *,
    progress: Progress | None = None,
    command: str = "jaxlinear bench",
) -> dict:
    """Runs the whole benchmark and returns its figures (the `--json` shape).

    Args:
      sizes: problem sizes and how long to measure.
      libraries: registry names to include.
      progress: `progress(phase, total)` returns a function to call after each of the
        phase's `total` units of work (e.g. advancing a progress-bar task).
      command: the command line, recorded in the result.

    Raises:
      BenchOptionError (a `ValueError`): a size that cannot work.
      ValueError: an unknown library (the message names the valid ones).
    """
    import jax

    from jaxlinear.bench import baselines, memory, problems

    sizes.validate()
    libraries = list(libraries)
    for name in libraries:
        get_library(name)
    progress = progress or (lambda phase, total: lambda: None)
    result = {"command": command, "settings": dataclasses.asdict(sizes)}
    result["machine"] = {**machine(), "devices": [str(device) for device in jax.devices()]}

    x, y = problems.make_problem(sizes.small_samples, sizes.small_features, seed=sizes.seed)
    result["small"] = _time_problem(
        sizes,
        libraries,
        x,
        y,
        steps=sizes.small_steps,
        rounds=sizes.small_rounds,
        batch_size=None,
        seed=sizes.seed,
        advance=progress("small problem", sizes.small_rounds),
    )
    x, y = problems.make_problem(sizes.large_samples, sizes.large_features, seed=sizes.seed)
    result["large"] = _time_problem(
        sizes,
        libraries,
        x,
        y,
        steps=sizes.large_steps,
        rounds=sizes.large_rounds,
        batch_size=sizes.batch_size,
        seed=sizes.seed + 1,  # another round order than the small problem's
        advance=progress("large problem", sizes.large_rounds),
    )
    result["bandwidth_gb_s"] = result["large"].pop("bandwidth_gb_s")

    advance = progress("closed form, scikit-learn", sizes.repeats + 1)
    result.update(baselines.closed_form_and_sklearn(x, y, sizes.repeats, advance))
    del x, y
    gc.collect()

    advance = progress("peak memory (child processes)", 1)
    spec = {
        "samples": sizes.large_samples,
        "features": sizes.large_features,
        "batch_size": sizes.batch_size,
        "optimizer": sizes.optimizer,
        "seed": sizes.seed,
    }
    result["rss"] = memory.measure_rss(spec, libraries)
    advance()
    result["peak_rss_mb"] = max(entry["peak_mb"] for entry in result["rss"].values())
    result["machine"]["load_average_end"] = list(os.getloadavg())
    result["targets"] = bench_targets(result, libraries)
    # The goals are stated for the default problems; at other sizes they only inform. (The
    # key keeps its first name, so older JSON files read the same.)
    result["issue_sizes"] = sizes.are_defaults()
    return result


def _time_problem(
    sizes: BenchSizes,
    libraries: list[str],
    x,
    y,
    *,
    steps: int,
    rounds: int,
    batch_size: int | None,
    seed: int,
    advance: Callable[[], None],
) -> dict:
    """Times every variant on `x: [n, in]`, `y: [n, 1]` (numpy float32) for `rounds`
    rounds of `steps` steps; returns the problem's figures (see `summary.summarise`)."""
    import jax

    from jaxlinear.bench import summary, timing

    variants = timing.problem_variants(
        sizes,
        libraries,
        jax.device_put(x),  # shares x's memory on CPU: the data is held once
        jax.device_put(y),
        steps_per_round=steps,
        batch_size=batch_size,
    )
    timing.warm_up(variants)
    timing.run_rounds(list(variants.values()), rounds, seed, advance)
    figures = summary.summarise(variants, libraries, x, sizes, steps, batch_size)
    del variants  # the compiled functions and device buffers, before the next phase
    gc.collect()
    return figures


def run_startup(runs: int, *, progress: Progress | None = None, command: str) -> dict:
    """`--startup`: times the start-up commands (see `startup`), checks their goals.

    Returns `{"command", "machine", "startup", "targets"}` (the `--json` shape).

    Raises:
      CommandFailed: a command exited with another code than expected.
    """
    from jaxlinear.bench.startup import measure_startup, startup_commands

    progress = progress or (lambda phase, total: lambda: None)
    result = {"command": command, "machine": machine()}
    advance = progress("start-up (child processes)", runs * len(startup_commands()))
    result["startup"] = measure_startup(runs, advance=advance)
    result["machine"]["load_average_end"] = list(os.getloadavg())
    result["targets"] = startup_targets(result["startup"]["commands"])
    return result


def machine() -> dict:
    """The machine and the versions measured, read without importing any of them."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {name: importlib.metadata.version(name) for name in _VERSIONS},
        "load_average_start": list(os.getloadavg()),
    }


def run_from_args(args) -> int:
    """`jaxlinear bench`: runs, prints the tables, writes `--json`; returns the exit code.

    Returns 1, after one line on stderr, when a `--startup` command fails.

    Raises:
      BenchOptionError: before any work, for an option that cannot work.
      OSError: before any work, for a `--json` path that cannot be written.
    """
    from jaxlinear._io import check_writable, write_json_atomic
    from jaxlinear.bench import tables
    from jaxlinear.bench.startup import CommandFailed

    plan = plan_from_args(args)
    json_path = check_writable(args.json) if args.json else None
    with _phase_progress(quiet=args.quiet) as progress:
        if plan.sklearn:
            from jaxlinear.bench.estimators import run_sklearn

            result = run_sklearn(plan.sizes, LIBRARY_NAMES, progress=progress, command=plan.command)
        elif plan.startup_runs is None:
            result = run_bench(plan.sizes, progress=progress, command=plan.command)
        else:
            try:
                result = run_startup(plan.startup_runs, progress=progress, command=plan.command)
            except CommandFailed as error:
                print(f"jaxlinear bench: error: {error}", file=sys.stderr)
                return 1
    if plan.sklearn:
        tables.print_sklearn_report(result)
    elif plan.startup_runs is None:
        tables.print_report(result)
    else:
        tables.print_startup_report(result)
    if json_path is not None:
        write_json_atomic(json_path, result)
    return 0


@contextlib.contextmanager
def _phase_progress(*, quiet: bool) -> Iterator[Progress | None]:
    """Yields `phase(description, total) -> advance`, one bar per phase, or `None` if quiet."""
    from rich.progress import TimeElapsedColumn

    from jaxlinear._progress import progress_bar

    with progress_bar(TimeElapsedColumn(), quiet=quiet, label_width=28) as bar:
        if bar is None:
            yield None
            return

        def phase(description: str, total: int) -> Callable[[], None]:
            task = bar.add_task(description, total=total)
            return lambda: bar.advance(task)

        yield phase
