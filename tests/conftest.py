"""Strict JAX settings for the whole suite (as in equinox's own tests): implicit rank
promotion raises, so a broadcasting slip in any library module fails loudly."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session")
def diabetes():
    from jaxlinear import load_dataset

    return load_dataset("diabetes")


@pytest.fixture(scope="session")
def linnerud():
    from jaxlinear import load_dataset

    return load_dataset("linnerud")
