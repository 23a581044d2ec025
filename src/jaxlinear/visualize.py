"""Render models, parameters and arrays as self-contained HTML with treescope.

The pieces a report page is built from:

- `setup` turns treescope on as the notebook display (with array heatmaps).
- `render_fragment` renders any Python object (a linen/nnx/equinox/penzai
  model, a parameter pytree, a numpy or jax array) to an HTML fragment.
- `render_code` and `render_figure` render source code and matplotlib figures.
- `render_page` joins `Section`s into ONE HTML document that makes no network
  request: every script, style and image is inline.
- `side_by_side` shows models of the four libraries in columns, one row per
  aspect (the model, its parameters, its optimizer state, how it is called, its
  train step): the view of `jaxlinear compare --report`, for a notebook cell.

treescope and matplotlib are imported on first use, so importing this module
is cheap.

>>> import numpy as np
>>> from jaxlinear import visualize
>>> weights = visualize.render_fragment(np.arange(6.0).reshape(2, 3))
>>> page = visualize.render_page("Weights", [visualize.Section("W: [2, 3]", weights)])
>>> page.count("<treescope-container"), "https://" in page
(1, False)

How treescope's HTML works (treescope 0.1.10), which the choices below rely on:

- Each `treescope.render_to_html` output is a `<treescope-container>` element
  with an open shadow root, plus `<treescope-run-here>` scripts that fill it.
  Its CSS and JavaScript (arrayviz included, about 40 kB) live inside that
  shadow root, so every fragment carries its own copy: treescope does not
  de-duplicate across renders. Several fragments can still share one page: the
  custom elements are defined only if not yet defined, and each container is
  found through a random `treescope_out_<uuid4>` class.
- ``compressed=True`` stores the fragment as zlib+base64 (about 3x smaller) and
  inserts it only once the container comes within 1000 px of the viewport
  (an IntersectionObserver); until then the container shows "(Loading...)".
  ``compressed=False`` inserts the tree as soon as the page is parsed, and the
  page source stays searchable. Both need JavaScript.
- Array heatmaps are `<canvas>` elements that arrayviz draws only when their
  `.arrayviz_container` first becomes visible: a collapsed array, or one below
  the fold, shows "Rendering array..." until it is expanded or scrolled to.
- `.treescope_root` has ``content-visibility: auto``, so trees outside the
  viewport are not painted (blank in a full-page screenshot or a print-out).
  `render_page` overrides it through the root's ``part="treescope_root"``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import html
import io
import re
from collections.abc import Sequence
from typing import Any, Literal

__all__ = [
    "Section",
    "SideBySide",
    "render_code",
    "render_figure",
    "render_fragment",
    "render_page",
    "setup",
    "side_by_side",
]


def setup(*, autovisualize_arrays: bool = True) -> bool:
    """Make treescope the default display of a running IPython/Jupyter shell.

    Calls `treescope.basic_interactive_setup`: registers treescope as the HTML
    formatter for every object without its own rich display, registers the
    ``%%autovisualize`` and ``%%with`` cell magics, and (by default) sets
    `treescope.ArrayAutovisualizer` globally so arrays show as heatmaps.

    Outside IPython (a script, pytest) there is no display to configure:
    nothing is changed and no error is raised.

    Args:
      autovisualize_arrays: Whether arrays are drawn as heatmaps.

    Returns:
      True if treescope was set up, False if no IPython shell is running.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    # treescope.register_as_default calls get_ipython().display_formatter, which
    # raises AttributeError when IPython is installed but no shell runs.
    if get_ipython() is None:
        return False

    import treescope

    treescope.basic_interactive_setup(autovisualize_arrays=autovisualize_arrays)
    return True


