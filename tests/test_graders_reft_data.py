"""The numeric grader on ReFT's real SVAMP and GSM8K files (../shared/data/reft, beside the clone)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rft_cli.graders import build_grader

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "reft"
FILES = ["svamp_nl.json", "svamp_test_set.json", "gsm8k_test_set.json"]

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"ReFT data folder {DATA} is absent (CI puts shared/ beside the clone)")


def _records(name: str) -> list[dict]:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def grader():
    return build_grader({"type": "numeric", "reference": "{{ item.answer_value }}", "partial_credit": 0.1})


@pytest.mark.parametrize("name", FILES)
def test_every_reference_answer_scores_one_against_itself(grader, name):
    records = _records(name)
    assert len(records) >= 1000
    samples = [f"#### {r['answer_value']}" for r in records]
    results = grader.grade_batch(samples, records)
    failures = [(r["item_id"], r["answer_value"], res) for r, res in zip(records, results, strict=True) if res.reward != 1.0]
    assert failures == []


@pytest.mark.parametrize("name", FILES)
def test_a_wrong_number_gets_the_partial_credit(grader, name):
    records = _records(name)
    samples = [f"#### {float(r['answer_value']) + 7}" for r in records]
    rewards = [res.reward for res in grader.grade_batch(samples, records)]
    assert set(rewards) == {0.1}


def test_svamp_chain_of_thought_demonstrations_score_one(grader):
    """ReFT's own demonstrations end 'Therefore, the answer is <203>.'; each must grade as correct."""
    records = _records("svamp_nl.json")
    results = grader.grade_batch([r["answer_cot"] for r in records], records)
    wrong = [r["item_id"] for r, res in zip(records, results, strict=True) if res.reward != 1.0]
    assert len(wrong) <= len(records) // 100, wrong[:10]
