"""`jaxlinear bench`: each library's training paths against hand-written JAX, in one process.

Every library is timed through the very functions `fit` runs (its `training_steps` and
`run_epochs`), in its three step modes, next to a raw-JAX reference: a `jax.jit` step over a
dict of arrays with optax, and the same step in a `jax.lax.scan`. All variants run once per
round, in a shuffled order, for many rounds; every figure is a median with its min and max,
and every ratio is the median of the per-round ratios, so load that comes and goes on the
machine hits all variants alike.

On the large problem it also measures what bounds training from below: the memory
bandwidth (a jitted `jnp.sum` over the same X), the closed-form solution, scikit-learn's
`LinearRegression` and `SGDRegressor`, and the peak resident memory of training, taken in
child processes, one per library, that hold nothing but the data and the model
(`_rss_child`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlinear._exact import least_squares, least_squares_gram
from jaxlinear._registry import LIBRARY_NAMES, get_library
from jaxlinear._training import (
    STEP_MODES,
    TrainConfig,
    epochs_per_call,
    l2_objective,
    make_optimizer,
    run_epochs,
    steps_per_epoch,
)
from jaxlinear._weights import initial_weights


@dataclasses.dataclass(frozen=True)
class BenchSizes:
    """Problem sizes and how long to measure.

    Attributes:
      small_samples, small_features: the small problem, trained full-batch.
      small_steps: steps per variant per round on the small problem.
      small_rounds: rounds on the small problem.
      large_samples, large_features: the large problem (float32), full-batch steps and
        mini-batch epochs.
      batch_size: the mini-batch of the large problem's epoch.
      large_steps: full-batch steps per variant per round (the first is not timed).
      large_epochs: mini-batch epochs per variant per round (the first is not timed).
      large_rounds: rounds on the large problem.
      repeats: timings of the closed form and of scikit-learn.
      optimizer: `adam` or `sgd`.
      seed: seeds the data, the initial weights, the batches and the round order.
    """

    small_samples: int = 256
    small_features: int = 8
    small_steps: int = 500
    small_rounds: int = 15
    large_samples: int = 2_000_000
    large_features: int = 64
    batch_size: int = 4096
    large_steps: int = 4
    large_epochs: int = 3
    large_rounds: int = 5
    repeats: int = 3
    optimizer: str = "adam"
    seed: int = 0

    def validate(self) -> None:
        """Raises `ValueError` naming the first size that cannot work."""
        for name, low in (
            ("small_samples", 2),
            ("small_features", 1),
            ("small_steps", 2),
            ("small_rounds", 1),
            ("large_features", 1),
            ("batch_size", 1),
            ("large_steps", 2),
            ("large_epochs", 2),
            ("large_rounds", 1),
            ("repeats", 1),
        ):
            if getattr(self, name) < low:
                option = name.replace("_", "-")
                raise ValueError(f"--{option} must be at least {low}, got {getattr(self, name)}")
        if self.large_samples < 2 * self.batch_size:
            raise ValueError(
                f"--large-samples ({self.large_samples}) must be at least twice "
                f"--batch-size ({self.batch_size})"
            )


QUICK = BenchSizes(
    small_steps=100,
    small_rounds=3,
    large_samples=50_000,
    large_features=16,
    batch_size=1024,
    large_steps=3,
    large_epochs=2,
    large_rounds=2,
    repeats=1,
)

# The targets (docs/benchmarks.md); checked in the benchmark, never in unit tests.
FUSED_LIMIT = 1.10
FAST_LIMITS = {"linen": 1.3, "equinox": 1.3, "nnx": 1.5, "penzai": 1.5}
EPOCH_BOUND_LIMIT = 1.5
CLOSED_FORM_SPEEDUP = 5.0
RSS_LIMIT = 1.3


# ---------------------------------------------------------------------------------------
# Data


def make_problem(n_samples: int, in_features: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`x: [n, in]` standard normal and `y = x w + 0.1 noise: [n, 1]`, float32.

    `x` is generated in place, in float32, into a 64-byte-aligned buffer: no float64
    intermediate inflates the peak memory, and `jax.device_put` can share the buffer on CPU
    instead of copying it.
    """
    rng = np.random.default_rng(seed)
    x = _aligned_empty((n_samples, in_features), np.float32)
    rng.standard_normal(out=x, dtype=np.float32)
    true_weight = rng.standard_normal((in_features, 1), dtype=np.float32)
    y = x @ true_weight
    y += 0.1 * rng.standard_normal(y.shape, dtype=np.float32)
    return x, y


