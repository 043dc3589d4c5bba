"""A seeded generator of multi-step arithmetic problems with chain-of-thought demonstrations.

The built-in CPU recipe trains on these. Each problem starts with a number and applies a few
additions (and, optionally, subtractions); a demonstration either writes one equation per step or,
for a share of the rows (`one_line_share`), the whole sum in one equation, and ends with ReFT's
answer line. The shipped task (`DEFAULT_SPEC`) asks bare sums of a two-digit number and four
digits; about two in three of its demonstrations write the sum in one line, the rest work step by
step:

    question: "59+1+9+7+8=?"
    solution: "59+1=60. 60+9=69. 69+7=76. 76+8=84. #### 84"      (step by step)
    question: "19+8+6+6+9=?"
    solution: "19+8+6+6+9=48. #### 48"                            (one line)

Why mixed: demonstrations written by people or models vary in how much working they show. A tiny
model, with this much data, gets the stepwise sums almost always right and the one-line sums
mostly wrong; supervised training imitates the mix (so its greedy answers take the majority's
one-line form), while reinforcement learns from the grader which of its own answers earn the
reward (bench/notes/2026-11-arith-exploration.md, Phase 4).
`style="words"` tells the same kind of problem as a sentence:

    question: "Mia had 23 shells, found 48, lost 15. How many now?"
    solution: "23+48=71. 71-15=56. #### 56"
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from rft_cli.data.records import normalize_text
from rft_cli.errors import ConfigError, DataError

NAMES = [
    "Mia",
    "Leo",
    "Ava",
    "Sam",
    "Zoe",
    "Max",
    "Ivy",
    "Ben",
    "Eva",
    "Tom",
    "Lily",
    "Omar",
    "Nina",
    "Raj",
    "Kim",
    "Ana",
]
OBJECTS = [
    "shells",
    "apples",
    "stamps",
    "coins",
    "books",
    "pens",
    "cards",
    "marbles",
    "stickers",
    "shirts",
    "eggs",
    "rocks",
]
ADD_PHRASES = ["found {n}", "got {n}", "won {n}", "bought {n}", "was given {n}"]
SUB_PHRASES = ["lost {n}", "sold {n}", "gave away {n}", "used {n}", "broke {n}"]
STYLES = ("words", "equation")


@dataclass(frozen=True)
class ArithSpec:
    """The knobs of the task: steps, the largest starting number, operand and running total, the operations.

    `style` "words" tells the problem as a sentence; "equation" asks it as a bare sum such as
    "12+47+30=?" (short rows, so a tiny model learns it in a few minutes on a CPU).
    """

    steps: int = 3
    max_start: int = 30
    max_operand: int = 9
    max_total: int = 50
    ops: str = "+-"
    style: str = "words"
    one_line_share: float = 0.0

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ConfigError(f"style is {self.style!r}; use one of {', '.join(STYLES)}")
        if not 10 <= self.max_start <= self.max_total:
            raise ConfigError(
                f"max_start ({self.max_start}) must be between 10 and max_total ({self.max_total})"
            )
        if not self.ops or set(self.ops) - set("+-"):
            raise ConfigError(f"ops is {self.ops!r}; use '+', '-' or '+-'")
        if not 0.0 <= self.one_line_share <= 1.0:
            raise ConfigError(
                f"one_line_share is {self.one_line_share}; use a share between 0 and 1"
            )


# The shipped task (data/arith, `rft data make-arith` with no options): 10-99 plus four digits,
# 65% of the demonstrations in one line, the rest step by step.
DEFAULT_SPEC = ArithSpec(
    steps=4,
    max_start=99,
    max_operand=9,
    max_total=150,
    ops="+",
    style="equation",
    one_line_share=0.65,
)


def make_problem(rng: random.Random, spec: ArithSpec = ArithSpec()) -> dict:
    """One problem as a dataset row: `messages` (the question), `solution`, `reference_answer`."""
    words = spec.style == "words"
    name, thing = (rng.choice(NAMES), rng.choice(OBJECTS)) if words else ("", "")
    start = total = rng.randint(10, spec.max_start)
    phrases, equations, terms = [], [], []
    for _ in range(spec.steps):
        choices = [True] * ("+" in spec.ops and total < spec.max_total) + [False] * (
            "-" in spec.ops and total >= 2
        )
        if not choices:
            raise ConfigError(
                f"no operation keeps the total within 1..{spec.max_total}; raise max_total or allow '-'"
            )
        adds = rng.choice(choices)
        n = rng.randint(
            1,
            min(spec.max_operand, spec.max_total - total)
            if adds
            else min(spec.max_operand, total - 1),
        )
        terms.append(f"{'+' if adds else '-'}{n}")
        phrases.append(
            rng.choice(ADD_PHRASES if adds else SUB_PHRASES).format(n=n) if words else terms[-1]
        )
        new_total = total + n if adds else total - n
        equations.append(f"{total}{'+' if adds else '-'}{n}={new_total}.")
        total = new_total
    question = (
        f"{name} had {start} {thing}, {', '.join(phrases)}. How many now?"
        if words
        else f"{start}{''.join(phrases)}=?"
    )
    if spec.one_line_share and rng.random() < spec.one_line_share:
        equations = [f"{start}{''.join(terms)}={total}."]
    return {
        "messages": [{"role": "user", "content": question}],
        "solution": " ".join(equations) + f" #### {total}",
        "reference_answer": str(total),
    }


def generate_arith(
    n_train: int, n_valid: int, seed: int = 0, spec: ArithSpec = ArithSpec()
) -> tuple[list[dict], list[dict]]:
    """Train and validation rows with no question in common (exact text), reproducible from `seed`."""
    rng = random.Random(seed)
    rows: list[dict] = []
    seen: set[str] = set()
    for _ in range(20 * (n_train + n_valid)):
        if len(rows) == n_train + n_valid:
            break
        row = make_problem(rng, spec)
        key = normalize_text(row["messages"][0]["content"])
        if key not in seen:
            seen.add(key)
            rows.append(row)
    else:
        raise ConfigError(
            f"could not draw {n_train + n_valid} distinct problems; lower the counts or widen the spec"
        )
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
