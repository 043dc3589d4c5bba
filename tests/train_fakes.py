"""Fake graders for training tests (strings only, no sandbox): exact match, NaN, and failing graders."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from rft_cli.config import RunConfig, parse_run_config
from rft_cli.graders.base import Grader, GradeResult


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


class SevensGrader(Grader):
    """Reward = share of the answer's characters that are "7": a task PPO can learn in seconds."""

    name = "sevens"

    def grade(self, sample, item):
        text = sample["output_text"] if isinstance(sample, dict) else sample
        return GradeResult(reward=text.count("7") / len(text) if text else 0.0)


# -- 50,000 rows (guarantee 7) ------------------------------------------------------------------

ROWS_50K = 50_000
WORDS = ["apples", "trays", "muffins", "each", "how", "many", "total", "garden", "rows", "left", "baker", "party"]


def write_rows(path: Path, n: int, seed: int = 0) -> Path:
    """GSM8K-sized rows: a 30-word question, a short solution and an answer (about 300 bytes)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            question = f"Problem {i}: " + " ".join(rng.choices(WORDS, k=30)) + "?"
            handle.write(json.dumps({"messages": [{"role": "user", "content": question}],
                                     "solution": f"Work it out step by step.\n#### {i}", "answer": str(i)}) + "\n")
    return path


def load_test_config(train: Path, **extra: Any) -> RunConfig:
    """A tiny-model config over `train` whose grader every demonstration passes."""
    return parse_run_config({"model": {"tiny": "llama-test"}, "data": {"train": str(train)},
                             "grader": {"type": "numeric", "name": "answer", "reference": "{{ item.answer }}"},
                             **extra})  # a grader the demonstrations pass: the preflight self-test grades all 50,000
