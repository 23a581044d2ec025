"""Open a local HTML page in headless Chromium and inspect its treescope output.

A helper for tests, not a test module. It drives Debian's Chromium
(``/usr/bin/chromium``) through Playwright's Python API, so no
``playwright install`` browser download is needed.

While the page is open:

- every request that is not ``file:``/``data:``/``blob:`` is blocked and
  recorded, so a test can assert the page is self-contained;
- console errors and uncaught page errors are recorded;
- `BrowserPage` offers the treescope-specific look-ups: count rendered roots,
  expand a collapsed array node, check that its heatmap canvas was drawn.

Facts about treescope's DOM (treescope 0.1.10) these helpers rely on:

- each rendering is a ``<treescope-container>`` with an open shadow root that
  holds ``.treescope_root``; while its content is pending it holds a
  "(Loading...)" span instead. Playwright's CSS selectors pierce open shadow
  roots; ``document.querySelector`` in page JavaScript does not, hence the
  explicit ``shadowRoot`` loops in the scripts below.
- a foldable node is ``span.foldable_node > label > input.foldable_node_toggle``
  (a hidden checkbox; checked means expanded), so one clicks the label.
- an autovisualized array is a foldable node around a ``.arrayviz_container``;
  arrayviz draws a ``<canvas>`` there when the container first becomes
  visible, and removes its "Rendering array..." ``.loading_message``.

Example::

    with open_in_chromium(path) as page:
        page.wait_until_rendered()
        node_id = page.expand_collapsed_array(containing="float32(3, 2)")
        assert page.heatmap_pixels(node_id)["colored"] > 0
        page.screenshot("page.png")
    assert page.report.ok
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

INSTALL_MESSAGE = (
    "browser tests need Chromium and Playwright's Python package: "
    "`apt-get install -y chromium` and `pip install playwright` "
    "(no `playwright install` download is needed; set JAXLINEAR_CHROMIUM to use "
    "another Chromium binary)"
)

# Flags that keep a headless Chromium in a container quiet and offline:
# no sandbox (no user namespaces as root), no GPU, and none of Chromium's own
# background traffic (component updates, sync, QUIC probes).
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

_LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
_TEST_ID = "data-browser-test-id"


def chromium_path() -> str | None:
    """Return the Chromium executable to use, or None if there is none.

    Looks at the ``JAXLINEAR_CHROMIUM`` environment variable, then for
    ``chromium`` / ``chromium-browser`` on the PATH, then ``/usr/bin/chromium``.
    """
    candidates = [os.environ.get("JAXLINEAR_CHROMIUM")]
    candidates += [shutil.which(name) for name in ("chromium", "chromium-browser")]
    candidates.append("/usr/bin/chromium")
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def playwright_available() -> bool:
    """Whether Playwright's Python package can be imported."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def missing_requirement() -> str | None:
    """None if browser tests can run, else a one-line reason with the install hint."""
    if not playwright_available():
        return f"playwright is not installed; {INSTALL_MESSAGE}"
    if chromium_path() is None:
        return f"chromium was not found; {INSTALL_MESSAGE}"
    return None


