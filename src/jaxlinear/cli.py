"""The `jaxlinear` command line: argument parsing, and mapping errors to one line.

Every command calls tested library functions. This module imports only the standard library
and jaxlinear's light modules at start-up; jax, the four libraries, scikit-learn and
matplotlib are imported by the command that needs them, so `--help` and a mistyped option
answer at once. Errors the user can fix are printed as one line on stderr with exit code 2;
they never show a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxlinear import __version__
from jaxlinear._config import BUILTIN_DATASETS, OPTIMIZERS, SCHEDULES, STEP_MODES, TrainConfig
from jaxlinear._errors import ConfigError, JaxlinearError
from jaxlinear._registry import LIBRARY_NAMES

EXIT_USAGE = 2
EXIT_INTERNAL = 1
DEFAULT_REPORT = "jaxlinear-report.html"
DEFAULT_SHOW = "jaxlinear-model.html"

# The core names settings by their field; the command line by its flags.
FLAGS = {
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "learning_rate": "--lr",
    "optimizer": "--optimizer",
    "schedule": "--schedule",
    "l2": "--l2",
    "seed": "--seed",
    "step_mode": "--step-mode",
    "test_fraction": "--test-fraction",
    "n_samples": "--samples",
    "in_features": "--in-features",
    "out_features": "--out-features",
    "noise": "--noise",
    "targets": "--target",
}


class UserError(JaxlinearError):
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
    common = _common_options()

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
        help="save the trained model to DIR/model.safetensors (canonical W, b, the scaling and "
        "the library name), which `jaxlinear show --load DIR` opens in any library",
    )
    train.set_defaults(handler=_run_train)

    show = commands.add_parser(
        "show",
        help="render a model with treescope to an HTML page",
        description="Renders a model with treescope: a freshly initialised model of --library, "
        "or one saved by `jaxlinear train --save DIR` (--load DIR), opened in --library "
        "(default: the library that trained it). --library all shows it in the four "
        "libraries side by side.",
    )
    show.add_argument(
        "--library",
        metavar="NAME",
        help="/".join(LIBRARY_NAMES) + ", or all: the four side by side",
    )
    show.add_argument("--load", metavar="DIR", help="folder written by `jaxlinear train --save`")
    show.add_argument("--in-features", type=int, default=3, help="new model: inputs (default: 3)")
    show.add_argument("--out-features", type=int, default=1, help="new model: outputs (default: 1)")
    show.add_argument("--seed", type=int, default=0, help="new model: initialisation seed")
    show.add_argument(
        "--output", default=DEFAULT_SHOW, metavar="PATH.html", help=f"(default: {DEFAULT_SHOW})"
    )
    show.set_defaults(handler=_run_show)

    from jaxlinear.bench.options import add_arguments as add_bench_arguments

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


def _common_options() -> argparse.ArgumentParser:
    """The data, training and output options of `compare` and `train`."""
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
        "--batch-size", type=int, default=None, help="examples per step (default: all of them)"
    )
    training.add_argument(
        "--lr", type=float, default=defaults.learning_rate, help="learning rate (default: 0.1)"
    )
    training.add_argument(
        "--optimizer", choices=OPTIMIZERS, default=defaults.optimizer, help="(default: adam)"
    )
    training.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=defaults.schedule,
        help="learning-rate schedule (default: cosine, decaying to 0 over the run)",
    )
    training.add_argument(
        "--l2", type=float, default=0.0, help="ridge penalty on the weights (default: 0)"
    )
    training.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the one seed of the split, synthetic data, initial weights and batch order, each "
        "drawn from its own stream (default: 0)",
    )
    training.add_argument(
        "--step-mode",
        choices=STEP_MODES,
        default=defaults.step_mode,
        help="fused: the steps of an epoch (or of several small epochs) in one compiled "
        "lax.scan; fast: one jitted step per batch in the library's low-overhead pattern "
        "(state split once, flat arrays in and out); idiomatic: the library's textbook jitted "
        "step, called once per batch (default: fused)",
    )
    output = common.add_argument_group("output")
    output.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    output.add_argument(
        "--report",
        nargs="?",
        const=DEFAULT_REPORT,
        metavar="PATH.html",
        help="also write a self-contained HTML report: the libraries side by side (treescope "
        "models, labelled parameter heatmaps, optimizer state, code), weights against the "
        "exact solution, loss curves, and what XLA compiled for each train step "
        f"(default file: {DEFAULT_REPORT})",
    )
    output.add_argument("--quiet", action="store_true", help="no progress bar")
    return common


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in reports
    try:
        return args.handler(args)
    except ConfigError as error:
        print(
            f"jaxlinear: error: {FLAGS.get(error.field, error.field)} {error.problem}",
            file=sys.stderr,
        )
    except (JaxlinearError, OSError) as error:
        print(f"jaxlinear: error: {_in_flags(_one_line(error))}", file=sys.stderr)
    except MemoryError:
        print("jaxlinear: error: out of memory; use smaller data or --batch-size", file=sys.stderr)
    except KeyboardInterrupt:
        print("jaxlinear: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug, not the user's input: one line, unless asked for more
        if os.environ.get("JAXLINEAR_TRACEBACK"):
            raise
        print(
            f"jaxlinear: internal error: {type(error).__name__}: {_one_line(error)} "
            "(a bug in jaxlinear; set JAXLINEAR_TRACEBACK=1 to see where it happened)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    return EXIT_USAGE


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())


def _in_flags(message: str) -> str:
    """Names the flags where the core's message names config fields (`learning_rate`...)."""
    for field in ("learning_rate", "batch_size", "step_mode", "test_fraction", "l2"):
        message = re.sub(rf"(?<![\w-]){field}(?![\w-])", FLAGS[field], message)
    return message


