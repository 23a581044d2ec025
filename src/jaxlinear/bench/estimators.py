"""`jaxlinear bench --sklearn`: `JaxLinearRegressor` next to scikit-learn's linear models,
fitted on the same data in one process.

Two cases, each split 80/20 with the benchmark's seed: scikit-learn's diabetes data
(442 x 10) and a synthetic problem (`problems.make_problem`, by default 200,000 x 64,
float32). On each, every estimator is fitted `repeats` times, one fit of each per round in
an order shuffled per round, and timed from the call of `fit` to its return: for the JAX
estimators that includes standardising the data and compiling the training loop, which the
driver does at every fit (~0.3 s here). The result is that of the last fit: held-out R², and
the largest difference between its coefficients and its reference's on the standardised
scale (`coef * std(x) / std(y)`, where float32 training is accurate to ~1e-5).

The rows: `LinearRegression` (the reference for least squares); `SGDRegressor` with its
defaults after a `StandardScaler`, as scikit-learn advises; `JaxLinearRegressor` for every
library; and ridge at `l2 = RIDGE_L2` both ways, `StandardScaler` + `Ridge(alpha=l2 * n)`
(the reference, see `JaxLinearRegressor`'s penalty convention) and `JaxLinearRegressor(l2=
RIDGE_L2)`. The JAX estimators run with their defaults (full batch, 1,000 epochs) on
diabetes; on the large problem they run mini-batches (`batch_size`, `LARGE_EPOCHS` epochs),
and one row shows the defaults there too, to show what full-batch training costs at that size.
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import time
from collections.abc import Callable

import jax
import numpy as np
from sklearn.model_selection import train_test_split

from jaxlinear._registry import get_library
from jaxlinear.bench.options import SKLEARN_SIZES, BenchSizes
from jaxlinear.bench.run import machine
from jaxlinear.bench.summary import summary
from jaxlinear.bench.timing import frozen_heap

RIDGE_L2 = 0.01
LARGE_EPOCHS = 20


def sklearn_cases(sizes: BenchSizes) -> list[tuple[str, np.ndarray, np.ndarray, dict]]:
    """`(name, x, y, jax_settings)` of each case: `x: [n, d]`, `y: [n]`, and the settings
    of the JAX estimators on it (beyond `random_state`)."""
    from sklearn.datasets import load_diabetes

    from jaxlinear.bench.problems import make_problem

    x, y = load_diabetes(return_X_y=True)
    large_x, large_y = make_problem(sizes.large_samples, sizes.large_features, seed=sizes.seed)
    mini_batches = {"batch_size": sizes.batch_size, "epochs": LARGE_EPOCHS}
    return [
        ("diabetes", x, y, {}),
        (
            f"synthetic {sizes.large_samples:,} x {sizes.large_features}",
            large_x,
            large_y[:, 0],
            mini_batches,
        ),
    ]


def estimators(
    libraries, n_train: int, jax_settings: dict, seed: int
) -> list[tuple[str, str | None, Callable]]:
    """`(label, reference label, make)` for each row, `make()` giving a fresh estimator."""
    from sklearn.linear_model import LinearRegression, Ridge, SGDRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from jaxlinear.sklearn import JaxLinearRegressor

    settings = "".join(f", {key}={value!r}" for key, value in jax_settings.items())
    alpha = RIDGE_L2 * n_train
    ridge = f"StandardScaler + Ridge(alpha={alpha:g})"
    rows = [
        ("LinearRegression()", None, LinearRegression),
        (
            "StandardScaler + SGDRegressor()",
            "LinearRegression()",
            lambda: make_pipeline(StandardScaler(), SGDRegressor(random_state=seed)),
        ),
    ]
    for name in libraries:
        rows.append(
            (
                f"JaxLinearRegressor({name!r}{settings})",
                "LinearRegression()",
                lambda name=name: JaxLinearRegressor(name, random_state=seed, **jax_settings),
            )
        )
    if jax_settings:  # the defaults as well, where they are not what the rows above run
        rows.append(
            (
                "JaxLinearRegressor('nnx') (defaults)",
                "LinearRegression()",
                lambda: JaxLinearRegressor("nnx", random_state=seed),
            )
        )
    rows.append((ridge, None, lambda: make_pipeline(StandardScaler(), Ridge(alpha=alpha))))
    rows.append(
        (
            f"JaxLinearRegressor('nnx', l2={RIDGE_L2:g}{settings})",
            ridge,
            lambda: JaxLinearRegressor("nnx", l2=RIDGE_L2, random_state=seed, **jax_settings),
        )
    )
    return rows


def original_coef(estimator) -> np.ndarray:
    """`[d]` coefficients on the original scale of `x`, for a model or a scaler pipeline."""
    if hasattr(estimator, "steps"):
        scaler, model = estimator.steps[0][1], estimator.steps[-1][1]
        return np.ravel(model.coef_) / scaler.scale_
    return np.ravel(estimator.coef_)


def run_sklearn(
    sizes: BenchSizes, libraries, *, progress=None, command: str = "jaxlinear bench --sklearn"
) -> dict:
    """Fits every row of every case (see the module docstring); returns the `--json` shape:
    `{"command", "settings", "machine", "sklearn": {"repeats", "ridge_l2", "cases": {name:
    {"train_samples", "test_samples", "features", "jax_settings", "rows": [{"estimator",
    "reference", "fit_s", "fit_s_min", "fit_s_max", "samples_s", "test_r2",
    "max_coef_difference"}]}}}}`.
    """
    progress = progress or (lambda phase, total: lambda: None)
    # What a process pays once (importing the libraries, starting jax's CPU client) is not
    # part of any fit; compiling is, as every fit compiles its own training loop.
    for name in libraries:
        get_library(name).module.create(1, 1, key=jax.random.key(0))
    settings = {name: getattr(sizes, name) for name in SKLEARN_SIZES}
    result = {"command": command, "settings": settings, "machine": machine()}
    result["machine"]["versions"]["scikit-learn"] = importlib.metadata.version("scikit-learn")
    cases = {}
    for name, x, y, jax_settings in sklearn_cases(sizes):
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=0.2, random_state=sizes.seed
        )
        rows = estimators(libraries, len(x_train), jax_settings, sizes.seed)
        samples = {label: [] for label, _, _ in rows}
        fitted = {}
        rng = np.random.default_rng(sizes.seed)
        advance = progress(name, sizes.repeats)
        with frozen_heap():
            for _ in range(sizes.repeats):
                for index in rng.permutation(len(rows)):
                    label, _, make = rows[index]
                    estimator = make()
                    gc.collect()
                    start = time.perf_counter()
                    estimator.fit(x_train, y_train)
                    samples[label].append(time.perf_counter() - start)
                    fitted[label] = estimator
                advance()
        scale = np.std(x_train, axis=0) / np.std(y_train)
        entries = []
        for label, reference, _ in rows:
            estimator = fitted[label]
            entry = {"estimator": label, "reference": reference}
            entry.update(summary("fit_s", samples[label]))
            entry["samples_s"] = samples[label]
            entry["test_r2"] = float(estimator.score(x_test, y_test))
            entry["max_coef_difference"] = (
                None
                if reference is None
                else float(
                    np.max(
                        np.abs(original_coef(estimator) - original_coef(fitted[reference])) * scale
                    )
                )
            )
            entries.append(entry)
        cases[name] = {
            "train_samples": len(x_train),
            "test_samples": len(x_test),
            "features": x.shape[1],
            "jax_settings": jax_settings,
            "rows": entries,
        }
        del fitted
        gc.collect()
    result["sklearn"] = {"repeats": sizes.repeats, "ridge_l2": RIDGE_L2, "cases": cases}
    result["machine"]["load_average_end"] = list(os.getloadavg())
    return result
