"""Data larger than memory: a directory of chunks, written and trained on chunk by chunk.

`make_data(folder, rows=..., features=...)` writes a synthetic linear data set of any size as
chunks, `.npy` (each filled through `numpy.lib.format.open_memmap`) or Parquet
(`file_format="parquet"`, written with pyarrow one row group at a time, see `_parquet`), so
at most one slice of 8192 rows is in memory, with `meta.json` beside them: the shapes, names,
chunk sizes and the true weights. Both formats hold the same float32 values for a seed.

`DataDir.open(folder)` checks it and reads it back one chunk at a time (`.npy` memory-mapped,
Parquet with pyarrow). `statistics(data, test_fraction)` makes ONE pass over every chunk and
returns the training split's `Scaling`, and float64 `Moments` of the training and test rows,
from which the exact solution and every figure `compare` reports (train and test MSE, test
R², the training objective) follow with no further pass.

`fit_stream(library, model, data, stats, config)` trains with the same compiled step as
`training.fit` (`training.runner`), fed one chunk at a time; the next chunk is read and
standardised on a background thread while the current one trains. With `mesh=` it trains
data-parallel over several devices, each chunk's rows split over them (`place_chunk`), as
`training.fit(..., mesh=)` does in memory; over several processes (`jax.distributed`) each
process reads from disk only the block of each chunk its devices hold (`chunk_block`), and
`statistics(..., shared=True)` reads each chunk in one process and gathers the float64 sums.

The split: the LAST `round(test_fraction * chunks)` chunks are the test set (at least one when
`test_fraction > 0` and there are two chunks or more; none for a one-chunk directory). Rows
are generated i.i.d., so whole chunks are as good a split as random rows, and it needs no
per-row mask.

What a streamed epoch shuffles: the order of the training chunks (a permutation from the
seed's "chunk_order" stream of that epoch) and the rows within each chunk (the seed's
"chunk_rows" stream of that epoch and chunk). A chunk's rows are cut into `batch_size`
batches; the rows left over (`chunk_rows % batch_size`) make one smaller batch, so EVERY row
is used exactly once per epoch (batches never span two chunks). Without a batch size each
chunk is one batch, in stored order. A batch size that divides the chunk size avoids the
smaller batches and the one extra compilation each distinct size costs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from jaxlinear._config import TrainConfig
from jaxlinear._errors import ConfigError, DataError, TrainingFailed
from jaxlinear._random import generator
from jaxlinear._scaling import _CONSTANT_COLUMN, Scaling
from jaxlinear._weights import LinearWeights
from jaxlinear.exact import GRAM_CONDITION_LIMIT, Moments

FORMAT = "jaxlinear-data"
VERSION = 1
META = "meta.json"
DEFAULT_CHUNK_ROWS = 65536
FILE_FORMATS = ("npy", "parquet")
SLICE_ROWS = 8192  # rows generated at once: float64 temporaries of a few MiB whatever the chunk
MAX_FEATURES = 4096  # a Gram matrix of 4096^2 float64 is 128 MiB: the statistics stay small


def _check_count(field: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(field, f"must be an integer >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(field, f"must be at most {high}, got {value}")
    return value


def make_data(
    folder: str | os.PathLike,
    *,
    rows: int,
    features: int,
    targets: int = 1,
    seed: int = 0,
    noise: float = 0.1,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    file_format: str = "npy",
    overwrite: bool = False,
    on_chunk: Callable[[int, int], None] | None = None,
) -> Path:
    """Writes `rows` rows of `y = x @ W + b + noise * e` into `folder`, chunk by chunk.

    Features have per-column means and scales of their own (so standardising matters);
    `W: [features, targets]`, `b: [targets]` are saved in `meta.json` (`true_weight`,
    `true_bias`). Chunk `i` is `x-0000i.npy: [rows_i, features]` and `y-0000i.npy:
    [rows_i, targets]`, float32, or with `file_format="parquet"` one file
    `chunk-0000i.parquet` of float32 columns `x0..` then `y0..` (`[rows_i]` each); every chunk
    has `chunk_rows` rows but the last. The values depend on `seed` only, not on the format.

    The directory is written under a temporary name beside `folder` and renamed into place
    when complete: an interrupted run leaves no half-written data set under `folder`.

    Raises:
      ConfigError: a bad count (`rows`, `features`, `targets`, `chunk_rows`), `noise` or
        `file_format`.
      DataError: `folder` exists (and `overwrite` is False, or it is not a data directory).
    """
    folder = check_make_data(
        folder,
        rows=rows,
        features=features,
        targets=targets,
        noise=noise,
        chunk_rows=chunk_rows,
        file_format=file_format,
        overwrite=overwrite,
    )
    rng = generator(seed, "stream_data")
    true_weight = rng.normal(size=(features, targets))
    true_bias = rng.normal(size=targets)
    x_mean = rng.normal(scale=2.0, size=features)
    x_scale = np.exp(rng.normal(scale=0.5, size=features))
    counts = [min(chunk_rows, rows - start) for start in range(0, rows, chunk_rows)]
    temporary = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    feature_names = [f"x{i}" for i in range(features)]
    target_names = [f"y{i}" for i in range(targets)]
    try:
        chunks = []
        for index, count in enumerate(counts):
            slices = _chunk_slices(
                generator(seed, "stream_data", index),
                count,
                x_mean=x_mean,
                x_scale=x_scale,
                weight=true_weight,
                bias=true_bias,
                noise=noise,
            )
            if file_format == "parquet":
                from jaxlinear import _parquet  # pyarrow only when a Parquet directory is wanted

                name = f"chunk-{index:05d}.parquet"
                _parquet.write_chunk(temporary / name, feature_names + target_names, slices)
                chunks.append({"file": name, "rows": count})
            else:
                names = (f"x-{index:05d}.npy", f"y-{index:05d}.npy")
                x = np.lib.format.open_memmap(
                    temporary / names[0], "w+", np.float32, (count, features)
                )
                y = np.lib.format.open_memmap(
                    temporary / names[1], "w+", np.float32, (count, targets)
                )
                first = 0
                for x_slice, y_slice in slices:
                    x[first : first + len(x_slice)] = x_slice
                    y[first : first + len(y_slice)] = y_slice
                    first += len(x_slice)
                x.flush()
                y.flush()
                del x, y
                chunks.append({"x": names[0], "y": names[1], "rows": count})
            if on_chunk is not None:
                on_chunk(index + 1, len(counts))
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "file_format": file_format,
            "dtype": "float32",
            "rows": rows,
            "features": features,
            "targets": targets,
            "chunk_rows": chunk_rows,
            "chunks": chunks,
            "feature_names": feature_names,
            "target_names": target_names,
            "seed": seed,
            "noise": noise,
            "true_weight": true_weight.tolist(),
            "true_bias": true_bias.tolist(),
        }
        (temporary / META).write_text(json.dumps(meta, indent=1) + "\n")
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            folder.rename(old)
            temporary.rename(folder)
            shutil.rmtree(old)
        else:
            temporary.rename(folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return folder


def _chunk_slices(
    rng: np.random.Generator, rows: int, *, x_mean, x_scale, weight, bias, noise: float
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One chunk's `rows` rows as float32 `(x [n, features], y [n, targets])` slices of at
    most SLICE_ROWS rows, drawn from `rng`. Both formats write these very slices, so a seed
    gives the same float32 values in either."""
    features, targets = weight.shape
    for first in range(0, rows, SLICE_ROWS):
        n = min(SLICE_ROWS, rows - first)
        x = rng.standard_normal((n, features)) * x_scale + x_mean
        y = x @ weight + bias + noise * rng.standard_normal((n, targets))
        yield x.astype(np.float32), y.astype(np.float32)


