"""The one training driver shared by the four libraries.

Each library module (`jaxlinear.libraries.linen`, `.nnx`, `.equinox`, `.penzai`) supplies,
in its own idiom and under the same names:

- `init_training(model, optimizer)`: the library's own training object (a `TrainState`, a
  model with an `nnx.Optimizer`, an equinox module holding model and optax state, penzai's
  `StatefulTrainer`);
- `idiomatic_step(training, x, y, *, l2)`: its textbook jitted train step;
- `split(training) -> (static, arrays)` and `merge(static, arrays) -> training`: the way
  the library separates arrays from structure (nothing / `nnx.split` / `eqx.partition` /
  `pz.unbind_params`);
- `state_step(static, arrays, x, y, *, l2) -> (arrays, loss)`: the same step as a pure
  function of the arrays (model and optimizer state) and the batch;
- `model_of(training)`: the trained model;
- `shard(training, mesh) -> training`: the training object placed replicated on every device
  of `mesh`, the library's own way (data-parallel training, see `data_mesh`).

This module owns everything else, once: the optimizer and its schedule, the step mode, the
`lax.scan`, the batch order, timing, the checks that training did not fail, and progress.
The state it carries is always an explicit value (`TrainingState`), in every step mode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxlinear._config import (
    OPTIMIZERS as OPTIMIZERS,
)
from jaxlinear._config import (
    SCHEDULES as SCHEDULES,
)
from jaxlinear._config import (
    STEP_MODES as STEP_MODES,
)
from jaxlinear._config import (
    TrainConfig as TrainConfig,
)
from jaxlinear._errors import ConfigError, DataError, TrainingDiverged, TrainingFailed
from jaxlinear._random import generator

ProgressFn = Callable[[int, float], None]

# A run "got worse" only when its final objective exceeds the starting one by more than
# float32 rounding of the loss (about 1e-7 relative per operation, a few operations deep).
_WORSE_RTOL = 1e-6


def make_optimizer(
    config: TrainConfig, n_examples: int, *, total_steps: int | None = None
) -> optax.GradientTransformation:
    """The optax optimizer that `config` names, with its learning-rate schedule.

    With `schedule="cosine"` the rate decays from `learning_rate` to 0 over all
    `config.epochs * steps_per_epoch(n_examples, config.batch_size)` steps. The decay is what
    lets adam settle on the optimum: at a constant rate its normalised step keeps the weights
    jittering around it (seen here: test R² off by ~1e-3 on linnerud). `total_steps`
    overrides that count (streamed training, whose epochs are cut into batches per chunk).
    """
    learning_rate = config.learning_rate
    if config.schedule == "cosine":
        if total_steps is None:
            total_steps = config.epochs * steps_per_epoch(n_examples, config.batch_size)
        learning_rate = optax.cosine_decay_schedule(config.learning_rate, total_steps)
    return {"adam": optax.adam, "sgd": optax.sgd}[config.optimizer](learning_rate)


class WeightedTargets(NamedTuple):
    """Targets with a weight per example: what the libraries' steps receive as `y` when `fit`
    is given `sample_weight`. They pass `y` on to `l2_objective` untouched.

    Attributes:
      values: `[n, out_features]`.
      sample_weight: `[n]`, non-negative, scaled to mean 1 over the training set (so a batch's
        weighted mean is an unbiased estimate of the full weighted objective).
    """

    values: jax.Array
    sample_weight: jax.Array


def l2_objective(prediction: jax.Array, target, weights, l2) -> jax.Array:
    """The loss every library minimises, a scalar.

    `mean over the batch of sum over outputs of optax.l2_loss` (i.e. `0.5 * squared error`)
    plus the ridge term `0.5 * l2 * ||W||^2`. Summing over outputs (not averaging) keeps
    the optimum independent of how many outputs there are, which `least_squares` relies on.
    With `WeightedTargets`, each example's term is multiplied by its weight first.

    Args:
      prediction: `[batch, out_features]`.
      target: `[batch, out_features]`, or `WeightedTargets` of that and `[batch]` weights.
      weights: the weight matrix in any layout, or a pytree of them (only squares are summed).
      l2: ridge penalty, a scalar.
    """
    if isinstance(target, WeightedTargets):
        per_example = optax.l2_loss(prediction, target.values).sum(axis=-1)
        data_term = (per_example * target.sample_weight).mean()
    else:
        data_term = optax.l2_loss(prediction, target).sum(axis=-1).mean()
    penalty = sum(jnp.sum(jnp.square(w)) for w in jax.tree.leaves(weights))
    return data_term + 0.5 * l2 * penalty


def steps_per_epoch(n_examples: int, batch_size: int | None) -> int:
    """`n_examples // batch_size`; a missing or oversized batch size means one full batch."""
    return 1 if batch_size is None else max(n_examples // batch_size, 1)


def epoch_order(n_examples: int, batch_size: int | None, seed: int, epoch: int) -> np.ndarray:
    """Indices of the examples in each step of epoch `epoch`: `[steps_per_epoch, batch]` int32.

    Each epoch is a permutation from its own random stream (`seed`, "batch_order", `epoch`),
    so any epoch's order is known without replaying the ones before it. The last partial batch
    is dropped so every step has the same shape (no recompilation); reshuffling each epoch
    means no example is left out for long.

    Full-batch training (`batch_size` None or >= `n_examples`) gives an EMPTY row, `[1, 0]`:
    every step takes all examples in their stored order (see `take_batch`). Permuting them
    would change nothing but the float summation order, and would cost a copy of the whole
    data set at every step.
    """
    if batch_size is None or batch_size >= n_examples:
        return np.zeros((1, 0), np.int32)
    steps = steps_per_epoch(n_examples, batch_size)
    # A permutation built in int32 in place: a third of the memory of `permutation`'s int64.
    order = np.arange(n_examples, dtype=np.int32)
    generator(seed, "batch_order", epoch).shuffle(order)
    return order[: steps * batch_size].reshape(steps, batch_size)


def batch_schedule(
    n_examples: int, batch_size: int | None, epochs: int, seed: int, *, first_epoch: int = 0
) -> np.ndarray:
    """`epoch_order` of epochs `first_epoch ..`: `[epochs, steps_per_epoch, batch]`, int32."""
    epochs_range = range(first_epoch, first_epoch + epochs)
    return np.stack([epoch_order(n_examples, batch_size, seed, e) for e in epochs_range])


def take_batch(x: jax.Array, y, indices: jax.Array):
    """Rows `indices: [batch]` of `x: [n, in]` and of `y` (`[n, out]`, or `WeightedTargets`);
    empty `indices` means all rows.

    The test is on the static shape, so inside `jax.jit` a full batch costs nothing. Under a
    data mesh (`data_mesh`, set with `jax.set_mesh`) the batch is split along its first axis
    over the mesh's devices (see `split_batch`).
    """
    if indices.shape[-1] == 0:
        return split_batch((x, y))
    return split_batch((x[indices], jax.tree.map(lambda values: values[indices], y)))


DATA_AXIS = "data"
"""The name of the one mesh axis data-parallel training splits batches over."""


def data_mesh(devices: int) -> jax.sharding.Mesh | None:
    """A 1-D mesh named `DATA_AXIS` over the first `devices` local devices; `None` for one.

    The axis is `Auto` (the compiler propagates shardings from the placed arrays and the
    constraints) rather than `jax.make_mesh`'s default `Explicit`: equinox's documented
    `eqx.filter_shard` inside `filter_jit` is a `with_sharding_constraint`, which jax accepts
    only on Auto axes. One device needs no mesh: that run is the plain single-device one.

    Raises:
      ConfigError: `devices` is not between 1 and `jax.local_device_count()`.
    """
    available = jax.local_device_count()
    if isinstance(devices, bool) or not isinstance(devices, int) or not 1 <= devices <= available:
        allowed = "be 1" if available == 1 else f"be between 1 and {available}"
        raise ConfigError(
            "devices", f"must {allowed}, the number of devices this host has; got {devices!r}"
        )
    if devices == 1:
        return None
    return jax.make_mesh(
        (devices,),
        (DATA_AXIS,),
        axis_types=(jax.sharding.AxisType.Auto,),
        devices=jax.local_devices()[:devices],
    )


def split_batch(batch):
    """`batch` (a pytree of `[batch, ...]` arrays) constrained to be split along its first axis
    over the `DATA_AXIS` of the mesh set with `jax.set_mesh`; unchanged when there is none.

    Inside `jax.jit` this is a `with_sharding_constraint`: each device computes the loss and
    gradient of its rows, and the compiler adds the all-reduce that sums the gradients.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or DATA_AXIS not in mesh.axis_names:
        return batch
    return jax.lax.with_sharding_constraint(batch, P(DATA_AXIS))


