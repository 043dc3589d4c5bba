"""The `math` grader: symbolic equivalence of LaTeX or plain answers, with math-verify (sympy)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from rft_cli.graders.base import GradeResult, TemplatedGrader
from rft_cli.graders.specs import MathSpec
from rft_cli.graders.templates import GradeContext, Template


class _Shortened(logging.Filter):
    """math-verify logs the whole text it gave up on ("Timeout during parsing: <text>"); a policy's
    answer can be megabytes, once per grade. Longer messages keep their start and their length."""

    LIMIT = 300

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if len(message) > self.LIMIT:
            record.msg, record.args = f"{message[:200]}... ({len(message):,} characters)", ()
        return True


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_Shortened())


def _timeout(seconds: float) -> int | None:
    """math-verify times out with signal.alarm, which only works in the main thread."""
    if threading.current_thread() is threading.main_thread():
        return max(1, int(round(seconds)))
    return None


class MathGrader(TemplatedGrader):
    """1 when the output's final answer equals the reference symbolically (1/2 = 0.5 = \\frac{1}{2}).

    The answer is taken from `\\boxed{}` or the last expression; a reference that cannot be parsed
    is a `reference_parse_error` and an answer math-verify cannot read scores 0.

    >>> MathGrader(MathSpec(type="math", reference="$\\\\frac{1}{2}$")).grade("so \\\\boxed{0.5}", {}).reward
    1.0
    """

    def __init__(self, spec: MathSpec, where: str = "") -> None:
        self.spec = spec
        self.name = spec.name or "math"
        self.input = Template(spec.input, f"{where}.input" if where else "input")
        self.reference = Template(spec.reference, f"{where}.reference" if where else "reference")
        self.templates = (self.input, self.reference)

    def _parse(self, text: str) -> list[Any]:
        from math_verify import parse

        try:
            return parse(text, parsing_timeout=_timeout(self.spec.timeout))
        except (TimeoutError, ValueError, RecursionError):
            return []

    def _gold(self, reference: str) -> list[Any]:
        """A bare reference ("2\\sqrt{2}") is read as one math expression; "$...$" or \\boxed as written."""
        if "$" in reference or "\\boxed" in reference:
            return self._parse(reference)
        return self._parse(f"${reference}$") or self._parse(reference)

    def _score(self, ctx: GradeContext) -> GradeResult:
        from math_verify import verify

        gold = self._gold(self.reference.render(ctx))
        if not gold:
            return GradeResult(0.0, errors={"reference_parse_error": 1})
        answer = self._parse(self.input.render(ctx))
        if not answer:
            return GradeResult(0.0)
        try:
            correct = verify(gold, answer, timeout_seconds=_timeout(self.spec.timeout))
        except (TimeoutError, ValueError, RecursionError):
            correct = False
        return GradeResult(1.0 if correct else 0.0, answer=str(answer[0]))
