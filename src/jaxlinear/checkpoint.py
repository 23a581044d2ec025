"""Checkpoints: each library's own format, a library-neutral copy, and what they were made from.

A checkpoint is a folder of three parts:

- `native/`: the training state (parameters AND optimizer state) as the library itself saves
  it, written by the library module's `save_native` and read by its `restore_native`: orbax
  for linen (the `TrainState`), nnx (the `nnx.split` state of model and `nnx.Optimizer`) and
  penzai (the values of `pz.unbind_params`, keyed by label), `eqx.tree_serialise_leaves` of
  the `Training` module for equinox;
- `model.safetensors`: canonical `W: [in, out]`, `b: [out]` and the `Scaling`
  (`jaxlinear._saved`), which any library, or any program, can read;
- `metadata.json`: the format version, the library, the versions of jaxlinear, jax and the
  library, the data (names, sizes, a fingerprint), the scaling, the training settings, the
  metrics, the epoch and step reached, and the SHA-256 and size of every other file (and of
  itself, less that field).

`jaxlinear train --save DIR` keeps its checkpoints in a *run folder*, one subfolder per
checkpoint, `DIR/epoch-000040/`, like orbax's `CheckpointManager` keeps one per step; every
reader given `DIR` takes the newest.

Every checkpoint is written in full into a hidden temporary folder beside its place and
renamed into place only when complete, so a folder named `epoch-*` is always whole: a process
killed while writing leaves only a `.epoch-*.tmp-*` folder, which the next writer removes.
Reading checks everything before trusting anything: the format and its version, every file's
size and checksum, the shapes (the library's own restore refuses others), and that the native
weights equal the neutral ones. Each problem is one `SavedModelError` line naming the file.

>>> import tempfile, jax, numpy as np, jaxlinear
>>> data = jaxlinear.load_dataset("linnerud")
>>> config = jaxlinear.TrainConfig(epochs=50)
>>> nnx = jaxlinear.get_library("nnx")
>>> model = nnx.create(3, 3, key=jax.random.key(0))
>>> fit = nnx.fit(model, data.x_train, data.y_train, config)
>>> folder = tempfile.mkdtemp() + "/model"
>>> _ = jaxlinear.save_checkpoint(
...     folder, fit.state, config=config, scaling=data.scaling, n_train=len(data.x_train)
... )
>>> loaded = jaxlinear.load_checkpoint(folder, library="penzai")  # from nnx into penzai
>>> loaded.trained_in, loaded.library, loaded.step
('nnx', 'penzai', 50)
>>> loaded.predict(np.ones((2, 3))).shape                          # original units
(2, 3)
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from jaxlinear._errors import SavedModelError
from jaxlinear._registry import LIBRARY_NAMES, TITLES, get_library
from jaxlinear._scaling import Scaling
from jaxlinear._weights import LinearWeights

FORMAT = "jaxlinear-checkpoint"
FORMAT_VERSION = 1
METADATA = "metadata.json"
NATIVE = "native"
RUN_PREFIX = "epoch-"
_CHECKPOINT_NAME = re.compile(r"^epoch-(\d+)$")
_LEFTOVER_NAME = re.compile(r"^\.epoch-\d+\.(tmp|old)-[0-9a-f]+$")
_SELF_CHECKSUM = "metadata_sha256"
# The packages whose versions a checkpoint records, beside jaxlinear, jax and jaxlib.
PACKAGES = {
    "linen": ("flax", "optax", "orbax-checkpoint"),
    "nnx": ("flax", "optax", "orbax-checkpoint"),
    "equinox": ("equinox", "optax"),
    "penzai": ("penzai", "optax", "orbax-checkpoint"),
}


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read back and verified.

    Attributes:
      path: the checkpoint folder read (the newest one, when a run folder was given).
      trained_in: registry name of the library that wrote it (and its native files).
      library: the library it was loaded into.
      model: a model of `library` holding the saved weights.
      training: `trained_in`'s own training object as its native files restore it
        (linen `TrainState`; nnx `(model, nnx.Optimizer)`; equinox `Training`; penzai
        `StatefulTrainer`): the parameters with the optimizer state.
      state: the same as a `TrainingState` of `trained_in`, to resume from
        (`training.fit(..., start=state)`).
      weights: canonical weights on the standardised scale, float32.
      scaling: maps original units to that scale and back, with the column names.
      config: the training settings of the run.
      metadata: everything in `metadata.json`.
    """

    path: Path
    trained_in: str
    library: str
    model: Any
    training: Any
    state: Any
    weights: LinearWeights
    scaling: Scaling
    config: Any
    metadata: dict

    @property
    def step(self) -> int:
        """Optimizer steps taken when it was written."""
        return self.metadata["step"]

    @property
    def epoch(self) -> int:
        """Epochs done when it was written."""
        return self.metadata["epoch"]

    def predict(self, x) -> np.ndarray:
        """`x: [n, in_features]` in the data's original units -> `[n, out_features]` in the
        targets' original units (float64), through `library`'s model."""
        return get_library(self.library).predict(self.model, x, scaling=self.scaling)


