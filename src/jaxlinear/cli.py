"""The `jaxlinear` command line: argument parsing and printing only.

Every command calls tested library functions. Errors the user can fix are printed as one
line on stderr with exit code 2; they never show a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Sequence

from jaxlinear import __version__
from jaxlinear._data import BUILTIN_DATASETS, DataError
from jaxlinear._registry import LIBRARY_NAMES
from jaxlinear._training import OPTIMIZERS, SCHEDULES, STEP_MODES, TrainConfig, TrainingDiverged

EXIT_USAGE = 2
DEFAULT_REPORT = "jaxlinear-report.html"
DEFAULT_SHOW = "jaxlinear-model.html"


class UserError(Exception):
    """Something the user can fix; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's default prints the whole usage block
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jaxlinear",
        description="One linear model in flax.linen, flax.nnx, equinox and penzai: trained with "
        "optax, compared with each other and with the exact least-squares solution.",
    )
    parser.add_argument("--version", action="version", version=f"jaxlinear {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = _Parser(add_help=False)
    data = common.add_argument_group("data")
    data.add_argument(
        "--data",
        default="diabetes",
        metavar="{" + ",".join(BUILTIN_DATASETS) + ",PATH.csv}",
        help="built-in data set or a CSV file with a header row (default: diabetes)",
    )
    data.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="COLUMN",
        help="target column of a CSV file; repeat for several targets. "
        "All other columns are features and must be numeric.",
    )
    data.add_argument(
        "--test-fraction", type=float, default=0.2, help="share of rows held out (default: 0.2)"
    )
    data.add_argument("--samples", type=int, default=1000, help="synthetic: rows (default: 1000)")
    data.add_argument("--in-features", type=int, default=8, help="synthetic: inputs (default: 8)")
    data.add_argument("--out-features", type=int, default=1, help="synthetic: outputs (default: 1)")
    data.add_argument(
        "--noise",
        type=float,
        default=0.1,
        help="synthetic: noise standard deviation (default: 0.1)",
    )
    defaults = TrainConfig()
    training = common.add_argument_group("training")
    training.add_argument(
        "--epochs", type=int, default=defaults.epochs, help="(default: %(default)s)"
    )
    training.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="examples per step (default: the whole training set)",
    )
    training.add_argument(
        "--lr",
        type=float,
        default=defaults.learning_rate,
        help="learning rate (default: %(default)s)",
    )
    training.add_argument(
        "--optimizer", choices=OPTIMIZERS, default=defaults.optimizer, help="(default: %(default)s)"
    )
    training.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=defaults.schedule,
        help="learning-rate schedule (default: %(default)s, decaying to 0 over the run)",
    )
    training.add_argument(
        "--l2", type=float, default=0.0, help="ridge penalty on the weights (default: 0)"
    )
    training.add_argument(
        "--seed", type=int, default=0, help="seeds split, batches and initial weights (default: 0)"
    )
    training.add_argument(
        "--step-mode",
        choices=STEP_MODES,
        default=defaults.step_mode,
        help="fused: the steps of an epoch (or of several small epochs) in one compiled "
        "lax.scan; fast: one jitted step per batch in the library's low-overhead pattern "
        "(state split once, flat arrays in and out); idiomatic: the library's textbook jitted "
        "step, called once per batch (default: %(default)s)",
    )
    output = common.add_argument_group("output")
    output.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    output.add_argument(
        "--report",
        nargs="?",
        const=DEFAULT_REPORT,
        metavar="PATH.html",
        help="also write a self-contained HTML report: every model before and after training "
        f"rendered by treescope, loss curves, predictions (default file: {DEFAULT_REPORT})",
    )
    output.add_argument("--quiet", action="store_true", help="no progress bar")

    compare = commands.add_parser(
        "compare",
        parents=[common],
        help="train every library from the same start and compare them with the exact solution",
        description="Trains the chosen libraries from the SAME initial weights on the SAME "
        "batches and prints, for each, train/test MSE, test R², the largest weight error "
        "against the closed-form solution, compile time and time per step.",
    )
    compare.add_argument(
        "--libraries",
        default=",".join(LIBRARY_NAMES),
        metavar="NAMES",
        help=f"comma-separated subset of {','.join(LIBRARY_NAMES)} (default: all)",
    )
    compare.set_defaults(handler=_run_compare)

    train = commands.add_parser(
        "train",
        parents=[common],
        help="train one library and print its figures",
        description="Trains one library and prints the same figures as compare.",
    )
    train.add_argument("--library", required=True, metavar="NAME", help="/".join(LIBRARY_NAMES))
    train.add_argument(
        "--save",
        metavar="DIR",
        help="save the trained model to DIR/model.safetensors (canonical W, b and the library "
        "name), which `jaxlinear show --load DIR` opens in any library",
    )
    train.set_defaults(handler=_run_train)

    show = commands.add_parser(
        "show",
        help="render a model with treescope to an HTML page",
        description="Renders a model with treescope: a freshly initialised model of --library, "
        "or one saved by `jaxlinear train --save DIR` (--load DIR), opened in --library "
        "(default: the library that trained it).",
    )
    show.add_argument("--library", metavar="NAME", help="/".join(LIBRARY_NAMES))
    show.add_argument("--load", metavar="DIR", help="folder written by `jaxlinear train --save`")
    show.add_argument("--in-features", type=int, default=3, help="new model: inputs (default: 3)")
    show.add_argument("--out-features", type=int, default=1, help="new model: outputs (default: 1)")
    show.add_argument("--seed", type=int, default=0, help="new model: initialisation seed")
    show.add_argument(
        "--output", default=DEFAULT_SHOW, metavar="PATH.html", help=f"(default: {DEFAULT_SHOW})"
    )
    show.set_defaults(handler=_run_show)

    from jaxlinear._bench import add_arguments as add_bench_arguments

    bench = commands.add_parser(
        "bench",
        help="time every library's training paths against hand-written JAX",
        description="Times each library's idiomatic step, fast step and fused loop against a "
        "raw-JAX reference on a small and a large problem, interleaved in one process, plus "
        "memory bandwidth, the closed form, scikit-learn and peak memory (docs/benchmarks.md).",
    )
    add_bench_arguments(bench)
    bench.set_defaults(handler=_run_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in reports
    try:
        return args.handler(args)
    except (UserError, DataError, TrainingDiverged, OSError) as error:
        print(f"jaxlinear: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("jaxlinear: interrupted", file=sys.stderr)
        return 130


def _run_bench(args: argparse.Namespace) -> int:
    from jaxlinear._bench import BenchOptionError, run_from_args

    try:
        return run_from_args(args)
    except BenchOptionError as error:
        raise UserError(error) from None


def _run_compare(args: argparse.Namespace) -> int:
    libraries = [name.strip() for name in args.libraries.split(",") if name.strip()]
    return _train_and_report(args, libraries)


def _run_train(args: argparse.Namespace) -> int:
    return _train_and_report(args, [args.library], show_weights=True)


def _train_and_report(
    args: argparse.Namespace, libraries: list[str], *, show_weights: bool = False
) -> int:
    from jaxlinear._io import check_writable, write_json_atomic, write_text_atomic

    config = _config_from(args)
    _check_libraries(libraries)
    # Output paths are checked before any work, so a typo costs a second, not a training run.
    json_path = check_writable(args.json) if args.json else None
    report_path = check_writable(args.report) if args.report else None
    save_dir = _check_save_dir(args.save) if getattr(args, "save", None) else None
    dataset = _load(args)

    from jaxlinear._compare import compare

    with _epoch_progress(libraries, config.epochs, quiet=args.quiet) as on_epoch:
        comparison = compare(dataset, config, libraries, on_epoch=on_epoch)
    _print_table(comparison)
    if show_weights:
        _print_weights(comparison)
    if json_path is not None:
        write_json_atomic(json_path, comparison.to_json())
    if report_path is not None:
        from jaxlinear._report import comparison_report

        command = ["jaxlinear", *args.argv]
        write_text_atomic(report_path, comparison_report(comparison, command=command))
        print(f"report written to {report_path}", file=sys.stderr)
    if save_dir is not None:
        path = _save(save_dir, comparison, libraries[0])
        print(f"model saved to {path}", file=sys.stderr)
    return 0


def _check_save_dir(folder: str):
    from pathlib import Path

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--save {folder}: exists and is not a folder")
    if not folder.resolve().parent.is_dir():
        raise UserError(f"--save {folder}: its parent folder does not exist")
    return folder


def _save(folder, comparison, library: str):
    from jaxlinear._saved import SavedModel, save

    dataset = comparison.dataset
    return save(
        folder,
        SavedModel(
            library=library,
            weights=comparison.runs[library].weights,
            x_mean=dataset.x_scaler.mean_,
            x_scale=dataset.x_scaler.scale_,
            y_mean=dataset.y_scaler.mean_,
            y_scale=dataset.y_scaler.scale_,
            dataset=dataset.name,
        ),
    )


def _run_show(args: argparse.Namespace) -> int:
    from jaxlinear._io import check_writable, write_text_atomic

    output = check_writable(args.output)
    if args.library is not None:
        _check_libraries([args.library])
    if args.load:
        from jaxlinear._saved import SavedModelError, load

        try:
            saved = load(args.load)
        except SavedModelError as error:
            raise UserError(error) from None
        library = args.library or saved.library
        description = (
            f"Trained in {saved.library} on {saved.dataset or 'unknown data'} "
            f"(saved in {args.load}), opened in {library}: "
            f"W [{saved.weights.in_features}, {saved.weights.out_features}] on the "
            "standardised scale."
        )
        from jaxlinear._registry import get_library

        model = get_library(library).from_canonical(saved.weights)
    else:
        if args.library is None:
            raise UserError("name a library with --library NAME, or a saved model with --load DIR")
        if args.in_features < 1 or args.out_features < 1:
            raise UserError("--in-features and --out-features must be at least 1")
        import jax

        from jaxlinear._registry import get_library

        library = args.library
        model = get_library(library).create(
            args.in_features, args.out_features, key=jax.random.key(args.seed)
        )
        description = (
            f"A freshly initialised {library} model, {args.in_features} -> {args.out_features}, "
            f"with the library's default initialisers (seed {args.seed})."
        )
    from jaxlinear._report import model_page

    write_text_atomic(output, model_page(library, model, description=description))
    print(f"page written to {output}", file=sys.stderr)
    return 0


def _config_from(args: argparse.Namespace) -> TrainConfig:
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        optimizer=args.optimizer,
        schedule=args.schedule,
        l2=args.l2,
        seed=args.seed,
        step_mode=args.step_mode,
    )
    try:
        config.validate()
    except ValueError as error:
        raise UserError(error) from None
    return config


def _check_libraries(libraries: list[str]) -> None:
    if not libraries:
        raise UserError(f"--libraries is empty: name some of {','.join(LIBRARY_NAMES)}")
    unknown = [name for name in libraries if name not in LIBRARY_NAMES]
    if unknown:
        raise UserError(
            f"unknown library {', '.join(map(repr, unknown))}: "
            f"use one of {', '.join(LIBRARY_NAMES)}"
        )


def _load(args: argparse.Namespace):
    from jaxlinear._data import load_dataset

    if not 0 < args.test_fraction < 1:
        raise UserError(f"--test-fraction must be between 0 and 1, got {args.test_fraction}")
    return load_dataset(
        args.data,
        targets=tuple(args.target),
        seed=args.seed,
        test_fraction=args.test_fraction,
        n_samples=args.samples,
        in_features=args.in_features,
        out_features=args.out_features,
        noise=args.noise,
    )


@contextlib.contextmanager
def _epoch_progress(libraries: list[str], epochs: int, *, quiet: bool):
    """Yields `on_epoch(library, epochs_done, loss)` driving one bar per library, or `None`."""
    from rich.progress import TextColumn

    from jaxlinear._progress import progress_bar

    with progress_bar(TextColumn("epochs  loss {task.fields[loss]}"), quiet=quiet) as bar:
        if bar is None:
            yield None
            return
        tasks = {name: bar.add_task(name, total=epochs, loss="-") for name in libraries}

        def on_epoch(library: str, epochs_done: int, loss: float) -> None:
            bar.update(tasks[library], completed=epochs_done, loss=f"{loss:.6g}")

        yield on_epoch


def _print_table(comparison) -> None:
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


def _print_weights(comparison) -> None:
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


if __name__ == "__main__":
    sys.exit(main())
