"""The HTML pages: the report of `jaxlinear compare --report` and the page of `jaxlinear show`.

Both are built from the same side-by-side view (`_views`): one column per library, one row
per aspect (the model, its parameters, its optimizer state, how it is called, its train
step). The report adds the results, the weights against the exact solution, the loss curves,
what XLA compiled (`_xla`, `_sections`) and the idiom table below.
"""

from __future__ import annotations

import html
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from jaxlinear import _device_layout, _layout, _sections, _views, _xla, visualize
from jaxlinear._compare import Comparison
from jaxlinear._errors import ConfigError
from jaxlinear._registry import LIBRARY_NAMES, TITLES
from jaxlinear._views import parameters as parameters
from jaxlinear._views import source_code as source_code

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


def idiom_table_html(libraries: Sequence[str] = LIBRARY_NAMES) -> str:
    """The table of how the libraries express the same thing (fixed layout: it wraps)."""
    head = "".join(f"<th>{TITLES[name]}</th>" for name in libraries)
    rows = "".join(
        f"<tr><th>{_layout.code_spans(aspect)}</th>"
        + "".join(f"<td>{_layout.code_spans(how[name])}</td>" for name in libraries)
        + "</tr>"
        for aspect, how in IDIOMS
    )
    return f'<table class="jl-grid jl-fixed jl-idioms"><tr><th></th>{head}</tr>{rows}</table>'


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


def comparison_report(comparison: Comparison, *, command: Sequence[str] | None = None) -> str:
    """The full self-contained HTML report of a comparison."""
    from dataclasses import asdict

    dataset = comparison.dataset
    summary = dataset.summary()
    reproduce = shlex.join(command) if command else "jaxlinear compare --report"
    intro = (
        f"<p>Data <b>{html.escape(summary['name'])}</b>: {summary['n_train']} training and "
        f"{summary['n_test']} test rows, {summary['in_features']} features -> "
        f"{summary['out_features']} target(s), standardised with training statistics.</p>"
        f"<p>Settings: {_settings_html(asdict(comparison.config))}. Every library started "
        "from the same weights and saw the same batches.</p>"
        f"<p>Reproduce with <code>{html.escape(reproduce)}</code>.</p>"
    )
    libraries = list(comparison.runs)
    side_by_side = _views.side_by_side_html(
        {name: run.trained_model for name, run in comparison.runs.items()},
        {name: run.fit.training for name, run in comparison.runs.items()},
        dataset.feature_names,
        dataset.target_names,
        model_label="trained model",
        batches=_device_layout.Batches(len(dataset.x_train), comparison.config.batch_size),
    )
    differences = (
        _sections.weights_against_exact(comparison)
        + "<h3>Loss and its gap to the optimum</h3>"
        + visualize.render_figure(_sections.loss_figure(comparison))
        + "<h3>Predicted against true</h3>"
        + visualize.render_figure(_sections.prediction_figure(comparison))
    )
    sections = [
        visualize.Section("Results", _sections.results_table(comparison), anchor="results"),
        visualize.Section(
            f"The {_count(libraries)} side by side", side_by_side, anchor="side-by-side"
        ),
        visualize.Section("Differences at a glance", differences, anchor="differences"),
        visualize.Section(
            "What XLA sees",
            _sections.xla_section(_xla.compiled_steps(comparison)),
            anchor="xla",
        ),
        visualize.Section(
            "How the libraries differ, in words", idiom_table_html(libraries), anchor="idioms"
        ),
    ]
    return visualize.render_page(
        "jaxlinear: one linear model in four JAX libraries",
        sections,
        intro_html=intro,
        extra_css=PAGE_CSS,
    )


def models_page(
    models: Mapping[str, Any],
    *,
    description: str,
    trainings: Mapping[str, Any] | None = None,
    state_label: str = "as a training run starts (adam with the default settings)",
    feature_names: Sequence[str] | None = None,
    target_names: Sequence[str] | None = None,
    batches: _device_layout.Batches | None = None,
) -> str:
    """A page showing `models` (library -> model) side by side (for `jaxlinear show`), each
    with its training object's optimizer state (`trainings`; by default the state a training
    run would start from) and, when those are placed on several devices, their layout with
    one of `batches`."""
    feature_names, target_names = default_names(models, feature_names, target_names)
    body = _views.side_by_side_html(
        models,
        trainings if trainings is not None else _views.fresh_trainings(models),
        feature_names,
        target_names,
        state_label=state_label,
        batches=batches,
    )
    libraries = list(models)
    title = (
        f"jaxlinear: {TITLES[libraries[0]]} model"
        if len(libraries) == 1
        else f"jaxlinear: one model in {_count(libraries)}"
    )
    return visualize.render_page(
        title,
        [visualize.Section("Side by side", body, anchor="side-by-side")],
        intro_html=f"<p>{html.escape(description)}</p>",
        extra_css=PAGE_CSS,
    )


