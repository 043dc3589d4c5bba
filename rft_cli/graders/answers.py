"""Final-answer extraction and number normalisation for the `numeric` grader (ReFT-style).

>>> extract_answer("so 3 + 4 = 7\\n#### 7", DEFAULT_REGEXES)
7.0
>>> parse_number("$1,234.50")
1234.5
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

# A number as people write it: sign, currency, thousands separators, decimals, exponent,
# a simple fraction and a trailing percent sign.
NUMBER = (
    r"[-+\u2212]?\s?\$?\s?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:[eE][-+]?\d+)?(?:/\d+(?:\.\d+)?)?%?"
)
_NUMBER_RE = re.compile(NUMBER)
_FULL_NUMBER_RE = re.compile(rf"\s*({NUMBER})\s*\.?\s*")

# Tried in order; the last match of the first pattern that matches wins.
DEFAULT_PATTERNS: tuple[str, ...] = (
    r"####\s*(.+?)\s*(?:$|\n)",
    r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}",
    rf"(?i)answer\s*(?:is|:|=)\s*[:=]?\s*[<(\[*]*\s*({NUMBER})",
)

_LATEX_FRAC = re.compile(r"\\d?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_LATEX_NOISE = re.compile(r"\\[,;! ]|\\text\s*\{[^{}]*\}|\\(?:left|right)|\\%|\\\$|[{}]")


def compile_patterns(patterns: Sequence[str], where: str) -> tuple[re.Pattern[str], ...]:
    """Compile extraction patterns; each must have one capture group (or none: the whole match)."""
    from rft_cli.errors import GraderError

    compiled = []
    for i, pattern in enumerate(patterns):
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise GraderError(f"{where}[{i}]: invalid regular expression {pattern!r} ({exc})") from None
        if regex.groups > 1:
            raise GraderError(f"{where}[{i}]: {pattern!r} has {regex.groups} groups; use one capture group around the answer")
        compiled.append(regex)
    return tuple(compiled)


def _to_float(text: str) -> float | None:
    text = text.replace("\u2212", "-").replace("$", "").replace(",", "").replace(" ", "")
    if text.endswith("%"):
        text = text[:-1]
    try:
        if "/" in text:
            top, bottom = text.split("/", 1)
            value = float(top) / float(bottom)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) else None


def parse_number(text: str) -> float | None:
    """The number `text` is (after LaTeX/currency/thousands clean-up), else the first number in it."""
    if "\\" in text or "{" in text:
        text = _LATEX_NOISE.sub("", _LATEX_FRAC.sub(r"(\1)/(\2)", text)).replace("(", "").replace(")", "")
    full = _FULL_NUMBER_RE.fullmatch(text)
    if full is not None:
        return _to_float(full.group(1))
    first = _NUMBER_RE.search(text)
    return _to_float(first.group(0)) if first is not None else None


DEFAULT_REGEXES = compile_patterns(DEFAULT_PATTERNS, "patterns")


def extract_answer(text: str, patterns: Sequence[re.Pattern[str]], last_number: bool = True) -> float | None:
    """The final answer in a model's output: the first pattern that matches, else the last number."""
    for pattern in patterns:
        matches = pattern.findall(text)
        if matches:
            value = parse_number(matches[-1])
            if value is not None:
                return value
    if last_number:
        last = None
        for last in _NUMBER_RE.finditer(text):  # noqa: B007  (keep the last match)
            pass
        if last is not None:
            return _to_float(last.group(0))
    return None


def format_number(value: float) -> str:
    """A canonical text for an answer, so that "14.0", "14" and "1.4e1" vote together."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}"
