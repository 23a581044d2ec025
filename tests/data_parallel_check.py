"""Data-parallel training on 8 simulated CPU devices against one device; prints JSON.

Run by tests/test_scaling.py in a subprocess, because the simulated devices exist only when
`XLA_FLAGS=--xla_force_host_platform_device_count=8` is set before jax is imported. One
process checks every library and step mode, so jax starts once.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

from eight_devices import difference_row, flat
from jaxlinear import _device_layout, _views, cli, training
from jaxlinear._config import TrainConfig
from jaxlinear._registry import LIBRARY_NAMES, get_library

DEVICES = 8
N, IN, OUT = 100, 5, 2  # 100 rows: not a multiple of 8, so full batches are padded
BATCHES = {"mini": 24, "full": None}  # 24 = 3 rows on each of the 8 devices


def equality(x, y, mesh) -> list[dict]:
    rows = []
    for name in LIBRARY_NAMES:
        library = get_library(name)
        model = library.create(IN, OUT, key=jax.random.key(0))
        initial = flat(library.to_canonical(model))
        for mode in training.STEP_MODES:
            for batch, batch_size in BATCHES.items():
                # sgd, not adam: adam's normalised step hides a gradient off by a constant
                # factor (tried: padding rows weighing 1 moved adam's weights by 3e-6 only).
                config = TrainConfig(
                    epochs=4,
                    batch_size=batch_size,
                    step_mode=mode,
                    optimizer="sgd",
                    learning_rate=0.1,
                )
                one = flat(library.to_canonical(library.fit(model, x, y, config).model))
                many = flat(library.to_canonical(library.fit(model, x, y, config, mesh=mesh).model))
                rows.append(difference_row(name, mode, batch, one, many, initial))
    return rows


def resumed(x, y, mesh) -> dict:
    """Per library: does a sharded run resumed from its epoch-2 state end where the same run
    uninterrupted ends? (The driver promises bitwise equality on one device.)"""
    config = TrainConfig(epochs=4, batch_size=24)
    result = {}
    for name in LIBRARY_NAMES:
        library = get_library(name)
        model = library.create(IN, OUT, key=jax.random.key(0))
        states = []
        options = {"checkpoint_every": 2, "on_checkpoint": states.append, "mesh": mesh}
        whole = library.fit(model, x, y, config, **options)
        again = library.fit(model, x, y, config, start=states[0], **options)
        result[name] = bool(
            np.array_equal(
                flat(library.to_canonical(whole.model)), flat(library.to_canonical(again.model))
            )
        )
    return result


def layout(x, y, mesh) -> dict:
    """Where the data, a gathered batch and the parameters live, and the compiled step."""
    config = TrainConfig(batch_size=24)
    x_placed, y_placed, _ = training.place_batches(x, y, config, mesh)
    full_batch = training.place_batches(x, y, TrainConfig(), mesh)[:2]
    indices = training.epoch_order(N, 24, 0, 0)[0]
    # The per-step modes' jitted gather, traced without the mesh set and then with it: only
    # the second constrains the batch to be split.
    x_unsplit, _ = training._take_rows(x_placed, y_placed, indices)
    with jax.set_mesh(mesh):
        x_batch, _ = training._take_rows(x_placed, y_placed, indices)
    result = {
        "devices": jax.local_device_count(),
        "data_rows": x_placed.shape[0],
        "data_devices": len(x_placed.sharding.device_set),
        "data_shard_shapes": sorted({s.data.shape for s in x_placed.addressable_shards}),
        "batch_shard_shapes": sorted({s.data.shape for s in x_batch.addressable_shards}),
        "unset_mesh_batch_shard_shapes": sorted(
            {s.data.shape for s in x_unsplit.addressable_shards}
        ),
        "libraries": {},
    }
    for name in LIBRARY_NAMES:
        module = get_library(name).module
        model = module.create(IN, OUT, key=jax.random.key(0))
        optimizer = training.make_optimizer(config, N)
        sharded = module.shard(module.init_training(model, optimizer), mesh)
        static, arrays = module.split(sharded)
        leaves = jax.tree.leaves(arrays)

        # On the full batch, which is already where its rows belong, so an all-reduce can only
        # be the gradients' (on a mini-batch, gathering the rows adds one more).
        hlo = step_hlo(module, static, arrays, (*full_batch, np.zeros(0, np.int32)), mesh)
        result["libraries"][name] = {
            "leaves_replicated": all(leaf.sharding.is_fully_replicated for leaf in leaves),
            "leaves_on_all_devices": all(
                len(leaf.sharding.device_set) == DEVICES for leaf in leaves
            ),
            "step_all_reduces": hlo.count("all-reduce("),
        }
    return result


def views(x, y, mesh, out: Path) -> dict:
    """The layout row (`_device_layout`) on the arrays of real runs, and the CLI's pages
    (`compare --report`, `show`) written into `out` for the browser test."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    config = TrainConfig(epochs=2, batch_size=24)
    result: dict = {"libraries": {}}
    for name in LIBRARY_NAMES:
        library = get_library(name)
        model = library.create(IN, OUT, key=jax.random.key(0))
        sharded = library.fit(model, x, y, config, mesh=mesh).training
        single = library.fit(model, x, y, config).training
        found = _device_layout.mesh_of({name: sharded})
        batch = _device_layout.batch_array(mesh, N, IN, 24)
        shown = library.module._named(batch) if name == "penzai" else batch
        leaves = jax.tree.leaves(
            _views.parameters(name, library.module.model_of(sharded)),
            is_leaf=lambda v: hasattr(v, "named_shape"),
        )
        row = _device_layout.layout_row({name: sharded}, _device_layout.Batches(N, 24))
        result["libraries"][name] = {
            "mesh_devices": None if found is None else int(found.devices.size),
            "single_device_mesh": _device_layout.mesh_of({name: single}) is not None,
            "parameters": [_device_layout.placement(leaf) for leaf in leaves],
            "batch": _device_layout.placement(shown),
            "row_title": row.title,
            "row_note": row.note,
        }
    full = _device_layout.batch_array(mesh, N, IN, None)
    split_by_hand = jax.device_put(np.zeros((16, 2), np.float32), NamedSharding(mesh, P("data")))
    result["full_batch"] = {"shape": list(full.shape), "placement": _device_layout.placement(full)}
    result["split_by_hand"] = _device_layout.placement(split_by_hand)
    result["full_batch_label"] = _device_layout.Batches(N, None).describe(DEVICES)
    pages = {"report": out / "report.html", "show": out / "show.html"}
    small = ["--samples", str(N), "--epochs", "2", "--batch-size", "24", "--quiet"]
    result["cli"] = {
        "report": command_line(
            ["compare", "--devices", "8", *small, "--report", str(pages["report"])]
        ),
        "show": command_line(
            ["show", "--library", "all", "--devices", "8", "--output", str(pages["show"])]
        ),
    }
    saved = out / "saved"
    command_line(["train", "--library", "nnx", *small, "--devices", "8", "--save", str(saved)])
    result["cli"]["show_saved_on_5"] = command_line(
        ["show", "--load", str(saved), "--devices", "5", "--output", str(out / "never.html")]
    )
    result["pages"] = {kind: str(path) for kind, path in pages.items()}
    return result


