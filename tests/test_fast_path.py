"""The three step modes, the fast exact solver and the `bench` command.

Speed itself is measured by `jaxlinear bench`, never asserted here: these tests check that
the fast paths compute the same thing and compile once.
"""

import jax
import numpy as np
import pytest

from jaxlinear import LIBRARY_NAMES, TrainConfig, get_library, initial_weights, least_squares
from jaxlinear.exact import least_squares_gram, objective
from jaxlinear.training import (
    STEP_MODES,
    batch_schedule,
    epochs_per_call,
    make_optimizer,
    runner,
)

# The three modes run the same step function: `fast` and `fused` literally, `idiomatic` via
# the library's own jit wrapper. Compiled alone or inside a scan, XLA may still order a
# float32 reduction differently, a few ulps (~1e-7 relative) per step, and adam on this
# convex problem does not amplify such differences over 120 steps beyond ~1e-6. (Seen here on
# jax 0.10.2 CPU: bitwise-equal weights in all modes.)
MODE_RTOL, MODE_ATOL = 1e-5, 1e-6


@pytest.mark.parametrize("batch_size", [None, 4])
@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_every_step_mode_gives_the_same_weights(linnerud, name, batch_size):
    library = get_library(name)
    start = library.from_canonical(initial_weights(3, 3, seed=0))
    x, y = linnerud.x_train.astype(np.float32), linnerud.y_train.astype(np.float32)
    epochs = 120 if batch_size is None else 30  # 120 steps either way
    weights, losses, results = {}, {}, {}
    for mode in STEP_MODES:
        config = TrainConfig(epochs=epochs, batch_size=batch_size, step_mode=mode)
        results[mode] = result = library.fit(start, x, y, config)
        weights[mode], losses[mode] = library.to_canonical(result.model), result.losses
    for mode in ("fast", "idiomatic"):
        np.testing.assert_allclose(
            weights[mode].weight, weights["fused"].weight, rtol=MODE_RTOL, atol=MODE_ATOL
        )
        np.testing.assert_allclose(
            weights[mode].bias, weights["fused"].bias, rtol=MODE_RTOL, atol=MODE_ATOL
        )
        np.testing.assert_allclose(losses[mode], losses["fused"], rtol=MODE_RTOL)
    # The run trained: most of the way from the start to the exact optimum.
    optimum = objective(least_squares(x, y), x, y)
    fused = results["fused"]
    assert fused.final_objective - optimum < 0.05 * (fused.initial_objective - optimum)


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_second_call_of_the_fast_step_does_not_recompile(linnerud, name, caplog):
    library = get_library(name)
    model = library.from_canonical(initial_weights(3, 3, seed=0))
    x, y = (jax.device_put(a.astype(np.float32)) for a in (linnerud.x_train, linnerud.y_train))
    config = TrainConfig(epochs=3, step_mode="fast")
    training = library.module.init_training(model, make_optimizer(config, len(x)))
    drive = runner(library.module, training, config)
    full_batch = np.zeros((1, 0), np.int32)

    def compilations(state):
        caplog.clear()
        state, (loss,) = drive.run(state, x, y, full_batch)
        jax.block_until_ready(loss)
        return state, sum("Compiling" in record.getMessage() for record in caplog.records)

    with jax.log_compiles(), caplog.at_level("WARNING"):
        state, first = compilations(drive.state)
        # The state a step returns must match what it was compiled for (dtypes, weak types).
        state, second = compilations(state)
        _, third = compilations(state)
    assert first == 1  # the check can see a compilation
    assert (second, third) == (0, 0)


def test_full_batch_schedule_takes_all_rows_without_indices():
    assert batch_schedule(10, None, 3, seed=0).shape == (3, 1, 0)
    assert batch_schedule(10, 10, 3, seed=0).shape == (3, 1, 0)
    mini = batch_schedule(10, 4, 3, seed=0)
    assert mini.shape == (3, 2, 4)
    assert all(len(set(epoch.ravel())) == 8 for epoch in mini)


@pytest.mark.parametrize(("epochs", "steps"), [(1000, 1), (300, 1), (7, 1), (50, 4), (1, 1)])
def test_epochs_per_call_divides_the_run_and_leaves_a_timed_call(epochs, steps):
    per_call = epochs_per_call(epochs, steps, values_per_step=256 * 8)
    assert epochs % per_call == 0
    assert per_call * steps <= max(steps, 1024)
    assert epochs == 1 or epochs // per_call >= 2


def _tall_data(seed=0, n=20_000, d=6, k=2):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, d)) * [1, 2, 3, 0.5, 10, 1] + 5).astype(np.float32)
    return x, x @ rng.normal(size=(d, k)) + 0.3 * rng.normal(size=(n, k))


@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_gram_solver_matches_lstsq(l2):
    # Both in float64 on well-conditioned data (cond(Gram) ~ 400): agreement to ~1e-13.
    x, y = _tall_data()
    fast, reference = least_squares_gram(x, y, l2=l2, chunk_rows=512), least_squares(x, y, l2=l2)
    np.testing.assert_allclose(fast.weight, reference.weight, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fast.bias, reference.bias, rtol=1e-10, atol=1e-12)


def test_gram_solver_falls_back_to_lstsq_when_rank_deficient():
    x, y = _tall_data(n=3000)
    x = np.concatenate([x, x[:, :1]], axis=1)  # a duplicated column: singular Gram matrix
    fast, reference = least_squares_gram(x, y), least_squares(x, y)
    np.testing.assert_array_equal(fast.weight, reference.weight)
