"""OpenAI-style templates: `{{ item.path }}` and `{{ sample.path }}` in any grader string.

Templates are compiled once, when the grader is built; rendering is a few dict lookups.
A path that does not resolve raises `GradeFailure("invalid_variable_error")`; a template that
reads `sample.output_json` when the output is not JSON raises `GradeFailure("sample_parse_error")`.
Both are scored 0 and counted by the grader, never raised to the caller.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from rft_cli.errors import GraderError

INVALID_VARIABLE = "invalid_variable_error"
SAMPLE_PARSE = "sample_parse_error"
TOO_DEEP = "nesting_too_deep_error"
TOO_DEEP_DETAIL = "the value is nested too deeply (thousands of levels of lists or objects)"

_PLACEHOLDER = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_STEP = re.compile(r"\.([A-Za-z_][\w\-]*)|\[(-?\d+)\]|\[\"([^\"]*)\"\]|\['([^']*)'\]")
_ROOT = re.compile(r"(item|sample)\b")
_MISSING = object()
_UNPARSABLE = object()


class GradeFailure(Exception):
    """A per-sample failure (bad variable, unparsable output, ...): scored 0 and counted by `kind`."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(detail or kind)
        self.kind = kind
        self.detail = detail


class GradeContext:
    """One (sample, item) pair being graded; parses `output_json` at most once, on demand."""

    __slots__ = ("sample", "item", "_json")

    def __init__(self, sample: dict[str, Any], item: dict[str, Any]) -> None:
        self.sample = sample
        self.item = item
        self._json = _MISSING

    def output_json(self) -> Any:
        """The sample parsed as JSON (`sample.output_json`), or GradeFailure(sample_parse_error)."""
        if self._json is _MISSING:
            if "output_json" in self.sample:
                self._json = self.sample["output_json"]
            else:
                self._json = parse_json(self.sample.get("output_text", ""))
        if self._json is _UNPARSABLE:
            raise GradeFailure(
                SAMPLE_PARSE, "the sample is not valid JSON (or is nested too deeply to read)"
            )
        return self._json


def parse_json(text: Any) -> Any:
    """`text` parsed as JSON, or `UNPARSABLE` (not text, not JSON, or nested past the parser's limit)."""
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return _UNPARSABLE


UNPARSABLE = _UNPARSABLE


@dataclass(frozen=True)
class VariablePath:
    """`item.a.b[0]` as root "item" and keys ("a", "b", 0)."""

    root: str
    keys: tuple[str | int, ...]
    text: str

    def resolve(self, ctx: GradeContext) -> Any:
        if self.root == "item":
            value: Any = ctx.item
            keys = self.keys
        elif self.keys and self.keys[0] == "output_json":
            value, keys = ctx.output_json(), self.keys[1:]
        else:
            value, keys = ctx.sample, self.keys
        for key in keys:
            try:
                value = value[key]
            except (KeyError, IndexError, TypeError):
                raise GradeFailure(
                    INVALID_VARIABLE, f"{{{{ {self.text} }}}} does not resolve"
                ) from None
        return value


def parse_path(text: str, where: str) -> VariablePath:
    """Parse `item.a[0].b`; raise GraderError naming `where` if the syntax or namespace is wrong."""
    root = _ROOT.match(text)
    if root is None:
        raise GraderError(
            f"{where}: {{{{ {text} }}}} has an unknown namespace "
            "(use {{ item.<field> }} or {{ sample.output_text }} / {{ sample.output_json.<field> }})"
        )
    keys: list[str | int] = []
    pos = root.end()
    while pos < len(text):
        step = _STEP.match(text, pos)
        if step is None:
            raise GraderError(
                f"{where}: {{{{ {text} }}}} is not a valid path at {text[pos:]!r} (write item.a.b[0])"
            )
        name, index, dq, sq = step.groups()
        keys.append(
            int(index)
            if index is not None
            else (name if name is not None else (dq if dq is not None else sq))
        )
        pos = step.end()
    return VariablePath(root.group(1), tuple(keys), text)


def render_value(value: Any) -> str:
    """Strings render as themselves; everything else as JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except RecursionError:
        raise GradeFailure(TOO_DEEP, TOO_DEEP_DETAIL) from None
    except (TypeError, ValueError) as exc:  # a non-JSON value handed in from Python (a set, bytes)
        raise GradeFailure(
            INVALID_VARIABLE, f"the value cannot be written as text ({exc})"
        ) from None


class Template:
    """A compiled template string. `render` gives text; `value` gives the raw value of a lone variable."""

    __slots__ = ("source", "parts", "single", "literal")

    def __init__(self, source: str, where: str) -> None:
        self.source = source
        parts: list[str | VariablePath] = []
        pos = 0
        for match in _PLACEHOLDER.finditer(source):
            if match.start() > pos:
                parts.append(source[pos : match.start()])
            parts.append(parse_path(match.group(1), where))
            pos = match.end()
        if pos < len(source):
            parts.append(source[pos:])
        self.parts = tuple(parts)
        self.single = parts[0] if len(parts) == 1 and isinstance(parts[0], VariablePath) else None
        self.literal = source if not any(isinstance(p, VariablePath) for p in parts) else None

    def render(self, ctx: GradeContext) -> str:
        if self.literal is not None:
            return self.literal
        if self.single is not None:
            return render_value(self.single.resolve(ctx))
        return "".join(
            p if isinstance(p, str) else render_value(p.resolve(ctx)) for p in self.parts
        )

    def value(self, ctx: GradeContext) -> Any:
        """The raw value when the template is exactly one variable, else the rendered text."""
        if self.single is not None:
            return self.single.resolve(ctx)
        return self.render(ctx)

    def item_fields(self) -> set[str]:
        """Top-level item fields this template reads."""
        return {
            p.keys[0]
            for p in self.parts
            if isinstance(p, VariablePath)
            and p.root == "item"
            and p.keys
            and isinstance(p.keys[0], str)
        }

    def __reduce__(self) -> tuple[Any, ...]:
        return (Template, (self.source, "template"))
