"""The built-in arithmetic task: valid rows, correct demonstrations, reproducible and disjoint splits."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.data.records import check_row, demonstration, normalize_text
from rft_cli.data.synthetic import DEFAULT_SPEC, ArithSpec, generate_arith
from rft_cli.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "arith"


def _replay(solution: str) -> int:
    """Recompute every equation of a demonstration and return the final answer line's number."""
    work, answer = solution.split(" #### ")
    for eq in work.split(" "):
        left, right = eq.rstrip(".").split("=")
        assert re.fullmatch(r"\d+([+-]\d+)+", left)
        assert sum(int(term) for term in re.findall(r"[+-]?\d+", left)) == int(right)
    return int(answer)


@pytest.mark.parametrize(
    "spec",
    [
        ArithSpec(),
        DEFAULT_SPEC,
        ArithSpec(steps=3, style="equation"),
        ArithSpec(steps=1, max_start=20, max_operand=20, max_total=40),
        ArithSpec(steps=2, ops="+", max_total=99),
    ],
)
def test_rows_follow_the_contract_and_the_arithmetic_is_right(spec):
    train, valid = generate_arith(200, 50, seed=3, spec=spec)
    for row in train + valid:
        assert check_row(row) == []
        assert row["messages"][-1]["role"] == "user"
        assert demonstration(row) == row["solution"]
        assert row["solution"].count("=") in (
            {spec.steps, 1} if spec.one_line_share else {spec.steps}
        )
        assert _replay(row["solution"]) == int(row["reference_answer"])
        assert 0 <= int(row["reference_answer"]) <= spec.max_total


def test_each_step_in_the_question_matches_the_equation():
    (row,), _ = generate_arith(1, 0, seed=11)
    question, solution = row["messages"][0]["content"], row["solution"]
    numbers = re.findall(r"\d+", question)
    operands = re.findall(r"(\d+)[+-](\d+)=", solution)
    assert numbers[0] == operands[0][0]
    assert numbers[1:] == [b for _, b in operands]


def test_an_equation_question_is_the_sum_the_demonstration_works_out():
    (row,), _ = generate_arith(
        1, 0, seed=11, spec=replace(DEFAULT_SPEC, one_line_share=0.0)
    )  # step by step
    question, solution = row["messages"][0]["content"], row["solution"]
    assert re.fullmatch(r"\d+(\+\d){4}=\?", question)
    operands = re.findall(r"(\d+)[+-](\d+)=", solution)
    assert question.rstrip("=?").split("+") == [operands[0][0]] + [b for _, b in operands]


def test_same_seed_same_rows_and_splits_are_disjoint():
    train, valid = generate_arith(300, 100, seed=5)
    assert (train, valid) == generate_arith(300, 100, seed=5)
    assert train != generate_arith(300, 100, seed=6)[0]
    keys = [normalize_text(r["messages"][0]["content"]) for r in train + valid]
    assert len(set(keys)) == len(keys)


def test_impossible_counts_are_a_usage_error():
    with pytest.raises(ConfigError, match="distinct problems"):
        generate_arith(
            5000, 0, seed=0, spec=ArithSpec(steps=1, max_start=10, max_operand=2, max_total=20)
        )


@pytest.mark.parametrize("style", ["equation", "words"])
def test_a_one_line_demonstration_writes_the_question_as_one_equation(style):
    spec = ArithSpec(steps=3, ops="+-", style=style, one_line_share=0.4)
    train, _ = generate_arith(500, 0, seed=2, spec=spec)
    one_line = [r for r in train if r["solution"].count("=") == 1]
    assert 150 < len(one_line) < 250  # about 40% of 500
    for row in one_line:
        work, answer = row["solution"].split(" #### ")
        left, right = work.rstrip(".").split("=")
        terms = re.fullmatch(r"\d+([+-]\d+){3}", left) and re.findall(r"[+-]?\d+", left)
        assert (
            sum(int(t) for t in terms) == int(right) == int(answer) == int(row["reference_answer"])
        )
        if style == "equation":
            assert row["messages"][0]["content"] == f"{left}=?"
    stepwise = [r for r in train if r not in one_line]
    assert all(
        r["solution"].count("=") == 3 and _replay(r["solution"]) == int(r["reference_answer"])
        for r in stepwise
    )


