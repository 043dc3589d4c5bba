"""`rft ... --help` reads as Typer and click users expect (rft_cli/cli/help_format.py)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.cli.docs_gen import _command_paths, command_help

PATHS = _command_paths()


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) or "rft" for p in PATHS])
def test_help_shows_click_metavars_not_python_types(path):
    """Typer 0.29 printed every option's Python type in angle brackets, flags included
    (`--strict <bool>`, `--set <list[str]>`, `--valid <file>`) and `{TRAIN}` in the usage line;
    help_format swaps the parameters to click's display: `--valid FILE`, a bare `--strict`, `TRAIN`."""
    text = command_help(path)
    assert not re.findall(r"<(bool|str|int|float|path|file|dir|list\[[^\]]*\]|int range|float range)>", text)
    assert not re.search(r"Usage: .*\{", text)


def test_what_the_options_read():
    text = command_help(["validate"])
    assert "Usage: rft validate [OPTIONS] TRAIN" in text
    assert re.search(r"--valid +FILE ", text) and re.search(r"--format +\[text\|json\] ", text)
    assert re.search(r"--max-errors +INTEGER \[x>=1\] ", text)
    assert re.search(r"--strict +Duplicate prompts", text)  # a flag takes no value, so shows none
    assert re.search(r"--help +-h +Show this message", text)
    assert re.search(r"--set +TEXT ", command_help(["train"]))
    assert "Usage: rft report [OPTIONS] RUNS..." in command_help(["report"])


def test_parsing_is_unchanged(tmp_path):
    """Only the display changed: values still parse, bad values are still usage errors (exit 2)."""
    bad = CliRunner().invoke(app, ["validate", "data/example/train.jsonl", "--max-errors", "x"])
    assert bad.exit_code == 2
    missing = CliRunner().invoke(app, ["validate"])
    assert missing.exit_code == 2 and "TRAIN" in missing.output
    ok = CliRunner().invoke(app, ["validate", "data/example/train.jsonl", "--max-errors", "3", "--strict"])
    assert ok.exit_code == 0, ok.output