def place_batches(x: jax.Array, y, config: TrainConfig, mesh: jax.sharding.Mesh):
    """`x: [n, in]` and `y` placed with their rows split over `mesh`, for `run_epochs`.

    Returns `(x, y, config)`. A device array's rows must divide evenly over the devices, so
    when `n` does not, zero rows are appended: mini-batches never pick them (`epoch_order`
    draws from the first `n`), and full-batch training gets `y` as `WeightedTargets` whose
    padding rows weigh 0 and real rows `(n + pad) / n` (times any `sample_weight`), so the
    mean over all rows is the mean over the real ones. The returned config then says "full
    batch" as `batch_size=None`, which the padded row count cannot change.

    Raises:
      ConfigError: a mini-batch size that is not a multiple of the number of devices.
    """
    devices = mesh.devices.size
    n = x.shape[0]
    check_batch_split(config.batch_size, n, devices)
    full_batch = config.batch_size is None or config.batch_size >= n
    if full_batch:
        config = dataclasses.replace(config, batch_size=None)
    pad = -n % devices
    if pad and full_batch:
        if isinstance(y, WeightedTargets):
            y, weights = y.values, np.asarray(y.sample_weight, np.float64)
        else:
            weights = np.ones(n)
        y = WeightedTargets(y, (weights * ((n + pad) / n)).astype(np.float32))
    if pad:
        y = jax.tree.map(lambda values: _pad_rows(values, pad), y)
        x = _pad_rows(x, pad)
    # Rows over the data axis, every other axis whole: P("data") on `[n, ...]` arrays.
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    if mesh.is_multi_process:  # each process hands jax only the rows its devices hold
        x, y = jax.tree.map(lambda values: process_rows(values, sharding), (x, y))
    else:
        x, y = jax.device_put((x, y), sharding)
    return x, y, config


