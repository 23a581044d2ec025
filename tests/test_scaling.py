"""Data-parallel training (`--devices`, `training.data_mesh`, each library's `shard`).

The 8-device checks run in ONE subprocess (tests/data_parallel_check.py), since simulated
CPU devices must be asked for in XLA_FLAGS before jax is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxlinear import cli
from jaxlinear._errors import ConfigError

CHECK = Path(__file__).with_name("data_parallel_check.py")

# 8 devices sum each batch's gradient in 8 partial sums plus an all-reduce instead of one
# sum: float32 rounding (~6e-8 relative per operation) in another order. Over the 4-16 sgd
# steps run, the weights then differ by ~1e-7 relative (measured: at most 9e-8); 1e-5 leaves
# room for other orders and machines, while a real mistake does not fit in it (tried: the
# full batch's padding rows weighing 1 instead of its real rows weighing 104/100 gives 2e-2).
RTOL = 1e-5


@pytest.fixture(scope="module")
def eight_devices() -> dict:
    environment = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAXLINEAR_CACHE_DIR": "",
    }
    result = subprocess.run(
        [sys.executable, str(CHECK)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.mark.slow
def test_eight_devices_train_to_the_weights_of_one(eight_devices):
    rows = eight_devices["equality"]
    # Every library, every step mode, mini-batches (24 = 3 rows a device) and full batches
    # (100 rows, padded to 104 with zero-weight rows).
    assert {(r["library"], r["mode"], r["batch"]) for r in rows} == {
        (library, mode, batch)
        for library in ("linen", "nnx", "equinox", "penzai")
        for mode in ("fused", "fast", "idiomatic")
        for batch in ("mini", "full")
    }
    for row in rows:
        assert row["relative_change"] > 0.1, row  # training moved the weights
        assert row["relative_difference"] < RTOL, row


@pytest.mark.slow
def test_a_sharded_run_resumes_to_the_same_weights(eight_devices):
    assert eight_devices["resumed_equal"] == dict.fromkeys(
        ("linen", "nnx", "equinox", "penzai"), True
    )


@pytest.mark.slow
def test_batches_are_split_over_the_devices_and_parameters_replicated(eight_devices):
    layout = eight_devices["layout"]
    assert layout["devices"] == 8
    # 100 rows padded to 104, 13 on each device; a 24-row batch gathered from them, 3 each.
    assert layout["data_rows"] == 104
    assert layout["data_devices"] == 8
    assert layout["data_shard_shapes"] == [[13, 5]]
    assert layout["batch_shard_shapes"] == [[3, 5]]
    assert layout["unset_mesh_batch_shard_shapes"] == [[24, 5]]  # whole on each, unsplit
    for name, library in layout["libraries"].items():
        assert library["leaves_replicated"], name
        assert library["leaves_on_all_devices"], name
        # The gradient of a split (full) batch needs a cross-device sum: the compiler's.
        assert library["step_all_reduces"] >= 1, name


@pytest.mark.slow
def test_command_line_devices_on_eight(eight_devices):
    runs = eight_devices["cli"]
    assert runs["uneven_batch"]["exit"] == 2
    assert runs["uneven_batch"]["stderr"] == (
        "jaxlinear: error: --batch-size must be a multiple of the number of devices (8) so "
        "each batch splits evenly, got 20\n"
    )
    assert runs["too_many_devices"]["exit"] == 2
    assert runs["too_many_devices"]["stderr"] == (
        "jaxlinear: error: --devices must be between 1 and 8, the number of devices this host "
        "has; got 9\n"
    )
    assert runs["default_devices"]["exit"] == 0
    assert runs["default_devices"]["devices"] == 8  # all of them by default


@pytest.mark.parametrize("devices", ["0", "2", "-1"])
def test_devices_out_of_range_is_one_line(devices, capsys):
    # This process has one CPU device.
    code = cli.main(
        ["train", "--library", "linen", "--epochs", "2", "--quiet", "--devices", devices]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err == (
        f"jaxlinear: error: --devices must be 1, the number of devices this host has; "
        f"got {devices}\n"
    )


def test_one_device_needs_no_mesh():
    from jaxlinear.training import data_mesh

    assert data_mesh(1) is None
    with pytest.raises(ConfigError):
        data_mesh(True)


def test_devices_flag_does_not_import_jax_at_parse_time():
    code = (
        "import sys; from jaxlinear import cli; "
        "cli.build_parser().parse_args(['train', '--library', 'linen', '--devices', '4']); "
        "print('jax' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "False", result.stderr
