"""The thin part shared by all four libraries: loss, optimizer, batches and the epoch loop.

Each library module supplies its own train step, written the way that library's docs write
it, and reduces its model to a pytree of arrays its own way (split, partition, unbind); this
module decides *which* examples go into each step, compiles the library's pure step (or
scan of steps) over the flat list of those arrays (`compiled_steps`), and times the run.
A train step is always a pure function of (model state, optimizer state, batch), which is
what data-parallel training, checkpoint/resume and streaming later build on.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "constant")
STEP_MODES = ("fused", "fast", "idiomatic")
StepMode = Literal["fused", "fast", "idiomatic"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train; the same config gives every library the same batches.

    Attributes:
      epochs: passes over the training set.
      batch_size: examples per step; `None` (or anything >= n_train) means the whole set.
      learning_rate: optimizer step size.
      optimizer: `adam` or `sgd` (both from optax).
      schedule: `cosine` (decay to 0 over the run) or `constant` learning rate.
      l2: ridge penalty `0.5 * l2 * ||W||^2` added to the loss (the bias is not penalised).
      seed: seeds the shuffling of mini-batches.
      step_mode: `fused` runs the steps of an epoch (or of several small epochs) as one
        compiled `jax.lax.scan`; `fast` calls a jitted step once per batch, written in the
        library's low-overhead pattern (state split once, flat list of arrays in and out);
        `idiomatic` calls the library's textbook jitted train step once per batch.
    """

    epochs: int = 1000
    batch_size: int | None = None
    learning_rate: float = 0.1
    optimizer: str = "adam"
    schedule: str = "cosine"
    l2: float = 0.0
    seed: int = 0
    step_mode: StepMode = "fused"

    def validate(self) -> None:
        """Raises `ValueError` naming the first setting that cannot work."""
        if self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not (np.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"--lr must be a positive number, got {self.learning_rate}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}"
            )
        if not (np.isfinite(self.l2) and self.l2 >= 0):
            raise ValueError(f"--l2 must be a number >= 0, got {self.l2}")
        if self.step_mode not in STEP_MODES:
            raise ValueError(
                f"unknown step mode {self.step_mode!r}: use one of {', '.join(STEP_MODES)}"
            )


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number."""


def make_optimizer(config: TrainConfig, n_examples: int) -> optax.GradientTransformation:
    """The optax optimizer that `config` names, with its learning-rate schedule.

    With `schedule="cosine"` the rate decays from `learning_rate` to 0 over all the steps that
    `batch_schedule` makes for `n_examples` training examples.
    The decay is what lets adam settle on the optimum: at a constant rate its normalised step
    keeps the weights jittering around it (seen here: test R² off by ~1e-3 on linnerud).
    """
    learning_rate = config.learning_rate
    if config.schedule == "cosine":
        total_steps = config.epochs * steps_per_epoch(n_examples, config.batch_size)
        learning_rate = optax.cosine_decay_schedule(config.learning_rate, total_steps)
    return {"adam": optax.adam, "sgd": optax.sgd}[config.optimizer](learning_rate)


def l2_objective(prediction: jax.Array, target: jax.Array, weights, l2) -> jax.Array:
    """The loss every library minimises, a scalar.

    `mean over the batch of sum over outputs of optax.l2_loss` (i.e. `0.5 * squared error`)
    plus the ridge term `0.5 * l2 * ||W||^2`. Summing over outputs (not averaging) keeps
    the optimum independent of how many outputs there are, which `least_squares` relies on.

    Args:
      prediction, target: `[batch, out_features]`.
      weights: the weight matrix in any layout, or a pytree of them (only squares are summed).
      l2: ridge penalty, a scalar.
    """
    data_term = optax.l2_loss(prediction, target).sum(axis=-1).mean()
    penalty = sum(jnp.sum(jnp.square(w)) for w in jax.tree.leaves(weights))
    return data_term + 0.5 * l2 * penalty


StepFn = Callable[[Any, jax.Array, jax.Array], tuple[Any, jax.Array]]
EpochFn = Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[Any, jax.Array]]
ProgressFn = Callable[[int, float], None]


def steps_per_epoch(n_examples: int, batch_size: int | None) -> int:
    """`n_examples // batch_size`; a missing or oversized batch size means one full batch."""
    return 1 if batch_size is None else max(n_examples // batch_size, 1)


def batch_schedule(n_examples: int, batch_size: int | None, epochs: int, seed: int) -> np.ndarray:
    """Indices of the examples in every step: `[epochs, steps_per_epoch, batch_size]`, int32.

    Each epoch is a fresh seeded permutation cut into `n_examples // batch_size` batches; the
    last partial batch is dropped so every step has the same shape (no recompilation), and
    reshuffling each epoch means no example is left out for long.

    Full-batch training (`batch_size` None or >= `n_examples`) gives EMPTY rows,
    `[epochs, 1, 0]`: every step takes all examples in their stored order (see `take_batch`).
    Permuting them would change nothing but the float summation order, and would cost a copy
    of the whole data set at every step.
    """
    return np.stack(list(_epoch_batches(n_examples, batch_size, seed, epochs)))


def _epoch_batches(
    n_examples: int, batch_size: int | None, seed: int, epochs: int
) -> Iterator[np.ndarray]:
    """`batch_schedule` one epoch at a time, so a long run never holds all of it."""
    steps = steps_per_epoch(n_examples, batch_size)
    if batch_size is None or batch_size >= n_examples:
        for _ in range(epochs):
            yield np.zeros((1, 0), np.int32)
        return
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        # The same permutation as `rng.permutation(n_examples)`, built in int32 in place: a
        # third of the memory (which matters at millions of examples).
        order = np.arange(n_examples, dtype=np.int32)
        rng.shuffle(order)
        yield order[: steps * batch_size].reshape(steps, batch_size)


def take_batch(x: jax.Array, y: jax.Array, indices: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Rows `indices: [batch]` of `x: [n, in]` and `y: [n, out]`; empty `indices` means all rows.

    The test is on the static shape, so inside `jax.jit` a full batch costs nothing.
    """
    if indices.shape[-1] == 0:
        return x, y
    return x[indices], y[indices]


