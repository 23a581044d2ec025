"""The linear model in flax.linen.

In linen a module is only a description: parameters live in a separate pytree made by
`model.init(key, x)`, and the model is run with `model.apply(variables, x)`. Training state
(parameters + optax state + step) is a `flax.training.train_state.TrainState`.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

from jaxlinear._training import FitResult, TrainConfig, l2_objective, make_optimizer, run_epochs
from jaxlinear._weights import LinearWeights


class LinearRegression(nn.Module):
    """`y = x @ kernel + bias`.

    Attributes:
      out_features: size of the output; the input size is inferred by `init`.

    Shapes: `x: [..., in_features]` -> `[..., out_features]`; parameters are
    `{"params": {"dense": {"kernel": [in, out], "bias": [out]}}}`.
    """

    out_features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(self.out_features, name="dense")(x)


class LinenModel(NamedTuple):
    """A linen module together with its variables, since linen keeps them apart."""

    module: LinearRegression
    variables: dict


def create(in_features: int, out_features: int, *, key: jax.Array) -> LinenModel:
    """Builds the module and initialises its parameters from a dummy `[1, in_features]` input."""
    module = LinearRegression(out_features=out_features)
    variables = module.init(key, jnp.zeros((1, in_features), jnp.float32))
    return LinenModel(module, variables)


def predict(model: LinenModel, x: jax.Array) -> jax.Array:
    """`x: [batch, in_features]` -> `[batch, out_features]`."""
    return model.module.apply(model.variables, x)


def to_canonical(model: LinenModel) -> LinearWeights:
    dense = model.variables["params"]["dense"]
    return LinearWeights(np.asarray(dense["kernel"]), np.asarray(dense["bias"]))


def from_canonical(weights: LinearWeights) -> LinenModel:
    weights = weights.astype(np.float32)
    module = LinearRegression(out_features=weights.out_features)
    params = {"dense": {"kernel": jnp.asarray(weights.weight), "bias": jnp.asarray(weights.bias)}}
    return LinenModel(module, {"params": params})


def _train_step(state: TrainState, x: jax.Array, y: jax.Array, l2) -> tuple[TrainState, jax.Array]:
    def loss_fn(params):
        prediction = state.apply_fn({"params": params}, x)
        return l2_objective(prediction, y, params["dense"]["kernel"], l2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


train_step = jax.jit(_train_step)
"""The textbook linen step: `(state, x [batch, in], y [batch, out], l2) -> (state, loss)`."""


@jax.jit
def train_epoch(
    state: TrainState, x: jax.Array, y: jax.Array, indices: jax.Array, l2
) -> tuple[TrainState, jax.Array]:
    """All steps of an epoch in one compiled scan; `indices: [steps, batch]` -> losses `[steps]`."""

    def one_step(state, batch_indices):
        return _train_step(state, x[batch_indices], y[batch_indices], l2)

    return jax.lax.scan(one_step, state, indices)


def fit(model: LinenModel, x, y, config: TrainConfig, *, on_epoch=None) -> FitResult:
    """Trains with optax; `x: [n, in_features]`, `y: [n, out_features]`."""
    state = TrainState.create(
        apply_fn=model.module.apply,
        params=model.variables["params"],
        tx=make_optimizer(config, len(x)),
    )
    state, losses, compile_seconds, ms_per_step = run_epochs(
        state,
        x,
        y,
        config,
        train_step=lambda state, xb, yb: train_step(state, xb, yb, config.l2),
        train_epoch=lambda state, x, y, idx: train_epoch(state, x, y, idx, config.l2),
        on_epoch=on_epoch,
    )
    trained = LinenModel(model.module, {"params": state.params})
    return FitResult(trained, losses, compile_seconds, ms_per_step)
