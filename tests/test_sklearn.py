"""`jaxlinear.sklearn.JaxLinearRegressor`: scikit-learn's own estimator checks for every
library, the model-selection tools, and agreement with LinearRegression and Ridge."""

import doctest
import pickle
import subprocess
import sys

import jax
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_diabetes, load_linnerud
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import jaxlinear.sklearn
from jaxlinear import LIBRARY_NAMES, TrainConfig, get_library, initial_weights
from jaxlinear.sklearn import JaxLinearRegressor

# Fitted coefficients are compared on the standardised scale the models train on
# (`coef_ * x_scale / y_scale`), where float32 adam with the default settings ends within
# ~1e-5 of the exact optimum on diabetes (measured 1.0e-5: its features s1-s4 are strongly
# correlated, so it converges slowest) and ~1e-7 on linnerud and on every ridge problem
# here. 1e-4 leaves a 10x margin; a wrong penalty or weighting is off by more than 1e-2.
STANDARDISED_ATOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """jax's persistent compilation cache, in a temporary folder, for this module only.

    Every fit compiles its training loop anew (~0.2 s here), and scikit-learn's checks fit
    ~60 small models per library, many with the same shapes: loading the repeats from the
    cache instead of compiling them took the checks alone from 50 s to 29 s on 2 cores
    (this whole file: ~60 s). The programs are the same either way.
    """
    from jax.experimental.compilation_cache import compilation_cache

    options = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    saved = {name: getattr(jax.config, name) for name in options}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.reset_cache()  # jax decides whether to use a cache only once
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


def _expected_failed_checks(estimator):
    return {
        "check_sample_weight_equivalence_on_dense_data": (
            "Training runs in float32, jax's default precision. A weighted sum over 15 rows "
            "and a plain sum over the same rows repeated round differently, so the two fits "
            "agree to ~1e-6 (the objective is the same), not to the 1e-7 relative that this "
            "check asks of float64 estimators. test_weights_equal_repeated_rows checks the "
            "equivalence at float32 tolerance."
        )
    }


