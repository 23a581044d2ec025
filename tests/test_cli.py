"""The command line as users meet it: figures, JSON, and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from jaxlinear import LIBRARY_NAMES
from jaxlinear.cli import main

QUICK = ["--epochs", "20", "--quiet"]


def _run(capsys, *argv):
    """Runs the CLI in-process; argparse's own errors arrive as SystemExit."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _csv(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


GOOD_CSV = "a,b,t\n" + "\n".join(f"{i},{(i * 3) % 5},{2 * i - 1}" for i in range(12)) + "\n"


def test_compare_json_has_the_documented_shape(capsys, tmp_path):
    out = tmp_path / "figures.json"
    code, stdout, _ = _run(capsys, "compare", "--data", "linnerud", *QUICK, "--json", str(out))
    assert code == 0
    assert "exact" in stdout and all(name in stdout for name in LIBRARY_NAMES)
    figures = json.loads(out.read_text())
    assert figures["dataset"] == {
        "name": "linnerud",
        "n_train": 16,
        "n_test": 4,
        "in_features": 3,
        "out_features": 3,
    }
    assert set(figures["exact"]) >= {"train_mse", "test_mse", "test_r2"}
    assert list(figures["libraries"]) == list(LIBRARY_NAMES)
    for metrics in figures["libraries"].values():
        assert set(metrics) == {
            "train_mse",
            "test_mse",
            "test_r2",
            "max_abs_weight_error",
            "compile_seconds",
            "ms_per_step",
        }
        assert metrics["train_mse"] > 0 and metrics["ms_per_step"] > 0


def test_train_one_library_from_csv(capsys, tmp_path):
    out = tmp_path / "one.json"
    data = _csv(tmp_path, GOOD_CSV)
    code, stdout, _ = _run(
        capsys,
        "train",
        "--library",
        "equinox",
        "--data",
        data,
        "--target",
        "t",
        "--epochs",
        "300",
        "--quiet",
        "--json",
        str(out),
    )
    assert code == 0, stdout
    figures = json.loads(out.read_text())
    assert list(figures["libraries"]) == ["equinox"]
    # t = 2a - 1 exactly, so the fit is perfect up to float32 training.
    assert figures["libraries"]["equinox"]["test_r2"] > 0.9999


def test_compare_subset_of_libraries(capsys):
    code, stdout, _ = _run(
        capsys, "compare", "--libraries", "nnx,penzai", "--data", "linnerud", *QUICK
    )
    assert code == 0
    assert "nnx" in stdout and "penzai" in stdout and "linen" not in stdout


BAD_INPUTS = {
    "unknown dataset": (["compare", "--data", "iris"], "unknown dataset 'iris'"),
    "unknown library": (["compare", "--libraries", "linen,keras"], "unknown library 'keras'"),
    "unknown library for train": (["train", "--library", "haiku"], "unknown library 'haiku'"),
    "missing file": (["compare", "--data", "/no/such/file.csv", "--target", "t"], "not found"),
    "no target column": (["compare", "--data", "{good}", "--target", "y"], "no target column 'y'"),
    "no --target": (["compare", "--data", "{good}"], "--target"),
    "non-numeric feature": (["compare", "--data", "{text}", "--target", "t"], "'a' is not numeric"),
    "NaN value": (
        ["compare", "--data", "{nan}", "--target", "t"],
        "'b' has 1 missing, NaN or infinite",
    ),
    "inf value": (
        ["compare", "--data", "{inf}", "--target", "t"],
        "'t' has 1 missing, NaN or infinite",
    ),
    "one row": (["compare", "--data", "{one}", "--target", "t"], "at least 2 rows"),
    "diverging lr": (
        ["compare", "--optimizer", "sgd", "--lr", "100", "--data", "linnerud"],
        "smaller --lr",
    ),
    "bad lr": (["compare", "--lr", "-1"], "--lr must be a positive number"),
    "bad epochs": (["compare", "--epochs", "0"], "--epochs must be at least 1"),
    "bad option": (["compare", "--optimizer", "rmsprop"], "invalid choice"),
    "json folder missing": (["compare", "--json", "/no/such/dir/out.json"], "does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_line(capsys, tmp_path, case):
    files = {
        "good": _csv(tmp_path, GOOD_CSV, "good.csv"),
        "text": _csv(tmp_path, "a,t\nx,1\ny,2\nz,3\n", "text.csv"),
        "nan": _csv(tmp_path, "a,b,t\n1,2,3\n4,,6\n7,8,9\n", "nan.csv"),
        "inf": _csv(tmp_path, "a,b,t\n1,2,3\n4,5,inf\n7,8,9\n", "inf.csv"),
        "one": _csv(tmp_path, "a,t\n1,2\n", "one.csv"),
    }
    argv, message = BAD_INPUTS[case]
    argv = [arg.format(**files) for arg in argv]
    out = tmp_path / "never.json"
    if "--json" not in argv:
        argv += ["--json", str(out)]
    code, _, stderr = _run(capsys, *argv, "--quiet")
    assert code == 2
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.split("/")[-1] for p in files.values()
    ), "nothing but the inputs may be left in the folder"


def test_console_script_error_has_no_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxlinear.cli",
            "train",
            "--library",
            "nnx",
            "--data",
            str(tmp_path / "missing.csv"),
            "--target",
            "y",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("jaxlinear: error: data file not found")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["compare", "train"])
def test_help_explains_each_command(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in [
        "--data",
        "--target",
        "--epochs",
        "--batch-size",
        "--lr",
        "--optimizer",
        "--l2",
        "--seed",
        "--json",
    ]:
        assert option in text