def _aligned_empty(shape: tuple[int, ...], dtype, alignment: int = 64) -> np.ndarray:
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buffer = np.empty(nbytes + alignment, np.uint8)
    offset = -buffer.ctypes.data % alignment
    return buffer[offset : offset + nbytes].view(dtype).reshape(shape)


# ---------------------------------------------------------------------------------------
# The raw-JAX reference: what a JAX user would write by hand


def _raw_functions(optimizer: optax.GradientTransformation):
    """A jitted step over a dict of arrays, and the same step scanned over batches."""

    def step(params, opt_state, x, y):
        def loss_fn(params):
            prediction = x @ params["weight"] + params["bias"][None, :]
            return l2_objective(prediction, y, params["weight"], 0.0)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @functools.partial(jax.jit, static_argnames="length")
    def fused(params, opt_state, x, y, indices, length):
        """`length` steps: on all of `x` if `indices` is None, else on rows `indices[i]`."""

        def body(carry, batch):
            xb, yb = (x, y) if batch is None else (x[batch], y[batch])
            params, opt_state, loss = step(*carry, xb, yb)
            return (params, opt_state), loss

        return jax.lax.scan(body, (params, opt_state), indices, length=length)

    @functools.partial(jax.jit, static_argnames="batch_size")
    def contiguous(params, opt_state, x, y, starts, batch_size):
        """An epoch of CONTIGUOUS batches: what the epoch costs when X is read in order."""

        def body(carry, start):
            xb = jax.lax.dynamic_slice_in_dim(x, start, batch_size)
            yb = jax.lax.dynamic_slice_in_dim(y, start, batch_size)
            params, opt_state, loss = step(*carry, xb, yb)
            return (params, opt_state), loss

        return jax.lax.scan(body, (params, opt_state), starts)

    return jax.jit(step), fused, contiguous


def _time_raw_steps(step, params, opt_state, x, y, count: int) -> float:
    """Seconds per step of a bare Python loop of `count` calls."""
    start = time.perf_counter()
    for _ in range(count):
        params, opt_state, loss = step(params, opt_state, x, y)
    jax.block_until_ready(loss)
    return (time.perf_counter() - start) / count


def _time_call(function: Callable[[], Any]) -> float:
    start = time.perf_counter()
    jax.block_until_ready(function())
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------
# One problem: every variant once per round


@dataclasses.dataclass
class _Variant:
    """A thing timed once per round; `run()` returns seconds per step (or per epoch)."""

    name: str
    run: Callable[[], float]
    samples: list[float] = dataclasses.field(default_factory=list)
    compile_seconds: float = float("nan")


def _library_variant(name, library, model, x, y, config: TrainConfig) -> _Variant:
    """A library's `training_steps` in `config.step_mode`, run by `run_epochs` each round.

    The step functions are built once, so only the first round compiles, and `run_epochs`
    splits that compilation from the steady time it reports.
    """
    steps = library.training_steps(model, config, len(x))
    variant = _Variant(name, run=lambda: 0.0)

    def run() -> float:
        _, _, compile_seconds, ms_per_step = run_epochs(
            steps.state, x, y, config, train_step=steps.train_step, train_epoch=steps.train_epoch
        )
        if not variant.samples:
            variant.compile_seconds = compile_seconds
        return ms_per_step / 1e3

    variant.run = run
    return variant


def _run_rounds(variants: list[_Variant], rounds: int, seed: int, advance: Callable[[], None]):
    """Each round runs every variant once, in an order shuffled per round.

    A garbage collection before each variant keeps collector pauses out of the timed runs;
    freezing what exists beforehand (jax, the libraries, the data) makes those collections
    cost microseconds instead of ~0.1 s.
    """
    rng = np.random.default_rng(seed)
    with _frozen_heap():
        for _ in range(rounds):
            for index in rng.permutation(len(variants)):
                gc.collect()
                variants[index].samples.append(variants[index].run())
            advance()


