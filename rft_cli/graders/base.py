"""The grader interface shared by every grader type, training and evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rft_cli.graders.templates import GradeContext, GradeFailure


@dataclass
class GradeResult:
    """One grade: the reward in [0, 1], sub-grader rewards, and error counts by kind.

    `answer` is the answer the grader extracted (numeric/math graders), used for majority votes.
    """

    reward: float
    sub_rewards: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    answer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"reward": self.reward, "sub_rewards": self.sub_rewards, "errors": self.errors}


def as_sample(sample: Any) -> dict[str, Any]:
    """Accept a plain string or a {"output_text": ...} dict."""
    if isinstance(sample, str):
        return {"output_text": sample}
    return sample


class Grader:
    """Base class. Subclasses implement `_grade(sample, item)`; `name` identifies the grader."""

    name: str = "grader"

    def grade(self, sample: Any, item: dict[str, Any]) -> GradeResult:
        raise NotImplementedError

    def grade_batch(self, samples: Sequence[Any], items: Sequence[dict[str, Any]]) -> list[GradeResult]:
        return [self.grade(s, i) for s, i in zip(samples, items, strict=True)]

    def item_fields(self) -> set[str]:
        return set()

    def close(self) -> None:
        """Release resources (worker processes); safe to call twice."""

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TemplatedGrader(Grader):
    """A grader built from a spec whose strings are templates.

    Subclasses implement `_score(ctx) -> GradeResult | float`. A `GradeFailure` raised while
    rendering or scoring (bad variable, unparsable output) scores 0 and is counted by kind.
    """

    templates: tuple = ()

    def grade(self, sample: Any, item: dict[str, Any]) -> GradeResult:
        ctx = GradeContext(as_sample(sample), item)
        try:
            result = self._score(ctx)
        except GradeFailure as failure:
            return GradeResult(0.0, errors={failure.kind: 1})
        if type(result) is GradeResult:
            return result
        return GradeResult(float(result))

    def _score(self, ctx: Any) -> GradeResult | float:
        raise NotImplementedError

    def item_fields(self) -> set[str]:
        fields: set[str] = set()
        for template in self.templates:
            fields |= template.item_fields()
        return fields
