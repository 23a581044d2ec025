"""Data sets for the linear model: loading, validation, splitting and standardisation.

Every loader returns a `Dataset` whose arrays are standardised with statistics of the
training split only, so that all four libraries and the exact solver see the very same
numbers. Its `scaling` maps predictions and weights back to the original scale.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jaxlinear._config import BUILTIN_DATASETS as BUILTIN_DATASETS
from jaxlinear._csv import read_table
from jaxlinear._errors import ConfigError
from jaxlinear._errors import DataError as DataError
from jaxlinear._random import generator
from jaxlinear._scaling import Scaling
from jaxlinear._weights import LinearWeights

# Synthetic data beyond this many float64 values would not fit this project's 24 GiB
# machines twice over (the data, then its standardised copy).
MAX_SYNTHETIC_VALUES = 2**30


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A standardised train/test split.

    Attributes:
      name: where the data came from (`diabetes`, `linnerud`, `synthetic`, or a CSV path).
      x_train: `[n_train, in_features]` standardised features, float64.
      y_train: `[n_train, out_features]` standardised targets, float64.
      x_test: `[n_test, in_features]`, scaled with the training statistics.
      y_test: `[n_test, out_features]`, scaled with the training statistics.
      scaling: the training split's means and scales, with the feature and target names.
      true_weights: for synthetic data, the weights that generated it (original scale).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    scaling: Scaling
    true_weights: LinearWeights | None = None

    @property
    def in_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def out_features(self) -> int:
        return self.y_train.shape[1]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.scaling.feature_names

    @property
    def target_names(self) -> tuple[str, ...]:
        return self.scaling.target_names

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
      targets: CSV target column names (required for CSV, ignored otherwise); every other
        column is a feature (see `jaxlinear._csv.read_table` for what a CSV must be).
      seed: the one seed; the split and the synthetic data each use their own stream of it.
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
        if Path(source).is_dir():
            raise DataError(f"{source} is a folder, not a CSV file; give the path of a .csv file")
        if not targets:
            raise ConfigError("targets", f"must name the target column(s) of {source}")
        table = read_table(source, targets)
        x, y = table.features, table.targets
        feature_names, target_names = table.feature_names, table.target_names
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

    `ceil(test_fraction * n)` rows are held out (scikit-learn's `train_test_split` rule),
    drawn from the seed's own "split" stream. The scaling is fitted on the training rows
    only, so no test statistic leaks into training.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    _check_finite(x, feature_names, "feature")
    _check_finite(y, target_names, "target")
    if not (isinstance(test_fraction, int | float) and 0 < test_fraction < 1):
        raise ConfigError("test_fraction", f"must be between 0 and 1, got {test_fraction}")
    n_test = int(np.ceil(test_fraction * len(x)))
    n_train = len(x) - n_test
    if n_train < 2 or n_test < 1:
        raise DataError(
            f"{name}: {len(x)} rows split with test_fraction {test_fraction:g} leave "
            f"{n_train} for training and {n_test} for testing; need at least 2 and 1 "
            "(more rows, or another test_fraction)"
        )
    order = generator(seed, "split").permutation(len(x))
    train, test = order[:n_train], order[n_train:]
    scaling = Scaling.fit(
        x[train], y[train], feature_names=tuple(feature_names), target_names=tuple(target_names)
    )
    return Dataset(
        name=name,
        x_train=scaling.features(x[train]),
        y_train=scaling.targets(y[train]),
        x_test=scaling.features(x[test]),
        y_test=scaling.targets(y[test]),
        scaling=scaling,
        true_weights=true_weights,
    )


def make_synthetic(
    *, n_samples: int, in_features: int, out_features: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray, LinearWeights]:
    """Draws `x: [n, in]` and `y = x @ W + b + noise * eps: [n, out]` with known `W`, `b`.

    The data comes from the seed's "synthetic" stream, which no other purpose uses (the
    initial weights have their own), so a model never starts on the true weights by chance.
    """
    for field, value, low in (
        ("n_samples", n_samples, 2),
        ("in_features", in_features, 1),
        ("out_features", out_features, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(
                field, f"must be an integer >= {low} for synthetic data, got {value!r}"
            )
    if n_samples * (in_features + out_features) > MAX_SYNTHETIC_VALUES:
        raise ConfigError(
            "n_samples",
            f"x (in_features + out_features) = {n_samples * (in_features + out_features):,} "
            f"values is more than the {MAX_SYNTHETIC_VALUES:,} that fit in memory here; "
            "make the synthetic data smaller",
        )
    if not (isinstance(noise, int | float) and np.isfinite(noise) and noise >= 0):
        raise ConfigError("noise", f"must be a finite number >= 0, got {noise}")
    rng = generator(seed, "synthetic")
    weight = rng.normal(size=(in_features, out_features))
    bias = rng.normal(size=(out_features,))
    x = rng.normal(size=(n_samples, in_features))
    y = x @ weight + bias + noise * rng.normal(size=(n_samples, out_features))
    return x, y, LinearWeights(weight, bias)


def _check_finite(values: np.ndarray, names: tuple[str, ...], kind: str) -> None:
    bad_columns = ~np.isfinite(values).all(axis=0)
    if bad_columns.any():
        column = int(np.argmax(bad_columns))
        count = int((~np.isfinite(values[:, column])).sum())
        raise DataError(
            f"{kind} column {names[column]!r} has {count} missing, NaN or infinite value(s); "
            "drop or fill those rows first"
        )


# scikit-learn ships these data sets as small text files. Importing `sklearn.datasets` to read
# them costs ~1 s here (it imports scipy), more than the rest of `jaxlinear compare`'s start,
# so the files are read directly; a test checks the result equals scikit-learn's loaders.
DIABETES_FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")


def _load_diabetes():
    """The diabetes data in its raw units (scikit-learn's `load_diabetes(scaled=False)`): age in
    years, BMI, blood pressure, six blood serum measurements; the target is disease
    progression one year later."""
    x = np.loadtxt(_sklearn_data_file("diabetes_data_raw.csv.gz"))
    y = np.loadtxt(_sklearn_data_file("diabetes_target.csv.gz"))
    return x, y, DIABETES_FEATURES, ("progression",)


def _load_linnerud():
    """Three exercises (features) and three physiological measurements (targets) of 20 men."""
    columns = []
    for name in ("linnerud_exercise.csv", "linnerud_physiological.csv"):
        path = _sklearn_data_file(name)
        with path.open(encoding="utf-8") as file:
            header = tuple(file.readline().split())
        columns.append((np.loadtxt(path, skiprows=1), header))
    (x, feature_names), (y, target_names) = columns
    return x, y, feature_names, target_names


def _sklearn_data_file(name: str) -> Path:
    """A data file bundled with scikit-learn, found without importing scikit-learn."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("scikit-learn is not installed: it ships the built-in data sets")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name
