"""Closed-form least squares (ridge when `l2 > 0`) in float64: the reference every
trained model is measured against."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from jaxlinear._weights import LinearWeights

# Beyond this the normal equations lose more than ~1e-8 relative accuracy (they square the
# condition number of the centred data); `least_squares_gram` then falls back to lstsq.
GRAM_CONDITION_LIMIT = 1e8


def least_squares(
    x: np.ndarray, y: np.ndarray, *, l2: float = 0.0, sample_weight: np.ndarray | None = None
) -> LinearWeights:
    """Minimises the training objective exactly.

    The objective is the one every library trains on:
    `mean_i 0.5 * ||x_i @ W + b - y_i||^2 + 0.5 * l2 * ||W||_F^2` (the bias is not penalised).
    Centring removes the bias; the weight then solves
    `(Xc^T Xc / n + l2 I) W = Xc^T Yc / n`, and `b = mean(y) - mean(x) @ W`.

    Args:
      x: `[n, in_features]`.
      y: `[n, out_features]`.
      l2: ridge penalty; 0 gives ordinary least squares (minimum-norm if rank-deficient).
      sample_weight: `[n]` non-negative weights, scaled to mean 1 here: each example's term
        of the mean is weighted (and the centring uses weighted means).

    Returns:
      float64 `LinearWeights` (weight `[in, out]`, bias `[out]`).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n = x.shape[0]
    if sample_weight is None:
        x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
        xc, yc = x - x_mean, y - y_mean
    else:
        w = np.asarray(sample_weight, np.float64)
        w = w * (n / w.sum())
        x_mean, y_mean = w @ x / n, w @ y / n
        # Weighted least squares is ordinary least squares on rows scaled by sqrt(w).
        root = np.sqrt(w)[:, None]
        xc, yc = (x - x_mean) * root, (y - y_mean) * root
    if l2 > 0:
        gram = xc.T @ xc / n + l2 * np.eye(x.shape[1])
        weight = np.linalg.solve(gram, xc.T @ yc / n)
    else:
        weight = np.linalg.lstsq(xc, yc, rcond=None)[0]
    return LinearWeights(weight, y_mean - x_mean @ weight)


