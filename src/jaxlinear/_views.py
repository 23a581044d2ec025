"""The four libraries side by side: one row per aspect, one column per library.

Every object is the library's own (rendered by treescope) and every piece of code is read
from this package, so the view shows what each library's model and optimizer state *are*
and cannot drift from the code that ran.
"""

from __future__ import annotations

import dataclasses
import html
import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxlinear import _device_layout, _layout, visualize
from jaxlinear._registry import TITLES, get_library

# The code a reader should compare: the model class, the textbook step, and how the library
# splits its training state for the driver's fast and fused paths.
SOURCE_NAMES = {
    "linen": ("LinearRegression", "_train_step", "split", "state_step"),
    "nnx": ("LinearRegression", "_train_step", "split", "state_step"),
    "equinox": ("LinearRegression", "_train_step", "split", "state_step"),
    "penzai": ("LinearRegression", "loss_fn", "make_trainer", "split", "state_step"),
}

# How a batch goes through the model: `predict` and what it calls.
CALL_NAMES = {
    "linen": ("predict",),
    "nnx": ("predict",),
    "equinox": ("predict",),
    "penzai": ("predict", "_named"),
}

# Where each library keeps the optimizer's state, as the caption over its rendering.
OPTIMIZER_CAPTIONS = {
    "linen": "the `TrainState`: step, params, the optax transformation `tx` and its `opt_state`",
    "nnx": "the `nnx.Optimizer` (`training[1]`): its `opt_state` holds the optax state for "
    "the model's `nnx.Param`s; `step` counts updates",
    "equinox": "the `Training` module: the model, the optax `opt_state` beside it, and the "
    "optimizer as a static field",
    "penzai": "`trainer.state.value.opt_state`: the optax state inside the "
    "`StatefulTrainer`'s `StateVariable`, keyed like the `pz.Parameter` values",
}


def parameters(library: str, model: Any) -> Any:
    """The library's own view of a model's parameters, for rendering as arrays."""
    if library == "linen":
        return model.variables
    if library == "nnx":
        from flax import nnx

        return nnx.state(model, nnx.Param)
    if library == "equinox":
        import equinox as eqx

        return eqx.filter(model, eqx.is_inexact_array)
    if library == "penzai":
        from penzai import pz

        _, values = pz.unbind_params(model, freeze=True)
        return {value.label: value.value for value in values}  # NamedArrays: axes by name
    raise ValueError(f"unknown library {library!r}")


def optimizer_state(library: str, training: Any) -> Any:
    """Where the library's training object keeps the optimizer state (see
    `OPTIMIZER_CAPTIONS`)."""
    if library == "nnx":
        return training[1]
    if library == "penzai":
        return training.state.value.opt_state
    return training  # linen's TrainState, equinox's Training module


def _sources(library: str, names: Sequence[str]) -> list[str]:
    module = get_library(library).module
    return [inspect.getsource(getattr(module, name)) for name in names]


def source_code(library: str) -> str:
    """The model class and train steps of `library`, as written in this package."""
    module = get_library(library).module
    pieces = _sources(library, SOURCE_NAMES[library])
    # The textbook step is jitted where it is defined (`train_step = nnx.jit(_train_step)`);
    # that line says which transform each library uses, so it follows the function.
    jit_line = re.search(r"^train_step = .+$", inspect.getsource(module), re.MULTILINE)
    if jit_line:
        index = SOURCE_NAMES[library].index("_train_step")
        pieces[index] = pieces[index] + "\n\n" + jit_line.group(0) + "\n"
    return "\n\n".join(pieces)


def call_code(library: str) -> str:
    """How `library`'s model is called on a batch: its `predict` and helpers."""
    return "\n\n".join(_sources(library, CALL_NAMES[library]))


@dataclasses.dataclass(frozen=True)
class ParameterArray:
    """One parameter array as the library stores it, with its axes named.

    Attributes:
      name: how a user of the library reaches it (`variables['params']['dense']['kernel']`).
      values: `[rows, columns]` float64 (a 1-D array is one row).
      rows, columns: what each axis indexes: `"features"`, `"targets"` or `""` (one row).
      axis_names: the library's names of the two axes, e.g. `("axis 0", "axis 1")` or
        penzai's `("features", "features_out")`.
    """

    name: str
    values: np.ndarray
    rows: str
    columns: str
    axis_names: tuple[str, str]


