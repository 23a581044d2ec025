"""The options of `jaxlinear bench`, and the checks that run before any work.

The command line imports this module when it builds its parser, so it imports nothing heavy
(no jax, numpy, optax or rich): `jaxlinear --help` and an argument error must answer at once.
"""

from __future__ import annotations

import dataclasses

STARTUP_RUNS = 5  # `--startup-runs` default: the median of 5 is steady to ~5% here


class BenchOptionError(ValueError):
    """An option of `jaxlinear bench` that cannot work; the one-line message names it."""


@dataclasses.dataclass(frozen=True)
class BenchSizes:
    """Problem sizes and how long to measure.

    Attributes:
      small_samples, small_features: the small problem, trained full-batch.
      small_steps: steps per variant per round on the small problem.
      small_rounds: rounds on the small problem.
      large_samples, large_features: the large problem (float32), full-batch steps and
        mini-batch epochs.
      batch_size: the mini-batch of the large problem's epoch.
      large_steps: full-batch steps per variant per round (the first is not timed).
      large_epochs: mini-batch epochs per variant per round (the first is not timed).
      large_rounds: rounds on the large problem.
      repeats: timings of the closed form and of scikit-learn.
      optimizer: `adam` or `sgd`.
      seed: seeds the data, the initial weights, the batches and the round order.
    """

    small_samples: int = 256
    small_features: int = 8
    small_steps: int = 500
    small_rounds: int = 15
    large_samples: int = 2_000_000
    large_features: int = 64
    batch_size: int = 4096
    large_steps: int = 4
    large_epochs: int = 3
    large_rounds: int = 5
    repeats: int = 3
    optimizer: str = "adam"
    seed: int = 0

    def validate(self) -> None:
        """Raises `BenchOptionError` naming the first size that cannot work."""
        for name, low in (
            ("small_samples", 2),
            ("small_features", 1),
            ("small_steps", 2),  # the first step or epoch of a variant is never timed
            ("small_rounds", 1),
            ("large_features", 1),
            ("batch_size", 1),
            ("large_steps", 2),
            ("large_epochs", 2),
            ("large_rounds", 1),
            ("repeats", 1),
        ):
            if getattr(self, name) < low:
                raise BenchOptionError(
                    f"{_flag(name)} must be at least {low}, got {getattr(self, name)}"
                )
        if self.large_samples < 2 * self.batch_size:
            raise BenchOptionError(
                f"--large-samples ({self.large_samples}) must be at least twice "
                f"--batch-size ({self.batch_size})"
            )

    def are_defaults(self) -> bool:
        """Whether the problems are the default ones, for which the goals are stated."""
        defaults = BenchSizes()
        names = ("small_samples", "small_features", "large_samples", "large_features")
        names += ("batch_size", "optimizer")
        return all(getattr(self, name) == getattr(defaults, name) for name in names)


# `--sklearn`'s sizes: its large problem is fitted to convergence by every estimator, the
# JAX ones with 20 mini-batch epochs and one full-batch run of 1,000 (~30 s at this size).
SKLEARN = BenchSizes(large_samples=200_000, repeats=3)
SKLEARN_QUICK = BenchSizes(large_samples=20_000, large_features=16, batch_size=1024, repeats=1)
# The sizes `--sklearn` uses (and takes as options).
SKLEARN_SIZES = ("large_samples", "large_features", "batch_size", "repeats", "seed")

QUICK = BenchSizes(
    small_steps=100,
    small_rounds=3,
    large_samples=50_000,
    large_features=16,
    batch_size=1024,
    large_steps=3,
    large_epochs=2,
    large_rounds=2,
    repeats=1,
)

_SIZE_HELP = {
    "small_samples": "rows of the small problem",
    "small_features": "features of the small problem",
    "small_steps": "full-batch steps per variant and round, small problem",
    "small_rounds": "rounds on the small problem",
    "large_samples": "rows of the large problem",
    "large_features": "features of the large problem",
    "batch_size": "mini-batch of the large problem's epoch",
    "large_steps": "full-batch steps per variant and round, large problem (first untimed)",
    "large_epochs": "mini-batch epochs per variant and round (first untimed)",
    "large_rounds": "rounds on the large problem",
    "repeats": "timings of the closed form and scikit-learn",
    "seed": "seeds data, initial weights, batches and round order",
}


