"""The closed-form reference, checked against independent solvers."""

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, Ridge

from jaxlinear import least_squares
from jaxlinear.exact import objective


def _data(seed=0, n=50, d=4, k=2):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) + 3.0, rng.normal(size=(n, k)) - 1.0


def test_matches_sklearn_linear_regression():
    x, y = _data()
    weights = least_squares(x, y)
    reference = LinearRegression().fit(x, y)
    np.testing.assert_allclose(weights.weight, reference.coef_.T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(weights.bias, reference.intercept_, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("l2", [0.01, 1.0])
def test_ridge_matches_sklearn(l2):
    # Our objective (1/2n)||r||^2 + (l2/2)||W||^2 times 2n is sklearn's with alpha = n * l2.
    x, y = _data()
    weights = least_squares(x, y, l2=l2)
    reference = Ridge(alpha=len(x) * l2).fit(x, y)
    np.testing.assert_allclose(weights.weight, reference.coef_.T, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(weights.bias, reference.intercept_, rtol=1e-9, atol=1e-12)


def test_solution_is_a_minimum_of_the_objective():
    x, y = _data(seed=1)
    best = least_squares(x, y, l2=0.1)
    rng = np.random.default_rng(2)
    for _ in range(5):
        nudged = best._replace(weight=best.weight + 1e-3 * rng.normal(size=best.weight.shape))
        assert objective(nudged, x, y, l2=0.1) > objective(best, x, y, l2=0.1)


def test_rank_deficient_gives_minimum_norm_fit():
    x, y = _data()
    x = np.concatenate([x, x[:, :1]], axis=1)  # a duplicated column
    weights = least_squares(x, y)
    np.testing.assert_allclose(weights.weight[0], weights.weight[-1], rtol=1e-8)
    np.testing.assert_allclose(
        weights.predict(x), LinearRegression().fit(x, y).predict(x), atol=1e-9
    )
