"""One rich progress bar on stderr for the CLI's long commands."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def progress_bar(*extra_columns, quiet: bool, label_width: int = 8) -> Iterator:
    """Yields a started `rich.progress.Progress` on stderr, or `None` with `quiet`.

    Columns: the task's description, a bar, `done/total`, then `extra_columns`.
    """
    if quiet:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn(f"{{task.description:>{label_width}}}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        console=Console(stderr=True),
    ) as bar:
        yield bar
