"""The linear model in equinox.

An equinox module *is* a pytree of its parameters. It is written for ONE example, and a batch
is handled by `jax.vmap` over it. `eqx.filter_jit` / `eqx.filter_value_and_grad` treat the
array leaves as traced and everything else as static; the optimizer sees only the inexact
arrays (`eqx.filter(model, eqx.is_inexact_array)`), and `eqx.apply_updates` returns a new model.

>>> import jax, numpy as np
>>> from jaxlinear.libraries import equinox as linear_eqx
>>> model = linear_eqx.create(3, 2, key=jax.random.key(0))
>>> model.linear.weight.shape, model(np.ones(3, np.float32)).shape
((2, 3), (2,))
>>> linear_eqx.predict(model, np.ones((5, 3), np.float32)).shape
(5, 2)
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float

from jaxlinear._weights import LinearWeights
from jaxlinear.training import DATA_AXIS, l2_objective

NAME = "equinox"


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


Model = LinearRegression


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


# Training, the way equinox's docs write it: model and optax state in, new ones out.


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
    if _data_parallel():  # equinox's parallelism example: constrain the batch inside the jit
        x, y = eqx.filter_shard((x, y), P(DATA_AXIS))
    loss, grads = eqx.filter_value_and_grad(_loss)(model, x, y, l2)
    updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
    return eqx.apply_updates(model, updates), opt_state, loss


train_step = eqx.filter_jit(_train_step)
"""The textbook equinox step: `(model, opt_state, x [batch, in], y [batch, out], optimizer, l2)
-> (model, opt_state, loss)`."""


# The driver's interface (the same names in every library module; see jaxlinear.training).


class Training(eqx.Module):
    """Model and optax state in one module; the optimizer is a static field (no arrays)."""

    model: LinearRegression
    opt_state: optax.OptState
    optimizer: optax.GradientTransformation = eqx.field(static=True)


def init_training(model: LinearRegression, optimizer: optax.GradientTransformation) -> Training:
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    return Training(model, opt_state, optimizer)


def idiomatic_step(training: Training, x: jax.Array, y: jax.Array, *, l2: float):
    """One call of the textbook `eqx.filter_jit` step, which partitions at every call."""
    model, opt_state, loss = train_step(
        training.model, training.opt_state, x, y, training.optimizer, l2
    )
    return Training(model, opt_state, training.optimizer), loss


def split(training: Training) -> tuple[Training, Training]:
    """`eqx.partition` into `(static, arrays)`: equinox's "low-overhead training loops"."""
    arrays, static = eqx.partition(training, eqx.is_array)
    return static, arrays


def merge(static: Training, arrays: Training) -> Training:
    return eqx.combine(arrays, static)


def state_step(static: Training, arrays: Training, x, y, *, l2: float):
    """The textbook step on the array partition: combine, step, partition again."""
    training = eqx.combine(arrays, static)
    model, opt_state, loss = _train_step(
        training.model, training.opt_state, x, y, training.optimizer, l2
    )
    _, arrays = split(Training(model, opt_state, training.optimizer))
    return arrays, loss


def shard(training: Training, mesh: jax.sharding.Mesh) -> Training:
    """Data parallelism as equinox's "parallelism" example writes it: `eqx.filter_shard` the
    module (model and optax state) onto `mesh` replicated, outside `filter_jit`; inside, the
    step `filter_shard`s the batch along the data axis (which needs the mesh's Auto axis)."""
    return eqx.filter_shard(training, NamedSharding(mesh, P()))


def _data_parallel() -> bool:
    """Whether a mesh with the data axis is set (`jax.set_mesh`) around this trace."""
    mesh = jax.sharding.get_abstract_mesh()
    return not mesh.empty and DATA_AXIS in mesh.axis_names


def model_of(training: Training) -> LinearRegression:
    return training.model


# Checkpoints, the way equinox's docs write them: `eqx.tree_serialise_leaves` writes every
# array leaf of a module (here `Training`: the model and the optax state) to one file, and
# `eqx.tree_deserialise_leaves` reads them into a module of the same structure (`like`),
# which may be abstract (`eqx.filter_eval_shape`).

NATIVE_FORMAT = "eqx.tree_serialise_leaves of Training (model, opt_state)"
NATIVE_FILE = "training.eqx"


def save_native(directory, training: Training) -> None:
    """Writes `directory/training.eqx` (the folder must not exist yet)."""
    from pathlib import Path

    Path(directory).mkdir()
    eqx.tree_serialise_leaves(Path(directory) / NATIVE_FILE, training)


def restore_native(
    directory, *, in_features: int, out_features: int, optimizer: optax.GradientTransformation
) -> Training:
    """The `Training` saved in `directory`; shapes from `in_features`, `out_features` and
    `optimizer` (equinox raises if the file holds others)."""
    from pathlib import Path

    like = eqx.filter_eval_shape(
        lambda: init_training(create(in_features, out_features, key=jax.random.key(0)), optimizer)
    )
    return eqx.tree_deserialise_leaves(Path(directory) / NATIVE_FILE, like)
