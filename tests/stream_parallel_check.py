"""Streamed training (`--data DIR`) on 8 simulated CPU devices against one device; prints JSON.

Run by tests/test_stream_parallel.py in a subprocess, because the simulated devices exist
only when `XLA_FLAGS=--xla_force_host_platform_device_count=8` is set before jax is
imported. One process runs every check, so jax starts once.

The data directory has chunks of 100 rows and a last one of 60, none a multiple of 8, so
every kind of batch that does not divide shows: whole chunks (100 -> 104 rows, 60 -> 64),
and the rest batches a batch size leaves (24: 4 and 12 rows; 40: 20 rows, and the 60-row
chunk cut into 40 + 20).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

from eight_devices import difference_row, flat
from jaxlinear import cli, training
from jaxlinear._config import TrainConfig
from jaxlinear._registry import LIBRARY_NAMES, get_library
from jaxlinear._weights import initial_weights
from jaxlinear.stream import (
    DataDir,
    chunk_plan,
    fit_stream,
    make_data,
    place_chunk,
    rest_batch,
    statistics,
)

DEVICES = 8
ROWS, CHUNK_ROWS, IN, OUT = 460, 100, 5, 2  # chunks of 100, 100, 100, 100 and 60 rows
BATCHES = {"mini": 24, "mixed": 40, "whole": None}  # 24 and 40: 3 and 5 rows a device
# Every library in the default mode, on mini-batches (rest batches of 4 and 12 rows) and on
# whole chunks (100 and 60 rows, padded); batches of 40 (each 100-row chunk 2 x 40 + a rest
# of 20, the 60-row chunk 40 + 20) in one library; and the two per-step modes (they gather
# and place batches apart from the step) on mini-batches. Not every combination: each pair
# of runs compiles about 8 programs, 1.5-2 s here; what differs between the libraries on a
# mesh (`shard`, the step) is checked in every mode by tests/data_parallel_check.py.
CASES = [(name, "fused", batch) for name in LIBRARY_NAMES for batch in ("mini", "whole")]
CASES += [("nnx", "fused", "mixed"), ("linen", "fast", "mini"), ("equinox", "idiomatic", "mini")]
RESUMED = ("penzai",)  # tests/data_parallel_check.py resumes all four sharded in memory


def equality(data, stats, mesh) -> list[dict]:
    initial = initial_weights(IN, OUT, seed=0)
    rows = []
    for name, mode, batch in CASES:
        library = get_library(name)
        start = library.from_canonical(initial)
        # sgd, not adam: adam's normalised step hides a gradient off by a constant factor.
        config = TrainConfig(
            epochs=2,
            batch_size=BATCHES[batch],
            step_mode=mode,
            optimizer="sgd",
            learning_rate=0.1,
        )
        one = flat(library.to_canonical(fit_stream(library, start, data, stats, config).fit.model))
        many = fit_stream(library, start, data, stats, config, mesh=mesh).fit.model
        many = flat(library.to_canonical(many))
        rows.append(difference_row(name, mode, batch, one, many, flat(initial)))
    return rows


def resumed(data, stats, mesh) -> dict:
    """Per library: a sharded stream resumed from its epoch-1 state ends bitwise where the
    uninterrupted sharded stream ends."""
    config = TrainConfig(epochs=2, batch_size=24)
    result = {}
    for name in RESUMED:
        library = get_library(name)
        start = library.from_canonical(initial_weights(IN, OUT, seed=0))
        states = []
        options = {"checkpoint_every": 1, "on_checkpoint": states.append, "mesh": mesh}
        whole = fit_stream(library, start, data, stats, config, **options).fit
        again = fit_stream(library, start, data, stats, config, start=states[0], mesh=mesh).fit
        leaves = zip(
            jax.tree.leaves(whole.state.arrays), jax.tree.leaves(again.state.arrays), strict=True
        )
        result[name] = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in leaves)
    return result


def weights(targets) -> list[float] | None:
    """The per-row weights of placed targets; `None` when unweighted (every row counts)."""
    if isinstance(targets, training.WeightedTargets):
        return np.asarray(targets.sample_weight).tolist()
    return None


def layout(mesh) -> dict:
    """Where `place_chunk` puts a 100-row chunk cut into batches of 24 and the same chunk as
    one whole batch, and where `rest_batch` gathers its rest batch of 4 rows."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, IN)).astype(np.float32)
    y = rng.normal(size=(100, OUT)).astype(np.float32)
    plan = chunk_plan(100, 24, seed=0, epoch=0, chunk=0)
    x_rows, y_rows = place_chunk(x, y, plan, mesh)
    with jax.set_mesh(mesh):  # as `fit_stream` runs it
        x_rest, y_rest = rest_batch(x_rows, y_rows, plan.rest, DEVICES)
    _, y_whole = place_chunk(x, y, chunk_plan(100, None, 0, 0, 0), mesh)
    return {
        "rows_shards": sorted({s.data.shape for s in x_rows.addressable_shards}),
        "rows_targets_plain": not isinstance(y_rows, training.WeightedTargets),
        "rest_rows": int(x_rest.shape[0]),
        "rest_shards": sorted({s.data.shape for s in x_rest.addressable_shards}),
        "rest_weights": weights(y_rest),
        "rest_x_equal": bool(np.array_equal(np.asarray(x_rest)[:4], x[plan.rest])),
        "whole_weights": weights(y_whole),
    }


