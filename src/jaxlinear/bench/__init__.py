"""`jaxlinear bench`: what the four libraries' training costs, next to hand-written JAX.

It measures, in one process, each library's three training paths (the textbook jitted step,
the fast step and the fused `lax.scan` loop), run through the very driver `fit` uses
(`jaxlinear.training`), against a raw-JAX reference on a small and a large problem; and on
the large problem what bounds training from below: the memory bandwidth, the closed-form
solution, scikit-learn, and the peak resident memory of training (in child processes).
Every figure is a median over rounds with its min and max, and every goal it checks is
printed with the reason it is a goal.

`jaxlinear bench --startup` measures instead how long the command line takes to start, in
fresh processes, against the import time of jax and of the libraries.
`jaxlinear bench --sklearn` measures instead the scikit-learn estimator,
`jaxlinear.sklearn.JaxLinearRegressor`, next to `LinearRegression`, `Ridge` and
`SGDRegressor` fitted on the same data.

Modules, one job each (importing this package imports none of them):

- `options`: the command's options and their checks (imports nothing heavy);
- `problems`: the data and the raw-JAX reference;
- `timing`: the variants timed once per round, and the rounds;
- `summary`: medians, ranges and per-round ratios of one problem;
- `baselines`: the closed form and scikit-learn;
- `memory`: peak resident memory of training, in child processes;
- `startup`: start-up times of the command line, in child processes;
- `estimators`: `--sklearn`, `JaxLinearRegressor` next to scikit-learn's linear models;
- `targets`: the goals, each with its reason;
- `tables`: the rich tables;
- `run`: the whole benchmark, and the command.
"""