def check_make_data(
    folder, *, rows, features, targets, noise, chunk_rows, overwrite: bool, file_format="npy"
) -> Path:
    """The checks `make_data` runs before writing anything (see there); returns the `Path`."""
    if file_format not in FILE_FORMATS:
        raise ConfigError(
            "file_format", f"must be one of {', '.join(FILE_FORMATS)}, got {file_format!r}"
        )
    _check_count("rows", rows, 1)
    _check_count("features", features, 1, MAX_FEATURES)
    _check_count("targets", targets, 1, MAX_FEATURES)
    _check_count("chunk_rows", chunk_rows, 1)
    if not (isinstance(noise, int | float) and math.isfinite(noise) and noise >= 0):
        raise ConfigError("noise", f"must be a finite number >= 0, got {noise!r}")
    folder = Path(folder)
    if folder.exists() or folder.is_symlink():
        if not overwrite:
            raise DataError(f"{folder} already exists: choose another directory or --overwrite")
        if not _is_data_dir(folder) and not (folder.is_dir() and not any(folder.iterdir())):
            raise DataError(
                f"{folder} exists and is not a jaxlinear data directory: --overwrite replaces "
                "only those; choose another directory"
            )
    if not folder.resolve().parent.is_dir():
        raise DataError(f"the parent folder of {folder} does not exist: create it first")
    return folder


