"""Streamed training from a data directory: peak memory against the data's size, and a
streamed epoch's time next to an in-memory epoch and to the page-cache read bound.

    python -m jaxlinear.bench.stream DIR [DIR ...] [--library nnx] [--batch-size 4096]
        [--in-memory DIR]

Each DIR may be `.npy` or Parquet (`make-data --format`); directories holding the same data
in both formats (the same seed, shapes and chunk size) are also compared side by side.

Every measurement runs in a fresh child process, so each peak resident set (`VmHWM` from
/proc/self/status) is that of one job alone:

- `stream`: `jaxlinear compare --libraries L --data DIR --epochs 2` (the command itself,
  statistics pass included); its epoch times from `--json`'s `epoch_seconds` (the first
  also compiles; the second is the steady one);
- `read`: every chunk of DIR read into memory twice as training reads them (`.npy`:
  memory-mapped, copied, unmapped; Parquet: read with pyarrow, one row group at a time,
  copied out), the second pass timed: the page-cache read bound of one epoch; then every
  file's bytes read twice into one reused buffer, the second pass timed: what the bytes on
  disk cost without decoding (for Parquet, the rest of `read` is pyarrow's decoding);
- `in-memory` (only for `--in-memory DIR`): all training rows of DIR loaded and standardised
  in memory, then `training.fit` for 3 epochs; its steady time per epoch is `ms_per_step`
  times the steps of an epoch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time


def _peak_mib() -> float:
    with open("/proc/self/status") as status:
        lines = status.read().splitlines()
    for line in lines:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child_stream(folder: str, library: str, batch_size: int) -> dict:
    from jaxlinear.cli import main

    with tempfile.TemporaryDirectory() as scratch:
        figures = f"{scratch}/figures.json"
        began = time.perf_counter()
        code = main(
            ["compare", "--libraries", library, "--data", folder, "--epochs", "2",
             "--batch-size", str(batch_size), "--quiet", "--json", figures]
        )  # fmt: skip
        wall = time.perf_counter() - began
        with open(figures) as file:
            epochs = json.load(file)["epoch_seconds"][library] if code == 0 else None
    return {"code": code, "command_seconds": wall, "epoch_seconds": epochs, "peak_mib": _peak_mib()}


def _child_read(folder: str) -> dict:
    from jaxlinear.stream import DataDir

    data = DataDir.open(folder)
    seconds = []
    for _ in range(2):
        began = time.perf_counter()
        size = sum(sum(a.nbytes for a in data.raw_chunk(i)) for i in range(data.chunks))
        seconds.append(time.perf_counter() - began)
    peak = _peak_mib()  # before the byte reads' buffer
    files = sorted({*data.x_files, *data.y_files})
    buffer = bytearray(max(path.stat().st_size for path in files))
    file_seconds = []
    for _ in range(2):
        began = time.perf_counter()
        for path in files:
            with open(path, "rb", buffering=0) as file:
                file.readinto(buffer)
        file_seconds.append(time.perf_counter() - began)
    return {
        "format": data.file_format,
        "bytes": size,
        "file_bytes": sum(path.stat().st_size for path in files),
        "read_seconds": seconds,
        "file_seconds": file_seconds,
        "peak_mib": peak,
        "data": {key: data.meta[key] for key in _SAME_DATA},
    }


# What makes two directories hold the same data (whatever their file format).
_SAME_DATA = ("rows", "features", "targets", "chunk_rows", "seed", "noise")


def _child_in_memory(folder: str, library: str, batch_size: int) -> dict:
    import numpy as np

    from jaxlinear import TrainConfig, get_library
    from jaxlinear._weights import initial_weights
    from jaxlinear.stream import DataDir, standardise, statistics
    from jaxlinear.training import steps_per_epoch

    data = DataDir.open(folder)
    stats = statistics(data, 0.2)
    n = stats.n_train
    x = np.empty((n, data.in_features), np.float32)
    y = np.empty((n, data.out_features), np.float32)
    row = 0
    for index in stats.train_chunks:
        x_chunk, y_chunk = standardise(stats.scaling, *data.raw_chunk(index))
        x[row : row + len(x_chunk)], y[row : row + len(y_chunk)] = x_chunk, y_chunk
        row += len(x_chunk)
    chosen = get_library(library)
    model = chosen.from_canonical(initial_weights(data.in_features, data.out_features, seed=0))
    config = TrainConfig(epochs=3, batch_size=batch_size)
    fit = chosen.fit(model, x, y, config)
    epoch = fit.ms_per_step * steps_per_epoch(n, batch_size) / 1e3
    return {"epoch_seconds": epoch, "ms_per_step": fit.ms_per_step, "peak_mib": _peak_mib()}


def _in_child(job: str, *args) -> dict:
    command = [sys.executable, "-m", "jaxlinear.bench.stream", "--child", job, *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{job} child failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxlinear.bench.stream")
    parser.add_argument("dirs", nargs="*", metavar="DIR")
    parser.add_argument("--library", default="nnx")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--in-memory", metavar="DIR")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        job, *rest = args.child
        result = {
            "stream": lambda: _child_stream(rest[0], rest[1], int(rest[2])),
            "read": lambda: _child_read(rest[0]),
            "in-memory": lambda: _child_in_memory(rest[0], rest[1], int(rest[2])),
        }[job]()
        print(json.dumps(result))
        return 0
    rows = []
    for folder in args.dirs:
        read = _in_child("read", folder)
        stream = _in_child("stream", folder, args.library, args.batch_size)
        gib = read["bytes"] / 2**30
        rows.append({"dir": folder, "gib": gib, "read": read, "stream": stream})
        print(
            f"{folder}: {read['format']}, {gib:.2f} GiB of float32 "
            f"({read['file_bytes'] / 2**30:.2f} GiB of files) | streamed train (2 epochs, "
            f"command): peak RSS {stream['peak_mib']:.0f} MiB, epochs "
            f"{stream['epoch_seconds'][0]:.2f} s (with compilation) and "
            f"{stream['epoch_seconds'][1]:.2f} s, command {stream['command_seconds']:.1f} s | "
            f"page-cache read of all chunks {read['read_seconds'][1]:.2f} s "
            f"({gib / read['read_seconds'][1]:.2f} GiB/s), reader peak RSS "
            f"{read['peak_mib']:.0f} MiB | files' bytes alone {read['file_seconds'][1]:.2f} s",
            flush=True,
        )
    if args.in_memory:
        memory = _in_child("in-memory", args.in_memory, args.library, args.batch_size)
        print(
            f"{args.in_memory}: in memory (training.fit, 3 epochs): peak RSS "
            f"{memory['peak_mib']:.0f} MiB, steady epoch {memory['epoch_seconds']:.2f} s "
            f"({memory['ms_per_step']:.3f} ms/step)",
            flush=True,
        )
    for file_format in ("npy", "parquet"):
        same = sorted(
            (r for r in rows if r["read"]["format"] == file_format), key=lambda row: row["gib"]
        )
        if len(same) >= 2:
            peaks = [row["stream"]["peak_mib"] for row in same]
            print(
                f"{file_format}: streamed peak RSS, largest over smallest data: "
                f"{max(peaks) / min(peaks):.3f} (data {same[-1]['gib'] / same[0]['gib']:.1f}x "
                "larger)"
            )
    for npy in (r for r in rows if r["read"]["format"] == "npy"):
        for parquet in (r for r in rows if r["read"]["format"] == "parquet"):
            if npy["read"]["data"] == parquet["read"]["data"]:
                a, b = npy["stream"]["epoch_seconds"][1], parquet["stream"]["epoch_seconds"][1]
                c, d = npy["read"]["read_seconds"][1], parquet["read"]["read_seconds"][1]
                print(
                    f"same data ({npy['gib']:.2f} GiB), parquet {parquet['dir']} over npy "
                    f"{npy['dir']}: steady epoch {b:.2f} s / {a:.2f} s = {b / a:.2f}x, read of "
                    f"all chunks {d:.2f} s / {c:.2f} s = {d / c:.2f}x, peak RSS "
                    f"{parquet['stream']['peak_mib']:.0f} / {npy['stream']['peak_mib']:.0f} MiB"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
