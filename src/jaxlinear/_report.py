"""The HTML report of `jaxlinear compare --report` and the page of `jaxlinear show`.

Every model is rendered by treescope as the library's own object, so the page shows what each
library's model *is*: a module plus a separate params pytree (linen), a module holding its
state (nnx), a module that is the pytree (equinox), layers with named-axis parameter
variables (penzai). Source code is read from this package, so the page never drifts from it.
"""

from __future__ import annotations

import html
import inspect
import math
import re
import shlex
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxlinear import visualize
from jaxlinear._compare import Comparison
from jaxlinear._registry import LIBRARY_NAMES, get_library

TITLES = {"linen": "flax.linen", "nnx": "flax.nnx", "equinox": "equinox", "penzai": "penzai"}

# The code a reader should compare: the model class, the textbook step, and how the library
# splits its training state for the driver's fast and fused paths.
SOURCE_NAMES = {
    "linen": ("LinearRegression", "_train_step", "split", "state_step"),
    "nnx": ("LinearRegression", "_train_step", "split", "state_step"),
    "equinox": ("LinearRegression", "_train_step", "split", "state_step"),
    "penzai": ("LinearRegression", "loss_fn", "make_trainer", "split", "state_step"),
}

# Rows of the side-by-side table: (aspect, {library: how}), written for the pinned releases.
IDIOMS: tuple[tuple[str, dict[str, str]], ...] = (
    (
        "where parameters live",
        {
            "linen": "a separate pytree, `variables = model.init(key, x)`",
            "nnx": "inside the module, as `nnx.Param` attributes",
            "equinox": "the module is the pytree of its arrays",
            "penzai": "`pz.Parameter` variables inside an immutable pytree of layers, by label",
        },
    ),
    (
        "how it is created",
        {
            "linen": "`LinearRegression(out_features)`, then `init` with a dummy batch",
            "nnx": "`LinearRegression(in, out, rngs=nnx.Rngs(key))`",
            "equinox": "`LinearRegression(in, out, key=key)`",
            "penzai": "`LinearRegression.from_config(name, init_base_rng, [in, out])`",
        },
    ),
    (
        "how it is called",
        {
            "linen": "`model.apply(variables, x)`",
            "nnx": "`model(x)`",
            "equinox": "`model(x)` on ONE example",
            "penzai": "`model(x)` on a `pz.nx.NamedArray`",
        },
    ),
    (
        "how a batch is handled",
        {
            "linen": "leading axis of `x`",
            "nnx": "leading axis of `x`",
            "equinox": "`jax.vmap(model)(x)`",
            "penzai": "a named `batch` axis that every layer broadcasts over",
        },
    ),
    (
        "weight layout",
        {
            "linen": "`kernel: [in, out]`",
            "nnx": "`kernel: [in, out]`",
            "equinox": "`weight: [out, in]`",
            "penzai": "named axes `features` x `features_out`",
        },
    ),
    (
        "how an update is applied",
        {
            "linen": "`state.apply_gradients(grads=grads)` returns a new `TrainState`",
            "nnx": "`optimizer.update(model, grads)` mutates the model in place (`nnx.jit`)",
            "equinox": "`eqx.apply_updates(model, updates)` returns a new model (`eqx.filter_jit`)",
            "penzai": "`StatefulTrainer.step` writes new values into the `pz.Parameter`s",
        },
    ),
    (
        "fused epoch (`lax.scan`)",
        {
            "linen": "scan over the `TrainState`",
            "nnx": "`nnx.split` once, `nnx.merge` inside the scan",
            "equinox": "`eqx.partition` once, `eqx.combine` inside",
            "penzai": "scan over the unbound parameter values, `pz.bind_variables` inside",
        },
    ),
    (
        "how it is saved",
        {
            "linen": "the `TrainState` (params, `opt_state`, step) with orbax, restored into "
            "`jax.eval_shape` of one",
            "nnx": "`nnx.split` state of model and `nnx.Optimizer` with orbax, restored into "
            "`nnx.eval_shape`",
            "equinox": "`eqx.tree_serialise_leaves` of a module holding model and `opt_state`, "
            "read back into `eqx.filter_eval_shape` of one",
            "penzai": "the values from `pz.unbind_params(model, freeze=True)` and the optax "
            "state with orbax, keyed by parameter label",
        },
    ),
)


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


