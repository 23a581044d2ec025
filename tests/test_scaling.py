"""Data-parallel training (`--devices`, `training.data_mesh`, each library's `shard`).

The 8-device checks run in ONE subprocess (tests/data_parallel_check.py), since simulated
CPU devices must be asked for in XLA_FLAGS before jax is imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxlinear import cli
from jaxlinear._errors import ConfigError

# tests/ has no __init__.py: put it on sys.path so the helper imports under both import modes.
sys.path.insert(0, str(Path(__file__).parent))
import browser
from eight_devices import run_check

CHECK = Path(__file__).with_name("data_parallel_check.py")
# docs/scaling.md's picture, rewritten by the browser test with JAXLINEAR_UPDATE_SCREENSHOT=1.
LAYOUT_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "layout-screenshot.png"

# 8 devices sum each batch's gradient in 8 partial sums plus an all-reduce instead of one
# sum: float32 rounding (~6e-8 relative per operation) in another order. Over the 4-16 sgd
# steps run, the weights then differ by ~1e-7 relative (measured: at most 9e-8); 1e-5 leaves
# room for other orders and machines, while a real mistake does not fit in it (tried: the
# full batch's padding rows weighing 1 instead of its real rows weighing 104/100 gives 2e-2).
RTOL = 1e-5


@pytest.fixture(scope="module")
def pages_folder(tmp_path_factory) -> Path:
    """Where the 8-device run writes its report and `show` page (for the browser test)."""
    return tmp_path_factory.mktemp("eight-devices")


@pytest.fixture(scope="module")
def eight_devices(pages_folder) -> dict:
    return run_check(CHECK, pages_folder)


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


# The layout row (`_device_layout`): what a sharded run's report and `show` page draw.

REPLICATED = "replicated: all of it on each of the 8 CPU devices"


@pytest.mark.slow
def test_layout_describes_the_run_arrays_where_they_are(eight_devices):
    views = eight_devices["views"]
    # A reference for the words: an array split by hand, 16 rows over 8 devices.
    assert views["split_by_hand"] == "split over 8 CPU devices: axis 0 16 → 2 per device"
    for name, library in views["libraries"].items():
        assert library["mesh_devices"] == 8, name
        assert library["single_device_mesh"] is False, name  # one device: no row at all
        assert library["parameters"] == [REPLICATED, REPLICATED], name  # W and b
        axis = "batch" if name == "penzai" else "axis 0"  # penzai names its batch axis
        assert library["batch"] == f"split over 8 CPU devices: {axis} 24 → 3 per device", name
        assert library["row_title"] == "Layout over the 8 devices"
        assert (
            "Every batch of 24 rows (of 100 training rows): each is split" in (library["row_note"])
        )
    # A full batch is every row, padded as `training.place_batches` pads it: 104 = 8 x 13.
    assert views["full_batch"] == {
        "shape": [104, 5],
        "placement": "split over 8 CPU devices: axis 0 104 → 13 per device",
    }
    assert views["full_batch_label"] == (
        "the full batch of 100 training rows, padded with 4 rows of weight 0 to 104"
    )


@pytest.mark.slow
def test_report_and_show_draw_the_layout_on_eight_devices(eight_devices):
    runs = eight_devices["views"]["cli"]
    for kind in ("report", "show"):
        assert runs[kind]["exit"] == 0, runs[kind]["stderr"]
    report = Path(eight_devices["views"]["pages"]["report"]).read_text()
    show = Path(eight_devices["views"]["pages"]["show"]).read_text()
    for page in (report, show):
        assert page.count('id="row-layout"') == 1
        assert "Layout over the 8 devices" in page
        for name in ("linen", "nnx", "equinox", "penzai"):  # each library's own `shard`
            assert f"jaxlinear.libraries.{name}.shard</code>" in page
        # W and b, adam's mu and nu of each, adam's count and the cosine schedule's: 8; linen
        # and nnx also carry a step count of their own (`TrainState.step`, `Optimizer.step`).
        assert page.count("step counts): 9 arrays, " + REPLICATED) == 2
        assert page.count("step counts): 8 arrays, " + REPLICATED) == 2
    assert "Every batch of 24 rows (of 353 training rows)" in report  # diabetes
    assert "An example batch of 32 rows (4 per device)" in show
    refused = runs["show_saved_on_5"]
    assert refused["exit"] == 2
    assert not Path(eight_devices["views"]["pages"]["show"]).with_name("never.html").exists()
    assert refused["stderr"] == (
        "jaxlinear: error: --devices must divide the saved run's batch size (24) so each of "
        "its batches splits evenly, got 5\n"
    )


# Per cell of the layout row: its left edge, and how many sharding drawings its treescope
# figures hold once rendered (arrayviz writes "Colored by device index." under each).
_LAYOUT_CELLS_SCRIPT = """() => Array.from(
  document.querySelectorAll('#row-layout .jl-cell')).map((cell) => ({
    column: cell.dataset.column,
    left: cell.getBoundingClientRect().left,
    drawings: Array.from(cell.querySelectorAll('treescope-container')).reduce(
      (n, c) => n + (c.shadowRoot.textContent.match(/Colored by device index/g) || []).length,
      0),
  }))"""


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize("kind", ["report", "show"])
def test_the_layout_row_renders_in_chromium(eight_devices, kind, tmp_path):
    reason = browser.missing_requirement()
    if reason is not None:
        pytest.skip(reason)
    path = Path(eight_devices["views"]["pages"][kind])
    screenshots = Path(os.environ.get("JAXLINEAR_SCREENSHOT_DIR", tmp_path))
    with browser.open_in_chromium(path, viewport=(1400, 900)) as page:
        page.wait_until_rendered()
        page.page.locator("#row-layout").scroll_into_view_if_needed()
        page.wait_until_rendered()
        cells = page.page.evaluate(_LAYOUT_CELLS_SCRIPT)
        # Four columns side by side, each drawing W, b and a batch.
        assert [cell["column"] for cell in cells] == ["linen", "nnx", "equinox", "penzai"]
        assert [cell["left"] for cell in cells] == sorted({cell["left"] for cell in cells})
        assert [cell["drawings"] for cell in cells] == [3, 3, 3, 3]
        assert page.clipped_elements("#row-layout .jl-cell, #row-layout pre") == []
        assert not page.scrolls_sideways()
        page.page.locator("#row-layout").screenshot(path=str(screenshots / f"layout-{kind}.png"))
        if kind == "report" and os.environ.get("JAXLINEAR_UPDATE_SCREENSHOT") == "1":
            page.page.locator("#row-layout").screenshot(path=str(LAYOUT_SCREENSHOT))
    assert page.report.ok, page.report
