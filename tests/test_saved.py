"""The library-neutral saved model: round trip, and a clear refusal of anything damaged."""

import dataclasses
import json
import struct

import numpy as np
import pytest

from jaxlinear import LIBRARY_NAMES, SavedModelError, Scaling, get_library, initial_weights
from jaxlinear._saved import FILE_NAME, SavedModel, encode, load, save


def _saved(library="nnx"):
    weights = initial_weights(4, 2, seed=3)._replace(bias=np.array([0.5, -1.0], np.float32))
    scaling = Scaling(
        x_mean=np.arange(4.0),
        x_scale=np.ones(4) * 2,
        y_mean=np.zeros(2),
        y_scale=np.ones(2),
        feature_names=("a", "b", "c", "d"),
        target_names=("u", "v"),
    )
    return SavedModel(library=library, weights=weights, scaling=scaling, dataset="synthetic")


@pytest.mark.parametrize("target", LIBRARY_NAMES)
def test_round_trip_opens_in_every_library(tmp_path, target):
    original = _saved()
    path = save(tmp_path / "run", original)
    assert path.name == FILE_NAME
    loaded = load(tmp_path / "run")
    assert (loaded.library, loaded.dataset) == ("nnx", "synthetic")
    np.testing.assert_array_equal(loaded.weights.weight, original.weights.weight)
    np.testing.assert_array_equal(loaded.scaling.x_scale, original.scaling.x_scale)
    assert loaded.scaling.feature_names == ("a", "b", "c", "d")
    library = get_library(target)
    model = library.from_canonical(loaded.weights)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(library.predict(model, x), original.weights.predict(x), atol=1e-6)


def test_a_transposed_view_is_saved_by_value(tmp_path):
    # equinox's canonical W is `weight.T`, a view whose memory is [out, in]: safetensors
    # writes memory as it lies, so the file must be given a row-major copy.
    saved = _saved()
    weight = np.asarray(saved.weights.weight.T.copy()).T  # same values, column-major memory
    assert not weight.flags.c_contiguous
    view = dataclasses.replace(saved, weights=saved.weights._replace(weight=weight))
    save(tmp_path, view)
    np.testing.assert_array_equal(load(tmp_path).weights.weight, saved.weights.weight)


def test_save_overwrites_atomically(tmp_path):
    save(tmp_path, _saved("linen"))
    save(tmp_path, _saved("equinox"))
    assert load(tmp_path).library == "equinox"
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME]


def _edited(tmp_path, *, tensors=None, metadata=None) -> str:
    """Writes a safetensors file like `save` would, with some tensors or metadata changed."""
    from safetensors.numpy import save as save_tensors

    saved = _saved()
    arrays = {"W": saved.weights.weight, "b": saved.weights.bias, **saved.scaling.as_arrays()}
    meta = {
        "format": "jaxlinear-linear-v2",
        "library": "nnx",
        "dataset": "synthetic",
        "feature_names": json.dumps(list(saved.scaling.feature_names)),
        "target_names": json.dumps(list(saved.scaling.target_names)),
    }
    arrays.update(tensors or {})
    arrays = {key: value for key, value in arrays.items() if value is not None}
    meta.update(metadata or {})
    meta = {key: value for key, value in meta.items() if value is not None}
    (tmp_path / FILE_NAME).write_bytes(save_tensors(arrays, metadata=meta))
    return str(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(tensors={"W": np.zeros((3, 2), np.float32)}), "the scaling is for 4 features"),
        (dict(tensors={"b": np.zeros(3, np.float32)}), "bias: \\[out_features\\]"),
        (dict(tensors={"W": np.full((4, 2), np.nan, np.float32)}), "W and b must be finite"),
        (dict(tensors={"x_scale": np.zeros(4)}), "x_scale positive"),
        (dict(tensors={"y_mean": None}), "missing 'y_mean'"),
        (dict(metadata={"library": "keras"}), "unknown library 'keras'"),
        (dict(metadata={"feature_names": "[1, 2]"}), "feature_names must be a list of strings"),
        (dict(metadata={"feature_names": "not json"}), "damaged or was edited"),
        (dict(metadata={"format": "jaxlinear-linear-v9"}), "has format 'jaxlinear-linear-v9'"),
        (dict(metadata={"format": None}), "has format None"),
    ],
)
def test_edited_files_are_refused_naming_the_file(tmp_path, change, message):
    folder = _edited(tmp_path, **change)
    with pytest.raises(SavedModelError, match=message) as caught:
        load(folder)
    assert str(caught.value).startswith(str(tmp_path / FILE_NAME))
    assert "\n" not in str(caught.value)


def test_damaged_files_are_refused(tmp_path):
    with pytest.raises(SavedModelError, match="no saved model"):
        load(tmp_path / "missing")
    path = tmp_path / FILE_NAME
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(SavedModelError, match="damaged or not a safetensors file"):
        load(tmp_path)
    data = encode(_saved())
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(SavedModelError, match="damaged or not a safetensors file"):
        load(tmp_path)
    header_size = struct.unpack("<Q", data[:8])[0]
    path.write_bytes(struct.pack("<Q", header_size * 1000) + data[8:])  # a header that lies
    with pytest.raises(SavedModelError, match="damaged or not a safetensors file"):
        load(tmp_path)
