"""Checkpoints: each library's native files, loading into any library, and refusing anything
damaged, in one line naming the file."""

import dataclasses
import hashlib
import json
import shutil

import jax
import numpy as np
import pytest

from jaxlinear import (
    LIBRARY_NAMES,
    SavedModelError,
    TrainConfig,
    get_library,
    initial_weights,
    load_checkpoint,
    save_checkpoint,
)
from jaxlinear.checkpoint import METADATA, RunFolder, find_checkpoint

CONFIG = TrainConfig(epochs=6, batch_size=4)


def _fit(name, data, in_features=3):
    library = get_library(name)
    model = library.from_canonical(initial_weights(in_features, 3, seed=0))
    return library.fit(model, data.x_train[:, :in_features], data.y_train, CONFIG)


@pytest.fixture(scope="module")
def saved(linnerud, tmp_path_factory):
    """One trained model per library, with its checkpoint folder."""
    root = tmp_path_factory.mktemp("checkpoints")
    runs = {}
    for name in LIBRARY_NAMES:
        fit = _fit(name, linnerud)
        folder = save_checkpoint(
            root / name, fit.state, config=CONFIG, scaling=linnerud.scaling, n_train=16
        )
        runs[name] = (fit, folder)
    return runs


@pytest.mark.parametrize("target", LIBRARY_NAMES)
@pytest.mark.parametrize("source", LIBRARY_NAMES)
def test_every_checkpoint_opens_in_every_library(linnerud, saved, source, target):
    fit, folder = saved[source]
    checkpoint = load_checkpoint(folder, library=target)
    assert (checkpoint.trained_in, checkpoint.library) == (source, target)
    trained = get_library(source).to_canonical(fit.model)
    np.testing.assert_array_equal(checkpoint.weights.weight, trained.weight)
    np.testing.assert_array_equal(checkpoint.weights.bias, trained.bias)
    expected = np.asarray(get_library(source).predict(fit.model, linnerud.x_test))
    found = np.asarray(get_library(target).predict(checkpoint.model, linnerud.x_test))
    # The same float32 weights; libraries may order the products differently (equinox
    # computes `W x` per example), a few roundings of order-one values: 1e-6.
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-6)
    # In original units, as `predict` gives them.
    x = linnerud.x_test * linnerud.scaling.x_scale + linnerud.scaling.x_mean
    np.testing.assert_allclose(
        checkpoint.predict(x), linnerud.scaling.targets_to_original(expected), rtol=1e-5
    )


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_the_native_files_restore_the_optimizer_state_bitwise(saved, name):
    fit, folder = saved[name]
    checkpoint = load_checkpoint(folder)
    saved_leaves = jax.tree.leaves(fit.state.arrays)
    restored = jax.tree.leaves(checkpoint.state.arrays)
    assert len(restored) == len(saved_leaves) > 2  # parameters, adam's moments and counts
    for before, after in zip(saved_leaves, restored, strict=True):
        assert np.shape(before) == np.shape(after)
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after))
    assert checkpoint.step == 6 * 4 and checkpoint.epoch == 6
    assert type(checkpoint.training) is type(fit.training)


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_metadata_records_what_made_the_checkpoint(saved, linnerud, name):
    _, folder = saved[name]
    metadata = json.loads((folder / METADATA).read_text())
    assert metadata["library"] == name and metadata["format_version"] == 1
    package = {"linen": "flax", "nnx": "flax"}.get(name, name)
    assert {"jaxlinear", "jax", package} <= set(metadata["versions"])
    assert metadata["feature_names"] == list(linnerud.feature_names)
    assert metadata["settings"]["batch_size"] == 4 and metadata["step"] == 24
    assert "model.safetensors" in metadata["files"]
    assert any(name.startswith("native/") for name in metadata["files"])
    for relative, entry in metadata["files"].items():
        data = (folder / relative).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _copy(saved, name, tmp_path):
    return shutil.copytree(saved[name][1], tmp_path / name)


def _reseal(folder):
    """Recomputes the checksums, as someone editing a checkpoint on purpose would."""
    from jaxlinear.checkpoint import _file_table, _self_checksum

    metadata = json.loads((folder / METADATA).read_text())
    (folder / METADATA).unlink()
    metadata["files"] = _file_table(folder)
    metadata["metadata_sha256"] = _self_checksum(metadata)
    (folder / METADATA).write_text(json.dumps(metadata))


def _refused(folder, message, *, naming=None):
    with pytest.raises(SavedModelError, match=message) as caught:
        load_checkpoint(folder)
    text = str(caught.value)
    assert "\n" not in text
    assert str(naming or folder) in text
    return text


def _first_native_file(folder):
    return sorted(p for p in (folder / "native").rglob("*") if p.is_file() and p.stat().st_size)[0]


def test_a_changed_byte_is_refused(saved, tmp_path):
    folder = _copy(saved, "nnx", tmp_path)
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    _refused(folder, "SHA-256 does not match", naming=path)


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_a_truncated_native_file_is_refused(saved, tmp_path, name):
    folder = _copy(saved, name, tmp_path)
    path = _first_native_file(folder)
    path.write_bytes(path.read_bytes()[:-1])
    _refused(folder, "truncated", naming=path)


