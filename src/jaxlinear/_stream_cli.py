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
    devices: int = 1

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
                "settings": {**dataclasses.asdict(self.config), "devices": self.devices},
                "exact": self.exact,
                "libraries": {name: run.metrics for name, run in self.runs.items()},
                "epoch_seconds": {name: run.epoch_seconds for name, run in self.runs.items()},
                "weights_original_scale": self.weights_original_scale(),
            }
        )


def train_streamed(args: argparse.Namespace, libraries: list[str], *, show_weights: bool) -> int:
    """`train`/`compare --data DIR`: statistics in one pass, then each library streamed.

    `train` also writes checkpoints and resumes (`--save`, `--checkpoint-every`, `--keep`,
    `--resume`, `--overwrite`) through the same run folder as in-memory training
    (`checkpoint.RunFolder`); see `_StreamCheckpoints` for what a resume must match.
    """
    from jaxlinear import cli
    from jaxlinear.stream import DataDir, check_batch_split, fit_stream, statistics

    data = DataDir.open(args.data)  # first: a folder that is not one is the likelier mistake
    config = cli._config_from(args)
    cli._check_libraries(libraries)
    _refuse_unsupported(args)
    cluster = cli._join_cluster(args)  # before anything else touches jax
    primary = cluster is None or cluster.process_id == 0
    if not primary:  # process 0 alone prints and writes; checkpoints are saved together
        args.quiet = True
    plan = cli._save_plan(args) if args.command == "train" else None
    outputs = cli._check_outputs(args, plan.root if plan is not None else None)
    for kind, flag in (("json", "--json"), ("save", "--save")):
        path = outputs.get(kind)
        if path is not None and path.resolve().is_relative_to(Path(args.data).resolve()):
            raise UsageError(f"{flag} {path} is inside the input directory --data")
    checkpoints = None
    if plan is not None and plan.root is not None:
        checkpoints = _StreamCheckpoints(args, plan, data, config, libraries[0])
    from jaxlinear import _console
    from jaxlinear._cache import enable_compilation_cache
    from jaxlinear._compare import CONVERGED_ATOL, CONVERGED_RTOL
    from jaxlinear._progress import progress_bar
    from jaxlinear._registry import get_library
    from jaxlinear._weights import initial_weights

    # Every local device unless --devices says otherwise; in a multi-process run, every
    # device of every process, each process reading only its block of each chunk.
    mesh = cli._data_mesh(args.devices) if cluster is None else cli._cluster_mesh(args, cluster)
    devices = 1 if mesh is None else mesh.devices.size
    if mesh is not None:
        train_chunks = tuple(range(data.chunks - data.test_chunks(args.test_fraction)))
        check_batch_split(data.chunk_rows, train_chunks, config.batch_size, devices)
        if not args.quiet:
            where = "--devices" if cluster is None else f"{cluster.num_processes} processes"
            print(f"data-parallel over {devices} devices ({where})", file=sys.stderr)
    with progress_bar(quiet=args.quiet, label_width=12) as bar:
        task = None if bar is None else bar.add_task("statistics", total=data.chunks)
        stats = statistics(
            data,
            args.test_fraction,
            on_chunk=None if bar is None else lambda done, _: bar.update(task, completed=done),
            shared=cluster is not None,  # several processes: each reads its share of chunks
        )
    fit_options = {} if checkpoints is None else checkpoints.fit_options(stats)
    enable_compilation_cache()
    exact_weights = stats.exact(config.l2)
    optimum = stats.objective(exact_weights, config.l2)
    exact = {**stats.evaluate(exact_weights), "train_loss": optimum}
    start = initial_weights(data.in_features, data.out_features, seed=config.seed)
    runs, states, rows_read = {}, {}, {}
    try:
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
                    mesh=mesh,
                    **fit_options,
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
                states[name] = fit.state
                rows_read[name] = result.rows_read
    except BaseException:
        if checkpoints is not None:
            checkpoints.folder.discard()  # a run folder made for nothing goes
        raise
    summary = dataset_summary(data, stats, name=str(args.data))
    if cluster is not None:  # what each process read: the proof of the shares
        summary["statistics_rows_read_per_process"] = _per_process(stats.rows_read)
        summary["training_rows_read_per_process"] = {
            name: _per_process(count) for name, count in rows_read.items()
        }
    comparison = StreamedComparison(
        _Summary(summary), config, stats.scaling, exact_weights, exact, runs, devices
    )
    if not primary:
        if checkpoints is not None:  # orbax saves from every process together (`checkpoint.py`)
            name = libraries[0]
            checkpoints.stage(states[name], runs[name].metrics)
        return 0
    text = None
    if outputs.get("json") is not None:
        text = json.dumps(comparison.to_json(), indent=2, allow_nan=False) + "\n"
    _console.print_table(comparison)
    if show_weights:
        _console.print_weights(comparison)
    # As in memory: everything is made before anything is written, then written together.
    staged = None
    if checkpoints is not None:
        name = libraries[0]
        staged = checkpoints.stage(states[name], runs[name].metrics)
    try:
        if text is not None:
            from jaxlinear._io import write_all_atomic

            write_all_atomic({outputs["json"]: text.encode()})
    except BaseException:
        if staged is not None:
            checkpoints.folder.discard(staged)
        raise
    if text is not None:
        print(f"figures written to {outputs['json']}", file=sys.stderr)
    if staged is not None:
        print(f"checkpoint saved to {checkpoints.folder.commit(staged)}", file=sys.stderr)
    _console.warn_if_not_converged(comparison)
    return 0


