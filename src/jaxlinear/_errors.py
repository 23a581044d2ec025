"""The errors jaxlinear raises on purpose, each naming what was wrong and how to fix it.

This module imports nothing heavy, so the command line can catch them without importing jax.
The core speaks in its own terms (a `TrainConfig` field, a column, a file); the command line
maps config fields to its flags.
"""

from __future__ import annotations


class JaxlinearError(Exception):
    """Base class of every error a user can fix."""


class DataError(JaxlinearError, ValueError):
    """The input data cannot be used; the message says what is wrong and how to fix it."""


class ConfigError(JaxlinearError, ValueError):
    """A training setting cannot work.

    Attributes:
      field: the `TrainConfig` field (or other setting) at fault, e.g. `"learning_rate"`.
      problem: what is wrong with it, worded to follow the field's name.
    """

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


class TrainingFailed(JaxlinearError, RuntimeError):
    """Training ran but ended badly (non-finite loss, or worse than where it started)."""


class TrainingDiverged(TrainingFailed):
    """The loss stopped being a finite number."""


class SavedModelError(JaxlinearError, ValueError):
    """A saved model is missing, damaged, hand-edited or not a jaxlinear model."""


class WrongLibraryError(JaxlinearError, TypeError):
    """A model of one library was given to another library's function."""


class UsageError(JaxlinearError):
    """A command-line option the user can fix (the command line prints it as one line, exit 2)."""
