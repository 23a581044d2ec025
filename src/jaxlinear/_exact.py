"""Closed-form least squares (ridge when `l2 > 0`) in float64: the reference every
trained model is measured against."""

from __future__ import annotations

import numpy as np

from jaxlinear._weights import LinearWeights


def least_squares(x: np.ndarray, y: np.ndarray, *, l2: float = 0.0) -> LinearWeights:
    """Minimises the training objective exactly.

    The objective is the one every library trains on:
    `mean_i 0.5 * ||x_i @ W + b - y_i||^2 + 0.5 * l2 * ||W||_F^2` (the bias is not penalised).
    Centring removes the bias; the weight then solves
    `(Xc^T Xc / n + l2 I) W = Xc^T Yc / n`, and `b = mean(y) - mean(x) @ W`.

    Args:
      x: `[n, in_features]`.
      y: `[n, out_features]`.
      l2: ridge penalty; 0 gives ordinary least squares (minimum-norm if rank-deficient).

    Returns:
      float64 `LinearWeights` (weight `[in, out]`, bias `[out]`).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    n = x.shape[0]
    if l2 > 0:
        gram = xc.T @ xc / n + l2 * np.eye(x.shape[1])
        weight = np.linalg.solve(gram, xc.T @ yc / n)
    else:
        weight = np.linalg.lstsq(xc, yc, rcond=None)[0]
    return LinearWeights(weight, y_mean - x_mean @ weight)


def objective(weights: LinearWeights, x: np.ndarray, y: np.ndarray, *, l2: float = 0.0) -> float:
    """The training objective (see `least_squares`) in float64, for `x: [n, in]`, `y: [n, out]`."""
    residual = np.asarray(x, np.float64) @ weights.weight + weights.bias - y
    data_term = 0.5 * np.mean(np.sum(residual**2, axis=-1))
    return float(data_term + 0.5 * l2 * np.sum(np.asarray(weights.weight, np.float64) ** 2))
