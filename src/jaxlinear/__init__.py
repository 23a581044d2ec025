"""jaxlinear: one linear model in flax.linen, flax.nnx, equinox and penzai.

>>> import jaxlinear
>>> dataset = jaxlinear.load_dataset("linnerud")
>>> config = jaxlinear.TrainConfig(epochs=300)
>>> result = jaxlinear.compare(dataset, config, ["nnx", "penzai"])
>>> abs(result.runs["nnx"].metrics["test_r2"] - result.exact["test_r2"]) < 1e-3
True
>>> penzai_model = jaxlinear.convert(result.runs["nnx"].trained_model, "nnx", "penzai")
>>> jaxlinear.get_library("penzai").predict(penzai_model, dataset.x_test[:2]).shape
(2, 3)

Names are imported on first use (PEP 562), so `import jaxlinear` does not import jax or any
of the four libraries: the command line starts in a fraction of a second.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "Checkpoint": "jaxlinear.checkpoint",
    "load_checkpoint": "jaxlinear.checkpoint",
    "save_checkpoint": "jaxlinear.checkpoint",
    "Comparison": "jaxlinear._compare",
    "LibraryRun": "jaxlinear._compare",
    "compare": "jaxlinear._compare",
    "evaluate": "jaxlinear._compare",
    "ConfigError": "jaxlinear._errors",
    "DataError": "jaxlinear._errors",
    "JaxlinearError": "jaxlinear._errors",
    "SavedModelError": "jaxlinear._errors",
    "TrainingDiverged": "jaxlinear._errors",
    "TrainingFailed": "jaxlinear._errors",
    "WrongLibraryError": "jaxlinear._errors",
    "LIBRARY_NAMES": "jaxlinear._registry",
    "Library": "jaxlinear._registry",
    "convert": "jaxlinear._registry",
    "get_library": "jaxlinear._registry",
    "Scaling": "jaxlinear._scaling",
    "LinearWeights": "jaxlinear._weights",
    "initial_weights": "jaxlinear._weights",
    "Dataset": "jaxlinear.data",
    "load_dataset": "jaxlinear.data",
    "least_squares": "jaxlinear.exact",
    "FitResult": "jaxlinear.training",
    "TrainConfig": "jaxlinear._config",
    "TrainingState": "jaxlinear.training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'jaxlinear' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # for type checkers and editors; never run
    from jaxlinear._compare import Comparison as Comparison
    from jaxlinear._compare import LibraryRun as LibraryRun
    from jaxlinear._compare import compare as compare
    from jaxlinear._compare import evaluate as evaluate
    from jaxlinear._config import TrainConfig as TrainConfig
    from jaxlinear._errors import ConfigError as ConfigError
    from jaxlinear._errors import DataError as DataError
    from jaxlinear._errors import JaxlinearError as JaxlinearError
    from jaxlinear._errors import SavedModelError as SavedModelError
    from jaxlinear._errors import TrainingDiverged as TrainingDiverged
    from jaxlinear._errors import TrainingFailed as TrainingFailed
    from jaxlinear._errors import WrongLibraryError as WrongLibraryError
    from jaxlinear._registry import LIBRARY_NAMES as LIBRARY_NAMES
    from jaxlinear._registry import Library as Library
    from jaxlinear._registry import convert as convert
    from jaxlinear._registry import get_library as get_library
    from jaxlinear._scaling import Scaling as Scaling
    from jaxlinear._weights import LinearWeights as LinearWeights
    from jaxlinear._weights import initial_weights as initial_weights
    from jaxlinear.checkpoint import Checkpoint as Checkpoint
    from jaxlinear.checkpoint import load_checkpoint as load_checkpoint
    from jaxlinear.checkpoint import save_checkpoint as save_checkpoint
    from jaxlinear.data import Dataset as Dataset
    from jaxlinear.data import load_dataset as load_dataset
    from jaxlinear.exact import least_squares as least_squares
    from jaxlinear.training import FitResult as FitResult
    from jaxlinear.training import TrainingState as TrainingState
