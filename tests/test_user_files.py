"""The one reader of a file the user names (`rft_cli.files.read_text`, `read_yaml`, `read_json`).

Every reader of a whole user file goes through it, so each failure reads the same whoever reads:
the file, what it should be, and why, as the reader's own error class (issue 25: the same
failure was written five ways with three error classes, and a tool's Python file was read with
`Path.read_text`, which waits forever on a FIFO).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from rft_cli import files
from rft_cli.config import load_run_config
from rft_cli.data.reft import load_reft_json
from rft_cli.errors import ConfigError, DataError, GraderError
from rft_cli.graders import load_grader, read_grader_file
from rft_cli.openai_import import read_job
from rft_cli.samples_file import read_sample_file
from rft_cli.tools.toolbox import definitions_of, read_tools_file
from rft_cli.training.resume import changed_settings

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "tiny-test.yaml"


def _resumed(path: Path) -> object:
    return changed_settings(path.parent, load_run_config(RECIPE))


def _tool(path: Path) -> object:
    return definitions_of([SimpleNamespace(server_url=None, python=str(path), name="f")])


# (name, the file's name, read it, the error class, what the message calls it, its syntax)
READERS = [
    ("run config", "run.yaml", load_run_config, ConfigError, "the run config", "YAML"),
    ("grader", "grader.yaml", load_grader, GraderError, "the grader file", "YAML"),
    ("grader json", "grader.json", read_grader_file, GraderError, "the grader file", "JSON"),
    ("sample", "sample.json", read_sample_file, ConfigError, "the sample file", None),
    ("job", "job.json", read_job, ConfigError, "the job file", "JSON"),
    ("reft", "svamp.json", load_reft_json, DataError, "the ReFT file", "JSON"),
    ("tools", "tools.yaml", read_tools_file, ConfigError, "the tools file", "YAML"),
    ("tool source", "tool.py", _tool, ConfigError, "the Python file of tools[0].python", None),
    ("resume", "config.yaml", _resumed, ConfigError, "the run's config", "YAML"),
]
IDS = [reader[0] for reader in READERS]
# A run folder without a config.yaml (or with a folder of that name) is resumed without comparing.
OPENED, OPENED_IDS = READERS[:-1], IDS[:-1]


def _error_of(read, path: Path, seconds: float = 20.0) -> Exception:
    """The exception `read(path)` raises, in a thread: a reader that blocks fails, not hangs."""
    box: dict[str, Exception] = {}

    def run() -> None:
        try:
            read(path)
        except Exception as exc:  # noqa: BLE001 - the test inspects whatever it is
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"reading {path} blocked for {seconds} s"
    assert "error" in box, f"reading {path} raised nothing"
    return box["error"]


def _check(error: Exception, kind: type, path: Path, *parts: str) -> None:
    assert type(error) is kind, repr(error)
    message = str(error)
    assert message.startswith(str(path)) and "\n" not in message, message
    for part in parts:
        assert part in message, message


@pytest.mark.parametrize("name,file_name,read,kind,what,syntax", OPENED, ids=OPENED_IDS)
def test_a_missing_file(tmp_path, name, file_name, read, kind, what, syntax):
    path = tmp_path / file_name
    _check(_error_of(read, path), kind, path, f"cannot read {what} (file not found)")


@pytest.mark.parametrize("name,file_name,read,kind,what,syntax", OPENED, ids=OPENED_IDS)
def test_a_folder(tmp_path, name, file_name, read, kind, what, syntax):
    path = tmp_path / file_name
    path.mkdir()
    _check(_error_of(read, path), kind, path, f"cannot read {what} (it is a folder")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("name,file_name,read,kind,what,syntax", OPENED, ids=OPENED_IDS)
def test_a_fifo_is_refused_at_once(tmp_path, name, file_name, read, kind, what, syntax):
    path = tmp_path / file_name
    os.mkfifo(path)
    _check(_error_of(read, path, seconds=5.0), kind, path, f"cannot read {what}", "FIFO")


@pytest.mark.parametrize("name,file_name,read,kind,what,syntax", READERS, ids=IDS)
def test_bytes_that_are_not_utf8(tmp_path, name, file_name, read, kind, what, syntax):
    path = tmp_path / file_name
    path.write_bytes(b"a: 1\n\xff\xfe\n")
    _check(
        _error_of(read, path),
        kind,
        path,
        f"{what} is not valid UTF-8 (invalid start byte at byte 5); save it as UTF-8",
    )


SYNTAX = {
    "YAML": ("a: [1, 2\n", " line 2: not valid YAML ("),
    "JSON": ("[1, 2", ": not valid JSON ("),
}


@pytest.mark.parametrize(
    "name,file_name,read,kind,what,syntax",
    [r for r in READERS if r[5]],
    ids=[r[0] for r in READERS if r[5]],
)
def test_a_syntax_error_names_the_place(tmp_path, name, file_name, read, kind, what, syntax):
    path = tmp_path / file_name
    text, expected = SYNTAX[syntax]
    path.write_text(text, encoding="utf-8")
    _check(_error_of(read, path), kind, path, f"{path}{expected}")


@pytest.mark.parametrize(
    "text", ["[" * 10_000, "a:\n" + "".join(f"{' ' * i}- \n" for i in range(1, 4000))]
)
def test_nesting_too_deep_for_the_parser_is_an_error(tmp_path, text):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="nested too deeply for the parser"):
        files.read_yaml(path, "the thing")


def test_a_byte_cap_and_a_bom_are_the_readers(tmp_path):
    """The cap is the caller's (None: any size, for ReFT's multi-megabyte files); the message
    says it as people write sizes; a UTF-8 BOM (Windows editors write one) is dropped."""
    path = tmp_path / "big.json"
    path.write_text("[" + "1," * 100 + "1]")
    assert files.read_json(path, "a list", DataError, limit=None)[-1] == 1
    with pytest.raises(DataError, match=r"big.json: cannot read a list \(it is over 64 bytes,"):
        files.read_json(path, "a list", DataError, limit=64)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert files.read_yaml(bom, "a mapping") == {"a": 1}