@parametrize_with_checks(
    [JaxLinearRegressor(name) for name in LIBRARY_NAMES],
    expected_failed_checks=_expected_failed_checks,
    xfail_strict=True,  # a check that starts to pass must lose its expected failure
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def _standardised(estimator, coef):
    """`coef` in scikit-learn's layout (`[in]` or `[out, in]`) on `estimator`'s training
    scale, `[out, in]`."""
    scaling = estimator.scaling_
    return np.atleast_2d(coef) * scaling.x_scale / scaling.y_scale[:, None]


def _data(name):
    loader = {"diabetes": load_diabetes, "linnerud": load_linnerud}[name]
    X, y = loader(return_X_y=True)
    return X, y, np.random.default_rng(0).uniform(0.0, 3.0, len(y))


@pytest.mark.parametrize("data", ["diabetes", "linnerud"])
@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_matches_linear_regression_and_ridge(name, data):
    X, y, weights = _data(data)
    ours = JaxLinearRegressor(name, random_state=0).fit(X, y)
    theirs = LinearRegression().fit(X, y)
    assert ours.coef_.shape == theirs.coef_.shape
    assert np.shape(ours.intercept_) == np.shape(theirs.intercept_)
    np.testing.assert_allclose(
        _standardised(ours, ours.coef_), _standardised(ours, theirs.coef_), atol=STANDARDISED_ATOL
    )

    ours = JaxLinearRegressor(name, random_state=0).fit(X, y, sample_weight=weights)
    theirs = LinearRegression().fit(X, y, sample_weight=weights)
    np.testing.assert_allclose(
        _standardised(ours, ours.coef_), _standardised(ours, theirs.coef_), atol=STANDARDISED_ATOL
    )

    # The penalty convention (JaxLinearRegressor's docstring): alpha = l2 * sum(weights).
    l2 = 0.1
    ours = JaxLinearRegressor(name, l2=l2, random_state=0).fit(X, y, sample_weight=weights)
    theirs = make_pipeline(StandardScaler(), Ridge(alpha=l2 * weights.sum()))
    theirs.fit(X, y, standardscaler__sample_weight=weights, ridge__sample_weight=weights)
    ridge_coef = theirs[-1].coef_ / theirs[0].scale_
    np.testing.assert_allclose(
        _standardised(ours, ours.coef_), _standardised(ours, ridge_coef), atol=STANDARDISED_ATOL
    )
    # The penalty is felt: the unpenalised fit is far from the ridge one.
    assert np.abs(_standardised(ours, ridge_coef - LinearRegression().fit(X, y).coef_)).max() > 1e-2
    # Predictions: the same relative agreement, on the original scale of y.
    np.testing.assert_allclose(
        ours.predict(X) / y.std(axis=0), theirs.predict(X) / y.std(axis=0), atol=STANDARDISED_ATOL
    )


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_weights_equal_repeated_rows(name):
    """scikit-learn's sample-weight equivalence check, on its own data, at float32 tolerance:
    integer weights (zeros among them) fit as removing and repeating rows does."""
    rng = np.random.RandomState(42)
    X, y = rng.rand(15, 30), rng.randint(0, 3, size=15).astype(float)
    weights = rng.randint(0, 5, size=15)
    weighted = JaxLinearRegressor(name, random_state=0).fit(X, y, sample_weight=weights)
    repeated = JaxLinearRegressor(name, random_state=0).fit(
        X.repeat(weights, axis=0), y.repeat(weights)
    )
    # Measured 1.3e-6: float32 rounding (~1e-7 per operation) of sums over 15-40 rows, carried
    # through 1,000 adam steps and back to the original scale (the intercept sums 30 products).
    np.testing.assert_allclose(weighted.predict(X), repeated.predict(X), atol=1e-5)
    unweighted = JaxLinearRegressor(name, random_state=0).fit(X, y)
    assert np.abs(unweighted.predict(X) - repeated.predict(X)).max() > 1e-2


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_is_the_driver_on_standardised_data(name):
    """An int random_state is the package's one seed: the estimator gives exactly what
    `Library.fit` gives from `initial_weights(seed)` on the estimator's scaling."""
    X, y, _ = _data("linnerud")
    estimator = JaxLinearRegressor(name, epochs=50, random_state=7).fit(X, y)
    library, scaling = get_library(name), estimator.scaling_
    start = library.from_canonical(initial_weights(3, 3, seed=7))
    direct = library.fit(
        start, scaling.features(X), scaling.targets(y), TrainConfig(epochs=50, seed=7)
    )
    np.testing.assert_array_equal(
        library.to_canonical(estimator.model_).weight, library.to_canonical(direct.model).weight
    )
    assert estimator.n_iter_ == 50 and len(estimator.loss_curve_) == 50
    np.testing.assert_allclose(estimator.loss_curve_, direct.losses, rtol=1e-6)
    assert isinstance(estimator.model_, library.model_type)
    # The library's own forward pass (float32) agrees with predict (float64, X @ coef_.T + b):
    # a few float32 roundings of order-one standardised values, ~1e-7 relative.
    own = library.predict(estimator.model_, X, scaling=scaling)
    np.testing.assert_allclose(own / y.std(axis=0), estimator.predict(X) / y.std(axis=0), atol=1e-5)


def test_shapes_follow_linear_regression():
    X, Y, _ = _data("linnerud")
    for y in (Y[:, 0], Y[:, :1], Y):
        ours = JaxLinearRegressor(epochs=20, random_state=0).fit(X, y)
        theirs = LinearRegression().fit(X, y)
        assert ours.coef_.shape == theirs.coef_.shape
        assert np.shape(ours.intercept_) == np.shape(theirs.intercept_)
        assert ours.predict(X).shape == theirs.predict(X).shape == y.shape
        assert ours.predict(X).dtype == np.float64


def test_feature_names_from_a_data_frame():
    import pandas as pd

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    estimator = JaxLinearRegressor(epochs=20, random_state=0).fit(X, y)
    assert list(estimator.feature_names_in_) == list(X.columns)
    assert estimator.scaling_.feature_names == tuple(X.columns)
    assert estimator.n_features_in_ == 10
    with pytest.warns(UserWarning, match="feature names"):  # scikit-learn's own warning
        estimator.predict(X.to_numpy())
    reordered = pd.DataFrame(X.to_numpy()[:, ::-1], columns=X.columns[::-1])
    with pytest.raises(ValueError, match="feature names"):
        estimator.predict(reordered)
    assert not hasattr(JaxLinearRegressor(epochs=20).fit(X.to_numpy(), y), "feature_names_in_")


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_in_a_pipeline_with_standard_scaler(name):
    X, y, _ = _data("diabetes")
    alone = JaxLinearRegressor(name, random_state=0).fit(X, y)
    pipeline = make_pipeline(StandardScaler(), JaxLinearRegressor(name, random_state=0)).fit(X, y)
    # Standardising twice changes nothing but rounding; both reach LinearRegression's fit.
    np.testing.assert_allclose(pipeline.predict(X) / y.std(), alone.predict(X) / y.std(), atol=1e-4)
    assert pipeline.score(X, y) == pytest.approx(LinearRegression().fit(X, y).score(X, y), abs=1e-6)


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_cross_val_score(name):
    X, y, _ = _data("diabetes")
    # Two folds of 221 rows: one shape, so one compiled program per library.
    ours = cross_val_score(JaxLinearRegressor(name, random_state=0), X, y, cv=2)
    theirs = cross_val_score(LinearRegression(), X, y, cv=2)
    # Held-out R² of weights within STANDARDISED_ATOL of the optimum: ~1e-5 apart.
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_grid_search_over_learning_rate_and_library():
    X, y, _ = _data("diabetes")
    grid = {"learning_rate": [1e-3, 0.1], "library": list(LIBRARY_NAMES)}
    search = GridSearchCV(JaxLinearRegressor(epochs=100, random_state=0), grid, cv=2)
    search.fit(X, y)
    results = search.cv_results_
    scores = {
        (params["library"], params["learning_rate"]): score
        for params, score in zip(results["params"], results["mean_test_score"], strict=True)
    }
    assert len(scores) == 8 and np.isfinite(list(scores.values())).all()
    # 100 steps of adam at 1e-3 move each weight by at most ~0.1: far from the optimum.
    assert search.best_params_["learning_rate"] == 0.1
    best = cross_val_score(LinearRegression(), X, y, cv=2).mean()
    for name in LIBRARY_NAMES:
        assert scores[name, 0.1] == pytest.approx(best, abs=1e-3)
        assert scores[name, 1e-3] < best - 0.05
    assert search.best_estimator_.library == search.best_params_["library"]
    assert search.best_estimator_.score(X, y) == pytest.approx(0.5177, abs=1e-3)


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_partial_fit_carries_the_optimizer_state(name):
    """k `partial_fit` calls on the same full batch are k steps of one adam run: exactly
    `fit` with k epochs at a constant rate. A fresh optimizer per call would restart adam's
    bias correction and take other steps."""
    X, y, weights = _data("linnerud")
    streamed = JaxLinearRegressor(name, random_state=3)
    for _ in range(5):
        streamed.partial_fit(X, y, sample_weight=weights)
    fitted = JaxLinearRegressor(name, epochs=5, schedule="constant", random_state=3)
    fitted.fit(X, y, sample_weight=weights)
    assert streamed.n_iter_ == 5 and len(streamed.loss_curve_) == 5
    # Different compiled programs (one step per call, against a 5-step scan) may round
    # differently: float32, weights of order one.
    np.testing.assert_allclose(streamed.coef_, fitted.coef_, rtol=1e-5)
    np.testing.assert_allclose(streamed.loss_curve_, fitted.loss_curve_, rtol=1e-5)


def test_partial_fit_on_a_stream_of_mini_batches():
    X, y, _ = _data("diabetes")
    estimator = JaxLinearRegressor("equinox", random_state=0)
    scores = []
    for _ in range(10):  # passes over the stream
        for start in range(0, len(X), 111):
            estimator.partial_fit(X[start : start + 111], y[start : start + 111])
        scores.append(estimator.score(X, y))
    # Scaling from the first 111 rows, 40 steps at a constant rate: near, not at, the optimum.
    best = LinearRegression().fit(X, y).score(X, y)
    assert scores[0] < scores[-1] and scores[-1] > best - 0.02
    assert estimator.n_iter_ == 40
    with pytest.raises(ValueError, match="y has 2 targets, but this JaxLinearRegressor was"):
        estimator.partial_fit(X[:10], np.c_[y[:10], y[:10]])
    # fit starts again; partial_fit then goes on from fit's weights. (At a small rate: adam's
    # steps are ~learning_rate in every weight, whatever the gradient's size.)
    estimator.fit(X, y)
    assert estimator.n_iter_ == 1000
    refitted = estimator.score(X, y)
    estimator.set_params(learning_rate=1e-3).partial_fit(X[:111], y[:111])
    assert estimator.n_iter_ == 1001 and len(estimator.loss_curve_) == 1001
    assert estimator.score(X, y) == pytest.approx(refitted, abs=1e-3)


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_pickle_and_clone(name):
    X, y, _ = _data("linnerud")
    estimator = JaxLinearRegressor(name, epochs=30, random_state=0).partial_fit(X, y)
    restored = pickle.loads(pickle.dumps(estimator))
    np.testing.assert_array_equal(restored.predict(X), estimator.predict(X))
    assert isinstance(restored.model_, get_library(name).model_type)
    # The optimizer state travels too: the next partial_fit is the same on both.
    np.testing.assert_array_equal(
        restored.partial_fit(X, y).coef_, estimator.partial_fit(X, y).coef_
    )
    copy = clone(estimator)
    assert copy.get_params() == estimator.get_params() and not hasattr(copy, "coef_")


def test_random_state_follows_scikit_learn():
    X, y, _ = _data("linnerud")

    def first_loss(random_state):
        estimator = JaxLinearRegressor(epochs=4, random_state=random_state)
        return estimator.fit(X, y).loss_curve_[0]

    # The first loss is the objective at the random initial weights.
    assert first_loss(0) == first_loss(0) != first_loss(1)
    # A RandomState draws a new seed at every fit; equal RandomStates give equal fits.
    shared = JaxLinearRegressor(epochs=4, random_state=np.random.RandomState(0))
    assert shared.fit(X, y).loss_curve_[0] != shared.fit(X, y).loss_curve_[0]
    assert first_loss(np.random.RandomState(5)) == first_loss(np.random.RandomState(5))
    # None draws from NumPy's global RandomState.
    state = np.random.get_state()
    try:
        np.random.seed(3)
        once = first_loss(None)
        np.random.seed(3)
        assert first_loss(None) == once
    finally:
        np.random.set_state(state)
    with pytest.raises(ValueError, match="2\\*\\*32"):
        JaxLinearRegressor(random_state=-1).fit(X, y)


def test_bad_parameters_name_themselves():
    X, y, _ = _data("linnerud")
    for params, message in (
        ({"learning_rate": -1.0}, "learning_rate must be a positive finite number"),
        ({"library": "torch"}, "unknown library 'torch': use one of linen, nnx"),
        ({"epochs": 0}, "epochs must be between 1"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of adam, sgd"),
    ):
        with pytest.raises(ValueError, match=message):
            JaxLinearRegressor(**params).fit(X, y)
    with pytest.raises(ValueError, match="Sample weights must contain at least one non-zero"):
        JaxLinearRegressor().fit(X, y, sample_weight=np.zeros(len(X)))


def test_defaults_are_the_training_defaults():
    params, defaults = JaxLinearRegressor().get_params(), TrainConfig()
    for name in ("epochs", "batch_size", "learning_rate", "optimizer", "schedule", "l2"):
        assert params[name] == getattr(defaults, name)
    assert params["step_mode"] == defaults.step_mode


def test_import_gets_scikit_learn_and_no_jax():
    import sklearn.base

    # `jaxlinear/sklearn.py` is `jaxlinear.sklearn`; its `import sklearn` is scikit-learn.
    assert jaxlinear.sklearn.BaseEstimator is sklearn.base.BaseEstimator
    code = "import sys, jaxlinear.sklearn; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_docstring_examples():
    failures, tried = doctest.testmod(jaxlinear.sklearn)
    assert tried > 0 and failures == 0