@dataclasses.dataclass
class PageReport:
    """What the page did while it was open.

    Attributes:
      console_errors: Text of ``console.error`` messages (and failed resource
        loads, which Chromium reports on the console).
      page_errors: Uncaught exceptions thrown by page scripts.
      blocked_requests: URLs of non-local requests the page attempted; all
        were aborted.
      console_messages: Every console message as ``"type: text"``.
    """

    console_errors: list[str] = dataclasses.field(default_factory=list)
    page_errors: list[str] = dataclasses.field(default_factory=list)
    blocked_requests: list[str] = dataclasses.field(default_factory=list)
    console_messages: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No console error, no page error and no network request."""
        return not (self.console_errors or self.page_errors or self.blocked_requests)


# Scripts run in the page. Each takes one argument, the `data-browser-test-id`
# attribute name, where needed.
_COUNT_SCRIPT = """() => {
  const containers = Array.from(document.querySelectorAll('treescope-container'));
  let rendered = 0, loading = 0;
  for (const c of containers) {
    const root = c.shadowRoot;
    if (root && root.querySelector('.treescope_root')) rendered += 1;
    // The placeholder is a top-level span of the shadow root, removed when
    // the content is inserted.
    const placeholder = root && Array.from(root.children).some(
      (e) => e.tagName === 'SPAN' && e.textContent === '(Loading...)');
    if (!root || placeholder) loading += 1;
  }
  return {containers: containers.length, rendered, loading};
}"""

# Innermost collapsed foldable nodes that hold an array visualisation and are
# not hidden inside another collapsed node; each gets a test id. `:scope` is
# needed: without it `node.querySelector('a b')` also matches when `a` is an
# ancestor of `node`. In non-roundtrip mode the visualised copy of an array
# sits in `.when_not_roundtrip`; its `.when_roundtrip` twin is display:none.
_MARK_COLLAPSED_ARRAYS_SCRIPT = """(attr) => {
  const collapsed = '.foldable_node:has(> label > input.foldable_node_toggle:not(:checked))';
  const ids = [];
  for (const c of document.querySelectorAll('treescope-container')) {
    if (!c.shadowRoot) continue;
    for (const node of c.shadowRoot.querySelectorAll(collapsed)) {
      if (!node.querySelector('.arrayviz_container')) continue;
      if (node.querySelector(':scope .foldable_node .arrayviz_container')) continue;
      if (node.parentElement && node.parentElement.closest(collapsed)) continue;
      if (!node.hasAttribute(attr)) {
        node.setAttribute(attr, 'array-' + Math.random().toString(36).slice(2));
      }
      ids.push(node.getAttribute(attr));
    }
  }
  return ids;
}"""

# Pixel counts of the heatmap canvases inside the node with the given test id:
# `drawn` (neither transparent nor white) and `colored` (clearly not grey, i.e.
# colormap cells rather than borders and axis ticks); null while no canvas.
_HEATMAP_PIXELS_SCRIPT = """([attr, id]) => {
  for (const c of document.querySelectorAll('treescope-container')) {
    if (!c.shadowRoot) continue;
    const node = c.shadowRoot.querySelector(`[${attr}="${id}"]`);
    if (!node) continue;
    const canvases = node.querySelectorAll(':scope .arrayviz_container canvas');
    if (canvases.length === 0) return null;
    let drawn = 0, colored = 0;
    for (const canvas of canvases) {
      if (!canvas.width || !canvas.height) continue;
      // Read a copy: reading arrayviz's own canvas back makes Chromium log a
      // willReadFrequently performance warning.
      const copy = document.createElement('canvas');
      copy.width = canvas.width;
      copy.height = canvas.height;
      const context = copy.getContext('2d', {willReadFrequently: true});
      context.drawImage(canvas, 0, 0);
      const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
      for (let i = 0; i < data.length; i += 4) {
        const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
        if (a === 0 || (r > 250 && g > 250 && b > 250)) continue;
        drawn += 1;
        if (Math.max(r, g, b) - Math.min(r, g, b) > 40) colored += 1;
      }
    }
    return {canvases: canvases.length, drawn, colored};
  }
  return null;
}"""

# Collapsed foldable nodes of any kind (not hidden inside another collapsed node), each
# given a test id; with their label text.
_MARK_COLLAPSED_NODES_SCRIPT = """(attr) => {
  const collapsed = '.foldable_node:has(> label > input.foldable_node_toggle:not(:checked))';
  const found = [];
  for (const c of document.querySelectorAll('treescope-container')) {
    if (!c.shadowRoot) continue;
    for (const node of c.shadowRoot.querySelectorAll(collapsed)) {
      if (node.parentElement && node.parentElement.closest(collapsed)) continue;
      if (!node.hasAttribute(attr)) {
        node.setAttribute(attr, 'node-' + Math.random().toString(36).slice(2));
      }
      found.push([node.getAttribute(attr), node.textContent]);
    }
  }
  return found;
}"""

# Elements whose content is wider than their box and not left to scroll: the box's overflow
# hides it, or paint containment (treescope's root has `contain: content`) clips it. Each as
# `[description, scrollWidth, clientWidth]`; `selector` picks the boxes to check, in the page
# and in every treescope shadow root.
_CLIPPED_SCRIPT = """(selector) => {
  const clipped = [];
  const check = (element) => {
    if (element.scrollWidth <= element.clientWidth + 1) return;
    const style = getComputedStyle(element);
    const scrolls = ['auto', 'scroll'].includes(style.overflowX);
    const contained = /paint|content|strict/.test(style.contain);
    if (!scrolls || contained) {
      clipped.push([element.tagName + '.' + element.className, element.scrollWidth,
                    element.clientWidth]);
    }
  };
  // treescope's root clips what its children paint beyond it (paint containment), even
  // absolutely placed ones such as arrayviz's axis labels, which scrollWidth misses.
  const checkContained = (root) => {
    const edge = root.getBoundingClientRect().right;
    for (const element of root.querySelectorAll('*')) {
      const box = element.getBoundingClientRect();
      // Text can run past its own box (white-space: pre): where it ends counts too.
      const right = Math.max(box.right, box.left + element.scrollWidth);
      if (box.width > 0 && box.height > 0 && right > edge + 1) {
        clipped.push([element.tagName + '.' + element.className + ' beyond the tree',
                      Math.round(right), Math.round(edge)]);
      }
    }
  };
  document.querySelectorAll(selector).forEach(check);
  for (const c of document.querySelectorAll('treescope-container')) {
    if (!c.shadowRoot) continue;
    c.shadowRoot.querySelectorAll('.treescope_root').forEach(check);
    c.shadowRoot.querySelectorAll('.treescope_root').forEach(checkContained);
  }
  return clipped;
}"""

_IS_EXPANDED_SCRIPT = """([attr, id]) => {
  for (const c of document.querySelectorAll('treescope-container')) {
    const node = c.shadowRoot && c.shadowRoot.querySelector(`[${attr}="${id}"]`);
    if (node) return node.querySelector(':scope > label > input.foldable_node_toggle').checked;
  }
  return null;
}"""

# Scroll every treescope container, then every visible array container, into
# view: compressed fragments load and heatmaps draw only near the viewport.
_VISIBLE_ARRAY_CONTAINERS_SCRIPT = """() => {
  const out = [];
  for (const c of document.querySelectorAll('treescope-container')) {
    if (!c.shadowRoot) continue;
    for (const a of c.shadowRoot.querySelectorAll('.arrayviz_container')) {
      if (a.getClientRects().length > 0 && a.querySelector('.loading_message')) out.push(a);
    }
  }
  return out;
}"""


class BrowserPage:
    """An open page plus treescope-aware helpers; made by `open_in_chromium`.

    Attributes:
      page: The underlying `playwright.sync_api.Page`, for anything else.
      report: The `PageReport`, filled while the page is open.
    """

    def __init__(self, page: Any, report: PageReport, timeout_ms: float):
        self.page = page
        self.report = report
        self.timeout_ms = timeout_ms

    def treescope_counts(self) -> dict[str, int]:
        """Return ``{"containers", "rendered", "loading"}`` counts right now."""
        return self.page.evaluate(_COUNT_SCRIPT)

    def count_rendered_roots(self) -> int:
        """Number of ``treescope-container >> .treescope_root`` elements."""
        return self.page.locator("treescope-container >> .treescope_root").count()

    def wait_until_rendered(self, expected: int | None = None) -> int:
        """Wait until every treescope container holds a rendered root.

        Scrolls each container into view first, because compressed fragments
        are only inserted near the viewport.

        Args:
          expected: If given, also wait until exactly this many roots exist.

        Returns:
          The number of rendered roots.

        Raises:
          playwright.sync_api.TimeoutError: If rendering does not finish.
        """
        containers = self.page.locator("treescope-container")
        for index in range(containers.count()):
            containers.nth(index).scroll_into_view_if_needed(timeout=self.timeout_ms)
        self.page.wait_for_function(
            f"""(expected) => {{
              const counts = ({_COUNT_SCRIPT})();
              return counts.loading === 0 && counts.rendered === counts.containers
                && (expected === null || counts.rendered === expected);
            }}""",
            arg=expected,
            timeout=self.timeout_ms,
        )
        return self.count_rendered_roots()

    def collapsed_array_nodes(self, containing: str | None = None) -> list[str]:
        """Test ids of the clickable collapsed array nodes, in page order.

        Args:
          containing: Keep only nodes whose label text contains this string,
            e.g. ``"float32(3, 2)"``.
        """
        ids = self.page.evaluate(_MARK_COLLAPSED_ARRAYS_SCRIPT, _TEST_ID)
        if containing is None:
            return ids
        return [
            node_id
            for node_id in ids
            if containing in self.page.locator(f'[{_TEST_ID}="{node_id}"] > label').inner_text()
        ]

    def expand_collapsed_array(self, index: int = 0, *, containing: str | None = None) -> str:
        """Click a collapsed array node open and wait for its heatmap.

        Args:
          index: Which of `collapsed_array_nodes(containing)` to open.
          containing: Passed to `collapsed_array_nodes`.

        Returns:
          The node's test id (for `heatmap_pixels` and `is_expanded`).

        Raises:
          LookupError: If there is no such collapsed array node.
          playwright.sync_api.TimeoutError: If no heatmap gets drawn.
        """
        ids = self.collapsed_array_nodes(containing)
        if index >= len(ids):
            raise LookupError(
                f"found {len(ids)} collapsed array nodes containing {containing!r}, "
                f"wanted index {index}"
            )
        node_id = ids[index]
        # A real mouse click on the label (the checkbox itself is display:none).
        self.page.locator(f'[{_TEST_ID}="{node_id}"] > label').click(timeout=self.timeout_ms)
        self.page.wait_for_function(
            f"(args) => (({_HEATMAP_PIXELS_SCRIPT})(args) || {{drawn: 0}}).drawn > 0",
            arg=[_TEST_ID, node_id],
            timeout=self.timeout_ms,
        )
        return node_id

    def collapsed_nodes(self, containing: str | None = None) -> list[str]:
        """Test ids of the clickable collapsed nodes of any kind, in page order.

        Args:
          containing: Keep only nodes whose text contains this string.
        """
        found = self.page.evaluate(_MARK_COLLAPSED_NODES_SCRIPT, _TEST_ID)
        return [node_id for node_id, text in found if containing is None or containing in text]

    def expand_collapsed_node(self, node_id: str) -> None:
        """Click the label of the collapsed node with this test id, as a reader would."""
        self.page.locator(f'[{_TEST_ID}="{node_id}"] > label').click(timeout=self.timeout_ms)

    def clipped_elements(self, selector: str) -> list[list]:
        """The elements matching `selector`, and every treescope root, whose content is
        wider than their box and cut off rather than scrollable (``[description,
        scrollWidth, clientWidth]``), and the elements drawn past a treescope root's right
        edge, which its paint containment cuts off (``[description, right, edge]``).
        Empty when nothing is clipped."""
        return self.page.evaluate(_CLIPPED_SCRIPT, selector)

    def scrolls_sideways(self) -> bool:
        """Whether the page itself is wider than the window."""
        return self.page.evaluate(
            "() => document.documentElement.scrollWidth > document.documentElement.clientWidth"
        )

    def is_expanded(self, node_id: str) -> bool | None:
        """Whether the node with this test id is expanded (None if not found)."""
        return self.page.evaluate(_IS_EXPANDED_SCRIPT, [_TEST_ID, node_id])

    def heatmap_pixels(self, node_id: str) -> dict[str, int] | None:
        """Pixel counts of the heatmap in a node, or None if none is drawn yet.

        Returns:
          ``{"canvases", "drawn", "colored"}``: canvases found, pixels neither
          transparent nor white, and of those the clearly coloured ones (the
          colormap cells; an all-zero array draws white cells, so 0 there).
        """
        return self.page.evaluate(_HEATMAP_PIXELS_SCRIPT, [_TEST_ID, node_id])

    def count_heatmap_canvases(self) -> int:
        """Number of array heatmap canvases drawn so far in the whole page."""
        return self.page.locator(".arrayviz_container canvas").count()

    def draw_visible_heatmaps(self) -> int:
        """Scroll to every shown-but-undrawn array so arrayviz draws it.

        Returns:
          The number of heatmap canvases in the page afterwards.
        """
        pending = self.page.evaluate_handle(_VISIBLE_ARRAY_CONTAINERS_SCRIPT)
        try:
            for index in range(pending.evaluate("list => list.length")):
                pending.evaluate("(list, i) => list[i].scrollIntoView({block: 'center'})", index)
                # arrayviz draws from an IntersectionObserver callback and then
                # removes the loading message.
                pending.evaluate(
                    """(list, i) => new Promise((resolve) => {
                      const done = () => !list[i].querySelector('.loading_message');
                      const poll = () => done() ? resolve() : requestAnimationFrame(poll);
                      poll();
                    })""",
                    index,
                )
        finally:
            pending.dispose()
        self.page.evaluate("() => window.scrollTo(0, 0)")
        return self.count_heatmap_canvases()

    def screenshot(self, path: str | os.PathLike[str], *, full_page: bool = True) -> Path:
        """Save a PNG screenshot (the whole page by default) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


