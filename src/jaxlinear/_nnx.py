"""The linear model in flax.nnx.

In nnx the module owns its state: `nnx.Linear` creates its `nnx.Param`s when constructed
(from `nnx.Rngs`), and the model is called directly. `nnx.Optimizer` holds the optax state
and updates the model in place inside an `nnx.jit` step. Where state leaves the module (the
fused loop, checkpoints) it goes through `nnx.split` and comes back with `nnx.merge`.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from jaxlinear._training import FitResult, TrainConfig, l2_objective, make_optimizer, run_epochs
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


@jax.jit
def train_epoch(
    graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array, y: jax.Array, indices: jax.Array, l2
) -> tuple[nnx.State, jax.Array]:
    """All steps of an epoch in one compiled scan over the split (model, optimizer) state.

    `indices: [steps, batch]` -> (new state, losses `[steps]`). The graph is split once
    outside and merged inside, which is flax's own recipe for a fast nnx loop.
    """

    def one_step(state, batch_indices):
        model, optimizer = nnx.merge(graphdef, state)
        loss = _train_step(model, optimizer, x[batch_indices], y[batch_indices], l2)
        return nnx.state((model, optimizer)), loss

    return jax.lax.scan(one_step, state, indices)


def fit(model: LinearRegression, x, y, config: TrainConfig, *, on_epoch=None) -> FitResult:
    """Trains a copy of `model` (the argument is left untouched); `x: [n, in]`, `y: [n, out]`."""
    model = nnx.clone(model)
    optimizer = nnx.Optimizer(model, make_optimizer(config, len(x)), wrt=nnx.Param)
    if config.step_mode == "fused":
        graphdef, state = nnx.split((model, optimizer))
        state, losses, compile_seconds, ms_per_step = run_epochs(
            state,
            x,
            y,
            config,
            train_step=None,
            train_epoch=lambda state, x, y, idx: train_epoch(graphdef, state, x, y, idx, config.l2),
            on_epoch=on_epoch,
        )
        model, optimizer = nnx.merge(graphdef, state)
    else:

        def step(state, xb, yb):
            return state, train_step(model, optimizer, xb, yb, config.l2)

        _, losses, compile_seconds, ms_per_step = run_epochs(
            None, x, y, config, train_step=step, train_epoch=None, on_epoch=on_epoch
        )
    return FitResult(model, losses, compile_seconds, ms_per_step)
