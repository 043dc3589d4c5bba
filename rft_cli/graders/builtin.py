"""Fast rule-based graders: string_check, numeric, regex and json_match."""

from __future__ import annotations

import math
import re
from typing import Any

from rft_cli.errors import GraderError
from rft_cli.graders import answers
from rft_cli.graders.base import GradeResult, TemplatedGrader, failed
from rft_cli.graders.specs import JsonMatchSpec, NumericSpec, RegexSpec, StringCheckSpec
from rft_cli.graders.templates import (
    SAMPLE_PARSE,
    UNPARSABLE,
    GradeContext,
    GradeFailure,
    Template,
    parse_json,
)

_TIMEOUT_DETAIL = f"a pattern ran past its {answers.PATTERN_TIMEOUT:g} s limit (catastrophic backtracking?)"


class StringCheckGrader(TemplatedGrader):
    """OpenAI's `string_check`: eq, ne, like (input contains reference), ilike (case-insensitive); 0 or 1.

    >>> StringCheckGrader(StringCheckSpec(type="string_check", input="{{ sample.output_text }}", reference="{{ item.answer }}", operation="eq")).grade("4", {"answer": "4"}).reward
    1.0
    """

    def __init__(self, spec: StringCheckSpec, where: str = "") -> None:
        self.spec = spec
        self.name = spec.name or "string_check"
        self.input = Template(spec.input, _at(where, "input"))
        self.reference = Template(spec.reference, _at(where, "reference"))
        self.templates = (self.input, self.reference)
        self.operation = spec.operation

    def _score(self, ctx: GradeContext) -> float:
        text, reference, op = self.input.render(ctx), self.reference.render(ctx), self.operation
        if op == "eq":
            return 1.0 if text == reference else 0.0
        if op == "ne":
            return 1.0 if text != reference else 0.0
        if op == "like":
            return 1.0 if reference in text else 0.0
        return 1.0 if reference.lower() in text.lower() else 0.0


class NumericGrader(TemplatedGrader):
    """Extract the final number from the output and compare it with the reference (ReFT's reward).

    Correct: 1; an extractable but wrong number: `partial_credit`; nothing extractable: 0.

    >>> NumericGrader(NumericSpec(type="numeric", reference="{{ item.answer_value }}", partial_credit=0.1)).grade("#### 1,234", {"answer_value": "1234.0"}).reward
    1.0
    """

    def __init__(self, spec: NumericSpec, where: str = "") -> None:
        self.spec = spec
        self.name = spec.name or "numeric"
        self.input = Template(spec.input, _at(where, "input"))
        self.reference = Template(spec.reference, _at(where, "reference"))
        self.templates = (self.input, self.reference)
        if spec.patterns is None:
            self.patterns = answers.DEFAULT_REGEXES
        else:
            self.patterns = answers.with_literals(answers.compile_patterns(spec.patterns, _at(where, "patterns")))
        self.last_number = spec.last_number
        self.abs_tol, self.rel_tol, self.partial = spec.abs_tol, spec.rel_tol, spec.partial_credit
        self._cache: dict[str, float | None] = {}

    def _reference(self, text: str) -> float | None:
        """The reference as a number, cached: a dataset repeats each reference for every sample."""
        cache = self._cache
        if text in cache:
            return cache[text]
        value = answers.parse_number(text)
        if value is None:
            try:
                value = answers.extract_answer(text, self.patterns, False)
            except TimeoutError:
                value = None
        if len(cache) >= 65536:
            cache.clear()
        cache[text] = value
        return value

    def _score(self, ctx: GradeContext) -> GradeResult:
        reference = self._reference(self.reference.render(ctx))
        if reference is None:
            return GradeResult(0.0, errors={"reference_parse_error": 1})
        try:
            answer = answers.extract_answer(self.input.render(ctx), self.patterns, self.last_number)
        except TimeoutError:
            return failed(answers.REGEX_TIMEOUT, _TIMEOUT_DETAIL)
        if answer is None:
            return GradeResult(0.0)
        correct = math.isclose(answer, reference, rel_tol=self.rel_tol, abs_tol=self.abs_tol)
        return GradeResult(1.0 if correct else self.partial, answer=answers.format_number(answer))


# `regex` (which runs user patterns, with a time limit) takes the same flag values as `re`
_FLAGS = {"ignorecase": re.IGNORECASE, "multiline": re.MULTILINE, "dotall": re.DOTALL}


