"""The linear model in flax.linen.

In linen a module is only a description: parameters live in a separate pytree made by
`model.init(key, x)`, and the model is run with `model.apply(variables, x)`. Training state
(parameters + optax state + step) is a `flax.training.train_state.TrainState`, which is
already a pytree of arrays: its `apply_fn` and `tx` are static fields.

>>> import jax, numpy as np
>>> from jaxlinear.libraries import linen
>>> model = linen.create(3, 2, key=jax.random.key(0))
>>> jax.tree.map(np.shape, model.variables)
{'params': {'dense': {'bias': (2,), 'kernel': (3, 2)}}}
>>> linen.predict(model, np.ones((5, 3), np.float32)).shape
(5, 2)
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxlinear._weights import LinearWeights
from jaxlinear.training import l2_objective

NAME = "linen"


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


Model = LinenModel


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


# Training, the way flax's examples write it: a `TrainState` in, a new `TrainState` out.


def _train_step(state: TrainState, x: jax.Array, y: jax.Array, l2) -> tuple[TrainState, jax.Array]:
    def loss_fn(params):
        prediction = state.apply_fn({"params": params}, x)
        return l2_objective(prediction, y, params["dense"]["kernel"], l2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


train_step = jax.jit(_train_step)
"""The textbook linen step: `(state, x [batch, in], y [batch, out], l2) -> (state, loss)`."""


# The driver's interface (the same names in every library module; see jaxlinear.training).


def init_training(model: LinenModel, optimizer: optax.GradientTransformation) -> TrainState:
    """A `TrainState` over a copy of the model's parameters (jax arrays are immutable)."""
    return TrainState.create(
        apply_fn=model.module.apply, params=model.variables["params"], tx=optimizer
    )


def idiomatic_step(state: TrainState, x: jax.Array, y: jax.Array, *, l2: float):
    """One call of the textbook `train_step`: `-> (state, loss)`."""
    return train_step(state, x, y, l2)


def split(state: TrainState) -> tuple[None, TrainState]:
    """Nothing to split: a `TrainState` is already a pytree of arrays (`tx` is static)."""
    return None, state


def merge(static: None, state: TrainState) -> TrainState:
    return state


def state_step(static: None, state: TrainState, x, y, *, l2: float):
    """The textbook step, not jitted (the driver compiles it, alone or inside a scan)."""
    return _train_step(state, x, y, l2)


def shard(state: TrainState, mesh: jax.sharding.Mesh) -> TrainState:
    """Data parallelism as flax's linen examples place it: the `TrainState` (params and optax
    state, a plain pytree) put on every device of `mesh` with `NamedSharding(mesh, P())`,
    i.e. replicated. The batch is split by the driver; jit sums the gradients."""
    return jax.device_put(state, NamedSharding(mesh, P()))


def model_of(state: TrainState) -> LinenModel:
    return LinenModel(LinearRegression(out_features=_out_features(state)), {"params": state.params})


def _out_features(state: TrainState) -> int:
    return state.params["dense"]["bias"].shape[0]


# Checkpoints, the way flax's docs write them for linen: the `TrainState` (parameters, optax
# state and step) is a pytree of arrays, saved with orbax and restored into an abstract
# `TrainState` of the same shapes (`jax.eval_shape`), which gives back a `TrainState`.

NATIVE_FORMAT = "orbax: the TrainState (params, opt_state, step)"


def save_native(directory, state: TrainState) -> None:
    """Writes `state` as an orbax checkpoint at `directory` (absolute; must not exist yet)."""
    from orbax.checkpoint import v1 as ocp

    ocp.save(directory, state)


def restore_native(
    directory, *, in_features: int, out_features: int, optimizer: optax.GradientTransformation
) -> TrainState:
    """The `TrainState` saved at `directory`; shapes from `in_features`, `out_features` and
    `optimizer` (orbax raises if the files hold others)."""
    from orbax.checkpoint import v1 as ocp

    from jaxlinear.checkpoint import restore_target

    abstract = jax.eval_shape(
        lambda: init_training(create(in_features, out_features, key=jax.random.key(0)), optimizer)
    )
    return ocp.load(directory, restore_target(directory, abstract))
