"""What every tool shares: a call, its result, the error kinds, and how a reply becomes safe text.

A call's result is one of three things, after OpenAI's published rules for Agent RFT tools:

- an output the model reads (the tool's answer, or its error as text: a 4xx reply, a Python
  exception, a reply too large, a call to a tool that does not exist); errors among these are
  counted per kind in the episode's facts (`tool_errors`);
- a failure that drops the episode (a 5xx, a timeout or a crash, after `retries` more attempts; a
  redirect, never followed): the episode is not graded for training and is counted as dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Errors the model reads as the tool's output (counted, the episode goes on).
TOOL_EXCEPTION = "tool_exception"  # a python tool raised
TOOL_MEMORY = "tool_memory_error"  # a python tool ran out of its memory limit
TOOL_CLIENT_ERROR = "tool_client_error"  # an endpoint answered 4xx
TOOL_TOO_LARGE = "tool_reply_too_large"  # over the reply cap: shown as OpenAI's 413
TOOL_UNKNOWN = "tool_unknown"  # the model called a tool the row does not offer
TOOL_INPUT = "tool_input_error"  # arguments that cannot be sent (nested too deeply)
# Failures that drop the episode once retries are spent (or at once, for a redirect or a load error).
TOOL_SERVER_ERROR = "tool_server_error"  # 5xx, a malformed reply, a refused connection
TOOL_TIMEOUT = "tool_timeout"
TOOL_CRASH = "tool_crash"  # a python tool's worker died or sent an unreadable reply
TOOL_REDIRECT = "tool_redirect"
TOOL_LOAD_ERROR = "tool_load_error"  # a python tool file that fails to load
SHOWN_KINDS = frozenset(
    {TOOL_EXCEPTION, TOOL_MEMORY, TOOL_CLIENT_ERROR, TOOL_TOO_LARGE, TOOL_UNKNOWN, TOOL_INPUT}
)
RETRIED_KINDS = frozenset({TOOL_SERVER_ERROR, TOOL_TIMEOUT, TOOL_CRASH})

_SURROGATE = re.compile("[\ud800-\udfff]")
# OpenAI's cap on a tool's reply (1 MB); a larger one reaches the model as a 413 error.
MAX_REPLY_BYTES = 1024 * 1024


@dataclass
class ToolRequest:
    """One call to run: the tool's name, its arguments (a JSON object as text, OpenAI's shape),
    the call's id, the row it belongs to (`item`) and the episode's `trace_id`."""

    name: str
    arguments: str
    call_id: str = ""
    item: dict[str, Any] | None = None
    trace_id: str = ""


@dataclass
class ToolResult:
    """What a call gave: the text the model reads, the error kind (None for a plain answer), and
    whether the episode must be dropped (then `output` is empty and `detail` says why)."""

    output: str
    error: str | None = None
    detail: str = ""
    drop: bool = False
    attempts: int = 1
    seconds: float = 0.0


def shown_error(kind: str, text: str) -> ToolResult:
    """An error the model reads as the tool's output (`detail`, for people, is one escaped line)."""
    return ToolResult(output=f"error: {text}", error=kind, detail=_one_line(text))


def dropped(kind: str, detail: str, attempts: int = 1) -> ToolResult:
    """A failure that drops the episode."""
    return ToolResult(output="", error=kind, detail=_one_line(detail), drop=True, attempts=attempts)


def _one_line(text: str) -> str:
    """Text from a tool or a server, safe to print and log: cut, control characters escaped."""
    from rft_cli.graders.sandbox import untrusted_text

    return untrusted_text(text)


def tool_text(value: str, limit: int = MAX_REPLY_BYTES) -> str:
    """A reply as text safe to tokenize and write: cut to `limit` characters, lone surrogates
    (which a JSON reply can hold, and a tokenizer refuses) replaced with U+FFFD; newlines kept."""
    text = value[:limit]
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)