def process_rows(values, sharding: NamedSharding) -> jax.Array:
    """The global array of `values: [n, ...]` split by rows over a mesh that spans several
    processes (`jax.distributed`), made from this process's rows only.

    `jax.make_array_from_process_local_data` takes the rows of this process's devices (a
    contiguous block: the mesh lists devices process by process) and assembles the global
    `[n, ...]` array without any process sending its rows to another.
    """
    values = np.asarray(values)
    start, stop = process_block(sharding, values.shape)
    return jax.make_array_from_process_local_data(sharding, values[start:stop], values.shape)


def process_block(sharding: NamedSharding, shape: tuple[int, ...]) -> tuple[int, int]:
    """`(start, stop)`: the rows of a `shape` array split by `sharding` (rows over its mesh's
    data axis) that this process's devices hold, one contiguous block.

    Raises:
      ValueError: the devices' rows are not one block (a mesh that interleaves processes).
    """
    blocks = sharding.addressable_devices_indices_map(tuple(shape)).values()
    starts = {block[0].start or 0 for block in blocks}
    stops = {shape[0] if block[0].stop is None else block[0].stop for block in blocks}
    start, stop = min(starts), max(stops)
    if sum(b - a for a, b in zip(sorted(starts), sorted(stops), strict=True)) != stop - start:
        raise ValueError(f"this process's rows of {shape} are not one block: {sorted(starts)}")
    return start, stop


def check_batch_split(batch_size: int | None, n_examples: int, devices: int) -> None:
    """Raises `ConfigError` unless every mini-batch splits evenly over `devices`.

    A mini-batch that does not would leave some devices a row more than others; rather than
    pad every batch (changing its mean), the run is refused with the numbers to fix. Full
    batches (`batch_size` None or >= `n_examples`) are always accepted (`place_batches`).
    """
    if batch_size is not None and batch_size < n_examples and batch_size % devices:
        raise ConfigError(
            "batch_size",
            f"must be a multiple of the number of devices ({devices}) so each batch splits "
            f"evenly, got {batch_size}",
        )


def _pad_rows(values, pad: int) -> np.ndarray:
    values = np.asarray(values)
    return np.concatenate([values, np.zeros((pad, *values.shape[1:]), values.dtype)])


_take_rows = jax.jit(take_batch)  # one dispatch for both gathers in a per-batch loop


