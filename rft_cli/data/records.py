"""The dataset contract: one JSON object per line in OpenAI's chat fine-tuning format.

A row has `messages` (a non-empty list of {"role", "content"}); a row for RL ends with a
`user` or `developer` turn (the prompt). A warm-up demonstration is either a final `assistant`
message or the field named by `demonstration_field` (default `solution`). Every other top-level
field is a reference field, visible to graders as `item.<field>`.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rft_cli.errors import DataError
from rft_cli.jsonl import parse_line

ROLES = ("system", "developer", "user", "assistant")
PROMPT_END_ROLES = ("user", "developer")
DEFAULT_DEMONSTRATION_FIELD = "solution"


@dataclass(frozen=True)
class Problem:
    """One broken rule of the contract: a machine-readable code and a one-sentence fix."""

    code: str
    message: str


def message_text(content: Any) -> str | None:
    """The text of a message's content (a string or a list of text parts), or None if malformed."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                return None
            if not isinstance(part.get("text"), str):
                return None
            parts.append(part["text"])
        return "".join(parts)
    return None


def check_row(row: Any, demonstration_field: str = DEFAULT_DEMONSTRATION_FIELD) -> list[Problem]:
    """Every rule of the contract that `row` breaks (an empty list for a valid row)."""
    if not isinstance(row, dict):
        kind = type(row).__name__ if row is not None else "null"
        return [Problem("row_not_object", f"the row is a JSON {kind}, not an object (write one JSON object per line)")]
    messages = row.get("messages")
    if messages is None:
        return [Problem("missing_messages", 'missing field "messages" (each row needs a "messages" list ending in a user turn)')]
    if not isinstance(messages, list) or not messages:
        return [Problem("bad_messages", '"messages" must be a non-empty list of {"role", "content"} objects')]
    problems = []
    for i, message in enumerate(messages):
        problems.extend(_check_message(i, message))
    if problems:
        return problems
    roles = [m["role"] for m in messages]
    demo_field = row.get(demonstration_field) if demonstration_field != "messages" else None
    if demo_field is not None and (not isinstance(demo_field, str) or not demo_field.strip()):
        problems.append(Problem("bad_demonstration", f'"{demonstration_field}" must be a non-empty string (the warm-up demonstration)'))
    if roles[-1] == "assistant":
        if len(roles) < 2 or roles[-2] not in PROMPT_END_ROLES:
            problems.append(Problem("no_prompt", "the final assistant message must follow a user or developer turn (the prompt it answers)"))
    elif roles[-1] not in PROMPT_END_ROLES:
        problems.append(Problem("bad_last_role", f'the last message has role "{roles[-1]}"; a row must end with a user or developer turn (or an assistant demonstration after one)'))
    return problems


def _check_message(i: int, message: Any) -> list[Problem]:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        return [Problem("bad_message", f'{where} must be an object with "role" and "content"')]
    role = message.get("role")
    if role not in ROLES:
        return [Problem("bad_role", f'{where}.role is {json.dumps(role)}; use one of {", ".join(ROLES)}')]
    if "content" not in message:
        return [Problem("missing_content", f'{where} has no "content" (give the message text as a string)')]
    text = message_text(message["content"])
    if text is None:
        return [Problem("bad_content", f'{where}.content must be a string or a list of {{"type": "text", "text": ...}} parts')]
    if not text.strip():
        return [Problem("empty_content", f"{where}.content is empty (write the message text)")]
    return []


def prompt_messages(row: dict) -> list[dict[str, str]]:
    """The prompt: every message up to the last user/developer turn, contents flattened to text."""
    messages = [{"role": m["role"], "content": message_text(m["content"]) or ""} for m in row["messages"]]
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    return messages


def demonstration(row: dict, demonstration_field: str = DEFAULT_DEMONSTRATION_FIELD) -> str | None:
    """The warm-up demonstration: a final assistant message, else the demonstration field."""
    last = row["messages"][-1]
    if last.get("role") == "assistant":
        return message_text(last["content"])
    value = row.get(demonstration_field)
    return value if isinstance(value, str) and value.strip() else None


def reference_fields(row: dict, demonstration_field: str = DEFAULT_DEMONSTRATION_FIELD) -> dict[str, Any]:
    """The top-level fields other than `messages` and the demonstration field."""
    return {k: v for k, v in row.items() if k not in ("messages", demonstration_field)}


def item_of(row: dict, demonstration_field: str) -> dict[str, Any]:
    """What a grader sees as `item` in training and in the grader self-test: the row's reference
    fields (and its messages)."""
    item = dict(reference_fields(row, demonstration_field))
    item.setdefault("messages", row.get("messages"))
    return item


def prompt_text(row: dict) -> str:
    """The prompt as one string (roles included), used for duplicate and overlap checks."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt_messages(row))


def normalize_text(text: str) -> str:
    """NFKC, case folding and collapsed whitespace: the key for exact-overlap checks."""
    if text.isascii():  # ASCII is already NFKC, and its case folding is lower()
        return " ".join(text.lower().split())
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def iter_rows(path: str | Path, demonstration_field: str = DEFAULT_DEMONSTRATION_FIELD) -> Iterator[tuple[int, dict]]:
    """Yield (line number, row) for each non-blank line, raising DataError at the first bad line."""
    path = Path(path)
    try:
        handle = path.open("r", encoding="utf-8-sig", newline="\n")
    except OSError as exc:
        raise DataError(f"{path}: cannot open ({exc.strerror or exc})") from None
    with handle:
        line_no = 0
        try:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = parse_line(line)
                except ValueError as exc:
                    raise DataError(f"{path} line {line_no}: invalid JSON ({exc}); run `rft validate {path}` for every problem") from None
                problems = check_row(row, demonstration_field)
                if problems:
                    raise DataError(f"{path} line {line_no}: {problems[0].message}")
                yield line_no, row
        except UnicodeDecodeError as exc:
            raise DataError(f"{path} line {line_no + 1}: not valid UTF-8 ({exc.reason}); save the file as UTF-8") from None


def load_rows(path: str | Path, demonstration_field: str = DEFAULT_DEMONSTRATION_FIELD) -> list[dict]:
    """All rows of a JSONL file that follows the contract; raises DataError naming the first bad line."""
    rows = [row for _, row in iter_rows(path, demonstration_field)]
    if not rows:
        raise DataError(f"{path}: the file has no rows (write one JSON object per line)")
    return rows
