"""Grading a batch of answers during training: rewards, grader failures, sub-rewards, across processes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rft_cli.tool_calls import TOOL_CALL_PARSE_ERROR, grade_answers

# Errors of the policy's making, not the grader's: counted and logged, but a grade that has only
# these did not fail (a policy exploring can write unreadable tool calls; the grader is fine).
POLICY_ERRORS = frozenset({TOOL_CALL_PARSE_ERROR})


@dataclass
class GradeStats:
    """Rewards of one batch and what went wrong while grading."""

    rewards: list[float]
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    sub_rewards: dict[str, float] = field(default_factory=dict)
    results: list[Any] = field(
        default_factory=list, repr=False
    )  # the GradeResults (samples on disk)

    @property
    def failed_share(self) -> float:
        """The share of grades with an error (`grader_error_share`; `rl.max_grader_error_share` bounds it)."""
        return self.failed / max(len(self.rewards), 1)

    def metrics(self, prefix: str = "") -> dict[str, Any]:
        """`grader_errors/<kind>` and `sub_rewards/<name>` entries for metrics.jsonl."""
        out: dict[str, Any] = {
            f"{prefix}grader_errors/{k}": v for k, v in sorted(self.errors.items())
        }
        out.update({f"{prefix}sub_rewards/{k}": v for k, v in sorted(self.sub_rewards.items())})
        return out


def stats_of(results: Sequence[Any]) -> GradeStats:
    """Rewards, failures (grades with an error of the grader's, not only `POLICY_ERRORS`), error
    counts of every kind and mean sub-rewards of GradeResults."""
    stats = GradeStats(rewards=[float(r.reward) for r in results], results=list(results))
    sub_totals: dict[str, list[float]] = {}
    for result in results:
        if any(count for kind, count in result.errors.items() if kind not in POLICY_ERRORS):
            stats.failed += 1
        for kind, count in result.errors.items():
            stats.errors[kind] = stats.errors.get(kind, 0) + int(count)
        for name, value in result.sub_rewards.items():
            sub_totals.setdefault(name, []).append(float(value))
    stats.sub_rewards = {k: sum(v) / len(v) for k, v in sub_totals.items()}
    return stats


def merge_stats(parts: Sequence[GradeStats]) -> GradeStats:
    """One GradeStats from several processes' (sub-rewards averaged per process, weighted by size)."""
    merged = GradeStats(
        rewards=[r for p in parts for r in p.rewards], failed=sum(p.failed for p in parts)
    )
    weights: dict[str, list[tuple[float, int]]] = {}
    for part in parts:
        for kind, count in part.errors.items():
            merged.errors[kind] = merged.errors.get(kind, 0) + count
        for name, value in part.sub_rewards.items():
            weights.setdefault(name, []).append((value, len(part.rewards)))
    merged.sub_rewards = {
        k: sum(v * n for v, n in vs) / max(sum(n for _, n in vs), 1) for k, vs in weights.items()
    }
    return merged


def gather_object(objects: list[Any]) -> list[Any]:
    """accelerate's gather_object (every process gets every process's objects)."""
    from accelerate.utils import gather_object as _gather

    return _gather(objects)


def grade(
    grader: Any, texts: Sequence[str], items: Sequence[dict], parser: Any = None
) -> GradeStats:
    """Grade answers (tool calls read by `parser`, see `rft_cli.tool_calls`); a grade with any error
    counts as failed (its reward is what the grader gave, usually 0)."""
    return stats_of(grade_answers(grader, texts, list(items), parser))
