"""JSON Lines, read one way: every `.jsonl` file rft reads goes through `parse_line`.

- `read_records(path, warnings)`: files rft writes itself (metrics.jsonl, samples/*.jsonl). A line
  that is not a complete JSON object (a run stopped mid-write) is skipped and noted in `warnings`;
  a missing file has no records.
- `read_values(path, what)`: files a user gives (rows to grade, samples files). The first line that
  is not JSON is a DataError naming it.
- `rft_cli.data.records.iter_rows`: dataset rows, each checked against the dataset contract.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rft_cli.errors import ConfigError, DataError


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (strict JSON has no NaN or Infinity)")


_STRICT_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_line(text: str) -> Any:
    """Parse one line as strict JSON (NaN and Infinity are rejected); raises ValueError."""
    try:
        return _STRICT_DECODER.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_records(path: str | Path, warnings: list[str] | None = None) -> list[dict[str, Any]]:
    """Every complete JSON object line of a file rft wrote; torn or foreign lines are skipped.

    A note for each skipped line is appended to `warnings` when a list is given. A missing file
    has no records; one that cannot be read is a ConfigError.
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    notes = warnings if warnings is not None else []
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = parse_line(line)
        except ValueError:
            where = "the last line" if number == len(lines) else f"line {number}"
            notes.append(f"{path} {where} is not complete JSON (a run stopped mid-write?); skipped it")
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            notes.append(f"{path} line {number} is not a JSON object; skipped it")
    return records


def read_values(path: str | Path, what: str) -> list[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a file a user gave; DataError at a line that is not JSON."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 ({exc.reason}); save the file as UTF-8") from None
    values = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values.append((number, parse_line(line)))
        except ValueError as exc:
            raise DataError(f"{path} line {number}: invalid JSON ({exc})") from None
    return values
