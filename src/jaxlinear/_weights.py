"""The library-neutral form of a linear model's parameters."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxlinear._random import generator


class LinearWeights(NamedTuple):
    """The canonical parameters of `y = x @ weight + bias`.

    Every library converts to and from this one layout, so weights move between libraries
    through a single, well-defined format.

    Attributes:
      weight: `[in_features, out_features]` (flax's kernel layout; equinox stores the transpose).
      bias: `[out_features]`.
    """

    weight: np.ndarray
    bias: np.ndarray

    @property
    def in_features(self) -> int:
        return self.weight.shape[0]

    @property
    def out_features(self) -> int:
        return self.weight.shape[1]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """`x: [batch, in_features]` -> `[batch, out_features]`, in NumPy."""
        return np.asarray(x) @ self.weight + self.bias

    def astype(self, dtype) -> LinearWeights:
        return LinearWeights(np.asarray(self.weight, dtype), np.asarray(self.bias, dtype))

    def check_shapes(self) -> None:
        """Raises `ValueError` unless `weight` is 2-D and `bias` matches its output size."""
        if np.ndim(self.weight) != 2 or np.shape(self.bias) != (np.shape(self.weight)[1],):
            raise ValueError(
                "canonical weights must be weight: [in_features, out_features] and "
                f"bias: [out_features]; got {np.shape(self.weight)} and {np.shape(self.bias)}"
            )


def initial_weights(in_features: int, out_features: int, *, seed: int) -> LinearWeights:
    """Shared starting point for cross-library comparisons, float32.

    LeCun-normal weight (flax's `Dense`/`nnx.Linear` default) and a zero bias, drawn with NumPy
    from the seed's own "initial_weights" stream, so no library's own initialiser is favoured
    and the start is independent of the data (synthetic data has a stream of its own).
    """
    rng = generator(seed, "initial_weights")
    weight = rng.normal(scale=1.0 / np.sqrt(in_features), size=(in_features, out_features))
    return LinearWeights(weight.astype(np.float32), np.zeros(out_features, np.float32))