def restore_target(directory, abstract: Any) -> Any:
    """orbax's restore target for `abstract` (a pytree of `jax.ShapeDtypeStruct`s, e.g. from
    `jax.eval_shape`), once the orbax checkpoint at `directory` is known to hold exactly its
    arrays.

    orbax checks shapes itself, but its refusal abandons reads already started, which print
    warnings after the error; comparing with the checkpoint's own metadata first refuses
    cleanly. The target places every array on this process's first device, so orbax need not guess
    placements from the files (which it warns about).

    Raises:
      ValueError: naming the first array stored with another path, shape or dtype.
    """
    import jax
    from orbax.checkpoint import v1 as ocp

    stored = _array_table(ocp.metadata(directory).metadata)
    expected = _array_table(abstract)
    if stored != expected:
        extra = sorted(set(stored.items()) - set(expected.items()))
        missing = sorted(set(expected.items()) - set(stored.items()))
        if extra:
            (path, (shape, dtype)), *_ = extra
            problem = f"it stores {path} as {dtype}{list(shape)}"
            if path in expected:
                shape, dtype = expected[path]
                problem += f" where this model has {dtype}{list(shape)}"
            else:
                problem += ", which this model does not have"
        else:
            (path, _), *_ = missing
            problem = f"it lacks {path}"
        raise ValueError(f"{problem} (the checkpoint is of another shape or library)")
    # This process's first device: in a multi-process run `jax.devices()[0]` is process 0's.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), abstract
    )


