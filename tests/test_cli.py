"""The command line as users meet it: figures, JSON, and one-line errors with exit code 2."""

import json
import os
import subprocess
import sys

import pytest

from cli_run import run_cli as _run
from jaxlinear import LIBRARY_NAMES
from jaxlinear.cli import main

QUICK = ["--epochs", "20", "--quiet"]


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
            "objective_gap",
            "converged",
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
    "repeated library": (["compare", "--libraries", "nnx,nnx"], "names nnx more than once"),
    "empty libraries": (["compare", "--libraries", ","], "--libraries is empty"),
    "unknown library for train": (["train", "--library", "haiku"], "unknown library 'haiku'"),
    "missing file": (["compare", "--data", "/no/such/file.csv", "--target", "t"], "not found"),
    "folder as data": (["compare", "--data", "{folder}", "--target", "t"], "is a folder"),
    "no target column": (["compare", "--data", "{good}", "--target", "y"], "no column named 'y'"),
    "no --target": (["compare", "--data", "{good}"], "--target must name the target column"),
    "--target on built-in data": (["compare", "--target", "y"], "--target is for CSV files"),
    "non-numeric feature": (["compare", "--data", "{text}", "--target", "t"], "'a' is not numeric"),
    "NaN value": (
        ["compare", "--data", "{nan}", "--target", "t"],
        "'b' has 1 missing, NaN or infinite",
    ),
    "inf value": (
        ["compare", "--data", "{inf}", "--target", "t"],
        "'t' has 1 missing, NaN or infinite",
    ),
    "huge value": (["compare", "--data", "{huge}", "--target", "t"], "must be below 1e150"),
    "header only": (["compare", "--data", "{header}", "--target", "t"], "no data rows"),
    "ragged row": (["compare", "--data", "{ragged}", "--target", "t"], "line 3 has 3 field"),
    "semicolons": (["compare", "--data", "{semicolon}", "--target", "t"], "separated"),
    "one row": (["compare", "--data", "{one}", "--target", "t"], "leave 0 for training"),
    "test fraction empties training": (
        ["compare", "--data", "linnerud", "--test-fraction", "0.95"],
        "leave 1 for training and 19 for testing",
    ),
    "test fraction 1": (["compare", "--test-fraction", "1"], "--test-fraction must be between"),
    "diverging lr": (
        ["compare", "--optimizer", "sgd", "--lr", "100", "--data", "linnerud"],
        "try a smaller --lr",
    ),
    "diverging l2": (
        ["compare", "--optimizer", "sgd", "--l2", "1e4", "--data", "linnerud"],
        "the penalty --l2 is too large for this --lr: lower --l2 or --lr",
    ),
    "made worse": (
        [
            "train",
            "--library",
            "linen",
            "--optimizer",
            "sgd",
            "--lr",
            "20",
            "--epochs",
            "3",
            "--schedule",
            "constant",
            "--data",
            "linnerud",
        ],
        "training made the model worse",
    ),
    "bad lr": (["compare", "--lr", "-1"], "--lr must be a positive finite number"),
    "lr beyond float32": (["compare", "--lr", "1e308"], "--lr must be at most 3.403e+38"),
    "folder without target": (["compare", "--data", "{folder}"], "is a folder, not a CSV file"),
    "json where no file can be made": (["compare", "--json", "/proc/x.json"], "cannot write"),
    "nan lr": (["compare", "--lr", "nan"], "--lr must be a positive finite number, got nan"),
    "inf l2": (["compare", "--l2", "inf"], "--l2 must be a finite number >= 0"),
    "bad epochs": (["compare", "--epochs", "0"], "--epochs must be between 1 and 10,000,000"),
    "huge epochs": (["compare", "--epochs", "99999999999999999999"], "--epochs must be between"),
    "bad batch": (["compare", "--batch-size", "0"], "--batch-size must be at least 1"),
    "negative seed": (["compare", "--seed", "-1"], "--seed must be between 0 and 2**128 - 1"),
    "huge seed": (["compare", "--seed", str(2**130)], "--seed must be between"),
    "no samples": (["compare", "--data", "synthetic", "--samples", "1"], "--samples must be"),
    "too many samples": (
        ["compare", "--data", "synthetic", "--samples", "10000000000"],
        "--samples x (in_features + out_features)",
    ),
    "no features": (["compare", "--data", "synthetic", "--in-features", "0"], "--in-features"),
    "nan noise": (["compare", "--data", "synthetic", "--noise", "nan"], "--noise must be"),
    "bad option": (["compare", "--optimizer", "rmsprop"], "invalid choice"),
    "not a number": (["compare", "--lr", "fast"], "invalid float value: 'fast'"),
    "json folder missing": (["compare", "--json", "/no/such/dir/out.json"], "does not exist"),
    "json is report": (
        ["compare", "--json", "{folder}/out", "--report", "{folder}/out"],
        "--report and --json name the same file",
    ),
    "json overwrites data": (
        ["compare", "--data", "{good}", "--target", "t", "--json", "{good}"],
        "--json would overwrite the input data",
    ),
    "save is a file": (["train", "--library", "nnx", "--save", "{good}"], "is not a folder"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_line(capsys, tmp_path, case):
    files = {
        "good": _csv(tmp_path, GOOD_CSV, "good.csv"),
        "text": _csv(tmp_path, "a,t\nx,1\ny,2\nz,3\n", "text.csv"),
        "nan": _csv(tmp_path, "a,b,t\n1,2,3\n4,,6\n7,8,9\n", "nan.csv"),
        "inf": _csv(tmp_path, "a,b,t\n1,2,3\n4,5,inf\n7,8,9\n", "inf.csv"),
        "one": _csv(tmp_path, "a,t\n1,2\n", "one.csv"),
        "huge": _csv(tmp_path, "a,t\n1,2\n1e200,4\n3,5\n", "huge.csv"),
        "header": _csv(tmp_path, "a,t\n", "header.csv"),
        "ragged": _csv(tmp_path, "a,t\n1,2\n3,4,5\n6,7\n", "ragged.csv"),
        "semicolon": _csv(tmp_path, "a;t\n1;2\n3;4\n", "semicolon.csv"),
    }
    (tmp_path / "folder").mkdir()
    files["folder"] = str(tmp_path / "folder")
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
    assert not any((tmp_path / "folder").iterdir())


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


def test_a_failure_after_training_leaves_no_output(capsys, tmp_path, monkeypatch):
    import jaxlinear._report

    def broken_report(*args, **kwargs):
        raise OSError("disk full while rendering")

    monkeypatch.setattr(jaxlinear._report, "comparison_report", broken_report)
    outputs = {"--json": tmp_path / "f.json", "--report": tmp_path / "r.html"}
    argv = ["train", "--library", "nnx", "--data", "linnerud", *QUICK, "--save", tmp_path / "m"]
    for flag, path in outputs.items():
        argv += [flag, path]
    code, _, stderr = _run(capsys, *map(str, argv))
    assert code == 2 and "disk full while rendering" in stderr
    assert list(tmp_path.iterdir()) == []


def test_all_outputs_are_written_together(capsys, tmp_path):
    argv = ["train", "--library", "penzai", "--data", "linnerud", *QUICK]
    argv += ["--json", str(tmp_path / "f.json"), "--save", str(tmp_path / "model")]
    code, _, _ = _run(capsys, *argv)
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json", "model"]
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["epoch-000020"]
    checkpoint = sorted(p.name for p in (tmp_path / "model" / "epoch-000020").iterdir())
    assert checkpoint == ["metadata.json", "model.safetensors", "native"]


def test_a_run_short_of_the_optimum_warns_in_one_line(capsys, tmp_path):
    out = tmp_path / "f.json"
    argv = ["compare", "--libraries", "nnx,equinox", "--epochs", "3", "--quiet", "--json", out]
    code, _, stderr = _run(capsys, *map(str, argv))
    assert code == 0
    lines = stderr.strip().splitlines()
    warnings = [line for line in lines if line.startswith("jaxlinear: warning: not converged")]
    assert len(warnings) == 1 and "nnx by" in warnings[0] and "equinox by" in warnings[0]
    figures = json.loads(out.read_text())
    assert [m["converged"] for m in figures["libraries"].values()] == [False, False]


def test_default_run_converges_without_warning(capsys):
    code, _, stderr = _run(capsys, "compare", "--libraries", "linen", "--quiet")
    assert code == 0
    assert "warning" not in stderr


@pytest.mark.parametrize("damage", [b"", b"garbage", b"\x10\x00\x00\x00\x00\x00\x00\x00{}"])
def test_show_refuses_a_damaged_model_in_one_line(capsys, tmp_path, damage):
    (tmp_path / "model.safetensors").write_bytes(damage)
    output = str(tmp_path / "x.html")
    code, _, stderr = _run(capsys, "show", "--load", str(tmp_path), "--output", output)
    assert code == 2
    assert str(tmp_path / "model.safetensors") in stderr and stderr.count("\n") == 1
    assert not (tmp_path / "x.html").exists()


def test_the_command_line_keeps_compiled_programs(tmp_path):
    cache = tmp_path / "cache"
    argv = [sys.executable, "-m", "jaxlinear.cli", "compare", "--libraries", "nnx"]
    argv += ["--data", "linnerud", "--epochs", "4", "--quiet"]
    environment = {**os.environ, "JAXLINEAR_CACHE_DIR": str(cache)}
    result = subprocess.run(argv, capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr
    assert any(cache.iterdir()), "the compiled training loop is in the cache"


def test_an_internal_error_is_one_line_and_exit_1(capsys, monkeypatch):
    import jaxlinear._compare

    def bug(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(jaxlinear._compare, "compare", bug)
    code, _, stderr = _run(capsys, "compare", "--quiet")
    assert code == 1
    assert stderr.startswith("jaxlinear: internal error: ZeroDivisionError: division by zero")
    assert stderr.count("\n") == 1