def test_one_line_share_changes_only_the_demonstrations():
    base, mixed = ArithSpec(steps=2), ArithSpec(steps=2, one_line_share=0.5)
    plain_rows, _ = generate_arith(50, 0, seed=4, spec=base)
    mixed_rows, _ = generate_arith(50, 0, seed=4, spec=mixed)
    assert (
        plain_rows[0]["messages"] == mixed_rows[0]["messages"]
    )  # same first question, same answer
    assert plain_rows[0]["reference_answer"] == mixed_rows[0]["reference_answer"]
    assert generate_arith(
        50, 0, seed=4, spec=ArithSpec(steps=2, one_line_share=0.0)
    ) == generate_arith(50, 0, seed=4, spec=base)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"max_start": 60}, "max_start"),
        ({"ops": "*"}, "ops"),
        ({"style": "latex"}, "style"),
        ({"one_line_share": 1.5}, "one_line_share"),
    ],
)
def test_bad_spec_is_a_usage_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ArithSpec(**kwargs)


def test_make_arith_regenerates_the_shipped_data(tmp_path):
    """`rft data make-arith` with its defaults writes the files that ship in data/arith byte for byte."""
    result = CliRunner().invoke(app, ["data", "make-arith", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("train.jsonl", "valid.jsonl"):
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes()


def test_shipped_grader_reads_the_reference_answer():
    import yaml

    spec = yaml.safe_load((SHIPPED / "grader.yaml").read_text())
    assert spec["type"] == "numeric" and spec["partial_credit"] == 0.1
    assert "item.reference_answer" in spec["reference"]
    first = json.loads((SHIPPED / "train.jsonl").read_text().splitlines()[0])
    assert first["solution"].endswith(f"#### {first['reference_answer']}")


def test_shipped_demonstrations_are_mostly_one_line_with_a_stepwise_minority():
    rows = [json.loads(line) for line in (SHIPPED / "train.jsonl").read_text().splitlines()]
    one_line = sum(row["solution"].count("=") == 1 for row in rows)
    assert 0.6 < one_line / len(rows) < 0.7
    assert all(_replay(row["solution"]) == int(row["reference_answer"]) for row in rows)


def test_make_arith_test_split_leaves_train_and_valid_as_they_were(tmp_path):
    """--test draws held-out rows after the validation rows: train and valid do not change, and no
    question is in two files (data/wordsums, the real-model recipe's task, was made this way)."""
    base = "data make-arith --train 30 --valid 10 --style words --seed 3".split()
    assert CliRunner().invoke(app, [*base, str(tmp_path / "a")]).exit_code == 0
    result = CliRunner().invoke(app, [*base, "--test", "15", str(tmp_path / "b")])
    assert result.exit_code == 0 and "15 test" in result.output
    for name in ("train.jsonl", "valid.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert not (tmp_path / "a" / "test.jsonl").exists()
    questions = [
        {json.loads(line)["messages"][0]["content"] for line in (tmp_path / "b" / name).open()}
        for name in ("train.jsonl", "valid.jsonl", "test.jsonl")
    ]
    assert [len(q) for q in questions] == [30, 10, 15]
    assert not (questions[0] & questions[2]) and not (questions[1] & questions[2])


def test_the_real_model_task_regenerates_from_the_command_data_licenses_gives(tmp_path):
    """data/wordsums (recipes/smollm2-wordsums.yaml) is what the command in data/LICENSES.md
    writes, byte for byte: the docs cannot drift from the data."""
    licences = (SHIPPED.parent / "LICENSES.md").read_text()
    command = licences.split("generated by `rft data make-arith data/wordsums ")[1].split("`")[0]
    result = CliRunner().invoke(app, ["data", "make-arith", str(tmp_path), *command.split()])
    assert result.exit_code == 0, result.output
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl"):
        assert (tmp_path / name).read_bytes() == (SHIPPED.parent / "wordsums" / name).read_bytes()
