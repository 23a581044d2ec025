"""Peak resident memory of training, each library in a child process of its own.

Nothing else lives in a child (no float64 copies, no closed form, no scikit-learn, no other
library's leftovers), so its peak resident set (`VmHWM`) is that of training one library,
with the interpreter, the imported libraries and the data.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import jax

from jaxlinear._registry import LIBRARY_NAMES, get_library
from jaxlinear._weights import initial_weights
from jaxlinear.bench.problems import (
    make_problem,
    raw_functions,
    raw_params,
    run_raw_steps,
    shuffled_batches,
)
from jaxlinear.training import STEP_MODES, TrainConfig, make_optimizer, steps_per_epoch

# What a child runs: `python -c _CHILD '{"library": ..., "samples": ..., ...}'`.
_CHILD = (
    "import json, sys; from jaxlinear.bench.memory import rss_child; "
    "print(json.dumps(rss_child(json.loads(sys.argv[1]))))"
)
_MAX_CHILDREN = 3  # at a time: memory, not time, is measured there, and RAM is finite


def measure_rss(spec: dict, libraries: list[str]) -> dict[str, dict]:
    """`rss_child` for raw JAX (`"raw"`) and each library, each in a fresh Python process.

    Args:
      spec: `samples`, `features`, `batch_size`, `optimizer` and `seed` of the large problem.
      libraries: registry names.

    Returns `{name: rss_child's figures}`, `raw` first. Raises `RuntimeError` with the
    child's stderr if a child fails.
    """

    def child(name: str) -> dict:
        argv = [sys.executable, "-c", _CHILD, json.dumps({**spec, "library": name})]
        finished = subprocess.run(argv, capture_output=True, text=True, check=False)
        if finished.returncode != 0:
            raise RuntimeError(f"measuring memory of {name} failed:\n{finished.stderr[-2000:]}")
        return json.loads(finished.stdout.strip().splitlines()[-1])

    names = ["raw", *libraries]
    with ThreadPoolExecutor(max_workers=_MAX_CHILDREN) as pool:
        return dict(zip(names, pool.map(child, names), strict=True))


def rss_child(spec: dict) -> dict[str, float]:
    """Runs in a fresh interpreter: make the data, train ONE library, report memory.

    Training covers every step mode full-batch (2 epochs each) and one fused mini-batch
    epoch; `spec["library"]` is a registry name or `"raw"` (the hand-written reference).

    Returns, in MiB: `data_mb` (X and y), `baseline_mb` (resident after the imports),
    `with_data_mb` (after making the data) and `peak_mb` (the peak, `VmHWM`).
    """
    # Every child imports the same modules before its baseline, all four libraries included
    # (raw JAX too), so "above the imports" compares like with like across children.
    for name in LIBRARY_NAMES:
        get_library(name).module  # noqa: B018 (the import is the point)
    baseline = _proc_status_mb("VmRSS")
    x, y = make_problem(spec["samples"], spec["features"], seed=spec["seed"])
    x, y = jax.device_put(x), jax.device_put(y)  # shares the numpy buffers on CPU
    with_data = _proc_status_mb("VmRSS")
    start = initial_weights(spec["features"], 1, seed=spec["seed"])
    full_batch = TrainConfig(epochs=2, optimizer=spec["optimizer"], seed=spec["seed"])
    mini_batch = dataclasses.replace(full_batch, epochs=1, batch_size=spec["batch_size"])
    if spec["library"] == "raw":
        _train_raw(x, y, start, full_batch, spec["batch_size"], spec["seed"])
    else:
        library = get_library(spec["library"])
        model = library.from_canonical(start)
        for mode in STEP_MODES:
            library.fit(model, x, y, dataclasses.replace(full_batch, step_mode=mode))
        library.fit(model, x, y, mini_batch)
    return {
        "data_mb": (x.nbytes + y.nbytes) / 2**20,
        "baseline_mb": baseline,
        "with_data_mb": with_data,
        "peak_mb": _proc_status_mb("VmHWM"),
    }


def _train_raw(x, y, start, config: TrainConfig, batch_size: int, seed: int) -> None:
    """The raw reference's share of `rss_child`: 2 full-batch steps, 2 fused ones, one
    fused epoch of shuffled mini-batches."""
    n = len(x)
    step, fused, _ = raw_functions(make_optimizer(config, n))
    params = raw_params(start)
    opt_state = make_optimizer(config, n).init(params)
    jax.block_until_ready(run_raw_steps(step, params, opt_state, x, y, 2))
    jax.block_until_ready(fused(params, opt_state, x, y, None, length=2))
    indices = shuffled_batches(n, batch_size, seed)
    steps = steps_per_epoch(n, batch_size)
    jax.block_until_ready(fused(params, opt_state, x, y, indices, length=steps))


def _proc_status_mb(field: str) -> float:
    """A `/proc/self/status` memory field (`VmRSS`, `VmHWM`) in MiB; NaN where there is none."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")
