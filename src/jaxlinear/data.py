"""Data sets for the linear model: loading, validation, splitting and standardisation.

Every loader returns a `Dataset` whose arrays are standardised with statistics of the
training split only, so that all four libraries and the exact solver see the very same
numbers. Scalers are kept so predictions and weights can be reported on the original scale.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from jaxlinear._weights import LinearWeights

BUILTIN_DATASETS = ("diabetes", "linnerud", "synthetic")


class DataError(ValueError):
    """The input data cannot be used; the message says what is wrong and how to fix it."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A standardised train/test split.

    Attributes:
      name: where the data came from (`diabetes`, `linnerud`, `synthetic`, or a CSV path).
      x_train: `[n_train, in_features]` standardised features, float64.
      y_train: `[n_train, out_features]` standardised targets, float64.
      x_test: `[n_test, in_features]`, scaled with the training statistics.
      y_test: `[n_test, out_features]`, scaled with the training statistics.
      feature_names, target_names: column names, `in_features` and `out_features` long.
      x_scaler, y_scaler: fitted `StandardScaler`s that map the original scale to this one.
      true_weights: for synthetic data, the weights that generated it (original scale).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]
    x_scaler: StandardScaler
    y_scaler: StandardScaler
    true_weights: LinearWeights | None = None

    @property
    def in_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def out_features(self) -> int:
        return self.y_train.shape[1]

    def targets_to_original(self, y: np.ndarray) -> np.ndarray:
        """Maps standardised targets `[n, out_features]` back to the original scale."""
        return self.y_scaler.inverse_transform(np.asarray(y, dtype=np.float64))

    def weights_to_original(self, weights: LinearWeights) -> LinearWeights:
        """Maps weights fitted on standardised data to weights on the original scale.

        With `x_std = (x - mx) / sx` and `y = y_std * sy + my`, the model
        `y_std = x_std @ W + b` is `y = x @ (W * sy / sx[:, None]) + (b * sy + my - mx @ W')`.
        """
        sx, mx = self.x_scaler.scale_, self.x_scaler.mean_
        sy, my = self.y_scaler.scale_, self.y_scaler.mean_
        weight = np.asarray(weights.weight, np.float64) * sy[None, :] / sx[:, None]
        bias = np.asarray(weights.bias, np.float64) * sy + my - mx @ weight
        return LinearWeights(weight, bias)

    def summary(self) -> dict:
        """The data set's name and shape, as written into reports and JSON."""
        return {
            "name": self.name,
            "n_train": int(self.x_train.shape[0]),
            "n_test": int(self.x_test.shape[0]),
            "in_features": self.in_features,
            "out_features": self.out_features,
        }


def load_dataset(
    source: str,
    *,
    targets: tuple[str, ...] = (),
    seed: int = 0,
    test_fraction: float = 0.2,
    n_samples: int = 1000,
    in_features: int = 8,
    out_features: int = 1,
    noise: float = 0.1,
) -> Dataset:
    """Loads `diabetes`, `linnerud`, `synthetic` or a CSV file, split and standardised.

    Args:
      source: a built-in name or the path of a CSV file with a header row.
      targets: CSV target column names (required for CSV, ignored otherwise).
      seed: seeds the train/test split (and the synthetic data).
      test_fraction: share of rows held out for testing.
      n_samples, in_features, out_features, noise: sizes and noise standard deviation of the
        synthetic data; ignored for the other sources.

    Raises:
      DataError: unknown source, missing file, bad CSV, non-finite values, too few rows.
    """
    true_weights = None
    if source == "diabetes":
        x, y, feature_names, target_names = _load_diabetes()
    elif source == "linnerud":
        x, y, feature_names, target_names = _load_linnerud()
    elif source == "synthetic":
        x, y, true_weights = make_synthetic(
            n_samples=n_samples,
            in_features=in_features,
            out_features=out_features,
            noise=noise,
            seed=seed,
        )
        feature_names = tuple(f"x{i}" for i in range(in_features))
        target_names = tuple(f"y{i}" for i in range(out_features))
    elif source.lower().endswith(".csv") or Path(source).exists():
        x, y, feature_names, target_names = load_csv(source, targets)
    else:
        raise DataError(
            f"unknown dataset {source!r}: use one of {', '.join(BUILTIN_DATASETS)} "
            "or the path of a .csv file"
        )
    return split_and_standardise(
        x,
        y,
        name=source,
        feature_names=feature_names,
        target_names=target_names,
        seed=seed,
        test_fraction=test_fraction,
        true_weights=true_weights,
    )


