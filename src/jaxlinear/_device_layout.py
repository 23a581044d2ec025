"""Where a data-parallel run's arrays lie over the devices, one column per library.

For a run over a mesh of several devices (`training.data_mesh`, `--devices N`, or several
processes) the side-by-side view gains a row drawing, with treescope's
`render_array_sharding`, each library's parameter arrays as its `shard` placed them, a
summary of where its optimizer state lives, and a training batch as the compiled step
receives it: each colour is a device.

Nothing is assumed: the parameters drawn are the run's own arrays (their `.sharding`), and the
batch's layout is the output sharding the compiler chose for the driver's batch gather
(`training.take_batch`, compiled, not run, under `jax.set_mesh`), so the picture changes if
the code placing either does. Compiling without running also keeps this safe in a
multi-process run, where only process 0 draws the page and running a program over the global
arrays would wait for the other processes.
"""

from __future__ import annotations

import dataclasses
import html
import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxlinear import _layout, visualize
from jaxlinear._registry import get_library

# How each library's step receives its share of a batch, as the caption over the batch.
BATCH_CAPTIONS = {
    "linen": "`x: [batch, in_features]`: the driver's gather constrains each batch to "
    "`P('data')` under `jax.set_mesh`, so the `jax.jit`ted step computes each device's rows "
    "and the compiler sums their gradients",
    "nnx": "`x: [batch, in_features]`: the driver's gather constrains each batch to "
    "`P('data')` under `jax.set_mesh`, so the `nnx.jit`ted step computes each device's rows "
    "and the compiler sums their gradients",
    "equinox": "`x: [batch, in_features]`: the step itself `eqx.filter_shard`s `(x, y)` to "
    "`P('data')` inside `eqx.filter_jit`; `jax.vmap` of the per-example `__call__` runs over "
    "each device's rows",
    "penzai": "the step's `NamedArray` of axes `batch` x `features` (`_named(x)`): its named "
    "`batch` axis is the one split over the mesh's `data` axis",
}


@dataclasses.dataclass(frozen=True)
class Batches:
    """The batches of a run, for drawing one: `n_examples` training rows cut into batches of
    `batch_size` rows (None: one full batch), and how the page names them (by default, as
    the batches of a training run)."""

    n_examples: int
    batch_size: int | None
    label: str | None = None

    def describe(self, devices: int) -> str:
        if self.label is not None:
            return self.label
        if self.batch_size is not None and self.batch_size < self.n_examples:
            return f"every batch of {self.batch_size} rows (of {self.n_examples} training rows)"
        pad = -self.n_examples % devices
        padding = f", padded with {pad} rows of weight 0 to {self.n_examples + pad}" if pad else ""
        return f"the full batch of {self.n_examples} training rows{padding}"


def mesh_of(trainings: Mapping[str, Any]):
    """The mesh the training objects' arrays are placed on, when it has several devices;
    None for single-device training (nothing to draw)."""
    import jax

    for name, training in trainings.items():
        _, arrays = get_library(name).module.split(training)
        for leaf in jax.tree.leaves(arrays):
            mesh = getattr(getattr(leaf, "sharding", None), "mesh", None)
            if mesh is not None and not mesh.empty and mesh.devices.size > 1:
                return mesh
    return None


def batch_array(mesh, n_examples: int, in_features: int, batch_size: int | None):
    """A `[batch, in_features]` array laid out as one training batch of a run over `mesh`.

    The layout is the compiler's: `training.take_batch` is compiled (not run) under
    `jax.set_mesh(mesh)` on `[n, in_features]` rows placed as `training.place_batches`
    places them (padded to a multiple of the devices, split by rows), and the array, of
    zeros, is made with the output sharding of that program. A full batch (`batch_size`
    None or >= `n_examples`) is all the padded rows.
    """
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxlinear import training

    rows = n_examples + (-n_examples % mesh.devices.size)
    placed = NamedSharding(mesh, P(training.DATA_AXIS))
    x = jax.ShapeDtypeStruct((rows, in_features), jnp.float32, sharding=placed)
    y = jax.ShapeDtypeStruct((rows, 1), jnp.float32, sharding=placed)
    full_batch = batch_size is None or batch_size >= n_examples
    indices = jax.ShapeDtypeStruct((0 if full_batch else batch_size,), jnp.int32)
    with jax.set_mesh(mesh):
        compiled = jax.jit(training.take_batch).lower(x, y, indices).compile()
    sharding = compiled.output_shardings[0]
    shape = (rows if full_batch else batch_size, in_features)
    zeros = np.zeros((1, in_features), np.float32)
    # Each device's block of zeros, made where it lives: no program runs, nothing is moved.
    return jax.make_array_from_callback(
        shape, sharding, lambda index: np.broadcast_to(zeros, _block_shape(shape, index))
    )


def _block_shape(shape: tuple[int, ...], index: tuple[slice, ...]) -> tuple[int, ...]:
    return tuple(len(range(*block.indices(size))) for block, size in zip(index, shape, strict=True))