@contextlib.contextmanager
def _frozen_heap():
    """Moves every object alive now out of the collector's reach until the block ends."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _problem_variants(
    sizes: BenchSizes,
    libraries: list[str],
    x: jax.Array,
    y: jax.Array,
    *,
    steps_per_round: int,
    batch_size: int | None,
    extras: bool,
) -> dict[str, _Variant]:
    """raw step, raw fused and every library in every step mode on one problem.

    With `extras` (the large problem) also: a mini-batch epoch, raw and fused per library,
    the raw epoch over contiguous batches, and a jitted `jnp.sum` over `x`.
    """
    n, in_features = x.shape
    full_batch = TrainConfig(epochs=steps_per_round, optimizer=sizes.optimizer, seed=sizes.seed)
    start = initial_weights(in_features, 1, seed=sizes.seed)
    step, fused, _ = _raw_functions(make_optimizer(full_batch, n))
    params = {"weight": jnp.asarray(start.weight), "bias": jnp.asarray(start.bias)}
    opt_state = make_optimizer(full_batch, n).init(params)
    # The raw scan runs as many steps per call as the libraries' fused calls do.
    per_call = epochs_per_call(steps_per_round, 1, n * in_features)
    calls = steps_per_round // per_call
    variants = {
        "raw/step": _Variant(
            "raw/step", lambda: _time_raw_steps(step, params, opt_state, x, y, steps_per_round)
        ),
        "raw/fused": _Variant(
            "raw/fused",
            lambda: (
                sum(
                    _time_call(lambda: fused(params, opt_state, x, y, None, length=per_call))
                    for _ in range(calls)
                )
                / steps_per_round
            ),
        ),
    }
    models = {}
    for name in libraries:
        library = get_library(name)
        models[name] = library.from_canonical(start)
        for mode in STEP_MODES:
            config = dataclasses.replace(full_batch, step_mode=mode)
            key = f"{name}/{mode}"
            variants[key] = _library_variant(key, library, models[name], x, y, config)
    if not extras:
        return variants

    mini_batch = dataclasses.replace(full_batch, epochs=sizes.large_epochs, batch_size=batch_size)
    steps = steps_per_epoch(n, batch_size)
    orders = np.random.default_rng(sizes.seed).permutation(n)[: steps * batch_size]
    indices = jnp.asarray(orders.reshape(steps, batch_size).astype(np.int32))
    starts = jnp.arange(steps, dtype=jnp.int32) * batch_size
    epoch_optimizer_state = make_optimizer(mini_batch, n).init(params)
    _, fused_b, contiguous_b = _raw_functions(make_optimizer(mini_batch, n))
    variants["raw/epoch"] = _Variant(
        "raw/epoch",
        lambda: _time_call(
            lambda: fused_b(params, epoch_optimizer_state, x, y, indices, length=steps)
        ),
    )
    variants["raw/epoch_contiguous"] = _Variant(
        "raw/epoch_contiguous",
        lambda: _time_call(
            lambda: contiguous_b(params, epoch_optimizer_state, x, y, starts, batch_size=batch_size)
        ),
    )
    for name in libraries:
        key = f"{name}/epoch"
        variant = _library_variant(key, get_library(name), models[name], x, y, mini_batch)
        per_step = variant.run
        variant.run = lambda per_step=per_step: per_step() * steps
        variants[key] = variant
    total = jax.jit(jnp.sum)
    variants["bandwidth"] = _Variant("bandwidth", lambda: _time_call(lambda: total(x)))
    return variants


def _warm_up(variants: dict[str, _Variant]) -> None:
    """Compiles the raw reference (and jax itself) before anything is timed."""
    for name, variant in variants.items():
        if name.startswith("raw/") or name == "bandwidth":
            variant.run()


# ---------------------------------------------------------------------------------------
# Closed form and scikit-learn


def _exact_and_sklearn(x: np.ndarray, y: np.ndarray, repeats: int, advance) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LinearRegression, SGDRegressor

    target = y[:, 0]

    def sgd_epoch():
        with warnings.catch_warnings():
            # One epoch on purpose: sklearn warns that it has not converged.
            warnings.simplefilter("ignore", ConvergenceWarning)
            SGDRegressor(max_iter=1, tol=None, random_state=0).fit(x, target)

    timings = {"closed_form_s": [], "sklearn_linear_regression_s": [], "sklearn_sgd_epoch_s": []}
    with _frozen_heap():
        for _ in range(repeats):
            for key, function in (
                ("closed_form_s", lambda: least_squares_gram(x, y)),
                ("sklearn_linear_regression_s", lambda: LinearRegression().fit(x, target)),
                ("sklearn_sgd_epoch_s", sgd_epoch),
            ):
                gc.collect()
                timings[key].append(_time_call(function))
            advance()
        gc.collect()
        start = time.perf_counter()
        reference = least_squares(x, y)
        lstsq_seconds = time.perf_counter() - start
    gram = least_squares_gram(x, y)
    advance()
    result = {}
    for key, samples in timings.items():
        result.update(_summary(key, samples))
    result["closed_form_lstsq_s"] = lstsq_seconds
    result["closed_form_max_abs_difference"] = float(
        max(
            np.max(np.abs(gram.weight - reference.weight)),
            np.max(np.abs(gram.bias - reference.bias)),
        )
    )
    return result


# ---------------------------------------------------------------------------------------
# Peak memory of training, in a child process


def _rss_child(spec: dict) -> dict:
    """Runs in a fresh interpreter: make the data, train ONE library, report memory.

    Nothing else lives in this process (no float64 copies, no closed form, no
    scikit-learn, no other library's leftovers), so its peak resident memory (VmHWM) is that
    of training this library, with the interpreter, the imported libraries and the data.
    Training covers every step mode full-batch and a fused mini-batch epoch.
    """
    baseline = _proc_status_mb("VmRSS")
    x, y = make_problem(spec["samples"], spec["features"], seed=spec["seed"])
    x, y = jax.device_put(x), jax.device_put(y)  # shares the numpy buffers on CPU
    with_data = _proc_status_mb("VmRSS")
    start = initial_weights(spec["features"], 1, seed=spec["seed"])
    full_batch = TrainConfig(epochs=2, optimizer=spec["optimizer"], seed=spec["seed"])
    mini_batch = dataclasses.replace(full_batch, epochs=1, batch_size=spec["batch_size"])
    if spec["library"] == "raw":
        n = spec["samples"]
        step, fused, _ = _raw_functions(make_optimizer(full_batch, n))
        params = {"weight": jnp.asarray(start.weight), "bias": jnp.asarray(start.bias)}
        opt_state = make_optimizer(full_batch, n).init(params)
        _time_raw_steps(step, params, opt_state, x, y, 2)
        jax.block_until_ready(fused(params, opt_state, x, y, None, length=2))
        steps = steps_per_epoch(n, spec["batch_size"])
        order = np.random.default_rng(0).permutation(n)[: steps * spec["batch_size"]]
        indices = jnp.asarray(order.reshape(steps, -1).astype(np.int32))
        jax.block_until_ready(fused(params, opt_state, x, y, indices, length=steps))
    else:
        library = get_library(spec["library"])
        model = library.from_canonical(start)
        for mode in STEP_MODES:
            library.fit(model, x, y, dataclasses.replace(full_batch, step_mode=mode))
        library.fit(model, x, y, mini_batch)
    return {
        "data_mb": (x.nbytes + y.nbytes) / 2**20,
        "baseline_mb": baseline,
        "with_data_mb": with_data,
        "peak_mb": _proc_status_mb("VmHWM"),
    }


def _proc_status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _measure_rss(spec: dict, libraries: list[str]) -> dict:
    """`_rss_child` for raw JAX and each library, each in a fresh Python process.

    Three children run at a time at most: memory, not time, is measured there.
    """
    from concurrent.futures import ThreadPoolExecutor

    code = (
        "import json, sys; from jaxlinear._bench import _rss_child; "
        "print(json.dumps(_rss_child(json.loads(sys.argv[1]))))"
    )

    def child(name: str) -> dict:
        argv = [sys.executable, "-c", code, json.dumps({**spec, "library": name})]
        finished = subprocess.run(argv, capture_output=True, text=True, check=False)
        if finished.returncode != 0:
            raise RuntimeError(f"measuring memory of {name} failed:\n{finished.stderr[-2000:]}")
        return json.loads(finished.stdout.strip().splitlines()[-1])

    names = ["raw", *libraries]
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(names, pool.map(child, names), strict=True))


# ---------------------------------------------------------------------------------------
# Putting it together


def run_bench(
    sizes: BenchSizes,
    libraries: list[str] | tuple[str, ...] = LIBRARY_NAMES,
    *,
    progress: Callable[[str, int], Callable[[], None]] | None = None,
    command: str = "jaxlinear bench",
) -> dict:
    """Runs the whole benchmark and returns its figures (the `--json` shape).

    Args:
      sizes: problem sizes and how long to measure.
      libraries: registry names to include.
      progress: `progress(phase, total)` returns a function to call after each of the
        phase's `total` units of work (e.g. advancing a progress-bar task).
      command: the command line, recorded in the result.
    """
    sizes.validate()
    libraries = list(libraries)
    for name in libraries:
        get_library(name)  # raises ValueError naming the valid choices
    progress = progress or (lambda phase, total: lambda: None)
    result = {"command": command, "settings": dataclasses.asdict(sizes), "machine": _machine()}

    advance = progress("small problem", sizes.small_rounds)
    x, y = make_problem(sizes.small_samples, sizes.small_features, seed=sizes.seed)
    variants = _problem_variants(
        sizes,
        libraries,
        jax.device_put(x),
        jax.device_put(y),
        steps_per_round=sizes.small_steps,
        batch_size=None,
        extras=False,
    )
    _warm_up(variants)
    _run_rounds(list(variants.values()), sizes.small_rounds, sizes.seed, advance)
    result["small"] = _summarise(variants, libraries, x, sizes, sizes.small_steps, None)

    advance = progress("large problem", sizes.large_rounds)
    x, y = make_problem(sizes.large_samples, sizes.large_features, seed=sizes.seed)
    variants = _problem_variants(
        sizes,
        libraries,
        jax.device_put(x),  # shares x's memory on CPU: the data is held once
        jax.device_put(y),
        steps_per_round=sizes.large_steps,
        batch_size=sizes.batch_size,
        extras=True,
    )
    _warm_up(variants)
    _run_rounds(list(variants.values()), sizes.large_rounds, sizes.seed + 1, advance)
    result["large"] = _summarise(variants, libraries, x, sizes, sizes.large_steps, sizes.batch_size)
    result["bandwidth_gb_s"] = result["large"].pop("bandwidth_gb_s")
    del variants
    gc.collect()

    advance = progress("closed form, scikit-learn", sizes.repeats + 1)
    result.update(_exact_and_sklearn(x, y, sizes.repeats, advance))
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
    result["rss"] = _measure_rss(spec, libraries)
    advance()
    result["peak_rss_mb"] = max(entry["peak_mb"] for entry in result["rss"].values())
    result["machine"]["load_average_end"] = list(os.getloadavg())
    result["targets"] = _targets(result, libraries)
    # The targets are stated for the default sizes (the issue's); elsewhere they only inform.
    defaults = BenchSizes()
    result["issue_sizes"] = all(
        getattr(sizes, name) == getattr(defaults, name)
        for name in ("small_samples", "small_features", "large_samples", "large_features")
    ) and (sizes.batch_size, sizes.optimizer) == (defaults.batch_size, defaults.optimizer)
    return result


def _summary(key: str, samples: list[float], scale: float = 1.0) -> dict[str, float]:
    values = [scale * sample for sample in samples]
    return {key: statistics.median(values), f"{key}_min": min(values), f"{key}_max": max(values)}


def _median_ratio(samples: list[float], references: list[float]) -> float:
    """Median over rounds of `sample / reference` from the same round."""
    return statistics.median(a / b for a, b in zip(samples, references, strict=True))


def _summarise(variants, libraries, x, sizes: BenchSizes, steps_per_round, batch_size) -> dict:
    """Medians (with min and max) and per-round ratios of one problem, in microseconds."""
    n, in_features = x.shape
    raw_step, raw_fused = variants["raw/step"].samples, variants["raw/fused"].samples
    summary = {
        "samples": n,
        "features": in_features,
        "outputs": 1,
        "optimizer": sizes.optimizer,
        "steps_per_round": steps_per_round,
        "steps_per_fused_call": epochs_per_call(steps_per_round, 1, n * in_features),
        "rounds": len(raw_step),
        "raw": {**_summary("step_us", raw_step, 1e6), **_summary("fused_us", raw_fused, 1e6)},
        "libraries": {},
    }
    for name in libraries:
        entry = {}
        for mode in STEP_MODES:
            variant = variants[f"{name}/{mode}"]
            reference = raw_fused if mode == "fused" else raw_step
            entry.update(_summary(f"{mode}_us", variant.samples, 1e6))
            entry[f"{mode}_ratio"] = _median_ratio(variant.samples, reference)
            entry[f"{mode}_compile_s"] = variant.compile_seconds
        entry["compile_s"] = entry["fast_compile_s"]
        summary["libraries"][name] = entry
    if batch_size is None:
        return summary

    read_once = variants["bandwidth"].samples  # one jitted pass over X: the epoch's bound
    summary["batch_size"] = batch_size
    summary["data_mb"] = x.nbytes / 2**20
    summary["epoch_bound_s"] = statistics.median(read_once)
    summary["bandwidth_gb_s"] = x.nbytes / 1e9 / summary["epoch_bound_s"]
    summary["raw"].update(_summary("epoch_s", variants["raw/epoch"].samples))
    summary["raw"]["epoch_bound_ratio"] = _median_ratio(variants["raw/epoch"].samples, read_once)
    contiguous = variants["raw/epoch_contiguous"].samples
    summary["raw"].update(_summary("epoch_contiguous_s", contiguous))
    summary["raw"]["epoch_contiguous_bound_ratio"] = _median_ratio(contiguous, read_once)
    # A full-batch step reads X twice (forward and backward matmul): its share of the bound.
    summary["raw"]["step_bandwidth_fraction"] = _median_ratio([2 * t for t in read_once], raw_step)
    for name in libraries:
        entry = summary["libraries"][name]
        epoch = variants[f"{name}/epoch"].samples
        entry.update(_summary("epoch_s", epoch))
        entry["epoch_ratio"] = _median_ratio(epoch, variants["raw/epoch"].samples)
        entry["epoch_bound_ratio"] = _median_ratio(epoch, read_once)
        entry["epoch_compile_s"] = variants[f"{name}/epoch"].compile_seconds
        fast = variants[f"{name}/fast"].samples
        entry["fast_bandwidth_fraction"] = _median_ratio([2 * t for t in read_once], fast)
    return summary


def _targets(result: dict, libraries: list[str]) -> list[dict]:
    """The issue's targets, each with the measured value and whether it is met."""

    def target(text, measured, limit, at_most=True):
        met = measured <= limit if at_most else measured >= limit
        return {"target": text, "limit": limit, "measured": measured, "met": bool(met)}

    small, large = result["small"]["libraries"], result["large"]["libraries"]
    targets = [
        target(
            f"{problem}: {name} fused loop / raw fused loop",
            entries[name]["fused_ratio"],
            FUSED_LIMIT,
        )
        for problem, entries in (("small", small), ("large", large))
        for name in libraries
    ]
    targets += [
        target(f"small: {name} fast step / raw step", small[name]["fast_ratio"], FAST_LIMITS[name])
        for name in libraries
    ]
    targets += [
        target(
            f"large: {name} mini-batch epoch / one read of X",
            large[name]["epoch_bound_ratio"],
            EPOCH_BOUND_LIMIT,
        )
        for name in libraries
    ]
    speedup = result["sklearn_linear_regression_s"] / result["closed_form_s"]
    targets.append(
        target(
            "closed form: speed-up over sklearn LinearRegression",
            speedup,
            CLOSED_FORM_SPEEDUP,
            False,
        )
    )
    peaks = result["rss"].values()
    targets.append(
        target(
            "peak RSS of training / data size (whole process)",
            max(entry["peak_mb"] / entry["data_mb"] for entry in peaks),
            RSS_LIMIT,
        )
    )
    targets.append(
        target(
            "peak RSS of training / data size (above the interpreter and libraries)",
            max((entry["peak_mb"] - entry["baseline_mb"]) / entry["data_mb"] for entry in peaks),
            RSS_LIMIT,
        )
    )
    return targets


def _machine() -> dict:
    import equinox
    import flax
    import penzai

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "devices": [str(device) for device in jax.devices()],
        "python": platform.python_version(),
        "versions": {
            "jax": jax.__version__,
            "flax": flax.__version__,
            "equinox": equinox.__version__,
            "penzai": penzai.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
        },
        "load_average_start": list(os.getloadavg()),
    }


