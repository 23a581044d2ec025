"""The linear model in flax.linen.

In linen a module is only a description: parameters live in a separate pytree made by
`model.init(key, x)`, and the model is run with `model.apply(variables, x)`. Training state
(parameters + optax state + step) is a `flax.training.train_state.TrainState`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

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
    """Many steps in one `lax.scan`; `indices: [steps, batch]` -> losses `[steps]`.

    `training_steps` calls it inside its own jit over the `TrainState`'s flat leaves (a
    jit inside a jit costs nothing at run time).
    """
    return scan_steps(functools.partial(_train_step, l2=l2), state, x, y, indices)


def training_steps(model: LinenModel, config: TrainConfig, n_examples: int) -> TrainingSteps:
    """The `TrainState` and the step function `fit` runs in `config.step_mode`.

    A `TrainState` is already a pytree of arrays (its `apply_fn` and `tx` are static), so
    `jax.jit` over it is linen's textbook and fast pattern at once; `fast` and `fused` only
    pass its flat list of arrays instead (`compiled_steps`), so no `TrainState` is
    flattened per call.
    """
    state = TrainState.create(
        apply_fn=model.module.apply,
        params=model.variables["params"],
        tx=make_optimizer(config, n_examples),
    )

    def to_model(state: TrainState) -> LinenModel:
        return LinenModel(model.module, {"params": state.params})

    if config.step_mode == "idiomatic":
        return TrainingSteps(state, functools.partial(train_step, l2=config.l2), None, to_model)
    return compiled_steps(
        config,
        state,
        step=functools.partial(_train_step, l2=config.l2),
        epoch=functools.partial(train_epoch, l2=config.l2),
        to_model=to_model,
    )


def fit(model: LinenModel, x, y, config: TrainConfig, *, on_epoch=None) -> FitResult:
    """Trains with optax; `x: [n, in_features]`, `y: [n, out_features]`."""
    return run_training(training_steps(model, config, len(x)), x, y, config, on_epoch=on_epoch)