def placement(array) -> str:
    """In words, how `array` (a jax array or a penzai `NamedArray`) lies over its devices."""
    axis_names = None
    if hasattr(array, "named_shape"):  # penzai: the axes by name, as penzai shows them
        axis_names = list(array.named_shape)
        array = array.data_array
    sharding = array.sharding
    devices = len(sharding.device_set)
    platform = next(iter(sharding.device_set)).platform.upper()
    if sharding.is_fully_replicated:
        return f"replicated: all of it on each of the {devices} {platform} devices"
    names = axis_names or [f"axis {i}" for i in range(array.ndim)]
    blocks = sharding.shard_shape(array.shape)
    split = [
        f"{name} {size} → {block} per device"
        for name, size, block in zip(names, array.shape, blocks, strict=True)
        if block < size
    ]
    return f"split over {devices} {platform} devices: " + ", ".join(split)


def _figure(parts: list) -> str:
    """One treescope figure of text and sharding drawings: its runtime is then in the page
    once per cell (about 15 KB), not once per array."""
    import treescope

    return treescope.figures.inline(*parts, wrap=True)._repr_html_()


def layout_cell(name: str, training: Any, batch) -> str:
    """The layout column of library `name`: how its `shard` places the training state, where
    the arrays its step carries lie (in words), each parameter array's sharding drawn, and
    `batch` drawn as this library's step receives it."""
    import jax
    from penzai import pz

    from jaxlinear import _views

    module = get_library(name).module
    model = module.model_of(training)
    is_named = lambda value: isinstance(value, pz.nx.NamedArray)  # noqa: E731
    parameters = jax.tree.leaves_with_path(_views.parameters(name, model), is_leaf=is_named)
    # The weights before the biases, as the parameter row orders them.
    parameters.sort(key=lambda item: len(_shape(item[1])) < 2)
    parts: list = []
    for path, leaf in parameters:
        parts += _drawing(f"{_views._parameter_name(name, path)} {_shape(leaf)}", "", leaf)
    if batch is not None:
        shown = module._named(batch) if name == "penzai" else batch
        caption = BATCH_CAPTIONS[name].replace("`", "")
        parts += _drawing(f"a batch {_shape(shown)}", caption, shown)
    _, carried = module.split(training)
    return (
        f'<p class="jl-caption">Placed by <code>{module.__name__}.shard</code>:</p>'
        + visualize.render_code(inspect.getsource(module.shard))
        + '<p class="jl-caption">Every array the train step carries (parameters, optimizer '
        f"state, step counts): {html.escape(_summary(jax.tree.leaves(carried)))}.</p>"
        + _figure(parts)
    )


def _shape(array) -> list:
    """`[10, 1]`, or a penzai array's named shape `[('features', 10), ...]`."""
    named = getattr(array, "named_shape", None)
    return list(named.items()) if named is not None else list(array.shape)


def _drawing(title: str, caption: str, array) -> list:
    """Figure parts: the title in bold, the caption, the placement in words, the drawing.

    Batch rows go down the page in every library (penzai's named `batch` axis included),
    so the four drawings compare at a glance.
    """
    import treescope

    rows = ["batch"] if "batch" in getattr(array, "named_shape", {}) else ()
    drawing = treescope.render_array_sharding(array, rows=rows)
    text = f"\n{caption}\n" if caption else "\n"
    return [treescope.figures.bolded(title), f"{text}{placement(array)}\n", drawing, "\n"]


def _summary(arrays: list) -> str:
    """How many arrays, and where they lie (`placement`), grouped."""
    counts: dict[str, int] = {}
    for array in arrays:
        if hasattr(array, "sharding"):
            where = placement(array)
            counts[where] = counts.get(where, 0) + 1
    return "; ".join(
        f"{count} array{'s' if count > 1 else ''}, {where}" for where, count in counts.items()
    )


def layout_row(trainings: Mapping[str, Any], batches: Batches | None) -> _layout.Row | None:
    """The side-by-side row for a run over several devices; None when the training objects
    live on one device.

    Args:
      trainings: library -> its training object (as `split`/`model_of` take it).
      batches: the run's batches, one of which is drawn as it is laid out (`batch_array`);
        None leaves the batch out.
    """
    mesh = mesh_of(trainings)
    if mesh is None:
        return None
    devices = mesh.devices.size
    platform = mesh.devices.flat[0].platform.upper()
    processes = len({device.process_index for device in mesh.devices.flat})
    where = f" in {processes} processes" if processes > 1 else ""
    batch, batch_note = None, ""
    if batches is not None:
        name, training = next(iter(trainings.items()))
        in_features = get_library(name).to_canonical(get_library(name).module.model_of(training))
        batch = batch_array(mesh, batches.n_examples, in_features.in_features, batches.batch_size)
        label = batches.describe(devices)
        label = label[:1].upper() + label[1:]
        batch_note = (
            f" {html.escape(label)}: each is {html.escape(placement(batch))}, so each device "
            "computes the loss of its rows and the compiler sums the gradients across devices."
        )
    return _layout.Row(
        f"Layout over the {devices} devices",
        {name: layout_cell(name, training, batch) for name, training in trainings.items()},
        note=(
            f"Data-parallel over a mesh of {devices} {platform} devices{where} (axis "
            f"<code>{html.escape(', '.join(mesh.axis_names))}</code>), drawn with treescope's "
            "<code>render_array_sharding</code>: one colour per device; a cell holding every "
            "colour is on every device. Each library places its parameters and optimizer "
            "state its own way (the code above each drawing)." + batch_note
        ),
        anchor="row-layout",
    )
