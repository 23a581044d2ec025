"""A library-neutral file for a trained linear model: canonical `W`, `b`, the library that
trained it, and its `Scaling`, in safetensors format (no pickle, readable anywhere)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from jaxlinear._errors import SavedModelError
from jaxlinear._io import write_bytes_atomic
from jaxlinear._registry import LIBRARY_NAMES
from jaxlinear._scaling import Scaling
from jaxlinear._weights import LinearWeights

FILE_NAME = "model.safetensors"
FORMAT = "jaxlinear-linear-v2"


@dataclasses.dataclass(frozen=True)
class SavedModel:
    """What `save` writes.

    Attributes:
      library: registry name of the library that trained the model.
      weights: canonical weights on the standardised scale the model was trained on.
      scaling: maps the original units to that scale and back, with the column names.
      dataset: the data set's name.
    """

    library: str
    weights: LinearWeights
    scaling: Scaling
    dataset: str


def encode(model: SavedModel) -> bytes:
    """The safetensors bytes of `model`."""
    from safetensors.numpy import save

    tensors = {
        "W": np.asarray(model.weights.weight, np.float32),
        "b": np.asarray(model.weights.bias, np.float32),
        **model.scaling.as_arrays(),
    }
    # safetensors writes an array's memory as it lies, ignoring strides: a transposed view
    # (equinox's `weight.T`) would come back scrambled. Row-major copies are what it expects.
    tensors = {name: np.ascontiguousarray(value) for name, value in tensors.items()}
    metadata = {
        "format": FORMAT,
        "library": model.library,
        "dataset": model.dataset,
        "feature_names": json.dumps(list(model.scaling.feature_names)),
        "target_names": json.dumps(list(model.scaling.target_names)),
    }
    return save(tensors, metadata=metadata)


def save(folder: str | Path, model: SavedModel) -> Path:
    """Writes `folder/model.safetensors` atomically (temp file, then rename); returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE_NAME
    write_bytes_atomic(path, encode(model))
    return path


def load(folder: str | Path) -> SavedModel:
    """Reads what `save` wrote; raises `SavedModelError` naming the file and what is wrong."""
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    path = folder / FILE_NAME if folder.is_dir() else folder
    if not path.is_file():
        raise SavedModelError(f"no saved model at {folder}: expected {folder / FILE_NAME}")
    try:
        with safe_open(str(path), framework="numpy") as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise SavedModelError(f"{path} is damaged or not a safetensors file ({error})") from None
    found = metadata.get("format")
    if found != FORMAT:
        raise SavedModelError(
            f"{path} has format {found!r}, this jaxlinear reads {FORMAT!r}"
            + (" (saved by another version: train it again)" if found else "")
        )
    try:
        return _decode(metadata, tensors)
    except (KeyError, ValueError, TypeError) as error:
        problem = f"missing {error}" if isinstance(error, KeyError) else str(error)
        raise SavedModelError(f"{path} is damaged or was edited: {problem}") from None


def _decode(metadata: dict[str, str], tensors: dict[str, np.ndarray]) -> SavedModel:
    library = metadata["library"]
    if library not in LIBRARY_NAMES:
        raise ValueError(f"unknown library {library!r}")
    names = {}
    for key in ("feature_names", "target_names"):
        names[key] = json.loads(metadata[key])
        if not (isinstance(names[key], list) and all(isinstance(n, str) for n in names[key])):
            raise ValueError(f"{key} must be a list of strings")
    weights = LinearWeights(tensors["W"], tensors["b"])
    weights.check_shapes()
    if not (np.isfinite(weights.weight).all() and np.isfinite(weights.bias).all()):
        raise ValueError("W and b must be finite")
    scaling = Scaling(
        tensors["x_mean"], tensors["x_scale"], tensors["y_mean"], tensors["y_scale"], **names
    )
    if (scaling.in_features, scaling.out_features) != np.shape(weights.weight):
        raise ValueError(
            f"W has shape {np.shape(weights.weight)} but the scaling is for "
            f"{scaling.in_features} features and {scaling.out_features} targets"
        )
    return SavedModel(library, weights, scaling, metadata.get("dataset", ""))
