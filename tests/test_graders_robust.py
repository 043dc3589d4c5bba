"""Issue 12 part A, one regression per bug: inputs that made a grader raise, hang or score a right
answer wrong. Each test tells the bug's story; tests/test_graders_adversarial.py fuzzes the rest."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.graders import answers, build_grader
from rft_cli.graders.base import Grader, GradeResult, TemplatedGrader, clamp_reward

runner = CliRunner()
DEEP = "[" * 20_000 + "]" * 20_000
EXACT = {"type": "string_check", "input": "{{ sample.output_text }}", "reference": "x", "operation": "eq"}


def python_grader(body: str) -> dict:
    return {"type": "python", "source": "def grade(sample, item):\n" + "".join(f"    {line}\n" for line in body.splitlines()), "workers": 1}


def grade_cli(tmp_path, spec: dict, item: dict, sample: str) -> dict:
    path = tmp_path / "grader.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    result = runner.invoke(app, ["grade", str(path), "--item", json.dumps(item), "--sample", sample, "--format", "json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- crashes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("formula,reward", [("min(a)", 1.0), ("max(a)", 1.0), ("min(a, 0.5)", 0.5)])
def test_min_and_max_of_one_argument(tmp_path, formula, reward):
    """`min(a)` built, then raised TypeError ('float' object is not iterable) at grading time."""
    spec = {"type": "multi", "graders": {"a": EXACT}, "calculate_output": formula}
    assert grade_cli(tmp_path, spec, {}, "x") == {"reward": reward, "sub_rewards": {"a": 1.0}, "errors": {}}


class _Broken(TemplatedGrader):
    def _score(self, ctx):
        if ctx.sample["output_text"] == "boom":
            raise TypeError("a bug in the grader")
        return 1.0


def test_an_unexpected_exception_is_a_counted_error_and_spares_the_batch():
    results = _Broken().grade_batch(["ok", "boom", "ok"], [{}, {}, {}])
    assert [r.reward for r in results] == [1.0, 0.0, 1.0]
    assert results[1].errors == {"grader_exception": 1}
    assert "TypeError: a bug in the grader" in results[1].details["grader_exception"]


class _BrokenBatch(Grader):
    """A pooled grader whose batch call fails on one sample: the rest still get their grades."""

    def _grade(self, sample, item):
        if sample == "boom":
            raise RecursionError("too deep")
        return GradeResult(1.0)

    def _grade_batch(self, samples, items):
        return [self._grade(s, i) for s, i in zip(samples, items, strict=True)]


def test_a_batch_that_raises_is_graded_one_sample_at_a_time():
    results = _BrokenBatch().grade_batch(["a", "boom", "b"], [{}, {}, {}])
    assert [(r.reward, r.errors) for r in results] == [(1.0, {}), (0.0, {"grader_exception": 1}), (1.0, {})]


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "string_check", "input": "{{ sample.output_json.a }}", "reference": "x", "operation": "eq"},
        {"type": "json_match", "reference": {"a": 1}},
        {"type": "json_match", "input": "{{ sample.output_text }}", "reference": {"a": 1}},
    ],
    ids=["template", "json_match", "json_match_text"],
)
def test_deeply_nested_json_sample_is_a_parse_error(tmp_path, spec):
    """A 20,000-deep `[[[[...]]]]` sample raised RecursionError from json.loads."""
    assert grade_cli(tmp_path, spec, {}, DEEP) == {"reward": 0.0, "sub_rewards": {}, "errors": {"sample_parse_error": 1}}


def test_a_value_too_deep_to_render_is_counted():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    grader = build_grader({"type": "string_check", "input": "{{ item.a }}", "reference": "x", "operation": "eq"})
    assert grader.grade("x", {"a": deep}).errors == {"nesting_too_deep_error": 1}
    assert build_grader({"type": "json_match", "reference": {"a": deep}}).grade({"output_text": "", "output_json": {"a": deep}}, {}).reward == 1.0


@pytest.mark.slow
def test_python_grader_gets_lone_surrogates_and_deep_json_intact(tmp_path):
    """A lone surrogate ("\\ud800", valid JSON) raised UnicodeEncodeError in the parent; a deep
    sample raised RecursionError building `output_json`."""
    spec = python_grader("return 1.0 if item['a'] == '\\ud800' and sample['output_text'] == '\\udfff' and sample['output_json'] is None else 0.0")
    path = tmp_path / "grader.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    result = runner.invoke(app, ["grade", str(path), "--item", '{"a": "\\ud800"}', "--sample", "\udfff", "--format", "json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["reward"] == 1.0, result.output
    with build_grader(python_grader("return 1.0 if sample['output_json'] is None else 0.5")) as grader:
        assert grader.grade(DEEP, {}).reward == 1.0
        deep: list = []
        for _ in range(5000):
            deep = [deep]
        bad = grader.grade("x", {"a": deep})
        assert bad.reward == 0.0 and bad.errors == {"python_grader_input_error": 1}


def test_lone_surrogates_in_answers_and_details_can_be_printed_and_written(tmp_path):
    """`rft grade --output` writes UTF-8: an answer holding "\\ud800" is written escaped."""
    (tmp_path / "g.yaml").write_text('type: regex\npattern: "(.+)"\nreference: "{{ item.a }}"\n', encoding="utf-8")
    (tmp_path / "rows.jsonl").write_text('{"a": "\\ud800"}\n', encoding="utf-8")
    (tmp_path / "samples.jsonl").write_text('{"output_text": "\\ud800"}\n', encoding="utf-8")
    result = runner.invoke(app, ["grade", str(tmp_path / "g.yaml"), "--data", str(tmp_path / "rows.jsonl"),
                                 "--samples", str(tmp_path / "samples.jsonl"), "--output", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8"))
    assert written["reward"] == 1.0 and written["answer"] == "\\ud800"


def test_validate_warns_about_lone_surrogates(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = ['{"messages": [{"role": "user", "content": "hi \\ud800"}, {"role": "assistant", "content": "ok"}]}',
            '{"messages": [{"role": "user", "content": "a pair \\ud83d\\ude00 is fine"}, {"role": "assistant", "content": "ok"}]}']
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["validate", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["warning_counts"] == {"lone_surrogate": 1} and report["warnings"][0]["line"] == 1


# -- hangs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "regex", "pattern": "(a|aa)+$"},
        {"type": "regex", "pattern": "(a|aa)+$", "occurrence": "last"},
        {"type": "numeric", "reference": "1", "patterns": ["(a|aa)+$"], "last_number": False},
    ],
    ids=["regex_first", "regex_last", "numeric_pattern"],
)
def test_catastrophic_backtracking_times_out(monkeypatch, spec):
    """A user's pattern that backtracks exponentially never returned (30 s and counting)."""
    monkeypatch.setattr(answers, "PATTERN_TIMEOUT", 0.05)
    started = time.monotonic()
    result = build_grader(spec).grade("a" * 60 + "!", {})
    assert time.monotonic() - started < 5
    assert result.reward == 0.0 and result.errors == {"regex_timeout": 1}


