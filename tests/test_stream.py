"""Data larger than memory: `make-data` directories, the one-pass statistics, and streamed
training, which must see every row once per epoch and equal in-memory training."""

import gc
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli_run import run_cli as _run
from jaxlinear import LIBRARY_NAMES, TrainConfig, get_library
from jaxlinear import training as driver
from jaxlinear._errors import ConfigError, DataError
from jaxlinear._scaling import Scaling
from jaxlinear._weights import initial_weights
from jaxlinear.exact import least_squares
from jaxlinear.stream import (
    DataDir,
    _prefetched,
    epoch_plan,
    fit_stream,
    make_data,
    standardise,
    statistics,
    steps_per_epoch,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """1,000 rows in chunks of 300 (the last of 100), 5 features, 2 targets."""
    path = tmp_path_factory.mktemp("stream") / "data"
    make_data(path, rows=1000, features=5, targets=2, chunk_rows=300, seed=3)
    return path


@pytest.fixture(scope="module")
def parquet_folder(tmp_path_factory):
    """The `folder` data set (same seed and shapes) as Parquet chunks."""
    path = tmp_path_factory.mktemp("stream_parquet") / "data"
    make_data(path, rows=1000, features=5, targets=2, chunk_rows=300, seed=3, file_format="parquet")
    return path


def _rows(data, chunks):
    x, y = zip(*[data.raw_chunk(i) for i in chunks], strict=True)
    return np.concatenate(x), np.concatenate(y)


def test_make_data_writes_chunks_and_the_true_weights(folder):
    data = DataDir.open(folder)
    assert data.chunk_rows == (300, 300, 300, 100)
    assert [a.shape for a in data.raw_chunk(3)] == [(100, 5), (100, 2)]
    assert not list(folder.parent.glob(".data.tmp-*"))  # the temporary directory was renamed
    x, y = _rows(data, range(4))
    # The data is the linear model of meta.json plus noise of scale 0.1: the exact fit on all
    # 1,000 rows recovers W to about 0.1 / sqrt(1000) / (feature scale ~1) ~ 3e-3.
    fitted = least_squares(x, y)
    assert np.abs(fitted.weight - data.true_weights.weight).max() < 0.02
    assert np.std(y - (x @ data.true_weights.weight + data.true_weights.bias)) == pytest.approx(
        0.1, rel=0.1
    )


def test_statistics_in_one_pass_equal_the_in_memory_ones(folder):
    data = DataDir.open(folder)
    stats = statistics(data, test_fraction=0.25)
    assert stats.train_chunks == (0, 1, 2) and (stats.n_train, stats.n_test) == (900, 100)
    x, y = _rows(data, stats.train_chunks)
    scaling = Scaling.fit(x, y)
    # float64 sums of float32 data in another order: equal to ~1e-15 relative.
    for field in ("x_mean", "x_scale", "y_mean", "y_scale"):
        np.testing.assert_allclose(getattr(stats.scaling, field), getattr(scaling, field), 1e-12)
    for l2 in (0.0, 0.3):
        exact = least_squares(scaling.features(x), scaling.targets(y), l2=l2)
        np.testing.assert_allclose(stats.exact(l2).weight, exact.weight, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(stats.exact(l2).bias, exact.bias, atol=1e-12)
    weights = initial_weights(5, 2, seed=1).astype(np.float64)
    residual = scaling.features(x) @ weights.weight + weights.bias - scaling.targets(y)
    objective = 0.5 * np.mean(np.sum(residual**2, axis=1)) + 0.5 * 0.3 * np.sum(weights.weight**2)
    assert stats.objective(weights, 0.3) == pytest.approx(objective, rel=1e-10)
    x_test, y_test = _rows(data, [3])
    prediction = scaling.targets_to_original(weights.predict(scaling.features(x_test)))
    figures = stats.evaluate(weights)
    assert figures["test_mse"] == pytest.approx(np.mean((prediction - y_test) ** 2), rel=1e-9)


@pytest.mark.parametrize("batch_size", [None, 7, 64, 500])
def test_every_row_is_seen_exactly_once_per_epoch(batch_size):
    chunk_rows, train_chunks = (300, 300, 300, 100), (0, 1, 2, 3)
    orders = []
    for epoch in range(3):
        plans = list(epoch_plan(chunk_rows, train_chunks, batch_size, seed=5, epoch=epoch))
        assert sum(plan.steps for plan in plans) == steps_per_epoch(
            chunk_rows, train_chunks, batch_size
        )
        orders.append([plan.chunk for plan in plans])
        seen = []
        for plan in plans:
            rows = np.arange(chunk_rows[plan.chunk])
            if plan.batches.shape[1] == 0:
                seen.append(plan.chunk * 1000 + rows)  # the whole chunk in one step
            else:
                assert plan.batches.shape[1] == batch_size and len(plan.rest) < batch_size
                picked = np.concatenate([plan.batches.reshape(-1), plan.rest])
                seen.append(plan.chunk * 1000 + picked)
        seen = np.sort(np.concatenate(seen))
        expected = np.concatenate([c * 1000 + np.arange(n) for c, n in enumerate(chunk_rows)])
        np.testing.assert_array_equal(seen, expected)
    assert len({tuple(order) for order in orders}) > 1  # the chunk order is reshuffled


def _in_memory_reference(library, data, stats, config):
    """The same steps on all training rows in memory: the runner fed the global indices of
    each streamed batch, in the streamed order."""
    chunk_rows = data.chunk_rows
    x, y = standardise(stats.scaling, *_rows(data, stats.train_chunks))
    offsets = np.cumsum([0, *chunk_rows])
    steps = steps_per_epoch(chunk_rows, stats.train_chunks, 64)
    optimizer = driver.make_optimizer(config, len(x), total_steps=config.epochs * steps)
    start = library.from_canonical(initial_weights(5, 2, seed=config.seed))
    drive = driver.runner(library.module, library.module.init_training(start, optimizer), config)
    state = drive.state
    x, y = jax.device_put(x), jax.device_put(y)
    for epoch in range(config.epochs):
        for plan in epoch_plan(chunk_rows, stats.train_chunks, 64, config.seed, epoch):
            state, _ = drive.run(state, x, y, plan.batches + offsets[plan.chunk])
            if len(plan.rest):  # an empty row would mean "all rows"
                state, _ = drive.run(state, x, y, (plan.rest + offsets[plan.chunk])[None])
    return library.to_canonical(library.module.model_of(drive.finish(state)))


@pytest.mark.parametrize(
    ("name", "mode"), [(name, "fused") for name in LIBRARY_NAMES] + [("nnx", "fast")]
)
def test_streamed_training_equals_in_memory_training_on_the_same_order(folder, name, mode):
    data = DataDir.open(folder)
    stats = statistics(data, test_fraction=0.25)
    config = TrainConfig(epochs=3, batch_size=64, learning_rate=0.05, step_mode=mode, seed=2)
    library = get_library(name)
    start = library.from_canonical(initial_weights(5, 2, seed=2))
    streamed = library.to_canonical(fit_stream(library, start, data, stats, config).fit.model)
    expected = _in_memory_reference(library, data, stats, config)
    # The same compiled step on the same float32 batches; only the gather's source array
    # differs, so the results agree to float32 rounding (a few ulps after 45 adam steps).
    np.testing.assert_allclose(streamed.weight, expected.weight, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(streamed.bias, expected.bias, rtol=1e-5, atol=1e-6)


def test_one_chunk_full_batch_equals_training_fit(tmp_path):
    path = make_data(tmp_path / "one", rows=200, features=5, targets=2, chunk_rows=200, seed=4)
    data = DataDir.open(path)
    stats = statistics(data, test_fraction=0.25)  # one chunk: no test split
    assert stats.n_test == 0 and stats.n_train == 200
    config = TrainConfig(epochs=40, learning_rate=0.1)
    nnx = get_library("nnx")
    start = nnx.from_canonical(initial_weights(5, 2, seed=0))
    streamed = fit_stream(nnx, start, data, stats, config).fit
    x, y = standardise(stats.scaling, *_rows(data, [0]))
    in_memory = nnx.fit(start, x, y, config)
    # Each streamed epoch is one step on the whole chunk, as `fit`'s full batch; fused groups
    # epochs into one scan where the stream runs one a call: float32 rounding apart.
    np.testing.assert_allclose(
        nnx.to_canonical(streamed.model).weight, nnx.to_canonical(in_memory.model).weight, 1e-5
    )
    assert streamed.final_objective == pytest.approx(in_memory.final_objective, rel=1e-5)


def test_streamed_training_reaches_the_exact_solution(folder):
    data = DataDir.open(folder)
    stats = statistics(data, test_fraction=0.25)
    config = TrainConfig(epochs=40, batch_size=50, learning_rate=0.05)
    equinox = get_library("equinox")
    fit = fit_stream(
        equinox, equinox.from_canonical(initial_weights(5, 2, seed=0)), data, stats, config
    ).fit
    optimum = stats.objective(stats.exact())
    # The `compare` convergence test: within 1e-4 relative of the optimum (+1e-6).
    assert fit.final_objective - optimum <= 1e-4 * optimum + 1e-6
    assert fit.final_objective < fit.initial_objective / 100


def test_a_resumed_stream_ends_where_the_whole_run_does(folder):
    data = DataDir.open(folder)
    stats = statistics(data, test_fraction=0.25)
    config = TrainConfig(epochs=4, batch_size=64, learning_rate=0.05)
    linen = get_library("linen")
    start = linen.from_canonical(initial_weights(5, 2, seed=0))
    saved = []
    whole = fit_stream(
        linen, start, data, stats, config, checkpoint_every=2, on_checkpoint=saved.append
    ).fit
    assert [state.step for state in saved] == [2 * 15, 4 * 15]  # 15 steps per epoch
    resumed = fit_stream(linen, start, data, stats, config, start=saved[0]).fit
    leaves = jax.tree.leaves(whole.state.arrays), jax.tree.leaves(resumed.state.arrays)
    for a, b in zip(*leaves, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_next_chunk_loads_while_the_current_one_is_used():
    started = {index: threading.Event() for index in range(3)}

    def load(index):
        started[index].set()
        return index

    seen = []
    for item in _prefetched(load, [0, 1, 2]):
        # The load of the following chunk was started before this one is handed over.
        if item < 2:
            assert started[item + 1].wait(5)
        seen.append(item)
    assert seen == [0, 1, 2]


def test_bad_directories_are_refused_with_one_clear_error(folder, tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        DataDir.open(tmp_path / "missing")
    with pytest.raises(DataError, match="not a CSV file or a jaxlinear data directory"):
        DataDir.open(tmp_path)
    with pytest.raises(DataError, match="already exists"):
        make_data(folder, rows=10, features=2)
    with pytest.raises(ConfigError, match="rows"):
        make_data(tmp_path / "new", rows=0, features=2)
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not a jaxlinear data directory"):
        make_data(tmp_path, rows=10, features=2, overwrite=True)
    assert (tmp_path / "keep.txt").read_text() == "mine"

    damaged = make_data(tmp_path / "damaged", rows=30, features=2, chunk_rows=10)
    raw = (damaged / "x-00001.npy").read_bytes()
    (damaged / "x-00001.npy").write_bytes(raw[: len(raw) - 8])
    with pytest.raises(DataError, match=r"x-00001\.npy .* missing or damaged"):
        DataDir.open(damaged)
    np.save(damaged / "x-00001.npy", np.zeros((10, 3), np.float32))
    with pytest.raises(DataError, match=r"x-00001\.npy .* not float32 \(10, 2\)"):
        DataDir.open(damaged)
    values = np.zeros((10, 2), np.float32)
    values[4, 1] = np.nan
    np.save(damaged / "x-00001.npy", values)
    with pytest.raises(DataError, match=r"x-00001\.npy .* NaN"):
        statistics(DataDir.open(damaged), 0.2)


def test_cli_make_data_then_compare_from_the_directory(capsys, tmp_path):
    path = str(tmp_path / "d")
    code, _, err = _run(capsys, "make-data", path, "--rows", "600", "--features", "3",
                        "--chunk-rows", "200", "--quiet")  # fmt: skip
    assert code == 0 and "wrote 600 rows" in err
    out = tmp_path / "figures.json"
    code, _, err = _run(capsys, "compare", "--data", path, "--libraries", "nnx,penzai",
                             "--epochs", "30", "--batch-size", "40", "--lr", "0.05", "--quiet",
                             "--json", str(out))  # fmt: skip
    assert code == 0, err
    figures = json.loads(out.read_text())
    assert figures["dataset"]["n_train"] == 400 and figures["dataset"]["n_test"] == 200
    assert all(run["converged"] for run in figures["libraries"].values())
    assert len(figures["epoch_seconds"]["nnx"]) == 30


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["make-data", "{tmp}/x", "--rows", "0", "--features", "2"], "--rows must be"),
        (["make-data", "{tmp}/x", "--rows", "5", "--features", "0"], "--features must be"),
        (["make-data", "{tmp}", "--rows", "5", "--features", "2"], "already exists"),
        (["compare", "--data", "{tmp}"], "not a CSV file or a jaxlinear data directory"),
        (["compare", "--data", "{data}", "--report", "{tmp}/r.html"], "--report not supported"),
        (["compare", "--data", "{data}", "--target", "y0"], "targets of a data directory"),
    ],
)
def test_cli_errors_are_one_line_with_exit_2(capsys, tmp_path, folder, argv, message):
    argv = [arg.format(tmp=tmp_path, data=folder) for arg in argv]
    code, _, err = _run(capsys, *argv, "--quiet")
    assert code == 2
    assert err.count("\n") == 1 and message in err, err


def _assert_same_chunks(expected, parquet):
    assert parquet.file_format == "parquet"
    assert expected.chunk_rows == parquet.chunk_rows
    for index in range(expected.chunks):
        for a, b in zip(expected.raw_chunk(index), parquet.raw_chunk(index), strict=True):
            assert b.dtype == np.float32 and b.flags.c_contiguous and a.shape == b.shape
            assert a.tobytes() == b.tobytes()  # bitwise: the same float32 values were written


def test_parquet_chunks_hold_the_npy_values_of_the_same_seed(tmp_path):
    # Chunks of 9000 rows: a Parquet chunk is written as row groups of 8192 + 808 rows.
    npy = make_data(tmp_path / "npy", rows=17000, features=3, targets=2, chunk_rows=9000, seed=7)
    parquet = make_data(tmp_path / "pq", rows=17000, features=3, targets=2, chunk_rows=9000,
                        seed=7, file_format="parquet")  # fmt: skip
    meta = json.loads((parquet / "meta.json").read_text())
    assert meta["file_format"] == "parquet" and meta["version"] == 1
    assert meta["chunks"] == [{"file": "chunk-00000.parquet", "rows": 9000},
                              {"file": "chunk-00001.parquet", "rows": 8000}]  # fmt: skip
    assert sorted(p.name for p in parquet.iterdir()) == [
        "chunk-00000.parquet", "chunk-00001.parquet", "meta.json"]  # fmt: skip
    footer = pq.read_metadata(parquet / "chunk-00000.parquet")
    assert [footer.row_group(i).num_rows for i in range(footer.num_row_groups)] == [8192, 808]
    assert footer.schema.to_arrow_schema() == pa.schema(
        [pa.field(name, pa.float32(), nullable=False) for name in ("x0", "x1", "x2", "y0", "y1")]
    )
    assert not list(tmp_path.glob(".pq.tmp-*"))  # written under a temporary name, renamed
    assert DataDir.open(npy).file_format == "npy"
    _assert_same_chunks(DataDir.open(npy), DataDir.open(parquet))


def test_parquet_statistics_equal_the_npy_ones(folder, parquet_folder):
    npy, parquet = DataDir.open(folder), DataDir.open(parquet_folder)
    _assert_same_chunks(npy, parquet)
    a, b = statistics(npy, test_fraction=0.25), statistics(parquet, test_fraction=0.25)
    assert a.train_chunks == b.train_chunks
    # The same float32 values summed in the same order: the float64 moments are bitwise equal.
    for field in ("x_mean", "x_scale", "y_mean", "y_scale"):
        np.testing.assert_array_equal(getattr(a.scaling, field), getattr(b.scaling, field))
    for moments in ("train", "test"):
        for field in ("n", "x_mean", "y_mean", "cov_xx", "cov_xy", "var_y"):
            np.testing.assert_array_equal(
                getattr(getattr(a, moments), field), getattr(getattr(b, moments), field)
            )


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_streamed_training_from_parquet_equals_it_from_npy_bitwise(folder, parquet_folder, name):
    config = TrainConfig(epochs=2, batch_size=64, learning_rate=0.05, seed=2)
    library = get_library(name)
    start = library.from_canonical(initial_weights(5, 2, seed=2))
    results = []
    for path in (folder, parquet_folder):
        data = DataDir.open(path)
        results.append(fit_stream(library, start, data, statistics(data, 0.25), config).fit)
    npy, parquet = results
    np.testing.assert_array_equal(npy.losses, parquet.losses)
    for a, b in zip(*(jax.tree.leaves(r.state.arrays) for r in results), strict=True):
        np.testing.assert_array_equal(a, b)


def test_parquet_reader_takes_any_codec_pyarrow_reads(parquet_folder, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "meta.json").write_bytes((parquet_folder / "meta.json").read_bytes())
    for index, codec in enumerate(("snappy", "zstd", "gzip", "none")):
        name = f"chunk-{index:05d}.parquet"
        table = pq.read_table(parquet_folder / name)
        pq.write_table(table, copy / name, compression=codec, row_group_size=64)
    _assert_same_chunks(DataDir.open(parquet_folder), DataDir.open(copy))


def _flip_a_value(path: Path) -> None:
    """Changes one bit of one float in the data pages (not in any header or footer)."""
    x = pq.read_table(path).column("x1").to_numpy()
    raw = bytearray(path.read_bytes())
    # A value stored once: not also a page's or the footer's min/max statistic.
    value = next(v.tobytes() for v in x if raw.count(v.tobytes()) == 1)
    raw[raw.find(value)] ^= 1
    path.write_bytes(bytes(raw))


def _rewrite(path: Path, change) -> None:
    pq.write_table(change(pq.read_table(path)), path)


_PARQUET_DAMAGE = {
    "bytes": (_flip_a_value, r"chunk-00001\.parquet .* damaged \(.*CRC checksum"),
    "truncated": (
        lambda path: path.write_bytes(path.read_bytes()[:-100]),
        r"chunk-00001\.parquet .* missing or damaged \(Parquet magic bytes not found",
    ),
    "missing": (Path.unlink, r"chunk-00001\.parquet .* missing or damaged"),
    "renamed column": (
        lambda path: _rewrite(path, lambda t: t.rename_columns(["x0", "z1", "y0"])),
        r"chunk-00001\.parquet .* has the columns x0, z1, y0, not x0, x1, y0 as meta\.json",
    ),
    "float64 column": (
        lambda path: _rewrite(path, lambda t: t.set_column(1, "x1", t["x1"].cast(pa.float64()))),
        r"chunk-00001\.parquet .* holds column x1 as double, not float32 as meta\.json",
    ),
    "wrong rows": (
        lambda path: _rewrite(path, lambda t: t.slice(0, 9)),
        r"chunk-00001\.parquet .* has 9 rows, not 10 as meta\.json says",
    ),
    "null": (
        lambda path: _rewrite(
            path, lambda t: t.set_column(0, "x0", pa.array([None] + [1.0] * 9, pa.float32()))
        ),
        r"chunk-00001\.parquet .* holds column x0 as float with 1 missing values",
    ),
}


@pytest.mark.parametrize("damage", list(_PARQUET_DAMAGE))
def test_cli_parquet_damage_is_one_line_with_exit_2(capsys, tmp_path, damage):
    change, message = _PARQUET_DAMAGE[damage]
    path = make_data(tmp_path / "d", rows=30, features=2, chunk_rows=10, file_format="parquet")
    change(path / "chunk-00001.parquet")
    code, out, err = _run(capsys, "compare", "--data", path, "--libraries", "nnx", "--quiet")
    assert code == 2 and out == "", err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert "write the directory again" in err


def test_cli_make_data_parquet_then_compare_from_the_directory(capsys, tmp_path):
    path = tmp_path / "d"
    code, _, err = _run(capsys, "make-data", path, "--rows", "600", "--features", "3",
                        "--chunk-rows", "200", "--format", "parquet", "--quiet")  # fmt: skip
    assert code == 0 and "wrote 600 rows" in err and "parquet" in err
    assert sorted(p.name for p in path.glob("*.parquet")) == [
        f"chunk-0000{i}.parquet" for i in range(3)
    ]
    out = tmp_path / "figures.json"
    code, _, err = _run(capsys, "compare", "--data", path, "--libraries", "equinox",
                        "--epochs", "30", "--batch-size", "40", "--lr", "0.05", "--quiet",
                        "--json", out)  # fmt: skip
    assert code == 0, err
    figures = json.loads(out.read_text())
    assert figures["dataset"]["n_train"] == 400 and figures["dataset"]["n_test"] == 200
    assert figures["libraries"]["equinox"]["converged"]


def test_cli_make_data_refuses_an_unknown_format(capsys, tmp_path):
    code, _, err = _run(capsys, "make-data", tmp_path / "x", "--rows", "5", "--features", "2",
                        "--format", "csv")  # fmt: skip
    assert code == 2 and "invalid choice: 'csv'" in err
    with pytest.raises(ConfigError, match="file_format must be one of npy, parquet"):
        make_data(tmp_path / "x", rows=5, features=2, file_format="csv")
    assert not (tmp_path / "x").exists()


def test_npy_directories_and_make_data_errors_never_import_pyarrow(tmp_path):
    probe = (
        "import sys\n"
        "from jaxlinear.cli import main\n"
        f"assert main(['make-data', {str(tmp_path / 'd')!r}, '--rows', '20', '--features', '2',"
        " '--chunk-rows', '10', '--quiet']) == 0\n"
        f"assert main(['make-data', {str(tmp_path / 'd')!r}, '--rows', '20', '--features', '2',"
        " '--format', 'parquet', '--quiet']) == 2  # exists: refused before pyarrow is needed\n"
        "from jaxlinear.stream import DataDir, statistics\n"
        f"statistics(DataDir.open({str(tmp_path / 'd')!r}), 0.5)\n"
        "print('pyarrow' in sys.modules, 'jax' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_opening_and_reading_parquet_leaves_no_reference_cycles(tmp_path):
    # A cycle (e.g. `pq.read_metadata(path).schema` and its metadata) keeps each footer in
    # memory until the cycle collector runs: resident memory then grows with the chunk count.
    path = make_data(tmp_path / "d", rows=40, features=3, chunk_rows=2, file_format="parquet")
    gc.collect()
    gc.disable()
    try:
        data = DataDir.open(path)
        for index in range(data.chunks):
            data.raw_chunk(index)
        assert gc.collect() == 0
    finally:
        gc.enable()
