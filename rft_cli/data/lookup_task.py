"""A built-in task whose answer is only reachable through a tool: sums of values stored under keys.

    question:  "ka+mo=?"
    episode:   <tool_call>{"name": "lookup", "arguments": {"key": "ka"}}</tool_call>   -> tool: "17"
               <tool_call>{"name": "lookup", "arguments": {"key": "mo"}}</tool_call>   -> tool: "42"
               "17+42=59. #### 59"
    or:        <tool_call>{"name": "total", "arguments": {"keys": ["ka", "mo"]}}</tool_call> -> "59"
               "#### 59"

The table (key -> value) lives only in the tool's file, `lookup.py`, which the model never sees.
Every key appears in training and no validation question asks what a training question asks (the
same keys, in any order); with `shared_keys=False` the validation questions use keys no training
row names. Two in three demonstrations look each key up and add the values themselves; one in
three (`total_share`) asks the `total` tool for the sum in one call. A small model imitating that
mix looks keys up and adds badly; PPO, paid by the grader for the right sum, can learn that the
`total` tool answers right, in one call (docs/agent.md, "The built-in proof"). A share of the
look-up demonstrations (`extra_call_share`, a quarter) looks one key up twice before answering.

`rft data make-lookup data/lookup` writes the shipped files: train.jsonl and valid.jsonl (rows in
OpenAI's chat format: assistant `tool_calls`, `tool` results, `reference_answer`), lookup.py (the
tools and their table), tools.yaml (the tools for `rft eval --tools` and `rft validate --tools`)
and grader.yaml (the number after "####" against the reference).
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
    use, unless `shared_keys`), keys per question (`terms`), the largest value, the share of
    demonstrations that ask `total` for the sum (`total_share`; 0: no `total` tool) and the share
    of look-up demonstrations with an extra call.

    With `shared_keys` every key appears in both sets and only the questions differ: no validation
    question names the same keys as a training question, in any order. The values still come only
    from the tool (a model answering from memory would fail once the table is redrawn; the tiny
    model does not: bench/notes/2026-12-07-lookup-exploration.md), and a small model no longer has
    to write keys it never wrote in training, which it does not learn in a laptop's minutes."""

    keys: int = 100
    valid_keys: int = 25
    terms: int = 2
    max_value: int = 49
    extra_call_share: float = 0.25
    shared_keys: bool = True
    total_share: float = 1 / 3

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
        for name in ("extra_call_share", "total_share"):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise ConfigError(f"{name} is {share}; use a share between 0 and 1")


def make_table(rng: random.Random, spec: LookupSpec) -> dict[str, int]:
    """`spec.keys` distinct two-letter keys, each with a value from 1 to `max_value`."""
    letters = string.ascii_lowercase
    keys = rng.sample([a + b for a in letters for b in letters], spec.keys)
    return {key: rng.randint(1, spec.max_value) for key in keys}


def call_and_result(number: int, name: str, arguments: dict, result: str) -> list[dict]:
    """An assistant turn with one call (id call_<number>, OpenAI's shape) and the tool's result."""
    call = {
        "id": f"call_{number}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }
    return [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": f"call_{number}", "content": result},
    ]


def make_row(rng: random.Random, table: dict[str, int], keys: list[str], spec: LookupSpec) -> dict:
    """One question over `keys` and its demonstrated episode: a call per key, then the answer; or,
    for a `total_share` of them, one call to `total` with every key, then its result."""
    total = sum(table[key] for key in keys)
    messages: list[dict] = [{"role": "user", "content": "+".join(keys) + "=?"}]
    if spec.total_share and rng.random() < spec.total_share:
        messages += call_and_result(1, "total", {"keys": keys}, str(total))
        messages.append({"role": "assistant", "content": f"#### {total}"})
        return {"messages": messages, "reference_answer": str(total)}
    order = list(keys)
    if spec.extra_call_share and rng.random() < spec.extra_call_share:
        order.insert(rng.randint(1, len(order)), rng.choice(keys))  # one key looked up again
    for n, key in enumerate(order, start=1):
        messages += call_and_result(n, "lookup", {"key": key}, str(table[key]))
    answer = f"{'+'.join(str(table[key]) for key in keys)}={total}. #### {total}"
    messages.append({"role": "assistant", "content": answer})
    return {"messages": messages, "reference_answer": str(total)}


def generate_lookup(
    n_train: int, n_valid: int, seed: int = 0, spec: LookupSpec = LookupSpec()
) -> tuple[dict[str, int], list[dict], list[dict]]:
    """(table, train rows, validation rows), reproducible from `seed`; no validation question asks
    what a training question asks (with separate keys, none names a training key), and no
    question appears twice."""
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
{extra}'''

TOTAL_TOOL = '''

def total(keys: list[str]) -> str:
    """The sum of the values stored under some keys.

    Args:
        keys: the keys, such as ["ka", "mo"].
    """
    for key in keys:
        if key not in TABLE:
            raise KeyError(f"no value is stored under {key!r}")
    return str(sum(TABLE[key] for key in keys))
'''

TOOLS_FILE = """# The built-in lookup task's tools, for `rft eval --tools` and `rft validate --tools` (docs/agent.md).
tools:
  - name: lookup
    python: lookup.py
    timeout: 5
{extra}episode:
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
        "lookup.py": TOOL_FILE.format(table=body, extra=TOTAL_TOOL if spec.total_share else ""),
        "tools.yaml": TOOLS_FILE.format(
            steps=2 * spec.terms + 2,
            extra="  - name: total\n    python: lookup.py\n    timeout: 5\n"
            if spec.total_share
            else "",
        ),
        "grader.yaml": GRADER_FILE.format(),
    }
    for name, text in files.items():
        try:
            (folder / name).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise DataError(f"{folder / name}: cannot write ({exc.strerror or exc})") from None
    return len(train), len(valid)
