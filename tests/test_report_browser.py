"""The HTML pages of `jaxlinear compare --report` and `jaxlinear show`.

The report is made once per module, the way a user makes it (`jaxlinear compare --report PATH`
with the default settings), and checked twice: as text (size, no network fetch, every part the
issue asks for) and, in the test marked ``browser``, in headless Chromium with every network
request blocked (no errors, every tree rendered, a collapsed array expands into a heatmap).

Set ``JAXLINEAR_UPDATE_SCREENSHOT=1`` to also write the README's picture,
``docs/report-screenshot.png``; set ``JAXLINEAR_SCREENSHOT_DIR`` to keep the full-page one.
"""

from __future__ import annotations

import dataclasses
import html
import inspect
import os
import re
import sys
from pathlib import Path

import pytest

from jaxlinear import LIBRARY_NAMES, TrainConfig, get_library
from jaxlinear.cli import main

# tests/ has no __init__.py: put it on sys.path so the helper module imports
# under both of pytest's import modes (prepend and importlib).
sys.path.insert(0, str(Path(__file__).parent))
import browser

REPO = Path(__file__).resolve().parents[1]
README_SCREENSHOT = REPO / "docs" / "report-screenshot.png"

TITLES = {"linen": "flax.linen", "nnx": "flax.nnx", "equinox": "equinox", "penzai": "penzai"}
STAGES = ("before training", "after training")

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

# The rows of the idiom table the issue asks for.
IDIOM_ASPECTS = (
    "where parameters live",
    "created",
    "called",
    "batch",
    "update",
    "saved",
)

# What would make a browser fetch something: external scripts, stylesheets, imports,
# url() references, any absolute http(s) URL at all.
_NETWORK_LOAD = re.compile(
    r"<script[^>]*\bsrc=|<link\b|@import|url\(\s*['\"]?https?:|https?://", re.IGNORECASE
)
# Namespace names are identifiers, never fetched; inline SVG figures carry them.
_XML_NAMESPACE = re.compile(r'xmlns(:\w+)?="http://www\.w3\.org/[^"]*"')

