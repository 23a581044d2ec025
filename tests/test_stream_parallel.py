"""Streamed training from a data directory on several devices (`--data DIR --devices N`,
`stream.fit_stream(..., mesh=)`).

The 8-device checks run in ONE subprocess (tests/stream_parallel_check.py), since simulated
CPU devices must be asked for in XLA_FLAGS before jax is imported.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from eight_devices import run_check

CHECK = Path(__file__).with_name("stream_parallel_check.py")

# As in tests/test_scaling.py: 8 devices sum each batch's gradient in 8 partial sums and an
# all-reduce instead of one sum, float32 rounding in another order; over the 2-3 epochs of
# sgd run here the weights differ by ~1e-7 relative (measured: at most 8.1e-8). 1e-5 leaves
# room for other orders and machines; a wrongly weighted padding row does not fit in it
# (tried: padding rows weighing 1 in the rest batches gave 4.7e-2, in whole chunks 2.9e-2).
RTOL = 1e-5
LIBRARIES = ("linen", "nnx", "equinox", "penzai")


@pytest.fixture(scope="module")
def eight_devices() -> dict:
    return run_check(CHECK)


@pytest.mark.slow
def test_a_stream_on_eight_devices_trains_to_the_weights_of_one(eight_devices):
    assert eight_devices["devices"] == 8
    rows = eight_devices["equality"]
    cases = {(r["library"], r["mode"], r["batch"]) for r in rows}
    # Every library fused on mini-batches of 24 (rest batches of 4 and 12 rows) and on whole
    # chunks (100 and 60 rows, padded); one on batches of 40 (rests of 20, the 60-row
    # chunk's 40 + 20); and the per-step modes.
    assert cases >= {(name, "fused", batch) for name in LIBRARIES for batch in ("mini", "whole")}
    assert ("nnx", "fused", "mixed") in cases
    assert {mode for _, mode, _ in cases} == {"fused", "fast", "idiomatic"}
    for row in rows:
        assert row["relative_change"] > 0.1, row  # training moved the weights
        assert row["relative_difference"] < RTOL, row


@pytest.mark.slow
def test_a_sharded_stream_resumes_to_the_same_weights(eight_devices):
    # penzai (its `shard` places by axis name); tests/test_scaling.py resumes all four
    # sharded in memory, through the same `shard` and `merge`.
    assert eight_devices["resumed_equal"] == {"penzai": True}


@pytest.mark.slow
def test_chunks_are_split_over_the_devices_and_odd_batches_padded_with_zero_weight(
    eight_devices,
):
    layout = eight_devices["layout"]
    # A 100-row chunk cut into batches of 24: placed as 104 rows, 13 a device, targets plain
    # (mini-batches never pick the padding).
    assert layout["rows_shards"] == [[13, 5]]
    assert layout["rows_targets_plain"]
    # Its rest batch of 4 rows, gathered on the devices: the same rows, padded to 8 (1 a
    # device), the real ones weighing 8/4, the padding 0.
    assert layout["rest_rows"] == 8
    assert layout["rest_shards"] == [[1, 5]]
    assert layout["rest_weights"] == [2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0]
    assert layout["rest_x_equal"]
    # The chunk as one whole batch: 104 rows, the real 100 weighing 104/100 each, the 4
    # padding rows 0.
    whole = layout["whole_weights"]
    assert whole is not None and len(whole) == 104
    assert sum(whole) == pytest.approx(104, rel=1e-6) and whole[100:] == [0.0] * 4


@pytest.mark.slow
def test_command_line_data_dir_on_eight_devices(eight_devices):
    runs = eight_devices["cli"]
    for key, devices in (("devices_1", 1), ("devices_default", 8)):
        assert runs[key]["exit"] == 0, runs[key]["stderr"]
        assert runs[key]["devices"] == devices  # all of them by default
    for name in ("linen", "equinox"):
        assert runs["relative_difference"][name] < RTOL, runs["relative_difference"]
    assert runs["uneven_batch"]["exit"] == 2
    assert runs["uneven_batch"]["stderr"] == (
        "jaxlinear: error: --batch-size must be a multiple of the number of devices (8) so "
        "each batch splits evenly, got 20\n"
    )


@pytest.mark.slow
def test_command_line_data_dir_saves_and_resumes_on_eight_devices(eight_devices):
    # train --data DIR --save on every device; its last checkpoint removed, --resume from
    # the one before ends bitwise where the run first ended.
    saved = eight_devices["cli"]["saved_and_resumed"]
    assert saved["exit"] == 0, saved.get("stderr")
    assert saved["epochs"] == [2, 2]
    assert saved["equal"]
