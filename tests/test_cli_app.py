"""The app as a whole: --help and --version on every command, and no traceback on usage errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rft_cli import __version__
from rft_cli.cli import app

runner = CliRunner()


def _command_names() -> list[list[str]]:
    import typer.main

    group = typer.main.get_command(app)
    names = []
    for name, command in group.commands.items():
        names.append([name])
        for sub in getattr(command, "commands", {}) or {}:
            names.append([name, sub])
    return names


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"rft {__version__}"


def test_root_help_lists_exit_codes():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "130 interrupted" in result.output


@pytest.mark.parametrize("command", _command_names(), ids=" ".join)
def test_every_command_has_help_with_an_example(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"`rft {' '.join(command)} --help` shows no worked example"


def test_unknown_command_is_a_usage_error():
    result = runner.invoke(app, ["no-such-command"])
    assert result.exit_code == 2


def test_console_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "rft_cli", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"rft {__version__}"