def source_code(library: str) -> str:
    """The model class and train steps of `library`, as written in this package."""
    module = get_library(library).module
    pieces = [inspect.getsource(getattr(module, name)) for name in SOURCE_NAMES[library]]
    # The textbook step is jitted where it is defined (`train_step = nnx.jit(_train_step)`);
    # that line says which transform each library uses, so it follows the function.
    jit_line = re.search(r"^train_step = .+$", inspect.getsource(module), re.MULTILINE)
    if jit_line:
        index = SOURCE_NAMES[library].index("_train_step")
        pieces[index] = pieces[index] + "\n\n" + jit_line.group(0) + "\n"
    return "\n\n".join(pieces)


def library_sections(
    library: str, models: Sequence[tuple[str, Any]], *, with_source: bool = True
) -> list[visualize.Section]:
    """Sections for one library: each `(label, model)` as a treescope tree and as arrays."""
    title = TITLES[library]
    sections = []
    for label, model in models:
        body = (
            f"<h3>model</h3>{visualize.render_fragment(model)}"
            f"<h3>parameters as arrays</h3>"
            f"{visualize.render_fragment(parameters(library, model), expand_depth=4)}"
        )
        sections.append(
            visualize.Section(
                f"{title}: {label}", body, anchor=f"{library}-{label}".replace(" ", "-")
            )
        )
    if with_source:
        code = visualize.render_code(source_code(library))
        sections.append(visualize.Section(f"{title}: source", code, anchor=f"{library}-source"))
    return sections


def idiom_table_html(libraries: Sequence[str] = LIBRARY_NAMES) -> str:
    """The side-by-side table of how the libraries express the same thing."""
    head = "".join(f"<th>{TITLES[name]}</th>" for name in libraries)
    rows = "".join(
        f"<tr><th>{html.escape(aspect)}</th>"
        + "".join(f"<td>{_code_spans(how[name])}</td>" for name in libraries)
        + "</tr>"
        for aspect, how in IDIOMS
    )
    return f'<table class="grid"><tr><th></th>{head}</tr>{rows}</table>'


def idiom_table_markdown(libraries: Sequence[str] = LIBRARY_NAMES) -> str:
    """The same table in Markdown, as it appears in README.md (a test keeps them equal)."""
    lines = [
        "| | " + " | ".join(TITLES[name] for name in libraries) + " |",
        "|---|" + "---|" * len(libraries),
    ]
    lines += [
        f"| {aspect} | " + " | ".join(how[name] for name in libraries) + " |"
        for aspect, how in IDIOMS
    ]
    return "\n".join(lines)


def metrics_table_html(comparison: Comparison) -> str:
    columns = [
        ("train_mse", "train MSE"),
        ("test_mse", "test MSE"),
        ("test_r2", "test R²"),
        ("max_abs_weight_error", "max |W - W*|"),
        ("compile_seconds", "compile s"),
        ("ms_per_step", "ms/step"),
    ]
    head = "".join(f"<th>{label}</th>" for _, label in columns)
    rows = [("exact", comparison.exact | {"max_abs_weight_error": 0.0})]
    rows += [(TITLES[name], run.metrics) for name, run in comparison.runs.items()]
    body = "".join(
        f"<tr><th>{name}</th>"
        + "".join(f"<td>{_number(metrics.get(key, math.nan))}</td>" for key, _ in columns)
        + "</tr>"
        for name, metrics in rows
    )
    return f'<table class="grid"><tr><th>library</th>{head}</tr>{body}</table>'