def _run_bench(args: argparse.Namespace) -> int:
    from jaxlinear.bench.options import BenchOptionError
    from jaxlinear.bench.run import run_from_args

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
    config = _config_from(args)
    _check_libraries(libraries)
    save_dir = getattr(args, "save", None)
    outputs = _check_outputs(args, save_dir)
    dataset = _load(args)

    from jaxlinear import _console
    from jaxlinear._cache import enable_compilation_cache
    from jaxlinear._compare import compare

    enable_compilation_cache()

    with _epoch_progress(libraries, config.epochs, quiet=args.quiet) as on_epoch:
        comparison = compare(dataset, config, libraries, on_epoch=on_epoch)
    # Everything to write is made before anything is written, and then written together
    # (`write_all_atomic`): a failure on the way leaves none of the files behind.
    files = {}
    if outputs.get("json"):
        import json

        text = json.dumps(comparison.to_json(), indent=2, allow_nan=False) + "\n"
        files[outputs["json"]] = text.encode()
    if outputs.get("report"):
        from jaxlinear._report import comparison_report

        report = comparison_report(comparison, command=["jaxlinear", *args.argv])
        files[outputs["report"]] = report.encode()
    if outputs.get("save"):
        files[outputs["save"]] = _saved_model_bytes(comparison, libraries[0])
    _console.print_table(comparison)
    if show_weights:
        _console.print_weights(comparison)
    _console.warn_if_not_converged(comparison)
    if files:
        from jaxlinear._io import write_all_atomic

        write_all_atomic(files)
        for kind, path in outputs.items():
            if path is not None and kind != "input":
                print(f"{_WRITTEN[kind]} {path}", file=sys.stderr)
    return 0


_WRITTEN = {"json": "figures written to", "report": "report written to", "save": "model saved to"}