def scan_steps(step: Callable, arrays: Any, x: jax.Array, y: jax.Array, indices: jax.Array):
    """Runs `step(arrays, x_batch, y_batch) -> (arrays, loss)` once per row of
    `indices: [steps, batch]` in one `jax.lax.scan`; returns `(arrays, losses [steps])`.

    For use inside `jax.jit` with `x` and `y` on the device: the loop, the batch gathers and
    the optimizer all run in one compiled program, with no Python per step.
    """

    def one_step(arrays, batch_indices):
        return step(arrays, *take_batch(x, y, batch_indices))

    return jax.lax.scan(one_step, arrays, indices)


def jit_over_leaves(function: Callable, state: Any) -> tuple[list[jax.Array], Callable, Callable]:
    """Compiles `function(state, *args) -> (state, out)` as a function of `state`'s leaves.

    A jitted function flattens its pytree arguments on every call, in Python for most
    library types (nnx `State`, penzai `NamedArray`, equinox modules, flax structs): about
    1-2 us per node, which on a small model costs more than a training step. Flattening
    once here and rebuilding the pytree inside the compiled function leaves jax a plain
    list of arrays to pass, its fastest path. This is the last step of equinox's
    "low-overhead training loops" and of flax's split/merge recipe; each library first
    reduces its model to a pytree of arrays its own way (its `split`).

    Returns:
      `(leaves, compiled, unflatten)`: the initial list of arrays, the compiled
      `(leaves, *args) -> (leaves, out)`, and `unflatten(leaves) -> state`.
    """
    leaves, treedef = jax.tree.flatten(state)

    @jax.jit
    def over_leaves(leaves, *args):
        new_state, out = function(jax.tree.unflatten(treedef, leaves), *args)
        new_leaves, new_treedef = jax.tree.flatten(new_state)
        if new_treedef != treedef:  # checked once, while tracing
            raise ValueError(f"the step changed the state's structure to {new_treedef}")
        return new_leaves, out

    return leaves, over_leaves, lambda leaves: jax.tree.unflatten(treedef, leaves)


@dataclasses.dataclass(frozen=True)
class TrainingState:
    """Everything needed to continue a run, as an explicit value in every step mode.

    Attributes:
      library: registry name of the library whose `split` made it.
      static: the library's non-array part (`None` for linen's `TrainState`, nnx's
        `GraphDef`, equinox's static partition, penzai's model with parameter slots).
      arrays: a pytree of arrays: the model's parameters and the optimizer state.
      step: optimizer steps taken so far.
    """

    library: str
    static: Any
    arrays: Any
    step: int


@dataclasses.dataclass
class FitResult:
    """What training one model returns.

    Attributes:
      model: the trained model, in its library's own form.
      training: the library's own training object after the run (e.g. linen's `TrainState`),
        from which `state` was split.
      state: the explicit `TrainingState` at the end of the run.
      losses: `[steps]` training loss at every step of this run (before that step's update).
      initial_objective, final_objective: the full training objective (float64) of the
        model before and after the run.
      compile_seconds: time of the first compiled call minus its steady-state share, i.e.
        tracing plus compilation.
      ms_per_step: steady-state wall time per step after the first call, in milliseconds.
    """

    model: Any
    training: Any
    state: TrainingState
    losses: np.ndarray
    initial_objective: float
    final_objective: float
    compile_seconds: float
    ms_per_step: float


@dataclasses.dataclass
class Runner:
    """What `fit` drives for one library in one step mode: a state and how to advance it.

    `run(state, x, y, indices [steps, batch]) -> (state, losses [steps])`; `state` is the
    library's training object (`idiomatic`) or the flat list of its arrays (`fast`, `fused`).
    """

    state: Any
    run: Callable[[Any, jax.Array, jax.Array, np.ndarray], tuple[Any, list]]
    finish: Callable[[Any], Any]  # state -> the library's training object
    per_step: bool  # True when `run` loops over steps in Python (timed apart)


