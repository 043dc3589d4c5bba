"""OpenAI's `multi` grader: named sub-graders combined by a `calculate_output` formula."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rft_cli.errors import GraderError
from rft_cli.graders.base import Grader, GradeResult, checked, clamp_reward
from rft_cli.graders.formula import Formula, FormulaError
from rft_cli.graders.specs import MultiSpec

FORMULA_ERROR = "formula_error"
OUT_OF_RANGE = "formula_out_of_range"


class MultiGrader(Grader):
    """Grade with every sub-grader, then combine their rewards with `calculate_output`.

    Sub-grader rewards are reported in `sub_rewards`; a failing sub-grader scores 0 there and its
    errors are added to the total's. A division by zero or domain error is a `formula_error` (0);
    a result outside [0, 1] by more than float rounding is a `formula_out_of_range` (0).

    >>> from rft_cli.graders import build_grader
    >>> build_grader({"type": "multi", "graders": {"a": {"type": "string_check", "input": "{{ sample.output_text }}", "reference": "x", "operation": "eq"}}, "calculate_output": "a"}).grade("x", {}).reward
    1.0
    """

    def __init__(self, spec: MultiSpec, graders: dict[str, Grader], where: str = "") -> None:
        """`graders` are the built sub-graders by name (`graders.build` builds them from the spec)."""
        self.spec = spec
        self.name = spec.name or "multi"
        self.graders = dict(graders)
        if not self.graders:
            raise GraderError(f"{where + '.' if where else ''}graders: give at least one named sub-grader")
        self.formula = Formula(spec.calculate_output, self.graders, f"{where + '.' if where else ''}calculate_output")

    def _grade(self, sample: Any, item: dict[str, Any]) -> GradeResult:
        return self._combine({key: grader.grade(sample, item) for key, grader in self.graders.items()})

    def _grade_batch(self, samples: Sequence[Any], items: Sequence[dict[str, Any]]) -> list[GradeResult]:
        per_grader = {key: grader.grade_batch(samples, items) for key, grader in self.graders.items()}
        return [checked(self._combine({key: results[i] for key, results in per_grader.items()})) for i in range(len(samples))]

    def _combine(self, results: dict[str, GradeResult]) -> GradeResult:
        sub_rewards = {key: result.reward for key, result in results.items()}
        errors: dict[str, int] = {}
        details: dict[str, str] = {}
        for result in results.values():
            for kind, count in result.errors.items():
                errors[kind] = errors.get(kind, 0) + count
            details.update(result.details)
        try:
            value = self.formula.evaluate(sub_rewards)
        except FormulaError as exc:
            return self._failed(FORMULA_ERROR, f"{self.formula.text}: {exc}", sub_rewards, errors, details)
        reward = clamp_reward(value)
        if reward is None:
            return self._failed(OUT_OF_RANGE, f"{self.formula.text} = {value:g}, outside [0, 1]", sub_rewards, errors, details)
        answer = next((r.answer for r in results.values() if r.answer is not None), None)
        return GradeResult(reward, sub_rewards, errors, answer, details)

    @staticmethod
    def _failed(kind: str, detail: str, sub_rewards: dict, errors: dict, details: dict) -> GradeResult:
        errors[kind] = errors.get(kind, 0) + 1
        details[kind] = detail
        return GradeResult(0.0, sub_rewards, errors, None, details)

    def item_fields(self) -> set[str]:
        return set().union(*(grader.item_fields() for grader in self.graders.values()))

    def close(self) -> None:
        for grader in self.graders.values():
            grader.close()
