"""The adapter from a grader to TRL's reward-function signature."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from rft_cli.graders.base import Grader, GradeResult
from rft_cli.tool_calls import grade_answers

# Keyword arguments TRL passes that are not dataset columns.
_TRL_EXTRAS = frozenset({"trainer_state", "log_extra", "log_metric", "environments", "completion_ids"})


def _rows(n: int, prompts: Sequence[Any] | None, columns: dict[str, Any]) -> list[dict[str, Any]]:
    """Rebuild each dataset row (the grader's `item`) from TRL's per-column lists."""
    usable = {k: v for k, v in columns.items() if k not in _TRL_EXTRAS and isinstance(v, (list, tuple)) and len(v) == n}
    rows = [{key: values[i] for key, values in usable.items()} for i in range(n)]
    if prompts is not None and len(prompts) == n:
        for row, prompt in zip(rows, prompts, strict=True):
            if "messages" not in row and isinstance(prompt, list):
                row["messages"] = prompt
    return rows


class RewardFunction:
    """`(prompts, completions, **columns) -> list[float]` over a grader; picklable.

    `error_counts` accumulates grader errors by kind; `last_results` holds the last batch's grades.
    When TRL passes `log_metric`, the batch's error count is logged as `<name>/errors`.
    Rows with `tools` have the completions' tool calls read into `sample.output_tools` by `parser`
    (`rft_cli.tool_calls.OutputParser`).
    """

    def __init__(self, grader: Grader, parser: Any = None) -> None:
        self.grader, self.parser = grader, parser
        self.__name__ = grader.name
        self.error_counts: Counter[str] = Counter()
        self.last_results: list[GradeResult] = []

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] | None = None, **columns: Any) -> list[float]:
        completions = list(completions or [])
        items = _rows(len(completions), prompts, columns)
        results = grade_answers(self.grader, completions, items, self.parser)
        self.last_results = results
        batch_errors = 0
        for result in results:
            self.error_counts.update(result.errors)
            batch_errors += sum(result.errors.values())
        log_metric = columns.get("log_metric")
        if callable(log_metric):
            log_metric(f"{self.__name__}/errors", float(batch_errors))
        return [result.reward for result in results]


def reward_function(grader: Grader, parser: Any = None) -> RewardFunction:
    """Wrap `grader` as a TRL reward function (GRPO/RLOO `reward_funcs=[reward_function(g)]`).

    Example:
        >>> from rft_cli.graders import build_grader
        >>> f = reward_function(build_grader({"type": "numeric", "reference": "{{ item.answer_value }}"}))
        >>> f(prompts=["q"], completions=["#### 3"], answer_value=["3"])
        [1.0]
    """
    return RewardFunction(grader, parser)