def _array_table(tree) -> dict[str, tuple[tuple[int, ...], str]]:
    """`{"a/b/0": (shape, dtype)}` for every array leaf of `tree`, keyed the way orbax's
    metadata and the pytree both spell their paths."""
    import jax

    def name(key) -> str:
        for attribute in ("key", "idx", "name"):
            if hasattr(key, attribute):
                return str(getattr(key, attribute))
        return str(key)

    return {
        "/".join(map(name, path)): (tuple(leaf.shape), str(leaf.dtype))
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def data_fingerprint(x: np.ndarray, y: np.ndarray, scaling: Scaling) -> str:
    """SHA-256 of the standardised training data as float32 (what the optimizer saw) and of
    the column names: a resumed run must train on exactly the data it started on."""
    digest = hashlib.sha256()
    for array in (x, y):
        array = np.ascontiguousarray(array, np.float32)
        digest.update(repr(array.shape).encode())
        digest.update(array.tobytes())
    digest.update(json.dumps([scaling.feature_names, scaling.target_names]).encode())
    return digest.hexdigest()


# Writing.


def save_checkpoint(
    folder: str | os.PathLike,
    state,
    *,
    config,
    scaling: Scaling,
    n_train: int,
    metrics: dict | None = None,
    dataset: dict | None = None,
    data_sha256: str | None = None,
    checkpoint_every: int | None = None,
    steps_per_epoch: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes one checkpoint folder at `folder`, atomically; returns its path.

    Args:
      state: the `TrainingState` to save (e.g. `FitResult.state`, or one handed to
        `on_checkpoint`), with its `static` part.
      config: the run's `TrainConfig`; with `n_train` it rebuilds the optimizer on loading.
      scaling: the data's `Scaling` (column names included).
      n_train: training examples (the learning-rate schedule's length depends on it).
      metrics, dataset: recorded as they are (JSON values; non-finite numbers become null).
      data_sha256: `data_fingerprint` of the training data, which `--resume` checks.
      checkpoint_every: recorded for resuming (the bitwise guarantee needs the same value).
      steps_per_epoch: optimizer steps in one epoch, when not `training.steps_per_epoch(
        n_train, config.batch_size)` (a streamed run cuts its epochs into batches per chunk,
        `stream.steps_per_epoch`); the epoch reached is `state.step` over it.
      overwrite: replace an existing checkpoint at `folder` (otherwise refused).

    Raises:
      SavedModelError: `folder` exists and `overwrite` is False, or it is not a checkpoint.
    """
    folder = Path(folder).absolute()
    if folder.exists() and not overwrite:
        raise SavedModelError(f"{folder} already exists; pass overwrite=True to replace it")
    if folder.exists() and not (folder / METADATA).is_file():
        raise SavedModelError(f"{folder} exists and is not a checkpoint; it is left alone")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staged = _stage(
        folder,
        state,
        scaling,
        _metadata(
            state,
            config=config,
            scaling=scaling,
            n_train=n_train,
            metrics=metrics,
            dataset=dataset,
            data_sha256=data_sha256,
            checkpoint_every=checkpoint_every,
            steps_per_epoch=steps_per_epoch,
        ),
    )
    _put_in_place(staged, folder)
    return folder


def _metadata(
    state,
    *,
    config,
    scaling,
    n_train,
    metrics=None,
    dataset=None,
    data_sha256=None,
    checkpoint_every=None,
    steps_per_epoch=None,
) -> dict:
    from jaxlinear import __version__, training

    steps = steps_per_epoch or training.steps_per_epoch(n_train, config.batch_size)
    if state.step % steps:
        raise ValueError(f"step {state.step} is not the end of an epoch of {steps} steps")
    versions = {"jaxlinear": __version__}
    for package in ("jax", "jaxlib", *PACKAGES[state.library]):
        versions[package] = _version(package)
    return _json_safe(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "library": state.library,
            "native": {"folder": NATIVE, "format": get_library(state.library).module.NATIVE_FORMAT},
            "versions": versions,
            "in_features": scaling.in_features,
            "out_features": scaling.out_features,
            "feature_names": list(scaling.feature_names),
            "target_names": list(scaling.target_names),
            "scaling": {name: value.tolist() for name, value in scaling.as_arrays().items()},
            "dataset": dataset,
            "data_sha256": data_sha256,
            "n_train": n_train,
            "settings": dataclasses.asdict(config),
            "checkpoint_every": checkpoint_every,
            "epoch": state.step // steps,
            "step": state.step,
            "steps_per_epoch": steps,
            "metrics": metrics,
        }
    )


def _stage(folder: Path, state, scaling: Scaling, metadata: dict) -> Path:
    """Writes the whole checkpoint into a new hidden folder beside `folder`; returns it."""
    from jaxlinear._saved import SavedModel, encode

    primary, together = _process_role()
    # Every process of a multi-process run names the same folder: orbax writes one
    # checkpoint from all of them (see `_process_role`).
    token = "0" * 8 if together else secrets.token_hex(4)
    temporary = folder.parent / f".{folder.name}.tmp-{token}"
    if primary:
        temporary.mkdir()
    try:
        module = get_library(state.library).module
        training = module.merge(state.static, state.arrays)
        if primary or (together and module.NATIVE_FORMAT.startswith("orbax")):
            module.save_native(temporary / NATIVE, training)
        if not primary:
            return temporary
        weights = module.to_canonical(module.model_of(training))
        dataset_name = (metadata.get("dataset") or {}).get("name", "")
        neutral = SavedModel(state.library, weights, scaling, dataset_name)
        (temporary / "model.safetensors").write_bytes(encode(neutral))
        metadata = {**metadata, "files": _file_table(temporary)}
        metadata[_SELF_CHECKSUM] = _self_checksum(metadata)
        (temporary / METADATA).write_text(json.dumps(metadata, indent=2, allow_nan=False) + "\n")
        _sync_tree(temporary)
    except BaseException:
        if primary:
            shutil.rmtree(temporary, ignore_errors=True)
        raise
    return temporary


def _process_role() -> tuple[bool, bool]:
    """`(primary, together)`: whether this process writes the checkpoint's files, and whether
    several processes take part (a multi-process run, `jax.distributed`).

    Process 0 alone writes jaxlinear's own files and renames folders. orbax, which linen, nnx
    and penzai save with, is collective in a multi-process run (orbax v1's `save` broadcasts
    from process 0 and ignores a `MultiprocessingOptions(active_processes={0})`), so every
    process calls it with the same folder, and orbax writes the replicated arrays once, from
    process 0. equinox's `tree_serialise_leaves` is a plain file write: process 0 alone.
    """
    import sys

    if "jax" not in sys.modules:
        return True, False
    import jax

    together = jax.process_count() > 1
    return jax.process_index() == 0, together


def _put_in_place(temporary: Path, folder: Path) -> None:
    """Renames the complete `temporary` folder to `folder`, replacing an old one if present."""
    old = None
    if folder.exists():
        old = folder.parent / f".{folder.name}.old-{secrets.token_hex(4)}"
        folder.rename(old)
    temporary.rename(folder)
    _sync_folder(folder.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class RunFolder:
    """Where `jaxlinear train --save DIR` keeps a run's checkpoints: `DIR/epoch-NNNNNN/`.

    Args:
      root: the run folder (created at the first write if missing; its parent must exist).
      keep: how many of the newest checkpoints to keep (`None`: all).
      replace: the checkpoints already in `root` belong to another run and go away when this
        run writes its first one (`--overwrite`); otherwise they are this run's (`--resume`).
    """

    def __init__(self, root: str | os.PathLike, *, keep: int | None = None, replace: bool = False):
        self.root = Path(root).absolute()
        self.keep = keep
        self.replace = replace
        self._cleaned = False
        self._made_root = False

    def checkpoints(self) -> list[tuple[int, Path]]:
        """`(epoch, folder)` of every checkpoint in the run folder, oldest first."""
        return _checkpoints_in(self.root)

    def stage(self, state, **metadata) -> Path:
        """Writes a checkpoint of `state` (see `save_checkpoint` for `metadata`) into a hidden
        folder in the run folder; `commit` puts it in place, `discard` removes it."""
        if not self._cleaned and _process_role()[0]:
            if not self.root.exists():
                self.root.mkdir()
                self._made_root = True
            self._remove_leftovers()
            self._cleaned = True
        from jaxlinear.training import steps_per_epoch

        steps = metadata.get("steps_per_epoch") or steps_per_epoch(
            metadata["n_train"], metadata["config"].batch_size
        )
        folder = self.root / f"{RUN_PREFIX}{state.step // steps:06d}"
        return _stage(folder, state, metadata["scaling"], _metadata(state, **metadata))

    def commit(self, temporary: Path) -> Path:
        """Puts a staged checkpoint in place, then keeps only the newest `keep` (in process 0
        of a multi-process run; the others only took part in `stage`)."""
        folder = self.root / temporary.name.split(".")[1]
        if not _process_role()[0]:
            return folder
        if self.replace:
            # Another run's checkpoints leave before this one arrives, so no reader can ever
            # take one of them for this run's newest.
            for _, old in self.checkpoints():
                old.rename(self.root / f".{old.name}.old-{secrets.token_hex(4)}")
            self.replace = False
        _put_in_place(temporary, folder)
        if self.keep is not None:
            for _, old in self.checkpoints()[: -self.keep]:
                gone = self.root / f".{old.name}.old-{secrets.token_hex(4)}"
                old.rename(gone)
        self._remove_leftovers()
        return folder

    def write(self, state, **metadata) -> Path:
        """`stage` and `commit`: one complete checkpoint in place."""
        return self.commit(self.stage(state, **metadata))

    def discard(self, temporary: Path | None = None) -> None:
        """Removes a staged checkpoint, and the run folder if this run made it and it is empty
        (after a failed run: only a checkpoint written before the failure stays)."""
        if not _process_role()[0]:
            return
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        self._remove_leftovers()
        if self._made_root and self.root.is_dir() and not any(self.root.iterdir()):
            self.root.rmdir()

    def _remove_leftovers(self) -> None:
        """Removes folders a stopped writer left half-made or half-deleted (only jaxlinear's
        own hidden names)."""
        if not self.root.is_dir():
            return
        for entry in self.root.iterdir():
            if _LEFTOVER_NAME.match(entry.name) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)


def run_folder_of(folder: Path) -> Path | None:
    """The run folder that checkpoint `folder` belongs to; `None` for a standalone one."""
    return folder.parent if _CHECKPOINT_NAME.match(folder.name) else None


def _checkpoints_in(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _CHECKPOINT_NAME.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


# Reading.


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint folder `path` names: itself, or the newest `epoch-*` in a run folder."""
    path = Path(path)
    if not path.exists():
        raise SavedModelError(f"no checkpoint at {path}: it does not exist")
    if not path.is_dir():
        raise SavedModelError(f"{path} is a file; name the folder written by --save")
    parts = (METADATA, NATIVE, "model.safetensors")
    if _CHECKPOINT_NAME.match(path.name) or any((path / part).exists() for part in parts):
        return path
    found = _checkpoints_in(path)
    if found:
        return found[-1][1]
    leftovers = [entry.name for entry in path.iterdir() if _LEFTOVER_NAME.match(entry.name)]
    if leftovers:
        raise SavedModelError(
            f"{path} holds no complete checkpoint, only {leftovers[0]}, which a stopped run "
            "left unfinished; train again"
        )
    raise SavedModelError(
        f"no checkpoint in {path}: expected {METADATA} or {RUN_PREFIX}* folders written by "
        "`jaxlinear train --save`"
    )


def read_metadata(folder: Path) -> dict:
    """`folder/metadata.json`, once its format, version, fields and checksums check out."""
    path = folder / METADATA
    if not path.is_file():
        raise SavedModelError(f"{path} is missing: {folder} is not a complete jaxlinear checkpoint")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SavedModelError(f"{path} is damaged: not valid JSON ({_one_line(error)})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise SavedModelError(f"{path} is not the metadata of a jaxlinear checkpoint")
    version = metadata.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise SavedModelError(f"{path} is damaged: format_version is {version!r}")
    if version > FORMAT_VERSION:
        raise SavedModelError(
            f"{path} has format version {version}, newer than the {FORMAT_VERSION} this "
            "jaxlinear reads; upgrade jaxlinear to load it"
        )
    if version < FORMAT_VERSION:
        raise SavedModelError(f"{path} has format version {version}, which is no longer read")
    if metadata.get(_SELF_CHECKSUM) != _self_checksum(metadata):
        raise SavedModelError(f"{path} was changed after it was written (checksum mismatch)")
    return metadata


def verify_files(folder: Path, metadata: dict) -> None:
    """Every file listed in the metadata is there with its size and SHA-256; no other is."""
    files = metadata["files"]
    listed = set(files)
    for name in sorted(_relative_files(folder)):
        if name != METADATA and name not in listed:
            raise SavedModelError(
                f"{folder / name} is not part of the checkpoint (not in its {METADATA})"
            )
    for name, expected in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            raise SavedModelError(f"{path} is missing: the checkpoint is incomplete")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise SavedModelError(
                f"{path} has {size} bytes, {expected['bytes']} were written: it is "
                + ("truncated" if size < expected["bytes"] else "damaged")
            )
        if _sha256(path) != expected["sha256"]:
            raise SavedModelError(f"{path} is damaged: its SHA-256 does not match {METADATA}")


def load_checkpoint(path: str | os.PathLike, library: str | None = None) -> Checkpoint:
    """Reads and verifies a checkpoint, and loads it into `library` (default: the one that
    trained it).

    `path` is a checkpoint folder or a run folder (its newest checkpoint is read). The native
    files are restored by the library that wrote them, with the optimizer state; any other
    `library` gets a model holding the same canonical weights, so its predictions are the
    same up to float32 rounding.

    Raises:
      SavedModelError: one line naming the file and what is wrong with it.
      ValueError: `library` is not a registered library.
    """
    if library is not None:
        get_library(library)  # an unknown name fails before any reading
    folder = find_checkpoint(path)
    if _neutral_only(folder):
        return _load_neutral(folder, library)
    metadata = read_metadata(folder)
    try:
        return _load(folder, metadata, library)
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, SavedModelError):
            raise
        problem = f"missing {error}" if isinstance(error, KeyError) else _one_line(error)
        raise SavedModelError(f"{folder / METADATA} is damaged or was edited: {problem}") from None


def _load(folder: Path, metadata: dict, library: str | None) -> Checkpoint:
    from jaxlinear._config import TrainConfig
    from jaxlinear._errors import ConfigError
    from jaxlinear._saved import load
    from jaxlinear.training import TrainingState, make_optimizer

    verify_files(folder, metadata)
    trained_in = metadata["library"]
    if trained_in not in LIBRARY_NAMES:
        raise ValueError(f"unknown library {trained_in!r}")
    neutral = load(folder)
    if neutral.library != trained_in:
        raise ValueError(f"model.safetensors says {neutral.library}, metadata {trained_in}")
    in_features, out_features = neutral.weights.in_features, neutral.weights.out_features
    if (metadata["in_features"], metadata["out_features"]) != (in_features, out_features):
        raise ValueError(
            f"it says {metadata['in_features']} -> {metadata['out_features']} features but "
            f"model.safetensors holds W [{in_features}, {out_features}]"
        )
    try:
        config = TrainConfig(**metadata["settings"]).validate()
    except ConfigError as error:
        raise ValueError(f"settings: {error}") from None
    n_train = metadata["n_train"]
    if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 1:
        raise ValueError(f"n_train must be a positive integer, got {n_train!r}")
    module = get_library(trained_in).module
    native = (folder / NATIVE).absolute()
    problem = None
    with warnings.catch_warnings():
        # When orbax refuses files it abandons the reads it had started; each of their
        # coroutines would print "never awaited" on stderr when collected, after the one line
        # this raises. They are collected here, where that warning is off.
        warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
        try:
            training = module.restore_native(
                native,
                in_features=in_features,
                out_features=out_features,
                # The schedule's length as the run had it (a streamed run's epochs have
                # their own step count); the optimizer state's structure does not depend on it.
                optimizer=make_optimizer(
                    config, n_train, total_steps=config.epochs * metadata["steps_per_epoch"]
                ),
            )
        except Exception as error:  # whatever the library raises, the cause is in these files
            problem = _one_line(error)
            _drop_frames(error)
        if problem is not None:
            gc.collect()
    if problem is not None:
        raise SavedModelError(f"{native} cannot be restored by {TITLES[trained_in]}: {problem}")
    native_weights = module.to_canonical(module.model_of(training))
    if not (
        np.array_equal(native_weights.weight, neutral.weights.weight)
        and np.array_equal(native_weights.bias, neutral.weights.bias)
    ):
        raise SavedModelError(
            f"{folder}: the weights in {NATIVE}/ and in model.safetensors differ; the "
            "checkpoint was changed after it was written"
        )
    static, arrays = module.split(training)
    state = TrainingState(trained_in, static, arrays, metadata["step"])
    library = library or trained_in
    if library == trained_in:
        model = module.model_of(training)
    else:
        model = get_library(library).from_canonical(neutral.weights)
    return Checkpoint(
        path=folder,
        trained_in=trained_in,
        library=library,
        model=model,
        training=training,
        state=state,
        weights=neutral.weights,
        scaling=neutral.scaling,
        config=config,
        metadata=metadata,
    )


def _neutral_only(folder: Path) -> bool:
    """A folder with `model.safetensors` and no checkpoint around it, as `train --save` wrote
    before checkpoints existed."""
    return (folder / "model.safetensors").exists() and not any(
        (folder / name).exists() for name in (METADATA, NATIVE)
    )


def _load_neutral(folder: Path, library: str | None) -> Checkpoint:
    """The canonical weights of a `model.safetensors` alone: no native state to restore."""
    from jaxlinear._saved import load

    neutral = load(folder)
    library = library or neutral.library
    return Checkpoint(
        path=folder,
        trained_in=neutral.library,
        library=library,
        model=get_library(library).from_canonical(neutral.weights),
        training=None,
        state=None,
        weights=neutral.weights,
        scaling=neutral.scaling,
        config=None,
        metadata={},
    )


def prediction_csv(checkpoint: Checkpoint, x: np.ndarray, *, source: str = "the data") -> str:
    """The predictions on `x: [n, in_features]` (original units) as CSV text: a header of the
    target names, then one row per row of `x`, each value the shortest text that reads back
    as the same float64.

    Raises `DataError` (naming `source` and the row) where a row is so far outside the training
    data that the standardised model, which computes in float32, cannot represent it.
    """
    import csv
    import io

    from jaxlinear._errors import DataError

    standardised = checkpoint.scaling.features(x)
    limit = float(np.finfo(np.float32).max)
    with np.errstate(over="ignore", invalid="ignore"):
        too_far = ~(np.abs(standardised) < limit)
    if too_far.any():
        row, column = np.argwhere(too_far)[0]
        raise DataError(
            f"{source}: row {row + 1} has {x[row, column]:g} in feature column "
            f"{checkpoint.scaling.feature_names[column]!r}, too far from the training data for "
            "the model's float32 arithmetic; rescale it or drop the row"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        predictions = checkpoint.predict(x)
    bad = ~np.isfinite(predictions).all(axis=1)
    if bad.any():
        raise DataError(
            f"{source}: the prediction for row {int(np.argmax(bad)) + 1} overflows float32; "
            "its feature values are too far from the training data"
        )
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(checkpoint.scaling.target_names)
    writer.writerows([[repr(float(value)) for value in row] for row in predictions])
    return text.getvalue()


def check_resumable(
    checkpoint: Checkpoint,
    *,
    library: str,
    config,
    data_sha256: str,
    checkpoint_every: int | None,
) -> None:
    """Raises `ConfigError` naming the first setting in which this run differs from the one
    `checkpoint` belongs to: a resumed run must repeat it exactly to end where it would have."""
    from jaxlinear._errors import ConfigError

    where = f"the run in {run_folder_of(checkpoint.path) or checkpoint.path}"
    if checkpoint.state is None:
        raise ConfigError("start", f"{checkpoint.path} holds no training state to resume from")
    if library != checkpoint.trained_in:
        raise ConfigError("library", f"is {library}, but {where} trains {checkpoint.trained_in}")
    saved, asked = dataclasses.asdict(checkpoint.config), dataclasses.asdict(config)
    for field, value in asked.items():
        if saved[field] != value:
            raise ConfigError(
                field,
                f"is {_shown(value)}, but {where} was started with {_shown(saved[field])}; "
                "resume it with the same settings",
            )
    if checkpoint.metadata.get("checkpoint_every") != checkpoint_every:
        raise ConfigError(
            "checkpoint_every",
            f"is {_shown(checkpoint_every)}, but {where} was started with "
            f"{_shown(checkpoint.metadata.get('checkpoint_every'))}; resume it with the same "
            "settings",
        )
    if checkpoint.metadata.get("data_sha256") != data_sha256:
        raise ConfigError(
            "data", f"differs from the data {where} was trained on; resume it on the same data"
        )
    if checkpoint.epoch >= config.epochs:
        raise ConfigError(
            "start",
            f"{checkpoint.path} is the end of the run (epoch {checkpoint.epoch} of "
            f"{config.epochs}): there is nothing left to resume",
        )


def _drop_frames(error: BaseException) -> None:
    """Clears the local variables of every frame in `error`'s tracebacks (and those of the
    errors it chains), so what they held is freed now rather than whenever the exception is."""
    import traceback

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


def _shown(value) -> str:
    return "not set" if value is None else repr(value)


# Files and checksums.


def _relative_files(folder: Path) -> list[str]:
    return [
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() or path.is_symlink()
    ]


def _file_table(folder: Path) -> dict[str, dict]:
    return {
        name: {"bytes": (folder / name).stat().st_size, "sha256": _sha256(folder / name)}
        for name in sorted(_relative_files(folder))
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _self_checksum(metadata: dict) -> str:
    rest = {key: value for key, value in metadata.items() if key != _SELF_CHECKSUM}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def _sync_tree(folder: Path) -> None:
    """Flushes every file and folder under `folder` to disk, so the rename that follows
    never publishes a checkpoint whose contents a power cut could still lose."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as file:
                os.fsync(file.fileno())
        elif path.is_dir():
            _sync_folder(path)
    _sync_folder(folder)


def _sync_folder(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _json_safe(value):
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def _one_line(error: BaseException) -> str:
    return " ".join((str(error) or type(error).__name__).split())
