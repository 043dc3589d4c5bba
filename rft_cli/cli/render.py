"""Where output goes: results on stdout (Rich or JSON), progress and errors on stderr."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)

# C0 and C1 controls (but newline and tab), DEL, and the bidirectional overrides and isolates.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def safe(value: Any) -> str:
    """Any text a file, a model or a server supplied, ready for a Rich string: its markup escaped
    (`[/x]` raised MarkupError, `[link=...]` made a link), control characters and lone surrogates
    shown as escapes (an ESC would reach the terminal; a surrogate cannot be written as UTF-8)."""
    text = _CONTROL.sub(_visible, str(value))
    if not _encodable(text):
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return escape(text)


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def error(message: str) -> None:
    """Print `Error: <message>` on stderr."""
    stderr.print(f"[bold red]Error:[/] {safe(message)}")


def warning(message: str) -> None:
    """Print `Warning: <message>` on stderr."""
    stderr.print(f"[yellow]Warning:[/] {safe(message)}")


def json_document(document: Any) -> None:
    """Print exactly one JSON document on stdout (no Rich markup, no wrapping); a string that
    cannot be written as UTF-8 (a lone surrogate) makes the document ASCII-escaped JSON."""
    text = json.dumps(document, ensure_ascii=False, indent=2, default=str)
    if not _encodable(text):
        text = json.dumps(document, ensure_ascii=True, indent=2, default=str)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def final_scores(summary: dict[str, Any]) -> str:
    """ ", valid_reward_mean 0.97, start 0.85, held-out 0.93 on 64 rows" when each was evaluated."""
    final, start = summary.get("final_valid_reward_mean"), summary.get("start_valid_reward_mean")
    text = f", valid_reward_mean {final:.4g}" if isinstance(final, float | int) else ""
    text += (
        f", start {start:.4g}"
        if isinstance(start, float | int) and summary.get("final_source") != "start"
        else ""
    )
    return text + _held_out(summary)


def _held_out(summary: dict[str, Any]) -> str:
    """ ", held-out 0.93 on 64 rows": final/ on validation rows that took no part in choosing it."""
    score = summary.get("final_heldout_reward_mean")
    if not isinstance(score, float | int):
        return ""
    return f", held-out {score:.4g} on {summary.get('heldout_rows')} rows"
