"""Guarantee 1 for graders: no sample and no item makes any grader type raise.

Derandomized hypothesis fuzzing (like the fuzz tests of tests/test_cli_app.py) feeds every grader type
adversarial samples and items: deep nesting, lone surrogates, control characters, NUL, numbers
like 1e309, -0.0 and 60-digit integers, JSON of every shape; 1 MB texts go through every type in
a separate test. Each grade must be a GradeResult with a finite reward in [0, 1], errors counted
as {kind: count >= 1}, printable as UTF-8, and the batch path must agree with the one-by-one path.
Inputs that once failed are kept in tests/corpus/grade_sample/ (replayed by
the corpus tests of tests/test_cli_app.py).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rft_cli.graders import build_grader, reward_function
from rft_cli.graders.base import GradeResult
from rft_cli.graders.similarity import wordnet_available
from tests.judge_fakes import fake_judge

_LONG = int(os.environ.get("RFT_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=_LONG or 40,
    deadline=None,
    derandomize=not _LONG,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

_TEXT = {"input": "{{ sample.output_text }}", "reference": "{{ item.answer }}"}
SPECS: dict[str, dict[str, Any]] = {
    "string_check": {"type": "string_check", **_TEXT, "operation": "eq"},
    "string_check_json": {
        "type": "string_check",
        "input": "{{ sample.output_json.a }}",
        "reference": "{{ item.answer }}",
        "operation": "ilike",
    },
    "string_check_item": {
        "type": "string_check",
        "input": "{{ item.x[0] }}",
        "reference": "{{ item }}",
        "operation": "like",
    },
    **{
        f"text_similarity_{m}": {"type": "text_similarity", **_TEXT, "evaluation_metric": m}
        for m in (
            "fuzzy_match",
            "bleu",
            "gleu",
            "rouge_1",
            "rouge_l",
            *(["meteor"] if wordnet_available() else []),
        )
    },
    "numeric": {"type": "numeric", "reference": "{{ item.answer }}", "partial_credit": 0.1},
    "numeric_patterns": {
        "type": "numeric",
        "reference": "{{ item.answer }}",
        "patterns": ["Answer: (.*)", "(a|aa)+$"],
        "rel_tol": 1e-6,
    },
    "math": {"type": "math", "reference": "{{ item.answer }}", "timeout": 2},
    "json_match": {"type": "json_match", "reference": "{{ item.ref }}"},
    "json_match_fields": {
        "type": "json_match",
        "reference": {"a": {"b": [1, "X"]}, "a.b": None},
        "fields": {"a.b": 1, "a": 2},
        "case_sensitive": False,
        "abs_tol": 0.5,
    },
    "json_match_text": {
        "type": "json_match",
        "input": "{{ sample.output_text }}",
        "reference": {"answer": 1},
    },
    "regex": {
        "type": "regex",
        "pattern": "(?P<answer>\\w+)\\W*$",
        "reference": "{{ item.answer }}",
        "flags": ["ignorecase"],
        "occurrence": "last",
    },
    "regex_slow": {"type": "regex", "pattern": "(a|aa)+$"},
    "multi": {
        "type": "multi",
        "graders": {
            "a": {"type": "string_check", **_TEXT, "operation": "ilike"},
            "b": {"type": "numeric", "reference": "{{ item.answer }}"},
        },
        "calculate_output": "min(a) + max(b) * 0.5 - abs(a - b) / 2 + sqrt(b) * log(exp(a)) / 4",
    },
    "multi_overflow": {
        "type": "multi",
        "graders": {"a": {"type": "regex", "pattern": "\\d"}},
        "calculate_output": "a + exp(1000 * a) / (a - 1)",
    },
}
GRADERS = {name: build_grader(spec) for name, spec in SPECS.items()}

# -- inputs -------------------------------------------------------------------------------------

DEEP = "[" * 20_000 + "]" * 20_000
DEEP_OBJECT = '{"a": ' * 5_000 + "1" + "}" * 5_000
SIXTY = "1" + "0" * 59
PIECES = [
    "\ud800",
    "\udfff",
    "\x00",
    "\x1b[31m",
    "\u202e",
    "\r\n",
    "\t",
    "\ufeff",
    "e\u0301",
    "東京",
    "๑๒",
    "1e309",
    "-1e309",
    "-0.0",
    SIXTY,
    "NaN",
    "Infinity",
    "1/0",
    "0/0",
    "#### ",
    "\\boxed{",
    "}",
    "Answer: ",
    "answer is ",
    "$1,000.50",
    "50%",
    "\u22125",
    "{{ item.answer }}",
    "{%",
    '{"a": ',
    '"',
    "[",
    "a" * 40 + "!",
    "\\frac{1}{0}",
    "x" * 300,
]
# Values a Python caller (or a JSON file at the parser's limit) can hand in as an item field.
_deep_value: list = []
for _ in range(3_000):
    _deep_value = [_deep_value]

_text = (
    st.text(max_size=40)
    | st.lists(st.sampled_from(PIECES) | st.text(max_size=5), max_size=8).map("".join)
    | st.sampled_from([DEEP, DEEP_OBJECT, "-0.0", "1e309", SIXTY, "", " "])
)
_scalar = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.sampled_from([10**400, -(2**70)])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([-0.0, 1e309, 5e-324])
    | _text
)
_json = st.recursive(
    _scalar,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["a", "b", "a.b", "answer", "", "\ud800"]) | st.text(max_size=4),
            inner,
            max_size=3,
        )
    ),
    max_leaves=12,
)


def _dump(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (ValueError, RecursionError):
        return str(value)


_sample_text = _text | _json.map(_dump)
samples = (
    _sample_text
    | st.builds(lambda t: {"output_text": t}, _sample_text)
    | st.builds(lambda t, j: {"output_text": t, "output_json": j}, _sample_text, _json)
)
_field = _json | st.just(_deep_value)
items = st.fixed_dictionaries(
    {},
    optional={
        "answer": _field,
        "ref": _field
        | st.dictionaries(st.sampled_from(["a", "a.b", "answer"]), _field, max_size=3),
        "x": _field,
        "a": _field,
    },
)


def assert_sound(result: Any, low: float = 0.0, high: float = 1.0) -> None:
    """The contract: a GradeResult, a finite float reward in [low, high] (the grader's range, [0, 1]
    but for a ranged score_model), errors as {kind: count >= 1}, and everything printable as UTF-8
    (rft grade prints it and writes it to files)."""
    assert type(result) is GradeResult
    assert (
        type(result.reward) is float
        and math.isfinite(result.reward)
        and low <= result.reward <= high
    ), result.reward
    assert all(
        isinstance(k, str) and type(v) is int and v >= 1 for k, v in result.errors.items()
    ), result.errors
    assert all(type(v) is float and 0.0 <= v <= 1.0 for v in result.sub_rewards.values()), (
        result.sub_rewards
    )
    json.dumps(
        {**result.to_dict(), "answer": result.answer, "details": result.details}, ensure_ascii=False
    ).encode("utf-8")


def assert_batch_agrees(grader: Any, batch: list, rows: list) -> list[GradeResult]:
    results = grader.grade_batch(batch, rows)
    assert len(results) == len(batch)
    for result, sample, item in zip(results, batch, rows, strict=True):
        assert_sound(result)
        one = grader.grade(sample, item)
        assert_sound(one)
        assert (one.reward, one.errors) == (result.reward, result.errors)
    return results


@pytest.mark.slow
@FUZZ
@given(batch=st.lists(st.tuples(samples, items), min_size=1, max_size=3))
def test_no_sample_or_item_breaks_a_rule_grader(batch):
    rows = [item for _, item in batch]
    outputs = [sample for sample, _ in batch]
    for grader in GRADERS.values():
        assert_batch_agrees(grader, outputs, rows)


@pytest.mark.slow
@FUZZ
@given(batch=st.lists(st.tuples(_sample_text, items), min_size=1, max_size=3))
def test_the_training_reward_function_gives_rewards_in_range(batch):
    """The TRL reward function (rft train) over completions and dataset columns."""
    columns = {key: [item.get(key) for _, item in batch] for key in ("answer", "ref", "x", "a")}
    for grader in (GRADERS["multi"], GRADERS["json_match"], GRADERS["numeric_patterns"]):
        rewards = reward_function(grader)(
            prompts=["q"] * len(batch), completions=[t for t, _ in batch], **columns
        )
        assert all(type(r) is float and 0.0 <= r <= 1.0 for r in rewards), rewards


MEGABYTE = [
    "a " * 500_000,
    "1" * 1_000_000,
    "#### " + " \t" * 500_000,
    "\\boxed{" * 150_000,
    '{"a": [' + "1, " * 300_000 + "1]}",
    "\ud800" * 1_000_000,
    "\x00" * 1_000_000,
]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GRADERS))
def test_megabyte_samples_and_items(name):
    grader = GRADERS[name]
    for text in (
        MEGABYTE[:3] if name == "math" else MEGABYTE
    ):  # math-verify takes seconds per megabyte
        assert_sound(grader.grade(text, {"answer": "42", "ref": {"a": 1}}))
    assert_sound(
        grader.grade("42", {"answer": MEGABYTE[0], "ref": {"a": MEGABYTE[1]}, "x": [MEGABYTE[5]]})
    )


# -- the python grader (each example runs in a sandboxed worker, so few examples) ----------------

PYTHON_SOURCE = """
def grade(sample, item):
    text, data = sample["output_text"], sample["output_json"]
    if isinstance(data, dict) and "a" in data:
        return 0.2 + 0.4 + 0.3 + 0.1
    if item.get("answer") == text:
        return 1
    return len(text) % 3 / 2