def runner(library, training: Any, config: TrainConfig) -> Runner:
    """The step functions for `config.step_mode`, built once so a run compiles once.

    `library` is a library module (see this module's docstring); `training` its own training
    object. The benchmark times the very functions `fit` runs through this.
    """
    l2 = config.l2
    if config.step_mode == "idiomatic":

        def run_idiomatic(training, x, y, indices):
            losses = []
            for step_indices in indices:
                batch = (x, y) if step_indices.size == 0 else _take_rows(x, y, step_indices)
                training, loss = library.idiomatic_step(training, *batch, l2=l2)
                losses.append(loss)
            return training, losses

        return Runner(training, run_idiomatic, finish=lambda t: t, per_step=True)

    static, arrays = library.split(training)

    def step(arrays, x, y):
        return library.state_step(static, arrays, x, y, l2=l2)

    def finish(leaves):
        return library.merge(static, unflatten(leaves))

    if config.step_mode == "fast":
        leaves, compiled, unflatten = jit_over_leaves(step, arrays)

        def run_fast(leaves, x, y, indices):
            losses = []
            for step_indices in indices:
                batch = (x, y) if step_indices.size == 0 else _take_rows(x, y, step_indices)
                leaves, loss = compiled(leaves, *batch)
                losses.append(loss)
            return leaves, losses

        return Runner(leaves, run_fast, finish, per_step=True)

    def epoch(arrays, x, y, indices):
        return scan_steps(step, arrays, x, y, indices)

    leaves, compiled, unflatten = jit_over_leaves(epoch, arrays)

    def run_fused(leaves, x, y, indices):
        return compiled(leaves, x, y, jnp.asarray(indices))

    return Runner(leaves, run_fused, finish, per_step=False)


def fit(
    library,
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    *,
    on_epoch: ProgressFn | None = None,
    start: TrainingState | None = None,
    checkpoint_every: int | None = None,
    on_checkpoint: Callable[[TrainingState], None] | None = None,
    sample_weight: np.ndarray | None = None,
    require_progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
) -> FitResult:
    """Trains a copy of `model` with optax on `x: [n, in_features]`, `y: [n, out_features]`.

    Args:
      library: a library module (see this module's docstring) or a registered `Library`.
      model: that library's model; it is left untouched. When resuming, any model of the same
        shapes (its values are replaced by `start`'s).
      config: the batches, epochs, optimizer and step mode.
      on_epoch: called after each epoch with `(epochs_done, last_loss)`.
      start: resume from this state (its `arrays` and `step`; `static` may be `None`): the
        run continues at the epoch it reached, with the same batch order and optimizer
        state, and ends with the same weights as a run that was never interrupted and used
        the same `checkpoint_every`.
      checkpoint_every: call `on_checkpoint` every this many epochs (and at the end).
      on_checkpoint: receives the `TrainingState` at those epochs, e.g. to save it.
      sample_weight: `[n]` non-negative weights: the objective becomes the weighted mean of
        the examples' losses (see `WeightedTargets`); `None` weighs every example 1.
      require_progress: raise `TrainingFailed` when the run ends above its starting objective.
        `False` is for a step of a longer run on data that changes from call to call (the
        scikit-learn estimator's `partial_fit`): adam's moments carry earlier batches, so one
        epoch on a new batch may rightly end above that batch's starting objective.
      mesh: train data-parallel over this mesh (from `data_mesh`): the library's `shard`
        places its training object replicated, `place_batches` splits the rows of `x`, `y`
        over the devices, and the steps run under `jax.set_mesh(mesh)`, where every batch is
        split along the data axis (`take_batch`). `None`: one device, as before.

    Raises:
      ConfigError: an invalid setting, or a `start` that does not fit the run, or (with
        `mesh`) a mini-batch size that is not a multiple of the number of devices.
      DataError: `x` or `y` has the wrong shape or a non-finite value.
      TrainingDiverged: the loss became NaN or infinite (the hint names the likely cause).
      TrainingFailed: the final objective is above the starting one (unless
        `require_progress` is False).
    """
    library = getattr(library, "module", library)
    config.validate()
    if checkpoint_every is not None:
        _check_positive_int("checkpoint_every", checkpoint_every)
    x, y = _checked_data(x, y, sample_weight)
    optimizer = make_optimizer(config, len(x))
    training = library.init_training(model, optimizer)
    steps = steps_per_epoch(len(x), config.batch_size)
    first_epoch = 0
    if start is not None:
        first_epoch = _resume_epoch(start, library.NAME, steps, config.epochs)
        static, fresh = library.split(training)
        saved = start.arrays
        if mesh is not None and mesh.is_multi_process:
            # Arrays read from a checkpoint sit committed on this process's device, and jax
            # moves none across processes: rebuilt uncommitted, like fresh ones, `shard` can
            # place them (every process holds the same values).
            saved = jax.tree.map(lambda leaf: jnp.asarray(np.asarray(leaf)), saved)
        training = library.merge(static, _with_leaves_of(saved, fresh))
    initial_objective = _objective(library, library.model_of(training), x, y, config.l2)
    x_run, y_run, run_config = x, y, config
    if mesh is not None:
        training = library.shard(training, mesh)
        x_run, y_run, run_config = place_batches(x, y, config, mesh)
    drive = runner(library, training, config)

    def checkpoint(state, epochs_done: int) -> None:
        static, arrays = library.split(drive.finish(state))
        # A snapshot: nnx and penzai go on updating their objects in place after this.
        arrays = jax.tree.map(lambda leaf: leaf, arrays)
        on_checkpoint(TrainingState(library.NAME, static, arrays, epochs_done * steps))

    with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
        state, losses, compile_seconds, ms_per_step = run_epochs(
            drive,
            x_run,
            y_run,
            run_config,
            on_epoch,
            first_epoch=first_epoch,
            checkpoint_every=checkpoint_every,
            on_checkpoint=checkpoint if on_checkpoint is not None else None,
            n_examples=len(x),
        )
        training = drive.finish(state)
    trained = library.model_of(training)
    final_objective = _objective(library, trained, x, y, config.l2)
    if require_progress and final_objective > initial_objective * (1 + _WORSE_RTOL):
        raise TrainingFailed(
            f"training made the model worse: the objective rose from {initial_objective:.6g} "
            f"to {final_objective:.6g} with {config.optimizer} at learning rate "
            f"{config.learning_rate:g}; {_likely_cause(config)}"
        )
    static, arrays = library.split(training)
    state = TrainingState(library.NAME, static, arrays, step=config.epochs * steps)
    return FitResult(
        model=trained,
        training=training,
        state=state,
        losses=losses,
        initial_objective=initial_objective,
        final_objective=final_objective,
        compile_seconds=compile_seconds,
        ms_per_step=ms_per_step,
    )


