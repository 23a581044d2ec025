"""The side-by-side view (`jaxlinear.visualize.side_by_side`) and the HTML pieces it is built
from: parameters matched to features and targets, labelled heatmaps, numbers for reading."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest

import jaxlinear
from jaxlinear import LIBRARY_NAMES, WrongLibraryError, _layout, _views, visualize


def _models(in_features=3, out_features=2):
    start = jaxlinear.initial_weights(in_features, out_features, seed=0)
    start = start._replace(bias=np.arange(out_features, dtype=np.float32) + 1)
    return start, {
        name: jaxlinear.get_library(name).from_canonical(start) for name in LIBRARY_NAMES
    }


@pytest.mark.parametrize("library", LIBRARY_NAMES)
def test_parameter_arrays_are_in_the_library_layout_with_their_axes_named(library):
    start, models = _models()
    arrays = _views.parameter_arrays(library, models[library])
    weight, bias = arrays  # the weight first
    transposed = library == "equinox"  # weight: [out, in]
    expected = start.weight.T if transposed else start.weight
    np.testing.assert_array_equal(weight.values, expected)
    assert (weight.rows, weight.columns) == (
        ("targets", "features") if transposed else ("features", "targets")
    )
    np.testing.assert_array_equal(bias.values, start.bias[None, :])
    assert (bias.rows, bias.columns) == ("", "targets")
    names = {
        "linen": "variables['params']['dense']['kernel']",
        "nnx": "model.linear.kernel",
        "equinox": "model.linear.weight",
        "penzai": "Parameter 'linear/Affine_0/Linear.weights'",
    }
    assert weight.name == names[library]
    if library == "penzai":
        assert weight.axis_names == ("features", "features_out")


def test_a_square_weight_is_still_read_the_right_way():
    # in == out: the layout is told apart by the values, not the shape.
    start = jaxlinear.initial_weights(3, 3, seed=1)
    for library in ("linen", "equinox"):
        model = jaxlinear.get_library(library).from_canonical(start)
        (weight, _) = _views.parameter_arrays(library, model)
        rows = "targets" if library == "equinox" else "features"
        assert weight.rows == rows


def test_heatmap_labels_every_row_and_column_and_colours_by_sign():
    values = np.array([[1.0, -1.0, 0.0]])
    table = _layout.heatmap(values, ["y"], ["a", "b", "c"], scale=1.0, describe="{row}<-{column}")
    assert re.findall(r"<th[^>]*>([^<]+)</th>", table) == ["a", "b", "c", "y"]
    colours = re.findall(r"background: (rgb\([^)]*\))", table)
    assert colours == ["rgb(178, 24, 43)", "rgb(33, 102, 172)", "rgb(255, 255, 255)"]
    assert 'title="y&lt;-a: 1"' in table
    with pytest.raises(ValueError, match="labels"):
        _layout.heatmap(values, ["y"], ["a"], scale=1.0)


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [
        (2954.4312, 6, "2,954.43"),
        (0.55941637, 4, "0.5594"),
        (1.2034e-05, 2, "1.2e-05"),
        (18644.0, 4, "18,644"),
        (0.0049321, 2, "0.0049"),
        (0.0, 4, "0"),
        (float("nan"), 4, "n/a"),
        (None, 4, "n/a"),
        (True, 4, "yes"),
    ],
)
def test_numbers_are_rounded_for_reading(value, digits, text):
    assert _layout.rounded(value, digits=digits) == text


def test_code_spans_become_code_elements():
    assert _layout.code_spans("fused (`lax.scan`) <b>") == (
        "fused (<code>lax.scan</code>) &lt;b&gt;"
    )
    assert _layout.code_spans("a ` b") == "a ` b"  # an unpaired backtick stays


def test_side_by_side_of_fresh_models_is_one_self_contained_fragment():
    _, models = _models()
    view = visualize.side_by_side(models)
    assert isinstance(view, visualize.SideBySide) and view._repr_html_() == view.html
    assert view.html.startswith("<style>") and "jl-side-by-side" in view.html
    columns = re.findall(r'data-column="(\w+)"', view.html)
    assert columns == list(LIBRARY_NAMES) * 5  # five rows
    assert view.html.count("<treescope-container") == 2 * len(LIBRARY_NAMES)
    assert "https://" not in view.html
    # Unnamed data: columns named as the data loader names them.
    assert ">x0<" in view.html and ">y1<" in view.html
    named = visualize.side_by_side(
        {"nnx": models["nnx"]}, feature_names=["a", "b", "c"], target_names=["p", "q"]
    )
    assert re.findall(r'data-column="(\w+)"', named.html) == ["nnx"] * 5
    assert ">b<" in named.html and ">q<" in named.html


def test_side_by_side_of_a_comparison_shows_the_trained_state(linnerud):
    comparison = jaxlinear.compare(linnerud, jaxlinear.TrainConfig(epochs=3), ["linen", "penzai"])
    view = visualize.side_by_side(comparison)
    assert re.findall(r'data-column="(\w+)"', view.html)[:2] == ["linen", "penzai"]
    for name in (*linnerud.feature_names, *linnerud.target_names):
        assert f">{name}<" in view.html
    assert "after training" in view.html
    # linen's TrainState counted the 3 steps (one full batch per epoch).
    assert "TrainState" in view.html
    assert re.search(r"step=<span[^>]*>&lt;jax\.Array\(3, dtype=int32", view.html)


def test_side_by_side_refuses_a_model_of_another_library():
    _, models = _models()
    with pytest.raises(WrongLibraryError, match="side_by_side"):
        visualize.side_by_side({"linen": models["nnx"]})
    with pytest.raises(ValueError, match="unknown library"):
        visualize.side_by_side({"haiku": models["nnx"]})


def test_render_fragment_line_width_lays_trees_out_narrower():
    model = jaxlinear.get_library("penzai").create(3, 2, key=jax.random.key(0))
    toggle = re.compile(r'class="foldable_node_toggle"( checked)?')

    def expanded(fragment: str) -> int:
        return sum(m.group(1) is not None for m in toggle.finditer(fragment))

    narrow = visualize.render_fragment(model, line_width=30, max_lines=200, autovisualize=False)
    wide = visualize.render_fragment(model, line_width=200, max_lines=200, autovisualize=False)
    assert expanded(narrow) > expanded(wide)
