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
from typing import Any

from rft_cli.errors import GraderError

# A number as people write it: sign, currency, thousands separators, decimals, exponent,
# a simple fraction and a trailing percent sign.
NUMBER = (
    r"(?=[-+\u2212$.\d])[-+\u2212]?\s?\$?\s?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:[eE][-+]?\d+)?(?:/\d+(?:\.\d+)?)?%?"
)
_NUMBER_RE = re.compile(NUMBER)
_FULL_NUMBER_RE = re.compile(rf"\s*({NUMBER})\s*\.?\s*")

# Tried in order; the last match of the first pattern that matches wins. Each default pattern
# has a literal that must occur for it to match, checked first with `in` (cheap).
DEFAULT_PATTERNS: tuple[str, ...] = (
    r"####\s*(.+?)\s*(?:$|\n)",
    r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}",
    rf"(?i)answer\s*(?:is|:|=)\s*[:=]?\s*[<(\[*]*\s*({NUMBER})",
)

_LATEX_FRAC = re.compile(r"\\d?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_LATEX_NOISE = re.compile(r"\\[,;! ]|\\text\s*\{[^{}]*\}|\\(?:left|right)|\\%|\\\$|[{}]")


# A user-written pattern can backtrack for ages ("(a+)+$" on 35 characters); it runs on the `regex`
# engine with this time limit per call, and a call past it is a `regex_timeout` error.
PATTERN_TIMEOUT = 1.0
REGEX_TIMEOUT = "regex_timeout"


class TimedPattern:
    """A user's regular expression on the `regex` engine, each call limited to PATTERN_TIMEOUT
    seconds (raising TimeoutError); picklable, with `re.Pattern`'s attributes that graders use."""

    def __init__(self, pattern: str, flags: int = 0) -> None:
        import regex

        self.pattern, self.flags = pattern, flags
        self._regex = regex.compile(pattern, flags)
        self.groups, self.groupindex = self._regex.groups, self._regex.groupindex

    def search(self, text: str) -> Any:
        return self._regex.search(text, timeout=PATTERN_TIMEOUT)

    def findall(self, text: str) -> list[Any]:
        return self._regex.findall(text, timeout=PATTERN_TIMEOUT)

    def last(self, text: str) -> Any:
        """The last match (each match found within the time limit)."""
        match = None
        for match in self._regex.finditer(text, timeout=PATTERN_TIMEOUT):  # noqa: B007  (keep the last match)
            pass
        return match

    def __reduce__(self) -> tuple[Any, ...]:
        return (TimedPattern, (self.pattern, self.flags))


def compile_user_pattern(pattern: str, flags: int, where: str) -> TimedPattern:
    """A user's pattern, compiled now so that a bad one is an error when the grader is built."""
    import regex


    try:
        return TimedPattern(pattern, flags)
    except (regex.error, TypeError, ValueError, RecursionError, OverflowError) as exc:
        raise GraderError(f"{where}: invalid regular expression {pattern!r} ({exc})") from None


def compile_patterns(patterns: Sequence[str], where: str) -> tuple[TimedPattern, ...]:
    """Compile extraction patterns; each must have one capture group (or none: the whole match)."""
    compiled = []
    for i, pattern in enumerate(patterns):
        regex = compile_user_pattern(pattern, 0, f"{where}[{i}]")
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
    try:  # the common case, "42" or "14.0", without any regex
        value = float(text)
        if math.isfinite(value) and "_" not in text:
            return value
    except ValueError:
        pass
    if "\\" in text or "{" in text:
        text = _LATEX_NOISE.sub("", _LATEX_FRAC.sub(r"(\1)/(\2)", text)).replace("(", "").replace(")", "")
    full = _FULL_NUMBER_RE.fullmatch(text)
    if full is not None:
        return _to_float(full.group(1))
    first = _NUMBER_RE.search(text)
    return _to_float(first.group(0)) if first is not None else None


_REQUIRED = dict(zip(DEFAULT_PATTERNS, (("####", "####"), ("boxed", "boxed"), ("nswer", "NSWER")), strict=True))


def with_literals(regexes: Sequence[Any]) -> tuple[tuple[Any, str | None, str | None], ...]:
    """Pair each regex with up to two literals one of which must occur for it to match (or None)."""
    return tuple((regex, *_REQUIRED.get(regex.pattern, (None, None))) for regex in regexes)


# Our own patterns run on `re` (3-10x faster than `regex`, and checked not to backtrack badly on
# 1 MB adversarial texts by tests/test_graders_robust.py).
DEFAULT_REGEXES = with_literals(tuple(re.compile(pattern) for pattern in DEFAULT_PATTERNS))


def extract_answer(text: str, patterns: Sequence[tuple[Any, str | None, str | None]], last_number: bool = True) -> float | None:
    """The final answer in a model's output: the first pattern that matches, else the last number.

    `patterns` come from `with_literals`; a pattern whose literals are both absent is skipped.
    A user's pattern that runs past PATTERN_TIMEOUT raises TimeoutError.
    """
    for pattern, literal, other in patterns:
        if literal is not None and literal not in text and other not in text:
            continue
        matches = pattern.findall(text)
        if matches:
            value = parse_number(matches[-1])
            if value is not None:
                return value
    if last_number:
        return last_number_in(text)
    return None


_NUMBER_CHARS = frozenset("0123456789.,eE+-\u2212$/%")


def last_number_in(text: str) -> float | None:
    """The last number in `text`; a long text is searched only from where its last number starts."""
    window = text
    if len(text) > 256:
        end = max(text.rfind(digit) for digit in "0123456789")
        if end < 0:
            return None
        start = end
        # Walk back over everything a number can contain: no match can span the character before
        # `start`, so the last match in the window is the last match in the text.
        while start > 0 and (text[start - 1] in _NUMBER_CHARS or text[start - 1].isspace()):
            start -= 1
        window = text[start : end + 2]
    last = None
    for last in _NUMBER_RE.finditer(window):  # noqa: B007  (keep the last match)
        pass
    return _to_float(last.group(0)) if last is not None else None


def format_number(value: float) -> str:
    """A canonical text for an answer, so that "14.0", "14" and "1.4e1" vote together."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}"