def loss_figure(comparison: Comparison):
    """Training loss of every library per step, and its gap to the exact optimum (log scale)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4))
    curves, gaps = figure.subplots(1, 2)
    optimum = comparison.exact["train_loss"]
    styles = ["-", "--", "-.", ":"]
    for (name, run), style in zip(comparison.runs.items(), styles * 2, strict=False):
        steps = np.arange(1, len(run.fit.losses) + 1)
        curves.plot(steps, run.fit.losses, style, label=TITLES[name], linewidth=1.5)
        # Below float32's resolution of the loss the gap is rounding noise: clip it there.
        floor = np.finfo(np.float32).eps * optimum
        gaps.plot(steps, np.maximum(run.fit.losses - optimum, floor), style, label=TITLES[name])
    curves.axhline(optimum, color="black", linewidth=0.8, label="exact optimum")
    curves.set(xlabel="step", ylabel="training loss", yscale="log", title="loss (batch)")
    gaps.set(xlabel="step", ylabel="loss - optimum", yscale="log", title="gap to the optimum")
    curves.legend()
    gaps.legend()
    figure.tight_layout()
    return figure


def prediction_figure(comparison: Comparison):
    """Predicted against true test targets, one panel per output (at most 4)."""
    from matplotlib.figure import Figure

    dataset = comparison.dataset
    truth = dataset.scaling.targets_to_original(dataset.y_test)
    exact = dataset.scaling.targets_to_original(comparison.exact_weights.predict(dataset.x_test))
    outputs = min(dataset.out_features, 4)
    figure = Figure(figsize=(4.2 * outputs, 4))
    axes = np.atleast_1d(figure.subplots(1, outputs))
    markers = ["o", "s", "^", "D"]
    for k, ax in enumerate(axes):
        for i, (name, run) in enumerate(comparison.runs.items()):
            # Hollow markers of different shapes: the libraries' points coincide, so each
            # must stay visible on top of the others.
            ax.scatter(
                truth[:, k],
                run.test_predictions[:, k],
                marker=markers[i % len(markers)],
                s=28,
                facecolors="none",
                edgecolors=f"C{i}",
                label=TITLES[name],
            )
        ax.scatter(truth[:, k], exact[:, k], marker=".", color="black", s=8, label="exact")
        low, high = float(truth[:, k].min()), float(truth[:, k].max())
        ax.plot([low, high], [low, high], color="gray", linewidth=0.8)
        ax.set(xlabel=f"true {dataset.target_names[k]}", ylabel="predicted", title="test set")
    axes[0].legend(fontsize="small")
    figure.tight_layout()
    return figure


def comparison_report(comparison: Comparison, *, command: Sequence[str] | None = None) -> str:
    """The full self-contained HTML report of a comparison."""
    from dataclasses import asdict

    dataset = comparison.dataset.summary()
    settings = asdict(comparison.config)
    reproduce = shlex.join(command) if command else "jaxlinear compare --report"
    intro = (
        f"<p>Data <b>{html.escape(dataset['name'])}</b>: {dataset['n_train']} training and "
        f"{dataset['n_test']} test rows, {dataset['in_features']} features -> "
        f"{dataset['out_features']} target(s), standardised with training statistics.</p>"
        f"<p>Settings: {_settings_html(settings)}. Every library started from the same "
        "weights and saw the same batches.</p>"
        f"<p>Reproduce with <code>{html.escape(reproduce)}</code>.</p>"
    )
    sections = [
        visualize.Section("Results", metrics_table_html(comparison), anchor="results"),
        visualize.Section(
            "Loss curves",
            visualize.render_figure(loss_figure(comparison)),
            anchor="loss-curves",
        ),
        visualize.Section(
            "Predicted vs true",
            visualize.render_figure(prediction_figure(comparison)),
            anchor="predictions",
        ),
        visualize.Section("How the libraries differ", idiom_table_html(), anchor="idioms"),
    ]
    for name, run in comparison.runs.items():
        sections += library_sections(
            name, [("before training", run.initial_model), ("after training", run.trained_model)]
        )
    return visualize.render_page(
        "jaxlinear: one linear model in four JAX libraries",
        sections,
        intro_html=intro,
        extra_css=_TABLE_CSS,
    )


def model_page(library: str, model: Any, *, description: str) -> str:
    """A page showing one model of `library` (for `jaxlinear show`)."""
    sections = library_sections(library, [("model", model)])
    intro = f"<p>{html.escape(description)}</p>"
    return visualize.render_page(
        f"jaxlinear: {TITLES[library]} model", sections, intro_html=intro, extra_css=_TABLE_CSS
    )


def optimizer_state(library: str, training: Any) -> Any:
    """Where the optimizer state lives in the library's own training object."""
    if library == "linen":
        return training.opt_state  # a field of the TrainState
    if library == "nnx":
        return training[1].opt_state  # nnx.Optimizer's OptState variables
    if library == "equinox":
        return training.opt_state  # a field of the Training module
    if library == "penzai":
        return training.state.value.opt_state  # in the StatefulTrainer's state variable
    raise ValueError(f"unknown library {library!r}")


