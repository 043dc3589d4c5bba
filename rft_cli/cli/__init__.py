"""The `rft` command line: one Typer app, one module per command (each registers itself)."""

from __future__ import annotations

from rft_cli.cli.app import app

# Command modules register themselves on `app`; they import heavy libraries lazily, inside
# the command functions, so `rft --help` and `rft validate` start instantly.
from rft_cli.cli import validate, grade, train, evaluate, report, data_cmd  # noqa: E402,F401  isort: skip

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
