"""Running the command line as the CLI tests do: in-process (`run_cli`), or as a `train`
process killed with SIGKILL once it has written its first checkpoint
(`kill_after_first_checkpoint`), with the check that the resumed run's training state equals
an uninterrupted one's bit for bit (`resume_ends_as_uninterrupted`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxlinear.cli import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """`main(argv)` (arguments as strings); argparse's own errors arrive as SystemExit.

    Returns `(exit code, stdout, stderr)`.
    """
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def kill_after_first_checkpoint(argv, folder: Path, *, last_epoch: int) -> None:
    """Runs `jaxlinear train *argv --save folder` in a child process and kills it (SIGKILL)
    as soon as its first `epoch-N` checkpoint appears; fails if it ended first, or reached
    `epoch-{last_epoch}`, or wrote nothing within 120 s."""
    process = subprocess.Popen(
        [sys.executable, "-m", "jaxlinear.cli", "train", *map(str, argv), "--save", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "JAXLINEAR_CACHE_DIR": ""},
    )
    deadline = time.monotonic() + 120
    while not (folder.is_dir() and any(p.name.startswith("epoch-") for p in folder.iterdir())):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert not (folder / f"epoch-{last_epoch:06d}").exists(), "killed before the end"


def resume_ends_as_uninterrupted(capsys, resume_argv, whole_argv, killed: Path, whole: Path):
    """Resumes the killed run (`train *resume_argv --resume killed`), runs the same training
    uninterrupted (`train *whole_argv --save whole`), and checks that both succeed and end at
    the same epoch with bitwise the same parameters and optimizer state. Returns the two
    loaded checkpoints `(resumed, uninterrupted)`."""
    from jaxlinear import load_checkpoint

    for argv in ([*resume_argv, "--resume", killed], [*whole_argv, "--save", whole]):
        code, _, stderr = run_cli(capsys, "train", *argv)
        assert code == 0, stderr
    resumed, uninterrupted = load_checkpoint(killed), load_checkpoint(whole)
    assert resumed.epoch == uninterrupted.epoch
    leaves = jax.tree.leaves(resumed.state.arrays)
    expected = jax.tree.leaves(uninterrupted.state.arrays)
    assert len(leaves) == len(expected)
    for found, wanted in zip(leaves, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(found), np.asarray(wanted))
    return resumed, uninterrupted
