"""The linear model in penzai (v2 API).

A penzai model is an immutable pytree of `pz.nn` layers whose learnable values live in
mutable `pz.Parameter` variables, labelled by name (`"linear/Affine_0/Linear.weights"`).
Arrays carry *named* axes (`pz.nx.NamedArray`): a layer contracts the axes it names and
broadcasts over every other one, so a batch is just one more named axis.

Training goes through the variables: `penzai.toolshed.basic_training.StatefulTrainer`
updates the parameters in place (the textbook path); the fast and fused paths unbind them
once with `pz.unbind_params`, step on their values, and bind the result back.

>>> import jax, numpy as np
>>> from jaxlinear.libraries import penzai as linear_pz
>>> model = linear_pz.create(3, 2, key=jax.random.key(0))
>>> sorted(v.label for v in linear_pz.pz.unbind_params(model)[1])
['linear/Affine_0/AddBias.bias', 'linear/Affine_0/Linear.weights']
>>> linear_pz.predict(model, np.ones((5, 3), np.float32)).shape
(5, 2)
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import jax
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from penzai import pz
from penzai.toolshed import basic_training, sharding_util

from jaxlinear._weights import LinearWeights
from jaxlinear.training import DATA_AXIS, l2_objective

NAME = "penzai"
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


Model = LinearRegression


def create(in_features: int, out_features: int, *, key: jax.Array) -> LinearRegression:
    return LinearRegression.from_config("linear", key, [in_features, out_features])


def predict(model: LinearRegression, x: jax.Array) -> jax.Array:
    """`x: [batch, in_features]` -> `[batch, out_features]`, through named axes."""
    return model(_named(x)).unwrap(BATCH, FEATURES)


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


def _named(x: jax.Array) -> pz.nx.NamedArray:
    return pz.nx.wrap(x).tag(BATCH, FEATURES)


# Training, the way penzai's docs write it: a loss function and penzai's `StatefulTrainer`.


def _loss(model: LinearRegression, x: pz.nx.NamedArray, y: jax.Array, l2) -> jax.Array:
    prediction = model(x).unwrap(BATCH, FEATURES)
    weights = [linear.weights.value.data_array for linear, _ in _named_layers(model)]
    return l2_objective(prediction, y, weights, l2)


def loss_fn(model, state, rng, x, y, l2):
    """`basic_training.LossFunction`: `(model, state, rng, **batch) -> (loss, state, aux)`."""
    del rng  # a deterministic model
    loss = _loss(model, x, y, l2)
    return loss, state, {"loss": loss}


def make_trainer(
    model: LinearRegression, optimizer: optax.GradientTransformation
) -> basic_training.StatefulTrainer:
    """penzai's own trainer: it updates `model`'s `pz.Parameter`s in place at every `step`.

    `root_rng` only derives per-step keys, which this deterministic model never uses.
    """
    return basic_training.StatefulTrainer.build(
        root_rng=jax.random.key(0), model=model, optimizer_def=optimizer, loss_fn=loss_fn
    )


# The driver's interface (the same names in every library module; see jaxlinear.training).


def init_training(
    model: LinearRegression, optimizer: optax.GradientTransformation
) -> basic_training.StatefulTrainer:
    """A trainer over a copy of the model's parameters (the argument stays untouched)."""
    unbound, values = pz.unbind_params(model, freeze=True)
    return make_trainer(_bind(unbound, values), optimizer)


def idiomatic_step(trainer: basic_training.StatefulTrainer, x, y, *, l2: float):
    """One `trainer.step`, which writes new values into the model's `pz.Parameter`s."""
    return trainer, trainer.step(x=_named(x), y=y, l2=l2)["loss"]


@dataclasses.dataclass(frozen=True)
class Static:
    """What is not an array: the model with parameter slots, and the optax transformation."""

    unbound: LinearRegression
    optimizer: optax.GradientTransformation


def split(trainer: basic_training.StatefulTrainer) -> tuple[Static, tuple]:
    """`pz.unbind_params` of the trainer's model: `(Static, (parameter values, opt_state))`.

    The values are frozen `pz.ParameterValue`s, so the arrays carry their labels.
    """
    unbound, values = pz.unbind_params(trainer.model, freeze=True)
    return Static(unbound, trainer.optimizer_def), (values, trainer.state.value.opt_state)


def merge(static: Static, arrays: tuple) -> basic_training.StatefulTrainer:
    values, opt_state = arrays
    trainer = make_trainer(_bind(static.unbound, values), static.optimizer)
    trainer.state.value = dataclasses.replace(trainer.state.value, opt_state=opt_state)
    return trainer


