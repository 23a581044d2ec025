"""The benchmark's results as rich tables, from the JSON-shaped dicts `run` builds."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

_WIDTH = 140  # wide enough for the large problem's 11 columns without wrapping


def print_report(result: dict, console: Console | None = None) -> None:
    """The full benchmark's tables: both problems, the other figures, and the goals."""
    console = console or Console(width=_WIDTH)
    for problem in ("small", "large"):
        console.print(problem_table(problem, result[problem]))
    console.print(figures_table(result))
    console.print(targets_table(result["targets"]))
    if not result["issue_sizes"]:
        console.print("(sizes differ from the defaults the goals are set for: they only inform)")
    console.print(_footer(result))


def print_startup_report(result: dict, console: Console | None = None) -> None:
    """`--startup`'s tables: the commands' times, and the goals."""
    console = console or Console(width=_WIDTH)
    console.print(startup_table(result["startup"]))
    console.print(targets_table(result["targets"], title="start-up goals"))
    console.print(_footer(result))


def print_sklearn_report(result: dict, console: Console | None = None) -> None:
    """`--sklearn`'s tables: one per case, every estimator's fit time and result."""
    console = console or Console(width=_WIDTH)
    for name, case in result["sklearn"]["cases"].items():
        console.print(sklearn_table(name, case, result["sklearn"]["repeats"]))
    console.print(_footer(result))


def sklearn_table(name: str, case: dict, repeats: int) -> Table:
    """Fit seconds, median (min-max), held-out R² and the coefficient difference from the
    reference, per estimator."""
    table = Table(
        title=f"{name}: {case['train_samples']:,} train / {case['test_samples']:,} test rows, "
        f"{case['features']} features; fit s median (min-max) of {repeats} fits; "
        "|coef diff|: largest on the standardised scale, against the reference"
    )
    table.add_column("estimator", justify="left")
    for column in ("fit s", "test R²", "|coef diff|", "reference"):
        table.add_column(column, justify="left" if column == "reference" else "right")
    for row in case["rows"]:
        difference = row["max_coef_difference"]
        table.add_row(
            row["estimator"],
            cell(row, "fit_s"),
            f"{row['test_r2']:.6f}",
            "-" if difference is None else f"{difference:.1e}",
            row["reference"] or "-",
        )
    return table


def _footer(result: dict) -> str:
    machine = result["machine"]
    devices = f", devices {', '.join(machine['devices'])}" if "devices" in machine else ""
    return (
        f"{result['command']}  |  {machine['cpu_count']} CPU cores{devices}, load average "
        f"{machine['load_average_start'][0]:.1f} at start, "
        f"{machine['load_average_end'][0]:.1f} at end"
    )


def number(value: float) -> str:
    """Three significant digits, without exponents: 1,234 / 56.7 / 8.90 / 0.0123."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.3g}" if abs(value) >= 10 else f"{value:.2f}"
    return f"{value:.3g}"


def span(median: float, low: float, high: float, unit: str = "") -> str:
    """`median (low-high)`, e.g. `5.26 (4.79-8.97)`."""
    return f"{number(median)}{unit} ({number(low)}-{number(high)})"


def cell(entry: dict, key: str, unit: str = "", scale: float = 1.0) -> str:
    """`span` of `entry[key]`, `entry[key_min]`, `entry[key_max]`, each times `scale`."""
    return span(*(scale * entry[name] for name in (key, f"{key}_min", f"{key}_max")), unit)


def problem_table(problem: str, summary: dict) -> Table:
    """One problem: each library's three step modes (and epoch) against raw JAX."""
    large = "batch_size" in summary
    unit, scale = ("ms", 1e-3) if large else ("us", 1.0)  # the JSON keeps microseconds
    title = (
        f"{problem} problem (N={summary['samples']:,}, D={summary['features']}, "
        f"{summary['optimizer']}): {unit} per step, median (min-max) over {summary['rounds']} "
        f"rounds of {summary['steps_per_round']} steps; x = median of per-round ratios to raw JAX"
    )
    table = Table(title=title)
    columns = ["library", "idiomatic step", "x", "fast step", "x", "fused loop", "x", "compile s"]
    if large:
        columns += [f"epoch s, batch {summary['batch_size']}", "x raw", "x read X"]
    for column in columns:
        table.add_column(column, justify="left" if column == "library" else "right")
    raw = summary["raw"]
    row = ["raw JAX", "-", "", cell(raw, "step_us", scale=scale), "1"]
    row += [cell(raw, "fused_us", scale=scale), "1", "-"]
    if large:
        row += [cell(raw, "epoch_s"), "1", f"{raw['epoch_bound_ratio']:.2f}"]
    table.add_row(*row, style="bold")
    for name, entry in summary["libraries"].items():
        row = [name]
        for mode in ("idiomatic", "fast", "fused"):
            row += [cell(entry, f"{mode}_us", scale=scale), f"{entry[f'{mode}_ratio']:.2f}"]
        row.append(f"{entry['compile_s']:.2f}")
        if large:
            row += [
                cell(entry, "epoch_s"),
                f"{entry['epoch_ratio']:.2f}",
                f"{entry['epoch_bound_ratio']:.2f}",
            ]
        table.add_row(*row)
    return table


