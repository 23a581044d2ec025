"""Every library's per-step losses against an independent hand-written JAX + optax reference.

The reference below shares no code with the package: its own loss, its own optax optimizer
and schedule, and the batch order rebuilt from the documented random stream (epoch `k`'s
permutation comes from `np.random.SeedSequence(seed, spawn_key=(3, k))`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlinear import LIBRARY_NAMES, TrainConfig, get_library, initial_weights
from jaxlinear.exact import objective
from jaxlinear.training import l2_objective

# float32 throughout. The reported loss is computed as `sum(0.5 * r**2)` (optax's `l2_loss`)
# where the reference writes `0.5 * sum(r**2)`: a few ulps apart, ~1e-7 relative. The
# gradients may also be summed in another order (equinox vmaps `W @ x`, the others compute
# `x @ W`), a few ulps per step that a convex problem does not amplify much over 120 steps.
# Seen here (jax 0.10.2, CPU): weights bitwise equal to the reference in every library and
# step mode, losses within 3e-7 relative. The bounds leave room for another CPU's summation
# order: 1e-5 relative on order-one losses, 1e-6 on order-one weights.
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-6

CASES = {
    "adam-constant-full": dict(optimizer="adam", schedule="constant", batch_size=None, l2=0.0),
    "adam-cosine-minibatch": dict(optimizer="adam", schedule="cosine", batch_size=4, l2=0.0),
    "sgd-constant-minibatch": dict(optimizer="sgd", schedule="constant", batch_size=4, l2=0.0),
    "sgd-cosine-full": dict(optimizer="sgd", schedule="cosine", batch_size=None, l2=0.0),
    "adam-ridge-minibatch": dict(optimizer="adam", schedule="cosine", batch_size=5, l2=0.3),
}
LEARNING_RATE = {"adam": 0.05, "sgd": 0.05}
STEPS = 120


def reference_losses(x, y, start, *, optimizer, schedule, batch_size, l2, seed, epochs):
    """Hand-written training: `params = {"W": [in, out], "b": [out]}`, one jitted step."""
    n = len(x)
    steps_per_epoch = 1 if batch_size is None else n // batch_size
    rate = LEARNING_RATE[optimizer]
    if schedule == "cosine":
        rate = optax.cosine_decay_schedule(rate, epochs * steps_per_epoch)
    tx = optax.adam(rate) if optimizer == "adam" else optax.sgd(rate)
    params = {"W": jnp.asarray(start.weight), "b": jnp.asarray(start.bias)}
    opt_state = tx.init(params)

    def loss_fn(params, xb, yb):
        residual = xb @ params["W"] + params["b"][None, :] - yb
        return jnp.mean(0.5 * jnp.sum(residual**2, axis=-1)) + 0.5 * l2 * jnp.sum(params["W"] ** 2)

    @jax.jit
    def step(params, opt_state, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for epoch in range(epochs):
        if batch_size is None:
            batches = [np.arange(n)]
        else:
            order = np.arange(n, dtype=np.int32)
            np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3, epoch))).shuffle(order)
            batches = order[: steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)
        for rows in batches:
            params, opt_state, loss = step(params, opt_state, x[rows], y[rows])
            losses.append(float(loss))
    return np.asarray(losses), params


@pytest.fixture(scope="module")
def data(linnerud):
    return linnerud.x_train.astype(np.float32), linnerud.y_train.astype(np.float32)


@pytest.mark.parametrize("step_mode", ["fused", "idiomatic"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_losses_match_the_hand_written_reference(data, name, case, step_mode):
    x, y = data
    settings = CASES[case]
    steps_per_epoch = 1 if settings["batch_size"] is None else len(x) // settings["batch_size"]
    epochs = STEPS // steps_per_epoch
    seed = 5
    start = initial_weights(x.shape[1], y.shape[1], seed=seed)
    expected, params = reference_losses(x, y, start, seed=seed, epochs=epochs, **settings)
    config = TrainConfig(
        epochs=epochs,
        learning_rate=LEARNING_RATE[settings["optimizer"]],
        seed=seed,
        step_mode=step_mode,
        **settings,
    )
    library = get_library(name)
    result = library.fit(library.from_canonical(start), x, y, config)
    np.testing.assert_allclose(result.losses, expected, rtol=LOSS_RTOL)
    trained = library.to_canonical(result.model)
    np.testing.assert_allclose(trained.weight, params["W"], atol=WEIGHT_ATOL)
    np.testing.assert_allclose(trained.bias, params["b"], atol=WEIGHT_ATOL)
    assert result.state.step == len(expected)


@pytest.mark.parametrize("l2", [0.0, 0.7])
def test_jax_objective_matches_the_float64_one(data, l2):
    # The same objective in float32 (jax) and float64 (numpy): order-one values, sums of at
    # most 48 terms, so they agree to a few float32 ulps.
    x, y = data
    weights = initial_weights(x.shape[1], y.shape[1], seed=2)._replace(
        bias=np.array([0.1, -0.2, 0.3], np.float32)
    )
    prediction = jnp.asarray(x) @ weights.weight + weights.bias[None, :]
    in_float32 = l2_objective(prediction, jnp.asarray(y), jnp.asarray(weights.weight), l2)
    np.testing.assert_allclose(float(in_float32), objective(weights, x, y, l2=l2), rtol=1e-6)
