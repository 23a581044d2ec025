"""`train --data DIR` with checkpoints (`--save`, `--checkpoint-every`, `--keep`, `--resume`,
`--overwrite`): the in-memory run folder used as it is, `predict` and `show --load` on a
streamed run's checkpoint, a resume that must repeat the run, and a streamed training process
killed with SIGKILL that resumes to the same weights, bit for bit."""

import hashlib
import shutil

import numpy as np
import pytest

from cli_run import kill_after_first_checkpoint, resume_ends_as_uninterrupted
from cli_run import run_cli as _run
from jaxlinear import TrainConfig, get_library, load_checkpoint
from jaxlinear._weights import initial_weights
from jaxlinear.stream import DataDir, fit_stream, make_data, statistics

# 1,000 rows in chunks of 300 (the last of 100, the test chunk); batches of 64 leave rests of
# 44 rows: 5 steps a chunk, 15 an epoch.
SETTINGS = ["--library", "nnx", "--epochs", "6", "--batch-size", "64", "--lr", "0.05", "--quiet"]


def _one_line_error(code, stderr, message):
    assert code == 2, stderr
    assert message in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stderr


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "data"
    return make_data(path, rows=1000, features=4, targets=2, chunk_rows=300, seed=0)


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory):
    """A finished streamed nnx run with a checkpoint every 2 epochs."""
    root = tmp_path_factory.mktemp("run") / "nnx"
    argv = ["train", "--data", folder, *SETTINGS, "--save", root, "--checkpoint-every", "2"]
    from jaxlinear.cli import main

    assert main([str(arg) for arg in argv]) == 0
    return root


def test_a_streamed_run_saves_checkpoints_at_its_epochs(folder, run):
    assert sorted(p.name for p in run.iterdir()) == ["epoch-000002", "epoch-000004", "epoch-000006"]
    final = load_checkpoint(run)
    assert (final.epoch, final.step, final.metadata["steps_per_epoch"]) == (6, 90, 15)
    assert final.metadata["metrics"]["test_r2"] is not None
    assert load_checkpoint(run / "epoch-000002").step == 30
    # What identifies the data directory.
    recorded = final.metadata["dataset"]["data_dir"]
    assert recorded["path"] == str(folder.resolve())
    assert (
        recorded["meta_sha256"] == hashlib.sha256((folder / "meta.json").read_bytes()).hexdigest()
    )
    assert (recorded["rows"], recorded["seed"], recorded["test_fraction"]) == (1000, 0, 0.2)
    # The scaling is the streamed statistics', and the weights those of the same run in Python.
    data = DataDir.open(folder)
    stats = statistics(data, 0.2)
    for field in ("x_mean", "x_scale", "y_mean", "y_scale"):
        np.testing.assert_array_equal(getattr(final.scaling, field), getattr(stats.scaling, field))
    nnx = get_library("nnx")
    config = TrainConfig(epochs=6, batch_size=64, learning_rate=0.05)
    fit = fit_stream(nnx, nnx.from_canonical(initial_weights(4, 2, seed=0)), data, stats, config)
    weights = nnx.to_canonical(fit.fit.model)
    np.testing.assert_array_equal(final.weights.weight, weights.weight)
    np.testing.assert_array_equal(final.weights.bias, weights.bias)


def test_predict_and_show_open_a_streamed_checkpoint(capsys, folder, run, tmp_path):
    x, y = np.load(folder / "x-00003.npy")[:5], np.load(folder / "y-00003.npy")[:5]
    csv = tmp_path / "rows.csv"
    # Columns in another order, a target among them (ignored): matched by name.
    header = "x3,y0,x1,x0,x2"
    table = np.column_stack([x[:, 3], y[:, 0], x[:, 1], x[:, 0], x[:, 2]])
    rows = [",".join(repr(float(v)) for v in row) for row in table]
    csv.write_text("\n".join([header, *rows]) + "\n")
    code, stdout, stderr = _run(
        capsys, "predict", "--model", run, "--data", csv, "--library", "penzai"
    )
    assert code == 0, stderr
    lines = stdout.strip().splitlines()
    assert lines[0] == "y0,y1"
    found = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    checkpoint = load_checkpoint(run)
    original = checkpoint.scaling.weights_to_original(checkpoint.weights)
    # float32 weights on the standardised scale, mapped back in float64: ~1e-6 relative.
    np.testing.assert_allclose(found, x @ original.weight + original.bias, rtol=1e-5, atol=1e-6)

    page = tmp_path / "model.html"
    code, _, stderr = _run(capsys, "show", "--load", run, "--output", page)
    assert code == 0, stderr
    assert "Epoch 6 of 6 (step 90)" in page.read_text()


