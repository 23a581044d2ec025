"""The HTML pages of `jaxlinear compare --report` and `jaxlinear show`.

The report is made once per module, the way a user makes it (`jaxlinear compare --report PATH`
with the default settings), and checked twice: as text (size, no network fetch, every part the
issue asks for) and, in the tests marked ``browser``, in headless Chromium with every network
request blocked: at 1,400 px the four libraries stand in four columns, at 800 px they stack,
nothing is clipped, the page never scrolls sideways, every tree renders and unfolds on a click.

Screenshots of the top of the page and of the parameter and optimizer rows go to the test's
temporary folder, or to ``JAXLINEAR_SCREENSHOT_DIR`` when set. Set
``JAXLINEAR_UPDATE_SCREENSHOT=1`` to also write the README's picture,
``docs/report-screenshot.png``.
"""

from __future__ import annotations

import dataclasses
import html
import inspect
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxlinear
from jaxlinear import LIBRARY_NAMES, TrainConfig, get_library
from jaxlinear.cli import main

# tests/ has no __init__.py: put it on sys.path so the helper module imports
# under both of pytest's import modes (prepend and importlib).
sys.path.insert(0, str(Path(__file__).parent))
import browser

REPO = Path(__file__).resolve().parents[1]
README_SCREENSHOT = REPO / "docs" / "report-screenshot.png"

TITLES = {"linen": "flax.linen", "nnx": "flax.nnx", "equinox": "equinox", "penzai": "penzai"}
ROWS = ("row-model", "row-parameters", "row-optimizer-state", "row-call", "row-source")
DIABETES_FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]

# Each library's idiom, as it must appear in the source code the report shows.
IDIOM_SNIPPETS = {
    "linen": ["class LinearRegression(nn.Module)", "nn.Dense", "state.apply_gradients"],
    "nnx": [
        "class LinearRegression(nnx.Module)",
        "nnx.Optimizer",
        "optimizer.update(model, grads)",
    ],
    "equinox": ["class LinearRegression(eqx.Module)", "eqx.filter_jit", "eqx.apply_updates"],
    "penzai": ["class LinearRegression(pz.nn.Sequential)", "pz.nn.Affine", "StatefulTrainer"],
}

# How each library's model is called on a batch, as `predict` writes it.
CALL_SNIPPETS = {
    "linen": "model.module.apply(model.variables, x)",
    "nnx": "return model(x)",
    "equinox": "jax.vmap(model)(x)",
    "penzai": ".tag(BATCH, FEATURES)",
}

# Where each library keeps adam's state: the object the optimizer row renders.
OPTIMIZER_OBJECTS = {
    "linen": "TrainState",
    "nnx": "Optimizer",
    "equinox": "Training",
    "penzai": "ScaleByAdamState",
}

# The rows of the idiom table the issue asks for.
IDIOM_ASPECTS = ("where parameters live", "created", "called", "batch", "update", "saved")

# What would make a browser fetch something: external scripts, stylesheets, imports,
# url() references, any absolute http(s) URL at all.
_NETWORK_LOAD = re.compile(
    r"<script[^>]*\bsrc=|<link\b|@import|url\(\s*['\"]?https?:|https?://", re.IGNORECASE
)
# Namespace names are identifiers, never fetched; inline SVG figures carry them.
_XML_NAMESPACE = re.compile(r'xmlns(:\w+)?="http://www\.w3\.org/[^"]*"')