def _resume_epoch(start: TrainingState, library: str, steps: int, epochs: int) -> int:
    """The epoch a run resumed from `start` begins at; raises `ConfigError` if it cannot."""
    if start.library != library:
        raise ConfigError("start", f"was saved by {start.library}, not {library}")
    if start.step % steps or not 0 <= start.step // steps < epochs:
        raise ConfigError(
            "start",
            f"is at step {start.step}, which is not the end of an epoch before the last of "
            f"this run ({epochs} epochs of {steps} steps)",
        )
    return start.step // steps


def _with_leaves_of(saved: Any, fresh: Any) -> Any:
    """`fresh`'s structure holding `saved`'s arrays.

    A resumed run builds its static part anew (a new optax transformation, a new graph
    definition), which the saved structure's metadata would not match; the arrays are what
    carry the state. Raises `ConfigError` unless they match in number, shape and kind (integer
    or float: a step count saved as int32 may start life as a Python int).
    """
    saved_leaves, fresh_leaves = jax.tree.leaves(saved), jax.tree.leaves(fresh)
    shapes = [(np.shape(leaf), np.asarray(leaf).dtype.kind) for leaf in saved_leaves]
    expected = [(np.shape(leaf), np.asarray(leaf).dtype.kind) for leaf in fresh_leaves]
    if shapes != expected:
        raise ConfigError(
            "start", f"holds arrays {shapes} where this model and optimizer have {expected}"
        )
    return jax.tree.unflatten(jax.tree.structure(fresh), saved_leaves)