def figures_table(result: dict) -> Table:
    """The large problem's bounds: bandwidth, closed form, scikit-learn, peak memory."""
    large, rss = result["large"], result["rss"]
    raw = large["raw"]
    table = Table(title=f"large problem: N={large['samples']:,}, D={large['features']} (float32)")
    table.add_column("figure", justify="left")
    table.add_column("value", justify="right")
    rows = [
        ("data (X and y)", f"{rss['raw']['data_mb']:.0f} MB"),
        ("memory bandwidth (jitted jnp.sum over X)", f"{result['bandwidth_gb_s']:.1f} GB/s"),
        ("one read of X at that bandwidth (epoch bound)", f"{number(large['epoch_bound_s'])} s"),
        ("raw epoch, shuffled batches (gather)", cell(raw, "epoch_s", " s")),
        ("raw epoch, contiguous batches", cell(raw, "epoch_contiguous_s", " s")),
        (
            "raw full-batch step: share of bandwidth (X read twice)",
            f"{raw['step_bandwidth_fraction']:.0%}",
        ),
        ("closed form, normal equations in float64", cell(result, "closed_form_s", " s")),
        (
            "closed form, lstsq in float64 (least_squares)",
            f"{number(result['closed_form_lstsq_s'])} s",
        ),
        ("  max |difference| between the two", f"{result['closed_form_max_abs_difference']:.1e}"),
        ("sklearn LinearRegression.fit", cell(result, "sklearn_linear_regression_s", " s")),
        ("sklearn SGDRegressor, one epoch", cell(result, "sklearn_sgd_epoch_s", " s")),
    ]
    rows += [
        (
            f"peak RSS, child training {name}: imports / +data / peak",
            f"{entry['baseline_mb']:.0f} / {entry['with_data_mb']:.0f} / {entry['peak_mb']:.0f} MB",
        )
        for name, entry in rss.items()
    ]
    for row in rows:
        table.add_row(*row)
    return table


def startup_table(startup: dict) -> Table:
    """Each start-up command's wall time, median (min-max) over the runs."""
    table = Table(
        title=f"start-up: seconds from start to exit of a fresh process, median (min-max) "
        f"of {startup['runs']} run{'s' if startup['runs'] > 1 else ''}"
    )
    for column in ("command", "exit code", "seconds"):
        table.add_column(column, justify="left" if column == "command" else "right")
    for entry in startup["commands"].values():
        seconds = span(entry["median_s"], entry["min_s"], entry["max_s"])
        table.add_row(entry["command"], str(entry["exit_code"]), seconds)
    return table


def targets_table(targets: list[dict], title: str = "goals") -> Table:
    """Each goal with its reason, limit, measured value and whether it is met.

    A reason shared by consecutive goals (the same goal for each library) is printed once,
    on the first of them.
    """
    table = Table(title=title)
    table.add_column("goal", justify="left", no_wrap=True)
    table.add_column("why", justify="left")
    for column in ("limit", "measured", "met"):
        table.add_column(column, justify="right", no_wrap=True)
    previous = None
    for index, entry in enumerate(targets):
        reason = "" if entry["reason"] == previous else entry["reason"]
        following = targets[index + 1]["reason"] if index + 1 < len(targets) else None
        table.add_row(
            entry["target"],
            reason,
            f"{entry['comparison']} {entry['limit']:g}",
            f"{entry['measured']:.2f}",
            "yes" if entry["met"] else "NO",
            style=None if entry["met"] else "red",
            end_section=following != entry["reason"],
        )
        previous = entry["reason"]
    return table
