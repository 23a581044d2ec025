"""scikit-learn's estimator API over the four libraries: `JaxLinearRegressor`.

>>> from sklearn.datasets import load_linnerud
>>> from jaxlinear.sklearn import JaxLinearRegressor
>>> X, Y = load_linnerud(return_X_y=True)
>>> model = JaxLinearRegressor("penzai", epochs=300, random_state=0).fit(X, Y)
>>> model.coef_.shape, model.intercept_.shape      # as LinearRegression's: [out, in], [out]
((3, 3), (3,))
>>> model.predict(X[:2]).shape
(2, 3)

One class with the library as a parameter, not one class per library: the four libraries
train the same model on the same objective behind one interface (`jaxlinear.get_library`),
so what differs between them is a value, not a behaviour. As a parameter it is what
scikit-learn's tools can vary: `GridSearchCV(..., {"library": [...]})` compares the four on
the same folds, `clone` and `set_params` switch between them, and there is one docstring,
one set of fitted attributes and one run of scikit-learn's checks to keep true, not four.

Training is `jaxlinear.training.fit`, the package's one driver, on data standardised by
`jaxlinear.Scaling`: this module only translates between scikit-learn's conventions and
them. It imports scikit-learn (absolute imports: `import sklearn` here is scikit-learn, not
this module) but not jax, which is imported by the first `fit`.
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from jaxlinear._config import TrainConfig
from jaxlinear._random import integer_seed
from jaxlinear._registry import get_library
from jaxlinear._scaling import Scaling
from jaxlinear._weights import initial_weights


class JaxLinearRegressor(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Linear least squares (ridge with `l2 > 0`) trained by gradient descent in flax.linen,
    flax.nnx, equinox or penzai.

    `fit` standardises `X` and `y` (per column, to mean 0 and standard deviation 1, weighted
    by `sample_weight` as `StandardScaler` weighs them), trains the chosen library's model
    on that scale with `jaxlinear.training.fit`, and expresses the result on the original
    scale as `coef_` and `intercept_`. `predict` is `X @ coef_.T + intercept_` in float64,
    as for scikit-learn's linear models; the library's own model is `model_`, and
    `jaxlinear.get_library(library).predict(model_, X, scaling=scaling_)` gives the same
    values through its own (float32) forward pass.

    Objective. With `x`, `y` standardised and the weights `w` scaled to mean 1, training
    minimises `J(W, b) = mean_i(w_i * 0.5 * ||x_i W + b - y_i||^2) + 0.5 * l2 * ||W||^2`;
    the bias is not penalised. With `l2 = 0` its minimum is ordinary (weighted) least
    squares, whatever the scale: `LinearRegression().fit(X, y, sample_weight=s)`.

    Penalty convention: `l2` penalises the weights on the STANDARDISED scale. The same model
    in scikit-learn is `make_pipeline(StandardScaler(), Ridge(alpha=l2 * sum(s)))` fitted
    with the same weights `s` given to both steps (`sum(s)` is `n_samples` without weights).
    Derivation, for one target (both objectives split into one term per target): the
    pipeline standardises `X` but not `y`, so its coefficients are `C = W * sy` and
    `c = b * sy + my`, where `W`, `b` act on standardised `y`; its residuals are `sy` times
    ours. It minimises `sum_i s_i (x_i C + c - Y_i)^2 + alpha ||C||^2
    = sy^2 * [sum_i s_i (x_i W + b - y_i)^2 + alpha ||W||^2]`, while `J` is
    `[sum_i s_i 0.5 (x_i W + b - y_i)^2] / sum(s) + 0.5 * l2 * ||W||^2`, i.e.
    `1 / (2 sum(s))` times `[sum_i s_i (x_i W + b - y_i)^2 + l2 sum(s) ||W||^2]`. The two
    are proportional, so they have the same minimiser, exactly when `alpha = l2 * sum(s)`.
    On the original scale of `X` that model's coefficients are `C / StandardScaler.scale_`.

    Parameters:
      library: `"linen"`, `"nnx"`, `"equinox"` or `"penzai"`.
      optimizer: `"adam"` or `"sgd"` (optax's).
      learning_rate: the optimizer's step size (the peak of the cosine schedule).
      epochs: passes over the training set in `fit`.
      batch_size: examples per step; `None` (or >= `n_samples`) is full-batch training.
      schedule: `"cosine"` (decays to 0 over the `fit`) or `"constant"`.
      l2: ridge penalty on the standardised weights (see above).
      step_mode: `"fused"`, `"fast"` or `"idiomatic"`: how the driver runs the steps (see
        `jaxlinear.TrainConfig`); all three give the same weights.
      random_state: seeds the initial weights and the batch order. An int is the seed
        itself (the same as `jaxlinear train --seed`); a `numpy.random.RandomState` or `None`
        (NumPy's global one) gives a seed drawn from it at each `fit`, so repeated fits
        differ, as with scikit-learn's own estimators.

    Fitted attributes:
      coef_: `[n_features]` for 1-D `y`, `[n_targets, n_features]` for 2-D `y` (float64, the
        original scale, as `LinearRegression.coef_`).
      intercept_: a float for 1-D `y`, `[n_targets]` for 2-D `y`.
      model_: the trained model, the library's own object (standardised scale).
      scaling_: the `jaxlinear.Scaling` between the original and the standardised scale.
      loss_curve_: the training objective `J` averaged over each epoch's steps (each taken
        before that step's update), one float per epoch.
      n_iter_: epochs run (for `partial_fit`, calls made).
      n_features_in_: number of features seen in `fit`.
      feature_names_in_: `[n_features_in_]` column names, only when `X` had string names.

    Mini-batches (`partial_fit`): each call runs ONE epoch over the given rows (in steps of
    `batch_size`), like `SGDRegressor.partial_fit`, at a constant `learning_rate` (a cosine
    schedule needs the length of the run, which a stream does not know). The scaling is
    fitted on the first call's rows and then kept: the weights live on that scale, and moving
    it would change what they mean; give a representative first batch, or standardise
    yourself. The optimizer state (adam's moments and step count) is carried from call to
    call through the driver's `TrainingState` (`start=`); a `partial_fit` after `fit`
    starts from the fitted weights with a fresh optimizer. `sample_weight` is relative
    within each call (scaled to mean 1 per call). Adam's steps are about `learning_rate` in
    every weight whatever the gradient's size, so on a stream a smaller rate than `fit`'s
    peak (e.g. 0.01) keeps the weights closer to the optimum. Each call compiles its
    training loop, as every run of the driver does (~0.2 s on a 2-core CPU): give it
    batches large enough for that not to matter, or turn on jax's persistent compilation
    cache (`jax_compilation_cache_dir`), which makes the repeats ~0.1 s loads.

    Tags: `MultiOutputMixin` and `RegressorMixin` set the ones that differ from
    scikit-learn's defaults (multi-output regressor); the defaults hold for the rest
    (dense input only, no missing values, deterministic for a given `random_state`), so
    there is no `__sklearn_tags__` of its own.
    """

    def __init__(
        self,
        library="nnx",
        *,
        optimizer="adam",
        learning_rate=0.1,
        epochs=1000,
        batch_size=None,
        schedule="cosine",
        l2=0.0,
        step_mode="fused",
        random_state=None,
    ):
        self.library = library
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.schedule = schedule
        self.l2 = l2
        self.step_mode = step_mode
        self.random_state = random_state

    def fit(self, X, y, sample_weight=None):
        """Trains from scratch on `X: [n_samples, n_features]`, `y: [n_samples]` or
        `[n_samples, n_targets]`, with optional `sample_weight: [n_samples]`; returns self.

        Raises `ValueError` for unusable data or parameters (jaxlinear's `ConfigError` and
        `DataError` are `ValueError`s and name the parameter), and `TrainingFailed` when
        training diverges or ends above its starting objective (lower `learning_rate`).
        """
        X, y = validate_data(
            self, X, y, multi_output=True, y_numeric=True, dtype=[np.float64, np.float32]
        )
        sample_weight = _checked_weights(sample_weight, X)
        library = get_library(self.library)
        seed = _seed(self.random_state)
        config = self._config(seed, epochs=self.epochs, schedule=self.schedule).validate()
        targets = np.reshape(y, (len(y), -1))
        scaling = Scaling.fit(
            X, targets, feature_names=self._feature_names(), sample_weight=sample_weight
        )
        start = library.from_canonical(initial_weights(X.shape[1], targets.shape[1], seed=seed))
        result = library.fit(
            start,
            scaling.features(X),
            scaling.targets(targets),
            config,
            sample_weight=sample_weight,
        )
        self.scaling_ = scaling
        self.loss_curve_ = []
        self.n_iter_ = 0
        self._seed = seed
        self._stream = None  # no optimizer state for `partial_fit` to continue (see class doc)
        self._record(library.name, result, config, single_output=np.ndim(y) == 1)
        return self

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch on a mini-batch of a stream, continuing from the previous calls (see
        "Mini-batches" in the class docstring); shapes as in `fit`. Returns self."""
        first_call = not hasattr(self, "model_")
        X, y = validate_data(
            self,
            X,
            y,
            multi_output=True,
            y_numeric=True,
            dtype=[np.float64, np.float32],
            reset=first_call,
        )
        sample_weight = _checked_weights(sample_weight, X)
        library = get_library(self.library)
        targets = np.reshape(y, (len(y), -1))
        if first_call:
            seed, stream, calls = _seed(self.random_state), None, 0
            scaling = Scaling.fit(
                X, targets, feature_names=self._feature_names(), sample_weight=sample_weight
            )
            weights = initial_weights(X.shape[1], targets.shape[1], seed=seed)
        else:
            if targets.shape[1] != self.scaling_.out_features:
                raise ValueError(
                    f"y has {targets.shape[1]} targets, but this {type(self).__name__} was "
                    f"fitted with {self.scaling_.out_features}: give every batch the same "
                    "targets, or call fit to start again"
                )
            seed, stream, calls, scaling = self._seed, self._stream, self.n_iter_, self.scaling_
            weights = get_library(self._library).to_canonical(self.model_)
        # Each call's batch order has its own stream, so successive epochs are shuffled anew.
        config = self._config(
            integer_seed(seed, "batch_order", calls), epochs=1, schedule="constant"
        ).validate()
        start = None
        if stream is not None and stream[0] == (library.name, config.optimizer):
            # Each call is a one-epoch run of its own, so it resumes at step 0; the count
            # that adam's bias correction uses lives in the arrays and carries on.
            start = dataclasses.replace(stream[1], step=0)
        result = library.fit(
            library.from_canonical(weights),
            scaling.features(X),
            scaling.targets(targets),
            config,
            sample_weight=sample_weight,
            start=start,
            require_progress=False,
        )
        if first_call:  # only now that training worked
            self._seed, self.scaling_, self.loss_curve_, self.n_iter_ = seed, scaling, [], 0
        self._stream = ((library.name, config.optimizer), _portable(result.state))
        self._record(library.name, result, config, single_output=np.ndim(y) == 1)
        return self

    def predict(self, X):
        """`X: [n_samples, n_features]` -> `[n_samples]` (if fitted on 1-D `y`) or
        `[n_samples, n_targets]`, float64, on the original scale of `y`."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return np.asarray(X, np.float64) @ self.coef_.T + self.intercept_

    def _config(self, seed: int, *, epochs: int, schedule: str) -> TrainConfig:
        return TrainConfig(
            epochs=epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            optimizer=self.optimizer,
            schedule=schedule,
            l2=self.l2,
            seed=seed,
            step_mode=self.step_mode,
        )

    def _feature_names(self) -> tuple[str, ...] | None:
        names = getattr(self, "feature_names_in_", None)
        return None if names is None else tuple(names)

    def _record(self, library: str, result, config: TrainConfig, *, single_output: bool):
        """Sets the fitted attributes from a `FitResult` of `config` (the run just made)."""
        self._library = library
        self.model_ = result.model
        weights = self.scaling_.weights_to_original(get_library(library).to_canonical(result.model))
        coef, intercept = weights.weight.T, weights.bias  # [out, in] as scikit-learn's
        self.coef_, self.intercept_ = (
            (coef[0], intercept[0]) if single_output else (coef, intercept)
        )
        epoch_losses = np.reshape(result.losses, (config.epochs, -1)).mean(axis=1)
        self.loss_curve_ = [*self.loss_curve_, *map(float, epoch_losses)]
        self.n_iter_ += config.epochs


def _seed(random_state) -> int:
    """The one jaxlinear seed from scikit-learn's `random_state` (see the class docstring)."""
    if isinstance(random_state, numbers.Integral):
        check_random_state(random_state)  # scikit-learn's range check: [0, 2**32)
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _checked_weights(sample_weight, X) -> np.ndarray | None:
    """`sample_weight` as float64 `[n_samples]`, or None; raises `ValueError` (scikit-learn's
    messages) for a wrong shape, a negative or non-finite value, or all zeros."""
    if sample_weight is None:
        return None
    return _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)


def _portable(state):
    """The driver's `TrainingState` with NumPy leaves and no static part: it pickles (the
    static part holds optax's closures) and the driver rebuilds the rest on resume."""
    import jax

    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(state.arrays)]
    return type(state)(state.library, None, leaves, state.step)
