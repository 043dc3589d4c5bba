"""A built-in task whose answer is only reachable through a tool: sums of values stored under keys.

    question:  "ka+mo=?"
    episode:   <tool_call>{"name": "lookup", "arguments": {"key": "ka"}}</tool_call>   -> tool: "17"
               <tool_call>{"name": "lookup", "arguments": {"key": "mo"}}</tool_call>   -> tool: "42"
               "17+42=59. #### 59"

The table (key -> value) lives only in the tool's file, `lookup.py`, which the model never sees;
the validation questions use keys that no training row names, so no value can be memorised from
the demonstrations: only calling the tool answers them. A share of the demonstrations
(`extra_call_share`) looks one key up twice before answering, as demonstrations written by people
or models sometimes do; a reward that pays for economy has a call to save there.

`rft data make-lookup data/lookup` writes the shipped files: train.jsonl and valid.jsonl (rows in
OpenAI's chat format: assistant `tool_calls`, `tool` results, `reference_answer`), lookup.py (the
tool and its table), tools.yaml (the tool for `rft eval --tools` and `rft validate --tools`) and
grader.yaml (the number after "####" against the reference).
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

from rft_cli.data.synthetic import write_jsonl
from rft_cli.errors import ConfigError, DataError


@dataclass(frozen=True)
class LookupSpec:
    """The task's knobs: keys in the table (`keys`, of which `valid_keys` only validation questions
    use, unless `shared_keys`), keys per question (`terms`), the largest value, and the share of
    demonstrations with an extra call.

    With `shared_keys` every key appears in both sets and only the questions differ: no validation
    question names the same keys as a training question, in any order. The values still come only
    from the tool (a model answering from memory would fail once the table is redrawn; the tiny
    model does not: bench/notes/2026-12-07-lookup-exploration.md), and a small model no longer has
    to write keys it never wrote in training, which it does not learn in a laptop's minutes."""

    keys: int = 240
    valid_keys: int = 60
    terms: int = 2
    max_value: int = 49
    extra_call_share: float = 0.25
    shared_keys: bool = False

    def __post_init__(self) -> None:
        if not 2 <= self.keys <= 26 * 26:
            raise ConfigError(
                f"keys is {self.keys}; use 2 to {26 * 26} (two lowercase letters each)"
            )
        if not self.shared_keys and not 1 <= self.valid_keys < self.keys:
            raise ConfigError(
                f"valid_keys is {self.valid_keys}; use 1 to keys - 1 ({self.keys - 1})"
            )
        if not 1 <= self.terms <= 6:
            raise ConfigError(f"terms is {self.terms}; use 1 to 6 keys per question")
        if self.max_value < 1:
            raise ConfigError(f"max_value is {self.max_value}; use a positive number")
        if not 0.0 <= self.extra_call_share <= 1.0:
            raise ConfigError(
                f"extra_call_share is {self.extra_call_share}; use a share between 0 and 1"
            )


def make_table(rng: random.Random, spec: LookupSpec) -> dict[str, int]:
    """`spec.keys` distinct two-letter keys, each with a value from 1 to `max_value`."""
    letters = string.ascii_lowercase
    keys = rng.sample([a + b for a in letters for b in letters], spec.keys)
    return {key: rng.randint(1, spec.max_value) for key in keys}