def split_and_standardise(
    x: np.ndarray,
    y: np.ndarray,
    *,
    name: str,
    feature_names: tuple[str, ...],
    target_names: tuple[str, ...],
    seed: int = 0,
    test_fraction: float = 0.2,
    true_weights: LinearWeights | None = None,
) -> Dataset:
    """Splits `x: [n, in]`, `y: [n, out]` with a seeded shuffle and standardises both.

    The scalers are fitted on the training rows only, so no test statistic leaks into training.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    _check_finite(x, feature_names, "feature")
    _check_finite(y, target_names, "target")
    if x.shape[0] < 2:
        raise DataError(f"{name}: need at least 2 rows to split into train and test, got {len(x)}")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, shuffle=True
    )
    x_scaler = StandardScaler().fit(x_train)
    y_scaler = StandardScaler().fit(y_train)
    return Dataset(
        name=name,
        x_train=x_scaler.transform(x_train),
        y_train=y_scaler.transform(y_train),
        x_test=x_scaler.transform(x_test),
        y_test=y_scaler.transform(y_test),
        feature_names=tuple(feature_names),
        target_names=tuple(target_names),
        x_scaler=x_scaler,
        y_scaler=y_scaler,
        true_weights=true_weights,
    )


def make_synthetic(
    *, n_samples: int, in_features: int, out_features: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray, LinearWeights]:
    """Draws `x: [n, in]` and `y = x @ W + b + noise * eps: [n, out]` with known `W`, `b`."""
    if n_samples < 2 or in_features < 1 or out_features < 1:
        raise DataError(
            "synthetic data needs --samples >= 2, --in-features >= 1 and --out-features >= 1"
        )
    if not np.isfinite(noise) or noise < 0:
        raise DataError(f"--noise must be a finite number >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(in_features, out_features))
    bias = rng.normal(size=(out_features,))
    x = rng.normal(size=(n_samples, in_features))
    y = x @ weight + bias + noise * rng.normal(size=(n_samples, out_features))
    return x, y, LinearWeights(weight, bias)


def load_csv(
    path: str | Path, targets: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """Reads a CSV file with a header row; `targets` name the target columns.

    Every other column is a feature and must be numeric.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if not targets:
        raise DataError(f"{path}: name the target column(s) with --target COLUMN")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot be read as CSV ({error})") from None
    frame.columns = [str(column).strip() for column in frame.columns]
    missing = [t for t in targets if t not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: no target column {', '.join(map(repr, missing))}; "
            f"columns are {', '.join(map(repr, frame.columns))}"
        )
    features = tuple(c for c in frame.columns if c not in targets)
    if not features:
        raise DataError(f"{path}: no feature columns left after removing the targets")
    for column in (*features, *targets):
        if not pd.api.types.is_numeric_dtype(frame[column]):
            kind = "feature" if column in features else "target"
            raise DataError(
                f"{path}: {kind} column {column!r} is not numeric "
                "(remove it or encode it as numbers)"
            )
    return (
        frame[list(features)].to_numpy(np.float64),
        frame[list(targets)].to_numpy(np.float64),
        features,
        tuple(targets),
    )


def _check_finite(values: np.ndarray, names: tuple[str, ...], kind: str) -> None:
    bad_columns = ~np.isfinite(values).all(axis=0)
    if bad_columns.any():
        column = int(np.argmax(bad_columns))
        count = int((~np.isfinite(values[:, column])).sum())
        raise DataError(
            f"{kind} column {names[column]!r} has {count} missing, NaN or infinite value(s); "
            "drop or fill those rows first"
        )


def _load_diabetes():
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    return bunch.data, bunch.target, tuple(bunch.feature_names), ("progression",)


def _load_linnerud():
    from sklearn.datasets import load_linnerud

    bunch = load_linnerud()
    return bunch.data, bunch.target, tuple(bunch.feature_names), tuple(bunch.target_names)
