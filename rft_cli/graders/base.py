"""The grader interface shared by every grader type, training and evaluation.

`Grader.grade` and `Grader.grade_batch` never raise on a sample or an item: a subclass implements
`_grade` (and optionally `_grade_batch`), and whatever it raises (but a `GraderError`, which says
the grader itself cannot work, such as a judge with no endpoint) becomes a counted error kind with
reward 0, so one odd model output cannot stop a run. Every reward that leaves a grader is a float
in its `reward_range`, [0, 1] but for a ranged `score_model` (see `clamp_reward` for the rule on
values outside it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rft_cli.errors import GraderError
from rft_cli.graders.templates import GradeContext, GradeFailure

# A reward this close outside [0, 1] is float rounding (0.2 + 0.4 + 0.3 + 0.1 = 1.0000000000000002)
# and is clamped silently; further outside is a grader bug, scored 0 and counted.
REWARD_TOLERANCE = 1e-9
GRADER_EXCEPTION = "grader_exception"
REWARD_OUT_OF_RANGE = "reward_out_of_range"


@dataclass
class GradeResult:
    """One grade: the reward in [0, 1], sub-grader rewards, and error counts by kind.

    `answer` is the answer the grader extracted (numeric/math graders), used for majority votes.
    `details` holds a human-readable detail per error kind (for example the python exception).
    """

    reward: float
    sub_rewards: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    answer: str | None = None
    details: dict[str, str] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"reward": self.reward, "sub_rewards": self.sub_rewards, "errors": self.errors}


def failed(kind: str, detail: str = "") -> GradeResult:
    """A grade that failed: reward 0, one error of `kind`."""
    return GradeResult(0.0, errors={kind: 1}, details={kind: detail} if detail else {})


def clamp_reward(value: Any, low: float = 0.0, high: float = 1.0) -> float | None:
    """`value` as a reward: clamped to [low, high] when within REWARD_TOLERANCE of it, else None.

    None (NaN, infinity, not a number, or clearly outside the range) means the caller scores 0 and
    counts an error. Every grader type applies this one rule (python, multi, model graders); the
    range is [0, 1] except for a `score_model` with its own `range` (OpenAI's meaning).

    >>> clamp_reward(0.2 + 0.4 + 0.3 + 0.1), clamp_reward(-0.0), clamp_reward(1.5), clamp_reward(7, 0, 10)
    (1.0, 0.0, None, 7.0)
    """
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if low <= value <= high:
        return value + 0.0  # -0.0 -> 0.0
    if low - REWARD_TOLERANCE <= value < low:
        return float(low)
    if high < value <= high + REWARD_TOLERANCE:
        return float(high)
    return None


def printable(text: str) -> str:
    """`text` with lone surrogates escaped (\\ud800), so it can be printed and written as UTF-8."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def as_sample(sample: Any) -> dict[str, Any]:
    """Accept a plain string or a {"output_text": ...} dict."""
    if isinstance(sample, str):
        return {"output_text": sample}
    return sample


def checked(result: Any, low: float = 0.0, high: float = 1.0) -> GradeResult:
    """The result a grader returned, made safe to hand on: a GradeResult with a reward in
    [low, high] (the grader's `reward_range`, [0, 1] but for a ranged `score_model`) and printable
    `answer` and `details`. A reward outside the range per `clamp_reward` scores 0, counted; a failed
    grade (reward 0 with errors) passes as it is, whatever the range."""
    if type(result) is not GradeResult:
        return failed(
            GRADER_EXCEPTION, f"the grader returned {type(result).__name__}, not a GradeResult"
        )
    reward = result.reward
    failure = result.errors and reward == 0.0 and type(reward) is float
    if not failure and (type(reward) is not float or not low <= reward <= high):
        clamped = clamp_reward(reward, low, high)
        if clamped is None:
            errors = {
                **result.errors,
                REWARD_OUT_OF_RANGE: result.errors.get(REWARD_OUT_OF_RANGE, 0) + 1,
            }
            details = {
                **result.details,
                REWARD_OUT_OF_RANGE: f"the grader gave {reward!r}, outside [{low:g}, {high:g}]",
            }
            return GradeResult(0.0, result.sub_rewards, errors, result.answer, details)
        result.reward = clamped
    if result.answer is not None and not result.answer.isascii():
        result.answer = printable(result.answer)
    if result.details:
        result.details = {kind: printable(str(detail)) for kind, detail in result.details.items()}
    return result


def _exception(exc: BaseException) -> GradeResult:
    return failed(GRADER_EXCEPTION, printable(f"{type(exc).__name__}: {exc}"[:500]))


class Grader:
    """Base class. Subclasses implement `_grade(sample, item)`; `name` identifies the grader.

    Callers use `grade` and `grade_batch`, which never raise on a sample or an item.
    """

    name: str = "grader"
    # The rewards this grader gives; [0, 1] for every type but a `score_model` with its own `range`.
    reward_range: tuple[float, float] = (0.0, 1.0)

    def grade(self, sample: str | dict[str, Any], item: dict[str, Any]) -> GradeResult:
        """Grade one sample; any exception the grader raises is a `grader_exception` scored 0."""
        try:
            return checked(self._grade(sample, item), *self.reward_range)
        except GraderError:  # the grader itself cannot work (no judge endpoint): no sample's fault
            raise
        except Exception as exc:  # noqa: BLE001  the grader reads untrusted output; no sample may end a run
            return _exception(exc)

    def grade_batch(
        self, samples: Sequence[str | dict[str, Any]], items: Sequence[dict[str, Any]]
    ) -> list[GradeResult]:
        """Grade a batch; a batch that raises is graded again one sample at a time, so only the
        samples that fail score 0."""
        if len(samples) != len(items):
            raise ValueError(f"{len(samples)} samples for {len(items)} items")
        try:
            return self._grade_batch(samples, items)
        except GraderError:
            raise
        except Exception:  # noqa: BLE001  find the sample at fault instead of failing every one
            return [self.grade(s, i) for s, i in zip(samples, items, strict=True)]

    def _grade(self, sample: Any, item: dict[str, Any]) -> GradeResult:
        raise NotImplementedError

    def _grade_batch(
        self, samples: Sequence[str | dict[str, Any]], items: Sequence[dict[str, Any]]
    ) -> list[GradeResult]:
        """Grade a batch at once (override for pools); pass each result through `checked`."""
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

    def _grade(self, sample: Any, item: dict[str, Any]) -> GradeResult:
        ctx = GradeContext(as_sample(sample), item)
        try:
            result = self._score(ctx)
        except GradeFailure as failure:
            return failed(failure.kind, failure.detail)
        if isinstance(result, GradeResult):
            return result
        return GradeResult(float(result))

    def _score(self, ctx: Any) -> GradeResult | float:
        raise NotImplementedError

    def item_fields(self) -> set[str]:
        fields: set[str] = set()
        for template in self.templates:
            fields |= template.item_fields()
        return fields
