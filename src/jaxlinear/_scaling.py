"""The one value that maps data between its original units and the standardised scale the
models are trained on: the data sets, saved models, `predict` and the scikit-learn estimator
all use it."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxlinear._errors import DataError
from jaxlinear._weights import LinearWeights

# A column whose spread is below this (relative to its size) is constant up to rounding; it
# keeps scale 1, as scikit-learn's `StandardScaler` does, instead of being blown up to noise.
_CONSTANT_COLUMN = 10 * np.finfo(np.float64).eps


@dataclasses.dataclass(frozen=True)
class Scaling:
    """Per-column means and scales of features and targets, with their names.

    The models see `x_std = (x - x_mean) / x_scale` and predict `y_std`, which maps back to
    `y = y_std * y_scale + y_mean`.

    Attributes:
      x_mean, x_scale: `[in_features]` float64; scales are positive.
      y_mean, y_scale: `[out_features]` float64.
      feature_names: `in_features` column names; target_names: `out_features`.
    """

    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: np.ndarray
    y_scale: np.ndarray
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]

    def __post_init__(self):
        for field in ("x_mean", "x_scale", "y_mean", "y_scale"):
            object.__setattr__(self, field, np.asarray(getattr(self, field), np.float64))
        object.__setattr__(self, "feature_names", tuple(map(str, self.feature_names)))
        object.__setattr__(self, "target_names", tuple(map(str, self.target_names)))
        self.check()

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        *,
        feature_names: tuple[str, ...] | None = None,
        target_names: tuple[str, ...] | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> Scaling:
        """Means and standard deviations of `x: [n, in]` and `y: [n, out]` (float64), weighted
        by `sample_weight: [n]` when given (as scikit-learn's `StandardScaler` weighs them).

        Raises `DataError` when a column's values are too large for its variance to be a
        finite float64 (rescale that column first).
        """
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        feature_names = feature_names or tuple(f"x{i}" for i in range(x.shape[1]))
        target_names = target_names or tuple(f"y{i}" for i in range(y.shape[1]))
        x_mean, x_scale = _mean_and_scale(x, feature_names, "feature", sample_weight)
        y_mean, y_scale = _mean_and_scale(y, target_names, "target", sample_weight)
        return cls(x_mean, x_scale, y_mean, y_scale, feature_names, target_names)

    @property
    def in_features(self) -> int:
        return self.x_mean.shape[0]

    @property
    def out_features(self) -> int:
        return self.y_mean.shape[0]

    def features(self, x: np.ndarray) -> np.ndarray:
        """Original `x: [n, in_features]` -> standardised, float64."""
        return (self._columns(x, self.in_features, "feature") - self.x_mean) / self.x_scale

    def targets(self, y: np.ndarray) -> np.ndarray:
        """Original `y: [n, out_features]` -> standardised, float64."""
        return (self._columns(y, self.out_features, "target") - self.y_mean) / self.y_scale

    def targets_to_original(self, y: np.ndarray) -> np.ndarray:
        """Standardised `y: [n, out_features]` -> original units, float64."""
        return self._columns(y, self.out_features, "target") * self.y_scale + self.y_mean

    def weights_to_original(self, weights: LinearWeights) -> LinearWeights:
        """Weights fitted on standardised data as weights on the original scale, float64.

        With `x_std = (x - mx) / sx` and `y = y_std * sy + my`, the model
        `y_std = x_std @ W + b` is `y = x @ W' + (b * sy + my - mx @ W')`, `W' = W sy / sx`.
        """
        weight = np.asarray(weights.weight, np.float64) * self.y_scale / self.x_scale[:, None]
        bias = np.asarray(weights.bias, np.float64) * self.y_scale + self.y_mean
        return LinearWeights(weight, bias - self.x_mean @ weight)

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The four float64 arrays by name (for files; names travel separately)."""
        return {name: getattr(self, name) for name in ("x_mean", "x_scale", "y_mean", "y_scale")}

    def check(self) -> None:
        """Raises `ValueError` unless shapes match the names and every value is usable."""
        for field, size in (("x", len(self.feature_names)), ("y", len(self.target_names))):
            mean, scale = getattr(self, f"{field}_mean"), getattr(self, f"{field}_scale")
            if mean.shape != (size,) or scale.shape != (size,):
                raise ValueError(
                    f"{field}_mean and {field}_scale must have shape ({size},) to match the "
                    f"names, got {mean.shape} and {scale.shape}"
                )
            if not (np.isfinite(mean).all() and np.isfinite(scale).all() and (scale > 0).all()):
                raise ValueError(f"{field}_mean must be finite and {field}_scale positive")

    def _columns(self, values, width: int, kind: str) -> np.ndarray:
        values = np.asarray(values, np.float64)
        if values.ndim != 2 or values.shape[1] != width:
            raise DataError(f"expected {kind}s of shape [n, {width}], got {values.shape}")
        return values


def _mean_and_scale(
    values: np.ndarray, names, kind: str, sample_weight=None
) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(over="ignore", invalid="ignore"):
        if sample_weight is None:
            mean, scale = values.mean(axis=0), values.std(axis=0)
        else:
            mean = np.average(values, axis=0, weights=sample_weight)
            scale = np.sqrt(np.average((values - mean) ** 2, axis=0, weights=sample_weight))
    bad = ~(np.isfinite(mean) & np.isfinite(scale))
    if bad.any():
        column = names[int(np.argmax(bad))]
        raise DataError(
            f"{kind} column {column!r} has values too large to standardise in float64; "
            "rescale it (e.g. change its units) first"
        )
    constant = scale <= _CONSTANT_COLUMN * np.maximum(np.abs(mean), 1.0)
    return mean, np.where(constant, 1.0, scale)
