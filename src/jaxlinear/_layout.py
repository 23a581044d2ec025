"""Page layout in plain HTML and CSS: the side-by-side grid, heatmap tables, rounded numbers.

Nothing here knows about the four libraries; `_views` and `_sections` fill these shapes.
Every piece is plain HTML with inline colours, so it prints and screenshots as it shows, and
the stylesheet (`CSS`) is scoped to `jl-` classes, so a fragment can sit in a notebook cell.
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Mapping, Sequence

import numpy as np

# From about 1,200 px of window (1,100 px of content), the four columns sit side by side;
# below, they stack. A container query, not a media query: in a notebook the output area,
# not the window, is what the columns have to fit in.
CSS = """
.jl-side-by-side { container-type: inline-size; }
.jl-row { margin: 1.2rem 0 1.8rem; }
.jl-row > h3 { margin: 0 0 0.2rem; font-size: 1.1rem; }
.jl-row > .jl-note { margin: 0 0 0.5rem; color: #555; max-width: 60rem; }
.jl-columns { display: grid; grid-template-columns: minmax(0, 1fr); gap: 0.6rem; }
@container (min-width: 1100px) {
  .jl-columns { grid-template-columns: repeat(var(--jl-columns, 4), minmax(0, 1fr)); }
}
.jl-cell { min-width: 0; overflow-x: auto; border: 1px solid #ddd; border-radius: 4px;
           padding: 0.4rem 0.5rem; background: #fff; }
.jl-cell > h4 { margin: 0 0 0.3rem; font-size: 0.95rem; white-space: nowrap;
                overflow: hidden; text-overflow: ellipsis; }
.jl-cell .jl-caption { margin: 0.2rem 0; font-size: 0.85rem; color: #444;
                       overflow-wrap: anywhere; }
.jl-cell treescope-container { display: block; }
/* treescope's root clips what is drawn past it (paint containment): the right padding
   takes what hangs over a wrapped line's end (spaces, a copy button) and the part of an
   axis label arrayviz centres over a heatmap that sits at the end of a line. */
.jl-cell treescope-container::part(treescope_root) {
  white-space: pre-wrap; overflow-wrap: anywhere; font-size: 12px; padding: 0 1.5ch 0 0.5ch; }
.jl-cell .highlight pre, .jl-cell pre.jl-code {
  white-space: pre-wrap; overflow-wrap: anywhere; font-size: 12px; margin: 0; }
.jl-cell .highlight { background: #f8f8f8; padding: 0.3rem; }
table.jl-heatmap { border-collapse: collapse; margin: 0.2rem 0 0.6rem; font-size: 12px; }
table.jl-heatmap th { font-weight: normal; color: #333; padding: 1px 4px; text-align: right;
                      white-space: nowrap; }
table.jl-heatmap thead th { text-align: center; vertical-align: bottom; }
table.jl-heatmap thead th.jl-vertical { writing-mode: vertical-rl; transform: rotate(180deg);
                                        text-align: left; padding: 4px 1px; }
table.jl-heatmap td { width: 18px; min-width: 18px; height: 18px; border: 1px solid #fff;
                      box-shadow: inset 0 0 0 1px rgba(0, 0, 0, 0.08); }
table.jl-heatmap td.jl-value { width: auto; padding: 1px 6px; text-align: right;
                               font-variant-numeric: tabular-nums; white-space: nowrap; }
.jl-legend { display: inline-flex; align-items: center; gap: 0.4rem; font-size: 12px;
             color: #444; vertical-align: middle; margin-right: 1rem; }
.jl-legend .jl-bar { width: 8rem; height: 0.7rem; border: 1px solid #ccc; }
.jl-wide { overflow-x: auto; max-width: 100%; }
table.jl-grid { border-collapse: collapse; margin: 0.5rem 0; }
table.jl-grid th, table.jl-grid td { border: 1px solid #ccc; padding: 0.25rem 0.6rem;
                                     text-align: left; vertical-align: top; }
table.jl-grid td.jl-number { text-align: right; font-variant-numeric: tabular-nums;
                             white-space: nowrap; }
table.jl-grid.jl-fixed { table-layout: fixed; width: 100%; }
table.jl-grid.jl-weights { font-size: 13px; }
table.jl-grid.jl-weights th, table.jl-grid.jl-weights td { padding: 0.15rem 0.4rem;
                                                           white-space: nowrap; }
table.jl-grid.jl-fixed td, table.jl-grid.jl-fixed th { overflow-wrap: anywhere; }
.jl-statement p { max-width: 72rem; overflow-wrap: anywhere; }
.jl-statement p:first-child { font-weight: bold; }
details.jl-hlo pre { max-height: 30rem; overflow: auto; font-size: 12px; background: #f8f8f8;
                     padding: 0.4rem; }
"""


@dataclasses.dataclass(frozen=True)
class Row:
    """One aspect of the side-by-side view: a title and one cell per column.

    Attributes:
      title: plain text (escaped).
      cells: column key -> trusted HTML of that cell (not escaped).
      note: trusted HTML under the title, saying what the row shows.
      anchor: the row's id, for links and tests.
    """

    title: str
    cells: Mapping[str, str]
    note: str = ""
    anchor: str | None = None


def side_by_side(rows: Sequence[Row], columns: Mapping[str, str]) -> str:
    """The rows, each as a title over one cell per column, in `columns` order.

    Args:
      rows: the aspects, in order.
      columns: column key -> its heading (plain text), repeated in every cell so that each
        stays labelled when the columns stack.

    Returns:
      An HTML fragment (`<div class="jl-side-by-side">`); it needs `CSS`.
    """
    parts = []
    for row in rows:
        anchor = f' id="{html.escape(row.anchor)}"' if row.anchor else ""
        cells = "".join(
            f'<div class="jl-cell" data-column="{html.escape(key)}">'
            f"<h4>{html.escape(heading)}</h4>{row.cells.get(key, '')}</div>"
            for key, heading in columns.items()
        )
        note = f'<p class="jl-note">{row.note}</p>' if row.note else ""
        parts.append(
            f'<div class="jl-row"{anchor}><h3>{html.escape(row.title)}</h3>{note}'
            f'<div class="jl-columns" style="--jl-columns: {len(columns)}">{cells}</div></div>'
        )
    return f'<div class="jl-side-by-side">{"".join(parts)}</div>'


# Diverging colours: negative blue, zero white, positive red (ColorBrewer RdBu ends).
_NEGATIVE = (33, 102, 172)
_POSITIVE = (178, 24, 43)
_WHITE = (255, 255, 255)


def text_colour(value: float, scale: float) -> str:
    """Black, or white where `colour(value, scale)` is too dark to read black on."""
    return "#fff" if scale > 0 and abs(value) > 0.6 * scale else "#000"


def colour(value: float, scale: float) -> str:
    """The CSS colour of `value` on a blue-white-red scale from `-scale` to `scale`."""
    if not math.isfinite(value):
        return "#999"
    share = 0.0 if scale <= 0 else min(abs(value) / scale, 1.0)
    end = _POSITIVE if value > 0 else _NEGATIVE
    r, g, b = (round(w + share * (e - w)) for w, e in zip(_WHITE, end, strict=True))
    return f"rgb({r}, {g}, {b})"


def legend(scale: float, *, label: str = "") -> str:
    """A colour bar for `colour(., scale)`, with its ends written out."""
    bar = (
        f'<span class="jl-bar" style="background: linear-gradient(to right, '
        f'{colour(-scale, scale)}, {colour(0.0, scale)}, {colour(scale, scale)})"></span>'
    )
    text = f"<span>{html.escape(label)}</span>" if label else ""
    return (
        f'<span class="jl-legend">{text}<span>{rounded(-scale)}</span>{bar}'
        f"<span>{rounded(scale)}</span></span>"
    )


def heatmap(
    values: np.ndarray,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    *,
    scale: float,
    describe: str = "",
) -> str:
    """A 2-D array as a table of coloured cells, rows and columns labelled by name.

    Args:
      values: `[rows, columns]`.
      row_labels, column_labels: one name per row / column.
      scale: the value drawn at full colour (see `colour`); cells beyond it saturate.
      describe: how each cell is read in its tooltip, e.g. `"{row} -> {column}"`.

    Returns:
      A `<table class="jl-heatmap">`; each cell's exact value is in its tooltip.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape != (len(row_labels), len(column_labels)):
        raise ValueError(
            f"values {values.shape} do not match {len(row_labels)} row and "
            f"{len(column_labels)} column labels"
        )
    # Many columns: their names stand upright, so the table stays narrow.
    vertical = len(column_labels) > 2
    head_class = ' class="jl-vertical"' if vertical else ""
    head = "".join(f"<th{head_class}>{html.escape(name)}</th>" for name in column_labels)
    body = []
    for i, row_name in enumerate(row_labels):
        cells = []
        for j, column_name in enumerate(column_labels):
            where = (describe or "{row}, {column}").format(row=row_name, column=column_name)
            tip = f"{where}: {values[i, j]:.6g}"
            cells.append(
                f'<td title="{html.escape(tip)}" '
                f'style="background: {colour(values[i, j], scale)}"></td>'
            )
        body.append(f"<tr><th>{html.escape(row_name)}</th>{''.join(cells)}</tr>")
    return (
        f'<table class="jl-heatmap"><thead><tr><th></th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def rounded(value: float | None, *, digits: int = 4) -> str:
    """A number for reading: `digits` significant digits, thousands separated, no float
    noise (`2954.43`, `0.5594`, `1.2e-05`); `n/a` for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e15):
        return f"{int(value):,}"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude >= digits + 2 or magnitude < -3:
        return f"{value:.{max(digits - 2, 1)}e}"
    decimals = max(digits - 1 - magnitude, 0)
    return f"{value:,.{decimals}f}"


def code_spans(text: str) -> str:
    """Markdown-style `code` spans to `<code>` elements; everything else escaped."""
    parts = html.escape(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick stays a backtick
        parts[-2:] = [parts[-2] + "`" + parts[-1]]
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))
