"""`train --save/--checkpoint-every/--resume`, `predict` and `show --load` as users meet them,
and a training process killed with SIGKILL that resumes to the same weights, bit for bit."""

import re

import numpy as np
import pytest

from cli_run import kill_after_first_checkpoint, resume_ends_as_uninterrupted
from cli_run import run_cli as _run
from jaxlinear import LIBRARY_NAMES, load_checkpoint
from jaxlinear.cli import main

QUICK = ["--data", "linnerud", "--epochs", "12", "--batch-size", "4", "--quiet"]


def _one_line_error(code, stderr, message):
    assert code == 2, stderr
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stderr


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished nnx run with periodic checkpoints."""
    root = tmp_path_factory.mktemp("run") / "nnx"
    argv = ["train", "--library", "nnx", *QUICK, "--save", root, "--checkpoint-every", "4"]
    assert main([str(arg) for arg in argv]) == 0
    return root


def test_periodic_checkpoints_keep_the_newest(run):
    # Epochs 4 and 8 periodically, 12 at the end; --keep's default 3 keeps all three.
    assert sorted(p.name for p in run.iterdir()) == [
        "epoch-000004",
        "epoch-000008",
        "epoch-000012",
    ]
    final = load_checkpoint(run)
    assert final.epoch == 12 and final.metadata["metrics"]["test_r2"] is not None
    assert load_checkpoint(run / "epoch-000004").metadata["metrics"] is None


def _linnerud_csv(tmp_path, *, columns, rows=5, name="new.csv"):
    from sklearn.datasets import load_linnerud

    bunch = load_linnerud(as_frame=True)
    frame = bunch.frame.iloc[:rows]
    path = tmp_path / name
    frame[columns].to_csv(path, index=False)
    return path, frame


@pytest.mark.parametrize("library", [None, "equinox"])
def test_predict_matches_columns_by_name_in_original_units(capsys, run, tmp_path, library):
    # Columns shuffled, targets included (ignored): matched by name.
    columns = ["Pulse", "Jumps", "Weight", "Chins", "Waist", "Situps"]
    path, frame = _linnerud_csv(tmp_path, columns=columns)
    argv = ["predict", "--model", run, "--data", path]
    code, stdout, stderr = _run(capsys, *argv, *(["--library", library] if library else []))
    assert code == 0, stderr
    lines = stdout.strip().splitlines()
    assert lines[0] == "Weight,Waist,Pulse" and len(lines) == 6
    found = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    checkpoint = load_checkpoint(run)
    original = checkpoint.scaling.weights_to_original(checkpoint.weights)
    expected = frame[["Chins", "Situps", "Jumps"]].to_numpy() @ original.weight + original.bias
    # float32 weights on the standardised scale, mapped back in float64: ~1e-6 relative.
    np.testing.assert_allclose(found, expected, rtol=1e-5)
    out = tmp_path / "predictions.csv"
    code, stdout, _ = _run(capsys, *argv, "--output", out)
    assert code == 0 and stdout == ""
    assert out.read_text().strip().splitlines() == lines


def test_predict_names_a_missing_feature_and_writes_nothing(capsys, run, tmp_path):
    path, _ = _linnerud_csv(tmp_path, columns=["Chins", "Jumps"])
    out = tmp_path / "predictions.csv"
    code, _, stderr = _run(capsys, "predict", "--model", run, "--data", path, "--output", out)
    _one_line_error(code, stderr, "no feature column 'Situps'")
    assert not out.exists()


def test_show_renders_the_restored_optimizer_state(capsys, run, tmp_path):
    page = tmp_path / "model.html"
    argv = ["show", "--load", run, "--library", "penzai", "--output", page]
    code, _, stderr = _run(capsys, *argv)
    assert code == 0, stderr
    text = page.read_text()
    assert "opened in nnx, penzai" in text and "Epoch 12 of 12 (step 48)" in text
    # Two columns, the library that trained it first: its optimizer state is the restored one.
    columns = re.findall(r'<div class="jl-cell" data-column="(\w+)">', text)
    assert columns[:2] == ["nnx", "penzai"] and set(columns) == {"nnx", "penzai"}, columns
    assert "as restored from the checkpoint for flax.nnx" in text
    assert text.count("<treescope-container") >= 4  # two models, two optimizer states


def test_a_second_run_needs_overwrite(capsys, tmp_path):
    root = tmp_path / "run"
    argv = ["train", "--library", "linen", *QUICK, "--save", root]
    assert _run(capsys, *argv)[0] == 0
    code, _, stderr = _run(capsys, *argv, "--epochs", "8")
    _one_line_error(code, stderr, "already holds checkpoints (newest: epoch-000012)")
    code, _, stderr = _run(capsys, *argv, "--epochs", "8", "--overwrite")
    assert code == 0, stderr
    assert [p.name for p in root.iterdir()] == ["epoch-000008"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--epochs", "13"], "--epochs is 13, but the run in"),
        (["--lr", "0.05"], "--lr is 0.05, but the run in"),
        (["--library", "penzai"], "--library is penzai, but the run in"),
        (["--checkpoint-every", "2"], "--checkpoint-every is 2, but the run in"),
        (["--seed", "1"], "--seed is 1, but the run in"),
    ],
)
def test_resume_refuses_other_settings(capsys, run, change, message):
    argv = ["train", "--library", "nnx", *QUICK, "--checkpoint-every", "4", *change]
    code, _, stderr = _run(capsys, *argv, "--resume", run / "epoch-000008")
    _one_line_error(code, stderr, message)


def test_resume_of_a_finished_run_says_so(capsys, run):
    argv = ["train", "--library", "nnx", *QUICK, "--checkpoint-every", "4", "--resume", run]
    code, _, stderr = _run(capsys, *argv)
    _one_line_error(code, stderr, "there is nothing left to resume")


def test_checkpoint_flags_are_checked_first(capsys, tmp_path):
    code, _, stderr = _run(capsys, "train", "--library", "nnx", *QUICK, "--checkpoint-every", "2")
    _one_line_error(code, stderr, "--checkpoint-every needs --save DIR")
    code, _, stderr = _run(capsys, "train", "--library", "nnx", "--resume", tmp_path / "none")
    _one_line_error(code, stderr, "does not exist")
    assert list(tmp_path.iterdir()) == []


# Killed with SIGKILL mid-run, resumed, compared with a run that was never stopped. Each
# library in another step mode, so every mode's resume is exercised through the CLI too.
KILL_CASES = {"linen": "fused", "nnx": "fast", "equinox": "idiomatic", "penzai": "fused"}


@pytest.mark.slow
@pytest.mark.parametrize("library", LIBRARY_NAMES)
def test_a_killed_run_resumes_to_the_same_weights(capsys, tmp_path, library):
    settings = ["--library", library, *QUICK, "--step-mode", KILL_CASES[library]]
    settings += ["--checkpoint-every", "1", "--keep", "2"]
    killed = tmp_path / "killed"
    kill_after_first_checkpoint(settings, killed, last_epoch=12)

    # Bitwise: the parameters and the whole optimizer state.
    resumed, uninterrupted = resume_ends_as_uninterrupted(
        capsys, settings, settings, killed, tmp_path / "whole"
    )
    assert resumed.epoch == 12
    np.testing.assert_array_equal(resumed.weights.weight, uninterrupted.weights.weight)
    np.testing.assert_array_equal(resumed.weights.bias, uninterrupted.weights.bias)
    assert sorted(p.name for p in killed.iterdir()) == ["epoch-000011", "epoch-000012"]
