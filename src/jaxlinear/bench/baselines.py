"""What a linear model can be fitted in without gradient descent: the closed form, and
scikit-learn, timed on the large problem's float32 data."""

from __future__ import annotations

import gc
import time
import warnings
from collections.abc import Callable

import numpy as np

from jaxlinear.bench.summary import summary
from jaxlinear.bench.timing import frozen_heap, time_call
from jaxlinear.exact import least_squares, least_squares_gram


def closed_form_and_sklearn(
    x: np.ndarray, y: np.ndarray, repeats: int, advance: Callable[[], None]
) -> dict:
    """Seconds of `least_squares_gram` (normal equations in float64), scikit-learn's
    `LinearRegression.fit` and one epoch of `SGDRegressor` on `x: [n, in]`, `y: [n, 1]`,
    each `repeats` times in turn; then once `least_squares` (lstsq in float64), and the
    largest difference between the two exact solutions.

    Calls `advance()` after each repeat and after the lstsq.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LinearRegression, SGDRegressor

    target = y[:, 0]

    def sgd_epoch():
        with warnings.catch_warnings():
            # One epoch on purpose: sklearn warns that it has not converged.
            warnings.simplefilter("ignore", ConvergenceWarning)
            SGDRegressor(max_iter=1, tol=None, random_state=0).fit(x, target)

    timings = {"closed_form_s": [], "sklearn_linear_regression_s": [], "sklearn_sgd_epoch_s": []}
    with frozen_heap():
        for _ in range(repeats):
            for key, function in (
                ("closed_form_s", lambda: least_squares_gram(x, y)),
                ("sklearn_linear_regression_s", lambda: LinearRegression().fit(x, target)),
                ("sklearn_sgd_epoch_s", sgd_epoch),
            ):
                gc.collect()
                timings[key].append(time_call(function))
            advance()
        gc.collect()
        start = time.perf_counter()
        reference = least_squares(x, y)
        lstsq_seconds = time.perf_counter() - start
    gram = least_squares_gram(x, y)
    advance()
    result = {}
    for key, samples in timings.items():
        result.update(summary(key, samples))
    result["closed_form_lstsq_s"] = lstsq_seconds
    result["closed_form_max_abs_difference"] = float(
        max(
            np.max(np.abs(gram.weight - reference.weight)),
            np.max(np.abs(gram.bias - reference.bias)),
        )
    )
    return result