def _check_positive_int(field: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(field, f"must be a positive integer, got {value!r}")


def _checked_data(x, y, sample_weight=None):
    """`x: [n, in]` and `y: [n, out]` (a 1-D `y` is one output) as float32 device arrays;
    with `sample_weight: [n]`, `y` comes back as `WeightedTargets`."""
    x_shape, y_shape = np.shape(x), np.shape(y)
    if len(y_shape) == 1:
        y = np.reshape(y, (-1, 1))
        y_shape = np.shape(y)
    if len(x_shape) != 2 or len(y_shape) != 2 or x_shape[0] != y_shape[0] or x_shape[0] < 1:
        raise DataError(
            f"x must be [n, in_features] and y [n, out_features] with the same n >= 1, "
            f"got x {x_shape} and y {y_shape}"
        )
    x, y = _on_device(x), _on_device(y)
    for name, values in (("x", x), ("y", y)):
        # On the host: a jitted check would compile a program per shape just for this.
        if not np.isfinite(np.asarray(values)).all():
            raise DataError(
                f"{name} has NaN or infinite values (or values too large for float32); "
                "drop, fill or rescale them before training"
            )
    if sample_weight is None:
        return x, y
    return x, WeightedTargets(y, _on_device(normalised_weights(sample_weight, len(x))))


def normalised_weights(sample_weight, n_examples: int) -> np.ndarray:
    """`sample_weight: [n]` scaled to mean 1, float64; raises `DataError` if it cannot be."""
    weights = np.asarray(sample_weight, np.float64)
    if weights.shape != (n_examples,):
        raise DataError(f"sample_weight must have shape ({n_examples},), got {weights.shape}")
    if not (np.isfinite(weights).all() and (weights >= 0).all() and weights.sum() > 0):
        raise DataError("sample_weight must be finite, >= 0, and not all 0")
    return weights * (n_examples / weights.sum())


def _objective(library, model, x, y, l2: float) -> float:
    """The training objective of `model` on all of `x`, `y`, in float64 (see `least_squares`)."""
    from jaxlinear.exact import objective

    weights = library.to_canonical(model)
    if isinstance(y, WeightedTargets):
        sample_weight = np.asarray(y.sample_weight)
        return objective(
            weights, np.asarray(x), np.asarray(y.values), l2=l2, sample_weight=sample_weight
        )
    return objective(weights, np.asarray(x), np.asarray(y), l2=l2)


def run_epochs(
    drive: Runner,
    x,
    y,
    config: TrainConfig,
    on_epoch: ProgressFn | None,
    *,
    first_epoch: int = 0,
    checkpoint_every: int | None = None,
    on_checkpoint: Callable[[Any, int], None] | None = None,
    n_examples: int | None = None,
):
    """Runs epochs `first_epoch ..` of `drive` (from `runner`) on device arrays `x`, `y`, in
    groups (see `epochs_per_call`), checking each group's losses.

    In `fused` mode a group is one compiled call; in the per-step modes it is one Python loop,
    and the host waits for the device only at the end of a group, so a small step's dispatch
    overlaps the previous step's work. The first group is not part of the steady time per
    step: it pays for compilation, timed alone as the first step in the per-step modes.
    With `checkpoint_every`, groups never straddle a checkpoint, and a resumed run groups its
    epochs as the uninterrupted run did (so the same compiled programs run the same steps);
    `on_checkpoint(state, epochs_done)` is called at every multiple and at the end.

    `n_examples` (default: all rows of `x`) is how many leading rows mini-batches are drawn
    from; `place_batches` pads `x` past them.

    Returns `(state, losses [epochs run * steps], compile_seconds, ms_per_step)`.
    """
    n_examples = x.shape[0] if n_examples is None else n_examples
    in_features = x.shape[1]
    steps = steps_per_epoch(n_examples, config.batch_size)
    rows = min(config.batch_size or n_examples, n_examples)
    period = (
        config.epochs if checkpoint_every is None else math.gcd(config.epochs, checkpoint_every)
    )
    per_call = epochs_per_call(period, steps, rows * in_features)
    state, epoch_losses, call_seconds, first_step_seconds = drive.state, [], [], None
    for group_start in range(first_epoch, config.epochs, per_call):
        indices = np.concatenate(
            [
                epoch_order(n_examples, config.batch_size, config.seed, epoch)
                for epoch in range(group_start, group_start + per_call)
            ]
        )
        start = time.perf_counter()
        if drive.per_step and first_step_seconds is None:  # tracing and compilation, alone
            state, first = drive.run(state, x, y, indices[:1])
            jax.block_until_ready(first)
            first_step_seconds = time.perf_counter() - start
            state, rest = drive.run(state, x, y, indices[1:])
            losses = first + rest
        else:
            state, losses = drive.run(state, x, y, indices)
        # The loop has dispatched every step by now, so waiting for each loss in turn costs
        # ~2 us a step; `jax.device_get(losses)` costs ~20 and `jnp.stack` ~17.
        losses = np.asarray([np.asarray(loss) for loss in losses] if drive.per_step else losses)
        losses = losses.astype(np.float32)
        call_seconds.append(time.perf_counter() - start)
        _check_finite(losses, group_start * steps, config)
        epoch_losses.append(losses)
        if on_epoch is not None:
            for epoch in range(per_call):
                on_epoch(group_start + epoch + 1, float(losses[(epoch + 1) * steps - 1]))
        epochs_done = group_start + per_call
        if on_checkpoint is not None and (
            epochs_done % checkpoint_every == 0 or epochs_done == config.epochs
        ):
            on_checkpoint(state, epochs_done)
    compile_seconds, ms_per_step = _split_timings(
        call_seconds, per_call * steps, first_step_seconds
    )
    return state, np.concatenate(epoch_losses), compile_seconds, ms_per_step


MAX_STEPS_PER_CALL = 1024
MAX_WORK_PER_CALL = 2**26


def epochs_per_call(epochs: int, steps: int, values_per_step: int) -> int:
    """How many epochs `fit` runs between two waits for the device.

    One call per epoch is wasteful when an epoch is a single small step (full-batch training
    on a small data set): the call and the wait cost more than the step. So epochs are
    grouped, up to `MAX_STEPS_PER_CALL` steps and `MAX_WORK_PER_CALL` input values read per
    group (large steps need no grouping, and the progress bar should keep moving). The group
    size divides `epochs`, so every fused call has the same shape and compiles once, and
    leaves at least two groups, so the steady-state time is measured apart from compilation.
    """
    limit = min(
        MAX_STEPS_PER_CALL // steps,
        MAX_WORK_PER_CALL // max(steps * values_per_step, 1),
        epochs // 2,
    )
    return max([size for size in range(1, limit + 1) if epochs % size == 0], default=1)


def _on_device(array) -> jax.Array:
    """`array` as a float32 device array; no copy when it already is one.

    `jax.device_put` of a 64-byte-aligned float32 numpy array shares its memory on CPU,
    where `jnp.asarray` would copy it: large data sets are then held once, not twice.
    """
    if isinstance(array, jax.Array) and array.dtype == jnp.float32:
        return array
    with np.errstate(over="ignore"):  # too large for float32 becomes inf, refused after
        return jax.device_put(np.asarray(array, np.float32))


def _split_timings(
    call_seconds: list[float], steps_per_call: int, first_step_seconds: float | None
) -> tuple[float, float]:
    """`(compile_seconds, ms_per_step)` from the wall time of each call.

    The steady time per step comes from the calls after the first, which has compiled
    everything. The compile time is the first fused call, or the first step of a per-step
    loop (`first_step_seconds`), minus its steady share. With a single call, a per-step
    loop's steady time comes from that call's steps after the first; a fused one has none.
    """
    first_call, rest = call_seconds[0], call_seconds[1:]
    if rest:
        per_step = sum(rest) / (len(rest) * steps_per_call)
    elif first_step_seconds is not None and steps_per_call > 1:
        per_step = (first_call - first_step_seconds) / (steps_per_call - 1)
    else:
        return first_step_seconds or first_call, float("nan")
    if first_step_seconds is None:
        return max(first_call - steps_per_call * per_step, 0.0), 1e3 * per_step
    return max(first_step_seconds - per_step, 0.0), 1e3 * per_step


def _likely_cause(config: TrainConfig) -> str:
    """A hint for a failed run: the l2 penalty when it alone makes the steps unstable."""
    # Gradient descent on `0.5 * l2 * ||W||^2` alone is stable only while lr * l2 < 2; adam's
    # normalised step is not, but a penalty far above the data term's curvature (~1 on
    # standardised data) still makes the problem stiff.
    if config.l2 > 0 and config.learning_rate * config.l2 >= 1:
        return "the penalty l2 is too large for this learning_rate: lower l2 or learning_rate"
    return "try a smaller learning_rate"


def _check_finite(losses: np.ndarray, first_step: int, config: TrainConfig) -> None:
    bad = ~np.isfinite(losses)
    if bad.any():
        step = first_step + int(np.argmax(bad))
        raise TrainingDiverged(
            f"training diverged: the loss became {losses[bad][0]} at step {step} with "
            f"{config.optimizer} at learning rate {config.learning_rate:g}; "
            f"{_likely_cause(config)}"
        )