def test_a_missing_or_unlisted_file_is_refused(saved, tmp_path):
    folder = _copy(saved, "penzai", tmp_path)
    (folder / "native" / "extra").write_text("x")
    _refused(folder, "not part of the checkpoint", naming=folder / "native" / "extra")
    (folder / "native" / "extra").unlink()
    path = _first_native_file(folder)
    path.unlink()
    _refused(folder, "is missing", naming=path)
    (folder / METADATA).unlink()
    _refused(folder, "metadata.json is missing")


def test_edited_or_newer_metadata_is_refused(saved, tmp_path):
    folder = _copy(saved, "linen", tmp_path)
    metadata = json.loads((folder / METADATA).read_text())
    (folder / METADATA).write_text(json.dumps({**metadata, "step": 1}))
    _refused(folder, "changed after it was written", naming=folder / METADATA)
    from jaxlinear.checkpoint import _self_checksum

    newer = {**metadata, "format_version": 2}
    newer["metadata_sha256"] = _self_checksum(newer)
    (folder / METADATA).write_text(json.dumps(newer))
    _refused(folder, "format version 2, newer than the 1", naming=folder / METADATA)
    (folder / METADATA).write_text("{not json")
    _refused(folder, "not valid JSON", naming=folder / METADATA)


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_native_files_of_the_wrong_shape_are_refused(saved, linnerud, tmp_path, name):
    # Native files of a 2-feature model under metadata for 3 features, checksums resealed:
    # the library's own restore must refuse, and the refusal must be one line.
    folder = _copy(saved, name, tmp_path)
    other = save_checkpoint(
        tmp_path / "other",
        _fit(name, linnerud, in_features=2).state,
        config=CONFIG,
        scaling=_two_feature_scaling(linnerud),
        n_train=16,
    )
    shutil.rmtree(folder / "native")
    shutil.copytree(other / "native", folder / "native")
    _reseal(folder)
    _refused(folder, "cannot be restored by", naming=folder / "native")


def _two_feature_scaling(data):
    from jaxlinear import Scaling

    scaling = data.scaling
    return Scaling(
        scaling.x_mean[:2],
        scaling.x_scale[:2],
        scaling.y_mean,
        scaling.y_scale,
        scaling.feature_names[:2],
        scaling.target_names,
    )


def test_native_and_neutral_weights_must_agree(saved, tmp_path):
    from jaxlinear._saved import load, save

    folder = _copy(saved, "equinox", tmp_path)
    neutral = load(folder)
    edited = neutral.weights._replace(bias=neutral.weights.bias + 1)
    save(folder, dataclasses.replace(neutral, weights=edited))
    _reseal(folder)
    _refused(folder, "native/ and in model.safetensors differ")


def test_a_run_folder_opens_at_its_newest_checkpoint(linnerud, tmp_path):
    fit = _fit("nnx", linnerud)
    run = RunFolder(tmp_path / "run", keep=2)
    record = dict(config=CONFIG, scaling=linnerud.scaling, n_train=16)
    for step in (4, 8, 12):  # epochs 1, 2, 3
        run.write(dataclasses.replace(fit.state, step=step), **record)
    assert [epoch for epoch, _ in run.checkpoints()] == [2, 3]  # --keep 2
    assert find_checkpoint(tmp_path / "run").name == "epoch-000003"
    assert load_checkpoint(tmp_path / "run").epoch == 3
    # A stopped writer's half-made folder is never read, and the next writer removes it.
    (tmp_path / "run" / ".epoch-000004.tmp-0123abcd").mkdir()
    assert load_checkpoint(tmp_path / "run").epoch == 3
    run.write(dataclasses.replace(fit.state, step=16), **record)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "epoch-000003",
        "epoch-000004",
    ]


def test_a_run_folder_with_only_a_half_written_checkpoint_is_refused(tmp_path):
    (tmp_path / "run" / ".epoch-000002.tmp-0123abcd").mkdir(parents=True)
    with pytest.raises(SavedModelError, match=r"no complete checkpoint.*left unfinished"):
        load_checkpoint(tmp_path / "run")
    with pytest.raises(SavedModelError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")


@pytest.mark.parametrize("name", LIBRARY_NAMES)
def test_a_failed_write_leaves_nothing(linnerud, tmp_path, monkeypatch, name):
    fit = _fit(name, linnerud)
    module = get_library(name).module

    def full_disk(directory, training):
        directory.mkdir()
        (directory / "part").write_bytes(b"half")
        raise OSError("No space left on device")

    monkeypatch.setattr(module, "save_native", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(
            tmp_path / "model", fit.state, config=CONFIG, scaling=linnerud.scaling, n_train=16
        )
    assert list(tmp_path.iterdir()) == []


def test_replacing_a_checkpoint_needs_overwrite(linnerud, saved, tmp_path):
    fit, _ = saved["linen"]
    folder = save_checkpoint(
        tmp_path / "m", fit.state, config=CONFIG, scaling=linnerud.scaling, n_train=16
    )
    with pytest.raises(SavedModelError, match="already exists; pass overwrite=True"):
        save_checkpoint(folder, fit.state, config=CONFIG, scaling=linnerud.scaling, n_train=16)
    other, _ = saved["penzai"]
    save_checkpoint(
        folder, other.state, config=CONFIG, scaling=linnerud.scaling, n_train=16, overwrite=True
    )
    assert load_checkpoint(folder).trained_in == "penzai"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