# ---------------------------------------------------------------------------------------
# Command line: options, progress bar, tables


def add_arguments(parser) -> None:
    """The `jaxlinear bench` options (see `BenchSizes`)."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and few rounds, under a minute (for CI smoke tests); "
        "options given explicitly still apply",
    )
    helps = {
        "small_samples": "rows of the small problem",
        "small_features": "features of the small problem",
        "small_steps": "full-batch steps per variant and round, small problem",
        "small_rounds": "rounds on the small problem",
        "large_samples": "rows of the large problem",
        "large_features": "features of the large problem",
        "batch_size": "mini-batch of the large problem's epoch",
        "large_steps": "full-batch steps per variant and round, large problem (first untimed)",
        "large_epochs": "mini-batch epochs per variant and round (first untimed)",
        "large_rounds": "rounds on the large problem",
        "repeats": "timings of the closed form and scikit-learn",
        "seed": "seeds data, initial weights, batches and round order",
    }
    defaults = BenchSizes()
    for name, text in helps.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            default=None,
            help=f"{text} (default: {getattr(defaults, name)}; --quick: {getattr(QUICK, name)})",
        )
    parser.add_argument(
        "--optimizer", choices=("adam", "sgd"), default=None, help="(default: adam)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


class BenchOptionError(ValueError):
    """An option of `jaxlinear bench` that cannot work; the message names it."""


def run_from_args(args) -> int:
    """`jaxlinear bench`: runs, prints the tables, writes `--json`.

    Raises:
      BenchOptionError: before any work, for a size that cannot work.
      OSError: before any work, for a `--json` path that cannot be written.
    """
    from jaxlinear._io import check_writable, write_json_atomic

    base = QUICK if args.quick else BenchSizes()
    given = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(BenchSizes)
        if getattr(args, field.name, None) is not None
    }
    sizes = dataclasses.replace(base, **given)
    try:
        sizes.validate()
    except ValueError as error:
        raise BenchOptionError(error) from None
    json_path = check_writable(args.json) if args.json else None
    command = " ".join(
        ["jaxlinear bench", *(["--quick"] if args.quick else [])]
        + [f"--{name.replace('_', '-')} {value}" for name, value in given.items()]
    )
    with _phase_progress(quiet=args.quiet) as progress:
        result = run_bench(sizes, progress=progress, command=command)
    print_report(result)
    if json_path is not None:
        write_json_atomic(json_path, result)
    return 0


@contextlib.contextmanager
def _phase_progress(*, quiet: bool):
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


def print_report(result: dict, console=None) -> None:
    """The benchmark's tables: both problems, the other figures, and the targets."""
    from rich.console import Console

    console = console or Console(width=140)
    for problem in ("small", "large"):
        console.print(_problem_table(problem, result[problem]))
    console.print(_figures_table(result))
    console.print(_targets_table(result["targets"]))
    if not result["issue_sizes"]:
        console.print("(sizes differ from the issue's: the targets above are for information)")
    machine = result["machine"]
    console.print(
        f"{result['command']}  |  {machine['cpu_count']} CPU cores, devices "
        f"{', '.join(machine['devices'])}, load average "
        f"{machine['load_average_start'][0]:.1f} at start, "
        f"{machine['load_average_end'][0]:.1f} at end"
    )


