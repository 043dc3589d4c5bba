"""A fake answer-extracting grader for the evaluation tests (stands in for `numeric`)."""

from __future__ import annotations

import re

from rft_cli.graders.base import Grader, GradeResult


class FakeNumericGrader(Grader):
    """Extracts the last integer in the output; reward 1.0 when it equals item["answer"]."""

    name = "fake_numeric"

    def grade(self, sample, item):
        numbers = re.findall(r"-?\d+", sample["output_text"])
        if not numbers:
            return GradeResult(0.0, {"format": 0.0}, {"no_number": 1}, None)
        answer = numbers[-1]
        reward = 1.0 if answer == str(item["answer"]) else 0.0
        return GradeResult(reward, {"format": 1.0}, {}, answer)

    def item_fields(self):
        return {"answer"}


class FakeLengthGrader(Grader):
    """No answer extraction: reward is min(1, len(output) / 10)."""

    name = "fake_length"

    def grade(self, sample, item):
        return GradeResult(min(1.0, len(sample["output_text"]) / 10))


def rows_with_answers(answers):
    return [
        {"messages": [{"role": "user", "content": f"question {i}"}], "answer": a}
        for i, a in enumerate(answers)
    ]
