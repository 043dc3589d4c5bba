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
