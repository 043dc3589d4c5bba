"""Fake graders for training tests (strings only, no sandbox): exact match, NaN, and failing graders."""

from __future__ import annotations

from rft_cli.graders.base import GradeResult, Grader


class ExactGrader(Grader):
    """Reward 1.0 when the answer equals item.answer (after stripping whitespace)."""

    name = "exact"

    def grade(self, sample, item):
        text = sample["output_text"] if isinstance(sample, dict) else sample
        score = float(text.strip() == str(item["answer"]))
        return GradeResult(reward=score, sub_rewards={"exact": score})

    def item_fields(self):
        return {"answer"}


class NaNGrader(ExactGrader):
    """A broken grader whose rewards are NaN."""

    def grade(self, sample, item):
        return GradeResult(reward=float("nan"))


class FailingGrader(ExactGrader):
    """Every grade fails with a counted error (as a crashing python grader would)."""

    def grade(self, sample, item):
        return GradeResult(reward=0.0, errors={"python_exception": 1})