@pytest.fixture
def other_folders(folder, tmp_path):
    """Another seed's directory, and a copy of `folder` with one value changed in a chunk."""
    other = make_data(tmp_path / "other", rows=1000, features=4, targets=2, chunk_rows=300, seed=1)
    edited = tmp_path / "edited"
    shutil.copytree(folder, edited)
    x = np.load(edited / "x-00001.npy")
    x[7, 2] += 1.0
    np.save(edited / "x-00001.npy", x)
    return {"other": other, "edited": edited}


@pytest.mark.parametrize(
    ("data", "change", "message"),
    [
        ("other", [], "is not the data directory the run in"),
        ("other", [], "seed is 1 here, 0 there; resume it on the same data"),
        ("edited", [], "its chunks hold other values than when the run in"),
        ("same", ["--test-fraction", "0.3"], "--test-fraction is 0.3, but the run in"),
        ("same", ["--lr", "0.1"], "--lr is 0.1, but the run in"),
        ("same", ["--checkpoint-every", "3"], "--checkpoint-every is 3, but the run in"),
        ("same", ["--library", "penzai"], "--library is penzai, but the run in"),
        ("same", ["--target", "y0"], "targets of a data directory"),
    ],
)
def test_resume_refuses_other_data_or_settings(
    capsys, folder, run, other_folders, data, change, message
):
    before = sorted(p.name for p in run.iterdir())
    path = folder if data == "same" else other_folders[data]
    argv = ["train", "--data", path, *SETTINGS, "--checkpoint-every", "2", *change]
    code, _, stderr = _run(capsys, *argv, "--resume", run / "epoch-000002")
    _one_line_error(code, stderr, message)
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written or removed


def test_resume_refuses_an_in_memory_run_and_a_moved_copy_resumes(capsys, folder, tmp_path):
    memory = tmp_path / "memory"
    quick = ["--library", "nnx", "--epochs", "4", "--quiet", "--checkpoint-every", "2"]
    code, _, stderr = _run(capsys, "train", "--data", "linnerud", *quick, "--save", memory)
    assert code == 0, stderr
    argv = ["train", "--data", folder, *quick, "--resume", memory / "epoch-000002"]
    code, _, stderr = _run(capsys, *argv)
    _one_line_error(code, stderr, "was trained in memory on linnerud; resume it with that --data")

    # The same directory copied elsewhere is the same data: the resume goes on.
    streamed = tmp_path / "streamed"
    code, _, stderr = _run(capsys, "train", "--data", folder, *quick, "--save", streamed)
    assert code == 0, stderr
    copy = shutil.copytree(folder, tmp_path / "copy")
    shutil.rmtree(streamed / "epoch-000004")
    code, _, stderr = _run(capsys, "train", "--data", copy, *quick, "--resume", streamed)
    assert code == 0, stderr
    assert load_checkpoint(streamed).epoch == 4


def test_outputs_are_checked_before_the_statistics_pass(capsys, folder, run, tmp_path):
    argv = ["train", "--data", folder, *SETTINGS]
    code, _, stderr = _run(capsys, *argv, "--save", folder / "runs")
    _one_line_error(code, stderr, "is inside the input directory --data")
    code, _, stderr = _run(capsys, *argv, "--save", run)
    _one_line_error(code, stderr, "already holds checkpoints (newest: epoch-000006)")
    code, _, stderr = _run(capsys, *argv, "--checkpoint-every", "2")
    _one_line_error(code, stderr, "--checkpoint-every needs --save DIR")


@pytest.mark.slow
def test_a_killed_streamed_run_resumes_to_the_same_weights(capsys, folder, tmp_path):
    settings = [*SETTINGS[:2], "--epochs", "12", *SETTINGS[4:], "--data", str(folder)]
    periodic = ["--checkpoint-every", "1", "--keep", "2"]
    killed = tmp_path / "killed"
    kill_after_first_checkpoint([*settings, *periodic], killed, last_epoch=12)

    # Compared, bitwise, with a run uninterrupted and without periodic checkpoints: a streamed
    # run calls the same compiled programs on the same batches whatever --checkpoint-every
    # (no epochs are grouped).
    resumed, _ = resume_ends_as_uninterrupted(
        capsys, [*settings, *periodic], settings, killed, tmp_path / "whole"
    )
    assert resumed.epoch == 12
    assert sorted(p.name for p in killed.iterdir()) == ["epoch-000011", "epoch-000012"]
