"""The `rft` command line: one Typer app, one module per command (each registers itself)."""

from __future__ import annotations

from rft_cli.cli.app import app

# Command modules register themselves on `app`; they import heavy libraries lazily, inside
# the command functions, so `rft --help` and `rft validate` start instantly.
from rft_cli.cli import validate, grade, train, evaluate, report, data_cmd, import_cmd, config_cmd  # noqa: E402,F401  isort: skip
from rft_cli.cli import model_cmd  # noqa: E402,F401  isort: skip
from rft_cli.cli import export_cmd  # noqa: E402,F401  isort: skip

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except BrokenPipeError:
        # `rft ... | head`: the reader went away; stop quietly, as other Unix tools do.
        import os
        import sys

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