def _number(value: float) -> str:
    """Three significant digits, without exponents: 1,234 / 56.7 / 8.90 / 0.0123."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.3g}" if abs(value) >= 10 else f"{value:.2f}"
    return f"{value:.3g}"


def _cell(entry: dict, key: str, unit: str = "", scale: float = 1.0) -> str:
    """`median (min-max)`, each multiplied by `scale`."""
    low, high = (_number(scale * entry[f"{key}_{end}"]) for end in ("min", "max"))
    return f"{_number(scale * entry[key])}{unit} ({low}-{high})"


def _problem_table(problem: str, summary: dict):
    from rich.table import Table

    large = "batch_size" in summary
    unit, scale = ("ms", 1e-3) if large else ("us", 1.0)  # the JSON keeps microseconds
    title = (
        f"{problem} problem (N={summary['samples']:,}, D={summary['features']}, "
        f"{summary['optimizer']}): {unit} per step, median (min-max) over {summary['rounds']} "
        f"rounds of {summary['steps_per_round']} steps; x = median of per-round ratios to raw JAX"
    )
    table = Table(title=title)
    columns = ["library", "idiomatic step", "x", "fast step", "x", "fused loop", "x", "compile s"]
    if large:
        columns += [f"epoch s, batch {summary['batch_size']}", "x raw", "x read X"]
    for column in columns:
        table.add_column(column, justify="left" if column == "library" else "right")
    raw = summary["raw"]
    row = ["raw JAX", "-", "", _cell(raw, "step_us", scale=scale), "1"]
    row += [_cell(raw, "fused_us", scale=scale), "1", "-"]
    if large:
        row += [_cell(raw, "epoch_s"), "1", f"{raw['epoch_bound_ratio']:.2f}"]
    table.add_row(*row, style="bold")
    for name, entry in summary["libraries"].items():
        row = [name]
        for mode in ("idiomatic", "fast", "fused"):
            row += [_cell(entry, f"{mode}_us", scale=scale), f"{entry[f'{mode}_ratio']:.2f}"]
        row.append(f"{entry['compile_s']:.2f}")
        if large:
            row += [
                _cell(entry, "epoch_s"),
                f"{entry['epoch_ratio']:.2f}",
                f"{entry['epoch_bound_ratio']:.2f}",
            ]
        table.add_row(*row)
    return table


def _figures_table(result: dict):
    from rich.table import Table

    large, rss = result["large"], result["rss"]
    raw = large["raw"]
    table = Table(title=f"large problem: N={large['samples']:,}, D={large['features']} (float32)")
    table.add_column("figure", justify="left")
    table.add_column("value", justify="right")
    rows = [
        ("data (X and y)", f"{rss['raw']['data_mb']:.0f} MB"),
        ("memory bandwidth (jitted jnp.sum over X)", f"{result['bandwidth_gb_s']:.1f} GB/s"),
        ("one read of X at that bandwidth (epoch bound)", f"{_number(large['epoch_bound_s'])} s"),
        ("raw epoch, shuffled batches (gather)", _cell(raw, "epoch_s", " s")),
        ("raw epoch, contiguous batches", _cell(raw, "epoch_contiguous_s", " s")),
        (
            "raw full-batch step: share of bandwidth (X read twice)",
            f"{raw['step_bandwidth_fraction']:.0%}",
        ),
        ("closed form, normal equations in float64", _cell(result, "closed_form_s", " s")),
        (
            "closed form, lstsq in float64 (least_squares)",
            f"{_number(result['closed_form_lstsq_s'])} s",
        ),
        ("  max |difference| between the two", f"{result['closed_form_max_abs_difference']:.1e}"),
        ("sklearn LinearRegression.fit", _cell(result, "sklearn_linear_regression_s", " s")),
        ("sklearn SGDRegressor, one epoch", _cell(result, "sklearn_sgd_epoch_s", " s")),
    ]
    rows += [
        (
            f"peak RSS, child training {name}: imports / +data / peak",
            f"{entry['baseline_mb']:.0f} / {entry['with_data_mb']:.0f} / {entry['peak_mb']:.0f} MB",
        )
        for name, entry in rss.items()
    ]
    for row in rows:
        table.add_row(*row)
    return table


def _targets_table(targets: list[dict]):
    from rich.table import Table

    table = Table(title="targets (from the performance issue)")
    for column in ("target", "limit", "measured", "met"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for entry in targets:
        at_least = "closed form" in entry["target"]
        table.add_row(
            entry["target"],
            f"{'>=' if at_least else '<='} {entry['limit']:g}",
            f"{entry['measured']:.2f}",
            "yes" if entry["met"] else "NO",
            style=None if entry["met"] else "red",
        )
    return table
