"""JSON Lines, read one way: every `.jsonl` file rft reads goes through `parse_line`.

Lines are split on "\\n" only: rft writes JSON with `ensure_ascii=False`, so a string may hold a raw
U+2028 or U+0085, which `str.splitlines` would split on. Only regular files are read, and a line
over `files.MAX_LINE_BYTES` is refused without being held whole.

- `read_records(path, warnings)`: files rft writes itself (metrics.jsonl, samples/*.jsonl). A line
  that is not a complete JSON object (a run stopped mid-write) is skipped and noted in `warnings`;
  a missing file has no records.
- `read_values(path, what)`: files a user gives (rows to grade, samples files). The first line that
  is not JSON is a DataError naming it.
- `rft_cli.data.records.iter_rows`: dataset rows, each checked against the dataset contract.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rft_cli.errors import ConfigError, DataError
from rft_cli.files import MAX_LINE_BYTES, LineTooLong, open_regular, size_text, split_lines


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (strict JSON has no NaN or Infinity)")


_STRICT_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_line(text: str) -> Any:
    """Parse one line as strict JSON (NaN and Infinity are rejected); raises ValueError."""
    try:
        return _STRICT_DECODER.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _lines(path: Path, what: str) -> Iterator[tuple[int, bytes | LineTooLong]]:
    """(line number, bytes) of each line of a regular file, split on b"\\n" only; a line over
    `files.MAX_LINE_BYTES` comes as a `files.LineTooLong`. ConfigError when the file cannot be read."""
    try:
        with open_regular(path) as handle:
            for number, raw in enumerate(split_lines(handle), start=1):
                yield (
                    number,
                    raw.removeprefix(_BOM) if number == 1 and isinstance(raw, bytes) else raw,
                )
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None


_BOM = b"\xef\xbb\xbf"
_TOO_LONG = f"longer than {size_text(MAX_LINE_BYTES)}, more than rft reads as one line"


def read_records(path: str | Path, warnings: list[str] | None = None) -> list[dict[str, Any]]:
    """Every complete JSON object line of a file rft wrote; torn or foreign lines are skipped.

    A note for each skipped line is appended to `warnings` when a list is given. A missing file
    has no records; one that cannot be read is a ConfigError.
    """
    path = Path(path)
    if not path.exists():
        return []
    records, skipped, last = [], [], 0
    for last, raw in _lines(path, "it"):
        if isinstance(raw, LineTooLong):
            skipped.append((last, f"is {_TOO_LONG}"))
            continue
        line = raw.decode("utf-8", errors="replace")
        if not line.strip():
            continue
        try:
            record = parse_line(line)
        except ValueError:
            skipped.append((last, "is not complete JSON (a run stopped mid-write?)"))
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped.append((last, "is not a JSON object"))
    notes = warnings if warnings is not None else []
    for number, why in skipped:
        where = "the last line" if number == last else f"line {number}"
        notes.append(f"{path} {where} {why}; skipped it")
    return records


def read_values(path: str | Path, what: str) -> list[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a file a user gave; DataError at a line that is not JSON."""
    path = Path(path)
    values = []
    for number, raw in _lines(path, what):
        if isinstance(raw, LineTooLong):
            raise DataError(f"{path} line {number}: {_TOO_LONG}; shorten it")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path} line {number}: not valid UTF-8 ({exc.reason}); save the file as UTF-8"
            ) from None
        if not line.strip():
            continue
        try:
            values.append((number, parse_line(line)))
        except ValueError as exc:
            raise DataError(f"{path} line {number}: invalid JSON ({exc})") from None
    return values