def add_arguments(parser) -> None:
    """Adds the `jaxlinear bench` options to an `argparse` parser (see `BenchSizes`)."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and few rounds, under a minute (for CI smoke tests); "
        "options given explicitly still apply",
    )
    defaults = BenchSizes()
    for name, text in _SIZE_HELP.items():
        parser.add_argument(
            _flag(name),
            type=int,
            default=None,
            help=f"{text} (default: {getattr(defaults, name)}; --quick: {getattr(QUICK, name)})",
        )
    parser.add_argument(
        "--optimizer", choices=("adam", "sgd"), default=None, help="(default: adam)"
    )
    parser.add_argument(
        "--startup",
        action="store_true",
        help="measure only how long the command line takes to start, in fresh processes "
        "(about 30 s): `import jax`, the four libraries' imports, `jaxlinear --help`, an "
        "argument error and `jaxlinear compare --quiet`",
    )
    parser.add_argument(
        "--startup-runs",
        type=int,
        default=None,
        metavar="N",
        help=f"with --startup: runs of each command, the median is reported "
        f"(default: {STARTUP_RUNS})",
    )
    parser.add_argument(
        "--sklearn",
        action="store_true",
        help="measure only JaxLinearRegressor next to scikit-learn's LinearRegression, Ridge "
        "and SGDRegressor, fitted on diabetes and on a synthetic problem (--large-samples, "
        f"default {SKLEARN.large_samples:,} here; --large-features, --batch-size, --repeats, "
        "--seed and --quick apply; about 3 minutes)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


@dataclasses.dataclass(frozen=True)
class BenchPlan:
    """What `jaxlinear bench` was asked to measure, checked.

    Attributes:
      sizes: the full benchmark's sizes; `None` with `--startup`.
      startup_runs: runs of each start-up command; `None` without `--startup`.
      command: the command line as given (the options set), recorded in the results.
      sklearn: `--sklearn`: only the scikit-learn comparison, at `sizes`.
    """

    sizes: BenchSizes | None
    startup_runs: int | None
    command: str
    sklearn: bool = False


def plan_from_args(args) -> BenchPlan:
    """The checked plan for parsed `args` (from a parser given `add_arguments`).

    Raises:
      BenchOptionError: for an option that cannot work, or one that does not go with
        `--startup` (start-up is measured alone, so sizes would be silently ignored).
    """
    given = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(BenchSizes)
        if getattr(args, field.name, None) is not None
    }
    if args.sklearn:
        if args.startup or args.startup_runs is not None:
            raise BenchOptionError("--sklearn and --startup measure different things: give one")
        unused = [_flag(name) for name in given if name not in SKLEARN_SIZES]
        if unused:
            raise BenchOptionError(
                f"--sklearn takes only --large-samples, --large-features, --batch-size, "
                f"--repeats, --seed and --quick: drop {', '.join(unused)}"
            )
        sizes = dataclasses.replace(SKLEARN_QUICK if args.quick else SKLEARN, **given)
        sizes.validate()
        command = " ".join(
            ["jaxlinear bench --sklearn", *(["--quick"] if args.quick else [])]
            + [f"{_flag(name)} {value}" for name, value in given.items()]
        )
        return BenchPlan(sizes, None, command, sklearn=True)
    if args.startup:
        unused = [_flag(name) for name in given] + (["--quick"] if args.quick else [])
        if unused:
            raise BenchOptionError(
                f"--startup measures start-up only and takes no sizes: drop {', '.join(unused)}"
            )
        runs = STARTUP_RUNS if args.startup_runs is None else args.startup_runs
        if runs < 1:
            raise BenchOptionError(f"--startup-runs must be at least 1, got {runs}")
        options = [] if args.startup_runs is None else [f"--startup-runs {runs}"]
        return BenchPlan(None, runs, " ".join(["jaxlinear bench --startup", *options]))
    if args.startup_runs is not None:
        raise BenchOptionError("--startup-runs goes with --startup")
    sizes = dataclasses.replace(QUICK if args.quick else BenchSizes(), **given)
    sizes.validate()
    command = " ".join(
        ["jaxlinear bench", *(["--quick"] if args.quick else [])]
        + [f"{_flag(name)} {value}" for name, value in given.items()]
    )
    return BenchPlan(sizes, None, command)


def _flag(field: str) -> str:
    """`small_steps` -> `--small-steps`."""
    return "--" + field.replace("_", "-")
