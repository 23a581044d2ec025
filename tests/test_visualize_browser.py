"""jaxlinear.visualize: offline HTML fragments and a page that renders in Chromium.

The browser test (marked ``browser``) opens a page of treescope renderings in
headless Chromium with every network request blocked, and checks that it
renders, that a collapsed array expands into a drawn heatmap, and that a
screenshot can be taken. It is skipped when Chromium or Playwright is missing.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from penzai import pz

from jaxlinear import visualize

# tests/ has no __init__.py: put it on sys.path so the helper module imports
# under both of pytest's import modes (prepend and importlib).
sys.path.insert(0, str(Path(__file__).parent))
import browser


def _models() -> dict[str, object]:
    return {
        "flax.nnx Linear": nnx.Linear(3, 2, rngs=nnx.Rngs(0)),
        "penzai Linear": pz.nn.Linear.from_config(
            name="l",
            init_base_rng=jax.random.key(0),
            input_axes={"features": 3},
            output_axes={"out": 2},
        ),
        "numpy array": np.arange(12.0).reshape(3, 4),
    }


# What would make a browser fetch something: external scripts, stylesheets,
# imports, url() references, any absolute http(s) URL at all.
_NETWORK_LOAD = re.compile(
    r"<script[^>]*\bsrc=|<link\b|@import|url\(\s*['\"]?https?:|https?://", re.IGNORECASE
)


@pytest.mark.parametrize("name", list(_models()))
def test_render_fragment_loads_nothing_from_the_network(name):
    fragment = visualize.render_fragment(_models()[name])
    assert "<treescope-container" in fragment
    # The uncompressed fragment is plain HTML, so the check reads everything
    # (a compressed one hides its content in base64).
    assert _NETWORK_LOAD.search(fragment) is None


def test_render_fragment_expand_depth_collapses_deeper_nodes():
    model = _models()["flax.nnx Linear"]
    collapsed = visualize.render_fragment(model, expand_depth=0, autovisualize=False)
    expanded = visualize.render_fragment(model, expand_depth=3, autovisualize=False)
    # One checkbox per foldable node, checked when expanded; the first is the
    # root's. (Nodes inside a collapsed one keep whatever state they had.)
    toggle = re.compile(r'class="foldable_node_toggle"( checked)?')
    assert toggle.search(collapsed).group(1) is None
    assert [m.group(1) for m in toggle.finditer(expanded)][:3] == [" checked"] * 3
    with pytest.raises(ValueError, match="expand_depth"):
        visualize.render_fragment(model, expand_depth=-1)


def test_setup_outside_ipython_is_a_no_op():
    assert visualize.setup() is False


def test_render_page_is_one_offline_document():
    sections = [
        visualize.Section("A <b>", "<p>one</p>"),
        visualize.Section("A <b>", "<p>two</p>"),
        visualize.Section("Code", visualize.render_code("def f(x):\n    return 2 * x\n")),
    ]
    page = visualize.render_page("Report & co", sections)
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<h2 ") == 3
    assert "<title>Report &amp; co</title>" in page
    assert "A &lt;b&gt;" in page and "<b>" not in page
    # Repeated titles still get distinct anchors.
    assert 'id="a-b"' in page and 'id="a-b-2"' in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert _NETWORK_LOAD.search(page) is None


@pytest.mark.browser
# compressed=True exercises treescope's other loading path: zlib + base64,
# inflated in the page by DecompressionStream once the container is near the
# viewport.
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "compressed"])
def test_page_renders_in_chromium_offline(tmp_path, compressed):
    reason = browser.missing_requirement()
    if reason is not None:
        pytest.skip(reason)

    models = _models()
    sections = [
        visualize.Section(name, visualize.render_fragment(model, compressed=compressed))
        for name, model in models.items()
    ]
    page_path = tmp_path / "page.html"
    page_path.write_text(visualize.render_page("treescope in Chromium", sections), encoding="utf-8")
    # Set JAXLINEAR_SCREENSHOT_DIR to keep the screenshot, e.g. as a CI artifact.
    screenshot_dir = Path(os.environ.get("JAXLINEAR_SCREENSHOT_DIR", tmp_path))

    with browser.open_in_chromium(page_path) as page:
        assert page.wait_until_rendered(expected=len(models)) == len(models)
        counts = page.treescope_counts()
        assert counts == {"containers": len(models), "rendered": len(models), "loading": 0}

        # The nnx kernel is a float32 [3, 2] array, collapsed by treescope's
        # balanced layout: clicking it must expand it and draw a heatmap.
        [node_id] = page.collapsed_array_nodes(containing="float32(3, 2)")
        assert page.is_expanded(node_id) is False
        assert page.heatmap_pixels(node_id) is None
        assert page.expand_collapsed_array(containing="float32(3, 2)") == node_id
        assert page.is_expanded(node_id) is True
        pixels = page.heatmap_pixels(node_id)
        assert pixels is not None and pixels["colored"] > 0, pixels

        page.draw_visible_heatmaps()
        screenshot = page.screenshot(
            screenshot_dir / f"visualize_page_{'compressed' if compressed else 'plain'}.png"
        )

    assert page.report.page_errors == []
    assert page.report.console_errors == []
    assert page.report.blocked_requests == []
    assert screenshot.stat().st_size > 10_000


@pytest.mark.browser
def test_browser_helper_records_blocked_requests(tmp_path):
    # The helper must notice a page that tries to fetch something; otherwise
    # the "no requests" assertion above would prove nothing.
    reason = browser.missing_requirement()
    if reason is not None:
        pytest.skip(reason)
    page_path = tmp_path / "leaky.html"
    page_path.write_text(
        '<!DOCTYPE html><img src="https://example.invalid/x.png">', encoding="utf-8"
    )
    with browser.open_in_chromium(page_path) as page:
        page.page.wait_for_load_state("load")
    assert page.report.blocked_requests == ["https://example.invalid/x.png"]
    assert not page.report.ok


@pytest.mark.slow
def test_setup_makes_treescope_the_notebook_display():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    source_dir = Path(visualize.__file__).resolve().parents[1]
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            textwrap.dedent(f"""\
                import sys
                sys.path.insert(0, {str(source_dir)!r})
                from jaxlinear import visualize
                assert visualize.setup() is True
                """)
        ),
        nbformat.v4.new_code_cell("import numpy as np\nnp.arange(6.0).reshape(2, 3)"),
    ]
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    html = "".join(
        output.get("data", {}).get("text/html", "") for output in notebook.cells[1].outputs
    )
    assert "treescope-container" in html
