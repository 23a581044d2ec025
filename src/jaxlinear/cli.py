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
import dataclasses
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxlinear import __version__
from jaxlinear._config import BUILTIN_DATASETS, OPTIMIZERS, SCHEDULES, STEP_MODES, TrainConfig
from jaxlinear._errors import ConfigError, JaxlinearError, UsageError
from jaxlinear._registry import LIBRARY_NAMES

EXIT_USAGE = 2
EXIT_INTERNAL = 1
DEFAULT_REPORT = "jaxlinear-report.html"
DEFAULT_SHOW = "jaxlinear-model.html"
DEFAULT_KEEP = 3

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
    "data": "--data",
    "library": "--library",
    "start": "--resume",
    "checkpoint_every": "--checkpoint-every",
    "devices": "--devices",
    "coordinator": "--coordinator",
    "num_processes": "--num-processes",
    "process_id": "--process-id",
}


UserError = UsageError  # something the user can fix; printed as one line, exit code 2


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
    saving = train.add_argument_group("checkpoints")
    saving.add_argument(
        "--save",
        metavar="DIR",
        help="when training succeeds, write a checkpoint to DIR/epoch-N/: the library's own "
        "format with the optimizer state (orbax, or eqx.tree_serialise_leaves for equinox), "
        "model.safetensors (canonical W, b and the scaling) and metadata.json (settings, "
        "metrics, versions, checksums); `predict --model DIR` and `show --load DIR` open it "
        "in any library",
    )
    saving.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help="also write a checkpoint into the --save folder every N epochs, for --resume",
    )
    saving.add_argument(
        "--keep",
        type=int,
        default=DEFAULT_KEEP,
        metavar="K",
        help=f"keep only the newest K checkpoints in the --save folder (default: {DEFAULT_KEEP})",
    )
    saving.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run whose checkpoints are in DIR from its newest one, with its "
        "optimizer state and batch order: give the same settings as the run that wrote it; it "
        "ends with the same weights as if it had never stopped (checkpoints go on into DIR "
        "unless --save names another folder)",
    )
    saving.add_argument(
        "--overwrite",
        action="store_true",
        help="let --save replace the checkpoints of another run already in DIR",
    )
    train.set_defaults(handler=_run_train)

    predict = commands.add_parser(
        "predict",
        help="predict with a saved model on the rows of a CSV file",
        description="Loads a checkpoint written by `jaxlinear train --save DIR` (its newest, "
        "verified) into --library (default: the library that trained it) and predicts on "
        "every row of a CSV file: the columns named like the model's features are used, in "
        "any order, and every other column is ignored. Predictions are in the targets' "
        "original units, one column per target, named after it.",
    )
    predict.add_argument("--model", required=True, metavar="DIR", help="folder written by --save")
    predict.add_argument("--data", required=True, metavar="FILE.csv", help="rows to predict on")
    predict.add_argument("--library", metavar="NAME", help="/".join(LIBRARY_NAMES))
    predict.add_argument(
        "--output", metavar="PATH.csv", help="write the predictions there (default: stdout)"
    )
    predict.set_defaults(handler=_run_predict)

    show = commands.add_parser(
        "show",
        help="render a model with treescope to an HTML page",
        description="Renders a model with treescope: a freshly initialised model of --library, "
        "or the newest checkpoint saved by `jaxlinear train --save DIR` (--load DIR), opened "
        "in --library (default: the library that trained it) beside the library that trained "
        "it, with the training state its native files restore (parameters and optimizer "
        "state). --library all shows the four libraries side by side. On several devices "
        "(--devices), a row draws how each library's arrays and a batch lie over them.",
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
        "--devices",
        type=int,
        default=None,
        metavar="N",
        help="place each library's training state on the first N local devices with its own "
        "`shard`, as `train --devices N` does, and draw the layout: parameters and a batch "
        "over the devices (default: all of them; one device draws none)",
    )
    show.add_argument(
        "--output", default=DEFAULT_SHOW, metavar="PATH.html", help=f"(default: {DEFAULT_SHOW})"
    )
    show.set_defaults(handler=_run_show)

    from jaxlinear._stream_cli import add_make_data_parser

    add_make_data_parser(commands)

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
        metavar="{" + ",".join(BUILTIN_DATASETS) + ",PATH.csv,DIR}",
        help="built-in data set, a CSV file with a header row, or a directory written by "
        "`jaxlinear make-data`, trained from chunk by chunk (default: diabetes)",
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
    training.add_argument(
        "--devices",
        type=int,
        default=None,
        metavar="N",
        help="train data-parallel on the first N local devices: each batch split over them, "
        "parameters replicated (default: all of them; see docs/scaling.md)",
    )
    hosts = common.add_argument_group(
        "several processes (hosts)",
        "run the same command once per process, each with its own --process-id; the mesh then "
        "spans every device of every process and each process places only its share of the "
        "rows. Only process 0 prints the results and writes --json, --report and checkpoints. "
        "Not given: $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID (see "
        "docs/scaling.md)",
    )
    hosts.add_argument(
        "--coordinator", metavar="HOST:PORT", help="address of process 0, where all processes meet"
    )
    hosts.add_argument("--num-processes", type=int, metavar="N", help="how many processes")
    hosts.add_argument("--process-id", type=int, metavar="I", help="this process: 0 .. N-1")
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
    code = _handle(args)
    if code != 0 and _in_cluster():
        # After a failure, a normal exit would run jax's shutdown barrier, which waits for
        # every process (a dead one never comes) and then aborts this one with a long C++
        # log: the one line printed is the whole story, so leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _in_cluster() -> bool:
    """Whether this process joined a multi-process run (`jax.distributed.initialize`)."""
    if "jax" not in sys.modules:
        return False
    import jax

    return jax.distributed.is_initialized()


