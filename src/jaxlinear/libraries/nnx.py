"""The linear model in flax.nnx.

In nnx the module owns its state: `nnx.Linear` creates its `nnx.Param`s when constructed
(from `nnx.Rngs`), and the model is called directly. `nnx.Optimizer` holds the optax state
and updates the model in place inside an `nnx.jit` step. Where state leaves the module (the
fast step, the fused loop, checkpoints) it goes through `nnx.split` and comes back with
`nnx.merge`.

>>> import jax, numpy as np
>>> from flax import nnx
>>> from jaxlinear.libraries import nnx as linear_nnx
>>> model = linear_nnx.create(3, 2, key=jax.random.key(0))
>>> model.linear.kernel.shape, model.linear.bias.shape
((3, 2), (2,))
>>> linear_nnx.predict(model, np.ones((5, 3), np.float32)).shape
(5, 2)
"""

from __future__ import annotations

import jax
import numpy as np
import optax
from flax import nnx

from jaxlinear._weights import LinearWeights
from jaxlinear.training import l2_objective

NAME = "nnx"


class LinearRegression(nnx.Module):
    """`y = x @ kernel + bias`, holding its own parameters.

    Shapes: `x: [..., in_features]` -> `[..., out_features]`;
    `linear.kernel: [in_features, out_features]`, `linear.bias: [out_features]`.
    """

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(in_features, out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear(x)


Model = LinearRegression


def create(in_features: int, out_features: int, *, key: jax.Array) -> LinearRegression:
    return LinearRegression(in_features, out_features, rngs=nnx.Rngs(params=key))


def predict(model: LinearRegression, x: jax.Array) -> jax.Array:
    """`x: [batch, in_features]` -> `[batch, out_features]`."""
    return model(x)


def to_canonical(model: LinearRegression) -> LinearWeights:
    return LinearWeights(np.asarray(model.linear.kernel[...]), np.asarray(model.linear.bias[...]))


def from_canonical(weights: LinearWeights) -> LinearRegression:
    weights = weights.astype(np.float32)
    # Build on an abstract model so no random initialisation is computed just to be replaced.
    model = nnx.eval_shape(
        lambda: LinearRegression(weights.in_features, weights.out_features, rngs=nnx.Rngs(0))
    )
    model.linear.kernel = nnx.Param(jax.numpy.asarray(weights.weight))
    model.linear.bias = nnx.Param(jax.numpy.asarray(weights.bias))
    return model


# Training, the way flax's nnx guides write it: the step mutates model and optimizer in place.


def _train_step(
    model: LinearRegression, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array, l2
) -> jax.Array:
    def loss_fn(model: LinearRegression):
        return l2_objective(model(x), y, model.linear.kernel[...], l2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)  # in place: updates the model's Params and its own state
    return loss


train_step = nnx.jit(_train_step)
"""The textbook nnx step: `(model, optimizer, x [batch, in], y [batch, out], l2) -> loss`."""


# The driver's interface (the same names in every library module; see jaxlinear.training).

Training = tuple[LinearRegression, nnx.Optimizer]


def init_training(model: LinearRegression, optimizer: optax.GradientTransformation) -> Training:
    """A copy of the model (the argument stays untouched) and an `nnx.Optimizer` over its
    `nnx.Param`s."""
    model = nnx.clone(model)
    return model, nnx.Optimizer(model, optimizer, wrt=nnx.Param)


def idiomatic_step(training: Training, x: jax.Array, y: jax.Array, *, l2: float):
    """One call of the textbook `nnx.jit` step, which updates `training` in place.

    nnx walks the model and optimizer as a graph at every call (milliseconds on CPU); the
    `fast` and `fused` modes split once instead (flax's performance guide).
    """
    model, optimizer = training
    return training, train_step(model, optimizer, x, y, l2)


def split(training: Training) -> tuple[nnx.GraphDef, nnx.State]:
    """`nnx.split` of model and optimizer together: one graph definition, one state."""
    return nnx.split(training)


def merge(graphdef: nnx.GraphDef, state: nnx.State) -> Training:
    return nnx.merge(graphdef, state)


def state_step(graphdef: nnx.GraphDef, state: nnx.State, x, y, *, l2: float):
    """The textbook step on split state: merge, step in place, split the new state off."""
    model, optimizer = nnx.merge(graphdef, state)
    loss = _train_step(model, optimizer, x, y, l2)
    return nnx.state((model, optimizer)), loss


def shard(training: Training, mesh: jax.sharding.Mesh) -> Training:
    """Data parallelism as flax's nnx sharding guide writes it: split the model and optimizer,
    ask `nnx.get_named_sharding` for each variable's sharding from its metadata (none here,
    so `P()`: replicated), `jax.device_put` the state, and merge back. The steps then run
    under `jax.set_mesh(mesh)` with the batch split along the data axis."""
    graphdef, state = nnx.split(training)
    state = jax.device_put(state, nnx.get_named_sharding(state, mesh))
    return nnx.merge(graphdef, state)


def model_of(training: Training) -> LinearRegression:
    return training[0]


# Checkpoints, the way flax's nnx checkpointing guide writes them: `nnx.split` the model and
# optimizer, save the state with orbax, restore it into the state of an abstract copy made by
# `nnx.eval_shape` (no arrays allocated), and `nnx.merge`.

NATIVE_FORMAT = "orbax: nnx.split state of the model and its nnx.Optimizer"


def save_native(directory, training: Training) -> None:
    """Writes the state of model and optimizer as an orbax checkpoint at `directory`
    (absolute; must not exist yet)."""
    from orbax.checkpoint import v1 as ocp

    _, state = nnx.split(training)
    ocp.save(directory, state)


def restore_native(
    directory, *, in_features: int, out_features: int, optimizer: optax.GradientTransformation
) -> Training:
    """`(model, nnx.Optimizer)` as saved at `directory`; shapes from `in_features`,
    `out_features` and `optimizer` (orbax raises if the files hold others)."""
    from orbax.checkpoint import v1 as ocp

    from jaxlinear.checkpoint import restore_target

    abstract = nnx.eval_shape(
        lambda: init_training(create(in_features, out_features, key=jax.random.key(0)), optimizer)
    )
    graphdef, abstract_state = nnx.split(abstract)
    state = ocp.load(directory, restore_target(directory, abstract_state))
    return nnx.merge(graphdef, state)