def test_the_issue_pattern_answers_promptly(tmp_path):
    started = time.monotonic()
    assert grade_cli(tmp_path, {"type": "regex", "pattern": "(a+)+$"}, {}, "a" * 35 + "!") == {"reward": 0.0, "sub_rewards": {}, "errors": {}}
    assert time.monotonic() - started < 5


def test_default_numeric_patterns_stay_fast_on_a_megabyte():
    """Our own patterns run on `re` without a time limit: none may backtrack badly."""
    grader = build_grader({"type": "numeric", "reference": "1"})
    for text in ("#### " + " \t" * 500_000 + "x", "\\boxed{" * 150_000, "answer is " * 100_000, "1," * 500_000,
                 "- $ " * 250_000, "1 " * 500_000, "\\boxed{\\frac{" * 80_000):
        started = time.monotonic()
        grader.grade(text, {})
        assert time.monotonic() - started < 3, text[:20]


# -- wrong scores -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value,expected", [(0.2 + 0.4 + 0.3 + 0.1, 1.0), (-1e-12, 0.0), (-0.0, 0.0), (0.5, 0.5), (1.0 + 1e-6, None),
                                            (1.5, None), (-0.1, None), (float("nan"), None), (float("inf"), None), ("0.5", 0.5), (None, None), (10**400, None)])
def test_clamp_reward_rule(value, expected):
    assert clamp_reward(value) == expected


@pytest.mark.slow
def test_python_rounding_error_is_clamped_and_a_real_overshoot_counted():
    """0.2 + 0.4 + 0.3 + 0.1 = 1.0000000000000002 scored 0 as python_grader_out_of_range."""
    with build_grader(python_grader("return 0.2 + 0.4 + 0.3 + 0.1")) as grader:
        assert grader.grade("x", {}) == GradeResult(1.0)
    with build_grader(python_grader("return 1.5")) as grader:
        assert grader.grade("x", {}).errors == {"python_grader_out_of_range": 1}
    with build_grader(python_grader("return 10 ** 400")) as grader:
        assert grader.grade("x", {}).reward == 0.0


@pytest.mark.parametrize("formula,reward,errors", [("a * 0.2 + 0.4 + 0.3 + 0.1", 1.0, {}), ("a + 0.5", 0.0, {"formula_out_of_range": 1}),
                                                   ("a - 2", 0.0, {"formula_out_of_range": 1}), ("a / 2", 0.5, {})])
