"""Examples in the docs run as written."""

import doctest
import importlib
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize(
    "module",
    [
        "jaxlinear",
        "jaxlinear.libraries.linen",
        "jaxlinear.libraries.nnx",
        "jaxlinear.libraries.equinox",
        "jaxlinear.libraries.penzai",
    ],
)
def test_docstring_examples(module):
    failures, tried = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})


def test_readme_idiom_table_matches_the_report():
    from jaxlinear._report import idiom_table_markdown

    assert idiom_table_markdown() in README.read_text()
