"""Train several libraries from the same start on the same batches and measure them against
the exact least-squares solution."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import mean_squared_error, r2_score

from jaxlinear._data import Dataset
from jaxlinear._exact import least_squares, objective
from jaxlinear._registry import LIBRARY_NAMES, get_library
from jaxlinear._training import FitResult, TrainConfig
from jaxlinear._weights import LinearWeights, initial_weights


@dataclasses.dataclass
class LibraryRun:
    """One library's run.

    Attributes:
      library: registry name.
      initial_model, trained_model: the library's own model objects before and after training.
      fit: losses and timings.
      weights: trained canonical weights on the standardised scale (float32).
      metrics: `train_mse`, `test_mse`, `test_r2` (original scale), `max_abs_weight_error`
        (standardised scale, against the exact solution), `compile_seconds`, `ms_per_step`.
      test_predictions: `[n_test, out_features]` on the original scale.
    """

    library: str
    initial_model: Any
    trained_model: Any
    fit: FitResult
    weights: LinearWeights
    metrics: dict[str, float]
    test_predictions: np.ndarray


@dataclasses.dataclass
class Comparison:
    """Everything `jaxlinear compare` reports.

    Attributes:
      dataset: the standardised data.
      config: training settings shared by every library.
      exact_weights: the closed-form solution on the standardised scale (float64).
      exact: `train_mse`, `test_mse`, `test_r2` of the exact solution (original scale) and
        `train_loss`, the optimum of the training objective.
      runs: one `LibraryRun` per library, in the order asked for.
    """

    dataset: Dataset
    config: TrainConfig
    exact_weights: LinearWeights
    exact: dict[str, float]
    runs: dict[str, LibraryRun]

    def to_json(self) -> dict:
        """The documented JSON shape (NaN, e.g. R² on a one-row test set, becomes `null`)."""
        return _json_safe(
            {
                "dataset": self.dataset.summary(),
                "settings": dataclasses.asdict(self.config),
                "exact": self.exact,
                "libraries": {name: run.metrics for name, run in self.runs.items()},
                "weights_original_scale": self.weights_original_scale(),
            }
        )

    def weights_original_scale(self) -> dict:
        """`W: [in, out]` and `b: [out]` as lists, on the data's original scale, per library and
        for the exact solution, with the feature and target names."""

        def as_lists(weights: LinearWeights) -> dict:
            original = self.dataset.weights_to_original(weights)
            return {"W": original.weight.tolist(), "b": original.bias.tolist()}

        return {
            "feature_names": list(self.dataset.feature_names),
            "target_names": list(self.dataset.target_names),
            "exact": as_lists(self.exact_weights),
            **{name: as_lists(run.weights) for name, run in self.runs.items()},
        }


def evaluate(weights: LinearWeights, dataset: Dataset) -> dict[str, float]:
    """MSE on train and test and R² on test, all on the original scale of the targets."""

    def original(x):
        return dataset.targets_to_original(weights.predict(x))

    y_train = dataset.targets_to_original(dataset.y_train)
    y_test = dataset.targets_to_original(dataset.y_test)
    prediction_test = original(dataset.x_test)
    return {
        "train_mse": float(mean_squared_error(y_train, original(dataset.x_train))),
        "test_mse": float(mean_squared_error(y_test, prediction_test)),
        # R² is undefined with fewer than two test rows.
        "test_r2": float(r2_score(y_test, prediction_test)) if len(y_test) > 1 else math.nan,
    }


ProgressFn = Callable[[str, int, float], None]


def compare(
    dataset: Dataset,
    config: TrainConfig,
    libraries: Sequence[str] = LIBRARY_NAMES,
    *,
    on_epoch: ProgressFn | None = None,
) -> Comparison:
    """Trains each library from the same initial weights on the same batches.

    Args:
      dataset: standardised data (see `load_dataset`).
      config: shared training settings; `config.seed` also seeds the initial weights.
      libraries: registry names, in the order to run them.
      on_epoch: called as `(library, epochs_done, last_loss)` after every epoch.

    Raises:
      ValueError: an unknown library name or invalid setting.
      TrainingDiverged: a library's loss became NaN or infinite.
    """
    config.validate()
    modules = {name: get_library(name) for name in libraries}
    exact_weights = least_squares(dataset.x_train, dataset.y_train, l2=config.l2)
    exact = {
        **evaluate(exact_weights, dataset),
        "train_loss": objective(exact_weights, dataset.x_train, dataset.y_train, l2=config.l2),
    }
    start = initial_weights(dataset.in_features, dataset.out_features, seed=config.seed)
    x_train = dataset.x_train.astype(np.float32)
    y_train = dataset.y_train.astype(np.float32)
    runs = {}
    for name, library in modules.items():
        initial_model = library.from_canonical(start)
        progress = None if on_epoch is None else _bind_name(on_epoch, name)
        fit = library.fit(initial_model, x_train, y_train, config, on_epoch=progress)
        weights = library.to_canonical(fit.model)
        metrics = {
            **evaluate(weights, dataset),
            "max_abs_weight_error": float(np.max(np.abs(weights.weight - exact_weights.weight))),
            "compile_seconds": fit.compile_seconds,
            "ms_per_step": fit.ms_per_step,
        }
        runs[name] = LibraryRun(
            library=name,
            initial_model=initial_model,
            trained_model=fit.model,
            fit=fit,
            weights=weights,
            metrics=metrics,
            test_predictions=dataset.targets_to_original(weights.predict(dataset.x_test)),
        )
    return Comparison(dataset, config, exact_weights, exact, runs)


def _bind_name(on_epoch: ProgressFn, name: str) -> Callable[[int, float], None]:
    return lambda epochs_done, loss: on_epoch(name, epochs_done, loss)


def _json_safe(value):
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
