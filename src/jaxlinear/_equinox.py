"""The linear model in equinox.

An equinox module *is* a pytree of its parameters. It is written for ONE example, and a batch
is handled by `jax.vmap` over it. `eqx.filter_jit` / `eqx.filter_value_and_grad` treat the
array leaves as traced and everything else as static; the optimizer sees only the inexact
arrays (`eqx.filter(model, eqx.is_inexact_array)`), and `eqx.apply_updates` returns a new model.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from jaxlinear._training import (
    FitResult,
    TrainConfig,
    TrainingSteps,
    compiled_steps,
    l2_objective,
    make_optimizer,
    run_training,
    scan_steps,
)
from jaxlinear._weights import LinearWeights


class LinearRegression(eqx.Module):
    """`y = weight @ x + bias` for a single example.

    Shapes: `x: [in_features]` -> `[out_features]`; `linear.weight: [out_features, in_features]`
    (equinox's layout, the transpose of flax's kernel), `linear.bias: [out_features]`.
    Batch with `jax.vmap(model)(x)` for `x: [batch, in_features]`.
    """

    linear: eqx.nn.Linear

    def __init__(self, in_features: int, out_features: int, *, key: jax.Array):
        self.linear = eqx.nn.Linear(in_features, out_features, key=key)

    def __call__(self, x: Float[Array, " in_features"]) -> Float[Array, " out_features"]:
        return self.linear(x)


def create(in_features: int, out_features: int, *, key: jax.Array) -> LinearRegression:
    return LinearRegression(in_features, out_features, key=key)


def predict(model: LinearRegression, x: jax.Array) -> jax.Array:
    """`x: [batch, in_features]` -> `[batch, out_features]`, by vmapping the per-example model."""
    return jax.vmap(model)(x)


def to_canonical(model: LinearRegression) -> LinearWeights:
    return LinearWeights(np.asarray(model.linear.weight).T, np.asarray(model.linear.bias))


def from_canonical(weights: LinearWeights) -> LinearRegression:
    weights = weights.astype(np.float32)
    like = eqx.filter_eval_shape(
        LinearRegression, weights.in_features, weights.out_features, key=jax.random.key(0)
    )
    return eqx.tree_at(
        lambda model: (model.linear.weight, model.linear.bias),
        like,
        (jnp.asarray(weights.weight.T), jnp.asarray(weights.bias)),
    )


def _loss(model: LinearRegression, x: jax.Array, y: jax.Array, l2) -> jax.Array:
    return l2_objective(jax.vmap(model)(x), y, model.linear.weight, l2)


def _train_step(
    model: LinearRegression,
    opt_state: optax.OptState,
    x: jax.Array,
    y: jax.Array,
    optimizer: optax.GradientTransformation,
    l2: float,
) -> tuple[LinearRegression, optax.OptState, jax.Array]:
    loss, grads = eqx.filter_value_and_grad(_loss)(model, x, y, l2)
    updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
    return eqx.apply_updates(model, updates), opt_state, loss


train_step = eqx.filter_jit(_train_step)
"""The textbook equinox step: `(model, opt_state, x [batch, in], y [batch, out], optimizer, l2)
-> (model, opt_state, loss)`."""


def _partitioned_step(
    static: LinearRegression,
    state: tuple[LinearRegression, optax.OptState],
    x: jax.Array,
    y: jax.Array,
    optimizer: optax.GradientTransformation,
    l2: float,
) -> tuple[tuple[LinearRegression, optax.OptState], jax.Array]:
    """The textbook step on `(arrays of the model, opt_state)`: combine, step, partition."""
    params, opt_state = state
    model, opt_state, loss = _train_step(
        eqx.combine(params, static), opt_state, x, y, optimizer, l2
    )
    return (eqx.filter(model, eqx.is_array), opt_state), loss


@eqx.filter_jit
def train_epoch(
    static: LinearRegression,
    state: tuple[LinearRegression, optax.OptState],
    x: jax.Array,
    y: jax.Array,
    indices: jax.Array,
    optimizer: optax.GradientTransformation,
    l2: float,
) -> tuple[tuple[LinearRegression, optax.OptState], jax.Array]:
    """Many steps in one `lax.scan`; `indices: [steps, batch]` -> losses `[steps]`.

    `lax.scan` carries only arrays, so the model comes partitioned (`eqx.partition`, once,
    outside): `state` holds its arrays and the optax state, `static` the rest, recombined
    inside each step. `training_steps` calls it inside its own jit over the flat leaves (a
    jit inside a jit costs nothing at run time).
    """
    step = functools.partial(_partitioned_step, static, optimizer=optimizer, l2=l2)
    return scan_steps(step, state, x, y, indices)


def training_steps(model: LinearRegression, config: TrainConfig, n_examples: int) -> TrainingSteps:
    """The state and step function `fit` runs in `config.step_mode`.

    `idiomatic` is the `eqx.filter_jit` step, which partitions the model into arrays and
    static parts at every call. `fast` and `fused` follow equinox's "low-overhead training
    loops" recipe: `eqx.partition` once, jit over the arrays (as a flat list,
    `compiled_steps`), `eqx.combine` inside.
    """
    optimizer = make_optimizer(config, n_examples)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    if config.step_mode == "idiomatic":

        def step(state, x, y):
            model, opt_state, loss = train_step(*state, x, y, optimizer, config.l2)
            return (model, opt_state), loss

        return TrainingSteps((model, opt_state), step, None, to_model=lambda state: state[0])

    params, static = eqx.partition(model, eqx.is_array)
    return compiled_steps(
        config,
        (params, opt_state),
        step=functools.partial(_partitioned_step, static, optimizer=optimizer, l2=config.l2),
        epoch=functools.partial(train_epoch, static, optimizer=optimizer, l2=config.l2),
        to_model=lambda state: eqx.combine(state[0], static),
    )


def fit(model: LinearRegression, x, y, config: TrainConfig, *, on_epoch=None) -> FitResult:
    """Trains with optax; `x: [n, in_features]`, `y: [n, out_features]`."""
    return run_training(training_steps(model, config, len(x)), x, y, config, on_epoch=on_epoch)
