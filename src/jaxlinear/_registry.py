"""The four libraries behind one bounded interface, keyed by name.

`get_library(name)` returns a `Library`: the documented functions of one library module,
each of which refuses a model that belongs to another library. The modules themselves are
imported on first use, so naming a library costs nothing.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any

from jaxlinear._errors import WrongLibraryError

TITLES = {"linen": "flax.linen", "nnx": "flax.nnx", "equinox": "equinox", "penzai": "penzai"}
LIBRARY_NAMES = tuple(TITLES)


@dataclasses.dataclass(frozen=True)
class Library:
    """One library's linear model.

    Attributes:
      name: registry name (`linen`, `nnx`, `equinox`, `penzai`).
      title: the library's own name (`flax.linen`, ...).
    """

    name: str
    title: str

    @property
    def module(self) -> ModuleType:
        """The implementation, `jaxlinear.libraries.<name>` (imported on first use)."""
        return importlib.import_module(f"jaxlinear.libraries.{self.name}")

    @property
    def model_type(self) -> type:
        """The class of this library's models."""
        return self.module.Model

    def create(self, in_features: int, out_features: int, *, key) -> Any:
        """A fresh model with the library's default initialisers."""
        return self.module.create(in_features, out_features, key=key)

    def predict(self, model: Any, x, *, scaling=None):
        """`x: [batch, in_features]` -> `[batch, out_features]`.

        With `scaling` (a `Scaling`), `x` is in the data's original units and so is the
        result, as a float64 NumPy array; without, both are on the standardised scale.
        """
        self.check_model(model, "predict")
        if scaling is None:
            return self.module.predict(model, x)
        import numpy as np

        standardised = np.asarray(scaling.features(x), np.float32)
        return scaling.targets_to_original(np.asarray(self.module.predict(model, standardised)))

    def to_canonical(self, model: Any):
        """The model's weights as `LinearWeights` (`weight: [in, out]`, `bias: [out]`)."""
        self.check_model(model, "to_canonical")
        return self.module.to_canonical(model)

    def from_canonical(self, weights) -> Any:
        """A model of this library holding `weights` (any `LinearWeights`)."""
        weights.check_shapes()
        return self.module.from_canonical(weights)

    def fit(self, model: Any, x, y, config, **options):
        """Trains a copy of `model`; returns a `FitResult`. `options` are those of
        `jaxlinear.training.fit` (`on_epoch`, `start`, `checkpoint_every`, `on_checkpoint`,
        `sample_weight`, `require_progress`)."""
        from jaxlinear.training import fit

        self.check_model(model, "fit")
        return fit(self.module, model, x, y, config, **options)

    def check_model(self, model: Any, function: str) -> None:
        """Raises `WrongLibraryError` unless `model` is this library's model."""
        if isinstance(model, self.model_type):
            return
        owner = library_of(model)
        found = f"a {TITLES[owner]} model" if owner else f"a {type(model).__qualname__}"
        advice = (
            f"use jaxlinear.get_library({owner!r}), or move it with "
            f"jaxlinear.convert(model, {owner!r}, {self.name!r})"
            if owner
            else f"pass a model made by jaxlinear.get_library({self.name!r})"
        )
        raise WrongLibraryError(f"{self.title}'s {function} was given {found}: {advice}")


LIBRARIES = {name: Library(name, title) for name, title in TITLES.items()}


def get_library(name: str) -> Library:
    """The library registered as `name`; raises `ValueError` naming the valid choices."""
    try:
        return LIBRARIES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown library {name!r}: use one of {', '.join(LIBRARY_NAMES)}"
        ) from None


def library_of(model: Any) -> str | None:
    """The name of the library whose jaxlinear model `model` is, or `None`."""
    module = type(model).__module__
    for name in LIBRARY_NAMES:
        if module == f"jaxlinear.libraries.{name}":
            return name
    return None


def convert(model: Any, source: str, target: str) -> Any:
    """Moves a model from library `source` to library `target` through `LinearWeights`."""
    return get_library(target).from_canonical(get_library(source).to_canonical(model))