def state_step(static: Static, arrays: tuple, x, y, *, l2: float):
    """One step on `(parameter values, opt_state)`, bound into the model inside."""
    values, opt_state = arrays

    def loss_of(values):
        return _loss(pz.bind_variables(static.unbound, values), _named(x), y, l2)

    loss, grads = jax.value_and_grad(loss_of)(values)
    updates, opt_state = static.optimizer.update(grads, opt_state, values)
    return (optax.apply_updates(values, updates), opt_state), loss


def shard(
    trainer: basic_training.StatefulTrainer, mesh: jax.sharding.Mesh
) -> basic_training.StatefulTrainer:
    """Data parallelism the penzai way, by axis NAME: `sharding_util.name_to_name_device_put`
    places each named array's axes on the mesh axes their names map to. Only `batch` maps to
    the mesh's data axis, and no parameter has a `batch` axis, so the parameters land
    replicated; so does the optax state (its `count` is unnamed, hence a plain `P()`)."""
    static, (values, opt_state) = split(trainer)
    values = sharding_util.name_to_name_device_put(
        values, mesh, axis_name_to_mesh_name={BATCH: DATA_AXIS}
    )
    opt_state = jax.device_put(opt_state, NamedSharding(mesh, P()))
    return merge(static, (values, opt_state))


def model_of(trainer: basic_training.StatefulTrainer) -> LinearRegression:
    return trainer.model


def _bind(unbound: LinearRegression, values) -> LinearRegression:
    return pz.bind_variables(unbound, [value.unfreeze_as_copy() for value in values])


# Checkpoints, the way penzai's docs suggest: the values of `pz.unbind_params(model,
# freeze=True)` (and the optax state), saved with orbax. Every tuple of `pz.ParameterValue`s
# (the parameters, and adam's moments, which optax keeps in the parameters' structure) is
# stored as a dict keyed by parameter label, so the files read
# `parameters/linear/Affine_0/Linear.weights`, `opt_state/0/mu/linear/Affine_0/...`.

NATIVE_FORMAT = "orbax: pz.unbind_params values and optax state, keyed by parameter label"


def save_native(directory, trainer: basic_training.StatefulTrainer) -> None:
    """Writes the parameter values and optax state as an orbax checkpoint at `directory`
    (absolute; must not exist yet)."""
    from orbax.checkpoint import v1 as ocp

    _, (values, opt_state) = split(trainer)
    ocp.save(directory, _by_label({"parameters": values, "opt_state": opt_state}))


def restore_native(
    directory, *, in_features: int, out_features: int, optimizer: optax.GradientTransformation
) -> basic_training.StatefulTrainer:
    """A trainer holding the values saved at `directory`; shapes from `in_features`,
    `out_features` and `optimizer` (orbax raises if the files hold others)."""
    from orbax.checkpoint import v1 as ocp

    from jaxlinear.checkpoint import restore_target

    def fresh_arrays():
        model = create(in_features, out_features, key=jax.random.key(0))
        return split(init_training(model, optimizer))[1]

    values, opt_state = jax.eval_shape(fresh_arrays)  # of ShapeDtypeStructs
    like = {"parameters": values, "opt_state": opt_state}
    restored = _from_labels(like, ocp.load(directory, restore_target(directory, _by_label(like))))
    arrays = (restored["parameters"], restored["opt_state"])
    unbound = LinearRegression.from_config("linear", None, [in_features, out_features])
    return merge(Static(unbound, optimizer), arrays)


def _is_values(node) -> bool:
    return (
        isinstance(node, tuple)
        and bool(node)
        and all(isinstance(value, pz.ParameterValue) for value in node)
    )


def _by_label(tree):
    """`tree` with every tuple of `pz.ParameterValue`s as `{label: NamedArray}`."""
    return jax.tree.map(
        lambda node: {v.label: v.value for v in node} if _is_values(node) else node,
        tree,
        is_leaf=_is_values,
    )


def _from_labels(like, keyed):
    """The inverse of `_by_label`: `keyed`'s values in `like`'s tuples of `ParameterValue`s."""
    return jax.tree.map(
        lambda node, saved: (
            tuple(pz.ParameterValue(label=v.label, value=saved[v.label]) for v in node)
            if _is_values(node)
            else saved
        ),
        like,
        keyed,
        is_leaf=_is_values,
    )
