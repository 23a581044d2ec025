"""What the command line prints: the results table, weights, and warnings (rich, on demand)."""

from __future__ import annotations

import math


def print_table(comparison) -> None:
    from rich.console import Console
    from rich.table import Table

    dataset = comparison.dataset.summary()
    table = Table(
        title=f"{dataset['name']}: {dataset['n_train']} train / {dataset['n_test']} test rows, "
        f"{dataset['in_features']} -> {dataset['out_features']}"
    )
    for column in (
        "library",
        "train MSE",
        "test MSE",
        "test R²",
        "max |W - W*|",
        "compile s",
        "ms/step",
    ):
        table.add_column(column, justify="left" if column == "library" else "right")
    exact = comparison.exact
    table.add_row(
        "exact",
        _fmt(exact["train_mse"]),
        _fmt(exact["test_mse"]),
        _fmt(exact["test_r2"], 6),
        "0",
        "-",
        "-",
        style="bold",
    )
    for name, run in comparison.runs.items():
        m = run.metrics
        table.add_row(
            name,
            _fmt(m["train_mse"]),
            _fmt(m["test_mse"]),
            _fmt(m["test_r2"], 6),
            f"{m['max_abs_weight_error']:.2e}",
            f"{m['compile_seconds']:.2f}",
            _fmt(m["ms_per_step"], 3),
        )
    Console(width=120).print(table)


def print_weights(comparison) -> None:
    """Trained and exact weights on the original scale of the data, one row per feature."""
    from rich.console import Console
    from rich.table import Table

    weights = comparison.weights_original_scale()
    (library,) = comparison.runs
    table = Table(title=f"{library} weights on the original scale (exact in brackets)")
    table.add_column("feature")
    for target in weights["target_names"]:
        table.add_column(target, justify="right")
    trained, exact = weights[library], weights["exact"]
    rows = [*zip(weights["feature_names"], trained["W"], exact["W"], strict=True)]
    rows.append(("(bias)", trained["b"], exact["b"]))
    for feature, values, exact_values in rows:
        cells = [f"{v:.6g} [{e:.6g}]" for v, e in zip(values, exact_values, strict=True)]
        table.add_row(feature, *cells)
    Console(width=120).print(table)


def _fmt(value: float, digits: int = 6) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}g}"


def warn_if_not_converged(comparison) -> None:
    """One line on stderr naming the libraries that ended short of the exact optimum."""
    import sys

    from jaxlinear._compare import CONVERGED_ATOL, CONVERGED_RTOL

    short = {
        name: run.metrics["objective_gap"]
        for name, run in comparison.runs.items()
        if not run.metrics["converged"]
    }
    if short:
        gaps = ", ".join(f"{name} by {gap:.3g}" for name, gap in short.items())
        print(
            f"jaxlinear: warning: not converged: the training objective is above the exact "
            f"optimum ({comparison.exact['train_loss']:.6g}) for {gaps}, more than "
            f"{CONVERGED_RTOL:g} relative + {CONVERGED_ATOL:g}; more --epochs or another --lr "
            "would get closer",
            file=sys.stderr,
        )
