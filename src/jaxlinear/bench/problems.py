"""The benchmark's data, and its reference: training as a JAX user would write it by hand.

The raw reference is a `jax.jit` step over a dict of arrays with optax, the same loss as
every library (`l2_objective`), and the same step in one `jax.lax.scan`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlinear._weights import LinearWeights
from jaxlinear.training import epoch_order, l2_objective


def make_problem(n_samples: int, in_features: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`x: [n, in]` standard normal and `y = x w + 0.1 noise: [n, 1]`, float32.

    `x` is generated in place, in float32, into a 64-byte-aligned buffer: no float64
    intermediate inflates the peak memory, and `jax.device_put` can share the buffer on CPU
    instead of copying it.
    """
    rng = np.random.default_rng(seed)
    x = _aligned_empty((n_samples, in_features), np.float32)
    rng.standard_normal(out=x, dtype=np.float32)
    true_weight = rng.standard_normal((in_features, 1), dtype=np.float32)
    y = x @ true_weight
    y += 0.1 * rng.standard_normal(y.shape, dtype=np.float32)
    return x, y


def _aligned_empty(shape: tuple[int, ...], dtype, alignment: int = 64) -> np.ndarray:
    """An uninitialised array whose data starts on an `alignment`-byte boundary."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buffer = np.empty(nbytes + alignment, np.uint8)
    offset = -buffer.ctypes.data % alignment
    return buffer[offset : offset + nbytes].view(dtype).reshape(shape)


def raw_params(weights: LinearWeights) -> dict[str, jax.Array]:
    """The raw reference's parameters: `{"weight": [in, out], "bias": [out]}`."""
    return {"weight": jnp.asarray(weights.weight), "bias": jnp.asarray(weights.bias)}


def shuffled_batches(n_examples: int, batch_size: int, seed: int) -> jax.Array:
    """Row indices of the first epoch that `fit` runs: `[steps, batch_size]` int32.

    The raw epoch gathers the same rows as the libraries' first epoch, so the comparison
    is between the same memory accesses.
    """
    return jnp.asarray(epoch_order(n_examples, batch_size, seed, 0))


def raw_functions(optimizer: optax.GradientTransformation):
    """`(step, fused, contiguous)`: the raw reference, jitted.

    - `step(params, opt_state, x, y) -> (params, opt_state, loss)`: one full step.
    - `fused(params, opt_state, x, y, indices, length)`: `length` steps in one scan, on all
      of `x` if `indices` is None, else on rows `indices[i]` (`[length, batch]`).
    - `contiguous(params, opt_state, x, y, starts, batch_size)`: an epoch of CONTIGUOUS
      batches starting at rows `starts: [steps]`, i.e. what an epoch costs when X is read in
      order.
    """

    def step(params, opt_state, x, y):
        def loss_fn(params):
            prediction = x @ params["weight"] + params["bias"][None, :]
            return l2_objective(prediction, y, params["weight"], 0.0)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @functools.partial(jax.jit, static_argnames="length")
    def fused(params, opt_state, x, y, indices, length):
        def body(carry, batch):
            xb, yb = (x, y) if batch is None else (x[batch], y[batch])
            params, opt_state, loss = step(*carry, xb, yb)
            return (params, opt_state), loss

        return jax.lax.scan(body, (params, opt_state), indices, length=length)

    @functools.partial(jax.jit, static_argnames="batch_size")
    def contiguous(params, opt_state, x, y, starts, batch_size):
        def body(carry, start):
            xb = jax.lax.dynamic_slice_in_dim(x, start, batch_size)
            yb = jax.lax.dynamic_slice_in_dim(y, start, batch_size)
            params, opt_state, loss = step(*carry, xb, yb)
            return (params, opt_state), loss

        return jax.lax.scan(body, (params, opt_state), starts)

    return jax.jit(step), fused, contiguous


def run_raw_steps(step, params, opt_state, x, y, count: int) -> jax.Array:
    """`count` calls of the jitted `step` in a bare Python loop; returns the last loss,
    not waited for (the caller decides whether the wait is timed)."""
    for _ in range(count):
        params, opt_state, loss = step(params, opt_state, x, y)
    return loss