def dataset_summary(data, stats, *, name: str) -> dict:
    """What `--json` and every checkpoint say of a data directory `data` and its split, from
    its `statistics` `stats`; `name` is the directory as the user named it (or its path)."""
    return {
        "name": name,
        "n_train": stats.n_train,
        "n_test": stats.n_test,
        "in_features": data.in_features,
        "out_features": data.out_features,
        "chunks": data.chunks,
        "test_chunks": data.chunks - len(stats.train_chunks),
    }


def _refuse_unsupported(args: argparse.Namespace) -> None:
    """One line for the options a data directory does not take (yet)."""
    if args.target:
        raise UsageError(
            f"--target is for CSV files: the targets of a data directory (--data {args.data}) "
            "are fixed when it is written (`jaxlinear make-data --targets K`); drop --target"
        )
    if args.report:
        raise UsageError(
            f"--report not supported with a data directory (--data {args.data}): the report "
            "draws the data set, which it holds in memory; drop --report (--json writes the "
            "figures)"
        )


def _per_process(count: int) -> list[int]:
    """`count` of every process of a multi-process run, in process order (a collective:
    every process calls it). Sent as two uint32 halves: jax without x64 has no int64."""
    import numpy as np
    from jax.experimental import multihost_utils

    halves = np.array([count], np.uint64).view(np.uint32)
    gathered = np.asarray(multihost_utils.process_allgather(halves))
    return [int(value) for value in gathered.astype(np.uint32).view(np.uint64).reshape(-1)]


def data_identity(data, test_fraction: float) -> dict:
    """What a checkpoint records of the data directory it was trained from: its path, the
    SHA-256 of its `meta.json` (which lists every chunk and the seed, shapes and noise that
    generated them), those values for a readable refusal, and the split."""
    import hashlib

    from jaxlinear.stream import META

    meta = (data.path / META).read_bytes()
    return {
        "path": str(data.path.resolve()),
        "meta_sha256": hashlib.sha256(meta).hexdigest(),
        **{key: data.meta.get(key) for key in _GENERATED_BY},
        "test_fraction": test_fraction,
        "test_chunks": data.test_chunks(test_fraction),
    }


_GENERATED_BY = ("rows", "features", "targets", "chunk_rows", "seed", "noise")


def _fingerprint(identity: dict) -> str:
    """`data_sha256` of a streamed run: its directory's `meta.json` and its split."""
    import hashlib

    key = json.dumps([identity["meta_sha256"], identity["test_chunks"]])
    return hashlib.sha256(key.encode()).hexdigest()


