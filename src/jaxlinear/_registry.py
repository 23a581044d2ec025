"""The four libraries behind one small interface, keyed by name.

Each library module (`_linen`, `_nnx`, `_equinox`, `_penzai`) provides the same six
functions, written in its own idiom; this registry only names them.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Protocol

import jax

from jaxlinear import _equinox, _linen, _nnx, _penzai
from jaxlinear._training import FitResult, ProgressFn, TrainConfig, TrainingSteps
from jaxlinear._weights import LinearWeights


class Library(Protocol):
    """What every library module provides. `Model` is that library's own model object."""

    def create(self, in_features: int, out_features: int, *, key: jax.Array) -> Any:
        """A freshly initialised model with the library's default initialisers."""

    def predict(self, model: Any, x: jax.Array) -> jax.Array:
        """`x: [batch, in_features]` -> `[batch, out_features]`."""

    def fit(
        self, model: Any, x, y, config: TrainConfig, *, on_epoch: ProgressFn | None = None
    ) -> FitResult:
        """Trains a copy of `model` on `x: [n, in]`, `y: [n, out]`."""

    def training_steps(self, model: Any, config: TrainConfig, n_examples: int) -> TrainingSteps:
        """The state and step functions `fit` runs in `config.step_mode` (and `bench` times)."""

    def to_canonical(self, model: Any) -> LinearWeights:
        """The model's weights as `weight: [in, out]`, `bias: [out]`."""

    def from_canonical(self, weights: LinearWeights) -> Any:
        """A model of this library holding `weights`."""


LIBRARIES: dict[str, ModuleType] = {
    "linen": _linen,
    "nnx": _nnx,
    "equinox": _equinox,
    "penzai": _penzai,
}
LIBRARY_NAMES = tuple(LIBRARIES)


def get_library(name: str) -> Library:
    """The library module registered as `name`; raises `ValueError` naming the valid choices."""
    try:
        return LIBRARIES[name]
    except KeyError:
        raise ValueError(
            f"unknown library {name!r}: use one of {', '.join(LIBRARY_NAMES)}"
        ) from None


def convert(model: Any, source: str, target: str) -> Any:
    """Moves a model from library `source` to library `target` through `LinearWeights`."""
    return get_library(target).from_canonical(get_library(source).to_canonical(model))
