"""Reading CSV files: good files load exactly; every bad one gives a one-line DataError."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from jaxlinear._csv import Table, read_features, read_table
from jaxlinear._errors import DataError


def _write(tmp_path, content, name="data.csv"):
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def _message(call):
    """The DataError's message, checked to be one line."""
    with pytest.raises(DataError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    return message


# The cases: file content, targets, what the message says after "PATH: ".
BAD_FILES = {
    "empty file": (b"", ("t",), r"the file is empty \(0 bytes\)"),
    "only blank lines": ("\n\n  \n", ("t",), r"has only blank lines"),
    "latin-1": (
        "a,t\n1,2\ncafé,3\n".encode("latin-1"),
        ("t",),
        r"is not UTF-8 text \(line 3 has the byte 0xe9\); save it as UTF-8$",
    ),
    "utf-16": (
        "a,t\n1,2\n".encode("utf-16"),
        ("t",),
        r"is not UTF-8 text \(line 1 has the byte 0xff\)",
    ),
    # Past the first chunk the csv module decodes, so pandas meets the byte first.
    "latin-1 far down": (
        ("a,t\n" + "1,2\n" * 5000 + "é,3\n").encode("latin-1"),
        ("t",),
        r"is not UTF-8 text \(line 5002 has the byte 0xe9\)",
    ),
    "header only": ("a,b,t\n", ("t",), r"has a header but no data rows"),
    "header only, no newline": ("a,b,t", ("t",), r"has a header but no data rows"),
    "header and blank lines": ("a,b,t\n\n\n", ("t",), r"has a header but no data rows"),
    "long row": (
        "a,b,t\n1,2,3\n4,5,6\n7,8,9,10\n",
        ("t",),
        r"line 4 has 4 field\(s\) but the header has 3; give every row one value",
    ),
    # pandas would make the first field the row index, silently.
    "long first row": (
        "a,b,t\n1,2,3,4\n5,6,7,8\n",
        ("t",),
        r"line 2 has 4 field\(s\) but the header has 3",
    ),
    # pandas pads short rows with NaN, silently.
    "short row": ("a,b,t\n1,2,3\n4,5\n", ("t",), r"line 3 has 2 field\(s\) but the header has 3"),
    "short first row": ("a,b,t\n1,2\n", ("t",), r"line 2 has 2 field\(s\)"),
    # Blank lines and a quoted field over two lines still count as lines of the file.
    "short row after blank and quoted lines": (
        'a,b,t\n1,2,3\n\n"4\n",5,6\n7,8\n',
        ("t",),
        r"line 6 has 2 field\(s\)",
    ),
    "long row after blank and quoted lines": (
        'a,b,t\n\n"1\n",2,3\n4,5,6,7\n',
        ("t",),
        r"line 5 has 4 field\(s\)",
    ),
    "unclosed quote": (
        'a,b,t\n1,2,3\n"4,5,6\n7,8,9\n',
        ("t",),
        r"line 3 is not valid CSV \(a quoted field never ends\); check its quotes",
    ),
    "semicolons": (
        "a;b;t\n1;2;3\n",
        ("t",),
        r"the header 'a;b;t' looks ';'-separated, "
        r"but jaxlinear reads comma-separated files; save it with commas",
    ),
    "semicolons and decimal commas": ("a;b;t\n1,5;2;3\n", ("t",), r"looks ';'-separated"),
    "tabs": ("a\tb\tt\n1\t2\t3\n", ("t",), r"looks '\\t'-separated"),
    "pipes": ("a|b|t\n1|2|3\n", ("t",), r"looks '\|'-separated"),
    "duplicate name": ("a,b,a,t\n1,2,3,4\n", ("t",), r"column name 'a' is in the header twice"),
    "duplicate after stripping": ("a, a,t\n1,2,3\n", ("t",), r"column name 'a' is in the header"),
    "saved index": (
        ",a,t\n0,1,2\n",
        ("t",),
        r"column 1 has no name in the header; name every column "
        r"\(an unnamed first column is often a saved index",
    ),
    "blank name": ("a,  ,t\n1,2,3\n", ("t",), r"column 2 has no name"),
    "trailing comma in header": ("a,t,\n1,2,3\n", ("t",), r"column 3 has no name"),
    "unknown target": (
        "a,b,t\n1,2,3\n",
        ("y",),
        r"no column named 'y' \(the columns are 'a', 'b', 't'\); name one of those as the target",
    ),
    "target twice": ("a,b,t\n1,2,3\n", ("t", "t"), r"target 't' is named twice"),
    "no feature left": (
        "a,t\n1,2\n",
        ("a", "t"),
        r"every column is a target, so no feature column is left",
    ),
    "text feature": (
        "a,b,t\n1,2,3\nabc,4,5\n",
        ("t",),
        r"feature column 'a' is not numeric: line 3 has 'abc'; remove the column",
    ),
    "text target": ("a,t\n1,2\n3,x\n", ("t",), r"target column 't' is not numeric: line 3 has 'x'"),
    "text after blank lines": (
        "a,t\n1,2\n\n\nx,3\n",
        ("t",),
        r"'a' is not numeric: line 5 has 'x'",
    ),
    "true and false": ("a,t\nTrue,1\nFalse,2\n", ("t",), r"'a' is not numeric: line 2 has 'True'"),
    "numbers with thousands separators": (
        'a,t\n1,2\n"1,000",3\n',
        ("t",),
        r"'a' is not numeric: line 3 has '1,000'",
    ),
    "missing values": (
        "a,b,t\n1,2,3\n,4,5\n6,7,8\nNaN,1,1\n",
        ("t",),
        r"feature column 'a' has 2 missing, NaN or infinite value\(s\) "
        r"\(first on line 3\); drop or fill those rows first",
    ),
    "missing last value": (
        "a,t\n1,2\n3,\n",
        ("t",),
        r"target column 't' has 1 missing, NaN or infinite value\(s\) \(first on line 3\)",
    ),
    "missing after a blank line": ("a,t\n1,2\n\n3,NA\n", ("t",), r"'t' has 1 missing.*line 4"),
    # pandas' own reading of this lone-CR file drops the empty 'a' and blames 't'.
    "missing first value after a blank line, CR line ends": (
        "a,b,t\r1,2,3\r\r,4,5\r",
        ("t",),
        r"feature column 'a' has 1 missing.*\(first on line 4\)",
    ),
    "infinities": (
        "a,t\n1,2\ninf,3\n-inf,4\n",
        ("t",),
        r"feature column 'a' has 2 missing, NaN or infinite value\(s\) \(first on line 3\)",
    ),
    "overflow to infinity": ("a,t\n1e400,2\n", ("t",), r"'a' has 1 missing, NaN or infinite"),
    "huge value": (
        "a,t\n1,2\n-1e200,3\n",
        ("t",),
        r"feature column 'a' has -1e\+200 on line 3; "
        r"values must be below 1e150 in magnitude .*rescale the column",
    ),
    "huge target": ("a,t\n1,2\n3,2e150\n", ("t",), r"target column 't' has 2e\+150 on line 3"),
    "huge integer": ("a,t\n1,2\n" + "9" * 200 + ",3\n", ("t",), r"'a' has 1e\+200 on line 3"),
}


@pytest.mark.parametrize("content, targets, expected", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_file_gets_a_one_line_error_naming_the_cause(tmp_path, content, targets, expected):
    path = _write(tmp_path, content)
    message = _message(lambda: read_table(path, targets))
    assert message.startswith(f"{path}: ") and re.search(expected, message), message


def test_a_missing_file_is_named(tmp_path):
    path = tmp_path / "nowhere.csv"
    message = _message(lambda: read_table(path, ("t",)))
    assert message == f"data file not found: {path}"


def test_a_folder_is_not_a_file(tmp_path):
    message = _message(lambda: read_table(tmp_path, ("t",)))
    assert message.startswith(f"{tmp_path}: is a folder, not a CSV file")


def test_an_unreadable_file_is_named(tmp_path, monkeypatch):
    # chmod cannot lock out root, who may run the tests: open() refuses instead.
    path, real_open = _write(tmp_path, "a,t\n1,2\n"), open

    def refuse(file, *args, **kwargs):
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refuse)
    message = _message(lambda: read_table(path, ("t",)))
    assert message == f"{path}: cannot be read (Permission denied); check its permissions"


@pytest.mark.parametrize(
    "content, features, expected",
    [
        ("a,b,t\n1,2,3\n", ["a", "c"], r"no feature column 'c' \(the columns are 'a', 'b', 't'\)"),
        ("a,b,t\n1,2,3\nx,4,5\n", ["a"], r"feature column 'a' is not numeric: line 3 has 'x'"),
        ("b,a\n1,2\n3,\n", ["a"], r"feature column 'a' has 1 missing"),
        ("a;b\n1;2\n", ["a"], r"the header 'a;b' looks ';'-separated"),
        ("", ["a"], r"the file is empty"),
    ],
)
def test_read_features_errors(tmp_path, content, features, expected):
    path = _write(tmp_path, content)
    message = _message(lambda: read_features(path, features))
    assert message.startswith(f"{path}: ") and re.search(expected, message), message


# Ugly but valid: quotes, spaces around names, CRLF, blank lines, a byte-order mark.
GOOD_FILES = {
    "plain": "a,b,t\n1,0.5,-2\n2,1e-300,3.25\n3,1e150,0.1\n",
    "no final newline": "a,b,t\n1,0.5,-2\n2,1e-300,3.25\n3,1e150,0.1",
    "crlf": "a,b,t\r\n1,0.5,-2\r\n2,1e-300,3.25\r\n3,1e150,0.1\r\n",
    "cr": "a,b,t\r1,0.5,-2\r2,1e-300,3.25\r3,1e150,0.1\r",
    "quoted": '"a","b","t"\n"1","0.5",-2\n2,"1e-300",3.25\n"3",1e150,"0.1"\n',
    "spaces and blank lines": " a , b ,t \n\n1, 0.5 ,-2\n  \n2,1e-300,3.25\n3,1e150,0.1\n\n",
    "byte-order mark": "\ufeffa,b,t\n1,0.5,-2\n2,1e-300,3.25\n3,1e150,0.1\n",
}
GOOD_FEATURES = np.array([[1.0, 0.5], [2.0, 1e-300], [3.0, 1e150]])
GOOD_TARGETS = np.array([[-2.0], [3.25], [0.1]])


@pytest.mark.parametrize("content", GOOD_FILES.values(), ids=GOOD_FILES.keys())
def test_a_good_file_loads_exactly(tmp_path, content):
    table = read_table(_write(tmp_path, content), ["t"])
    assert isinstance(table, Table)
    assert table.feature_names == ("a", "b") and table.target_names == ("t",)
    assert table.features.dtype == table.targets.dtype == np.float64
    np.testing.assert_array_equal(table.features, GOOD_FEATURES)
    np.testing.assert_array_equal(table.targets, GOOD_TARGETS)


def test_numbers_load_as_python_reads_them_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    floats = [repr(float(x)) for x in rng.normal(size=500) * 10.0 ** rng.integers(-30, 30, 500)]
    integers = [str(int(i)) for i in rng.integers(-(2**62), 2**62, 500)]  # most past 2**53
    lines = [f"{x},{y}" for x, y in zip(floats, integers, strict=True)]
    table = read_table(_write(tmp_path, "x,y\n" + "\n".join(lines) + "\n"), ["y"])
    np.testing.assert_array_equal(table.features[:, 0], [float(x) for x in floats])
    np.testing.assert_array_equal(table.targets[:, 0], [float(int(y)) for y in integers])


def test_several_targets_come_in_the_order_named(tmp_path):
    path = _write(tmp_path, "t1,a,t2,b\n1,2,3,4\n5,6,7,8\n")
    table = read_table(path, ("t2", "t1"))
    assert table.feature_names == ("a", "b") and table.target_names == ("t2", "t1")
    np.testing.assert_array_equal(table.features, [[2, 4], [6, 8]])
    np.testing.assert_array_equal(table.targets, [[3, 1], [7, 5]])


def test_without_targets_every_column_is_a_feature(tmp_path):
    table = read_table(_write(tmp_path, "a,b\n1,2\n3,4\n"))
    assert table.feature_names == ("a", "b") and table.target_names == ()
    assert table.features.shape == (2, 2) and table.targets.shape == (2, 0)


def test_read_features_matches_names_whatever_their_order(tmp_path):
    # The target is text and has a gap: read_features ignores it.
    path = _write(tmp_path, "t,b,a\nx,1,2\n,3,4\n")
    np.testing.assert_array_equal(read_features(path, ["a", "b"]), [[2.0, 1.0], [4.0, 3.0]])
    assert read_features(path, ["b"]).shape == (2, 1)


def test_text_far_down_a_long_column_gets_its_line(tmp_path):
    # Large enough for pandas to read in chunks; no DtypeWarning (warnings are errors here).
    path = _write(tmp_path, "a,t\n" + "1,2\n" * 300_000 + "x,3\n")
    message = _message(lambda: read_table(path, ["t"]))
    assert message.endswith("line 300002 has 'x'; remove the column or write it as numbers")


def test_importing_the_module_imports_nothing_heavy():
    code = (
        "import sys, jaxlinear._csv; print(sorted({'pandas', 'jax', 'sklearn'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr
