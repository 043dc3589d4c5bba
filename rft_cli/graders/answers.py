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
    """A user's pattern, compiled now so that a bad one is an error when the grader is built;
    one whose compiled form would be too large (see `pattern_units`) is refused first."""
    import regex

    check_compile_cost(pattern, flags, where)
    try:
        return TimedPattern(pattern, flags)
    except (regex.error, TypeError, ValueError, RecursionError, OverflowError) as exc:
        raise GraderError(f"{where}: invalid regular expression {pattern!r} ({exc})") from None


# The `regex` engine writes out a counted repeat of a group: `(?:a{1000}){1000}`, 17 bytes,
# compiled to 280 MB and `(?:a{65535}){65535}` ran past 7 GB. About 300 bytes a unit here.
MAX_PATTERN_UNITS = 100_000
_CAP = 10**12  # counts saturate here, so a deep nest of repeats stays a small number
_COUNTED = re.compile(r"\{(\d*)(,\d*)?\}")
_VERBOSE = re.compile(r"\(\?[a-zA-Z^-]*x")
_GROUP_PREFIX = re.compile(r"\(\?(?:[:>=!|]|<[=!]|P?<\w+>|'\w+'|[a-zA-Z^-]*[:)])")


def pattern_units(pattern: str) -> int:
    """An upper estimate of what the `regex` engine builds for `pattern` (for patterns without
    verbose mode): one unit per literal, class or escape, a group the sum of its contents, and a
    counted repeat `{m,n}` multiplying what it repeats by m (the engine writes out the minimum).

    >>> pattern_units("(?:a{1000}){1000}"), pattern_units(r"\\d{1,3}(?:,\\d{3})*")
    (1000000, 5)
    """
    frames, i = [[0, 0]], 0  # per open group: [units so far, units of its last atom]
    while i < len(pattern):
        char = pattern[i]
        counted = _COUNTED.match(pattern, i) if char == "{" else None
        if counted is not None and (counted.group(1) or counted.group(2) not in (None, ",")):
            low = counted.group(1)
            factor = max(1, int(low) if low and len(low) < 13 else _CAP if low else 1)
            frame = frames[-1]
            frame[0] = min(_CAP, frame[0] + frame[1] * (factor - 1))
            frame[1] = min(_CAP, frame[1] * factor)
            i = counted.end()
        elif char == "(" and pattern.startswith("(?#", i):  # a comment, to the first ")"
            end = pattern.find(")", i)
            i = len(pattern) if end < 0 else end + 1
        elif char == "(":
            prefix = _GROUP_PREFIX.match(pattern, i)
            i = prefix.end() if prefix is not None else i + 1
            if prefix is None or not prefix.group().endswith(")"):  # "(?i)" sets flags: no group
                frames.append([0, 0])
        elif char == ")" and len(frames) > 1:
            _add_atom(frames, frames.pop()[0])
            i += 1
        elif char in "*+?|)":
            i += 1
        else:
            i = _skip_class(pattern, i) if char == "[" else _skip_escape(pattern, i)
            _add_atom(frames, 1)
    return min(_CAP, sum(frame[0] for frame in frames))


def _add_atom(frames: list[list[int]], units: int) -> None:
    frames[-1][0] = min(_CAP, frames[-1][0] + units)
    frames[-1][1] = units


def _skip_escape(pattern: str, i: int) -> int:
    """The index after the atom at `i`: one character, or an escape (`\\p{L}`, `\\x{41}` whole)."""
    if pattern[i] != "\\":
        return i + 1
    if pattern[i + 1 : i + 3] in ("p{", "P{", "N{", "x{", "X{") or pattern[i + 1 : i + 3] == "g<":
        close = pattern.find("}" if pattern[i + 2] == "{" else ">", i)
        return len(pattern) if close < 0 else close + 1
    return i + 2


def _skip_class(pattern: str, i: int) -> int:
    """The index after the character class at `i` (it ends at the first `]` not first in it)."""
    j = i + 1
    if pattern.startswith("^", j):
        j += 1
    if pattern.startswith("]", j):
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return j + 1


def check_compile_cost(pattern: str, flags: int, where: str) -> None:
    """GraderError for a pattern whose compiled form would be too large. A verbose pattern (its
    comments and spaces change what a `)` or `{` is) is compiled in a child process under a memory
    limit instead of estimated."""
    units = pattern_units(pattern)
    if units > MAX_PATTERN_UNITS:
        raise GraderError(
            f"{where}: {pattern[:60]!r} repeats a counted group so often that it multiplies out "
            f"to {units:,} units, over the {MAX_PATTERN_UNITS:,} rft compiles (compiling it could "
            "take gigabytes); use a smaller count or an open repeat such as + or *"
        )
    if _VERBOSE.search(pattern) and not _compiles_within_limits(pattern, flags):
        raise GraderError(
            f"{where}: {pattern[:60]!r} needs more than {_CHILD_MB} MB or {_CHILD_SECONDS} s to "
            "compile; use smaller counted repeats"
        )