def show_page(
    libraries: Sequence[str],
    *,
    checkpoint=None,
    in_features: int = 3,
    out_features: int = 1,
    seed: int = 0,
    devices: int = 1,
) -> str:
    """The page of `jaxlinear show`: `checkpoint` (a `jaxlinear.checkpoint.Checkpoint`)
    opened in each of `libraries`, or else a fresh `in_features -> out_features` model of
    each, made with the library's own initialisers from `seed`.

    A checkpoint's own library shows the training state its native files restore, optimizer
    state included; the others hold the same weights with a fresh optimizer (optimizer state
    does not move between libraries).

    With `devices` > 1 every library's `shard` places its training state on the first
    `devices` local devices (`training.data_mesh`), as a data-parallel run starts, and the
    page draws the layout: the parameters, and one of the saved run's batches (a
    checkpoint) or an example batch of 4 rows per device.

    Raises:
      ConfigError: `devices` out of range, or not dividing the saved run's batch size.
    """
    from jaxlinear._random import jax_key
    from jaxlinear._registry import get_library

    opened = ", ".join(libraries)
    if checkpoint is None:
        models = {
            name: get_library(name).create(in_features, out_features, key=jax_key(seed))
            for name in libraries
        }
        kind = (
            f"A freshly initialised {libraries[0]} model"
            if len(libraries) == 1
            else f"Freshly initialised models in {opened}"
        )
        description = (
            f"{kind}, {in_features} -> {out_features}, with each library's default "
            f"initialisers (seed {seed})."
        )
        example = _device_layout.Batches(
            4 * devices, None, label=f"an example batch of {4 * devices} rows (4 per device)"
        )
        models, trainings = _on_devices(models, _views.fresh_trainings(models), devices)
        return models_page(models, description=description, trainings=trainings, batches=example)
    trained_in, metadata, weights = checkpoint.trained_in, checkpoint.metadata, checkpoint.weights
    models = {name: get_library(name).from_canonical(weights) for name in libraries}
    trainings = _views.fresh_trainings(models)
    if checkpoint.training is None:
        restored = "Only model.safetensors was saved: no native files, no optimizer state."
        state_label = "as a training run starts (no optimizer state was saved)"
    else:
        if trained_in in models:
            models[trained_in] = get_library(trained_in).module.model_of(checkpoint.training)
            trainings[trained_in] = checkpoint.training
        restored = (
            f"Epoch {metadata['epoch']} of {metadata['settings']['epochs']} (step "
            f"{metadata['step']}). {TITLES[trained_in]}'s native files "
            f"({metadata['native']['format']}) restore its training state, optimizer state "
            "included; any other library holds the same weights with a fresh optimizer."
        )
        state_label = (
            f"as restored from the checkpoint for {TITLES[trained_in]}, fresh for the others"
        )
    batch_size = metadata["settings"]["batch_size"]
    n_train = metadata["n_train"]
    saved_batches = _device_layout.Batches(n_train, batch_size)
    if devices > 1:
        from jaxlinear.training import check_batch_split

        try:
            check_batch_split(batch_size, n_train, devices)
        except ConfigError:
            raise ConfigError(
                "devices",
                f"must divide the saved run's batch size ({batch_size}) so each of its batches "
                f"splits evenly, got {devices}",
            ) from None
    models, trainings = _on_devices(models, trainings, devices)
    dataset = (metadata.get("dataset") or {}).get("name") or "unknown data"
    description = (
        f"Trained in {trained_in} on {dataset} (saved in {checkpoint.path}), opened in "
        f"{opened}: W [{weights.in_features}, {weights.out_features}] on the standardised "
        f"scale. {restored}"
    )
    return models_page(
        models,
        description=description,
        trainings=trainings,
        state_label=state_label,
        feature_names=checkpoint.scaling.feature_names,
        target_names=checkpoint.scaling.target_names,
        batches=saved_batches,
    )


def _on_devices(
    models: Mapping[str, Any], trainings: Mapping[str, Any], devices: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`models` and `trainings` as a data-parallel run over `devices` local devices starts:
    each training object placed by its library's own `shard`, each model taken from it.
    Unchanged for one device."""
    from jaxlinear._registry import get_library
    from jaxlinear.training import data_mesh

    mesh = data_mesh(devices)
    if mesh is None:
        return dict(models), dict(trainings)
    placed = {name: get_library(name).module.shard(trainings[name], mesh) for name in models}
    return {name: get_library(name).module.model_of(placed[name]) for name in models}, placed


def default_names(
    models: Mapping[str, Any],
    feature_names: Sequence[str] | None,
    target_names: Sequence[str] | None,
) -> tuple[list[str], list[str]]:
    """The given feature and target names, or `x0, x1, ...` and `y0, ...` as the data
    loader names unnamed columns."""
    from jaxlinear._registry import get_library

    name, model = next(iter(models.items()))
    weights = get_library(name).to_canonical(model)
    features = list(feature_names or [f"x{i}" for i in range(weights.in_features)])
    targets = list(target_names or [f"y{j}" for j in range(weights.out_features)])
    return features, targets


PAGE_CSS = (
    _layout.CSS
    + """
body { max-width: 100rem; }
body > p, nav { max-width: 72rem; }
img { max-width: 100%; height: auto; }
td.jl-differs { background: #fff3c4; }
"""
)


def _count(libraries: Sequence[str]) -> str:
    words = {1: "one library", 2: "two libraries", 3: "three libraries", 4: "four libraries"}
    return words.get(len(libraries), f"{len(libraries)} libraries")


def _settings_html(settings: dict) -> str:
    return ", ".join(
        f"{key}=<code>{html.escape(str(value))}</code>" for key, value in settings.items()
    )
