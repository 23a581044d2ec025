"""The library-neutral saved model: round trip, and clear errors for anything else."""

import numpy as np
import pytest

from jaxlinear import LIBRARY_NAMES, get_library, initial_weights
from jaxlinear._saved import FILE_NAME, SavedModel, SavedModelError, load, save


def _saved(library="nnx"):
    weights = initial_weights(4, 2, seed=3)._replace(bias=np.array([0.5, -1.0], np.float32))
    return SavedModel(
        library=library,
        weights=weights,
        x_mean=np.arange(4.0),
        x_scale=np.ones(4) * 2,
        y_mean=np.zeros(2),
        y_scale=np.ones(2),
        dataset="synthetic",
    )


@pytest.mark.parametrize("target", LIBRARY_NAMES)
def test_round_trip_opens_in_every_library(tmp_path, target):
    original = _saved()
    path = save(tmp_path / "run", original)
    assert path.name == FILE_NAME
    loaded = load(tmp_path / "run")
    assert (loaded.library, loaded.dataset) == ("nnx", "synthetic")
    np.testing.assert_array_equal(loaded.weights.weight, original.weights.weight)
    np.testing.assert_array_equal(loaded.x_scale, original.x_scale)
    library = get_library(target)
    model = library.from_canonical(loaded.weights)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(library.predict(model, x), original.weights.predict(x), atol=1e-6)


def test_save_overwrites_atomically(tmp_path):
    save(tmp_path, _saved("linen"))
    save(tmp_path, _saved("equinox"))
    assert load(tmp_path).library == "equinox"
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME]


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(SavedModelError, match="no saved model"):
        load(tmp_path / "missing")
    (tmp_path / FILE_NAME).write_bytes(b"not a safetensors file")
    with pytest.raises(SavedModelError, match="not a safetensors file"):
        load(tmp_path)
