"""Timing one problem: every variant once per round, in an order shuffled per round.

A variant is one thing timed: raw JAX's step or fused loop, or a library in one step mode,
run through the very driver `fit` runs (`training.runner` + `training.run_epochs`), so the
driver's own per-step costs count. Running every variant once per round, for many rounds,
lets load that comes and goes on the machine hit all variants alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlinear import training
from jaxlinear._registry import get_library
from jaxlinear._weights import initial_weights
from jaxlinear.bench.options import BenchSizes
from jaxlinear.bench.problems import raw_functions, raw_params, run_raw_steps, shuffled_batches
from jaxlinear.training import STEP_MODES, TrainConfig


@dataclasses.dataclass
class Variant:
    """A thing timed once per round.

    Attributes:
      name: `raw/step`, `linen/fused`, `nnx/epoch`, `bandwidth`, ...
      run: runs it once; returns seconds per step (per epoch for `*/epoch`, per pass over X
        for `bandwidth`).
      samples: what `run` returned, one per round.
      compile_seconds: tracing plus compilation, from a library variant's first run.
    """

    name: str
    run: Callable[[], float]
    samples: list[float] = dataclasses.field(default_factory=list)
    compile_seconds: float = float("nan")


def time_call(function: Callable[[], Any]) -> float:
    """Seconds of `function()`, waiting for every array it returns."""
    start = time.perf_counter()
    jax.block_until_ready(function())
    return time.perf_counter() - start


def library_variant(key: str, name: str, model, x, y, config: TrainConfig) -> Variant:
    """Library `name` in `config.step_mode`, exactly as `fit` runs it, once per round.

    The driver is built once, so only the first round compiles, and `run_epochs` splits
    that compilation from the steady time it reports. `x` and `y` are float32 device arrays.
    """
    module = get_library(name).module
    optimizer = training.make_optimizer(config, len(x))
    drive = training.runner(module, module.init_training(model, optimizer), config)
    variant = Variant(key, run=lambda: 0.0)

    def run() -> float:
        _, _, compile_seconds, ms_per_step = training.run_epochs(drive, x, y, config, None)
        if not variant.samples:
            variant.compile_seconds = compile_seconds
        return ms_per_step / 1e3

    variant.run = run
    return variant


def run_rounds(variants: list[Variant], rounds: int, seed: int, advance: Callable[[], None]):
    """Each round runs every variant once, in an order shuffled per round.

    A garbage collection before each variant keeps collector pauses out of the timed runs;
    freezing what exists beforehand (jax, the libraries, the data) makes those collections
    cost microseconds instead of ~0.1 s.
    """
    rng = np.random.default_rng(seed)
    with frozen_heap():
        for _ in range(rounds):
            for index in rng.permutation(len(variants)):
                gc.collect()
                variants[index].samples.append(variants[index].run())
            advance()


@contextlib.contextmanager
def frozen_heap():
    """Moves every object alive now out of the collector's reach until the block ends."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def problem_variants(
    sizes: BenchSizes,
    libraries: list[str],
    x: jax.Array,
    y: jax.Array,
    *,
    steps_per_round: int,
    batch_size: int | None,
) -> dict[str, Variant]:
    """raw step, raw fused and every library in every step mode on `x: [n, in]`, `y: [n, 1]`.

    With a `batch_size` (the large problem) also: a mini-batch epoch, raw and fused per
    library, the raw epoch over contiguous batches, and a jitted `jnp.sum` over `x`.
    """
    n, in_features = x.shape
    full_batch = TrainConfig(epochs=steps_per_round, optimizer=sizes.optimizer, seed=sizes.seed)
    start = initial_weights(in_features, 1, seed=sizes.seed)
    step, fused, _ = raw_functions(training.make_optimizer(full_batch, n))
    params = raw_params(start)
    opt_state = training.make_optimizer(full_batch, n).init(params)
    # The raw scan runs as many steps per call as the libraries' fused calls do.
    per_call = training.epochs_per_call(steps_per_round, 1, n * in_features)
    calls = steps_per_round // per_call

    loop = functools.partial(run_raw_steps, step, params, opt_state, x, y, steps_per_round)
    call = functools.partial(fused, params, opt_state, x, y, None, length=per_call)
    variants = {
        "raw/step": Variant("raw/step", lambda: time_call(loop) / steps_per_round),
        "raw/fused": Variant(
            "raw/fused", lambda: sum(time_call(call) for _ in range(calls)) / steps_per_round
        ),
    }
    models = {name: get_library(name).from_canonical(start) for name in libraries}
    for name in libraries:
        for mode in STEP_MODES:
            config = dataclasses.replace(full_batch, step_mode=mode)
            key = f"{name}/{mode}"
            variants[key] = library_variant(key, name, models[name], x, y, config)
    if batch_size is not None:
        variants.update(_epoch_variants(sizes, models, x, y, params, batch_size))
    return variants


def _epoch_variants(sizes: BenchSizes, models: dict, x, y, params, batch_size: int):
    """A mini-batch epoch, raw and per library; its bounds: contiguous batches, one read of X."""
    n = len(x)
    mini_batch = TrainConfig(
        epochs=sizes.large_epochs, batch_size=batch_size, optimizer=sizes.optimizer, seed=sizes.seed
    )
    steps = training.steps_per_epoch(n, batch_size)
    indices = shuffled_batches(n, batch_size, sizes.seed)
    starts = jnp.arange(steps, dtype=jnp.int32) * batch_size
    opt_state = training.make_optimizer(mini_batch, n).init(params)
    _, fused, contiguous = raw_functions(training.make_optimizer(mini_batch, n))
    epoch = functools.partial(fused, params, opt_state, x, y, indices, length=steps)
    in_order = functools.partial(contiguous, params, opt_state, x, y, starts, batch_size=batch_size)
    variants = {
        "raw/epoch": Variant("raw/epoch", lambda: time_call(epoch)),
        "raw/epoch_contiguous": Variant("raw/epoch_contiguous", lambda: time_call(in_order)),
    }
    for name, model in models.items():
        key = f"{name}/epoch"
        variant = library_variant(key, name, model, x, y, mini_batch)
        per_step = variant.run
        variant.run = lambda per_step=per_step: per_step() * steps
        variants[key] = variant
    read_x = functools.partial(jax.jit(jnp.sum), x)
    variants["bandwidth"] = Variant("bandwidth", lambda: time_call(read_x))
    return variants


def warm_up(variants: dict[str, Variant]) -> None:
    """Compiles the raw reference (and jax itself) before anything is timed.

    The libraries are not warmed up here: their first run is what reports compile time.
    """
    for name, variant in variants.items():
        if name.startswith("raw/") or name == "bandwidth":
            variant.run()
