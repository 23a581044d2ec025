"""The sections of the comparison report that are about results: the metrics, what XLA
compiled, the weights against the exact solution, and the figures."""

from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np

from jaxlinear import _layout, _xla
from jaxlinear._compare import Comparison
from jaxlinear._registry import TITLES

# Results columns: (metric, heading, significant digits).
RESULT_COLUMNS = (
    ("train_mse", "train MSE", 6),
    ("test_mse", "test MSE", 6),
    ("test_r2", "test R²", 4),
    ("max_abs_weight_error", "max |W \u2212 W*|", 2),
    ("objective_gap", "objective \u2212 optimum", 2),
    ("compile_seconds", "compile s", 2),
    ("ms_per_step", "ms/step", 2),
)


def results_table(comparison: Comparison) -> str:
    """The metrics of the exact solution and of every library, rounded for reading."""
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in RESULT_COLUMNS)
    rows = [("exact", comparison.exact | {"max_abs_weight_error": 0.0, "objective_gap": 0.0})]
    rows += [(TITLES[name], run.metrics) for name, run in comparison.runs.items()]
    body = "".join(
        f"<tr><th>{html.escape(name)}</th>"
        + "".join(
            f'<td class="jl-number" title="{metrics.get(key, "")}">'
            f"{_layout.rounded(metrics.get(key), digits=digits)}</td>"
            for key, _, digits in RESULT_COLUMNS
        )
        + "</tr>"
        for name, metrics in rows
    )
    return (
        f'<div class="jl-wide"><table class="jl-grid"><tr><th>library</th>{head}</tr>'
        f"{body}</table></div>"
        "<p>MSE and R² on the original scale of the target; the weight error and the "
        "objective on the standardised scale the models are trained on. Hover over a "
        "number for all its digits.</p>"
    )


def weights_against_exact(comparison: Comparison) -> str:
    """Each library's trained W and b next to the exact solution's, with the differences
    coloured on one scale: one table per target."""
    dataset = comparison.dataset
    exact = comparison.exact_weights
    exact_table = np.vstack([exact.weight, exact.bias[None, :]])  # [in + 1, out]
    trained = {
        name: np.vstack([run.weights.weight, run.weights.bias[None, :]]).astype(np.float64)
        for name, run in comparison.runs.items()
    }
    gaps = {name: values - exact_table for name, values in trained.items()}
    gap_scale = max((float(np.max(np.abs(g))) for g in gaps.values()), default=0.0) or 1.0
    value_scale = float(np.max(np.abs(exact_table))) or 1.0
    row_names = [*dataset.feature_names, "bias"]
    head = "".join(f'<th colspan="2">{html.escape(TITLES[name])}</th>' for name in comparison.runs)
    sub_head = "<th>W</th><th>W \u2212 W*</th>" * len(comparison.runs)
    tables = []
    for k, target in enumerate(dataset.target_names):
        body = []
        for i, row_name in enumerate(row_names):
            cells = [_value_cell(exact_table[i, k], value_scale)]
            for name in comparison.runs:
                cells.append(_value_cell(trained[name][i, k], value_scale))
                cells.append(_value_cell(gaps[name][i, k], gap_scale, difference=True))
            body.append(f"<tr><th>{html.escape(row_name)}</th>{''.join(cells)}</tr>")
        largest = "".join(
            '<td></td><td class="jl-number">'
            f"{_layout.rounded(float(np.max(np.abs(g[:, k]))), digits=2)}</td>"
            for g in gaps.values()
        )
        body.append(f"<tr><th>max |W \u2212 W*|</th><td></td>{largest}</tr>")
        caption = f"<h3>target {html.escape(target)}</h3>" if dataset.out_features > 1 else ""
        tables.append(
            f'{caption}<div class="jl-wide"><table class="jl-grid jl-weights">'
            f'<thead><tr><th rowspan="2">feature</th><th rowspan="2">exact W*</th>{head}</tr>'
            f"<tr>{sub_head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
        )
    return (
        "<p>Trained weights on the standardised scale, next to the exact least-squares "
        "solution W* (float64), and their differences from it. Hover over a number for "
        "all its digits.</p><p>"
        + _layout.legend(value_scale, label="W, W*")
        + _layout.legend(gap_scale, label="W \u2212 W*")
        + "</p>"
        + "".join(tables)
    )


def _value_cell(value: float, scale: float, *, difference: bool = False) -> str:
    text = f"{value:+.1e}" if difference else _layout.rounded(float(value), digits=4)
    value = float(value)
    return (
        f'<td class="jl-number" title="{value:.9g}" style="background: '
        f'{_layout.colour(value, scale)}; color: {_layout.text_colour(value, scale)}">'
        f"{text}</td>"
    )


def xla_section(steps: Mapping[str, _xla.CompiledStep]) -> str:
    """The compiled steps side by side: cost, inputs, operation counts, the computed
    verdict on whether they are one program, and each program's HLO."""
    verdict = _xla.compare_programs(steps)
    names = list(steps)
    rows: list[tuple[str, list]] = [
        (key, [steps[n].cost[key] for n in names]) for key in _xla.COST_KEYS
    ]
    rows += [
        ("inputs", [len(steps[n].program.inputs) for n in names]),
        (
            "inputs read by nothing else",
            [len(steps[n].program.self_contained_inputs()) for n in names],
        ),
        ("instructions", [len(steps[n].program.instructions) for n in names]),
        ("computations", [len(steps[n].program.computations) for n in names]),
    ]
    counts = {n: steps[n].program.op_counts for n in names}
    opcodes = sorted(
        {op for c in counts.values() for op in c},
        key=lambda op: (-max(c[op] for c in counts.values()), op),
    )
    operation_rows = [(op, [counts[n][op] for n in names]) for op in opcodes]

    def table_rows(rows) -> str:
        out = []
        for label, values in rows:
            cells = "".join(
                f'<td class="jl-number{" jl-differs" if v != values[0] else ""}">'
                f"{_layout.rounded(v, digits=6)}</td>"
                for v in values
            )
            out.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
        return "".join(out)

    head = "".join(f"<th>{html.escape(TITLES[n])}</th>" for n in names)
    span = len(names) + 1
    table = (
        f'<div class="jl-wide"><table class="jl-grid jl-xla"><tr><th></th>{head}</tr>'
        f"{table_rows(rows)}"
        f'<tr><th colspan="{span}">operations in the optimized HLO (fusion bodies '
        f"included)</th></tr>{table_rows(operation_rows)}</table></div>"
    )
    statement = "".join(
        f"<p>{_layout.code_spans(sentence)}</p>" for sentence in verdict.statement(TITLES)
    )
    details = "".join(
        f'<details class="jl-hlo"><summary>{html.escape(TITLES[n])}: optimized HLO '
        f"({len(steps[n].program.instructions)} instructions, debug metadata left out)"
        f"</summary><pre>{html.escape(_xla.readable_hlo(steps[n].hlo))}</pre></details>"
        for n in names
    )
    verdict_class = "jl-same" if verdict.same else "jl-different"
    return (
        "<p>Each library's train step (<code>state_step</code> over the arrays of "
        "<code>split(training)</code>, as the driver's fast and fused paths run it) "
        "compiled by XLA for one batch: the compiler's cost analysis and the operations "
        "of the optimized program. Cells that differ from the first column are marked.</p>"
        f'{table}<div class="jl-statement {verdict_class}" id="xla-verdict">{statement}</div>'
        f"{details}"
    )


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