def parameter_arrays(library: str, model: Any) -> list[ParameterArray]:
    """Each parameter of `model` in its library's layout, its axes matched to the features
    and targets by comparing values with the canonical `W: [in, out]`, `b: [out]`.

    (When `in == out` and W is symmetric, both readings of W are the same numbers.)
    """
    import jax
    from penzai import pz

    canonical = get_library(library).module.to_canonical(model)
    weight, bias = np.asarray(canonical.weight), np.asarray(canonical.bias)
    found = []
    leaves = jax.tree.leaves_with_path(
        parameters(library, model), is_leaf=lambda v: isinstance(v, pz.nx.NamedArray)
    )
    for path, leaf in leaves:
        if isinstance(leaf, pz.nx.NamedArray):
            axis_names = tuple(leaf.named_shape)
            values = np.asarray(leaf.unwrap(*axis_names))
        else:
            values = np.asarray(leaf)
            axis_names = tuple(f"axis {i}" for i in range(values.ndim))
        if values.ndim == 1:
            values, axis_names = values[None, :], ("", *axis_names)
            rows, columns = "", "targets" if values.shape[1] == bias.shape[0] else ""
        elif values.shape == weight.shape and np.array_equal(values, weight):
            rows, columns = "features", "targets"
        elif values.shape == weight.T.shape and np.array_equal(values, weight.T):
            rows, columns = "targets", "features"
        else:
            rows, columns = "", ""
        found.append(
            ParameterArray(_parameter_name(library, path), values, rows, columns, axis_names)
        )
    # The weights first, then the biases: the order a reader looks for them in.
    return sorted(found, key=lambda array: array.rows == "")


def _parameter_name(library: str, path) -> str:
    import jax

    keys = jax.tree_util.keystr(path)
    if library == "linen":
        return f"variables{keys}"
    if library == "penzai":
        return f"Parameter {keys[1:-1]}"  # its label
    # nnx State and equinox modules: attribute access, as users write it.
    attributes = re.sub(r"\['(\w+)'\]", r".\1", keys).removesuffix(".value")
    return f"model{attributes}"


def parameter_heatmaps(
    arrays: Sequence[ParameterArray],
    feature_names: Sequence[str],
    target_names: Sequence[str],
    *,
    scale: float,
) -> str:
    """Each parameter array as a labelled heatmap under its name and shape."""
    labels = {"features": list(feature_names), "targets": list(target_names)}
    parts = []
    for array in arrays:
        n_rows, n_columns = array.values.shape
        row_labels = labels.get(array.rows) or [str(i) for i in range(n_rows)]
        column_labels = labels.get(array.columns) or [str(i) for i in range(n_columns)]
        if array.rows == "":
            row_labels = ["bias" if array.columns == "targets" else "0"]
        shape = " \u00d7 ".join(str(n) for n in (array.values.shape if array.rows else [n_columns]))
        kinds = (array.rows, array.columns)
        axes = [
            f"{name}: {kind}" for name, kind in zip(array.axis_names, kinds, strict=True) if kind
        ]
        reading = "{row} → {column}" if array.rows == "features" else "{column} → {row}"
        if array.rows == "":
            reading = "{column}"
        parts.append(
            f'<p class="jl-caption"><code>{html.escape(array.name)}</code> [{shape}]'
            + (f" — {html.escape(', '.join(axes))}" if axes else "")
            + "</p>"
            + _layout.heatmap(
                array.values, row_labels, column_labels, scale=scale, describe=reading
            )
        )
    return "".join(parts)


# Trees are laid out for a column of the four (about 320 px of 12 px monospace): nodes
# whose one-line form is longer unfold, up to about 50 lines; longer lines wrap.
LINE_WIDTH, MAX_LINES = 40, 50


def _tree(obj: Any) -> str:
    return visualize.render_fragment(obj, line_width=LINE_WIDTH, max_lines=MAX_LINES)


