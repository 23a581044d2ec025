"""The linear model in flax.nnx.

In nnx the module owns its state: `nnx.Linear` creates its `nnx.Param`s when constructed
(from `nnx.Rngs`), and the model is called directly. `nnx.Optimizer` holds the optax state
and updates the model in place inside an `nnx.jit` step. Where state leaves the module (the
fast step, the fused loop, checkpoints) it goes through `nnx.split` and comes back with
`nnx.merge`.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx

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


class LinearRegression(nnx.Module):
    """`y = x @ kernel + bias`, holding its own parameters.

    Shapes: `x: [..., in_features]` -> `[..., out_features]`;
    `linear.kernel: [in_features, out_features]`, `linear.bias: [out_features]`.
    """

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(in_features, out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear(x)


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


def _split_train_step(
    graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array, y: jax.Array, l2
) -> tuple[nnx.State, jax.Array]:
    """The textbook step on split state: merge, step, and return the new state."""
    model, optimizer = nnx.merge(graphdef, state)
    loss = _train_step(model, optimizer, x, y, l2)
    return nnx.state((model, optimizer)), loss


@jax.jit
def train_epoch(
    graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array, y: jax.Array, indices: jax.Array, l2
) -> tuple[nnx.State, jax.Array]:
    """Many steps in one `lax.scan` over the split (model, optimizer) state.

    `indices: [steps, batch]` -> (new state, losses `[steps]`). The graph is split once
    outside and merged inside, which is flax's own recipe for a fast nnx loop.
    `training_steps` calls it inside its own jit over the state's flat leaves (a jit
    inside a jit costs nothing at run time).
    """
    return scan_steps(functools.partial(_split_train_step, graphdef, l2=l2), state, x, y, indices)


def training_steps(model: LinearRegression, config: TrainConfig, n_examples: int) -> TrainingSteps:
    """The state and step function `fit` runs in `config.step_mode`, on a copy of `model`.

    `idiomatic` calls the `nnx.jit` step on the live model and optimizer, which nnx must
    walk as a graph at every call (milliseconds on CPU). `fast` and `fused` follow flax's
    performance guide instead: `nnx.split` once, jit a function that merges inside; the
    split state goes in and out as a flat list of arrays (`compiled_steps`).
    """
    model = nnx.clone(model)  # the argument stays untouched
    optimizer = nnx.Optimizer(model, make_optimizer(config, n_examples), wrt=nnx.Param)
    if config.step_mode == "idiomatic":

        def step(state, x, y):
            return state, train_step(model, optimizer, x, y, config.l2)

        return TrainingSteps(None, step, None, to_model=lambda _: model)

    graphdef, state = nnx.split((model, optimizer))
    return compiled_steps(
        config,
        state,
        step=functools.partial(_split_train_step, graphdef, l2=config.l2),
        epoch=functools.partial(train_epoch, graphdef, l2=config.l2),
        to_model=lambda state: nnx.merge(graphdef, state)[0],
    )


def fit(model: LinearRegression, x, y, config: TrainConfig, *, on_epoch=None) -> FitResult:
    """Trains a copy of `model` (the argument is left untouched); `x: [n, in]`, `y: [n, out]`."""
    return run_training(training_steps(model, config, len(x)), x, y, config, on_epoch=on_epoch)