@contextlib.contextmanager
def open_in_chromium(
    html_path: str | os.PathLike[str],
    *,
    viewport: tuple[int, int] = (1280, 900),
    timeout_s: float = 30.0,
) -> Iterator[BrowserPage]:
    """Open a local HTML file in headless Chromium, offline.

    Args:
      html_path: The HTML file to load (any path; it is made absolute).
      viewport: Window size in CSS pixels, (width, height).
      timeout_s: Time limit for loading and for each wait.

    Yields:
      A `BrowserPage`; its `report` stays readable after the block ends.

    Raises:
      RuntimeError: If Playwright or Chromium is missing (message tells how
        to install them).
    """
    reason = missing_requirement()
    if reason is not None:
        raise RuntimeError(reason)
    from playwright.sync_api import sync_playwright

    report = PageReport()
    timeout_ms = timeout_s * 1000
    url = Path(html_path).resolve().as_uri()

    def record(request_url: str) -> None:
        if request_url not in report.blocked_requests:
            report.blocked_requests.append(request_url)

    def on_route(route: Any) -> None:
        if route.request.url.startswith(_LOCAL_SCHEMES):
            route.continue_()
        else:
            record(route.request.url)
            route.abort("blockedbyclient")

    def on_request(request: Any) -> None:
        # Also sees requests that bypass routing (e.g. from workers).
        if not request.url.startswith(_LOCAL_SCHEMES):
            record(request.url)

    def on_console(message: Any) -> None:
        report.console_messages.append(f"{message.type}: {message.text}")
        if message.type == "error":
            report.console_errors.append(message.text)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), args=list(CHROMIUM_FLAGS)
        )
        try:
            context = browser.new_context(
                viewport={"width": viewport[0], "height": viewport[1]},
                service_workers="block",
            )
            context.route("**/*", on_route)
            context.on("request", on_request)
            page = context.new_page()
            page.set_default_timeout(timeout_ms)
            page.on("console", on_console)
            page.on("pageerror", lambda error: report.page_errors.append(str(error)))
            page.on("websocket", lambda socket: record(socket.url))
            page.goto(url, wait_until="load", timeout=timeout_ms)
            yield BrowserPage(page, report, timeout_ms)
        finally:
            browser.close()