def _code(text: str) -> str:
    return visualize.render_code(text)


def side_by_side_rows(
    models: Mapping[str, Any],
    trainings: Mapping[str, Any] | None,
    feature_names: Sequence[str],
    target_names: Sequence[str],
    *,
    model_label: str = "model",
    state_label: str = "after training",
    batches: _device_layout.Batches | None = None,
) -> list[_layout.Row]:
    """The rows of the side-by-side view for `models` (library -> its model).

    Args:
      models: each library's model, in column order.
      trainings: each library's training object (`FitResult.training` or a fresh
        `init_training`), for the optimizer-state row; None leaves the row out.
      feature_names, target_names: the data's names, to label the parameters.
      model_label: how the model row calls the models ("trained model", ...).
      state_label: when the optimizer state was taken ("after training", ...).
      batches: the run's batches, drawn in the layout row that a run over several devices
        gets (`_device_layout.layout_row`, from `trainings`).
    """
    arrays = {name: parameter_arrays(name, model) for name, model in models.items()}
    largest = max(
        (float(np.max(np.abs(a.values))) for found in arrays.values() for a in found),
        default=0.0,
    )
    scale = largest or 1.0
    rows = [
        _layout.Row(
            f"The {model_label}",
            {name: _tree(model) for name, model in models.items()},
            note="Each library's own object, rendered by treescope. Click ▶ to unfold a "
            "node; an array unfolds into a heatmap.",
            anchor="row-model",
        ),
        _layout.Row(
            "Parameters",
            {
                name: parameter_heatmaps(found, feature_names, target_names, scale=scale)
                for name, found in arrays.items()
            },
            note="Every parameter array as the library stores it (its name, layout and "
            "axis names), one cell per value, labelled with the features and targets; "
            "hover over a cell for its value. One colour scale for all: " + _layout.legend(scale),
            anchor="row-parameters",
        ),
    ]
    if trainings is not None:
        rows.append(
            _layout.Row(
                "Optimizer state",
                {
                    name: f'<p class="jl-caption">{_layout.code_spans(OPTIMIZER_CAPTIONS[name])}'
                    f"</p>{_tree(optimizer_state(name, training))}"
                    for name, training in trainings.items()
                },
                note="Where each library keeps the optimizer's state (with adam: its first "
                "and second moments <code>mu</code> and <code>nu</code>, and step counts), "
                f"{html.escape(state_label)}.",
                anchor="row-optimizer-state",
            )
        )
        layout = _device_layout.layout_row(trainings, batches)
        if layout is not None:
            rows.append(layout)
    rows += [
        _layout.Row(
            "How the model is called",
            {name: _code(call_code(name)) for name in models},
            note="<code>predict</code> in each library module: "
            "<code>x: [batch, in_features]</code> in, <code>[batch, out_features]</code> out.",
            anchor="row-call",
        ),
        _layout.Row(
            "The train step",
            {name: _code(source_code(name)) for name in models},
            note="The model class, the textbook train step, and the split of the training "
            "state that the driver's fast and fused paths compile, as written in this "
            "package.",
            anchor="row-source",
        ),
    ]
    return rows


def side_by_side_html(
    models: Mapping[str, Any],
    trainings: Mapping[str, Any] | None,
    feature_names: Sequence[str],
    target_names: Sequence[str],
    **options: Any,
) -> str:
    """`side_by_side_rows` laid out in columns (needs `_layout.CSS`)."""
    rows = side_by_side_rows(models, trainings, feature_names, target_names, **options)
    return _layout.side_by_side(rows, {name: TITLES[name] for name in models})


def fresh_trainings(models: Mapping[str, Any], config=None) -> dict[str, Any]:
    """Each model's training object with a fresh optimizer (`TrainConfig()` by default):
    what `fit` starts from."""
    from jaxlinear._config import TrainConfig
    from jaxlinear.training import make_optimizer

    optimizer = make_optimizer(config or TrainConfig(), 1)
    return {
        name: get_library(name).module.init_training(model, optimizer)
        for name, model in models.items()
    }