def _handle(args: argparse.Namespace) -> int:
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
        if _in_cluster() and _peer_failure(error):
            import jax

            print(
                f"jaxlinear: error: process {jax.process_index()} of {jax.process_count()} "
                "stopped: another process of the run went away mid-run "
                f"({_one_line(error)[:200]}); rerun every process with --resume DIR to "
                "continue from the last checkpoint",
                file=sys.stderr,
            )
            return EXIT_INTERNAL
        if os.environ.get("JAXLINEAR_TRACEBACK"):
            raise
        print(
            f"jaxlinear: internal error: {type(error).__name__}: {_one_line(error)} "
            "(a bug in jaxlinear; set JAXLINEAR_TRACEBACK=1 to see where it happened)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    return EXIT_USAGE


def _peer_failure(error: BaseException) -> bool:
    from jaxlinear._distributed import is_peer_failure

    return is_peer_failure(error)


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
    from jaxlinear._stream_cli import is_data_dir_argument, train_streamed

    if is_data_dir_argument(args.data):  # a directory written by `make-data`: streamed
        return train_streamed(args, libraries, show_weights=show_weights)
    config = _config_from(args)
    _check_libraries(libraries)
    cluster = _join_cluster(args)  # before anything else touches jax
    plan = _save_plan(args) if args.command == "train" else None
    outputs = _check_outputs(args, plan.root if plan else None)
    dataset = _load(args)

    from jaxlinear import _console
    from jaxlinear._cache import enable_compilation_cache
    from jaxlinear._compare import compare

    enable_compilation_cache()
    mesh = _data_mesh(args.devices) if cluster is None else _cluster_mesh(args, cluster)
    primary = cluster is None or cluster.process_id == 0
    if mesh is not None:
        from jaxlinear.training import check_batch_split

        check_batch_split(config.batch_size, len(dataset.x_train), mesh.devices.size)
    folder, record, fit_options = None, {}, {}
    if plan is not None and plan.root is not None:
        folder, record, fit_options = _checkpointing(args, plan, dataset, config, libraries[0])
    if not primary:  # process 0 alone prints; writing checkpoints is the run folder's concern
        args.quiet = True
    devices = 1 if mesh is None else mesh.devices.size
    if mesh is not None:
        fit_options = {**fit_options, "mesh": mesh}
        if not args.quiet:
            where = "--devices" if cluster is None else f"{cluster.num_processes} processes"
            print(f"data-parallel over {devices} devices ({where})", file=sys.stderr)

    try:
        with _epoch_progress(libraries, config.epochs, quiet=args.quiet) as on_epoch:
            comparison = compare(
                dataset, config, libraries, on_epoch=on_epoch, fit_options=fit_options
            )
    except BaseException:
        if folder is not None:
            folder.discard()  # a run folder made for nothing goes; periodic checkpoints stay
        raise
    if not primary:
        if folder is not None:  # orbax saves from every process together (`checkpoint.py`)
            run = comparison.runs[libraries[0]]
            folder.stage(run.fit.state, **record, metrics=run.metrics)
        return 0
    # Everything to write is made before anything is written, and then written together
    # (`write_all_atomic`, then the checkpoint's rename): a failure on the way leaves none of
    # the files behind.
    files = {}
    if outputs.get("json"):
        import json

        figures = comparison.to_json()
        figures["settings"]["devices"] = devices  # the run's, not the library's, setting
        text = json.dumps(figures, indent=2, allow_nan=False) + "\n"
        files[outputs["json"]] = text.encode()
    if outputs.get("report"):
        from jaxlinear._report import comparison_report

        report = comparison_report(comparison, command=["jaxlinear", *args.argv])
        files[outputs["report"]] = report.encode()
    _console.print_table(comparison)
    if show_weights:
        _console.print_weights(comparison)
    staged = None
    if folder is not None:
        run = comparison.runs[libraries[0]]
        staged = folder.stage(run.fit.state, **record, metrics=run.metrics)
    try:
        if files:
            from jaxlinear._io import write_all_atomic

            write_all_atomic(files)
    except BaseException:
        if staged is not None:
            folder.discard(staged)
        raise
    for kind in ("json", "report"):
        if outputs[kind] is not None:
            print(f"{_WRITTEN[kind]} {outputs[kind]}", file=sys.stderr)
    if staged is not None:
        print(f"checkpoint saved to {folder.commit(staged)}", file=sys.stderr)
    _console.warn_if_not_converged(comparison)
    return 0


_WRITTEN = {"json": "figures written to", "report": "report written to"}


def _join_cluster(args: argparse.Namespace):
    """Joins the multi-process run the options (or environment) name; `None` for none."""
    from jaxlinear._distributed import cluster_from, initialize

    cluster = cluster_from(args.coordinator, args.num_processes, args.process_id)
    if cluster is not None:
        initialize(cluster)
    return cluster


def _cluster_mesh(args: argparse.Namespace, cluster):
    """The mesh over every device of every process of a multi-process run."""
    if args.devices is not None:
        raise UserError(
            "--devices cannot be combined with --num-processes: a multi-process run trains on "
            "every device of every process"
        )
    from jaxlinear._distributed import connect_collectives, global_mesh

    mesh = global_mesh()
    connect_collectives(mesh)  # now, so gloo's line goes to stderr, not into the results
    return mesh


def _data_mesh(devices: int | None):
    """The mesh `--devices` asks for (default: every local device); `None` for one device.

    Checked here, when the command runs, because counting devices imports jax."""
    import jax

    from jaxlinear.training import data_mesh

    return data_mesh(jax.local_device_count() if devices is None else devices)


@dataclasses.dataclass(frozen=True)
class _SavePlan:
    """Where `train` writes checkpoints and what it resumes from, checked before any work."""

    root: Path | None  # the run folder checkpoints go into
    resume: Path | None  # the checkpoint folder to resume from
    every: int | None
    keep: int
    replace: bool  # the run folder holds another run's checkpoints, to be replaced


def _save_plan(args: argparse.Namespace) -> _SavePlan:
    from jaxlinear.checkpoint import RunFolder, find_checkpoint, run_folder_of

    for flag, value in (("--checkpoint-every", args.checkpoint_every), ("--keep", args.keep)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    if args.checkpoint_every is not None and not (args.save or args.resume):
        raise UserError("--checkpoint-every needs --save DIR (or --resume DIR) to write into")
    resume = resume_root = None
    if args.resume:
        resume = find_checkpoint(args.resume)
        resume_root = run_folder_of(resume)
        if resume_root is None and not args.save:
            raise UserError(
                f"--resume {args.resume} is a single checkpoint, not a run folder: name the "
                "folder for the run's next checkpoints with --save DIR"
            )
    root = Path(args.save) if args.save else resume_root
    replace = False
    if root is not None:
        _check_save_dir(root)
        existing = RunFolder(root).checkpoints()
        continuing = resume_root is not None and root.resolve() == resume_root.resolve()
        if existing and not continuing:
            if not args.overwrite:
                raise UserError(
                    f"--save {root} already holds checkpoints (newest: {existing[-1][1].name}); "
                    f"add --overwrite to replace them, or --resume {root} to continue that run"
                )
            replace = True
    return _SavePlan(root, resume, args.checkpoint_every, args.keep, replace)


def _checkpointing(args, plan: _SavePlan, dataset, config: TrainConfig, library: str):
    """The run folder, what every checkpoint records, and `fit`'s options to write periodic
    checkpoints and to resume."""
    import numpy as np

    from jaxlinear.checkpoint import (
        RunFolder,
        check_resumable,
        data_fingerprint,
        load_checkpoint,
    )
    from jaxlinear.training import steps_per_epoch

    folder = RunFolder(plan.root, keep=plan.keep, replace=plan.replace)
    x_train, y_train = dataset.x_train.astype(np.float32), dataset.y_train.astype(np.float32)
    record = {
        "config": config,
        "scaling": dataset.scaling,
        "n_train": len(x_train),
        "dataset": {**dataset.summary(), "source": args.data, "targets": list(args.target)},
        "data_sha256": data_fingerprint(x_train, y_train, dataset.scaling),
        "checkpoint_every": plan.every,
    }
    fit_options = {}
    if plan.every is not None:
        last_step = config.epochs * steps_per_epoch(len(x_train), config.batch_size)

        def on_checkpoint(state) -> None:
            # The last one is written after the run succeeds, with its metrics.
            if state.step < last_step:
                folder.write(state, **record)

        fit_options.update(checkpoint_every=plan.every, on_checkpoint=on_checkpoint)
    if plan.resume is not None:
        checkpoint = load_checkpoint(plan.resume)
        check_resumable(
            checkpoint,
            library=library,
            config=config,
            data_sha256=record["data_sha256"],
            checkpoint_every=plan.every,
        )
        fit_options["start"] = checkpoint.state
        if not args.quiet:
            print(
                f"resuming {library} from {checkpoint.path} "
                f"(epoch {checkpoint.epoch} of {config.epochs})",
                file=sys.stderr,
            )
    return folder, record, fit_options


def _check_outputs(args: argparse.Namespace, save_dir: Path | None) -> dict[str, Path | None]:
    """Checks every output path before any work: writable, and none clashing with another or
    with the input file. Returns them by kind."""
    from jaxlinear._io import check_writable

    outputs: dict[str, Path | None] = {
        "json": check_writable(args.json) if args.json else None,
        "report": check_writable(args.report) if args.report else None,
        "save": save_dir,
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


def _check_save_dir(folder: Path) -> Path:
    from jaxlinear.checkpoint import METADATA

    if folder.exists() and not folder.is_dir():
        raise UserError(f"--save {folder}: exists and is not a folder")
    if not folder.resolve().parent.is_dir():
        raise UserError(f"--save {folder}: its parent folder does not exist")
    if (folder / METADATA).exists():
        raise UserError(
            f"--save {folder}: is a checkpoint itself; name the folder of its run, or a new one"
        )
    target = folder if folder.is_dir() else folder.resolve().parent
    if not os.access(target, os.W_OK):
        raise UserError(f"--save {folder}: folder {target} is not writable")
    return folder


def _run_predict(args: argparse.Namespace) -> int:
    from jaxlinear._io import check_writable

    output = check_writable(args.output) if args.output else None
    if output is not None and output.resolve() == Path(args.data).resolve():
        raise UserError(f"--output would overwrite the input data {args.data}: choose another path")
    if args.library is not None:
        _check_libraries([args.library])
    from jaxlinear._csv import read_features
    from jaxlinear.checkpoint import load_checkpoint, prediction_csv

    checkpoint = load_checkpoint(args.model, library=args.library)
    x = read_features(args.data, checkpoint.scaling.feature_names)
    text = prediction_csv(checkpoint, x, source=args.data)
    if output is None:
        sys.stdout.write(text)
        return 0
    from jaxlinear._io import write_text_atomic

    write_text_atomic(output, text)
    print(f"{len(x)} predictions written to {output}", file=sys.stderr)
    return 0


def _run_show(args: argparse.Namespace) -> int:
    from jaxlinear._io import check_writable, write_text_atomic

    output = check_writable(args.output)
    if args.library not in (None, "all"):
        _check_libraries([args.library])
    checkpoint = None
    if args.load:
        from jaxlinear.checkpoint import load_checkpoint

        opened_in = None if args.library == "all" else args.library
        checkpoint = load_checkpoint(args.load, library=opened_in)
        # The library that trained it comes first: its column shows the restored state.
        libraries = [checkpoint.trained_in, checkpoint.library]
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
        libraries = [args.library]
    if args.library == "all":
        libraries = list(LIBRARY_NAMES)
    import jax

    from jaxlinear._report import show_page

    page = show_page(
        list(dict.fromkeys(libraries)),
        checkpoint=checkpoint,
        in_features=args.in_features,
        out_features=args.out_features,
        seed=args.seed,
        devices=jax.local_device_count() if args.devices is None else args.devices,
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