_take_rows = jax.jit(take_batch)  # one dispatch for both gathers in a per-batch loop


def scan_steps(step: StepFn, state: Any, x: jax.Array, y: jax.Array, indices: jax.Array):
    """Runs `step` once per row of `indices: [steps, batch]` in one `jax.lax.scan`.

    For use inside `jax.jit` with `x` and `y` already on the device: the loop, the batch
    gathers and the optimizer all run in one compiled program, with no Python per step.
    Returns `(state, losses [steps])`.
    """

    def one_step(state, batch_indices):
        return step(state, *take_batch(x, y, batch_indices))

    return jax.lax.scan(one_step, state, indices)


@dataclasses.dataclass
class FitResult:
    """What training one model returns.

    Attributes:
      model: the trained model, in its library's own form.
      losses: `[steps]` training loss at every step (before that step's update), float32.
      compile_seconds: time of the first compiled call minus its steady-state share, i.e.
        tracing plus compilation.
      ms_per_step: steady-state wall time per step after the first call, in milliseconds.
    """

    model: Any
    losses: np.ndarray
    compile_seconds: float
    ms_per_step: float


class TrainingSteps(NamedTuple):
    """What `run_epochs` drives for one library in one step mode.

    Each library's `training_steps(model, config, n_examples)` builds it, and its `fit` runs
    it; the benchmark runs the very same functions.

    Attributes:
      state: the initial state the step functions carry (`None` where the library updates
        its objects in place).
      train_step: `(state, x_batch, y_batch) -> (state, loss)`, for the per-batch modes.
      train_epoch: `(state, x, y, indices [steps, batch]) -> (state, losses [steps])`, for
        `fused`.
      to_model: the final state -> the trained model, in the library's own form.
    """

    state: Any
    train_step: StepFn | None
    train_epoch: EpochFn | None
    to_model: Callable[[Any], Any]


def run_training(
    steps: TrainingSteps, x, y, config: TrainConfig, *, on_epoch: ProgressFn | None = None
) -> FitResult:
    """`run_epochs` over `steps`, returning the trained model with losses and timings."""
    state, losses, compile_seconds, ms_per_step = run_epochs(
        steps.state,
        x,
        y,
        config,
        train_step=steps.train_step,
        train_epoch=steps.train_epoch,
        on_epoch=on_epoch,
    )
    return FitResult(steps.to_model(state), losses, compile_seconds, ms_per_step)