_CHILD_MB, _CHILD_SECONDS = 128, 10
# Exit 0: it compiles; 3: it is not a valid pattern (the caller's own compile says why).
_CHILD = """
import resource, sys
try:
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]) << 20,) * 2)
except (ValueError, OSError):
    pass
import regex
try:
    regex.compile(sys.stdin.buffer.read().decode("utf-8", "surrogatepass"), int(sys.argv[3]))
except (regex.error, TypeError, ValueError, OverflowError, RecursionError):
    sys.exit(3)
"""


def _compiles_within_limits(pattern: str, flags: int) -> bool:
    import subprocess
    import sys

    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", _CHILD, "-", str(_CHILD_MB), str(flags)],
            input=pattern.encode("utf-8", "surrogatepass"),
            capture_output=True,
            timeout=_CHILD_SECONDS,
        )
    except (subprocess.TimeoutExpired, OSError, ValueError):
        return False
    return done.returncode in (0, 3)


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


def _matched_end(pattern: re.Pattern[str], text: str, pos: int = 0) -> int:
    """Where `pattern`, which matches the empty string too (so always matches), stops at `pos`."""
    match = pattern.match(text, pos)
    return pos if match is None else match.end()


def _whole_number(text: str) -> str | None:
    """The number when `text` is one number (spaces and a final full stop around it allowed).

    The same as matching `\\s*(NUMBER)\\s*\\.?\\s*` against the whole text, in linear time: that
    regex backtracks over the spaces (quadratic on "5" + spaces + "x"), and only the number's first
    match can be followed by nothing but spaces and one full stop.
    """
    number = _NUMBER_RE.match(text, _matched_end(_SPACES, text))
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
    captures that `re.findall(pattern, text)` gives, or tuples that end with them (tests/
    test_graders_hostile.py compares them)."""

    def __init__(self, pattern: str, findall: Any) -> None:
        self.pattern, self.findall = pattern, findall


# A marker, spaces, and the rest of the line from its first non-space character: `\s*` gives back
# nothing useful to `\S`, so a failed attempt costs the spaces it looked at, once.
_HASH_LINE = re.compile(r"####\s*(\S[^\n]*)")


def _after_hashes(text: str) -> list[str]:
    """`####\\s*(.+?)\\s*(?:$|\\n)`: after each "####" (left to right, a match ends its line), the
    rest of its line from the first non-space character, trailing spaces cut. A last marker
    followed by nothing but spaces captures its last space that is not a newline, as `.+?` did."""
    found = _HASH_LINE.findall(text)
    if len(found) == 1:  # the usual case, without a list comprehension
        found[0] = found[0].rstrip()
    else:
        found = [capture.rstrip() for capture in found]
    stripped = text.rstrip()  # the text itself, not a copy, when it ends in no space
    if len(stripped) < len(text) and stripped.endswith("####"):  # rare: where did the scan stop?
        end = 0
        for end_match in _HASH_LINE.finditer(text):
            end = end_match.end()
        at = text.find("####", end)
        rest = text[at + 4 :].rstrip("\n") if at >= 0 else ""
        if rest:
            found.append(rest[-1])
    return found


# Linear as a regex: a brace group holds no brace, so every character has one reading and a
# failed attempt stops at the second brace it meets.
_BOXED = re.compile(DEFAULT_PATTERNS[1])
# "answer is", then what may stand between it and the number, each part taken whole: a lookahead
# captures its greedy match and a backreference consumes exactly that, so nothing is given back
# (Python's lookarounds are atomic). Every part takes characters the next cannot, so the greedy
# match is the only one that could lead to a number, and the regex above found the same numbers,
# after cubic backtracking over spaces.
_ANSWER_IS = re.compile(rf"(?i)answer(?=(\s*))\1(?:is|:|=)(?=(\s*[:=]?\s*[<(\[*]*\s*))\2({NUMBER})")


DEFAULT_SCANNERS = (
    _Scanner(DEFAULT_PATTERNS[0], _after_hashes),
    _Scanner(DEFAULT_PATTERNS[1], _BOXED.findall),
    _Scanner(DEFAULT_PATTERNS[2], _ANSWER_IS.findall),  # (spaces, separators, number) tuples
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
        if literal is not None and literal not in text and (other is None or other not in text):
            continue
        matches = pattern.findall(text)
        if matches:
            last = matches[-1]
            value = parse_number(last[-1] if type(last) is tuple else last)
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
        run = _matched_end(_NUMBER_CHARS_BACKWARDS, backwards, digit.start())
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
