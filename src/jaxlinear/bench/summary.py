"""The figures of one problem: medians with their range, and per-round ratios.

A ratio is the median over rounds of `variant / reference` within the same round, not a
ratio of medians: a round slowed by other load slows both sides of its ratio.
"""

from __future__ import annotations

import statistics

from jaxlinear.bench.options import BenchSizes
from jaxlinear.bench.timing import Variant
from jaxlinear.training import STEP_MODES, epochs_per_call


def summary(key: str, samples: list[float], scale: float = 1.0) -> dict[str, float]:
    """`{key: median, key_min: min, key_max: max}` of `samples`, each times `scale`."""
    values = [scale * sample for sample in samples]
    return {key: statistics.median(values), f"{key}_min": min(values), f"{key}_max": max(values)}


def median_ratio(samples: list[float], references: list[float]) -> float:
    """Median over rounds of `sample / reference` from the same round."""
    return statistics.median(a / b for a, b in zip(samples, references, strict=True))


def summarise(
    variants: dict[str, Variant],
    libraries: list[str],
    x,
    sizes: BenchSizes,
    steps_per_round: int,
    batch_size: int | None,
) -> dict:
    """One problem's figures (the `small` or `large` entry of the JSON).

    Only the shape `[n, in]` and the size in bytes of the features `x` are read. Step times
    are in microseconds (`*_us`), epochs and the bound in seconds (`*_s`); with a
    `batch_size` (the large problem) it adds the epoch, bandwidth and bound figures.
    """
    n, in_features = x.shape
    raw_step, raw_fused = variants["raw/step"].samples, variants["raw/fused"].samples
    result = {
        "samples": n,
        "features": in_features,
        "outputs": 1,
        "optimizer": sizes.optimizer,
        "steps_per_round": steps_per_round,
        "steps_per_fused_call": epochs_per_call(steps_per_round, 1, n * in_features),
        "rounds": len(raw_step),
        "raw": {**summary("step_us", raw_step, 1e6), **summary("fused_us", raw_fused, 1e6)},
        "libraries": {},
    }
    for name in libraries:
        entry = {}
        for mode in STEP_MODES:
            variant = variants[f"{name}/{mode}"]
            reference = raw_fused if mode == "fused" else raw_step
            entry.update(summary(f"{mode}_us", variant.samples, 1e6))
            entry[f"{mode}_ratio"] = median_ratio(variant.samples, reference)
            entry[f"{mode}_compile_s"] = variant.compile_seconds
        entry["compile_s"] = entry["fast_compile_s"]
        result["libraries"][name] = entry
    if batch_size is not None:
        _add_epoch_figures(result, variants, libraries, x.nbytes, batch_size)
    return result


def _add_epoch_figures(result, variants, libraries, x_bytes: int, batch_size: int) -> None:
    read_once = variants["bandwidth"].samples  # one jitted pass over X: the epoch's bound
    raw_epoch, raw = variants["raw/epoch"].samples, result["raw"]
    result["batch_size"] = batch_size
    result["data_mb"] = x_bytes / 2**20
    result["epoch_bound_s"] = statistics.median(read_once)
    result["bandwidth_gb_s"] = x_bytes / 1e9 / result["epoch_bound_s"]
    raw.update(summary("epoch_s", raw_epoch))
    raw["epoch_bound_ratio"] = median_ratio(raw_epoch, read_once)
    contiguous = variants["raw/epoch_contiguous"].samples
    raw.update(summary("epoch_contiguous_s", contiguous))
    raw["epoch_contiguous_bound_ratio"] = median_ratio(contiguous, read_once)
    # A full-batch step reads X twice (forward and backward matmul): its share of the bound.
    twice = [2 * t for t in read_once]
    raw["step_bandwidth_fraction"] = median_ratio(twice, variants["raw/step"].samples)
    for name in libraries:
        entry = result["libraries"][name]
        epoch = variants[f"{name}/epoch"].samples
        entry.update(summary("epoch_s", epoch))
        entry["epoch_ratio"] = median_ratio(epoch, raw_epoch)
        entry["epoch_bound_ratio"] = median_ratio(epoch, read_once)
        entry["epoch_compile_s"] = variants[f"{name}/epoch"].compile_seconds
        entry["fast_bandwidth_fraction"] = median_ratio(twice, variants[f"{name}/fast"].samples)