"""


@pytest.fixture(scope="module")
def python_grader():
    with build_grader(
        {"type": "python", "source": PYTHON_SOURCE, "workers": 1, "timeout": 20}
    ) as grader:
        yield grader


@pytest.mark.slow
@settings(FUZZ, max_examples=_LONG or 6)
@given(batch=st.lists(st.tuples(samples, items), min_size=1, max_size=4))
def test_no_sample_or_item_breaks_the_python_grader(python_grader, batch):
    results = python_grader.grade_batch([s for s, _ in batch], [i for _, i in batch])
    for result in results:
        assert_sound(result)
        assert not set(result.errors) & {
            "python_grader_crash",
            "python_grader_timeout",
            "python_grader_out_of_range",
        }, result.details


# -- model graders against a stub OpenAI-compatible endpoint ------------------------------------


@pytest.fixture(scope="module")
def judges():
    with fake_judge() as judge:
        messages = [
            {"role": "system", "content": "Grade."},
            {"role": "user", "content": "{{ item.answer }} vs {{ sample.output_text }}"},
        ]
        graders = [
            build_grader(
                {
                    "type": "score_model",
                    "model": "judge",
                    "base_url": judge.url,
                    "input": messages,
                    "range": [0, 10],
                }
            ),
            build_grader(
                {
                    "type": "label_model",
                    "model": "judge",
                    "base_url": judge.url,
                    "input": messages,
                    "labels": ["correct", "incorrect"],
                    "passing_labels": ["correct"],
                }
            ),
        ]
        yield judge, graders


_replies = (
    _text
    | _json.map(_dump)
    | st.sampled_from(
        [
            "7",
            "1e999",
            "NaN",
            "-Infinity",
            '{"result": 1e309}',
            '{"result": "correct"}',
            "not correct, it is incorrect",
            "10/10",
            "\ud800",
        ]
    )
)


@pytest.mark.slow
@settings(FUZZ, max_examples=_LONG or 25)
@given(sample=samples, item=items, reply=_replies)
def test_no_sample_item_or_judge_reply_breaks_a_model_grader(judges, sample, item, reply):
    judge, graders = judges
    judge.answer = lambda body: reply
    for grader in graders:  # a score_model's rewards lie in its own range (OpenAI's meaning)
        assert_sound(grader.grade(sample, item), *grader.reward_range)


def test_math_verify_logs_the_start_of_a_huge_answer_not_all_of_it(caplog):
    import logging

    import rft_cli.graders.math_grader  # noqa: F401  (installs the filter)

    with caplog.at_level(logging.WARNING, logger="math_verify.parser"):
        logging.getLogger("math_verify.parser").warning("Timeout during parsing: %s", "9" * 10**6)
        logging.getLogger("math_verify.parser").warning("Timeout during parsing: %s", "short")
    long, short = (record.getMessage() for record in caplog.records)
    assert long.startswith("Timeout during parsing: 999") and "(1,000,024 characters)" in long
    assert len(long) < 300 and short == "Timeout during parsing: short"
