"""`jaxlinear bench`: its options, the JSON it writes, `--startup` and `--sklearn`.

Speed itself is never asserted here (it depends on the machine): these tests check that the
benchmark runs, writes the documented figures, and refuses options that cannot work.
"""

import argparse
import json
import math
import subprocess
import sys

import pytest

from jaxlinear import LIBRARY_NAMES
from jaxlinear.bench.options import BenchOptionError, add_arguments
from jaxlinear.bench.run import run_from_args


def bench_args(argv: list[str]) -> argparse.Namespace:
    """`argv` parsed as the options of `jaxlinear bench`."""
    parser = argparse.ArgumentParser(prog="jaxlinear bench")
    add_arguments(parser)
    return parser.parse_args(argv)


def positive(value) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and value > 0


def check_targets(targets: list[dict]) -> None:
    for target in targets:
        assert set(target) == {"target", "reason", "comparison", "limit", "measured", "met"}
        assert isinstance(target["met"], bool)
        assert target["comparison"] in ("<=", ">=")
        # A reader learns why it is a goal in words, not from a reference to elsewhere.
        assert len(target["reason"].split()) >= 8 and "#" not in target["reason"]


@pytest.mark.slow
def test_bench_quick_writes_the_documented_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    argv = ["--quick", "--quiet", "--json", str(path)]
    # Smaller still than --quick: this checks the plumbing, not the speed.
    argv += ["--small-steps", "20", "--small-rounds", "1", "--large-rounds", "1"]
    argv += ["--large-samples", "4096", "--batch-size", "512"]
    assert run_from_args(bench_args(argv)) == 0
    out = capsys.readouterr().out
    assert "goals" in out and "why" in out
    result = json.loads(path.read_text())

    for problem in ("small", "large"):
        summary = result[problem]
        assert summary["samples"] > 0 and summary["features"] > 0
        assert positive(summary["raw"]["step_us"]) and positive(summary["raw"]["fused_us"])
        assert set(summary["libraries"]) == set(LIBRARY_NAMES)
        for entry in summary["libraries"].values():
            for key in ("idiomatic_us", "fast_us", "fused_us", "compile_s"):
                assert positive(entry[key]), (problem, key)
            if problem == "large":
                assert positive(entry["epoch_s"])
    assert positive(result["large"]["epoch_bound_s"])
    for key in ("bandwidth_gb_s", "closed_form_s", "sklearn_linear_regression_s", "peak_rss_mb"):
        assert positive(result[key]), key
    assert result["issue_sizes"] is False
    check_targets(result["targets"])


@pytest.mark.parametrize(
    ("argv", "start"),
    [
        (["--large-samples", "100", "--batch-size", "4096"], "--large-samples"),
        (["--small-rounds", "0"], "--small-rounds must be at least 1"),
        (["--startup", "--quick"], "--startup measures start-up only"),
        (["--startup", "--startup-runs", "0"], "--startup-runs must be at least 1"),
        (["--startup-runs", "3"], "--startup-runs goes with --startup"),
        (["--sklearn", "--startup"], "--sklearn and --startup measure different things"),
        (["--sklearn", "--small-steps", "5"], "--sklearn takes only --large-samples"),
        (["--sklearn", "--repeats", "0"], "--repeats must be at least 1"),
    ],
)
def test_bench_rejects_bad_options_in_one_line(argv, start):
    with pytest.raises(BenchOptionError) as raised:
        run_from_args(bench_args(argv))
    assert str(raised.value).startswith(start) and "\n" not in str(raised.value)


def test_bench_options_import_nothing_heavy():
    # The command line imports the options to build its parser: `--help` must not load jax.
    code = (
        "import sys, jaxlinear.bench.options; "
        "print([m for m in ('jax', 'numpy', 'optax', 'rich') if m in sys.modules])"
    )
    finished = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert finished.stdout.strip() == "[]"


@pytest.mark.slow
def test_bench_startup_writes_its_figures_and_goals(tmp_path, capsys):
    path = tmp_path / "startup.json"
    argv = ["--startup", "--startup-runs", "1", "--quiet", "--json", str(path)]
    assert run_from_args(bench_args(argv)) == 0
    assert "start-up goals" in capsys.readouterr().out
    result = json.loads(path.read_text())
    assert result["startup"]["runs"] == 1
    commands = result["startup"]["commands"]
    keys = {"import_jax", "import_libraries", "help", "argument_error", "compare", "compare_cold"}
    assert set(commands) == keys
    for entry in commands.values():
        assert len(entry["samples_s"]) == 1 and positive(entry["median_s"])
        assert entry["min_s"] <= entry["median_s"] <= entry["max_s"]
    assert commands["argument_error"]["exit_code"] == 2
    assert len(result["targets"]) == 4
    check_targets(result["targets"])
    assert all(positive(target["measured"]) for target in result["targets"])


@pytest.mark.slow
def test_bench_sklearn_writes_its_figures(tmp_path, capsys):
    path = tmp_path / "sklearn.json"
    argv = ["--sklearn", "--quick", "--large-samples", "4096", "--batch-size", "512"]
    assert run_from_args(bench_args([*argv, "--quiet", "--json", str(path)])) == 0
    assert "|coef diff|" in capsys.readouterr().out
    result = json.loads(path.read_text())
    assert result["command"] == "jaxlinear bench --sklearn --quick " + " ".join(argv[2:])
    cases = result["sklearn"]["cases"]
    assert list(cases) == ["diabetes", "synthetic 4,096 x 16"]
    for case in cases.values():
        rows = {row["estimator"]: row for row in case["rows"]}
        for name in ("LinearRegression()", "StandardScaler + SGDRegressor()"):
            assert name in rows
        assert sum(row["estimator"].startswith("JaxLinearRegressor(") for row in rows.values()) >= 5
        for row in rows.values():
            assert len(row["samples_s"]) == 1 and positive(row["fit_s"])
            assert -1 < row["test_r2"] <= 1
            assert (row["reference"] is None) == (row["max_coef_difference"] is None)
            assert row["reference"] is None or row["reference"] in rows
    # On diabetes every JAX estimator runs its defaults, which reach the exact fit.
    for row in cases["diabetes"]["rows"]:
        if row["estimator"].startswith("JaxLinearRegressor("):
            assert row["max_coef_difference"] < 1e-4, row