def checkpoint_page(checkpoint) -> str:
    """A page showing a loaded `jaxlinear.checkpoint.Checkpoint`: the model in the library it
    was loaded into, and the training state its native files restore, optimizer included."""
    library, trained_in = checkpoint.library, checkpoint.trained_in
    metadata = checkpoint.metadata
    sections = library_sections(library, [("model", checkpoint.model)], with_source=False)
    if checkpoint.training is None:
        what = "Only model.safetensors was saved (no native files, no optimizer state)."
    else:
        native = metadata["native"]["format"]
        what = (
            f"Epoch {metadata['epoch']} of {metadata['settings']['epochs']} (step "
            f"{metadata['step']}). Its native files ({native}) restore the training state "
            f"shown below in {TITLES[trained_in]}, optimizer state included."
        )
        sections += [
            visualize.Section(
                f"{TITLES[trained_in]}: training state restored from {NATIVE_LABEL}",
                visualize.render_fragment(checkpoint.training, expand_depth=3),
                anchor="native-training-state",
            ),
            visualize.Section(
                f"{TITLES[trained_in]}: optimizer state",
                visualize.render_fragment(
                    optimizer_state(trained_in, checkpoint.training), expand_depth=5
                ),
                anchor="optimizer-state",
            ),
        ]
    dataset = (metadata.get("dataset") or {}).get("name") or "unknown data"
    description = (
        f"Trained in {trained_in} on {dataset} (saved in {checkpoint.path}), opened in "
        f"{library}: W [{checkpoint.weights.in_features}, {checkpoint.weights.out_features}] "
        f"on the standardised scale. {what}"
    )
    intro = f"<p>{html.escape(description)}</p>"
    return visualize.render_page(
        f"jaxlinear: {TITLES[library]} model from a checkpoint",
        sections,
        intro_html=intro,
        extra_css=_TABLE_CSS,
    )


NATIVE_LABEL = "native/"

_TABLE_CSS = """
table.grid { border-collapse: collapse; margin: 0.5rem 0; }
table.grid th, table.grid td { border: 1px solid #ccc; padding: 0.3rem 0.6rem;
                               text-align: left; vertical-align: top; }
table.grid td { font-variant-numeric: tabular-nums; }
"""


def _code_spans(text: str) -> str:
    """Markdown-style `code` spans to <code> elements; everything else escaped."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


def _settings_html(settings: dict) -> str:
    return ", ".join(
        f"{key}=<code>{html.escape(str(value))}</code>" for key, value in settings.items()
    )


def _number(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.6g}"
