"""The grader self-test: grade each row's demonstration as if the model had written it.

A grader that gives the reference solution 0 (a wrong field, a format the demonstrations do not
follow, a judge that cannot answer) turns a training run into noise without a single error. The
demonstration (the final assistant message, else the demonstration field) is the answer the data
says is right, so it should score full marks, or at least the grader's `pass_threshold`.

    report = self_test(grader, [("data/train.jsonl", "solution")])
    print(report.summary())   # the grader gives full marks to 2,961 of 3,000 demonstrations; ...
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rft_cli.data.records import (
    DEFAULT_DEMONSTRATION_FIELD,
    demonstration_episode_sample,
    demonstration_sample,
    item_of,
    iter_rows,
)
from rft_cli.graders.judge import MissingJudge
from rft_cli.tool_calls import grade_answers

# Rewards this close below the bar still pass: 0.1 + 0.2 + 0.7 is 0.9999999999999999.
_TOLERANCE = 1e-9
DEFAULT_MAX_FAILURE_SHARE = 0.02


@dataclass
class SelfTestFailure:
    """A demonstration the grader scores below the bar: where, the score, and the grader's errors."""

    file: str
    line: int
    score: float
    errors: dict[str, int] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "score": self.score,
            "errors": self.errors,
            "details": self.details,
        }

    def message(self) -> str:
        errors = "; ".join(
            f"{kind}" + (f" ({self.details[kind]})" if kind in self.details else "")
            for kind in self.errors
        )
        return f"{self.file} line {self.line}: score {self.score:.4g}" + (
            f", grader errors: {errors}" if errors else ""
        )


@dataclass
class SelfTestReport:
    """What the self-test found: counts, the bar, and every demonstration below it (in file order)."""

    grader: str
    threshold: float
    full_marks: float
    rows: int = 0
    graded: int = 0
    skipped: int = 0
    failures: list[SelfTestFailure] = field(default_factory=list)
    error_counts: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> int:
        return self.graded - len(self.failures)

    @property
    def failure_share(self) -> float:
        return len(self.failures) / self.graded if self.graded else 0.0

    def bar(self) -> str:
        """The score a demonstration must reach: "full marks", or "pass_threshold 0.5"."""
        return (
            "full marks"
            if self.threshold >= self.full_marks
            else f"pass_threshold {self.threshold:g}"
        )

    def summary(self) -> str:
        """One line: "the grader gives full marks to 2,961 of 3,000 demonstrations" and what was skipped."""
        if self.threshold >= self.full_marks:
            head = f"the grader {self.grader!r} gives full marks to {self.passed:,} of {self.graded:,} demonstrations"
        else:
            head = (
                f"the grader {self.grader!r} scores {self.passed:,} of {self.graded:,} demonstrations "
                f"at or above its pass_threshold {self.threshold:g}"
            )
        skipped = (
            f"; {self.skipped:,} row(s) without a demonstration skipped" if self.skipped else ""
        )
        return head + skipped

    def to_dict(self) -> dict[str, Any]:
        return {
            "grader": self.grader,
            "threshold": self.threshold,
            "rows": self.rows,
            "graded": self.graded,
            "skipped": self.skipped,
            "passed": self.passed,
            "failed": len(self.failures),
            "failure_share": self.failure_share,
            "error_counts": dict(self.error_counts),
            "summary": self.summary(),
            "failures": [f.to_dict() for f in self.failures],
        }


def grader_bar(grader: Any) -> tuple[float, float]:
    """(pass bar, full marks): the grader's `pass_threshold` if it has one, else full marks.

    Full marks is the top of the grader's `reward_range`: 1, or a score_model's `range` (its
    rewards are not rescaled).
    """
    spec = getattr(grader, "spec", None)
    full = float(getattr(grader, "reward_range", (0.0, 1.0))[1])
    threshold = getattr(grader, "pass_threshold", None)
    if threshold is None:
        threshold = getattr(spec, "pass_threshold", None)
    return (float(threshold) if threshold is not None else full), full


def check_judges(grader: Any) -> None:
    """Raise the `GraderError` of a model grader (or a multi grader's sub-grader) that has no judge to ask."""
    for part in [grader, *getattr(grader, "graders", {}).values()]:
        judge = getattr(part, "judge", None)
        if isinstance(judge, MissingJudge):
            judge.reply([], {})  # raises the one message that says what to set


_BATCH = 512  # demonstrations graded at a time: memory stays flat on a 50,000-row file


def _demonstrations(
    files: Iterable[tuple[str | Path, str]], report: SelfTestReport, episodes: bool = False
) -> Iterator[tuple[str, int, Any, dict]]:
    """(file, line, demonstration, item) for each row that has one; counts rows and skipped rows in `report`."""
    as_sample = demonstration_episode_sample if episodes else demonstration_sample
    for path, field_name in files:
        for line, row in iter_rows(path, field_name):
            report.rows += 1
            sample = as_sample(
                row, field_name
            )  # a tool-calling demonstration's calls are its output_tools
            if sample is None:
                report.skipped += 1
                continue
            yield (
                str(path),
                line,
                sample,
                item_of(row, field_name),
            )  # what training passes as `item`


def _batches(
    demos: Iterator[tuple[str, int, Any, dict]],
) -> Iterator[list[tuple[str, int, Any, dict]]]:
    batch = []
    for demo in demos:
        batch.append(demo)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def self_test(
    grader: Any, files: Sequence[tuple[str | Path, str]], episodes: bool = False
) -> SelfTestReport:
    """Grade every demonstration in `files` ((path, demonstration field) pairs) with `grader`.

    Args:
        grader: a built grader (`load_grader`, `build_grader`).
        files: JSONL files that follow the dataset contract, each with its demonstration field.
        episodes: grade each demonstration as an episode with tools (`rft validate --tools`):
            `demonstration_episode_sample`.

    Returns:
        A `SelfTestReport`. Grader errors are counted, never raised; a grader that cannot grade at all
        (a model grader with no endpoint) raises its `GraderError`.

    Example:
        >>> self_test(grader, [("data/train.jsonl", "solution")]).summary()  # doctest: +SKIP
        "the grader 'answer' gives full marks to 2,961 of 3,000 demonstrations"
    """
    check_judges(
        grader
    )  # before reading anything: with no demonstrations nothing would ask the judge
    threshold, full = grader_bar(grader)
    report = SelfTestReport(getattr(grader, "name", "grader"), threshold, full)
    errors: Counter[str] = Counter()
    for batch in _batches(_demonstrations(files, report, episodes)):
        # as training grades answers: for a row with tools, a text demonstration's calls are read
        results = grade_answers(
            grader, [sample for _, _, sample, _ in batch], [item for *_, item in batch]
        )
        report.graded += len(results)
        for (path, line, _, _), result in zip(batch, results, strict=True):
            errors.update(result.errors)
            if not result.reward >= threshold - _TOLERANCE:  # NaN fails too
                report.failures.append(
                    SelfTestFailure(
                        path, line, result.reward, dict(result.errors), dict(result.details)
                    )
                )
    report.error_counts = dict(errors)
    return report


def demonstration_field_files(
    train: str | Path, valid: str | Path | None, demonstration_field: str | None
) -> list[tuple[str | Path, str]]:
    """The (file, demonstration field) pairs of a run: TRAIN, and VALID when given."""
    field_name = demonstration_field or DEFAULT_DEMONSTRATION_FIELD
    return [(train, field_name)] + ([(valid, field_name)] if valid is not None else [])
