"""The dataset contract: one JSON object per line in OpenAI's chat fine-tuning format.

A row has `messages` (a non-empty list of {"role", "content"}); a row for RL ends with a
`user` or `developer` turn (the prompt), or a `tool` result. A warm-up demonstration is either a
final `assistant` message (its text, its `tool_calls`, or both) or the field named by
`demonstration_field` (default `solution`). `tools` holds the row's function definitions
(OpenAI's RFT format, checked in `openai_rows`). Every other top-level field is a reference
field, visible to graders as `item.<field>`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rft_cli.data import openai_rows
from rft_cli.errors import DataError
from rft_cli.files import MAX_LINE_BYTES, LineTooLong, open_regular, size_text, split_lines
from rft_cli.jsonl import parse_line

# The roles of a plain row (validation's fast path); `tool` results come with OpenAI's tool calls.
ROLES = ("system", "developer", "user", "assistant")
ALL_ROLES = (*ROLES, openai_rows.TOOL_ROLE)
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
        return [
            Problem(
                "row_not_object",
                f"the row is a JSON {kind}, not an object (write one JSON object per line)",
            )
        ]
    messages = row.get("messages")
    if messages is None:
        return [
            Problem(
                "missing_messages",
                'missing field "messages" (each row needs a "messages" list ending in a user turn)',
            )
        ]
    if not isinstance(messages, list) or not messages:
        return [
            Problem(
                "bad_messages", '"messages" must be a non-empty list of {"role", "content"} objects'
            )
        ]
    problems = (
        [Problem("bad_tools", text) for text in openai_rows.check_tools(row["tools"])]
        if "tools" in row
        else []
    )
    names = openai_rows.tool_names(row.get("tools"))
    definitions = openai_rows.function_definitions(row.get("tools")) if not problems else {}
    call_ids: set[str] = set()
    for i, message in enumerate(messages):
        problems.extend(_check_message(i, message, names, call_ids, definitions))
        if isinstance(message, dict) and message.get("role") == "assistant":
            call_ids |= openai_rows.call_ids_of(message)
    problems += _unanswered_results(messages)
    if problems:
        return problems
    roles = [m["role"] for m in messages]
    demo_field = row.get(demonstration_field) if demonstration_field != "messages" else None
    if demo_field is not None and (not isinstance(demo_field, str) or not demo_field.strip()):
        problems.append(
            Problem(
                "bad_demonstration",
                f'"{demonstration_field}" must be a non-empty string (the warm-up demonstration)',
            )
        )
    ends = (*PROMPT_END_ROLES, openai_rows.TOOL_ROLE)
    if roles[-1] == "assistant":
        if len(roles) < 2 or roles[-2] not in ends:
            problems.append(
                Problem(
                    "no_prompt",
                    "the final assistant message must follow a user or developer turn (the prompt it answers) or a tool result",
                )
            )
    elif roles[-1] not in ends:
        problems.append(
            Problem(
                "bad_last_role",
                f'the last message has role "{roles[-1]}"; a row must end with a user or developer turn (or a tool result, or an assistant demonstration after one)',
            )
        )
    return problems


def _unanswered_results(messages: list) -> list[Problem]:
    """A `tool` message must answer a call of the assistant turn before it (one message per call)."""
    problems, open_calls = [], 0
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role != openai_rows.TOOL_ROLE:
            calls = message.get("tool_calls") if role == "assistant" else None
            open_calls = len(calls) if isinstance(calls, list) else 0
        elif open_calls == 0:
            problems.append(
                Problem(
                    "tool_without_call",
                    f"messages[{i}] is a tool result, but it answers no call: each tool message follows "
                    "the assistant turn whose tool_calls it answers, one message per call",
                )
            )
        else:
            open_calls -= 1
    return problems


def _check_message(
    i: int,
    message: Any,
    tool_names: set[str] | None = None,
    call_ids: frozenset[str] | set[str] = frozenset(),
    definitions: dict[str, dict] | None = None,
) -> list[Problem]:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        return [Problem("bad_message", f'{where} must be an object with "role" and "content"')]
    role = message.get("role")
    if role not in ALL_ROLES:
        return [
            Problem(
                "bad_role", f"{where}.role is {json.dumps(role)}; use one of {', '.join(ALL_ROLES)}"
            )
        ]
    media = openai_rows.media_part_problem(where, message.get("content"))
    if media is not None:
        return [Problem("media_content", media)]
    text = message_text(message.get("content"))
    if role == openai_rows.TOOL_ROLE:
        return [
            Problem("bad_tool_message", p)
            for p in openai_rows.check_tool_message(where, message, text, set(call_ids))
        ]
    if (
        role == "assistant" and message.get("tool_calls") is not None
    ):  # null: no calls, as exports write it
        problems = [
            Problem("bad_tool_calls", p)
            for p in openai_rows.check_tool_calls(
                where, message["tool_calls"], tool_names, definitions
            )
        ]
        if message.get("content") is not None and text is None:
            problems.append(
                Problem(
                    "bad_content",
                    f'{where}.content must be a string, a list of {{"type": "text", "text": ...}} parts, or null beside tool calls',
                )
            )
        return problems
    if "content" not in message:
        return [
            Problem(
                "missing_content", f'{where} has no "content" (give the message text as a string)'
            )
        ]
    if text is None:
        return [
            Problem(
                "bad_content",
                f'{where}.content must be a string or a list of {{"type": "text", "text": ...}} parts',
            )
        ]
    if not text.strip():
        return [Problem("empty_content", f"{where}.content is empty (write the message text)")]
    return []


def tools_file_problems(row: dict, definitions: dict[str, dict | None]) -> list[Problem]:
    """A valid row checked against the tools of a recipe or tools file (`rft validate --tools`):
    each tool the row offers must be run by one of them; a row without `tools` offers them all,
    so its calls must name one and fit its parameters. `definitions`: name -> `function` object
    (None for an endpoint tool with no schema)."""
    offered = openai_rows.tool_names(row.get("tools"))
    known = ", ".join(sorted(definitions)) or "none"
    if offered is not None:
        return [
            Problem(
                "tool_not_run",
                f'"tools" defines "{name}", which the tools file does not run (it runs: {known}); add a tool named {name}',
            )
            for name in sorted(offered - set(definitions))
        ]
    schemas = {name: d for name, d in definitions.items() if d is not None}
    problems = []
    for i, message in enumerate(row["messages"]):
        if message.get("role") == "assistant" and message.get("tool_calls"):
            problems += [
                Problem("bad_tool_calls", text)
                for text in openai_rows.check_tool_calls(
                    f"messages[{i}]",
                    message["tool_calls"],
                    set(definitions),
                    schemas,
                    "the tools file",
                )
            ]
    return problems


def prompt_messages(row: dict) -> list[dict[str, Any]]:
    """The prompt: every message before a final assistant demonstration, in the shape chat templates
    read (contents flattened to text; tool calls and tool results kept, see `openai_rows`)."""
    messages = [_template_message(m) for m in row["messages"]]
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    return messages


def episode_prompt_messages(row: dict) -> list[dict[str, Any]]:
    """The prompt of an episode with tools: a row that ends with an assistant message holds a
    demonstrated episode (its calls, tool results and answer after the last user or developer
    turn), so the prompt ends at that turn; any other row is all prompt (`prompt_messages`)."""
    messages = row["messages"]
    if not messages or messages[-1].get("role") != "assistant":
        return prompt_messages(row)
    last = max((i for i, m in enumerate(messages) if m.get("role") in PROMPT_END_ROLES), default=-1)
    return [_template_message(m) for m in messages[: last + 1]]


def episode_turns(row: dict) -> list[dict[str, Any]]:
    """The demonstrated turns after the episode's prompt (`episode_prompt_messages`): assistant
    turns, their calls and the tool messages answering them, in the shape chat templates read."""
    messages = row["messages"]
    return [_template_message(m) for m in messages[len(episode_prompt_messages(row)) :]]


def _template_message(message: dict) -> dict[str, Any]:
    text = message_text(message.get("content")) or ""
    if (
        len(message) == 2 and "content" in message
    ):  # the plain {"role", "content"} message of most rows
        return {"role": message["role"], "content": text}
    return openai_rows.template_message(message, text)


def demonstration(row: dict, demonstration_field: str = DEFAULT_DEMONSTRATION_FIELD) -> str | None:
    """The warm-up demonstration's text: a final assistant message, else the demonstration field.

    A final assistant message that only calls tools has the text "" (a demonstration all the same);
    `demonstration_message` gives its tool calls.
    """
    last = row["messages"][-1]
    if last.get("role") == "assistant":
        text = message_text(last.get("content"))
        return text if text is not None or not last.get("tool_calls") else ""
    value = row.get(demonstration_field)
    return value if isinstance(value, str) and value.strip() else None


def demonstration_message(
    row: dict, demonstration_field: str = DEFAULT_DEMONSTRATION_FIELD
) -> dict[str, Any] | None:
    """The demonstration as the assistant message the warm-up trains on (with its tool calls), or None."""
    last = row["messages"][-1]
    if last.get("role") == "assistant":
        return _template_message(last)
    text = demonstration(row, demonstration_field)
    return {"role": "assistant", "content": text} if text is not None else None


def demonstration_sample(
    row: dict, demonstration_field: str = DEFAULT_DEMONSTRATION_FIELD
) -> dict[str, Any] | str | None:
    """The demonstration as a grader's sample: a sample with `output_tools` for a final assistant
    message with tool calls, else its text (read for calls like a model's answer), or None."""
    text = demonstration(row, demonstration_field)
    last = row["messages"][-1]
    if text is not None and last.get("role") == "assistant" and last.get("tool_calls"):
        return {"output_text": text, "output_tools": openai_rows.openai_tool_calls(last)}
    return text


def demonstration_episode_sample(
    row: dict, demonstration_field: str = DEFAULT_DEMONSTRATION_FIELD
) -> dict[str, Any] | str | None:
    """A demonstrated episode as a grader's sample, as `rft eval --tools` grades one: for a row
    ending with an assistant message, every call of the turns after the prompt
    (`episode_prompt_messages`) is in `output_tools`, the last message's text is `output_text`,
    and `episode` holds `tool_calls`, `steps` and `tool_errors` (tool results that start with
    "error:"); its token counts are unknown without a tokenizer and left out. Other rows: as
    `demonstration_sample`."""
    messages = row["messages"]
    if messages[-1].get("role") != "assistant":
        return demonstration_sample(row, demonstration_field)
    tail = messages[len(episode_prompt_messages(row)) :]
    turns = [m for m in tail if m.get("role") == "assistant"]
    calls = [call for m in turns for call in openai_rows.openai_tool_calls(m)]
    errors = sum(
        m.get("role") == openai_rows.TOOL_ROLE
        and (message_text(m.get("content")) or "").startswith("error:")
        for m in tail
    )
    return {
        "output_text": message_text(messages[-1].get("content")) or "",
        "output_tools": calls,
        "episode": {
            "tool_calls": len(calls),
            "steps": len(turns),
            "tool_errors": errors,
            "end": "answer",
            "dropped": False,
        },
    }


def reference_fields(
    row: dict, demonstration_field: str = DEFAULT_DEMONSTRATION_FIELD
) -> dict[str, Any]:
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


# A key keeps this many normalised characters; a longer text's key ends with a digest of all of it.
KEY_CHARS = 1 << 16


def normalize_text(text: str) -> str:
    """NFKC, case folding and collapsed whitespace: the key for exact-overlap checks.

    A text of more than KEY_CHARS characters keeps its first KEY_CHARS normalised characters and
    a digest of the whole normalised text: NFKC can make a text 18 times longer (U+FDFA), and a
    6 MiB row of such characters held 0.78 GB as one normalised string.
    """
    return _long_key(text) if len(text) > KEY_CHARS else _normalize(text)


_ASCII_CONTROLS = bytes(range(32)) + b"\x7f"  # the ASCII characters that are not printable


def _normalize(text: str) -> str:
    if text.isascii():  # ASCII is already NFKC, and its case folding is lower()
        folded = text.lower()
        # isprintable() looks each character up in the Unicode tables (4 us for 1,300
        # characters); for ASCII, deleting the controls and comparing lengths says the same.
        printable = len(folded.encode().translate(None, _ASCII_CONTROLS)) == len(folded)
    else:
        folded = unicodedata.normalize("NFKC", text).casefold()
        printable = folded.isprintable()
    # A printable string holds no whitespace but " " (every other space is a separator or a
    # control), so with no double space, split and join would give it back with its ends
    # stripped, built again one word at a time (half the cost on long prompts).
    if printable and "  " not in folded:
        return folded.strip(" ")
    return " ".join(folded.split())


_SPACE = re.compile(r"\s")


def _long_key(text: str) -> str:
    """The first KEY_CHARS characters of the normalised text, then " #" and a digest of all of it;
    normalised piece by piece (pieces of 16K to 32K characters, cut before a space where there is
    one nearby: NFKC and case folding never join a character with the space after it)."""
    from hashlib import blake2b

    digest, kept, size = blake2b(digest_size=16), [], 0
    for piece, spaced in _pieces(text):
        normal = _normalize(piece)
        if not normal:
            continue
        joined = (" " if spaced and size else "") + normal
        digest.update(joined.encode("utf-8", "surrogatepass"))
        if size < KEY_CHARS:
            kept.append(joined)
        size += len(joined)
    return "".join(kept)[:KEY_CHARS] + " #" + digest.hexdigest()


_PIECE = 1 << 14


def _pieces(text: str) -> Iterator[tuple[str, bool]]:
    """(piece, whether it starts at a space) covering `text`, each at most 2 * _PIECE characters."""
    start = 0
    while start < len(text):
        end = min(len(text), start + _PIECE)
        space = _SPACE.search(text, end, end + _PIECE) if end < len(text) else None
        cut = space.start() if space is not None else min(len(text), end + _PIECE)
        yield text[start:cut], start > 0 and text[start].isspace()
        start = cut


def iter_rows(
    path: str | Path, demonstration_field: str = DEFAULT_DEMONSTRATION_FIELD
) -> Iterator[tuple[int, dict]]:
    """Yield (line number, row) for each non-blank line, raising DataError at the first bad line."""
    path = Path(path)
    try:
        handle = open_regular(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot open ({exc.strerror or exc})") from None
    with handle:
        try:
            for line_no, raw in enumerate(split_lines(handle), start=1):
                if isinstance(raw, LineTooLong):
                    raise DataError(
                        f"{path} line {line_no}: longer than {size_text(MAX_LINE_BYTES)}, more than rft reads as one row; shorten it"
                    )
                row = _parse_row(path, line_no, raw)
                if row is None:
                    continue
                problems = check_row(row, demonstration_field)
                if problems:
                    raise DataError(f"{path} line {line_no}: {problems[0].message}")
                yield line_no, row
        except OSError as exc:
            raise DataError(f"{path}: read error ({exc.strerror or exc})") from None


def _parse_row(path: Path, line_no: int, raw: bytes) -> Any:
    """The JSON value of one line (None for a blank one); DataError when it is not UTF-8 JSON."""
    try:
        line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} line {line_no}: not valid UTF-8 ({exc.reason}); save the file as UTF-8"
        ) from None
    if not line.strip():
        return None
    try:
        return parse_line(line)
    except ValueError as exc:
        raise DataError(
            f"{path} line {line_no}: invalid JSON ({exc}); run `rft validate {path}` for every problem"
        ) from None


def load_rows(
    path: str | Path, demonstration_field: str = DEFAULT_DEMONSTRATION_FIELD
) -> list[dict]:
    """All rows of a JSONL file that follows the contract; raises DataError naming the first bad line."""
    rows = [row for _, row in iter_rows(path, demonstration_field)]
    if not rows:
        raise DataError(f"{path}: the file has no rows (write one JSON object per line)")
    return rows