def render_fragment(
    obj: Any,
    *,
    roundtrip: bool = False,
    expand_depth: int | None = None,
    autovisualize: bool = True,
    pixels_per_cell: float = 7,
    compressed: bool = False,
    line_width: int | None = None,
    max_lines: int | None = 20,
) -> str:
    """Render any object with treescope to an embeddable HTML fragment.

    The fragment is a ``<treescope-container>`` element with its own styles and
    scripts: it can be placed anywhere in a page, next to other fragments,
    and loads nothing from the network. It needs JavaScript to show.

    Args:
      obj: Anything: a flax.linen / flax.nnx / equinox / penzai model, a
        pytree of parameters, a numpy or jax array, a plain Python value.
      roundtrip: Start in roundtrip mode, where the tree reads as Python code
        that rebuilds the object (the reader can toggle it with the "r" key).
      expand_depth: None keeps the active expansion strategy (by default
        treescope's balanced layout, which expands what fits in about 20
        lines). An integer expands exactly that many levels of foldable nodes
        and collapses the next level (`treescope.layout_algorithms
        .expand_to_depth`): 0 shows one collapsed line, 1 the object's direct
        fields. An autovisualized array counts as one level; collapsed, it
        shows its summary line and no heatmap until the reader opens it.
      autovisualize: Draw arrays (and penzai named arrays) as heatmaps with
        `treescope.ArrayAutovisualizer`. False renders them as summaries only.
      pixels_per_cell: Heatmap zoom, 1 to 21 screen pixels per array element
        (treescope's default is 7; small weight matrices read better larger).
      compressed: Store the content zlib-compressed (about 3x smaller). It is
        then only inserted when scrolled near the viewport; see the module
        docstring.
      line_width: Lay the tree out for lines of about this many characters
        (treescope's balanced layout, which unfolds a node whose one-line form
        is longer), e.g. for a narrow column. None keeps the active strategy.
        Ignored when `expand_depth` is given.
      max_lines: With `line_width`: stop unfolding nodes past about this many
        lines (None: no limit); a node left folded opens on a click.

    Returns:
      The HTML fragment, a string.
    """
    import treescope
    from treescope import layout_algorithms

    if expand_depth is not None and expand_depth < 0:
        raise ValueError(f"expand_depth must be >= 0 or None, got {expand_depth}")

    if autovisualize:
        autovisualizer = treescope.ArrayAutovisualizer(pixels_per_cell=pixels_per_cell)
    else:
        autovisualizer = None
    if expand_depth is None and line_width is None:
        expansion = contextlib.nullcontext()
    elif expand_depth is None:
        expansion = treescope.active_expansion_strategy.set_scoped(
            functools.partial(
                layout_algorithms.expand_for_balanced_layout,
                target_width=line_width,
                max_height=max_lines,
            )
        )
    else:
        expansion = treescope.active_expansion_strategy.set_scoped(
            functools.partial(layout_algorithms.expand_to_depth, depth=expand_depth)
        )

    # Scoped, not set_globally: rendering a report must not change what an
    # interactive session shows afterwards.
    with treescope.active_autovisualizer.set_scoped(autovisualizer), expansion:
        return treescope.render_to_html(obj, roundtrip_mode=roundtrip, compressed=compressed)


def render_code(source: str, *, language: str = "python") -> str:
    """Syntax-highlight source code as an HTML fragment with inline styles.

    Uses pygments with ``noclasses=True``, so the fragment needs no stylesheet.

    Args:
      source: The code text.
      language: A pygments lexer name ("python", "toml", "bash", ...).

    Returns:
      A ``<div class="highlight"><pre>...</pre></div>`` fragment.

    Raises:
      ImportError: If pygments is not installed.
    """
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import get_lexer_by_name
    except ImportError as error:
        raise ImportError("render_code needs pygments: pip install pygments") from error

    formatter = HtmlFormatter(noclasses=True, style="default")
    return highlight(source, get_lexer_by_name(language), formatter)


# Everything in front of the <svg> element: the XML declaration, the DOCTYPE
# (it names the SVG DTD by URL) and comments, none of which belong in HTML.
_SVG_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.DOTALL)


def render_figure(
    figure: Any, *, image_format: Literal["png", "svg"] = "png", dpi: int = 100
) -> str:
    """Render a matplotlib figure inline, as a PNG data URL or an inline SVG.

    Args:
      figure: A `matplotlib.figure.Figure`.
      image_format: "png" gives an ``<img>`` with a base64 data URL; "svg"
        gives the ``<svg>`` element itself (text stays as paths by default,
        so no font is loaded).
      dpi: Resolution of the PNG.

    Returns:
      An HTML fragment.
    """
    buffer = io.BytesIO()
    if image_format == "png":
        figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        return f'<img alt="figure" src="data:image/png;base64,{data}">'
    if image_format == "svg":
        figure.savefig(buffer, format="svg", bbox_inches="tight")
        return _SVG_PROLOG.sub("", buffer.getvalue().decode("utf-8"), count=1)
    raise ValueError(f"image_format must be 'png' or 'svg', got {image_format!r}")