def least_squares_gram(
    x: np.ndarray, y: np.ndarray, *, l2: float = 0.0, chunk_rows: int = 2048
) -> LinearWeights:
    """`least_squares` from the normal equations: the fast exact path for tall data.

    The centred Gram matrix `Xc^T Xc` and `Xc^T Yc` are accumulated in float64 over chunks of
    `chunk_rows` rows, so no float64 copy of `x` is ever made whole (`least_squares` makes
    three), and the chunks are shared out between the CPU cores, each running single-threaded
    BLAS (chunks this small run no faster on a multi-threaded BLAS, and at times much slower).
    What remains is an `in_features`-square solve. At 2,000,000 x 64 on two cores this took
    0.66 s against 10.7 s for `least_squares` and 6.4 s for scikit-learn's
    `LinearRegression` (docs/benchmarks.md).

    Accuracy: the normal equations square the condition number of the centred data, so the
    relative error is about `cond(Gram) * 1e-16`. When `cond(Gram)` exceeds
    `GRAM_CONDITION_LIMIT` (1e8: accuracy worse than ~1e-8, or a rank-deficient `x`), this
    returns `least_squares(x, y, l2=l2)` instead, which also keeps its minimum-norm answer.

    Args:
      x: `[n, in_features]`, any float dtype (float32 input is widened chunk by chunk).
      y: `[n, out_features]`.
      l2: ridge penalty, as in `least_squares`.
      chunk_rows: rows per float64 chunk; 2048 x 64 doubles (1 MiB) stay in cache.

    Returns:
      float64 `LinearWeights` (weight `[in, out]`, bias `[out]`).
    """
    from threadpoolctl import threadpool_limits

    n, d = x.shape
    x_mean = x.mean(axis=0, dtype=np.float64)
    y_mean = np.asarray(y).mean(axis=0, dtype=np.float64)
    workers = max(1, min(len(os.sched_getaffinity(0)), n // chunk_rows))
    bounds = np.linspace(0, n, workers + 1).astype(int)

    def centred_products(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        gram, moment = np.zeros((d, d)), np.zeros((d, y.shape[1]))
        x_chunk, y_chunk = np.empty((chunk_rows, d)), np.empty((chunk_rows, y.shape[1]))
        for first in range(start, stop, chunk_rows):
            last = min(first + chunk_rows, stop)
            xc, yc = x_chunk[: last - first], y_chunk[: last - first]
            np.subtract(x[first:last], x_mean, out=xc)
            np.subtract(y[first:last], y_mean, out=yc)
            gram += xc.T @ xc
            moment += xc.T @ yc
        return gram, moment

    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(centred_products, bounds[:-1], bounds[1:]))
    gram = sum(part[0] for part in parts) / n + l2 * np.eye(d)
    moment = sum(part[1] for part in parts) / n
    if not np.linalg.cond(gram) <= GRAM_CONDITION_LIMIT:  # also catches inf and NaN
        return least_squares(x, y, l2=l2)
    weight = np.linalg.solve(gram, moment)
    return LinearWeights(weight, y_mean - x_mean @ weight)


def objective(
    weights: LinearWeights,
    x: np.ndarray,
    y: np.ndarray,
    *,
    l2: float = 0.0,
    sample_weight: np.ndarray | None = None,
) -> float:
    """The training objective (see `least_squares`) in float64, for `x: [n, in]`, `y: [n, out]`
    and optional `sample_weight: [n]` (scaled to mean 1 here)."""
    residual = np.asarray(x, np.float64) @ weights.weight + weights.bias - y
    per_example = 0.5 * np.sum(residual**2, axis=-1)
    if sample_weight is not None:
        w = np.asarray(sample_weight, np.float64)
        per_example = per_example * w * (len(w) / w.sum())
    data_term = np.mean(per_example)
    return float(data_term + 0.5 * l2 * np.sum(np.asarray(weights.weight, np.float64) ** 2))


class Moments:
    """First and second moments of `(x, y)` accumulated chunk by chunk in float64, in one pass:
    what the scaling statistics, the exact solution and any linear model's mean squared error
    need, without the data in memory.

    Sums are taken about a shift (the first chunk's means), so the covariances lose no
    accuracy to cancellation when the columns' means are large against their spread.
    """

    def __init__(self, in_features: int, out_features: int):
        self.n = 0
        self._shift_x: np.ndarray | None = None
        self._shift_y: np.ndarray | None = None
        self._sx = np.zeros(in_features)
        self._sy = np.zeros(out_features)
        self._sxx = np.zeros((in_features, in_features))
        self._sxy = np.zeros((in_features, out_features))
        self._syy = np.zeros(out_features)  # only the diagonal: per-output variances

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Adds a chunk `x: [rows, in_features]`, `y: [rows, out_features]`."""
        if self._shift_x is None:
            self.set_shift(*self.chunk_shift(x, y))
        self.add_sums(self.sums(x, y))

    @staticmethod
    def chunk_shift(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The shift `add` takes from a first chunk: its float64 column means `[in]`, `[out]`."""
        return np.asarray(x, np.float64).mean(axis=0), np.asarray(y, np.float64).mean(axis=0)

    def set_shift(self, x_shift: np.ndarray, y_shift: np.ndarray) -> None:
        """Sets the shift before any chunk is added (as `add` does from the first chunk), so
        that sums made elsewhere about the same shift (`sums`) can be added (`add_sums`)."""
        self._shift_x, self._shift_y = x_shift, y_shift

    def sums(self, x: np.ndarray, y: np.ndarray) -> tuple:
        """A chunk's float64 sums about the shift: `(rows, sx [in], sy [out], sxx [in, in],
        sxy [in, out], syy [out])`, what `add` adds. `add_sums` of these, chunk by chunk in
        the same order, gives bit for bit what `add` gives, wherever they were computed."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        xc, yc = x - self._shift_x, y - self._shift_y
        return len(x), xc.sum(axis=0), yc.sum(axis=0), xc.T @ xc, xc.T @ yc, np.sum(yc * yc, axis=0)

    def add_sums(self, sums: tuple) -> None:
        """Adds one chunk's `sums` (see there)."""
        n, sx, sy, sxx, sxy, syy = sums
        self.n += int(n)
        self._sx += sx
        self._sy += sy
        self._sxx += sxx
        self._sxy += sxy
        self._syy += syy

    @property
    def x_mean(self) -> np.ndarray:
        return self._shift_x + self._sx / self.n

    @property
    def y_mean(self) -> np.ndarray:
        return self._shift_y + self._sy / self.n

    @property
    def cov_xx(self) -> np.ndarray:
        """`[in, in]` population covariance of `x`."""
        dx = self._sx / self.n
        return self._sxx / self.n - np.outer(dx, dx)

    @property
    def cov_xy(self) -> np.ndarray:
        """`[in, out]` population cross-covariance."""
        return self._sxy / self.n - np.outer(self._sx / self.n, self._sy / self.n)

    @property
    def var_y(self) -> np.ndarray:
        """`[out]` population variance of each target."""
        dy = self._sy / self.n
        return self._syy / self.n - dy * dy

    def least_squares(self, *, l2: float = 0.0) -> LinearWeights:
        """`least_squares` of all the rows added, from the normal equations (as
        `least_squares_gram`; a singular Gram matrix gives its minimum-norm `lstsq` answer)."""
        gram = self.cov_xx + l2 * np.eye(len(self._sx))
        if np.linalg.cond(gram) <= GRAM_CONDITION_LIMIT:
            weight = np.linalg.solve(gram, self.cov_xy)
        else:
            weight = np.linalg.lstsq(gram, self.cov_xy, rcond=None)[0]
        return LinearWeights(weight, self.y_mean - self.x_mean @ weight)

    def mse_per_output(self, weights: LinearWeights) -> np.ndarray:
        """`[out]` mean of `(x @ W + b - y)^2` over the rows added, for any `weights`.

        `E[r^2] = W^T Cxx W - 2 W^T Cxy + var(y)` (diagonals) `+ (mean(x) @ W + b - mean(y))^2`.
        """
        w = np.asarray(weights.weight, np.float64)
        offset = self.x_mean @ w + np.asarray(weights.bias, np.float64) - self.y_mean
        spread = np.sum(w * (self.cov_xx @ w), axis=0) - 2 * np.sum(w * self.cov_xy, axis=0)
        return np.maximum(spread + self.var_y + offset**2, 0.0)

    def objective(self, weights: LinearWeights, *, l2: float = 0.0) -> float:
        """The training objective (see `least_squares`) over the rows added, float64."""
        penalty = np.sum(np.asarray(weights.weight, np.float64) ** 2)
        return float(0.5 * self.mse_per_output(weights).sum() + 0.5 * l2 * penalty)
