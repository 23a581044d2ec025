"""The thin part shared by all four libraries: loss, optimizer, batches and the epoch loop.

Each library module supplies its own train step, written the way that library's docs write
it; this module only decides *which* examples go into each step and times the run. A train
step is always a pure function of (model state, optimizer state, batch), which is what
data-parallel training, checkpoint/resume and streaming later build on.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "constant")
STEP_MODES = ("fused", "idiomatic")
StepMode = Literal["fused", "idiomatic"]


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
      step_mode: `fused` runs each epoch as one compiled `jax.lax.scan` over its steps;
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


def steps_per_epoch(n_examples: int, batch_size: int | None) -> int:
    """`n_examples // batch_size`; a missing or oversized batch size means one full batch."""
    return 1 if batch_size is None else max(n_examples // batch_size, 1)


def batch_schedule(n_examples: int, batch_size: int | None, epochs: int, seed: int) -> np.ndarray:
    """Indices of the examples in every step: `[epochs, steps_per_epoch, batch_size]`, int32.

    Each epoch is a fresh seeded permutation cut into `n_examples // batch_size` batches; the
    last partial batch is dropped so every step has the same shape (no recompilation), and
    reshuffling each epoch means no example is left out for long.
    """
    steps = steps_per_epoch(n_examples, batch_size)
    batch_size = n_examples if batch_size is None else min(batch_size, n_examples)
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(n_examples)[: steps * batch_size] for _ in range(epochs)]
    return np.stack(orders).reshape(epochs, steps, batch_size).astype(np.int32)


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


StepFn = Callable[[Any, jax.Array, jax.Array], tuple[Any, jax.Array]]
EpochFn = Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[Any, jax.Array]]
ProgressFn = Callable[[int, float], None]


def run_epochs(
    state: Any,
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    *,
    train_step: StepFn,
    train_epoch: EpochFn,
    on_epoch: ProgressFn | None = None,
) -> tuple[Any, np.ndarray, float, float]:
    """Drives a library's step functions over the batches of `batch_schedule`.

    Args:
      state: whatever the library's step functions carry (model and optimizer state).
      x: `[n, in_features]` and y: `[n, out_features]` training data.
      config: the batches, epochs and step mode.
      train_step: `(state, x_batch, y_batch) -> (state, loss)`, the textbook jitted step.
      train_epoch: `(state, x, y, indices [steps, batch]) -> (state, losses [steps])`, one
        compiled `lax.scan` over an epoch with the data already on the device.
      on_epoch: called after each epoch with `(epochs_done, last_loss)`, e.g. for a progress bar.

    Returns:
      `(state, losses [epochs * steps], compile_seconds, ms_per_step)`.

    Raises:
      TrainingDiverged: an epoch produced a NaN or infinite loss.
    """
    schedule = batch_schedule(len(x), config.batch_size, config.epochs, config.seed)
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    epoch_losses, call_seconds = [], []
    for epoch, indices in enumerate(schedule):
        start = time.perf_counter()
        if config.step_mode == "fused":
            state, losses = train_epoch(state, x, y, jnp.asarray(indices))
            losses = np.asarray(losses)
            call_seconds.append(time.perf_counter() - start)
        else:
            losses = []
            for step_indices in indices:
                state, loss = train_step(state, x[step_indices], y[step_indices])
                losses.append(loss)
                if epoch == 0 and not call_seconds:
                    jax.block_until_ready(loss)
                    call_seconds.append(time.perf_counter() - start)
                    start = time.perf_counter()
            losses = np.asarray(jax.device_get(losses))
            call_seconds.append(time.perf_counter() - start)
        _check_finite(losses, epoch, schedule.shape[1], config)
        epoch_losses.append(losses)
        if on_epoch is not None:
            on_epoch(epoch + 1, float(losses[-1]))
    compile_seconds, ms_per_step = _split_timings(call_seconds, config.step_mode, schedule.shape)
    return state, np.concatenate(epoch_losses).astype(np.float32), compile_seconds, ms_per_step


def _split_timings(
    call_seconds: list[float], step_mode: str, schedule_shape: tuple[int, ...]
) -> tuple[float, float]:
    """Separates the first call's compile time from the steady per-step time."""
    epochs, steps, _ = schedule_shape
    if step_mode == "fused":
        steps_in_first, steps_in_rest = steps, (epochs - 1) * steps
    else:  # the first call was the first step alone; the first epoch's rest comes next
        steps_in_first, steps_in_rest = 1, epochs * steps - 1
    first, rest = call_seconds[0], sum(call_seconds[1:])
    if steps_in_rest == 0:
        return first, float("nan")
    per_step = rest / steps_in_rest
    return max(first - steps_in_first * per_step, 0.0), 1e3 * per_step


def _check_finite(losses: np.ndarray, epoch: int, steps: int, config: TrainConfig) -> None:
    bad = ~np.isfinite(losses)
    if bad.any():
        step = epoch * steps + int(np.argmax(bad))
        raise TrainingDiverged(
            f"training diverged: the loss became {losses[bad][0]} at step {step} with "
            f"{config.optimizer} and learning rate {config.learning_rate:g}; "
            "try a smaller --lr"
        )
