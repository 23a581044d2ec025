"""notebooks/tour.ipynb: stored clean, and runs top to bottom in a fresh kernel.

The notebook's first code cell is tagged ``parameters`` (papermill's convention); the test
runs it with smaller settings by inserting a cell right after it, as papermill does.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "tour.ipynb"
TEST_SETTINGS = "EPOCHS = 100"

nbformat = pytest.importorskip("nbformat")


def _read():
    return nbformat.read(NOTEBOOK, as_version=4)


def _html(cell) -> str:
    return "".join(
        output.get("data", {}).get("text/html", "")
        for output in cell.get("outputs", [])
        if output.output_type in ("display_data", "execute_result")
    )


def test_notebook_is_stored_valid_and_without_outputs():
    notebook = _read()
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    assert notebook.metadata.kernelspec.name == "python3"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.outputs for cell in code] == [[] for _ in code]
    assert [cell.execution_count for cell in code] == [None for _ in code]
    # The settings cell comes first, so the test (or a reader) can change it.
    assert "parameters" in code[0].metadata.get("tags", [])
    assert "EPOCHS" in code[0].source
    # visualize.setup() runs before anything is displayed.
    assert "visualize.setup()" in code[1].source


@pytest.mark.slow  # 15-25 s here: a kernel start, four libraries imported, four compiles.
def test_notebook_runs_top_to_bottom_and_shows_treescope():
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    notebook = _read()
    first_code = next(i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code")
    notebook.cells.insert(first_code + 1, nbformat.v4.new_code_cell(TEST_SETTINGS))

    # Raises CellExecutionError, with the cell's traceback, if any cell fails.
    nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert errors == []
    # A warning raised in the kernel (e.g. a deprecated API) lands on stderr.
    stderr = [o.text for cell in code for o in cell.outputs if o.get("name") == "stderr"]
    assert stderr == []

    # Every cell that ends in a bare name displays that value; with visualize.setup()
    # each one must be a treescope rendering (models, variables, named arrays).
    displayed = [cell for cell in code if re.fullmatch(r"[a-z_]+", cell.source.splitlines()[-1])]
    assert len(displayed) >= 8
    for cell in displayed:
        assert "treescope" in _html(cell), cell.source
    # The side-by-side view, through the public API: a column per library, trees inside.
    side_by_side = next(cell for cell in code if "visualize.side_by_side(" in cell.source)
    view = _html(side_by_side)
    assert "jl-side-by-side" in view
    columns = re.findall(r'data-column="(\w+)"', view)
    assert columns[:4] == ["linen", "nnx", "equinox", "penzai"] and len(columns) == 4 * 5
    assert view.count("<treescope-container") == 8
    penzai_parameters = next(cell for cell in code if "treescope.display(" in cell.source)
    assert "treescope" in _html(penzai_parameters)
    assert "features_out" in "".join(o.get("text", "") for o in penzai_parameters.outputs)
