"""Independent random streams, all derived from the one user seed.

Each purpose (the train/test split, synthetic data, initial weights, the order of each epoch's
batches, the libraries' own keys) draws from its own child of `np.random.SeedSequence(seed)`,
so no two purposes ever see the same numbers: with a single `default_rng(seed)` per purpose,
synthetic data's true weights and the "random" starting weights came out identical up to
scale. The order of epoch `k` is its own stream too, so it can be computed without replaying
epochs `0..k-1` (resuming a run needs exactly that).

Imports only NumPy.
"""

from __future__ import annotations

import numpy as np

from jaxlinear._config import check_seed

# The spawn-key slot of each purpose; never reorder (it would change every seeded result).
PURPOSES = {
    "split": 0,
    "synthetic": 1,
    "initial_weights": 2,
    "batch_order": 3,
    "library_keys": 4,
    "stream_data": 5,
    "chunk_order": 6,
    "chunk_rows": 7,
}


def seed_sequence(seed: int, purpose: str, *index: int) -> np.random.SeedSequence:
    """The stream of `purpose` (one of `PURPOSES`), optionally indexed (e.g. by epoch)."""
    return np.random.SeedSequence(check_seed(seed), spawn_key=(PURPOSES[purpose], *index))


def generator(seed: int, purpose: str, *index: int) -> np.random.Generator:
    """A NumPy generator over the stream of `purpose`."""
    return np.random.default_rng(seed_sequence(seed, purpose, *index))


def integer_seed(seed: int, purpose: str, *index: int) -> int:
    """A 32-bit seed from the stream of `purpose`, for APIs that take an int (scikit-learn)."""
    return int(seed_sequence(seed, purpose, *index).generate_state(1)[0])


def jax_key(seed: int, purpose: str = "library_keys", *index: int):
    """A `jax.random.key` from the stream of `purpose` (imports jax on first use)."""
    import jax

    return jax.random.key(integer_seed(seed, purpose, *index))
