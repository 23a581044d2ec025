"""Training settings. Imports nothing heavy, so the command line can check them at once."""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import Literal

from jaxlinear._errors import ConfigError

BUILTIN_DATASETS = ("diabetes", "linnerud", "synthetic")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "constant")
STEP_MODES = ("fused", "fast", "idiomatic")
StepMode = Literal["fused", "fast", "idiomatic"]

# Beyond these a run would take days on any machine, or its step count would not fit the
# int32 counters of optax's schedules; refusing is kinder than starting.
MAX_EPOCHS = 10_000_000
MAX_TOTAL_STEPS = 2**31 - 1
# numpy's SeedSequence takes any non-negative integer; this bound keeps seeds JSON-friendly.
MAX_SEED = 2**128 - 1


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train; the same config gives every library the same batches.

    Attributes:
      epochs: passes over the training set, 1 to 10,000,000.
      batch_size: examples per step; `None` (or anything >= n_train) means the whole set.
      learning_rate: optimizer step size, a positive finite number.
      optimizer: `adam` or `sgd` (both from optax).
      schedule: `cosine` (decay to 0 over the run) or `constant` learning rate.
      l2: ridge penalty `0.5 * l2 * ||W||^2` added to the loss (the bias is not penalised).
      seed: the one seed every random stream derives from (split, synthetic data, initial
        weights, batch order), an integer in `[0, 2**128)`.
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

    def validate(self) -> TrainConfig:
        """Returns `self`; raises `ConfigError` naming the first field that cannot work."""
        _check_int("epochs", self.epochs, 1, MAX_EPOCHS)
        if self.batch_size is not None:
            _check_int("batch_size", self.batch_size, 1, None)
        _check_real("learning_rate", self.learning_rate, positive=True)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_real("l2", self.l2, positive=False)
        check_seed(self.seed)
        _check_choice("step_mode", self.step_mode, STEP_MODES)
        return self


def check_seed(seed) -> int:
    """`seed` as an int; raises `ConfigError` unless it is an integer in `[0, 2**128)`."""
    _check_int("seed", seed, 0, MAX_SEED)
    return operator.index(seed)


def _check_int(field: str, value, low: int, high: int | None) -> None:
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)  # int, or numpy's integers
    except TypeError:
        raise ConfigError(field, f"must be an integer, got {value!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"at least {low:,}" if high is None else f"between {low:,} and {high:,}"
        if high == MAX_SEED:
            bound = f"between {low} and 2**128 - 1"
        raise ConfigError(field, f"must be {bound}, got {value:,}")


# Training runs in float32: a setting beyond its largest value would silently become inf.
FLOAT32_MAX = 3.4028234663852886e38


def _check_real(field: str, value, *, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(field, f"must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        need = "a positive finite number" if positive else "a finite number >= 0"
        raise ConfigError(field, f"must be {need}, got {value}")
    if value > FLOAT32_MAX:
        raise ConfigError(
            field, f"must be at most {FLOAT32_MAX:.4g}, the largest float32 value, got {value:g}"
        )


def _check_choice(field: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(field, f"must be one of {', '.join(choices)}, got {value!r}")
