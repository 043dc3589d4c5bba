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

# Tried in order; the last match of the first pattern that matches wins. Each default pattern
# has a literal that must occur for it to match, checked first with `in` (cheap). These are the
# patterns' meaning; `DEFAULT_REGEXES` finds the same matches with scanners that cannot backtrack.
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
            raise GraderError(
                f"{where}[{i}]: {pattern!r} has {regex.groups} groups; use one capture group around the answer"
            )
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
    try:  # the common case, "42" or "14.0", without any regex ("1_000" is 1000, as Python reads it)
        value = float(text)
        if math.isfinite(value):
            return value
    except ValueError:
        pass
    if "\\" in text or "{" in text:
        text = (
            _LATEX_NOISE.sub("", _LATEX_FRAC.sub(r"(\1)/(\2)", text))
            .replace("(", "")
            .replace(")", "")
        )
    whole = _whole_number(text)
    if whole is not None:
        return _to_float(whole)
    first = _NUMBER_RE.search(text)
    return _number_value(text, first.start(), first.group(0)) if first is not None else None


_SPACES = re.compile(r"\s*")


def _whole_number(text: str) -> str | None:
    """The number when `text` is one number (spaces and a final full stop around it allowed).

    The same as matching `\\s*(NUMBER)\\s*\\.?\\s*` against the whole text, in linear time: that
    regex backtracks over the spaces (quadratic on "5" + spaces + "x"), and only the number's first
    match can be followed by nothing but spaces and one full stop.
    """
    number = _NUMBER_RE.match(text, _SPACES.match(text).end())
    if number is None or text[number.end() :].strip() not in ("", "."):
        return None
    return number.group(0)


def _number_value(text: str, start: int, number: str) -> float | None:
    """The value of `number`, found at `start` in `text`; a sign right after an operand
    ("75 - 30", "(2) -1") is a binary minus, not part of the number."""
    if number[0] in "-+\u2212":
        before = text[:start].rstrip()[-1:]
        if before.isdecimal() or before in (")", "]", "}", "%"):
            return _to_float(number[1:])
    return _to_float(number)


class _Scanner:
    """One of DEFAULT_PATTERNS, found by a scanner that runs in linear time; `findall` gives the
    captures that `re.findall(pattern, text)` gives (tests/test_graders_hostile.py compares them)."""

    def __init__(self, pattern: str, findall: Any) -> None:
        self.pattern, self.findall = pattern, findall


def _after_hashes(text: str) -> list[str]:
    """`####\\s*(.+?)\\s*(?:$|\\n)`: after each "####" (left to right, a match ends its line), the
    rest of its line from the first non-space character, trailing spaces cut."""
    found, n, at = [], len(text), text.find("####")
    while at >= 0:
        start = _SPACES.match(text, at + 4).end()
        if start == n:  # only spaces follow: `.+?` takes the last one that is not a newline
            rest = text[at + 4 :].rstrip("\n")
            if rest:
                found.append(rest[-1])
            return found
        end = text.find("\n", start)
        end = n if end < 0 else end
        found.append(text[start:end].rstrip())
        at = text.find("####", end)
    return found


# Linear as a regex: a brace group holds no brace, so every character has one reading and a
# failed attempt stops at the second brace it meets.
_BOXED = re.compile(DEFAULT_PATTERNS[1])
# "answer is" and what may stand between it and the number; every part takes characters the next
# part cannot, so the greedy match is the only one and the number must start where it ends.
_ANSWER_LEAD = re.compile(r"(?i)answer\s*(?:is|:|=)\s*[:=]?\s*[<(\[*]*\s*")


def _answer_is(text: str) -> list[str]:
    """`(?i)answer ... is ... (NUMBER)` without backtracking (the regex was cubic in spaces)."""
    found = []
    for lead in _ANSWER_LEAD.finditer(text):
        number = _NUMBER_RE.match(text, lead.end())
        if number is not None:
            found.append(number.group(0))
    return found


DEFAULT_SCANNERS = (
    _Scanner(DEFAULT_PATTERNS[0], _after_hashes),
    _Scanner(DEFAULT_PATTERNS[1], _BOXED.findall),
    _Scanner(DEFAULT_PATTERNS[2], _answer_is),
)
_REQUIRED = dict(
    zip(DEFAULT_PATTERNS, (("####", "####"), ("boxed", "boxed"), ("nswer", "NSWER")), strict=True)
)


def with_literals(regexes: Sequence[Any]) -> tuple[tuple[Any, str | None, str | None], ...]:
    """Pair each regex with up to two literals one of which must occur for it to match (or None)."""
    return tuple((regex, *_REQUIRED.get(regex.pattern, (None, None))) for regex in regexes)


# Our own patterns run as scanners on `re` (3-10x faster than `regex`); none can backtrack, so a
# grade takes time linear in the answer's length (tests/test_graders_hostile.py times them).
DEFAULT_REGEXES = with_literals(DEFAULT_SCANNERS)


def extract_answer(
    text: str, patterns: Sequence[tuple[Any, str | None, str | None]], last_number: bool = True
) -> float | None:
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


_DIGIT = re.compile(r"\d")
# What a number can hold, read backwards from its last digit (spaces: "- 5", "$ 5").
_NUMBER_CHARS_BACKWARDS = re.compile(r"[\d.,eE+\-\u2212$/%\s]*")


def last_number_in(text: str) -> float | None:
    """The last number in `text`; a long text is searched only from where its last number starts.

    Any decimal digit counts (`\\d` is Unicode: "٣" is 3), near the end of a long text as in a short one.
    """
    start, window = 0, text
    if len(text) > 256:
        backwards = text[::-1]
        digit = _DIGIT.search(backwards)
        if digit is None:
            return None
        # No match can span the character before `start`, so the last match in the window is
        # the last match in the text.
        run = _NUMBER_CHARS_BACKWARDS.match(backwards, digit.start()).end()
        start = len(text) - run
        window = text[start : len(text) - digit.start() + 1]
    last = None
    for last in _NUMBER_RE.finditer(window):  # noqa: B007  (keep the last match)
        pass
    if last is None:
        return None
    return _number_value(text, start + last.start(), last.group(0))


def format_number(value: float) -> str:
    """A canonical text for an answer, so that "14.0", "14" and "1.4e1" vote together."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}"
