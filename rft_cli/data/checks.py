"""The checks of one row beyond the contract of `records.check_row`: its shape, the fields a grader
reads, a demonstration, lone surrogates, and its prompt's length in tokens."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rft_cli.data.records import (
    KEY_CHARS,
    PROMPT_END_ROLES,
    ROLES,
    Problem,
    demonstration,
    normalize_text,
    prompt_messages,
    prompt_text,
)
from rft_cli.errors import ConfigError


def fast_shape(row: Any, demonstration_field: str) -> tuple[str, int, bool] | None:
    """(prompt text, prompt characters, has a demonstration) for a row of the plain shape, else None.

    The plain shape (every content a non-blank string) is most rows; anything else goes through
    `check_row`, which alone decides what is wrong. This never accepts a row that `check_row` rejects
    (tests/test_validation.py checks that property).
    """
    if type(row) is not dict or "tools" in row:  # tools and tool calls: `check_row` (openai_rows)
        return None
    messages = row.get("messages")
    if type(messages) is not list or not messages:
        return None
    for message in messages:
        if type(message) is not dict or message.get("role") not in ROLES or "tool_calls" in message:
            return None
        content = message.get("content")
        if type(content) is not str or not content or content.isspace():
            return None
    if messages[-1]["role"] == "assistant":
        if len(messages) < 2 or messages[-2]["role"] not in PROMPT_END_ROLES:
            return None
        messages = messages[:-1]
    elif messages[-1]["role"] not in PROMPT_END_ROLES:
        return None
    demo = row.get(demonstration_field) if demonstration_field != "messages" else None
    if demo is not None and (type(demo) is not str or not demo or demo.isspace()):
        return None
    if len(messages) == 1:  # most rows: one call to format and no generator to sum
        message = messages[0]
        text, chars = f"{message['role']}: {message['content']}", len(message["content"])
    else:
        text = "\n".join([f"{m['role']}: {m['content']}" for m in messages])
        chars = sum(len(m["content"]) for m in messages)
    has_demo = demo is not None or len(messages) < len(row["messages"])
    return text, chars, has_demo


def slow_shape(row: dict, demonstration_field: str) -> tuple[str, int, bool]:
    """The same as `fast_shape` for any row that passes `check_row` (text-part contents, ...)."""
    chars = sum(len(m["content"]) for m in prompt_messages(row))
    return prompt_text(row), chars, demonstration(row, demonstration_field) is not None


def prompt_hash(key: str) -> int:
    """A 64-bit digest of a normalised prompt, for the duplicate and exact-overlap checks.

    Python's own string hash: SipHash keyed with a secret drawn per run, so no data can aim at a
    collision (a 64-bit blake2b is public: 2**32 tries find one), four times faster than blake2b
    on a long prompt. The forked second scanning process shares the key.
    """
    return hash(key)


def value_key(value: Any) -> str:
    """A reference value, normalised for the --overlap-fields comparison ("42" matches 42)."""
    if type(value) is str and value.isascii() and value.isalnum() and len(value) <= KEY_CHARS:
        return value.lower()  # what normalize_text gives: no space, no control, ASCII is NFKC
    try:
        text = (
            value
            if isinstance(value, str)
            else json.dumps(value, sort_keys=True, ensure_ascii=False)
        )
    except (
        RecursionError,
        ValueError,
    ):  # nested deeper than json.dumps goes: compare by identity only
        text = f"<unprintable {id(value)}>"
    return normalize_text(text)


def printable(text: str) -> str:
    """A field name that can be printed and written as UTF-8 (lone surrogates become '?')."""
    return text.encode("utf-8", "replace").decode("utf-8")


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def has_lone_surrogate(text: str, row: Any) -> bool:
    """True when a parsed string holds an unpaired surrogate (cheap: only lines with such an escape)."""
    if _SURROGATE_ESCAPE.search(text) is None:
        return False
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (RecursionError, ValueError):
        return False
    return False


def missing_item_field(name: str) -> Problem:
    name = printable(name)
    return Problem(
        "missing_item_field",
        f'missing field "{name}" that the grader reads as {{{{ item.{name} }}}} (add it to every row or change the grader)',
    )


def missing_demonstration(field_name: str) -> Problem:
    return Problem(
        "missing_demonstration",
        f'no warm-up demonstration (add a final assistant message or a "{printable(field_name)}" field)',
    )


def load_tokenizer_dir(path: str | Path) -> Any:
    """A tokenizer from a local directory (transformers is imported here, lazily); ConfigError if it fails."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(
            f"--tokenizer {path}: cannot load a tokenizer from it ({reason}); give a local directory saved with save_pretrained"
        ) from None


def count_prompt_tokens(tokenizer: Any, row: dict) -> int:
    """Tokens in the prompt as the model sees it: the chat template with a generation prompt, if any."""
    messages = prompt_messages(row)
    if getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(
            messages, tools=row.get("tools") or None, add_generation_prompt=True, tokenize=True
        )
        ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
        return len(ids)
    return len(tokenizer(prompt_text(row), add_special_tokens=True)["input_ids"])
