"""The training driver: explicit state in every mode, the batch order, and runs that fail."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxlinear import (
    LIBRARY_NAMES,
    DataError,
    TrainConfig,
    TrainingDiverged,
    TrainingFailed,
    get_library,
    initial_weights,
    load_dataset,
)
from jaxlinear.training import STEP_MODES, batch_schedule, epoch_order


@pytest.mark.parametrize("step_mode", STEP_MODES)
@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_the_training_state_is_explicit_in_every_mode(linnerud, name, step_mode):
    library = get_library(name)
    x, y = linnerud.x_train, linnerud.y_train
    config = TrainConfig(epochs=6, batch_size=4, step_mode=step_mode)
    result = library.fit(library.from_canonical(initial_weights(3, 3, seed=0)), x, y, config)
    state = result.state
    assert (state.library, state.step) == (name, 6 * 4)
    leaves = jax.tree.leaves(state.arrays)
    assert leaves and all(isinstance(leaf, jax.Array) for leaf in leaves)
    # More arrays than the weight and bias: adam's two moments and its step count are there.
    assert sum(leaf.size for leaf in leaves) >= 3 * (3 * 3 + 3)
    # The state alone rebuilds the trained model, whatever the mode.
    rebuilt = library.module.model_of(library.module.merge(state.static, state.arrays))
    np.testing.assert_array_equal(
        library.to_canonical(rebuilt).weight, library.to_canonical(result.model).weight
    )


def test_any_epochs_order_is_known_without_the_ones_before():
    schedule = batch_schedule(50, 8, 6, seed=3)
    for epoch in range(6):
        np.testing.assert_array_equal(epoch_order(50, 8, 3, epoch), schedule[epoch])
    np.testing.assert_array_equal(batch_schedule(50, 8, 2, seed=3, first_epoch=4), schedule[4:6])
    assert schedule.shape == (6, 6, 8)  # 50 // 8 steps; the last 2 examples wait a turn
    assert all(len(np.unique(epoch)) == 48 for epoch in schedule)
    assert not np.array_equal(schedule[0], schedule[1])
    assert not np.array_equal(schedule[0], batch_schedule(50, 8, 1, seed=4)[0])


@pytest.mark.parametrize("seed", range(8))
def test_synthetic_start_is_independent_of_the_truth(seed):
    # With one generator per seed, the "random" start was the true weights up to scale
    # (cosine 1.0000 at seed 0). Independent streams make a cosine of about N(0, 1/sqrt(d)).
    data = load_dataset("synthetic", n_samples=64, in_features=16, out_features=1, seed=seed)
    start = initial_weights(16, 1, seed=seed).weight.ravel()
    truth = data.true_weights.weight.ravel()
    cosine = start @ truth / np.linalg.norm(start) / np.linalg.norm(truth)
    assert abs(cosine) < 0.9


def test_each_purpose_has_its_own_stream():
    data = load_dataset("synthetic", n_samples=40, in_features=3, seed=11)
    again = load_dataset("synthetic", n_samples=40, in_features=3, seed=11)
    np.testing.assert_array_equal(data.x_train, again.x_train)  # seeded
    start = initial_weights(3, 1, seed=11).weight.ravel()
    assert not np.allclose(np.abs(start), np.abs(data.true_weights.weight.ravel()), rtol=0.2)


def test_a_run_that_makes_the_model_worse_fails(linnerud):
    # Full-batch gradient descent with a step far above 2 / (largest curvature) overshoots
    # further at every step; three steps keep the loss finite but higher than the start.
    library = get_library("linen")
    model = library.from_canonical(initial_weights(3, 3, seed=0))
    config = TrainConfig(epochs=3, optimizer="sgd", learning_rate=20.0, schedule="constant")
    with pytest.raises(TrainingFailed, match=r"made the model worse.*smaller learning_rate"):
        library.fit(model, linnerud.x_train, linnerud.y_train, config)
    # A step of a longer run (partial_fit) may end above its start: no error, same steps.
    result = library.fit(model, linnerud.x_train, linnerud.y_train, config, require_progress=False)
    assert result.final_objective > result.initial_objective


@pytest.mark.parametrize(
    ("l2", "hint"), [(0.0, "try a smaller learning_rate"), (1e4, "the penalty l2 is too large")]
)
def test_divergence_names_the_likely_cause(linnerud, l2, hint):
    library = get_library("nnx")
    model = library.from_canonical(initial_weights(3, 3, seed=0))
    config = TrainConfig(epochs=400, optimizer="sgd", learning_rate=30.0 if l2 == 0 else 0.1, l2=l2)
    with pytest.raises(TrainingDiverged, match=hint):
        library.fit(model, linnerud.x_train, linnerud.y_train, config)


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e39])
def test_non_finite_input_is_refused_before_training(linnerud, bad):
    x = linnerud.x_train.copy()
    x[3, 1] = bad  # 1e39 is finite in float64 but not in float32
    library = get_library("equinox")
    with pytest.raises(DataError, match="x has NaN or infinite values"):
        library.fit(
            library.create(3, 3, key=jax.random.key(0)), x, linnerud.y_train, TrainConfig(epochs=2)
        )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 10**9}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"l2": float("inf")}, "l2"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**128}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"step_mode": "turbo"}, "step_mode"),
    ],
)
def test_config_errors_name_the_field(changes, field):
    from jaxlinear import ConfigError

    with pytest.raises(ConfigError) as caught:
        dataclasses.replace(TrainConfig(), **changes).validate()
    assert caught.value.field == field
    assert str(caught.value).startswith(field)


@pytest.mark.parametrize("step_mode", STEP_MODES)
@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_a_resumed_run_ends_with_the_same_weights(linnerud, name, step_mode):
    library = get_library(name)
    x, y = linnerud.x_train, linnerud.y_train
    start = library.from_canonical(initial_weights(3, 3, seed=0))
    config = TrainConfig(epochs=12, batch_size=4, step_mode=step_mode, seed=3)
    saved = []
    whole = library.fit(start, x, y, config, checkpoint_every=4, on_checkpoint=saved.append)
    assert [state.step for state in saved] == [16, 32, 48]
    # Resume from the epoch-4 state, as if the run had been killed after saving it; the model
    # passed in only gives the shapes.
    other = library.create(3, 3, key=jax.random.key(9))
    resumed = library.fit(other, x, y, config, start=saved[0], checkpoint_every=4)
    np.testing.assert_array_equal(
        library.to_canonical(resumed.model).weight, library.to_canonical(whole.model).weight
    )
    np.testing.assert_array_equal(resumed.losses, whole.losses[16:])
    assert resumed.state.step == whole.state.step == 48


def test_a_start_that_does_not_fit_is_refused(linnerud):
    from jaxlinear import ConfigError

    library = get_library("nnx")
    model = library.create(3, 3, key=jax.random.key(0))
    config = TrainConfig(epochs=4, batch_size=4)
    result = library.fit(model, linnerud.x_train, linnerud.y_train, config)
    with pytest.raises(ConfigError, match="not the end of an epoch before the last"):
        library.fit(model, linnerud.x_train, linnerud.y_train, config, start=result.state)
    foreign = dataclasses.replace(result.state, library="penzai", step=4)
    with pytest.raises(ConfigError, match="saved by penzai, not nnx"):
        library.fit(model, linnerud.x_train, linnerud.y_train, config, start=foreign)


def _weights(n, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 3.0, size=n)


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_sample_weights_reach_the_weighted_optimum(diabetes, name):
    from jaxlinear import least_squares

    x, y = diabetes.x_train, diabetes.y_train
    weights = _weights(len(x))
    exact = least_squares(x, y, sample_weight=weights, l2=0.05)
    unweighted = least_squares(x, y, l2=0.05)
    library = get_library(name)
    start = library.from_canonical(initial_weights(10, 1, seed=0))
    result = library.fit(start, x, y, TrainConfig(l2=0.05), sample_weight=weights)
    trained = library.to_canonical(result.model)
    # Converged adam on standardised data ends within ~1e-5 of the optimum (see README);
    # the weighted optimum is ~1e-1 away from the unweighted one, so this tells them apart.
    np.testing.assert_allclose(trained.weight, exact.weight, atol=1e-4)
    assert np.abs(exact.weight - unweighted.weight).max() > 1e-2


def test_weighted_least_squares_matches_scikit_learn(diabetes):
    from sklearn.linear_model import LinearRegression, Ridge

    from jaxlinear import least_squares

    x, y, weights = diabetes.x_train, diabetes.y_train, _weights(len(diabetes.x_train), 1)
    ours = least_squares(x, y, sample_weight=weights)
    theirs = LinearRegression().fit(x, y[:, 0], sample_weight=weights)
    np.testing.assert_allclose(ours.weight[:, 0], theirs.coef_, rtol=1e-9, atol=1e-12)
    # Ridge minimises sum(w r^2) + alpha ||W||^2: alpha = l2 * sum(w) is this objective x 2n/sum(w).
    ours = least_squares(x, y, sample_weight=weights, l2=0.3)
    theirs = Ridge(alpha=0.3 * weights.sum()).fit(x, y[:, 0], sample_weight=weights)
    np.testing.assert_allclose(ours.weight[:, 0], theirs.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.bias, [theirs.intercept_], rtol=1e-9, atol=1e-12)


def test_bad_sample_weights_are_refused(linnerud):
    library = get_library("linen")
    model = library.create(3, 3, key=jax.random.key(0))
    x, y = linnerud.x_train, linnerud.y_train
    for bad in (np.zeros(len(x)), -np.ones(len(x)), np.ones(3), np.full(len(x), np.nan)):
        with pytest.raises(DataError, match="sample_weight must"):
            library.fit(model, x, y, TrainConfig(epochs=2), sample_weight=bad)