def _check_outputs(args: argparse.Namespace, save_dir: str | None) -> dict[str, Path | None]:
    """Checks every output path before any work: writable, and none clashing with another or
    with the input file. Returns them by kind."""
    from jaxlinear._io import check_writable
    from jaxlinear._saved import FILE_NAME

    outputs: dict[str, Path | None] = {
        "json": check_writable(args.json) if args.json else None,
        "report": check_writable(args.report) if args.report else None,
        "save": _check_save_dir(save_dir) / FILE_NAME if save_dir else None,
    }
    flags = {"json": "--json", "report": "--report", "save": "--save"}
    seen: dict[Path, str] = {}
    if args.data not in BUILTIN_DATASETS:
        seen[Path(args.data).resolve()] = "--data"
    for kind, path in outputs.items():
        if path is None:
            continue
        resolved = path.resolve()
        if resolved in seen:
            other = seen[resolved]
            verb = "would overwrite the input data" if other == "--data" else f"and {other} name"
            raise UserError(f"{flags[kind]} {verb} the same file {path}: choose another path")
        seen[resolved] = flags[kind]
    return outputs


def _check_save_dir(folder: str) -> Path:
    from jaxlinear._io import check_writable
    from jaxlinear._saved import FILE_NAME

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--save {folder}: exists and is not a folder")
    if not folder.resolve().parent.is_dir():
        raise UserError(f"--save {folder}: its parent folder does not exist")
    if folder.is_dir():
        check_writable(folder / FILE_NAME)
    else:
        check_writable(folder)  # its parent must let us create it
    return folder


def _saved_model_bytes(comparison, library: str) -> bytes:
    from jaxlinear._saved import SavedModel, encode

    return encode(
        SavedModel(
            library=library,
            weights=comparison.runs[library].weights,
            scaling=comparison.dataset.scaling,
            dataset=comparison.dataset.name,
        )
    )


def _run_show(args: argparse.Namespace) -> int:
    from jaxlinear._io import check_writable, write_text_atomic

    output = check_writable(args.output)
    if args.library not in (None, "all"):
        _check_libraries([args.library])
    saved = None
    if args.load:
        from jaxlinear._saved import load

        saved = load(args.load)
    elif args.library is None:
        raise UserError(
            "name a library with --library NAME (or all), or a saved model with --load DIR"
        )
    else:
        for flag, value in (
            ("--in-features", args.in_features),
            ("--out-features", args.out_features),
        ):
            if not 1 <= value <= 4096:
                raise UserError(f"{flag} must be between 1 and 4096 for a page, got {value}")
        from jaxlinear._config import check_seed

        check_seed(args.seed)
    libraries = list(LIBRARY_NAMES) if args.library == "all" else [args.library or saved.library]
    from jaxlinear._report import show_page

    page = show_page(
        libraries,
        saved=saved,
        saved_in=args.load,
        in_features=args.in_features,
        out_features=args.out_features,
        seed=args.seed,
    )
    write_text_atomic(output, page)
    print(f"page written to {output}", file=sys.stderr)
    return 0


def _config_from(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        optimizer=args.optimizer,
        schedule=args.schedule,
        l2=args.l2,
        seed=args.seed,
        step_mode=args.step_mode,
    ).validate()


def _check_libraries(libraries: list[str]) -> None:
    if not libraries:
        raise UserError(f"--libraries is empty: name some of {','.join(LIBRARY_NAMES)}")
    unknown = [name for name in libraries if name not in LIBRARY_NAMES]
    if unknown:
        raise UserError(
            f"unknown library {', '.join(map(repr, unknown))}: "
            f"use one of {', '.join(LIBRARY_NAMES)}"
        )
    repeated = sorted({name for name in libraries if libraries.count(name) > 1})
    if repeated:
        raise UserError(f"--libraries names {', '.join(repeated)} more than once")


def _load(args: argparse.Namespace):
    if args.target and args.data in BUILTIN_DATASETS:
        raise UserError(f"--target is for CSV files; {args.data} has its own targets")
    from jaxlinear.data import load_dataset

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
    from jaxlinear._progress import progress_bar

    with progress_bar("epochs  loss {task.fields[loss]}", quiet=quiet) as bar:
        if bar is None:
            yield None
            return
        tasks = {name: bar.add_task(name, total=epochs, loss="-") for name in libraries}

        def on_epoch(library: str, epochs_done: int, loss: float) -> None:
            bar.update(tasks[library], completed=epochs_done, loss=f"{loss:.6g}")

        yield on_epoch


if __name__ == "__main__":
    sys.exit(main())