_SECTION = re.compile(r'<section><h2 id="([^"]*)">(.*?)</h2>(.*?)</section>', re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def _text(fragment: str) -> str:
    """What a reader sees of an HTML fragment (tags dropped, entities decoded)."""
    return html.unescape(_TAG.sub("", fragment))


def _sections(page: str) -> dict[str, tuple[str, str]]:
    """`{heading text: (anchor, body html)}` of a `visualize.render_page` document."""
    return {html.unescape(title): (anchor, body) for anchor, title, body in _SECTION.findall(page)}


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
    # The limit for the default data set; it is about 1.1 MB, most of it treescope's
    # scripts, which every fragment carries again (16 fragments).
    assert report_path.stat().st_size < 5_000_000


def test_report_fetches_nothing(report):
    assert report.startswith("<!DOCTYPE html>")
    assert _NETWORK_LOAD.search(_XML_NAMESPACE.sub("", report)) is None
    assert "default-src 'none'" in report  # and the browser would refuse a stray fetch


def test_report_has_every_library_before_and_after_training(report):
    sections = _sections(report)
    for library in LIBRARY_NAMES:
        for stage in STAGES:
            anchor, body = sections[f"{TITLES[library]}: {stage}"]
            assert anchor.startswith(library)
            # The model itself, and its parameters as arrays.
            assert body.count("<treescope-container") == 2
    assert report.count("<treescope-container") == 2 * len(STAGES) * len(LIBRARY_NAMES)
    # penzai's parameters keep their axis names.
    _, penzai = sections["penzai: after training"]
    assert "features_out" in penzai and "linear/Affine_0/Linear.weights" in penzai


@pytest.mark.parametrize("library", LIBRARY_NAMES)
def test_report_shows_the_library_source(report, library):
    _, body = _sections(report)[f"{TITLES[library]}: source"]
    code = _text(body)
    for snippet in IDIOM_SNIPPETS[library]:
        assert snippet in code
    # Taken from the package itself, so it cannot drift from the code that ran.
    model_class = get_library(library).module.LinearRegression
    assert inspect.getsource(model_class).strip() in code
    assert 'style="color' in body  # syntax-highlighted


def test_report_has_the_idiom_table_figures_and_metrics(report):
    sections = _sections(report)
    idioms = _text(sections["How the libraries differ"][1])
    for aspect in IDIOM_ASPECTS:
        assert aspect in idioms
    for title in TITLES.values():
        assert title in idioms
    assert "nnx.Param" in idioms and "jax.vmap" in idioms

    for heading in ("Loss curves", "Predicted vs true"):
        assert '<img alt="figure" src="data:image/png;base64,' in sections[heading][1]

    results = _text(sections["Results"][1])
    for name in ("exact", *TITLES.values()):
        assert name in results
    assert "test R²" in results


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
    sections = _sections(page)
    assert set(sections) == {"penzai: model", "penzai: source"}
    assert page.count("<treescope-container") == 2
    assert "linear/Affine_0/Linear.weights" in page and "features_out" in page
    assert _NETWORK_LOAD.search(_XML_NAMESPACE.sub("", page)) is None


def test_show_opens_a_model_saved_by_train_in_another_library(capsys, tmp_path):
    saved = tmp_path / "saved"
    code, err = _cli(
        capsys, "train", "--library", "nnx", "--save", str(saved), "--epochs", "50", "--quiet"
    )
    assert code == 0, err
    output = tmp_path / "page.html"
    code, err = _cli(
        capsys, "show", "--load", str(saved), "--library", "penzai", "--output", str(output)
    )
    assert code == 0, err
    page = output.read_text(encoding="utf-8")
    assert "Trained in nnx on diabetes" in _text(page)
    assert "penzai: model" in _sections(page)
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


@pytest.mark.browser
def test_report_renders_in_chromium_offline(report_path, report, tmp_path):
    reason = browser.missing_requirement()
    if reason is not None:
        pytest.skip(reason)
    containers = report.count("<treescope-container")
    screenshot_dir = Path(os.environ.get("JAXLINEAR_SCREENSHOT_DIR", tmp_path))

    with browser.open_in_chromium(report_path) as page:
        # Every tree rendered, none left on "(Loading...)".
        assert page.wait_until_rendered(expected=containers) == containers
        assert page.treescope_counts() == {
            "containers": containers,
            "rendered": containers,
            "loading": 0,
        }

        # A section per library and stage, each reachable from the table of contents.
        headings = dict(
            page.page.evaluate(
                "() => Array.from(document.querySelectorAll('h2'), (h) => [h.textContent, h.id])"
            )
        )
        for library in LIBRARY_NAMES:
            for stage in (*STAGES, "source"):
                assert headings[f"{TITLES[library]}: {stage}"].startswith(library)
        unreachable = page.page.evaluate(
            """() => Array.from(document.querySelectorAll('nav a'))
                 .filter((a) => !document.getElementById(decodeURIComponent(a.hash.slice(1))))
                 .map((a) => a.getAttribute('href'))"""
        )
        assert unreachable == []
        page.page.locator("nav a", has_text="penzai: after training").click()
        target = page.page.locator("h2", has_text="penzai: after training")
        assert target.evaluate("(h) => h.getBoundingClientRect().top") < 100

        # The linen and nnx models show their float32 [10, 1] kernels collapsed; a click on
        # one opens it and arrayviz draws its heatmap.
        node_id = page.expand_collapsed_array(containing="float32(10, 1)")
        assert page.is_expanded(node_id) is True
        pixels = page.heatmap_pixels(node_id)
        assert pixels is not None and pixels["colored"] > 0, pixels

        # Every library's parameters are drawn as heatmaps (penzai's with named axes).
        page.draw_visible_heatmaps()
        for library in LIBRARY_NAMES:
            for stage in STAGES:
                section = page.page.locator("section").filter(
                    has=page.page.locator("h2", has_text=f"{TITLES[library]}: {stage}")
                )
                assert section.locator(".arrayviz_container canvas").count() >= 1

        screenshot = page.screenshot(screenshot_dir / "report.png")
        if os.environ.get("JAXLINEAR_UPDATE_SCREENSHOT") == "1":
            _save_readme_screenshot(page)

    assert page.report.page_errors == []
    assert page.report.console_errors == []
    assert page.report.blocked_requests == []
    assert screenshot.stat().st_size > 10_000


def _save_readme_screenshot(page: browser.BrowserPage) -> None:
    """The README's picture: penzai's trained model and its named-axis parameters."""
    section = page.page.locator("section").filter(
        has=page.page.locator("h2", has_text="penzai: after training")
    )
    # Page coordinates: the section's box in the viewport plus the scroll offset.
    box = section.evaluate(
        """(s) => {
          const r = s.getBoundingClientRect();
          return {x: r.x + window.scrollX, y: r.y + window.scrollY, width: r.width,
                  height: r.height};
        }"""
    )
    margin = 16
    README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.page.screenshot(
        path=str(README_SCREENSHOT),
        full_page=True,
        clip={
            "x": max(box["x"] - margin, 0),
            "y": box["y"],  # the heading's own top margin is space enough
            "width": box["width"] + 2 * margin,
            "height": min(box["height"] + margin, 1000),
        },
    )
    assert README_SCREENSHOT.stat().st_size < 500_000