class _StreamCheckpoints:
    """`train --data DIR --save/--resume`: the run folder and what a streamed checkpoint
    records, with `checkpoint.RunFolder` writing them as for in-memory runs.

    A resume is refused (one line, exit 2) unless it repeats the run: the same library and
    settings (`checkpoint.check_resumable`, as in memory), the same data directory (its
    `meta.json` byte for byte, so the same generator, shapes and chunks; moved or copied
    elsewhere is fine), the same `--test-fraction`, and, checked after the statistics pass,
    chunks holding the same values (the column means and scales, exact float64 sums in a
    fixed order, must equal those saved).
    """

    def __init__(self, args, plan, data, config, library: str):
        from jaxlinear.checkpoint import RunFolder, check_resumable, load_checkpoint

        self.folder = RunFolder(plan.root, keep=plan.keep, replace=plan.replace)
        self.config, self.every, self.data = config, plan.every, data
        self.identity = data_identity(data, args.test_fraction)
        self.checkpoint = None
        if plan.resume is not None:
            checkpoint = load_checkpoint(plan.resume)
            if checkpoint.state is not None:  # else `check_resumable` says there is none
                self._check_same_directory(checkpoint, args)
            check_resumable(
                checkpoint,
                library=library,
                config=config,
                data_sha256=_fingerprint(self.identity),
                checkpoint_every=plan.every,
            )
            self.checkpoint = checkpoint
            if not args.quiet:
                print(
                    f"resuming {library} from {checkpoint.path} "
                    f"(epoch {checkpoint.epoch} of {config.epochs})",
                    file=sys.stderr,
                )

    def _where(self, checkpoint) -> str:
        from jaxlinear.checkpoint import run_folder_of

        return f"the run in {run_folder_of(checkpoint.path) or checkpoint.path}"

    def _check_same_directory(self, checkpoint, args) -> None:
        saved = (checkpoint.metadata.get("dataset") or {}).get("data_dir")
        where = self._where(checkpoint)
        if not isinstance(saved, dict):
            source = (checkpoint.metadata.get("dataset") or {}).get("source", "other data")
            raise ConfigError(
                "data",
                f"{args.data} is a data directory, but {where} was trained in memory on "
                f"{source}; resume it with that --data",
            )
        if saved.get("meta_sha256") != self.identity["meta_sha256"]:
            differ = [
                f"{key} is {self.identity[key]!r} here, {saved.get(key)!r} there"
                for key in _GENERATED_BY
                if saved.get(key) != self.identity[key]
            ]
            detail = ", ".join(differ) if differ else "its meta.json differs"
            raise ConfigError(
                "data",
                f"{args.data} is not the data directory {where} was trained on "
                f"({saved.get('path')}): {detail}; resume it on the same data",
            )
        if saved.get("test_fraction") != self.identity["test_fraction"]:
            raise ConfigError(
                "test_fraction",
                f"is {self.identity['test_fraction']!r}, but {where} was started with "
                f"{saved.get('test_fraction')!r}; resume it with the same settings",
            )

    def fit_options(self, stats) -> dict:
        """`fit_stream`'s checkpoint and resume options, once the statistics are known."""
        from jaxlinear.stream import steps_per_epoch

        self.stats = stats
        self.steps = steps_per_epoch(
            self.data.chunk_rows, stats.train_chunks, self.config.batch_size
        )
        options = {}
        if self.checkpoint is not None:
            import numpy as np

            saved, found = self.checkpoint.scaling, stats.scaling
            if not all(
                np.array_equal(getattr(saved, field), getattr(found, field))
                for field in ("x_mean", "x_scale", "y_mean", "y_scale")
            ):
                raise ConfigError(
                    "data",
                    f"{self.data.path}: its chunks hold other values than when "
                    f"{self._where(self.checkpoint)} was trained on them (the columns' means "
                    "or scales differ); resume it on the same data",
                )
            options["start"] = self.checkpoint.state
        if self.every is not None:
            last_step = self.config.epochs * self.steps

            def on_checkpoint(state) -> None:
                # The last one is written after the run succeeds, with its metrics.
                if state.step < last_step:
                    self.folder.write(state, **self.record())

            options.update(checkpoint_every=self.every, on_checkpoint=on_checkpoint)
        return options

    def record(self) -> dict:
        """What every checkpoint of the run records (`checkpoint.save_checkpoint`'s fields)."""
        stats = self.stats
        dataset = dataset_summary(self.data, stats, name=str(self.data.path))
        return {
            "config": self.config,
            "scaling": stats.scaling,
            "n_train": stats.n_train,
            "dataset": {**dataset, "source": str(self.data.path), "data_dir": self.identity},
            "data_sha256": _fingerprint(self.identity),
            "checkpoint_every": self.every,
            "steps_per_epoch": self.steps,
        }

    def stage(self, state, metrics: dict):
        """The final checkpoint, written beside its place (`RunFolder.commit` puts it there)."""
        return self.folder.stage(state, **self.record(), metrics=metrics)