def test_multi_applies_the_same_rule(formula, reward, errors):
    """The same sum in `multi` came back unclamped (1.0000000000000002), and 1.5 as 1.5."""
    result = build_grader({"type": "multi", "graders": {"a": EXACT}, "calculate_output": formula}).grade("x", {})
    assert (result.reward, result.errors) == (reward, errors)


class _Overshoot(Grader):
    def __init__(self, value):
        self.value = value

    def _grade(self, sample, item):
        return GradeResult(self.value)


@pytest.mark.parametrize("value,reward,errors", [(1 + 1e-12, 1.0, {}), (1.2, 0.0, {"reward_out_of_range": 1}), (float("nan"), 0.0, {"reward_out_of_range": 1})])
def test_every_grader_applies_the_rule(value, reward, errors):
    result = _Overshoot(value).grade("x", {})
    assert (result.reward, result.errors) == (reward, errors)


@pytest.mark.parametrize(
    "spec,sample,reward",
    [
        ({"type": "json_match", "reference": {"a": True}}, '{"a": 1}', 0.0),
        ({"type": "json_match", "reference": {"a": 1}}, '{"a": true}', 0.0),
        ({"type": "json_match", "reference": {"a": None}}, '{"a": 0}', 0.0),
        ({"type": "json_match", "reference": {"a": 1}}, '{"a": 1.0}', 1.0),
        ({"type": "json_match", "reference": {"a.b": 1}}, '{"a.b": 1}', 1.0),
        ({"type": "json_match", "reference": {"a": {"b": 1}}, "fields": {"a.b": 1}}, '{"a": {"b": 1}}', 1.0),
        ({"type": "json_match", "reference": {"a": {"b": "X "}}, "case_sensitive": False}, '{"a": {"b": "x"}}', 1.0),
        ({"type": "json_match", "reference": {"a": [{"b": "X"}]}}, '{"a": [{"b": "x"}]}', 0.0),
        ({"type": "json_match", "reference": {"a": [1.0, {"b": 2.0}]}, "abs_tol": 0.01}, '{"a": [1.001, {"b": 2.001}]}', 1.0),
        ({"type": "json_match", "reference": {"a": [1, 2]}}, '{"a": [1, 2, 3]}', 0.0),
        ({"type": "json_match", "reference": {"a": 10**60}}, f'{{"a": {10**60}}}', 1.0),
        ({"type": "json_match", "reference": {"a": 10**400}}, '{"a": 1e300}', 0.0),
    ],
)
def test_json_match_compares_by_type_key_and_depth(spec, sample, reward):
    """true matched 1; "a.b" keys never matched; nested objects ignored case_sensitive and abs_tol."""
    result = build_grader(spec).grade(sample, {})
    assert result.reward == reward and result.errors == {}


def test_numeric_reads_a_long_final_number_in_a_long_output(tmp_path):
    """Past 256 characters the last number was read from a 48-character window: 1.000...0 -> 0.1."""
    text = "x" * 300 + " so: 1." + "0" * 60
    assert grade_cli(tmp_path, {"type": "numeric", "reference": "1"}, {}, text)["reward"] == 1.0
    number = "12," + ",".join(["345"] * 20)
    assert answers.last_number_in("y" * 300 + f" {number} apples") == float(number.replace(",", ""))


def test_rouge_scores_identical_non_latin_text_as_identical(tmp_path):
    """rouge-score's tokenizer dropped every non-ASCII letter: identical Japanese scored 0.0."""
    spec = {"type": "text_similarity", "input": "{{ sample.output_text }}", "reference": "{{ item.ref }}", "evaluation_metric": "rouge_1"}
    assert grade_cli(tmp_path, spec, {"ref": "東京は日本の首都です"}, "東京は日本の首都です")["reward"] == 1.0
    assert grade_cli(tmp_path, {**spec, "evaluation_metric": "rouge_l"}, {"ref": "Привет, мир"}, "привет мир")["reward"] == 1.0
    assert grade_cli(tmp_path, spec, {"ref": "東京は日本の首都です"}, "大阪")["reward"] == 0.0


def test_rouge_on_ascii_is_unchanged():
    from rouge_score import rouge_scorer

    ours = build_grader({"type": "text_similarity", "input": "{{ sample.output_text }}", "reference": "{{ item.ref }}", "evaluation_metric": "rouge_2"})
    default = rouge_scorer.RougeScorer(["rouge2"])
    for text, ref in [("The cat sat on the mat.", "the cat is on the mat"), ("x_y z-1 2.5", "x y z 1 2 5"), ("", "a b")]:
        assert ours.grade(text, {"ref": ref}).reward == pytest.approx(default.score(ref, text)["rouge2"].fmeasure)
