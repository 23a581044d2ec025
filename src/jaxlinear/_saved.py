"""A library-neutral file for a trained linear model: canonical `W`, `b`, the library that
trained it, and the data scalers, in safetensors format (no pickle, readable anywhere)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jaxlinear._io import write_bytes_atomic
from jaxlinear._weights import LinearWeights

FILE_NAME = "model.safetensors"
FORMAT = "jaxlinear-linear-v1"


class SavedModelError(ValueError):
    """The saved-model folder or file is missing or is not a jaxlinear model."""


@dataclasses.dataclass(frozen=True)
class SavedModel:
    """What `save` writes.

    Attributes:
      library: registry name of the library that trained the model.
      weights: canonical weights on the standardised scale the model was trained on.
      x_mean, x_scale: `[in_features]` feature scaler; `y_mean`, `y_scale`: `[out_features]`.
      dataset: the data set's name.
    """

    library: str
    weights: LinearWeights
    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: np.ndarray
    y_scale: np.ndarray
    dataset: str


def save(folder: str | Path, model: SavedModel) -> Path:
    """Writes `folder/model.safetensors` atomically (temp file, then rename); returns its path."""
    from safetensors.numpy import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        "W": np.asarray(model.weights.weight, np.float32),
        "b": np.asarray(model.weights.bias, np.float32),
        "x_mean": np.asarray(model.x_mean, np.float64),
        "x_scale": np.asarray(model.x_scale, np.float64),
        "y_mean": np.asarray(model.y_mean, np.float64),
        "y_scale": np.asarray(model.y_scale, np.float64),
    }
    data = save(
        tensors, metadata={"format": FORMAT, "library": model.library, "dataset": model.dataset}
    )
    path = folder / FILE_NAME
    write_bytes_atomic(path, data)
    return path


def load(folder: str | Path) -> SavedModel:
    """Reads what `save` wrote; raises `SavedModelError` naming what is wrong."""
    from safetensors import SafetensorError, safe_open

    path = Path(folder) / FILE_NAME if Path(folder).is_dir() else Path(folder)
    if not path.is_file():
        raise SavedModelError(f"no saved model at {folder}: expected {Path(folder) / FILE_NAME}")
    try:
        with safe_open(str(path), framework="numpy") as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise SavedModelError(f"{path} is not a safetensors file ({error})") from None
    if metadata.get("format") != FORMAT or not {"W", "b"} <= tensors.keys():
        raise SavedModelError(f"{path} was not written by jaxlinear (format {FORMAT})")
    weights = LinearWeights(tensors["W"], tensors["b"])
    weights.check_shapes()
    return SavedModel(
        library=metadata["library"],
        weights=weights,
        x_mean=tensors["x_mean"],
        x_scale=tensors["x_scale"],
        y_mean=tensors["y_mean"],
        y_scale=tensors["y_scale"],
        dataset=metadata.get("dataset", ""),
    )