def jit_over_leaves(function: Callable, state: Any) -> tuple[list[jax.Array], Callable, Callable]:
    """Compiles `function(state, *args) -> (state, out)` as a function of `state`'s leaves.

    A jitted function flattens its pytree arguments on every call, in Python for most
    library types (nnx `State`, penzai `NamedArray`, equinox modules, flax structs): about
    1-2 us per node, which on a small model costs more than a training step. Flattening
    once here and rebuilding the pytree inside the compiled function leaves jax a plain
    list of arrays to pass, its fastest path. This is the last step of equinox's
    "low-overhead training loops" and of flax's split/merge recipe; each library first
    reduces its model to a pytree of arrays its own way.

    Returns:
      `(leaves, compiled, unflatten)`: the initial list of arrays, the compiled
      `(leaves, *args) -> (leaves, out)`, and `unflatten(leaves) -> state`.
    """
    leaves, treedef = jax.tree.flatten(state)

    @jax.jit
    def over_leaves(leaves, *args):
        new_state, out = function(jax.tree.unflatten(treedef, leaves), *args)
        new_leaves, new_treedef = jax.tree.flatten(new_state)
        if new_treedef != treedef:  # checked once, while tracing
            raise ValueError(f"the step changed the state's structure to {new_treedef}")
        return new_leaves, out

    return leaves, over_leaves, lambda leaves: jax.tree.unflatten(treedef, leaves)


def compiled_steps(
    config: TrainConfig,
    state: Any,
    *,
    step: StepFn,
    epoch: EpochFn,
    to_model: Callable[[Any], Any],
) -> TrainingSteps:
    """`TrainingSteps` for the `fast` and `fused` modes from a library's pure functions.

    Args:
      config: `step_mode` picks `step` (`fast`) or `epoch` (`fused`).
      state: the model and optimizer state as a pytree of arrays.
      step: `(state, x_batch, y_batch) -> (state, loss)`, not jitted.
      epoch: `(state, x, y, indices) -> (state, losses)`, not jitted (see `scan_steps`).
      to_model: the final state -> the trained model.

    Both are compiled by `jit_over_leaves`, so a call costs the same in every library.
    """
    fast = config.step_mode == "fast"
    leaves, compiled, unflatten = jit_over_leaves(step if fast else epoch, state)
    return TrainingSteps(
        leaves,
        train_step=compiled if fast else None,
        train_epoch=None if fast else compiled,
        to_model=lambda leaves: to_model(unflatten(leaves)),
    )


def run_epochs(
    state: Any,
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    *,
    train_step: StepFn | None,
    train_epoch: EpochFn | None,
    on_epoch: ProgressFn | None = None,
) -> tuple[Any, np.ndarray, float, float]:
    """Drives a library's step functions over the batches of `batch_schedule`.

    Epochs run in groups (see `epochs_per_call`): in `fused` mode a group is one call of
    `train_epoch`; in the per-batch modes it is one Python loop of `train_step` calls, and
    the host waits for the device only at the end of a group, so a small step's dispatch
    overlaps the previous step's work. The first group is not part of the steady time per
    step: it pays for compilation, timed alone as the first step in the per-batch modes.

    Args:
      state: whatever the library's step functions carry (model and optimizer state).
      x: `[n, in_features]` and y: `[n, out_features]` training data.
      config: the batches, epochs and step mode.
      train_step: `(state, x_batch, y_batch) -> (state, loss)`: the textbook jitted step in
        `idiomatic` mode, the library's low-overhead step in `fast` mode.
      train_epoch: `(state, x, y, indices [steps, batch]) -> (state, losses [steps])`, one
        compiled `lax.scan` over the steps of one or more epochs with the data on the device.
      on_epoch: called after each epoch with `(epochs_done, last_loss)`, e.g. for a progress bar.

    Returns:
      `(state, losses [epochs * steps], compile_seconds, ms_per_step)`.

    Raises:
      TrainingDiverged: an epoch produced a NaN or infinite loss.
    """
    n_examples, in_features = np.shape(x)
    steps = steps_per_epoch(n_examples, config.batch_size)
    rows = min(config.batch_size or n_examples, n_examples)
    per_call = epochs_per_call(config.epochs, steps, rows * in_features)
    epoch_batches = _epoch_batches(n_examples, config.batch_size, config.seed, config.epochs)
    x, y = _on_device(x), _on_device(y)
    fused = config.step_mode == "fused"
    epoch_losses, call_seconds, first_step_seconds = [], [], None
    for first_epoch in range(0, config.epochs, per_call):
        group = [next(epoch_batches) for _ in range(per_call)]
        indices = group[0] if per_call == 1 else np.concatenate(group)
        start = time.perf_counter()
        if fused:
            state, losses = train_epoch(state, x, y, jnp.asarray(indices))
        else:
            losses = []
            for step_indices in indices:
                batch = (x, y) if step_indices.size == 0 else _take_rows(x, y, step_indices)
                state, loss = train_step(state, *batch)
                losses.append(loss)
                if first_step_seconds is None:  # tracing and compilation, timed alone
                    first_step_seconds = time.perf_counter() - start
            # The loop has dispatched every step by now, so waiting for each loss in turn
            # costs ~2 us a step; `jax.device_get(losses)` costs ~20 and `jnp.stack` ~17.
            losses = [np.asarray(loss) for loss in losses]
        losses = np.asarray(losses, np.float32)
        call_seconds.append(time.perf_counter() - start)
        _check_finite(losses, first_epoch * steps, config)
        epoch_losses.append(losses)
        if on_epoch is not None:
            for epoch in range(per_call):
                on_epoch(first_epoch + epoch + 1, float(losses[(epoch + 1) * steps - 1]))
    compile_seconds, ms_per_step = _split_timings(
        call_seconds, per_call * steps, None if fused else first_step_seconds
    )
    return state, np.concatenate(epoch_losses), compile_seconds, ms_per_step