def call_message(keys: list[str], first_id: int) -> dict:
    """An assistant turn calling `lookup` once per key (ids call_<n>, OpenAI's shape)."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{first_id + i}",
                "type": "function",
                "function": {"name": "lookup", "arguments": json.dumps({"key": key})},
            }
            for i, key in enumerate(keys)
        ],
    }


def make_row(rng: random.Random, table: dict[str, int], keys: list[str], spec: LookupSpec) -> dict:
    """One question over `keys` and its demonstrated episode: a call per key, then the answer."""
    order = list(keys)
    if spec.extra_call_share and rng.random() < spec.extra_call_share:
        order.insert(rng.randint(1, len(order)), rng.choice(keys))  # one key looked up again
    messages: list[dict] = [{"role": "user", "content": "+".join(keys) + "=?"}]
    for n, key in enumerate(order, start=1):
        messages.append(call_message([key], n))
        messages.append({"role": "tool", "tool_call_id": f"call_{n}", "content": str(table[key])})
    values = [table[key] for key in keys]
    total = sum(values)
    answer = f"{'+'.join(map(str, values))}={total}. #### {total}"
    messages.append({"role": "assistant", "content": answer})
    return {"messages": messages, "reference_answer": str(total)}


def generate_lookup(
    n_train: int, n_valid: int, seed: int = 0, spec: LookupSpec = LookupSpec()
) -> tuple[dict[str, int], list[dict], list[dict]]:
    """(table, train rows, validation rows), reproducible from `seed`; the validation questions
    use only keys no training question uses, and no question appears twice."""
    rng = random.Random(seed)
    table = make_table(rng, spec)
    keys = list(table)
    if spec.shared_keys:
        valid_keys = train_keys = keys
    else:
        valid_keys, train_keys = keys[: spec.valid_keys], keys[spec.valid_keys :]
    train = _questions(rng, table, train_keys, n_train, spec)
    asked = {tuple(sorted(keys_of(row))) for row in train}
    valid = _questions(rng, table, valid_keys, n_valid, spec, avoid=asked)
    return table, train, valid


def keys_of(row: dict) -> list[str]:
    """The keys a question names ("ka+mo=?" -> ["ka", "mo"])."""
    return row["messages"][0]["content"].removesuffix("=?").split("+")


def _questions(
    rng: random.Random,
    table: dict[str, int],
    keys: list[str],
    n: int,
    spec: LookupSpec,
    avoid: AbstractSet[tuple[str, ...]] = frozenset(),
) -> list[dict]:
    """`n` distinct questions over `keys`, none naming the same keys (in any order) as one in `avoid`."""
    if spec.terms > len(keys):
        raise ConfigError(f"{spec.terms} keys per question, but only {len(keys)} keys to draw from")
    rows: list[dict] = []
    seen: set[tuple[str, ...]] = set()
    for _ in range(50 * n):
        if len(rows) == n:
            return rows
        chosen = rng.sample(keys, spec.terms)
        if tuple(chosen) not in seen and tuple(sorted(chosen)) not in avoid:
            seen.add(tuple(chosen))
            rows.append(make_row(rng, table, chosen, spec))
    raise ConfigError(f"could not draw {n} distinct questions; lower the count or add keys")


TOOL_FILE = '''"""The built-in lookup task's tool (written by `rft data make-lookup`): the table the model never sees."""

TABLE = {table}


def lookup(key: str) -> str:
    """The value stored under a key.

    Args:
        key: two lowercase letters, such as "ka".
    """
    if key not in TABLE:
        raise KeyError(f"no value is stored under {{key!r}}")
    return str(TABLE[key])
'''

TOOLS_FILE = """# The built-in lookup task's tool, for `rft eval --tools` and `rft validate --tools` (docs/agent.md).
tools:
  - name: lookup
    python: lookup.py
    timeout: 5
episode:
  max_episode_steps: {steps}
  max_tokens: 320
"""

GRADER_FILE = """# The built-in lookup task's grader: the number after "####" against the sum of the keys' values.
type: numeric
name: answer
input: "{{{{ sample.output_text }}}}"
reference: "{{{{ item.reference_answer }}}}"
partial_credit: 0.1
"""


def write_lookup_task(
    folder: str | Path, n_train: int, n_valid: int, seed: int = 0, spec: LookupSpec = LookupSpec()
) -> tuple[int, int]:
    """Write the task's five files into `folder`; returns the row counts."""
    folder = Path(folder)
    table, train, valid = generate_lookup(n_train, n_valid, seed, spec)
    write_jsonl(train, folder / "train.jsonl")
    write_jsonl(valid, folder / "valid.jsonl")
    body = "{\n" + "".join(f'    "{k}": {v},\n' for k, v in sorted(table.items())) + "}"
    files = {
        "lookup.py": TOOL_FILE.format(table=body),
        "tools.yaml": TOOLS_FILE.format(steps=2 * spec.terms + 2),
        "grader.yaml": GRADER_FILE.format(),
    }
    for name, text in files.items():
        try:
            (folder / name).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise DataError(f"{folder / name}: cannot write ({exc.strerror or exc})") from None
    return len(train), len(valid)