class RegexGrader(TemplatedGrader):
    """Match a regular expression, or extract with it and compare the capture with `reference`.

    The capture is the group named `answer`, else group 1, else the whole match. The pattern runs
    with a time limit (`answers.PATTERN_TIMEOUT`); past it the grade is a `regex_timeout` error.

    >>> RegexGrader(RegexSpec(type="regex", pattern=r"Answer: (\\w+)", reference="{{ item.label }}")).grade("Answer: yes", {"label": "yes"}).reward
    1.0
    """

    def __init__(self, spec: RegexSpec, where: str = "") -> None:
        self.spec = spec
        self.name = spec.name or "regex"
        self.input = Template(spec.input, _at(where, "input"))
        self.reference = Template(spec.reference, _at(where, "reference")) if spec.reference is not None else None
        self.templates = tuple(t for t in (self.input, self.reference) if t is not None)
        flags = 0
        for flag in spec.flags:
            flags |= _FLAGS[flag]
        self.regex = answers.compile_user_pattern(spec.pattern, flags, _at(where, "pattern"))
        if "answer" in self.regex.groupindex:
            self.group: int | str = "answer"
        else:
            self.group = 1 if self.regex.groups else 0

    def _score(self, ctx: GradeContext) -> GradeResult:
        text = self.input.render(ctx)
        try:
            match = self.regex.search(text) if self.spec.occurrence == "first" else self.regex.last(text)
        except TimeoutError:
            return failed(answers.REGEX_TIMEOUT, _TIMEOUT_DETAIL)
        if match is None:
            return GradeResult(0.0)
        if self.reference is None:
            return GradeResult(1.0)
        found = (match.group(self.group) or "").strip()
        expected = self.reference.render(ctx).strip()
        if not self.spec.case_sensitive:
            found, expected = found.casefold(), expected.casefold()
        return GradeResult(1.0 if found == expected else 0.0, answer=found)


class JsonMatchGrader(TemplatedGrader):
    """Compare `output_json` with a reference object field by field; reward = matched weight / total weight.

    A field is a key of the reference; in `fields` it may also be a dotted path (`address.city`)
    when no key has that exact name. Values compare by JSON type (true is not 1); strings after
    stripping (case-folded unless `case_sensitive`) and numbers within `abs_tol`, at any depth.

    >>> JsonMatchGrader(JsonMatchSpec(type="json_match", reference={"a": 1, "b": "x"})).grade('{"a": 1, "b": "y"}', {}).reward
    0.5
    """

    def __init__(self, spec: JsonMatchSpec, where: str = "") -> None:
        self.spec = spec
        self.name = spec.name or "json_match"
        self.input = Template(spec.input, _at(where, "input"))
        self.reference_template = Template(spec.reference, _at(where, "reference")) if isinstance(spec.reference, str) else None
        self.templates = tuple(t for t in (self.input, self.reference_template) if t is not None)
        self.weights = dict(spec.fields) if spec.fields is not None else None
        if self.weights is not None and not sum(self.weights.values()) > 0:
            raise GraderError(f"{_at(where, 'fields')}: the weights sum to 0; give at least one field a positive weight")

    def _score(self, ctx: GradeContext) -> GradeResult:
        output = _as_json(self.input.value(ctx))
        reference = self.spec.reference if self.reference_template is None else _as_json(self.reference_template.value(ctx))
        if not isinstance(reference, dict):
            return failed("reference_parse_error", "the reference is not a JSON object")
        if not isinstance(output, dict):
            raise GradeFailure(SAMPLE_PARSE, "the output is not a JSON object")
        weights = self.weights if self.weights is not None else {key: 1.0 for key in reference}
        total = sum(weights.values())
        if total <= 0:
            return GradeResult(0.0)
        matched = sum(w for key, w in weights.items() if self._same(_lookup(output, key), _lookup(reference, key)))
        return GradeResult(min(1.0, matched / total))

    def _same(self, got: Any, want: Any) -> bool:
        """Deep comparison with an explicit stack (no recursion limit on deeply nested values)."""
        if got is _ABSENT or want is _ABSENT:
            return False
        stack = [(got, want)]
        while stack:
            a, b = stack.pop()
            if isinstance(a, dict) and isinstance(b, dict):
                if a.keys() != b.keys():
                    return False
                stack.extend((a[key], b[key]) for key in b)
            elif isinstance(a, list) and isinstance(b, list):
                if len(a) != len(b):
                    return False
                stack.extend(zip(a, b, strict=True))
            elif not self._same_scalar(a, b):
                return False
        return True

    def _same_scalar(self, got: Any, want: Any) -> bool:
        if _is_number(got) and _is_number(want):
            try:
                return math.isclose(got, want, rel_tol=0.0, abs_tol=self.spec.abs_tol)
            except OverflowError:  # an integer too large for a float: compare exactly
                return got == want
        if isinstance(got, str) and isinstance(want, str):
            got, want = got.strip(), want.strip()
            return got == want if self.spec.case_sensitive else got.casefold() == want.casefold()
        if type(got) is bool or type(want) is bool or got is None or want is None:
            return got is want
        return type(got) is type(want) and got == want


_ABSENT = object()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _lookup(obj: Any, field: str) -> Any:
    """`obj[field]` when that key exists, else the dotted path `a.b.c`, else _ABSENT."""
    if field in obj:
        return obj[field]
    for key in field.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return _ABSENT
        obj = obj[key]
    return obj


def _as_json(value: Any) -> Any:
    """A string parsed as JSON when it is JSON, else as is (not JSON, or nested past the parser's limit)."""
    if isinstance(value, str):
        parsed = parse_json(value)
        return value if parsed is UNPARSABLE else parsed
    return value


def _at(where: str, field: str) -> str:
    return f"{where}.{field}" if where else field