@dataclasses.dataclass(frozen=True)
class Section:
    """One titled part of a page.

    Attributes:
      title: Plain text heading; it is HTML-escaped.
      body_html: Trusted HTML placed under the heading, e.g. from
        `render_fragment`, `render_code` or `render_figure` (or several
        joined). It is NOT escaped.
      anchor: The heading's id, for links; derived from the title if None.
    """

    title: str
    body_html: str
    anchor: str | None = None


# The page may run inline scripts and styles (treescope needs both, and builds
# functions from strings with `new Function`, hence 'unsafe-eval') and show
# data:/blob: images; it may fetch nothing else, so a stray external URL is
# refused by the browser instead of leaking a request.
_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'unsafe-inline'; img-src data: blob:; font-src data:"
)

_PAGE_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif;
       margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #222; }
h1 { font-size: 1.8rem; }
h2 { font-size: 1.3rem; margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
nav ul { padding-left: 1.2rem; }
section { overflow-x: auto; }
/* treescope sets content-visibility: auto on its root, which leaves trees
   outside the viewport unpainted in full-page screenshots and print-outs. */
treescope-container::part(treescope_root) { content-visibility: visible; }
"""


# treescope's <treescope-run-here> runs its <script> child from a MutationObserver the moment
# the child is inserted; when the HTML parser pauses before that script's text arrives (a long
# page), an empty script runs and that tree never renders (seen here in ~3% of page loads).
# treescope defines the element only if it is not yet defined, so the page defines it first,
# with the same behaviour, but runs each script once parsing is done, in document order.
_RUN_AFTER_PARSE_SCRIPT = """
customElements.define("treescope-run-here", class extends HTMLElement {
  connectedCallback() {
    const run = () => {
      const child = this.querySelector("script");
      const fn = new Function(child.textContent);
      child.textContent = "";
      fn.call(this);
      this.remove();
    };
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", run, {once: true});
    } else {
      run();
    }
  }
});
"""


# treescope keeps its styles in each container's shadow root, out of reach of the page's
# stylesheet, and arrayviz sets `white-space: pre` on its elements (treescope 0.1.10): in a
# narrow column, the control line under a heatmap ("Zoom: - + Dynamic colormap ...") makes
# the whole tree wider than the column, and the axis label over a heatmap (a box as wide as
# the heatmap, text aligned left) runs past it and is cut off at the tree's edge. These
# rules let both wrap (a label at spaces only, in a box at least about ten characters
# wide, so "axis 1: 1" stays whole over a one-column heatmap); arrayviz then makes room
# for the label's box. A sharding drawing's device legend ("CPU 0 1 ... 7") is one
# `white-space: pre` span, which the last rule lets wrap between devices. They are added
# to every shadow root once treescope has made them (its own scripts run on
# DOMContentLoaded, see below), and again after a moment for containers filled later.
_SHADOW_STYLE_SCRIPT = """
(() => {
  const rule = `
    .treescope_root .arrayviz_container .info { white-space: normal !important; }
    .treescope_root .arrayviz_container div[style*="text-align: left"] {
      white-space: normal !important; overflow-wrap: normal; min-width: 5.5em;
    }
    .treescope_root span[style="font-family: monospace; white-space: pre"] {
      white-space: pre-wrap !important;
    }`;
  const addRule = () => {
    for (const container of document.querySelectorAll("treescope-container")) {
      const root = container.shadowRoot;
      if (!root || root.querySelector("style[data-jaxlinear]")) continue;
      const style = document.createElement("style");
      style.setAttribute("data-jaxlinear", "");
      style.textContent = rule;
      root.appendChild(style);
    }
  };
  const soon = () => { setTimeout(addRule, 0); setTimeout(addRule, 500); };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", soon, {once: true});
  } else {
    soon();
  }
})();
"""


def _anchor(title: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return slug or "section"


def render_page(
    title: str, sections: Sequence[Section], *, intro_html: str = "", extra_css: str = ""
) -> str:
    """Join sections into one self-contained HTML document.

    The document has a title heading, an optional introduction, a table of
    contents and one ``<h2>`` per section. Its Content-Security-Policy forbids
    every network request, so it renders the same offline.

    Args:
      title: Page title, plain text (escaped).
      sections: The sections, in order.
      intro_html: Trusted HTML shown under the title (not escaped).
      extra_css: More style rules for the page (e.g. for tables in the sections).

    Returns:
      The full HTML document, a string.
    """
    used: set[str] = set()
    anchors = []
    for section in sections:
        anchor = section.anchor or _anchor(section.title)
        candidate, suffix = anchor, 2
        while candidate in used:
            candidate, suffix = f"{anchor}-{suffix}", suffix + 1
        used.add(candidate)
        anchors.append(candidate)

    escaped_title = html.escape(title)
    toc = "".join(
        f'<li><a href="#{html.escape(anchor)}">{html.escape(section.title)}</a></li>'
        for section, anchor in zip(sections, anchors, strict=True)
    )
    body = "\n".join(
        f'<section><h2 id="{html.escape(anchor)}">{html.escape(section.title)}</h2>\n'
        f"{section.body_html}\n</section>"
        for section, anchor in zip(sections, anchors, strict=True)
    )
    nav = f"<nav><ul>{toc}</ul></nav>" if sections else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CONTENT_SECURITY_POLICY}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escaped_title}</title>\n<style>{_PAGE_CSS}{extra_css}</style>\n"
        f"<script>{_RUN_AFTER_PARSE_SCRIPT}</script>\n</head>\n<body>\n"
        f"<h1>{escaped_title}</h1>\n{intro_html}\n{nav}\n{body}\n"
        f"<script>{_SHADOW_STYLE_SCRIPT}</script>\n</body>\n</html>\n"
    )


@dataclasses.dataclass(frozen=True)
class SideBySide:
    """The side-by-side view as an HTML fragment; a notebook displays it.

    Attributes:
      html: the fragment, with its own styles and scripts (self-contained, offline).
    """

    html: str

    def _repr_html_(self) -> str:
        return self.html


def side_by_side(
    models: Any,
    *,
    feature_names: Sequence[str] | None = None,
    target_names: Sequence[str] | None = None,
) -> SideBySide:
    """The libraries side by side, one column each, as in `jaxlinear compare --report`.

    Rows: each model as treescope renders it; its parameters as heatmaps in the
    library's own layout, labelled with the feature and target names; its
    optimizer state; how it is called; its train step's source.

    Args:
      models: a `jaxlinear.Comparison` (its trained models, each with the
        optimizer state its training ended with, and the data's names), or a
        mapping from library name to a model of that library (each shown with
        the optimizer state a training run would start from).
      feature_names, target_names: names for the parameters' rows and columns;
        by default the comparison's data's, or `x0, x1, ...` and `y0, ...`.

    Returns:
      A `SideBySide`; in a notebook, ending a cell with it shows the view.

    Raises:
      ValueError: an unknown library name; WrongLibraryError: a model that is not
        of the library it is given for.
    """
    from jaxlinear import _device_layout, _layout, _report, _views
    from jaxlinear._compare import Comparison
    from jaxlinear._registry import get_library

    if isinstance(models, Comparison):
        dataset = models.dataset
        trainings = {name: run.fit.training for name, run in models.runs.items()}
        feature_names = feature_names or dataset.feature_names
        target_names = target_names or dataset.target_names
        labels = {
            "model_label": "trained model",
            "batches": _device_layout.Batches(len(dataset.x_train), models.config.batch_size),
        }
        models = {name: run.trained_model for name, run in models.runs.items()}
    else:
        models = dict(models)
        for name, model in models.items():
            get_library(name).check_model(model, "side_by_side")
        trainings = _views.fresh_trainings(models)
        labels = {"state_label": "as a training run starts (adam with the default settings)"}
    feature_names, target_names = _report.default_names(models, feature_names, target_names)
    body = _views.side_by_side_html(models, trainings, feature_names, target_names, **labels)
    return SideBySide(f"<style>{_layout.CSS}</style>{body}<script>{_SHADOW_STYLE_SCRIPT}</script>")
