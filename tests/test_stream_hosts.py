"""`train`/`compare --data DIR` over two processes (`jax.distributed`, gloo, 127.0.0.1), each
reading from disk only its block of each chunk; and the row-range reads that make it so.

The two-process runs reuse tests/test_hosts.py's helpers: every process is a subprocess with
a timeout, so a hang fails the test instead of CI.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from jaxlinear.stream import DataDir, make_data
from jaxlinear.training import process_block
from test_hosts import (
    LIBRARIES,
    RTOL,
    _close,
    _one_process,
    _two_processes,
    _two_processes_match_one,
    _weights,
)

# 3000 rows in chunks of 777: three training chunks of 777 rows (odd: padded to 778 over two
# devices, 389 rows a process, the second's last one padding) and a test chunk of 669.
# Batches of 100 leave a rest batch of 77 rows per chunk (odd again: padded to 78).
ROWS, CHUNK_ROWS, TRAIN_CHUNKS = 3000, 777, 3


def _data(tmp_path, file_format: str):
    return make_data(
        tmp_path / f"data-{file_format}",
        rows=ROWS,
        features=5,
        targets=2,
        chunk_rows=CHUNK_ROWS,
        file_format=file_format,
    )


@pytest.mark.slow
def test_two_processes_stream_to_the_weights_of_one_reading_only_their_blocks(tmp_path):
    data, epochs = _data(tmp_path, "npy"), 3
    args = ["compare", "--data", data, "--libraries", ",".join(LIBRARIES), "--quiet"]
    args += ["--epochs", epochs, "--optimizer", "sgd", "--batch-size", 100]
    both = _two_processes_match_one(args, tmp_path)  # process 0 alone prints
    assert both[1].stderr == ""
    figures = json.loads((tmp_path / "two.json").read_text())
    # Each process read its half of each padded 778-row chunk and nothing else: 389 rows,
    # and 388 for the second (its last row is padding), per chunk and epoch. Between them,
    # every training row once per epoch.
    read = figures["dataset"]["training_rows_read_per_process"]
    per_epoch = TRAIN_CHUNKS * epochs
    # The statistics pass: chunks 0 and 2 read by process 0, 1 and 3 (669 rows) by process
    # 1, and their float64 sums gathered bit for bit: the same exact figures as one process.
    assert figures["dataset"]["statistics_rows_read_per_process"] == [777 * 2, 777 + 669]
    single_figures = json.loads((tmp_path / "one.json").read_text())
    assert figures["exact"] == single_figures["exact"]
    assert (
        figures["weights_original_scale"]["exact"]
        == single_figures["weights_original_scale"]["exact"]
    )
    for library in LIBRARIES:
        assert read[library] == [389 * per_epoch, 388 * per_epoch], library
        assert sum(read[library]) == figures["dataset"]["n_train"] * epochs


@pytest.mark.slow
def test_two_processes_stream_parquet_whole_chunks_save_and_resume(tmp_path):
    # Parquet, one whole-chunk batch a step (its padding row weighs 0, the real rows
    # 778/777), and a collective orbax checkpoint (nnx) resumed by both processes.
    data = _data(tmp_path, "parquet")
    args = ["train", "--data", data, "--library", "nnx", "--epochs", 4, "--optimizer", "sgd"]
    args += ["--checkpoint-every", 2, "--quiet"]
    whole = _one_process([*args, "--save", tmp_path / "whole", "--json", tmp_path / "one.json"])
    assert whole.returncode == 0, whole.stderr
    run = tmp_path / "run"
    saved = _two_processes([*args, "--save", run], tmp_path / "saved")
    assert [result.returncode for result in saved] == [0, 0], saved[0].stderr + saved[1].stderr
    assert sorted(path.name for path in run.iterdir()) == ["epoch-000002", "epoch-000004"]
    shutil.rmtree(run / "epoch-000004")  # as if the run had stopped after epoch 2
    resumed = _two_processes(
        [*args, "--resume", run, "--json", tmp_path / "two.json"], tmp_path / "resumed"
    )
    assert [result.returncode for result in resumed] == [0, 0], resumed[0].stderr
    assert (run / "epoch-000004").is_dir()
    one, two = _weights(tmp_path / "one.json", "nnx"), _weights(tmp_path / "two.json", "nnx")
    assert _close(two, one) < RTOL
    read = json.loads((tmp_path / "two.json").read_text())["dataset"]
    assert read["training_rows_read_per_process"]["nnx"] == [389 * 3 * 2, 388 * 3 * 2]


@pytest.mark.slow
def test_a_chunk_one_process_cannot_read_stops_both_with_one_line(tmp_path):
    data = _data(tmp_path, "npy")
    damaged = np.load(data / "x-00001.npy", mmap_mode="r+")  # read by process 1 alone
    damaged[5, 2] = np.nan
    damaged.flush()
    del damaged
    args = ["compare", "--data", data, "--libraries", "nnx", "--epochs", 1, "--quiet"]
    both = _two_processes(args, tmp_path / "run")
    assert [result.returncode for result in both] == [2, 2]
    assert both[1].stderr.splitlines() == [
        f"jaxlinear: error: chunk x-00001.npy in {data} has NaN or infinite values; write the "
        "directory again"
    ]
    assert both[0].stderr.splitlines() == [
        f"jaxlinear: error: chunk 1 of {data} could not be read by process 1 (its own error "
        "says why); write the directory again"
    ]


@pytest.mark.parametrize("file_format", ["npy", "parquet"])
def test_a_row_range_reads_those_rows_only(tmp_path, file_format):
    # 20000 rows in one chunk: Parquet row groups of 8192 rows, so ranges start and end
    # inside groups and span them.
    data = DataDir.open(
        make_data(tmp_path / "d", rows=20000, features=3, chunk_rows=20000, file_format=file_format)
    )
    x, y = data.raw_chunk(0)
    for start, stop in [(0, 20000), (0, 1), (8191, 8193), (5000, 17000), (19999, 20000), (7, 7)]:
        part_x, part_y = data.raw_chunk(0, start=start, stop=stop)
        np.testing.assert_array_equal(part_x, x[start:stop])
        np.testing.assert_array_equal(part_y, y[start:stop])


class _Sharding:
    """What `process_block` asks of a `NamedSharding`: the row slices of this process's
    devices, here as process 1 of 2 (two devices each) would see them."""

    def __init__(self, slices):
        self.slices = slices

    def addressable_devices_indices_map(self, shape):
        return {device: (rows,) for device, rows in enumerate(self.slices)}


def test_the_block_is_this_process_devices_rows():
    # Process 1 of 2 with two devices each: rows 390:780 of 780, in either device order.
    assert process_block(_Sharding([slice(390, 585), slice(585, 780)]), (780,)) == (390, 780)
    assert process_block(_Sharding([slice(585, None), slice(390, 585)]), (780,)) == (390, 780)
    with pytest.raises(ValueError, match="not one block"):  # a mesh interleaving processes
        process_block(_Sharding([slice(0, 195), slice(390, 585)]), (780,))