MAX_STEPS_PER_CALL = 1024
MAX_WORK_PER_CALL = 2**26


def epochs_per_call(epochs: int, steps: int, values_per_step: int) -> int:
    """How many epochs `run_epochs` runs between two waits for the device.

    One call per epoch is wasteful when an epoch is a single small step (full-batch training
    on a small data set): the call and the wait cost more than the step. So epochs are
    grouped, up to `MAX_STEPS_PER_CALL` steps and `MAX_WORK_PER_CALL` input values read per
    group (large steps need no grouping, and the progress bar should keep moving). The group
    size divides `epochs`, so every fused call has the same shape and compiles once, and
    leaves at least two groups, so the steady-state time is measured apart from compilation.
    """
    limit = min(
        MAX_STEPS_PER_CALL // steps,
        MAX_WORK_PER_CALL // max(steps * values_per_step, 1),
        epochs // 2,
    )
    return max([size for size in range(1, limit + 1) if epochs % size == 0], default=1)


def _on_device(array) -> jax.Array:
    """`array` as a float32 device array; no copy when it already is one.

    `jax.device_put` of a 64-byte-aligned float32 numpy array shares its memory on CPU,
    where `jnp.asarray` would copy it: large data sets are then held once, not twice.
    """
    if isinstance(array, jax.Array) and array.dtype == jnp.float32:
        return array
    return jax.device_put(np.asarray(array, np.float32))


def _split_timings(
    call_seconds: list[float], steps_per_call: int, first_step_seconds: float | None
) -> tuple[float, float]:
    """`(compile_seconds, ms_per_step)` from the wall time of each call.

    The steady time per step comes from the calls after the first, which has compiled
    everything. The compile time is the first fused call, or the first step of a per-batch
    loop (`first_step_seconds`), minus its steady share. With a single call, a per-batch
    loop's steady time comes from that call's steps after the first; a fused one has none.
    """
    first_call, rest = call_seconds[0], call_seconds[1:]
    if rest:
        per_step = sum(rest) / (len(rest) * steps_per_call)
    elif first_step_seconds is not None and steps_per_call > 1:
        per_step = (first_call - first_step_seconds) / (steps_per_call - 1)
    else:
        return first_step_seconds or first_call, float("nan")
    if first_step_seconds is None:
        return max(first_call - steps_per_call * per_step, 0.0), 1e3 * per_step
    return max(first_step_seconds - per_step, 0.0), 1e3 * per_step


def _check_finite(losses: np.ndarray, first_step: int, config: TrainConfig) -> None:
    bad = ~np.isfinite(losses)
    if bad.any():
        step = first_step + int(np.argmax(bad))
        raise TrainingDiverged(
            f"training diverged: the loss became {losses[bad][0]} at step {step} with "
            f"{config.optimizer} and learning rate {config.learning_rate:g}; "
            "try a smaller --lr"
        )
