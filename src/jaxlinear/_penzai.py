"""The linear model in penzai (v2 API).

A penzai model is an immutable pytree of `pz.nn` layers whose learnable values live in
mutable `pz.Parameter` variables, labelled by name (`"linear/Affine_0/Linear.weights"`).
Arrays carry *named* axes (`pz.nx.NamedArray`): a layer contracts the axes it names and
broadcasts over every other one, so a batch is just one more named axis.

Training goes through the variables: `penzai.toolshed.basic_training.StatefulTrainer`
updates the parameters in place (the textbook path), and the fused loop unbinds them once
with `pz.unbind_params`, scans over their values, and binds the result back.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import jax
import numpy as np
import optax
from penzai import pz
from penzai.toolshed import basic_training

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

FEATURES = "features"
BATCH = "batch"


@pz.pytree_dataclass(has_implicitly_inherited_fields=True)
class LinearRegression(pz.nn.Sequential):
    """A stack of `pz.nn.Affine` layers over the named axis `features`.

    Two feature sizes give the linear model `y = x W + b`; more give a stack of linear layers
    (still a linear map, which `to_canonical` collapses to one `W`, `b`).

    Shapes: input `NamedArray` with axes `{..., "features": feature_sizes[0]}` ->
    `{..., "features": feature_sizes[-1]}`; any other named axis (e.g. `batch`) is broadcast.
    """

    @classmethod
    def from_config(
        cls,
        name: str,
        init_base_rng: jax.Array | None,
        feature_sizes: Sequence[int],
        features_axis: str = FEATURES,
    ) -> LinearRegression:
        """Builds one `Affine` layer per consecutive pair of `feature_sizes`.

        Args:
          name: prefix of the parameter labels, e.g. `"linear"` gives
            `"linear/Affine_0/Linear.weights"` and `"linear/Affine_0/AddBias.bias"`.
          init_base_rng: key for the initialisers; `None` leaves parameters uninitialised.
          feature_sizes: `[in_features, ..., out_features]`, at least two sizes.
          features_axis: name of the feature axis, the same on input and output.
        """
        if len(feature_sizes) < 2:
            raise ValueError(f"feature_sizes needs at least 2 sizes, got {list(feature_sizes)}")
        sublayers = [
            pz.nn.Affine.from_config(
                name=f"{name}/Affine_{i}",
                init_base_rng=init_base_rng,
                input_axes={features_axis: n_in},
                # Same name on both sides: penzai inserts the rename to `features_out` and back.
                output_axes={features_axis: n_out},
            )
            for i, (n_in, n_out) in enumerate(itertools.pairwise(feature_sizes))
        ]
        return cls(sublayers=sublayers)


def create(in_features: int, out_features: int, *, key: jax.Array) -> LinearRegression:
    return LinearRegression.from_config("linear", key, [in_features, out_features])


def predict(model: LinearRegression, x: jax.Array) -> jax.Array:
    """`x: [batch, in_features]` -> `[batch, out_features]`, through named axes."""
    named = pz.nx.wrap(x).tag(BATCH, FEATURES)
    return model(named).unwrap(BATCH, FEATURES)


def to_canonical(model: LinearRegression) -> LinearWeights:
    """Collapses the stack: `x W1 + b1` then `(.) W2 + b2` is `x (W1 W2) + (b1 W2 + b2)`."""
    weight, bias = None, None
    for linear, add_bias in _named_layers(model):
        weights, biases = linear.weights.value, add_bias.bias.value
        layer_weight = np.asarray(weights.unwrap(*linear.in_axis_names, *linear.out_axis_names))
        layer_bias = np.asarray(biases.unwrap(*biases.named_shape))
        if weight is None:
            weight, bias = layer_weight, layer_bias
        else:
            weight, bias = weight @ layer_weight, bias @ layer_weight + layer_bias
    return LinearWeights(weight, bias)


def from_canonical(weights: LinearWeights) -> LinearRegression:
    """A single-layer model holding `weights`: built with empty slots, then bound by label."""
    weights = weights.astype(np.float32)
    skeleton = LinearRegression.from_config(
        "linear", None, [weights.in_features, weights.out_features]
    )
    ((linear, _),) = _named_layers(skeleton)
    values = {
        "linear/Affine_0/Linear.weights": pz.nx.wrap(weights.weight).tag(
            *linear.in_axis_names, *linear.out_axis_names
        ),
        "linear/Affine_0/AddBias.bias": pz.nx.wrap(weights.bias).tag(FEATURES),
    }
    # With `init_base_rng=None` penzai leaves a `pz.ParameterSlot` where each parameter goes.
    return pz.bind_variables(
        skeleton, [pz.Parameter(value=value, label=label) for label, value in values.items()]
    )


def _named_layers(model: LinearRegression):
    """`(Linear, AddBias)` of each affine layer."""
    # Affine.from_config with the same axis name in and out gives
    # Affine([Linear(features -> features_out), RenameAxes(features_out -> features), AddBias]).
    return [(affine.sublayers[0], affine.sublayers[-1]) for affine in model.sublayers]


def _loss(model: LinearRegression, x: pz.nx.NamedArray, y: jax.Array, l2) -> jax.Array:
    prediction = model(x).unwrap(BATCH, FEATURES)
    weights = [linear.weights.value.data_array for linear, _ in _named_layers(model)]
    return l2_objective(prediction, y, weights, l2)


def _named(x: jax.Array) -> pz.nx.NamedArray:
    return pz.nx.wrap(x).tag(BATCH, FEATURES)


def make_trainer(
    model: LinearRegression, config: TrainConfig, n_examples: int
) -> basic_training.StatefulTrainer:
    """penzai's own trainer: it updates `model`'s `pz.Parameter`s in place at every `step`."""

    def loss_fn(model, state, rng, x, y):
        del rng  # deterministic model
        loss = _loss(model, x, y, config.l2)
        return loss, state, {"loss": loss}

    return basic_training.StatefulTrainer.build(
        root_rng=jax.random.key(config.seed),
        model=model,
        optimizer_def=make_optimizer(config, n_examples),
        loss_fn=loss_fn,
    )


def _train_step(unbound, state, x, y, optimizer, l2):
    """One step on `state = (parameter values, opt_state)`; the values are a tuple of
    `pz.ParameterValue`, bound into `unbound` (the model with `pz.ParameterSlot`s) inside."""
    params, opt_state = state

    def loss_fn(params):
        return _loss(pz.bind_variables(unbound, params), _named(x), y, l2)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss


@functools.partial(jax.jit, static_argnames="optimizer")
def train_epoch(unbound, state, x, y, indices, optimizer, l2):
    """Many steps in one `lax.scan` over `state = (parameter values, opt_state)`.

    `unbound` is the model with `pz.ParameterSlot`s in place of its parameters (from
    `pz.unbind_params`); `indices: [steps, batch]` -> (state, losses `[steps]`).
    `training_steps` calls it inside its own jit over the state's flat leaves (a jit
    inside a jit costs nothing at run time).
    """
    step = functools.partial(_train_step, unbound, optimizer=optimizer, l2=l2)
    return scan_steps(step, state, x, y, indices)


def training_steps(model: LinearRegression, config: TrainConfig, n_examples: int) -> TrainingSteps:
    """The state and step function `fit` runs in `config.step_mode`, on a copy of `model`.

    `idiomatic` is penzai's own `StatefulTrainer`, which reads and writes the model's
    `pz.Parameter`s at every step. `fast` and `fused` unbind the parameters once
    (`pz.unbind_params`) and jit over their values, binding them into the model inside;
    the values go in and out as a flat list of arrays (`compiled_steps`), since flattening
    penzai's `NamedArray`s at every call would cost more than the step.
    """
    unbound, values = pz.unbind_params(model, freeze=True)

    def to_model(values) -> LinearRegression:
        return pz.bind_variables(unbound, [value.unfreeze_as_copy() for value in values])

    if config.step_mode == "idiomatic":
        trainer = make_trainer(to_model(values), config, n_examples)

        def step(state, x, y):
            return state, trainer.step(x=_named(x), y=y)["loss"]

        return TrainingSteps(None, step, None, to_model=lambda _: trainer.model)

    optimizer = make_optimizer(config, n_examples)
    return compiled_steps(
        config,
        (values, optimizer.init(values)),
        step=functools.partial(_train_step, unbound, optimizer=optimizer, l2=config.l2),
        epoch=functools.partial(train_epoch, unbound, optimizer=optimizer, l2=config.l2),
        to_model=lambda state: to_model(state[0]),
    )


def fit(model: LinearRegression, x, y, config: TrainConfig, *, on_epoch=None) -> FitResult:
    """Trains a copy of `model` (its parameters are copied, not shared)."""
    return run_training(training_steps(model, config, len(x)), x, y, config, on_epoch=on_epoch)
