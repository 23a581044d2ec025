"""Strict JAX settings for the whole suite (as in equinox's own tests): implicit rank
promotion raises, so a broadcasting slip in any library module fails loudly."""

import os

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
# The command line keeps compiled programs in ~/.cache/jaxlinear; the tests (and the commands
# they start) run without that cache, so they never write outside their temporary folders.
os.environ["JAXLINEAR_CACHE_DIR"] = ""


@pytest.fixture(scope="session")
def diabetes():
    from jaxlinear import load_dataset

    return load_dataset("diabetes")


@pytest.fixture(scope="session")
def linnerud():
    from jaxlinear import load_dataset

    return load_dataset("linnerud")
