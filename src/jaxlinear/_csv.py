"""Reading a numeric CSV file with a header row; every problem is a one-line `DataError`.

pandas parses; this module checks what pandas lets pass and names lines of the file (the
header is line 1). Past the header and first row, the csv module re-reads the file only on the
way to an error.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import itertools
import os
from collections.abc import Iterator, Sequence

import numpy as np

from jaxlinear._errors import DataError

# Squares and products of larger values overflow float64 (max ~1.8e308) in a least-squares fit.
MAX_MAGNITUDE = 1e150


@dataclasses.dataclass(frozen=True)
class Table:
    """Numeric columns read from a CSV file.

    Attributes:
      features: `[n_rows, n_features]` float64.
      targets: `[n_rows, n_targets]` float64 (n_targets may be 0 when no targets were asked for).
      feature_names, target_names: column names, `n_features` and `n_targets` long.
    """

    features: np.ndarray
    targets: np.ndarray
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]


def read_table(path: str | os.PathLike, targets: Sequence[str] = ()) -> Table:
    """Every column named in `targets` is a target; every other column is a feature.

    With no targets, every column is a feature (a file to predict on). Names are matched after
    stripping the whitespace around the names in the header.
    """
    where = os.fspath(path)
    names = _header(where)
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    for target in targets:
        if target not in names:
            raise DataError(
                f"{where}: no column named {target!r} (the columns are "
                f"{_listed(names)}); name one of those as the target"
            )
        if targets.count(target) > 1:
            raise DataError(f"{where}: target {target!r} is named twice; name each target once")
    features = tuple(name for name in names if name not in targets)
    if not features:
        raise DataError(
            f"{where}: every column is a target, so no feature column is left; "
            "keep at least one column as a feature"
        )
    frame = _frame(where, names)
    x, y = _numeric(where, frame, features, "feature"), _numeric(where, frame, targets, "target")
    return Table(x, y, features, targets)


def read_features(path: str | os.PathLike, feature_names: Sequence[str]) -> np.ndarray:
    """`[n_rows, len(feature_names)]` float64: the named columns in the order given.

    Columns are matched by name whatever their order in the file; other columns (e.g. the
    target) are ignored.
    """
    where = os.fspath(path)
    names = _header(where)
    missing = [name for name in feature_names if name not in names]
    if missing:
        raise DataError(
            f"{where}: no feature column {_listed(missing)} (the columns are "
            f"{_listed(names)}); the file needs every feature the model was fitted on"
        )
    return _numeric(where, _frame(where, names), tuple(feature_names), "feature")


def _header(where: str) -> tuple[str, ...]:
    """The stripped column names, once the file and its header line pass every check."""
    if not os.path.exists(where):
        raise DataError(f"data file not found: {where}")
    if os.path.isdir(where):
        raise DataError(f"{where}: is a folder, not a CSV file; give the path of a CSV file")
    if os.path.getsize(where) == 0:
        raise DataError(f"{where}: the file is empty (0 bytes); write a header line and data rows")
    with contextlib.closing(_records(where)) as records:
        _, raw = next(records, (0, None))
    if raw is None:
        raise DataError(f"{where}: has only blank lines; write a header line and data rows")
    names = tuple(name.strip() for name in raw)
    separator = next((s for s in ";\t|" if len(names) == 1 and s in names[0]), None)
    if separator:
        raise DataError(
            f"{where}: the header {names[0]!r} looks {separator!r}-separated, "
            "but jaxlinear reads comma-separated files; save it with commas"
        )
    if "" in names:
        raise DataError(
            f"{where}: column {names.index('') + 1} has no name in the header; name every "
            "column (an unnamed first column is often a saved index: save with index=False)"
        )
    repeated = [name for name, count in collections.Counter(names).items() if count > 1]
    if repeated:
        raise DataError(f"{where}: column name {repeated[0]!r} is in the header twice; rename one")
    # A longer first row makes pandas silently use its first field as the row index.
    _check_row_lengths(where, len(names), rows=1)
    return names


def _frame(where: str, names: tuple[str, ...]):
    """The parsed `pandas.DataFrame`, columns renamed to `names`, with no ragged rows."""
    import pandas as pd

    with open(where, "rb") as file:
        head = file.read(1 << 16)
    # Where lines end in a lone CR, pandas drops a leading empty field after a blank line
    # unless told the line end.
    ends = "\r" if b"\r" in head and b"\n" not in head else None
    try:
        # low_memory=False: types are inferred from whole columns, with no DtypeWarning.
        frame = pd.read_csv(where, encoding="utf-8", lineterminator=ends, low_memory=False)
    except UnicodeDecodeError:
        raise _not_utf8(where) from None
    except pd.errors.ParserError as error:
        _check_row_lengths(where, len(names))
        raise DataError(
            f"{where}: cannot be parsed as CSV ({' '.join(str(error).split())}); "
            "check its commas and quotes"
        ) from None
    if frame.empty:
        raise DataError(f"{where}: has a header but no data rows; add rows of numbers")
    # pandas pads a short row with NaN, so only then can the last column hold NaN.
    if frame.iloc[:, -1].isna().any():
        _check_row_lengths(where, len(names))
    frame.columns = list(names)
    return frame


def _numeric(where: str, frame, columns: tuple[str, ...], kind: str) -> np.ndarray:
    """`[n_rows, len(columns)]` float64, or a DataError naming the column and line at fault."""
    import pandas as pd

    values = np.empty((len(frame), len(columns)), np.float64)
    for index, name in enumerate(columns):
        column = frame[name]
        if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
            # Numbers beyond int64 come as text; convert them, but never True/False.
            numbers = pd.to_numeric(column, errors="coerce")
            bad = column.notna() & (numbers.isna() | pd.api.types.is_bool_dtype(column))
            if bad.any():
                row = int(np.argmax(bad.to_numpy()))
                raise DataError(
                    f"{where}: {kind} column {name!r} is not numeric: line "
                    f"{_line(where, row)} has {str(column.iloc[row])!r}; "
                    "remove the column or write it as numbers"
                )
            column = numbers
        values[:, index] = column.to_numpy(np.float64, na_value=np.nan)
        finite = np.isfinite(values[:, index])
        if not finite.all():
            count, line = int((~finite).sum()), _line(where, int(np.argmin(finite)))
            raise DataError(
                f"{where}: {kind} column {name!r} has {count} missing, NaN or "
                f"infinite value(s) (first on line {line}); drop or fill those rows "
                "first"
            )
        huge = np.abs(values[:, index]) > MAX_MAGNITUDE
        if huge.any():
            row = int(np.argmax(huge))
            raise DataError(
                f"{where}: {kind} column {name!r} has {values[row, index]:g} on line "
                f"{_line(where, row)}; values must be below 1e150 in "
                "magnitude to compute with safely: rescale the column"
            )
    return values


def _records(where: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) of each record, skipping the blank lines pandas skips."""
    try:
        with open(where, encoding="utf-8-sig", newline="") as file:
            line = [""]  # the last line read, which csv does not show

            def lines():
                for line[0] in file:
                    yield line[0]

            reader = csv.reader(lines(), strict=True)
            start = 1
            for fields in reader:
                # pandas skips lines of spaces and tabs, but not a line such as "" (quoted).
                if reader.line_num > start or line[0].strip(" \t\r\n"):
                    yield start, fields
                start = reader.line_num + 1
    except UnicodeDecodeError:
        raise _not_utf8(where) from None
    except csv.Error as error:
        cause = "a quoted field never ends" if "unexpected end" in str(error) else error
        raise DataError(
            f"{where}: line {start} is not valid CSV ({cause}); check its quotes"
        ) from None
    except OSError as error:
        raise DataError(
            f"{where}: cannot be read ({error.strerror}); check its permissions"
        ) from None


def _check_row_lengths(where: str, width: int, rows: int | None = None) -> None:
    """Raises a DataError for the first of the first `rows` data rows without `width` fields."""
    with contextlib.closing(_records(where)) as records:
        for line, fields in itertools.islice(records, 1, None if rows is None else rows + 1):
            if len(fields) != width:
                raise DataError(
                    f"{where}: line {line} has {len(fields)} field(s) but the header has {width}; "
                    "give every row one value per column (quote values that contain commas)"
                )


def _line(where: str, row: int) -> int:
    """The file line on which data row `row` (0-based, as pandas numbers them) starts."""
    return next(itertools.islice(_records(where), row + 1, None))[0]


def _not_utf8(where: str) -> DataError:
    """Names the first byte that is not UTF-8 and its line (the file's, not pandas' chunk's)."""
    with open(where, "rb") as file:
        data = file.read()
    try:
        data.decode("utf-8")
        detail = ""  # the file changed since the caller failed: no byte to show
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        detail = f" (line {line} has the byte 0x{data[error.start]:02x})"
    return DataError(f"{where}: is not UTF-8 text{detail}; save it as UTF-8")


def _listed(names: Sequence[str]) -> str:
    return ", ".join(map(repr, names))
