"""A seeded generator of multi-step arithmetic word problems with chain-of-thought demonstrations.

The built-in CPU recipe trains on these. Each problem starts with a quantity and applies a few
additions and subtractions told in words; the demonstration writes one equation per step and
ends with ReFT's answer line, for example:

    question: "Mia has 23 shells. She finds 48 more. She loses 15. How many shells now?"
    solution: "23+48=71. 71-15=56. #### 56"

The reading step (which verb adds, which subtracts) is easy for a tiny model; the error-prone
step is each two-digit sum written in one go (the tens digit needs the carry before the units
are written), which is where sampling sometimes finds what greedy decoding misses.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from rft_cli.data.records import normalize_text
from rft_cli.errors import DataError, UsageError

NAMES = ["Mia", "Leo", "Ava", "Sam", "Zoe", "Max", "Ivy", "Ben", "Eva", "Tom", "Lily", "Omar", "Nina", "Raj", "Kim", "Ana"]
OBJECTS = ["shells", "apples", "stamps", "coins", "books", "pens", "cards", "marbles", "stickers", "shirts", "eggs", "rocks"]
PRONOUNS = {"Mia": "She", "Ava": "She", "Zoe": "She", "Ivy": "She", "Eva": "She", "Lily": "She", "Nina": "She",
            "Kim": "She", "Ana": "She"}
ADD_PHRASES = ["finds {n} more", "buys {n} more", "gets {n} more", "is given {n} more", "wins {n} more"]
SUB_PHRASES = ["loses {n}", "gives away {n}", "sells {n}", "uses {n}", "trades away {n}"]


@dataclass(frozen=True)
class ArithSpec:
    """The knobs of the task: steps per problem, the largest operand and the largest running total."""

    steps: int = 2
    max_operand: int = 99
    max_total: int = 199


def make_problem(rng: random.Random, spec: ArithSpec = ArithSpec()) -> dict:
    """One problem as a dataset row: `messages` (the question), `solution`, `reference_answer`."""
    name, thing = rng.choice(NAMES), rng.choice(OBJECTS)
    pronoun = PRONOUNS.get(name, "He")
    total = rng.randint(10, spec.max_operand)
    sentences, equations = [f"{name} has {total} {thing}."], []
    for step in range(spec.steps):
        choices = [True] * (total + 10 <= spec.max_total) + [False] * (total >= 2)
        adds = rng.choice(choices)
        n = rng.randint(10, min(spec.max_operand, spec.max_total - total)) if adds else rng.randint(1, total - 1)
        phrase = rng.choice(ADD_PHRASES if adds else SUB_PHRASES).format(n=n)
        sentences.append(f"{pronoun} {phrase}.")
        new_total = total + n if adds else total - n
        equations.append(f"{total}{'+' if adds else '-'}{n}={new_total}.")
        total = new_total
    sentences.append(f"How many {thing} now?")
    return {
        "messages": [{"role": "user", "content": " ".join(sentences)}],
        "solution": " ".join(equations) + f" #### {total}",
        "reference_answer": str(total),
    }


def generate_arith(n_train: int, n_valid: int, seed: int = 0, spec: ArithSpec = ArithSpec()) -> tuple[list[dict], list[dict]]:
    """Train and validation rows with no question in common (exact text), reproducible from `seed`."""
    rng = random.Random(seed)
    rows, seen = [], set()
    for _ in range(100 * (n_train + n_valid)):
        if len(rows) == n_train + n_valid:
            break
        row = make_problem(rng, spec)
        key = normalize_text(row["messages"][0]["content"])
        if key not in seen:
            seen.add(key)
            rows.append(row)
    else:
        raise UsageError(f"could not draw {n_train + n_valid} distinct problems; lower the counts or widen the spec")
    return rows[:n_train], rows[n_train:]


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    """Write rows as JSONL (one compact object per line) and return the path; raises DataError."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path
