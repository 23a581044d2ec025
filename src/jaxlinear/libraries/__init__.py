"""The linear model in each library, one public module each, read side by side:
`jaxlinear.libraries.linen`, `.nnx`, `.equinox`, `.penzai`.

Each module is written in its library's own idiom and needs only that library; the same job
has the same name in all four (`create`, `predict`, `to_canonical`, `from_canonical`,
`train_step`, and the driver's `init_training`, `idiomatic_step`, `split`, `merge`,
`state_step`, `model_of`). Importing this package imports none of them.
"""
