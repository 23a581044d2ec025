"""Train several libraries from the same start on the same batches and measure them against
the exact least-squares solution."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxlinear._registry import LIBRARY_NAMES, get_library
from jaxlinear._weights import LinearWeights, initial_weights
from jaxlinear.data import Dataset
from jaxlinear.exact import least_squares, objective
from jaxlinear.training import FitResult, TrainConfig

# A run counts as converged when its final training objective is within this of the exact
# optimum: 1e-4 relative is about what float32 training reaches on these problems with the
# default settings (seen: 1e-9 on diabetes), and the 1e-6 absolute floor covers noise-free
# data, whose optimum is 0. Targets are standardised, so predicting the mean scores 0.5 per
# output: the margin is small against any real shortfall.
CONVERGED_RTOL, CONVERGED_ATOL = 1e-4, 1e-6


@dataclasses.dataclass
class LibraryRun:
    """One library's run.

    Attributes:
      library: registry name.
      initial_model, trained_model: the library's own model objects before and after training.
      fit: losses and timings.
      weights: trained canonical weights on the standardised scale (float32).
      metrics: `train_mse`, `test_mse`, `test_r2` (original scale), `max_abs_weight_error`
        (standardised scale, against the exact solution), `objective_gap` (final training
        objective minus the exact optimum), `converged` (that gap within
        `CONVERGED_RTOL`/`CONVERGED_ATOL` of the optimum), `compile_seconds`, `ms_per_step`.
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
            original = self.dataset.scaling.weights_to_original(weights)
            return {"W": original.weight.tolist(), "b": original.bias.tolist()}

        return {
            "feature_names": list(self.dataset.feature_names),
            "target_names": list(self.dataset.target_names),
            "exact": as_lists(self.exact_weights),
            **{name: as_lists(run.weights) for name, run in self.runs.items()},
        }


def evaluate(weights: LinearWeights, dataset: Dataset) -> dict[str, float]:
    """MSE on train and test and R² on test, all on the original scale of the targets."""

    scaling = dataset.scaling

    def original(x):
        return scaling.targets_to_original(weights.predict(x))

    y_train = scaling.targets_to_original(dataset.y_train)
    y_test = scaling.targets_to_original(dataset.y_test)
    prediction_test = original(dataset.x_test)
    return {
        "train_mse": _mse(y_train, original(dataset.x_train)),
        "test_mse": _mse(y_test, prediction_test),
        "test_r2": _r2(y_test, prediction_test),
    }


def _mse(y: np.ndarray, prediction: np.ndarray) -> float:
    """Mean squared error averaged over outputs (scikit-learn's `mean_squared_error`)."""
    return float(np.mean((y - prediction) ** 2))


def _r2(y: np.ndarray, prediction: np.ndarray) -> float:
    """R² averaged uniformly over outputs (scikit-learn's `r2_score`); NaN below two rows."""
    if len(y) < 2:
        return math.nan
    residual = np.sum((y - prediction) ** 2, axis=0)
    total = np.sum((y - y.mean(axis=0)) ** 2, axis=0)
    # A constant target column has R² 1 if predicted exactly, else 0 (scikit-learn's rule).
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(total > 0, 1 - residual / total, np.where(residual == 0, 1.0, 0.0))
    return float(np.mean(scores))


ProgressFn = Callable[[str, int, float], None]


def compare(
    dataset: Dataset,
    config: TrainConfig,
    libraries: Sequence[str] = LIBRARY_NAMES,
    *,
    on_epoch: ProgressFn | None = None,
    fit_options: dict[str, Any] | None = None,
) -> Comparison:
    """Trains each library from the same initial weights on the same batches.

    Args:
      dataset: standardised data (see `load_dataset`).
      config: shared training settings; `config.seed` also seeds the initial weights.
      libraries: registry names, in the order to run them.
      on_epoch: called as `(library, epochs_done, last_loss)` after every epoch.
      fit_options: passed to every library's `fit` (`checkpoint_every`, `on_checkpoint`;
        `start` resumes a run, so it suits a single library).

    Raises:
      ValueError: an unknown library name; ConfigError: an invalid setting.
      TrainingDiverged, TrainingFailed: a library's training failed (see `training.fit`).
    """
    config.validate()
    modules = {name: get_library(name) for name in libraries}
    exact_weights = least_squares(dataset.x_train, dataset.y_train, l2=config.l2)
    optimum = objective(exact_weights, dataset.x_train, dataset.y_train, l2=config.l2)
    exact = {**evaluate(exact_weights, dataset), "train_loss": optimum}
    start = initial_weights(dataset.in_features, dataset.out_features, seed=config.seed)
    x_train = dataset.x_train.astype(np.float32)
    y_train = dataset.y_train.astype(np.float32)
    runs = {}
    for name, library in modules.items():
        initial_model = library.from_canonical(start)
        progress = None if on_epoch is None else _bind_name(on_epoch, name)
        fit = library.fit(
            initial_model, x_train, y_train, config, on_epoch=progress, **(fit_options or {})
        )
        weights = library.to_canonical(fit.model)
        metrics = {
            **evaluate(weights, dataset),
            "max_abs_weight_error": float(np.max(np.abs(weights.weight - exact_weights.weight))),
            "objective_gap": fit.final_objective - optimum,
            "converged": bool(
                fit.final_objective - optimum <= CONVERGED_RTOL * optimum + CONVERGED_ATOL
            ),
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
            test_predictions=dataset.scaling.targets_to_original(weights.predict(dataset.x_test)),
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
