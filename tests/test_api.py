"""The public surface: what importing costs, what each library accepts, and one-call predictions."""

import json
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxlinear
from jaxlinear import LIBRARY_NAMES, WrongLibraryError, get_library, least_squares

ROOT = Path(__file__).resolve().parent.parent


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


HEAVY = {
    "jax",
    "flax",
    "equinox",
    "penzai",
    "optax",
    "sklearn",
    "matplotlib",
    "treescope",
    "pyarrow",
}


@pytest.mark.parametrize(
    "code",
    [
        "import jaxlinear",
        "import jaxlinear.libraries",
        "from jaxlinear.cli import build_parser; build_parser().parse_args(['compare'])",
        "from jaxlinear import TrainConfig; TrainConfig(epochs=5).validate()",
    ],
)
def test_light_imports_stay_light(code):
    assert not HEAVY & _modules_after(code)


def test_every_exported_name_resolves():
    for name in jaxlinear.__all__:
        assert getattr(jaxlinear, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        jaxlinear.nothing  # noqa: B018


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_a_model_of_another_library_is_refused(name):
    model = get_library(name).create(3, 1, key=jax.random.key(0))
    x = np.ones((2, 3), np.float32)
    for other in LIBRARY_NAMES:
        if other == name:
            continue
        library = get_library(other)
        for function, args in ((library.predict, (model, x)), (library.to_canonical, (model,))):
            with pytest.raises(WrongLibraryError) as caught:
                function(*args)
            message = str(caught.value)
            assert library.title in message and get_library(name).title in message
            assert f"jaxlinear.convert(model, {name!r}, {other!r})" in message


def test_a_foreign_object_is_refused_by_name():
    with pytest.raises(WrongLibraryError, match=r"flax\.nnx's predict was given a dict"):
        get_library("nnx").predict({"W": 1}, np.ones((1, 3)))


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_predictions_in_original_units_are_one_call(diabetes, name):
    exact = least_squares(diabetes.x_train, diabetes.y_train)
    library = get_library(name)
    model = library.from_canonical(exact)
    scaling = diabetes.scaling
    x_raw = diabetes.x_test * scaling.x_scale + scaling.x_mean
    expected = scaling.weights_to_original(exact).predict(x_raw)
    # float32 model on standardised inputs of order 1, targets of order 100: ~1e-5 relative.
    np.testing.assert_allclose(library.predict(model, x_raw, scaling=scaling), expected, rtol=1e-5)


def test_docs_and_notebook_use_only_public_modules():
    texts = [ROOT / "README.md", ROOT / "notebooks" / "tour.ipynb", *ROOT.glob("docs/*.md")]
    for path in texts:
        private = re.findall(r"jaxlinear\._\w+|from jaxlinear import _\w+", path.read_text())
        assert not private, (path.name, private)
