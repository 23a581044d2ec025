"""Running the command line in-process, as the CLI tests do."""

from __future__ import annotations

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
