"""The benchmark's goals, each with the reason it is a goal, checked against the figures.

A goal is a dict (one entry of the JSON's `targets`):

- `target`: what is compared, e.g. "small, nnx: fused loop / raw JAX's fused loop" (raw
  JAX: the same training written by hand, see `problems`);
- `reason`: why that is the goal;
- `comparison`: `<=` (the measured value must be at most the limit) or `>=`;
- `limit`, `measured`: numbers (ratios, unless the target says otherwise);
- `met`: a bool.

The goals are checked in the benchmark and printed, never asserted in unit tests: timings
depend on the machine. Pure Python: the start-up goals are checked without importing jax.
"""

from __future__ import annotations

import statistics

# Limits of the full benchmark (docs/benchmarks.md).
FUSED_LIMIT = 1.10
# name -> (limit, reason): nnx and penzai models are objects, linen's and equinox's pytrees.
FAST_LIMITS = {
    "linen": (1.3, "fast_plain"),
    "equinox": (1.3, "fast_plain"),
    "nnx": (1.5, "fast_graph"),
    "penzai": (1.5, "fast_graph"),
}
EPOCH_BOUND_LIMIT = 1.5
CLOSED_FORM_SPEEDUP = 5.0
RSS_LIMIT = 1.3

# Limits of `--startup`.
QUICK_ANSWER_LIMIT = 0.5
COMPARE_LIMIT = 2.0

REASONS = {
    "fused": "a library's abstractions should cost nothing once compiled: the loop is one "
    "XLA program either way",
    "fast_plain": "once the model is flattened, a step should cost what jax's own dispatch "
    "costs; linen and equinox models are plain pytrees",
    "fast_graph": "the same, with more room: nnx and penzai models are objects that must "
    "become arrays at every call",
    "epoch": "a linear model does ~2 multiply-adds per value it reads, so a large epoch "
    "should be bound by reading X once, not by the library or the driver",
    "closed_form": "the exact solution, which every library is checked against, needs one "
    "pass over the data (normal equations) and should not be the slow part",
    "rss_process": "training should hold the data once and add little: no copy of X in any "
    "step mode",
    "rss_above": "the same, less what the interpreter, jax and the libraries take before "
    "any data, which no training code can remove",
    "help": "the command line should answer at once: its help must not wait for jax or any "
    "library to load",
    "argument_error": "a mistake in the arguments should be reported at once, before jax "
    "or any library is imported",
    "compare": "training four small models should cost little beyond loading the libraries "
    "it compares: at most as much again",
    "compare_cold": "the same on a first run, when the four training loops are compiled "
    "rather than loaded from the compilation cache",
}


def goal(target: str, reason: str, measured: float, limit: float, *, at_least: bool = False):
    """One goal's JSON entry (see the module docstring); `reason` is a key of `REASONS`."""
    met = measured >= limit if at_least else measured <= limit
    return {
        "target": target,
        "reason": REASONS[reason],
        "comparison": ">=" if at_least else "<=",
        "limit": limit,
        "measured": measured,
        "met": bool(met),
    }


def bench_targets(result: dict, libraries: list[str]) -> list[dict]:
    """The full benchmark's goals, from `run_bench`'s figures."""
    small, large = result["small"]["libraries"], result["large"]["libraries"]
    problems = (("small", small), ("large", large))
    targets = [
        goal(
            f"{problem}, {name}: fused loop / raw JAX's fused loop",
            "fused",
            entries[name]["fused_ratio"],
            FUSED_LIMIT,
        )
        for problem, entries in problems
        for name in libraries
    ]
    targets += [
        goal(
            f"small, {name}: fast step / raw JAX's jitted step",
            FAST_LIMITS[name][1],
            small[name]["fast_ratio"],
            FAST_LIMITS[name][0],
        )
        for name in sorted(libraries, key=lambda name: FAST_LIMITS[name][0])  # by reason
    ]
    batch = result["large"]["batch_size"]
    targets += [
        goal(
            f"large, {name}: epoch, batch {batch:,} / one read of X",
            "epoch",
            large[name]["epoch_bound_ratio"],
            EPOCH_BOUND_LIMIT,
        )
        for name in libraries
    ]
    targets.append(
        goal(
            "closed form: speed-up over sklearn LinearRegression.fit",
            "closed_form",
            result["sklearn_linear_regression_s"] / result["closed_form_s"],
            CLOSED_FORM_SPEEDUP,
            at_least=True,
        )
    )
    peaks = result["rss"].values()
    targets.append(
        goal(
            "peak RSS of training / data (whole process)",
            "rss_process",
            max(entry["peak_mb"] / entry["data_mb"] for entry in peaks),
            RSS_LIMIT,
        )
    )
    targets.append(
        goal(
            "peak RSS of training / data (above the imports)",
            "rss_above",
            max((entry["peak_mb"] - entry["baseline_mb"]) / entry["data_mb"] for entry in peaks),
            RSS_LIMIT,
        )
    )
    return targets


def startup_targets(commands: dict[str, dict]) -> list[dict]:
    """The start-up goals, from `measure_startup`'s `commands` (per-round ratios)."""

    def ratio(key: str, reference: str) -> float:
        pairs = zip(commands[key]["samples_s"], commands[reference]["samples_s"], strict=True)
        return statistics.median(a / b for a, b in pairs)

    return [
        goal(
            "jaxlinear --help / import jax", "help", ratio("help", "import_jax"), QUICK_ANSWER_LIMIT
        ),
        goal(
            "argument error (exit 2) / import jax",
            "argument_error",
            ratio("argument_error", "import_jax"),
            QUICK_ANSWER_LIMIT,
        ),
        goal(
            "compare --quiet / import jax + the libraries",
            "compare",
            ratio("compare", "import_libraries"),
            COMPARE_LIMIT,
        ),
        goal(
            "compare --quiet, empty cache / import jax + the libraries",
            "compare_cold",
            ratio("compare_cold", "import_libraries"),
            COMPARE_LIMIT,
        ),
    ]