def step_hlo(module, static, arrays, data, mesh) -> str:
    """The optimized HLO of one step on a batch gathered from `data = (x, y, indices)`."""

    def step(arrays, x, y, indices):
        return module.state_step(static, arrays, *training.take_batch(x, y, indices), l2=0.0)

    with jax.set_mesh(mesh):
        return jax.jit(step).lower(arrays, *data).compile().as_text()


def command_line(argv: list[str]) -> dict:
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    return {"exit": code, "stderr": errors.getvalue()}


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, IN)).astype(np.float32)
    y = (x @ rng.normal(size=(IN, OUT)) + 0.1 * rng.normal(size=(N, OUT))).astype(np.float32)
    mesh = training.data_mesh(DEVICES)
    small = ["--samples", "100", "--epochs", "2", "--quiet"]
    report = {
        "equality": equality(x, y, mesh),
        "layout": layout(x, y, mesh),
        "resumed_equal": resumed(x, y, mesh),
        "cli": {
            "uneven_batch": command_line(
                ["compare", "--devices", "8", "--batch-size", "20", *small]
            ),
            "too_many_devices": command_line(["compare", "--devices", "9", *small]),
        },
    }
    with tempfile.TemporaryDirectory() as folder:
        figures = Path(folder) / "figures.json"
        run = command_line(["train", "--library", "linen", *small, "--json", str(figures)])
        run["devices"] = json.loads(figures.read_text())["settings"]["devices"]
        report["cli"]["default_devices"] = run
    report["views"] = views(x, y, mesh, Path(sys.argv[1]))
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
