"""Where output goes: results on stdout (Rich or JSON), progress and errors on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


def error(message: str) -> None:
    """Print `Error: <message>` on stderr."""
    stderr.print(f"[bold red]Error:[/] {escape(message)}")


def warning(message: str) -> None:
    """Print `Warning: <message>` on stderr."""
    stderr.print(f"[yellow]Warning:[/] {escape(message)}")


def json_document(document: Any) -> None:
    """Print exactly one JSON document on stdout (no Rich markup, no wrapping)."""
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n")
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
