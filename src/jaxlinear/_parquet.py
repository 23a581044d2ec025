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
        metadata = pq.read_metadata(path)
        schema = metadata.schema.to_arrow_schema()
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
    if metadata.num_rows != rows:
        raise DataError(
            f"{where} has {metadata.num_rows} rows, not {rows} as meta.json says; write the "
            "directory again"
        )


def read_chunk(
    path: Path, names: Sequence[str], rows: int, features: int
) -> tuple[np.ndarray, np.ndarray]:
    """The chunk at `path` read into memory: `x [rows, features]`, `y [rows, targets]` float32,
    C-contiguous, as from a `.npy` chunk.

    Read one row group at a time and copied column by column out of pyarrow's buffers
    (float32 throughout, no float64 round trip); each row group's buffers are released
    before the next is read, so pyarrow never holds more than one row group. Page checksums
    are verified. Raises a one-line `DataError` if the file is unreadable or no longer
    matches what `check_chunk` checked.
    """
    where = f"chunk {path.name} in {path.parent}"
    x = np.empty((rows, features), np.float32)
    y = np.empty((rows, len(names) - features), np.float32)
    try:
        file = pq.ParquetFile(path, page_checksum_verification=True)
    except _READ_ERRORS as error:
        raise _damaged(where, error) from None
    done = 0
    with file:
        for group in range(file.num_row_groups):
            try:
                batch = file.read_row_group(group, columns=list(names))
            except _READ_ERRORS as error:
                raise _damaged(where, error) from None
            if done + batch.num_rows > rows:
                break
            _copy_columns(batch, x, y, done, where)
            done += batch.num_rows
            del batch  # pyarrow's buffers go before the next row group is read
    if done != rows:
        raise DataError(
            f"{where} does not hold the {rows} rows its footer and meta.json say; write the "
            "directory again"
        )
    return x, y


def _copy_columns(batch: pa.Table, x: np.ndarray, y: np.ndarray, first: int, where: str) -> None:
    """Copies `batch`'s columns into rows `first:` of `x` then `y` (float32 to float32)."""
    features = x.shape[1]
    for index, column in enumerate(batch.columns):
        name = batch.column_names[index]
        if column.type != pa.float32() or column.null_count:
            raise DataError(
                f"{where} holds column {name} as {column.type} with {column.null_count} "
                "missing values, not float32 without any; write the directory again"
            )
        into, at = (x, index) if index < features else (y, index - features)
        row = first
        for piece in column.chunks:
            into[row : row + len(piece), at] = piece.to_numpy(zero_copy_only=True)
            row += len(piece)


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