def command_line(argv: list[str]) -> dict:
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    return {"exit": code, "stderr": errors.getvalue()}


def cli_runs(folder: Path, scratch: Path) -> dict:
    common = ["compare", "--data", str(folder), "--epochs", "3", "--quiet"]
    common += ["--libraries", "linen,equinox", "--optimizer", "sgd", "--lr", "0.1"]
    runs, weights = {}, {}
    for devices in ("1", None):  # None: no --devices, which means every device
        figures = scratch / f"figures-{devices}.json"
        flags = [] if devices is None else ["--devices", devices]
        run = command_line([*common, "--batch-size", "24", *flags, "--json", str(figures)])
        if run["exit"] == 0:
            result = json.loads(figures.read_text())
            run["devices"] = result["settings"]["devices"]
            weights[devices] = result["weights_original_scale"]
        runs[f"devices_{devices or 'default'}"] = run
    # The run on every device against the 1-device run, on the original scale.
    if len(weights) == 2:
        runs["relative_difference"] = {}
        for name in ("linen", "equinox"):
            one, many = (
                np.concatenate([np.ravel(weights[key][name][k]) for k in ("W", "b")])
                for key in ("1", None)
            )
            runs["relative_difference"][name] = float(np.abs(many - one).max() / np.abs(one).max())
    runs["uneven_batch"] = command_line([*common, "--batch-size", "20", "--devices", "8"])
    runs["saved_and_resumed"] = saved_and_resumed(folder, scratch)
    return runs


def saved_and_resumed(folder: Path, scratch: Path) -> dict:
    """`train --data DIR --save` on every device, then its last checkpoint removed and the
    run resumed from the one before: does it end bitwise where it ended the first time?"""
    from jaxlinear.checkpoint import load_checkpoint

    root = scratch / "run"
    argv = ["train", "--library", "nnx", "--data", str(folder), "--epochs", "2", "--quiet"]
    argv += ["--batch-size", "24", "--checkpoint-every", "1"]
    first = command_line([*argv, "--save", str(root)])
    if first["exit"] != 0:
        return first
    ended = load_checkpoint(root)
    shutil.rmtree(ended.path)
    again = command_line([*argv, "--resume", str(root)])
    if again["exit"] != 0:
        return again
    resumed = load_checkpoint(root)
    leaves = zip(
        jax.tree.leaves(ended.state.arrays), jax.tree.leaves(resumed.state.arrays), strict=True
    )
    return {
        "exit": 0,
        "epochs": [ended.epoch, resumed.epoch],
        "equal": all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in leaves),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        folder = make_data(
            scratch / "data", rows=ROWS, features=IN, targets=OUT, chunk_rows=CHUNK_ROWS, seed=1
        )
        data = DataDir.open(folder)
        stats = statistics(data, test_fraction=0.0)  # every chunk trains, the 60-row one too
        mesh = training.data_mesh(DEVICES)
        report = {
            "devices": jax.local_device_count(),
            "equality": equality(data, stats, mesh),
            "resumed_equal": resumed(data, stats, mesh),
            "layout": layout(mesh),
            "cli": cli_runs(folder, scratch),
        }
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
