"""The command line's data-directory paths: `jaxlinear make-data` and `train`/`compare` with
`--data DIR` (see `jaxlinear.stream`). Kept apart from `cli.py`, which only dispatches here."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from jaxlinear._errors import ConfigError, UsageError

_MAKE_DATA_FLAGS = {
    "rows": "--rows",
    "features": "--features",
    "targets": "--targets",
    "chunk_rows": "--chunk-rows",
    "noise": "--noise",
    "seed": "--seed",
    "file_format": "--format",
}


def is_data_dir_argument(value: str) -> bool:
    """`--data VALUE` names a directory (a data directory, or a mistake reported as one)."""
    from jaxlinear._config import BUILTIN_DATASETS

    return value not in BUILTIN_DATASETS and Path(value).is_dir()


def add_make_data_parser(commands) -> None:
    make = commands.add_parser(
        "make-data",
        help="write a synthetic linear data set of any size as chunks, for --data DIR",
        description="Writes DIR/x-NNNNN.npy and DIR/y-NNNNN.npy chunks (or, with --format "
        "parquet, DIR/chunk-NNNNN.parquet files of float32 columns x0.. and y0..) of a synthetic "
        "linear data set (y = x @ W + b + noise) a slice at a time, so its size is bounded by "
        "the disk, not the memory, and DIR/meta.json with the shapes and the true W and b. "
        "`jaxlinear train/compare --data DIR` then train from it chunk by chunk.",
    )
    make.add_argument("dir", metavar="DIR", help="the directory to create")
    make.add_argument("--rows", type=int, required=True, help="rows in all")
    make.add_argument("--features", type=int, required=True, help="input columns")
    make.add_argument("--targets", type=int, default=1, help="output columns (default: 1)")
    make.add_argument(
        "--format",
        choices=("npy", "parquet"),
        default="npy",
        help="chunk file format: npy (memory-mapped when read) or parquet (read with pyarrow); "
        "the same values for a seed (default: npy)",
    )
    make.add_argument("--seed", type=int, default=0, help="(default: 0)")
    make.add_argument("--noise", type=float, default=0.1, help="noise scale (default: 0.1)")
    make.add_argument(
        "--chunk-rows", type=int, default=65536, help="rows per chunk (default: 65536)"
    )
    make.add_argument("--overwrite", action="store_true", help="replace a data directory at DIR")
    make.add_argument("--quiet", action="store_true", help="no progress bar")
    make.set_defaults(handler=run_make_data)


def run_make_data(args: argparse.Namespace) -> int:
    from jaxlinear._config import check_seed
    from jaxlinear._progress import progress_bar
    from jaxlinear.stream import check_make_data, make_data

    try:
        check_seed(args.seed)
        check_make_data(
            args.dir,
            rows=args.rows,
            features=args.features,
            targets=args.targets,
            noise=args.noise,
            chunk_rows=args.chunk_rows,
            overwrite=args.overwrite,
            file_format=args.format,
        )
        with progress_bar(quiet=args.quiet) as bar:
            task = None if bar is None else bar.add_task("chunks", total=None)

            def on_chunk(done: int, total: int) -> None:
                if bar is not None:
                    bar.update(task, completed=done, total=total)

            folder = make_data(
                args.dir,
                rows=args.rows,
                features=args.features,
                targets=args.targets,
                seed=args.seed,
                noise=args.noise,
                chunk_rows=args.chunk_rows,
                file_format=args.format,
                overwrite=args.overwrite,
                on_chunk=on_chunk,
            )
    except ConfigError as error:
        flag = _MAKE_DATA_FLAGS.get(error.field, error.field)
        raise UsageError(f"{flag} {error.problem}") from None
    gib = args.rows * (args.features + args.targets) * 4 / 2**30
    print(
        f"wrote {args.rows} rows x {args.features} features -> {args.targets} targets "
        f"({gib:.3g} GiB of float32, {args.format}) to {folder}",
        file=sys.stderr,
    )
    return 0


@dataclasses.dataclass
class _Run:
    metrics: dict[str, float]
    weights: Any
    epoch_seconds: list[float]


@dataclasses.dataclass
class _Summary:
    values: dict

    def summary(self) -> dict:
        return self.values


@dataclasses.dataclass
class StreamedComparison:
    """What `compare --data DIR` reports: the shape `_console` prints (dataset summary, exact
    figures, per-library metrics) without holding the data."""

    dataset: _Summary
    config: Any
    scaling: Any
    exact_weights: Any
    exact: dict[str, float]
    runs: dict[str, _Run]

    def weights_original_scale(self) -> dict:
        def as_lists(weights) -> dict:
            original = self.scaling.weights_to_original(weights)
            return {"W": original.weight.tolist(), "b": original.bias.tolist()}

        return {
            "feature_names": list(self.scaling.feature_names),
            "target_names": list(self.scaling.target_names),
            "exact": as_lists(self.exact_weights),
            **{name: as_lists(run.weights) for name, run in self.runs.items()},
        }

    def to_json(self) -> dict:
        from jaxlinear._compare import _json_safe

        return _json_safe(
            {
                "dataset": self.dataset.summary(),
                "settings": {**dataclasses.asdict(self.config), "devices": 1},
                "exact": self.exact,
                "libraries": {name: run.metrics for name, run in self.runs.items()},
                "epoch_seconds": {name: run.epoch_seconds for name, run in self.runs.items()},
                "weights_original_scale": self.weights_original_scale(),
            }
        )


def train_streamed(args: argparse.Namespace, libraries: list[str], *, show_weights: bool) -> int:
    """`train`/`compare --data DIR`: statistics in one pass, then each library streamed."""
    from jaxlinear import cli
    from jaxlinear.stream import DataDir, fit_stream, statistics

    data = DataDir.open(args.data)  # first: a folder that is not one is the likelier mistake
    config = cli._config_from(args)
    cli._check_libraries(libraries)
    unsupported = [
        flag
        for flag, value in (
            ("--report", args.report),
            ("--save", getattr(args, "save", None)),
            ("--resume", getattr(args, "resume", None)),
            ("--checkpoint-every", getattr(args, "checkpoint_every", None)),
            ("--target", args.target),
        )
        if value
    ]
    if args.devices not in (None, 1):
        unsupported.append("--devices above 1")
    if unsupported:
        raise UsageError(
            f"{', '.join(unsupported)} not supported with a data directory (--data "
            f"{args.data}) yet; drop {'it' if len(unsupported) == 1 else 'them'}"
        )
    json_path = None
    if args.json:
        from jaxlinear._io import check_writable

        json_path = check_writable(args.json)
        if json_path.resolve().is_relative_to(Path(args.data).resolve()):
            raise UsageError(f"--json {args.json} is inside the input directory --data")
    from jaxlinear import _console
    from jaxlinear._cache import enable_compilation_cache
    from jaxlinear._compare import CONVERGED_ATOL, CONVERGED_RTOL
    from jaxlinear._progress import progress_bar
    from jaxlinear._registry import get_library
    from jaxlinear._weights import initial_weights

    with progress_bar(quiet=args.quiet, label_width=12) as bar:
        task = None if bar is None else bar.add_task("statistics", total=data.chunks)
        stats = statistics(
            data,
            args.test_fraction,
            on_chunk=None if bar is None else lambda done, _: bar.update(task, completed=done),
        )
    enable_compilation_cache()
    exact_weights = stats.exact(config.l2)
    optimum = stats.objective(exact_weights, config.l2)
    exact = {**stats.evaluate(exact_weights), "train_loss": optimum}
    start = initial_weights(data.in_features, data.out_features, seed=config.seed)
    runs = {}
    with progress_bar("loss {task.fields[loss]}", quiet=args.quiet, label_width=16) as bar:
        for name in libraries:
            library = get_library(name)
            task = None
            if bar is not None:
                task = bar.add_task(name, total=len(stats.train_chunks), loss="-")

            def on_chunk(epoch, done, total, task=task, name=name):
                if bar is not None:
                    description = f"{name} {epoch + 1}/{config.epochs}"
                    bar.update(task, completed=done, total=total, description=description)

            def on_epoch(epochs_done, loss, task=task):
                if bar is not None:
                    bar.update(task, loss=f"{loss:.6g}")

            result = fit_stream(
                library.module,
                library.from_canonical(start),
                data,
                stats,
                config,
                on_epoch=on_epoch,
                on_chunk=on_chunk,
            )
            fit = result.fit
            weights = library.to_canonical(fit.model)
            gap = fit.final_objective - optimum
            metrics = {
                **stats.evaluate(weights),
                "max_abs_weight_error": float(abs(weights.weight - exact_weights.weight).max()),
                "objective_gap": gap,
                "converged": bool(gap <= CONVERGED_RTOL * optimum + CONVERGED_ATOL),
                "compile_seconds": fit.compile_seconds,
                "ms_per_step": fit.ms_per_step,
            }
            runs[name] = _Run(metrics, weights, result.epoch_seconds)
    summary = {
        "name": str(args.data),
        "n_train": stats.n_train,
        "n_test": stats.n_test,
        "in_features": data.in_features,
        "out_features": data.out_features,
        "chunks": data.chunks,
        "test_chunks": data.chunks - len(stats.train_chunks),
    }
    comparison = StreamedComparison(
        _Summary(summary), config, stats.scaling, exact_weights, exact, runs
    )
    text = None
    if json_path is not None:
        text = json.dumps(comparison.to_json(), indent=2, allow_nan=False) + "\n"
    _console.print_table(comparison)
    if show_weights:
        _console.print_weights(comparison)
    if text is not None:
        from jaxlinear._io import write_all_atomic

        write_all_atomic({json_path: text.encode()})
        print(f"figures written to {json_path}", file=sys.stderr)
    _console.warn_if_not_converged(comparison)
    return 0
