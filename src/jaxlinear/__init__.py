"""jaxlinear: one linear model in flax.linen, flax.nnx, equinox and penzai.

>>> import jaxlinear
>>> dataset = jaxlinear.load_dataset("linnerud")
>>> config = jaxlinear.TrainConfig(epochs=300)
>>> result = jaxlinear.compare(dataset, config, ["nnx", "penzai"])
>>> abs(result.runs["nnx"].metrics["test_r2"] - result.exact["test_r2"]) < 1e-3
True
>>> penzai_model = jaxlinear.convert(result.runs["nnx"].trained_model, "nnx", "penzai")
"""

from jaxlinear._compare import Comparison as Comparison
from jaxlinear._compare import LibraryRun as LibraryRun
from jaxlinear._compare import compare as compare
from jaxlinear._compare import evaluate as evaluate
from jaxlinear._data import DataError as DataError
from jaxlinear._data import Dataset as Dataset
from jaxlinear._data import load_dataset as load_dataset
from jaxlinear._exact import least_squares as least_squares
from jaxlinear._registry import LIBRARIES as LIBRARIES
from jaxlinear._registry import LIBRARY_NAMES as LIBRARY_NAMES
from jaxlinear._registry import Library as Library
from jaxlinear._registry import convert as convert
from jaxlinear._registry import get_library as get_library
from jaxlinear._training import FitResult as FitResult
from jaxlinear._training import TrainConfig as TrainConfig
from jaxlinear._training import TrainingDiverged as TrainingDiverged
from jaxlinear._weights import LinearWeights as LinearWeights
from jaxlinear._weights import initial_weights as initial_weights

__version__ = "0.1.0"