_SECTION = re.compile(r'<section><h2 id="([^"]*)">(.*?)</h2>(.*?)</section>', re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_CELL = re.compile(
    r'<div class="jl-cell" data-column="(\w+)"><h4>[^<]*</h4>(.*?)(?=<div class="jl-cell"|$)',
    re.DOTALL,
)


def _text(fragment: str) -> str:
    """What a reader sees of an HTML fragment (tags dropped, entities decoded)."""
    return html.unescape(_TAG.sub("", fragment))


def _sections(page: str) -> dict[str, tuple[str, str]]:
    """`{heading text: (anchor, body html)}` of a `visualize.render_page` document."""
    return {html.unescape(title): (anchor, body) for anchor, title, body in _SECTION.findall(page)}


def _row(page: str, anchor: str) -> dict[str, str]:
    """`{library: cell html}` of the side-by-side row with this id, in column order."""
    start = page.index(f'<div class="jl-row" id="{anchor}">')
    end = page.find('<div class="jl-row"', start + 1)
    row = page[start : end if end != -1 else len(page)]
    return dict(_CELL.findall(row))


def _heatmaps(cell: str) -> list[tuple[list[str], list[str]]]:
    """`(column labels, row labels)` of each heatmap table in a cell."""
    tables = re.findall(r'<table class="jl-heatmap">(.*?)</table>', cell, re.DOTALL)
    found = []
    for table in tables:
        head, body = table.split("<tbody>")
        columns = [html.unescape(t) for t in re.findall(r"<th[^>]*>([^<]+)</th>", head)]
        rows = [html.unescape(t) for t in re.findall(r"<tr><th>([^<]*)</th>", body)]
        found.append((columns, rows))
    return found


def _cli(capsys, *argv: str) -> tuple[int, str]:
    """Runs the CLI in-process; returns the exit code and stderr."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def report_path(tmp_path_factory) -> Path:
    """The report of a default `jaxlinear compare --report PATH --quiet` (about 10 s)."""
    path = tmp_path_factory.mktemp("report") / "report.html"
    argv = ["compare", "--report", str(path), "--quiet"]
    assert main(argv) == 0  # the report quotes these arguments as its command line
    return path


@pytest.fixture(scope="module")
def report(report_path) -> str:
    return report_path.read_text(encoding="utf-8")


def test_report_size_is_reasonable(report_path):
    # The limit for the default data set; it is about 0.85 MB, most of it treescope's
    # scripts, which every fragment carries again (8 fragments).
    assert report_path.stat().st_size < 5_000_000


def test_report_fetches_nothing(report):
    assert report.startswith("<!DOCTYPE html>")
    assert _NETWORK_LOAD.search(_XML_NAMESPACE.sub("", report)) is None
    assert "default-src 'none'" in report  # and the browser would refuse a stray fetch


def test_report_sections_in_order(report):
    assert list(_sections(report)) == [
        "Results",
        "The four libraries side by side",
        "Differences at a glance",
        "What XLA sees",
        "How the libraries differ, in words",
    ]


def test_a_one_device_run_has_no_layout_row(report):
    # The layout over the devices is drawn for runs over several (tests/test_scaling.py).
    assert 'id="row-layout"' not in report
    assert re.findall(r'<div class="jl-row" id="([\w-]+)"', report) == list(ROWS)


@pytest.mark.parametrize("row", ROWS)
def test_every_row_has_one_cell_per_library_in_order(report, row):
    cells = _row(report, row)
    assert list(cells) == list(LIBRARY_NAMES)
    assert all(cell.strip() for cell in cells.values())


def test_the_model_and_optimizer_rows_are_treescope_trees(report):
    models, optimizers = _row(report, "row-model"), _row(report, "row-optimizer-state")
    for library in LIBRARY_NAMES:
        assert models[library].count("<treescope-container") == 1
        assert optimizers[library].count("<treescope-container") == 1
        # The library's own object that holds adam's state, with its two moments.
        tree = optimizers[library]
        assert f"{OPTIMIZER_OBJECTS[library]}(" in _text(tree) or OPTIMIZER_OBJECTS[library] in tree
        assert "mu" in tree and "nu" in tree and "ScaleByAdamState" in tree
    assert report.count("<treescope-container") == 2 * len(LIBRARY_NAMES)
    # penzai's parameters keep their labels and axis names.
    assert "linear/Affine_0/Linear.weights" in models["penzai"]
    assert "features_out" in models["penzai"]


def test_parameters_are_heatmaps_labelled_with_the_data_names(report):
    cells = _row(report, "row-parameters")
    for library in LIBRARY_NAMES:
        weight, bias = _heatmaps(cells[library])
        # Each array in its library's own layout, its rows and columns named.
        if library == "equinox":  # weight: [out, in]
            assert weight == (DIABETES_FEATURES, ["progression"])
        else:  # kernel: [in, out]; penzai's named axes features x features_out
            assert weight == (["progression"], DIABETES_FEATURES)
        assert bias == (["progression"], ["bias"])
        assert "axis 0: 10" not in _text(cells[library])
    assert "features_out: targets" in _text(cells["penzai"])
    assert "model.linear.weight [1 \u00d7 10]" in _text(cells["equinox"])
    assert "variables['params']['dense']['kernel'] [10 \u00d7 1]" in _text(cells["linen"])


@pytest.mark.parametrize("library", LIBRARY_NAMES)
def test_report_shows_how_each_model_is_called_and_its_train_step(report, library):
    call = _text(_row(report, "row-call")[library])
    assert CALL_SNIPPETS[library] in call
    source = _row(report, "row-source")[library]
    code = _text(source)
    for snippet in IDIOM_SNIPPETS[library]:
        assert snippet in code
    # Taken from the package itself, so it cannot drift from the code that ran.
    model_class = get_library(library).module.LinearRegression
    assert inspect.getsource(model_class).strip() in code
    assert 'style="color' in source  # syntax-highlighted


def test_results_are_rounded_for_reading(report):
    results = _sections(report)["Results"][1]
    numbers = [
        _text(cell) for cell in re.findall(r'<td class="jl-number"[^>]*>(.*?)</td>', results)
    ]
    assert len(numbers) == 5 * 7
    for number in numbers:
        digits = re.sub(r"e[-+]\d+$", "", number).replace(",", "").replace(".", "")
        assert len(digits.lstrip("-0")) <= 6, number
    # All digits stay one hover away.
    assert re.search(r'title="0\.55941\d+"', results)
    assert "0.5594" in _text(results)


def test_differences_show_weights_against_the_exact_solution(report):
    body = _sections(report)["Differences at a glance"][1]
    table = re.search(r'<table class="jl-grid jl-weights">(.*?)</table>', body, re.DOTALL)
    tbody = table.group(1).split("<tbody>")[1]
    rows = re.findall(r"<tr><th>([^<]*)</th>(.*?)</tr>", tbody, re.DOTALL)
    assert [name for name, _ in rows] == [*DIABETES_FEATURES, "bias", "max |W \u2212 W*|"]
    # exact, then W and W - W* for each library.
    assert all(cells.count("<td") == 1 + 2 * len(LIBRARY_NAMES) for _, cells in rows[:-1])
    for title in TITLES.values():
        assert title in _text(table.group(1))
    assert body.count('<img alt="figure" src="data:image/png;base64,') == 2
    assert "gap to the optimum" in _text(body).lower()


def test_xla_section_compares_the_compiled_steps(report):
    body = _sections(report)["What XLA sees"][1]
    table = _text(re.search(r'<table class="jl-grid jl-xla">(.*?)</table>', body, re.DOTALL)[1])
    for label in ("flops", "bytes accessed", "instructions", "dot", "fusion", *TITLES.values()):
        assert label in table
    verdict = _text(re.search(r'id="xla-verdict">(.*?)</div>', body, re.DOTALL)[1])
    assert "up to names" in verdict and "cost analysis" in verdict
    assert body.count('<details class="jl-hlo">') == len(LIBRARY_NAMES)
    assert "ENTRY" in body and "metadata=" not in body


def test_the_xla_verdict_is_the_computed_one():
    # A short run in-process: the page must say what `compare_programs` computes.
    from jaxlinear import _report, _xla

    comparison = jaxlinear.compare(
        jaxlinear.load_dataset("linnerud"), TrainConfig(epochs=4), ["nnx", "penzai"]
    )
    page = _report.comparison_report(comparison)
    verdict = _xla.compare_programs(_xla.compiled_steps(comparison)).statement(TITLES)
    shown = re.search(r'id="xla-verdict">(.*?)</div>', page, re.DOTALL)[1]
    shown = [_text(p) for p in re.findall(r"<p>(.*?)</p>", shown, re.DOTALL)]
    assert shown == [sentence.replace("`", "") for sentence in verdict]  # code spans
    # Two libraries: two columns; three targets: one weights table per target.
    assert list(_row(page, "row-model")) == ["nnx", "penzai"]
    assert "--jl-columns: 2" in page
    body = _sections(page)["Differences at a glance"][1]
    assert body.count('<table class="jl-grid jl-weights">') == 3
    for target in ("Weight", "Waist", "Pulse"):
        assert f"target {target}" in _text(body)
    # The W cells hold the trained weights, rounded.
    weights = comparison.runs["penzai"].weights
    assert f"{weights.weight[0, 0]:.4g}"[:5] in _text(body)


def test_idiom_table_renders_code_and_wraps(report):
    idioms = _sections(report)["How the libraries differ, in words"][1]
    text = _text(idioms)
    for aspect in IDIOM_ASPECTS:
        assert aspect in text
    for title in TITLES.values():
        assert title in text
    assert "nnx.Param" in text and "jax.vmap" in text
    assert "`" not in text  # every code span became <code>
    assert "<code>lax.scan</code>" in idioms
    assert 'class="jl-grid jl-fixed jl-idioms"' in idioms  # fixed layout: cells wrap


def test_report_states_data_settings_and_command(report):
    intro = _text(report.split("<nav>", 1)[0])
    # diabetes: 442 rows, 20% held out, 10 features, 1 target.
    for fact in ("diabetes", "353 training", "89 test", "10 features", "1 target"):
        assert fact in intro
    for key, value in dataclasses.asdict(TrainConfig()).items():
        assert f"{key}={value}" in intro
    assert "jaxlinear compare --report" in intro


def test_show_renders_a_new_model(capsys, tmp_path):
    output = tmp_path / "penzai.html"
    code, err = _cli(capsys, "show", "--library", "penzai", "--output", str(output))
    assert code == 0, err
    page = output.read_text(encoding="utf-8")
    assert list(_row(page, "row-model")) == ["penzai"]
    assert "--jl-columns: 1" in page
    assert page.count("<treescope-container") == 2  # the model and its fresh optimizer state
    assert "linear/Affine_0/Linear.weights" in page and "features_out" in page
    assert _NETWORK_LOAD.search(_XML_NAMESPACE.sub("", page)) is None


def test_show_all_puts_the_four_libraries_side_by_side(capsys, tmp_path):
    output = tmp_path / "all.html"
    code, err = _cli(
        capsys, "show", "--library", "all", "--in-features", "4", "--output", str(output)
    )
    assert code == 0, err
    page = output.read_text(encoding="utf-8")
    for row in ROWS:
        assert list(_row(page, row)) == list(LIBRARY_NAMES)
    assert page.count("<treescope-container") == 2 * len(LIBRARY_NAMES)
    # A fresh model has no data: its columns are named as the data loader names them.
    weight, _ = _heatmaps(_row(page, "row-parameters")["linen"])
    assert weight == (["y0"], ["x0", "x1", "x2", "x3"])
    assert "as a training run starts" in _text(page)


def test_show_opens_a_model_saved_by_train_in_every_library(capsys, tmp_path):
    saved = tmp_path / "saved"
    code, err = _cli(
        capsys, "train", "--library", "nnx", "--save", str(saved), "--epochs", "50", "--quiet"
    )
    assert code == 0, err
    output = tmp_path / "page.html"
    code, err = _cli(
        capsys, "show", "--load", str(saved), "--library", "all", "--output", str(output)
    )
    assert code == 0, err
    page = output.read_text(encoding="utf-8")
    assert "Trained in nnx on diabetes" in _text(page)
    cells = _row(page, "row-parameters")
    assert list(cells) == list(LIBRARY_NAMES)
    for library in LIBRARY_NAMES:  # the saved model's names label every library's arrays
        weight, _ = _heatmaps(cells[library])
        assert DIABETES_FEATURES in weight
    # W [10, 1] of the diabetes model, in penzai's named axes.
    assert "features:10" in _text(page) and "features_out:1" in _text(page)


@pytest.mark.parametrize(
    "case",
    ["no model named", "missing folder", "not a saved model", "unknown library"],
)
def test_show_errors_are_one_line_and_write_nothing(capsys, tmp_path, case):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "model.safetensors").write_bytes(b"not safetensors")
    output = tmp_path / "page.html"
    argv = {
        "no model named": [],
        "missing folder": ["--load", str(tmp_path / "nowhere")],
        "not a saved model": ["--load", str(tmp_path / "junk")],
        "unknown library": ["--library", "haiku"],
    }[case]
    before = sorted(tmp_path.rglob("*"))

    code, err = _cli(capsys, "show", *argv, "--output", str(output))

    assert code == 2
    assert err.startswith("jaxlinear: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert sorted(tmp_path.rglob("*")) == before


# Where each row's cells and their headings are on the page (CSS pixels, page coordinates).
_ROW_BOXES_SCRIPT = """(anchor) => {
  const row = document.getElementById(anchor);
  return Array.from(row.querySelectorAll('.jl-cell'), (cell) => {
    const r = cell.getBoundingClientRect();
    const h = cell.querySelector('h4').getBoundingClientRect();
    return {column: cell.dataset.column, left: r.left, right: r.right,
            top: r.top + window.scrollY, headingTop: h.top + window.scrollY,
            headingHeight: h.height, scrollWidth: cell.scrollWidth,
            clientWidth: cell.clientWidth};
  });
}"""


def _skip_without_browser():
    reason = browser.missing_requirement()
    if reason is not None:
        pytest.skip(reason)


@pytest.mark.browser
def test_report_at_1400_px_four_columns_nothing_clipped(report_path, report, tmp_path):
    _skip_without_browser()
    containers = report.count("<treescope-container")
    screenshot_dir = Path(os.environ.get("JAXLINEAR_SCREENSHOT_DIR", tmp_path))

    with browser.open_in_chromium(report_path, viewport=(1400, 900)) as page:
        # Every tree rendered, none left on "(Loading...)".
        assert page.wait_until_rendered(expected=containers) == containers
        assert page.treescope_counts() == {
            "containers": containers,
            "rendered": containers,
            "loading": 0,
        }
        page.draw_visible_heatmaps()

        for anchor in ROWS:
            boxes = page.page.evaluate(_ROW_BOXES_SCRIPT, anchor)
            assert [box["column"] for box in boxes] == list(LIBRARY_NAMES)
            # Four columns at once: left to right inside the window, headings on one line.
            assert all(box["left"] >= 0 and box["right"] <= 1400 for box in boxes), boxes
            assert [box["left"] for box in boxes] == sorted(box["left"] for box in boxes)
            assert len({round(box["headingTop"]) for box in boxes}) == 1, boxes
            assert all(box["headingHeight"] < 30 for box in boxes)  # one line each
            # No cell needs scrolling at this width, let alone clips.
            assert all(box["scrollWidth"] <= box["clientWidth"] + 1 for box in boxes), boxes
        assert page.clipped_elements(".jl-cell, .jl-cell pre, .jl-wide, table") == []
        assert not page.scrolls_sideways()

        # A collapsed array opens on a click and arrayviz draws its heatmap.
        node_id = page.expand_collapsed_array(containing="float32(10, 1)")
        assert page.is_expanded(node_id) is True
        pixels = page.heatmap_pixels(node_id)
        assert pixels is not None and pixels["colored"] > 0, pixels
        # And any other folded node opens too (here penzai's `out_axis_names` tuple).
        [node_id, *_] = page.collapsed_nodes(containing="('features_out',")
        assert page.is_expanded(node_id) is False
        page.expand_collapsed_node(node_id)
        assert page.is_expanded(node_id) is True
        assert page.clipped_elements(".jl-cell, .jl-cell pre") == []

        page.page.evaluate("() => window.scrollTo(0, 0)")
        top = page.screenshot(screenshot_dir / "report-top.png", full_page=False)
        rows = {}
        for anchor in ("row-parameters", "row-optimizer-state"):
            path = screenshot_dir / f"report-{anchor}.png"
            page.page.locator(f"#{anchor}").screenshot(path=str(path))
            rows[anchor] = path
        if os.environ.get("JAXLINEAR_UPDATE_SCREENSHOT") == "1":
            _save_readme_screenshot(page)

    assert page.report.page_errors == []
    assert page.report.console_errors == []
    assert page.report.blocked_requests == []
    assert top.stat().st_size > 10_000
    assert all(path.stat().st_size > 10_000 for path in rows.values())


@pytest.mark.browser
def test_report_at_800_px_stacks_the_columns(report_path):
    _skip_without_browser()
    with browser.open_in_chromium(report_path, viewport=(800, 900)) as page:
        page.wait_until_rendered()
        for anchor in ROWS:
            boxes = page.page.evaluate(_ROW_BOXES_SCRIPT, anchor)
            # One column: the same left edge, one cell under the other.
            assert len({round(box["left"]) for box in boxes}) == 1, boxes
            tops = [box["top"] for box in boxes]
            assert tops == sorted(tops) and len(set(tops)) == len(tops)
        assert not page.scrolls_sideways()
        assert page.clipped_elements(".jl-cell, .jl-cell pre") == []
    assert page.report.ok, page.report


@pytest.mark.browser
def test_show_all_renders_in_chromium(capsys, tmp_path):
    _skip_without_browser()
    output = tmp_path / "all.html"
    code, err = _cli(capsys, "show", "--library", "all", "--output", str(output))
    assert code == 0, err
    with browser.open_in_chromium(output, viewport=(1400, 900)) as page:
        assert page.wait_until_rendered(expected=8) == 8
        boxes = page.page.evaluate(_ROW_BOXES_SCRIPT, "row-model")
        assert len({round(box["headingTop"]) for box in boxes}) == 1
        assert not page.scrolls_sideways()
    assert page.report.ok, page.report


def _save_readme_screenshot(page: browser.BrowserPage) -> None:
    """The README's picture: the side-by-side view, from its heading through the
    parameters row, at 1,400 px."""
    box = page.page.evaluate(
        """() => {
          const start = document.getElementById('side-by-side').getBoundingClientRect();
          const end = document.getElementById('row-parameters').getBoundingClientRect();
          return {y: start.top + window.scrollY, bottom: end.bottom + window.scrollY};
        }"""
    )
    margin = 16
    README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.page.screenshot(
        path=str(README_SCREENSHOT),
        full_page=True,
        clip={
            "x": 0,
            "y": box["y"] - margin,
            "width": 1400,
            "height": min(box["bottom"] - box["y"] + 2 * margin, 1600),
        },
    )
    assert README_SCREENSHOT.stat().st_size < 500_000
    assert np.frombuffer(README_SCREENSHOT.read_bytes()[:8], np.uint8).tolist() == [
        137, 80, 78, 71, 13, 10, 26, 10,
    ]  # fmt: skip
