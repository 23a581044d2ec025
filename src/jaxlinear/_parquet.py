"""Parquet chunks of a data directory (`make-data --format parquet`), written and read with pyarrow.

A chunk is one file, `chunk-NNNNN.parquet`, holding the feature columns then the target
columns, named as in `meta.json` (`x0..`, `y0..`), float32, in row groups of one written
slice each (8192 rows). Imported only when a Parquet directory is written or opened, so the
command line and `.npy` directories never import pyarrow.

Written uncompressed, without dictionary encoding and with a CRC per page: random floats do
not compress (snappy made a 65536 x 65 chunk 0.02% larger, not smaller), dictionary
encoding would only be tried and abandoned, and the page checksums, verified on every read,
turn a damaged value into an error instead of a wrong number (a damaged page header or footer
fails to parse). The reader takes any codec pyarrow reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jaxlinear._errors import DataError

# What pyarrow raises for a file it cannot read: OSError (ArrowIOError, a missing file),
# ValueError (ArrowInvalid, bad magic bytes or a bad footer), or another ArrowException.
_READ_ERRORS = (OSError, ValueError, pa.ArrowException)
BATCH_ROWS = 8192  # rows pyarrow decodes at once when reading: 2 MiB at 64 float32 columns


def write_chunk(
    path: Path, names: Sequence[str], slices: Iterable[tuple[np.ndarray, np.ndarray]]
) -> None:
    """Writes one chunk to `path`, one row group per slice.

    Args:
      path: the new file.
      names: the column names, the features' then the targets'.
      slices: `(x [n, features], y [n, targets])` float32 pairs, in row order; only one is in
        memory at a time (with its column-major copy).
    """
    schema = pa.schema([pa.field(name, pa.float32(), nullable=False) for name in names])
    with pq.ParquetWriter(
        path, schema, compression="none", use_dictionary=False, write_page_checksum=True
    ) as writer:
        for x, y in slices:
            # Column-major, so every column is a contiguous row that pyarrow wraps without a copy.
            columns = np.concatenate([x, y], axis=1).T.copy()
            writer.write_batch(pa.record_batch(list(columns), schema=schema))


def check_chunk(path: Path, names: Sequence[str], rows: int) -> None:
    """Checks the chunk at `path` from its footer alone (no data is read): readable, the
    columns `names` in that order, float32, and `rows` rows. Raises a one-line `DataError`."""
    where = f"chunk {path.name} in {path.parent}"
    try:
        # Not `pq.read_metadata(path).schema`: that `ParquetSchema` and its `FileMetaData`
        # refer to each other, so each footer stayed in memory until Python's cycle collector
        # ran (seen: checking 252 chunk files left 71 MiB more resident than checking 63).
        with pq.ParquetFile(path) as file:
            schema, count = file.schema_arrow, file.metadata.num_rows
    except _READ_ERRORS as error:
        raise _damaged(where, error) from None
    if list(schema.names) != list(names):
        raise DataError(
            f"{where} has the columns {_listed(schema.names)}, not {_listed(names)} as "
            "meta.json says; write the directory again"
        )
    for field in schema:
        if field.type != pa.float32():
            raise DataError(
                f"{where} holds column {field.name} as {field.type}, not float32 as meta.json "
                "says; write the directory again"
            )
    if count != rows:
        raise DataError(
            f"{where} has {count} rows, not {rows} as meta.json says; write the directory again"
        )


def read_chunk(
    path: Path, names: Sequence[str], rows: int, features: int
) -> tuple[np.ndarray, np.ndarray]:
    """The chunk at `path` read into memory: `x [rows, features]`, `y [rows, targets]` float32,
    C-contiguous, as from a `.npy` chunk.

    Read in batches of at most `BATCH_ROWS` rows; pyarrow lays each batch out row-major
    (`RecordBatch.to_tensor`, float32 to float32: no float64 round trip) and it is copied
    into place, and the batch's buffers are dropped before the next is read, so pyarrow
    holds about one batch at a time (a few MiB), never the chunk. Page checksums are
    verified where the file has them (`write_chunk` writes them). Raises a one-line
    `DataError` if the file is unreadable or no longer matches what `check_chunk` checked.
    """
    return read_rows(path, names, rows, features, 0, rows)


def read_rows(
    path: Path, names: Sequence[str], rows: int, features: int, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows `start:stop` of the `rows`-row chunk at `path`: `x [stop - start, features]`,
    `y [stop - start, targets]` float32, as `read_chunk` reads the whole chunk.

    Only the row groups that hold some of those rows are read and decoded (the footer says
    where each begins), so a process of a multi-process run that trains on one block of a
    chunk reads about that block from disk, not the chunk. Raises as `read_chunk`.
    """
    where = f"chunk {path.name} in {path.parent}"
    if not 0 <= start <= stop <= rows:
        raise ValueError(f"rows {start}:{stop} are not within the {rows} rows of {where}")
    x = np.empty((stop - start, features), np.float32)
    y = np.empty((stop - start, len(names) - features), np.float32)
    if start == stop:
        return x, y
    done = 0
    try:
        with pq.ParquetFile(path, page_checksum_verification=True) as file:
            metadata = file.metadata
            if metadata.num_rows != rows:
                raise DataError(
                    f"{where} does not hold the {rows} rows its footer and meta.json say; "
                    "write the directory again"
                )
            groups, first, offset = [], None, 0  # the row groups overlapping start:stop
            for group in range(metadata.num_row_groups):
                count = metadata.row_group(group).num_rows
                if offset < stop and offset + count > start:
                    first = offset if first is None else first
                    groups.append(group)
                offset += count
            # No pyarrow thread pool: this already runs on the prefetch thread beside training,
            # and on 2 cores the pool made streamed epochs slower (1.7-2.2 s against 1.3-2.0 s
            # at 1 GiB) and the peak RSS higher (453-469 MiB against 396-398 MiB).
            batches = file.iter_batches(
                batch_size=BATCH_ROWS, row_groups=groups, columns=list(names), use_threads=False
            )
            position = first or 0  # the chunk row the next batch begins at
            for batch in batches:
                _check_batch(batch, where)
                low, high = max(start, position), min(stop, position + batch.num_rows)
                if high > low:
                    # Row-major in C++ (to_tensor), then one contiguous copy: about twice as
                    # fast here as copying each column into a strided column of `x`.
                    part = batch.slice(low - position, high - low)
                    values = part.to_tensor(row_major=True).to_numpy()
                    x[low - start : high - start] = values[:, :features]
                    y[low - start : high - start] = values[:, features:]
                    done += high - low
                    del part, values
                position += batch.num_rows
                del batch  # pyarrow's buffers go before the next batch is read
                if position >= stop:
                    break
    except DataError:
        raise
    except _READ_ERRORS as error:
        raise _damaged(where, error) from None
    if done != stop - start:
        raise DataError(
            f"{where} does not hold the {rows} rows its footer and meta.json say; write the "
            "directory again"
        )
    return x, y


def _check_batch(batch: pa.RecordBatch, where: str) -> None:
    """float32 columns without nulls, or a `DataError` (the file changed since it was opened,
    or holds nulls, which a footer alone does not show)."""
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if field.type != pa.float32() or column.null_count:
            raise DataError(
                f"{where} holds column {field.name} as {field.type} with {column.null_count} "
                "missing values, not float32 without any; write the directory again"
            )


def _damaged(where: str, error: BaseException) -> DataError:
    return DataError(
        f"{where} is missing or damaged ({_one_line(error)}); write the directory again"
    )


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _listed(names: Sequence[str]) -> str:
    """Column names for a one-line message: all of them if few, else the ends."""
    names = list(names)
    if len(names) <= 8:
        return ", ".join(names) or "(none)"
    return f"{', '.join(names[:3])}, ..., {', '.join(names[-2:])} ({len(names)} columns)"