def _is_data_dir(folder: Path) -> bool:
    try:
        return json.loads((folder / META).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


@dataclasses.dataclass(frozen=True)
class DataDir:
    """A data directory written by `make_data`, checked.

    Holds no data: each chunk is read when asked for (`raw_chunk`) and copied. A `.npy`
    chunk is memory-mapped, copied, and unmapped again, so the pages read stay in the page
    cache and never count in this process's resident memory (a mapping kept open would: its
    RSS would grow with the data); a Parquet chunk is read with pyarrow one row group at a
    time, each copied out and its buffers released.

    Attributes:
      path: the directory.
      meta: its `meta.json`.
      x_files, y_files: per chunk, the files holding its `[rows_i, features]` and
        `[rows_i, targets]` float32: two `.npy` files, or the same Parquet file twice.
      chunk_rows: per chunk, its number of rows.
      file_format: `"npy"` or `"parquet"`.
    """

    path: Path
    meta: dict
    x_files: tuple[Path, ...]
    y_files: tuple[Path, ...]
    chunk_rows: tuple[int, ...]
    file_format: str = "npy"

    @classmethod
    def open(cls, folder: str | os.PathLike) -> DataDir:
        """Opens and checks `folder`: every chunk's file, shape and dtype against `meta.json`
        (for Parquet: each file's footer, its column names, their types and its row count;
        no data is read).

        Raises:
          DataError: not a data directory, or a chunk missing, truncated or of the wrong shape
            (columns, dtype or rows).
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"--data {folder} is not a directory")
        try:
            meta = json.loads((folder / META).read_text())
            if meta.get("format") != FORMAT:
                raise ValueError
            features, targets = int(meta["features"]), int(meta["targets"])
            if meta.get("file_format") == "parquet":
                chunks = [(c["file"], c["file"], int(c["rows"])) for c in meta["chunks"]]
                names = [*map(str, meta["feature_names"]), *map(str, meta["target_names"])]
            else:
                chunks = [(c["x"], c["y"], int(c["rows"])) for c in meta["chunks"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise DataError(
                f"--data {folder} is a folder, not a CSV file or a jaxlinear data directory "
                f"(no valid {META}); write one with `jaxlinear make-data DIR --rows N "
                "--features D`"
            ) from None
        file_format = meta.get("file_format")
        if meta.get("version") != VERSION or file_format not in FILE_FORMATS:
            raise DataError(
                f"{folder / META} is version {meta.get('version')} format {file_format}; this "
                f"jaxlinear reads version {VERSION} {' or '.join(FILE_FORMATS)}"
            )
        if not chunks:
            raise DataError(f"{folder / META} lists no chunks: write the directory again")
        if file_format == "parquet":
            from jaxlinear import _parquet  # pyarrow only for a Parquet directory

            if len(names) != features + targets:
                raise DataError(
                    f"{folder / META} names {len(names)} columns for {features} features and "
                    f"{targets} targets; write the directory again"
                )
            files = []
            for name, _, rows in chunks:
                path = folder / Path(name).name  # never a path outside the directory
                _parquet.check_chunk(path, names, rows)  # the footer only
                files.append(path)
            rows = tuple(chunk[2] for chunk in chunks)
            return cls(folder, meta, tuple(files), tuple(files), rows, file_format)
        xs, ys = [], []
        for x_name, y_name, rows in chunks:
            for name, width, into in ((x_name, features, xs), (y_name, targets, ys)):
                path = folder / Path(name).name  # never a path outside the directory
                _mapped(path, (rows, width))  # header, shape and size checked, then unmapped
                into.append(path)
        rows = tuple(chunk[2] for chunk in chunks)
        return cls(folder, meta, tuple(xs), tuple(ys), rows)

    @property
    def chunks(self) -> int:
        return len(self.chunk_rows)

    @property
    def in_features(self) -> int:
        return int(self.meta["features"])

    @property
    def out_features(self) -> int:
        return int(self.meta["targets"])

    @property
    def true_weights(self) -> LinearWeights:
        """The weights that generated the data (original scale), float64."""
        return LinearWeights(
            np.asarray(self.meta["true_weight"], np.float64),
            np.asarray(self.meta["true_bias"], np.float64),
        )

    def test_chunks(self, test_fraction: float) -> int:
        """How many of the last chunks are the test set (see the module docstring)."""
        if not (isinstance(test_fraction, int | float) and 0 <= test_fraction < 1):
            raise ConfigError("test_fraction", f"must be in [0, 1), got {test_fraction!r}")
        if self.chunks == 1 or test_fraction == 0:
            return 0
        return min(max(round(test_fraction * self.chunks), 1), self.chunks - 1)

    def raw_chunk(
        self, index: int, *, check: bool = True, start: int = 0, stop: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Chunk `index` read into memory: `x [rows, features]`, `y [rows, targets]` float32,
        checked finite unless `check` is False (training: `statistics` checked every chunk,
        and a NaN slipping in later still stops training as `TrainingDiverged`).

        With `start`/`stop`, only rows `start:stop` of the chunk are read from disk (`.npy`:
        that slice of the memory map copied; Parquet: the row groups holding them): what a
        process of a multi-process run trains on (`chunk_block`)."""
        rows = self.chunk_rows[index]
        stop = rows if stop is None else stop
        if self.file_format == "parquet":
            from jaxlinear import _parquet

            names = [*self.meta["feature_names"], *self.meta["target_names"]]
            x, y = _parquet.read_rows(
                self.x_files[index], names, rows, self.in_features, start, stop
            )
            read = ((self.x_files[index], x), (self.y_files[index], y))
        else:
            read = [
                # A copy of the rows asked for; the pages of the others are never touched.
                (path, np.array(_mapped(path, (rows, width))[start:stop]))
                for path, width in (
                    (self.x_files[index], self.in_features),
                    (self.y_files[index], self.out_features),
                )
            ]
        arrays = []
        for path, values in read:
            if check and not np.isfinite(values).all():
                raise DataError(
                    f"chunk {path.name} in {self.path} has NaN or infinite values; write the "
                    "directory again"
                )
            arrays.append(values)
        return arrays[0], arrays[1]


def _mapped(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """`path` memory-mapped read-only, checked to be float32 of `shape`; raises `DataError`."""
    try:
        values = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(
            f"chunk {path.name} in {path.parent} is missing or damaged "
            f"({' '.join(str(error).split())}); write the directory again"
        ) from None
    if values.shape != shape or values.dtype != np.float32:
        raise DataError(
            f"chunk {path.name} in {path.parent} holds {values.dtype} {values.shape}, not "
            f"float32 {shape} as {META} says; write the directory again"
        )
    return values


@dataclasses.dataclass(frozen=True)
class Statistics:
    """What one pass over a data directory gives.

    Attributes:
      scaling: the training chunks' means and standard deviations, with the names.
      train, test: float64 `Moments` of the training and test rows (original scale).
      train_chunks: indices of the training chunks; the rest are the test set.
    """

    scaling: Scaling
    train: Moments
    test: Moments
    train_chunks: tuple[int, ...]
    rows_read: int = 0  # rows this process read for them (its share, when shared)

    @property
    def n_train(self) -> int:
        return self.train.n

    @property
    def n_test(self) -> int:
        return self.test.n

    def exact(self, l2: float = 0.0) -> LinearWeights:
        """The exact minimiser of the training objective on the standardised scale (float64):
        `(Cxx_s + l2 I) W = Cxy_s` with the standardised covariances; the bias is 0 because
        standardised columns have mean 0."""
        s = self.scaling
        cov_xx = self.train.cov_xx / np.outer(s.x_scale, s.x_scale)
        cov_xy = self.train.cov_xy / np.outer(s.x_scale, s.y_scale)
        gram = cov_xx + l2 * np.eye(len(cov_xx))
        if np.linalg.cond(gram) <= GRAM_CONDITION_LIMIT:
            weight = np.linalg.solve(gram, cov_xy)
        else:
            weight = np.linalg.lstsq(gram, cov_xy, rcond=None)[0]
        return LinearWeights(weight, np.zeros(cov_xy.shape[1]))

    def objective(self, weights: LinearWeights, l2: float = 0.0) -> float:
        """The training objective of standardised-scale `weights` over the training rows."""
        original = self.scaling.weights_to_original(weights)
        per_output = self.train.mse_per_output(original) / self.scaling.y_scale**2
        penalty = np.sum(np.asarray(weights.weight, np.float64) ** 2)
        return float(0.5 * per_output.sum() + 0.5 * l2 * penalty)

    def evaluate(self, weights: LinearWeights) -> dict[str, float]:
        """`train_mse`, `test_mse`, `test_r2` on the original scale, as `_compare.evaluate`."""
        original = self.scaling.weights_to_original(weights)
        train = float(np.mean(self.train.mse_per_output(original)))
        if self.test.n == 0:
            return {"train_mse": train, "test_mse": math.nan, "test_r2": math.nan}
        test = self.test.mse_per_output(original)
        variance = self.test.var_y
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(variance > 0, 1 - test / variance, np.where(test == 0, 1.0, 0.0))
        r2_mean = float(np.mean(r2)) if self.test.n >= 2 else math.nan
        return {"train_mse": train, "test_mse": float(np.mean(test)), "test_r2": r2_mean}


def statistics(
    data: DataDir,
    test_fraction: float,
    *,
    on_chunk: Callable[[int, int], None] | None = None,
    shared: bool = False,
) -> Statistics:
    """One pass over every chunk: the training split's scaling and both splits' moments.

    With `shared` in a multi-process run (`jax.distributed`), the pass is shared: chunk `i`
    is read by process `i % processes` alone (`_shared_moments`), and every process ends with
    the very same `Statistics`, bit for bit those of one process reading every chunk. Every
    process must call it (it gathers).
    """
    n_test = data.test_chunks(test_fraction)
    train_ids = tuple(range(data.chunks - n_test))
    train = Moments(data.in_features, data.out_features)
    test = Moments(data.in_features, data.out_features)
    rows_read = 0
    if shared and _process_count() > 1:
        rows_read = _shared_moments(data, train_ids, train, test, on_chunk)
    else:
        for index in range(data.chunks):
            x, y = data.raw_chunk(index)
            (train if index in train_ids else test).add(x, y)
            rows_read += len(x)
            if on_chunk is not None:
                on_chunk(index + 1, data.chunks)
    x_scale = _scale(train.cov_xx.diagonal(), train.x_mean)
    y_scale = _scale(train.var_y, train.y_mean)
    scaling = Scaling(
        train.x_mean,
        x_scale,
        train.y_mean,
        y_scale,
        tuple(data.meta["feature_names"]),
        tuple(data.meta["target_names"]),
    )
    return Statistics(scaling, train, test, train_ids, rows_read)


def _process_count() -> int:
    import jax

    return jax.process_count()


def _gather_float64(values: np.ndarray) -> np.ndarray:
    """`values: [m]` float64 of every process, `[processes, m]`, bit for bit: sent as
    uint32 halves (jax without x64 would round float64 to float32; a gather adds nothing)."""
    from jax.experimental import multihost_utils

    halves = np.ascontiguousarray(values, np.float64).view(np.uint32)
    gathered = np.asarray(multihost_utils.process_allgather(halves)).astype(np.uint32)
    return np.ascontiguousarray(gathered).view(np.float64)


_NO_CHUNK, _READ, _FAILED = 0.0, 1.0, 2.0  # what a process sends first for a chunk


def _check_gathered(statuses, chunks: list[int], data: DataDir, error) -> None:
    """Raises, in every process, if any process failed to read its chunk: its own
    `DataError` in that process, a line naming the chunk and the process in the others."""
    for process, (status, chunk) in enumerate(zip(statuses, chunks, strict=True)):
        if status == _FAILED:
            if error is not None:
                raise error
            raise DataError(
                f"chunk {chunk} of {data.path} could not be read by process {process} (its "
                "own error says why); write the directory again"
            )


def _shared_moments(data: DataDir, train_ids, train: Moments, test: Moments, on_chunk) -> int:
    """Fills `train` and `test` as `statistics` does on one process, each chunk read by one
    process; returns the rows this process read.

    First the owners of each split's first chunk send its float64 column means (the shift
    `Moments.add` takes from a first chunk); then, in rounds of one chunk a process, each
    process sends its chunk's float64 sums about that shift (`Moments.sums`), and every
    process adds all of them in chunk order (`Moments.add_sums`): the same additions in the
    same order as one process makes, hence the same bits. Sent bit for bit (`_gather_float64`),
    never through float32. A round holds `processes` chunks' sums (`in^2` float64 each).
    """
    import jax

    processes, me = jax.process_count(), jax.process_index()
    features, targets = data.in_features, data.out_features
    firsts = [(train, train_ids[0])]
    if len(train_ids) < data.chunks:
        firsts.append((test, len(train_ids)))
    held, rows_read, error = {}, 0, None  # a split's first chunk, kept for its round

    def read(chunk: int):
        nonlocal rows_read, error
        if chunk in held:
            return held.pop(chunk)
        try:
            x, y = data.raw_chunk(chunk)
        except DataError as failed:
            error = failed
            return None
        rows_read += len(x)
        return x, y

    payload = []
    for _, first in firsts:
        status, shift = _NO_CHUNK, np.zeros(features + targets)
        if first % processes == me:
            chunk = read(first)
            status = _FAILED if chunk is None else _READ
            if chunk is not None:
                held[first] = chunk
                shift = np.concatenate(Moments.chunk_shift(*chunk))
        payload.append(np.concatenate([[status], shift]))
    gathered = _gather_float64(np.concatenate(payload))
    for split, (moments, first) in enumerate(firsts):
        row = gathered[first % processes, split * (1 + features + targets) :]
        _check_gathered([row[0]], [first], data, error)
        moments.set_shift(row[1 : 1 + features], row[1 + features : 1 + features + targets])

    width = 2 + features + targets + features * features + features * targets + targets
    for round_start in range(0, data.chunks, processes):
        chunk = round_start + me
        message = np.zeros(width)
        if chunk < data.chunks:
            values = read(chunk)
            message[0] = _FAILED if values is None else _READ
            if values is not None:
                moments = train if chunk in train_ids else test
                n, *sums = moments.sums(*values)
                message[1:] = np.concatenate([[n], *(np.ravel(part) for part in sums)])
        gathered = _gather_float64(message)
        chunks = [round_start + process for process in range(processes)]
        _check_gathered(gathered[:, 0], chunks, data, error)
        for process, row in enumerate(gathered):
            if chunks[process] >= data.chunks:
                continue
            bounds = np.cumsum([2, features, targets, features * features, features * targets])
            sx, sy, sxx, sxy, syy = np.split(row, bounds)[1:]
            (train if chunks[process] in train_ids else test).add_sums(
                (
                    int(row[1]),
                    sx,
                    sy,
                    sxx.reshape(features, features),
                    sxy.reshape(features, targets),
                    syy,
                )
            )
        if on_chunk is not None:
            on_chunk(min(round_start + processes, data.chunks), data.chunks)
    return rows_read


def _scale(variance: np.ndarray, mean: np.ndarray) -> np.ndarray:
    scale = np.sqrt(np.maximum(variance, 0.0))
    constant = scale <= _CONSTANT_COLUMN * np.maximum(np.abs(mean), 1.0)  # as `Scaling.fit`
    return np.where(constant, 1.0, scale)


def standardise(scaling: Scaling, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Original-scale float32 rows -> the float32 standardised rows the models train on.

    In float32, in place on one copy: on the background thread this is what streaming costs
    per chunk besides the read (5 ms for 65536 x 64 here, against 24 ms through float64).
    The rounding error is about 1e-7 * max(|x|, |mean|) / scale per value, the size of
    float32's own rounding of the standardised value when the mean is near the spread.
    """
    out = []
    for values, mean, scale in (
        (x, scaling.x_mean, scaling.x_scale),
        (y, scaling.y_mean, scaling.y_scale),
    ):
        values = np.array(values, np.float32)  # a copy, whatever the input
        np.subtract(values, mean.astype(np.float32), out=values)
        np.divide(values, scale.astype(np.float32), out=values)
        out.append(values)
    return out[0], out[1]


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    """One training chunk's share of an epoch.

    Attributes:
      chunk: the chunk's index in the directory.
      batches: `[steps, batch_size]` int32 row indices within the chunk; `[1, 0]` (empty)
        means one step on the whole chunk in stored order.
      rest: `[rows % batch_size]` the left-over rows, one smaller batch; empty when none.
    """

    chunk: int
    batches: np.ndarray
    rest: np.ndarray

    @property
    def steps(self) -> int:
        return len(self.batches) + (len(self.rest) > 0)


def chunk_order(train_chunks: tuple[int, ...], seed: int, epoch: int) -> list[int]:
    """The training chunks in the order epoch `epoch` visits them."""
    return generator(seed, "chunk_order", epoch).permutation(np.asarray(train_chunks)).tolist()


def chunk_plan(rows: int, batch_size: int | None, seed: int, epoch: int, chunk: int) -> ChunkPlan:
    """The batches of chunk `chunk` (of `rows` rows) in epoch `epoch`.

    Made when the chunk is reached, not for the whole epoch at once: a permutation is 4 bytes
    a row, which for every chunk of a large directory would grow with the data (seen: 52 MiB
    more peak memory at 4 GiB of data than at 1 GiB).
    """
    if batch_size is None or batch_size >= rows:
        return ChunkPlan(chunk, np.zeros((1, 0), np.int32), np.zeros(0, np.int32))
    permutation = np.arange(rows, dtype=np.int32)
    generator(seed, "chunk_rows", epoch, chunk).shuffle(permutation)
    steps = rows // batch_size
    return ChunkPlan(
        chunk,
        permutation[: steps * batch_size].reshape(steps, batch_size),
        permutation[steps * batch_size :],
    )


def epoch_plan(
    chunk_rows: tuple[int, ...],
    train_chunks: tuple[int, ...],
    batch_size: int | None,
    seed: int,
    epoch: int,
) -> Iterator[ChunkPlan]:
    """Epoch `epoch`'s chunks in order and the batches of each, one chunk at a time (see the
    module docstring). Every row of every training chunk appears in exactly one batch."""
    for chunk in chunk_order(train_chunks, seed, epoch):
        yield chunk_plan(chunk_rows[chunk], batch_size, seed, epoch, chunk)


def steps_per_epoch(chunk_rows, train_chunks, batch_size: int | None) -> int:
    """Optimizer steps in one streamed epoch (the same every epoch)."""
    if batch_size is None:
        return len(train_chunks)
    rows = [chunk_rows[chunk] for chunk in train_chunks]
    return sum(max(n // batch_size, 1) + (batch_size < n and n % batch_size > 0) for n in rows)


def check_batch_split(
    chunk_rows: tuple[int, ...], train_chunks: tuple[int, ...], batch_size: int | None, devices: int
) -> None:
    """Raises `ConfigError` unless every mini-batch of a streamed epoch splits evenly over
    `devices`, as `training.check_batch_split` does in memory. A batch size at or above the
    largest training chunk makes every chunk one whole batch, which is always accepted."""
    from jaxlinear.training import check_batch_split as check

    check(batch_size, max(chunk_rows[chunk] for chunk in train_chunks), devices)


def place_chunk(x: np.ndarray, y: np.ndarray, plan: ChunkPlan, mesh) -> tuple[Any, Any]:
    """One chunk's standardised rows, `x: [rows, in]` and `y: [rows, out]`, placed for
    data-parallel steps over a one-process `mesh`: device arrays whose rows are split over
    the mesh's data axis.

    Placed by `training.place_batches`: zero rows are appended up to a multiple of the device
    count (a device array's rows must split evenly). Mini-batches, and the chunk's rest batch
    (`rest_batch`), are drawn from the real rows only. A whole-chunk batch (`plan.batches`
    empty) takes every row, so its `y` becomes `WeightedTargets` whose padding rows weigh 0
    and real rows `(rows + pad) / rows`: the weighted mean over all rows is the mean over the
    real ones.
    """
    from jaxlinear.training import place_batches

    batch_size = plan.batches.shape[1] or None
    return place_batches(x, y, TrainConfig(batch_size=batch_size), mesh)[:2]


def chunk_block(rows: int, mesh) -> tuple[int, int, int]:
    """`(start, stop, padded)`: the rows of a `rows`-row chunk this process places on a mesh
    that spans several processes.

    The chunk is padded to `padded` rows, the next multiple of the mesh's device count (as
    `place_chunk` pads it on one process), and split by rows over the devices
    (`NamedSharding(mesh, P(DATA_AXIS))`); `start:stop` is the block of the padded rows that
    this process's devices hold (`training.process_block`). Rows from `rows` on are padding:
    only `start:min(stop, rows)` are read from disk.
    """
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxlinear.training import DATA_AXIS, process_block

    padded = rows + -rows % mesh.devices.size
    start, stop = process_block(NamedSharding(mesh, P(DATA_AXIS)), (padded,))
    return start, stop, padded


def place_chunk_block(
    x: np.ndarray, y: np.ndarray, plan: ChunkPlan, mesh, rows: int, start: int, stop: int
) -> tuple[Any, Any]:
    """This process's block of a chunk, `x: [real, in]`, `y: [real, out]` (its standardised
    rows `start:min(stop, rows)`, see `chunk_block`), made into the global chunk arrays of a
    multi-process mesh with `jax.make_array_from_process_local_data`: the same arrays
    `place_chunk` makes on one process from the whole chunk, no process sending rows to
    another.

    Zero rows fill the block up to `stop` where it runs past the chunk's `rows`. For a
    whole-chunk batch (`plan.batches` empty) on a padded chunk, `y` becomes `WeightedTargets`
    whose padding rows weigh 0 and real rows `(rows + pad) / rows` in float32, as
    `training.place_batches` weighs them; mini-batches never index the padding.
    """
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxlinear.training import DATA_AXIS, WeightedTargets

    padded = rows + -rows % mesh.devices.size
    fill = (stop - start) - len(x)
    if fill:
        x = np.concatenate([x, np.zeros((fill, x.shape[1]), x.dtype)])
        y = np.concatenate([y, np.zeros((fill, y.shape[1]), y.dtype)])
    if padded > rows and plan.batches.shape[1] == 0:
        real = np.arange(start, stop) < rows
        y = WeightedTargets(y, np.where(real, np.float32(padded / rows), np.float32(0)))
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    return jax.tree.map(
        lambda values: jax.make_array_from_process_local_data(
            sharding, values, (padded, *values.shape[1:])
        ),
        (x, y),
    )


def _gather(x, y, indices, weights):
    """Rows `indices` of the placed `x`, `y`, split over the mesh set with `jax.set_mesh`;
    `y` weighted by `weights` unless they are `None` (see `rest_batch`)."""
    from jaxlinear.training import WeightedTargets, split_batch

    x, y = x[indices], y[indices]
    return split_batch((x, y if weights is None else WeightedTargets(y, weights)))


_gathered = None  # `jax.jit(_gather)`, made on first use: this module does not import jax


def rest_batch(x, y, rest: np.ndarray, devices: int) -> tuple[Any, Any]:
    """A chunk's rest batch (`plan.rest`, any number of rows) gathered on the devices from
    the placed chunk `x`, `y` (rows split over the mesh, possibly over several processes),
    for one step on all its rows (`take_batch` with empty indices).

    The indices are padded to a multiple of `devices` with row 0, which weighs 0 in
    `WeightedTargets`, the real rows weighing `(n + pad) / n`: the step's loss is the mean
    over the real rest rows, as on one device. Gathered on the devices, not on the host,
    because over several processes each holds only its block of the chunk; the same way on
    one process. Run inside `jax.set_mesh(mesh)`; every process calls it with the same
    `rest`.
    """
    global _gathered
    import jax

    if _gathered is None:
        _gathered = jax.jit(_gather)
    n = len(rest)
    pad = -n % devices
    indices = np.concatenate([rest, np.zeros(pad, rest.dtype)])
    weights = None
    if pad:
        weights = np.where(np.arange(n + pad) < n, np.float32((n + pad) / n), np.float32(0))
    return _gathered(x, y, indices, weights)


@dataclasses.dataclass
class StreamFit:
    """`training.FitResult` of a streamed run, the wall time of each epoch (seconds, chunk
    reading included; the first epoch also compiles), and how many chunk rows this process
    read from disk for training over all its epochs (on a multi-process mesh: its blocks
    only; the statistics pass is not counted)."""

    fit: Any
    epoch_seconds: list[float]
    rows_read: int = 0


def _prefetched(load: Callable[[int], Any], indices: list[int]) -> Iterator[Any]:
    """`load(i)` for each of `indices`, the next one loading on a thread while the caller
    works on the current one (NumPy and file reads release the GIL)."""
    if not indices:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="jaxlinear-chunks") as pool:
        pending = pool.submit(load, indices[0])
        for following in [*indices[1:], None]:
            current = pending.result()
            if following is not None:
                pending = pool.submit(load, following)
            yield current


def fit_stream(
    library,
    model: Any,
    data: DataDir,
    stats: Statistics,
    config: TrainConfig,
    *,
    on_epoch: Callable[[int, float], None] | None = None,
    on_chunk: Callable[[int, int, int], None] | None = None,
    start=None,
    checkpoint_every: int | None = None,
    on_checkpoint: Callable[[Any], None] | None = None,
    require_progress: bool = True,
    mesh=None,
) -> StreamFit:
    """Trains a copy of `model` on the training chunks of `data`, one chunk in memory at a time.

    The same step as `training.fit` (from `training.runner`, in `config.step_mode`) runs on
    each chunk's batches (see `epoch_plan`); the chunk after it is read and standardised on a
    background thread meanwhile. The step is a pure function of (state, batch), so the result
    equals in-memory training on the same rows in the same order (tested).

    Args:
      library: a library module or registered `Library`.
      model: that library's model, left untouched.
      data, stats: the directory and its `statistics` (the scaling and the objective).
      config: as for `training.fit`; `batch_size` None means one step per chunk.
      on_epoch: `(epochs_done, last_loss)` after each epoch.
      on_chunk: `(epoch, chunks_done, chunks_per_epoch)` after each chunk (a progress bar).
      start, checkpoint_every, on_checkpoint: resume and checkpoints at epoch boundaries, as
        for `training.fit`; a resumed run ends bitwise where the uninterrupted one does.
      require_progress: raise `TrainingFailed` if the run ends above its starting objective.
      mesh: train data-parallel over this mesh, as `training.fit` does: the library's
        `shard` places its training object replicated, the loader thread places each
        chunk's rows over the devices, and the steps run under `jax.set_mesh(mesh)`, where
        every batch is split along the data axis. `None`: one device. On a one-process
        mesh (`training.data_mesh`) the loader reads the whole chunk (`place_chunk`); on a
        mesh over several processes (`jax.distributed`) each process reads from disk only
        its block of each chunk (`chunk_block`, `place_chunk_block`). On either, a chunk's
        rest batch is gathered on the devices (`rest_batch`). Every process passes the same
        `stats`.

    Sizes that do not divide the device count (with `mesh`): a mini-batch size must be a
    multiple of it (`ConfigError`, as in memory); a whole-chunk batch and a chunk's rest
    batch of any size are padded with zero rows that weigh 0, their real rows weighing
    `(rows + pad) / rows`, so each step's loss and gradient are the mean over its real rows,
    as on one device (see `place_chunk` and `rest_batch`).

    Raises:
      ConfigError: an invalid setting, a `start` that does not fit, or (with `mesh`) a
        mini-batch size that is not a multiple of the number of devices.
    """
    import contextlib

    import jax

    from jaxlinear import training as driver

    library = getattr(library, "module", library)
    config.validate()
    if checkpoint_every is not None:
        driver._check_positive_int("checkpoint_every", checkpoint_every)
    chunk_rows = data.chunk_rows
    several = mesh is not None and mesh.is_multi_process
    if mesh is not None:
        check_batch_split(chunk_rows, stats.train_chunks, config.batch_size, mesh.devices.size)
    steps = steps_per_epoch(chunk_rows, stats.train_chunks, config.batch_size)
    optimizer = driver.make_optimizer(config, stats.n_train, total_steps=config.epochs * steps)
    training = library.init_training(model, optimizer)
    first_epoch = 0
    if start is not None:
        first_epoch = driver._resume_epoch(start, library.NAME, steps, config.epochs)
        static, fresh = library.split(training)
        saved = start.arrays
        if several:  # as in `training.fit`: a checkpoint's arrays sit on this process's device
            saved = jax.tree.map(lambda leaf: jax.numpy.asarray(np.asarray(leaf)), saved)
        training = library.merge(static, driver._with_leaves_of(saved, fresh))
    initial_objective = stats.objective(library.to_canonical(library.model_of(training)), config.l2)
    if mesh is not None:
        training = library.shard(training, mesh)
    drive = driver.runner(library, training, config)
    state = drive.state

    def load(epoch: int, chunk: int):
        """`(plan, (x, y), rows_read)`: the chunk's batches, its rows on the device(s), and
        the rows read."""
        rows = chunk_rows[chunk]
        plan = chunk_plan(rows, config.batch_size, config.seed, epoch, chunk)
        if several:  # this process's block of the chunk only, read and placed
            start, stop, _ = chunk_block(rows, mesh)
            low, high = min(start, rows), min(stop, rows)
            raw = data.raw_chunk(chunk, check=False, start=low, stop=high)
            read = len(raw[0])  # counted as read from disk, the proof of the shares (tests)
            x, y = standardise(stats.scaling, *raw)
            return plan, place_chunk_block(x, y, plan, mesh, rows, start, stop), read
        x, y = standardise(stats.scaling, *data.raw_chunk(chunk, check=False))
        if mesh is None:
            return plan, (jax.device_put(x), jax.device_put(y)), rows
        return plan, place_chunk(x, y, plan, mesh), rows

    all_losses, epoch_seconds, first_call, rows_read = [], [], None, 0
    steady_seconds, steady_steps = 0.0, 0
    whole = np.zeros((1, 0), np.int32)  # indices meaning "every row" (`take_batch`)
    # Under the mesh every batch is split over its devices (`training.take_batch`).
    with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
        for epoch in range(first_epoch, config.epochs):
            began = time.perf_counter()
            order = chunk_order(stats.train_chunks, config.seed, epoch)
            losses = []
            chunks = _prefetched(lambda chunk, epoch=epoch: load(epoch, chunk), order)
            for done, (plan, (x, y), read) in enumerate(chunks, 1):
                rows_read += read
                call_began = time.perf_counter()
                state, chunk_losses = drive.run(state, x, y, plan.batches)
                chunk_losses = list(np.asarray(chunk_losses).reshape(-1))
                if len(plan.rest):
                    if mesh is None:
                        state, rest_losses = drive.run(state, x, y, plan.rest[None])
                    else:  # gathered on the devices, padded, weighted (`rest_batch`)
                        rest = rest_batch(x, y, plan.rest, mesh.devices.size)
                        state, rest_losses = drive.run(state, *rest, whole)
                    chunk_losses += list(np.asarray(rest_losses).reshape(-1))
                seconds = time.perf_counter() - call_began
                if first_call is None:
                    first_call = seconds
                else:
                    steady_seconds, steady_steps = (
                        steady_seconds + seconds,
                        steady_steps + plan.steps,
                    )
                losses.extend(chunk_losses)
                if on_chunk is not None:
                    on_chunk(epoch, done, len(order))
            losses = np.asarray(losses, np.float32)
            driver._check_finite(losses, epoch * steps, config)
            all_losses.append(losses)
            epoch_seconds.append(time.perf_counter() - began)
            if on_epoch is not None:
                on_epoch(epoch + 1, float(losses[-1]))
            epochs_done = epoch + 1
            if on_checkpoint is not None and (
                epochs_done % checkpoint_every == 0 or epochs_done == config.epochs
            ):
                static, arrays = library.split(drive.finish(state))
                arrays = jax.tree.map(lambda leaf: leaf, arrays)  # a snapshot, as in `fit`
                on_checkpoint(
                    driver.TrainingState(library.NAME, static, arrays, epochs_done * steps)
                )
        training = drive.finish(state)
    trained = library.model_of(training)
    final_objective = stats.objective(library.to_canonical(trained), config.l2)
    if require_progress and final_objective > initial_objective * (1 + driver._WORSE_RTOL):
        raise TrainingFailed(
            f"training made the model worse: the objective rose from {initial_objective:.6g} "
            f"to {final_objective:.6g} with {config.optimizer} at learning rate "
            f"{config.learning_rate:g}; {driver._likely_cause(config)}"
        )
    static, arrays = library.split(training)
    ms_per_step = 1e3 * steady_seconds / steady_steps if steady_steps else math.nan
    fit = driver.FitResult(
        model=trained,
        training=training,
        state=driver.TrainingState(library.NAME, static, arrays, step=config.epochs * steps),
        losses=np.concatenate(all_losses) if all_losses else np.zeros(0, np.float32),
        initial_objective=initial_objective,
        final_objective=final_objective,
        compile_seconds=first_call or 0.0,
        ms_per_step=ms_per_step,
    )
    return StreamFit(fit, epoch_seconds, rows_read)
