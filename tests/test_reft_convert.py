"""`rft data convert-reft`: ReFT's JSON records become contract rows with `#### X` demonstrations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.data.records import check_row, load_rows
from rft_cli.data.reft import convert_record, convert_reft, normalize_answer
from rft_cli.errors import DataError

SHARED = Path("/work/shared/data/reft")
COT = (
    "If Iesha has 344 books and 136 are about school, subtract:\n\n344 - 136 = 208\n\n"
    "Therefore, the answer is <208>."
)


@pytest.mark.parametrize(
    "value,expected",
    [
        ("14.0", "14"),
        ("3.5", "3.5"),
        ("1,200", "1200"),
        ("18", "18"),
        ("-2.0", "-2"),
        ("3.2222222222", "3.2222222222"),
        ("n/a", "n/a"),
    ],
)
def test_normalize_answer(value, expected):
    assert normalize_answer(value) == expected


def test_training_record_gets_a_solution_ending_in_the_answer_line():
    row = convert_record(
        {
            "item_id": "svamp_1",
            "question": "Iesha has 344 books. ",
            "answer_cot": COT,
            "answer_value": "208.0",
        },
        "x",
    )
    assert row == {
        "messages": [{"role": "user", "content": "Iesha has 344 books."}],
        "solution": "If Iesha has 344 books and 136 are about school, subtract:\n\n344 - 136 = 208\n#### 208",
        "reference_answer": "208",
        "id": "svamp_1",
    }
    assert check_row(row) == []


def test_chain_keeps_its_own_conclusion_and_a_chain_without_one_gets_the_reference():
    rounded = convert_record(
        {
            "question": "q",
            "answer_value": "8.9333",
            "answer_cot": "x\nTherefore, the answer is <9>.",
        },
        "x",
    )
    assert rounded["solution"] == "x\n#### 9" and rounded["reference_answer"] == "8.9333"
    bare = convert_record({"question": "q", "answer_value": "4.0", "answer_cot": "4 apples"}, "x")
    assert bare["solution"] == "4 apples\n#### 4"


def test_test_record_has_no_solution():
    row = convert_record({"item_id": "gsm8k_0", "question": "How many?", "answer_value": "18"}, "x")
    assert "solution" not in row and row["reference_answer"] == "18"


@pytest.mark.parametrize(
    "record,field",
    [
        ({"answer_value": "1"}, "question"),
        ({"question": "q"}, "answer_value"),
        ({"question": " ", "answer_value": "1"}, "question"),
    ],
)
def test_missing_fields_name_the_record(record, field):
    with pytest.raises(DataError, match=f'f.json record 3: missing field "{field}"'):
        convert_record(record, "f.json record 3")


def test_duplicates_are_dropped_unless_kept(tmp_path):
    src = tmp_path / "in.json"
    src.write_text(
        json.dumps(
            [
                {"item_id": f"s{i}", "question": "Same question?", "answer_value": "1"}
                for i in range(3)
            ]
        )
    )
    report = convert_reft(src, tmp_path / "out.jsonl")
    assert (report.rows, report.duplicates) == (1, ["s1", "s2"])
    assert convert_reft(src, tmp_path / "all.jsonl", dedupe=False).rows == 3


@pytest.mark.parametrize(
    "content,message", [("{not json", "not valid JSON"), ('{"a": 1}', "expected a JSON array")]
)
def test_bad_input_file_exits_1_with_one_sentence(tmp_path, content, message):
    src = tmp_path / "bad.json"
    src.write_text(content)
    result = CliRunner().invoke(app, ["data", "convert-reft", str(src), str(tmp_path / "o.jsonl")])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.skipif(not SHARED.exists(), reason="ReFT's files are not on this machine")
@pytest.mark.parametrize(
    "name,rows,with_solution",
    [
        ("svamp_nl.json", 3065, 3065),
        ("svamp_test_set.json", 1000, 0),
        ("gsm8k_test_set.json", 1319, 0),
    ],
)
def test_real_files_convert_to_valid_rows(tmp_path, name, rows, with_solution):
    result = CliRunner().invoke(
        app, ["data", "convert-reft", str(SHARED / name), str(tmp_path / "o.jsonl")]
    )
    assert result.exit_code == 0, result.output
    converted = load_rows(tmp_path / "o.jsonl")
    assert (len(converted), sum("solution" in r for r in converted)) == (rows, with_solution)
    assert all(r["solution"].rsplit("#### ", 1)[1].strip() for r in converted if "solution" in r)


def test_shipped_svamp_matches_a_fresh_conversion(tmp_path):
    """data/svamp/*.jsonl are exactly what the converter writes from ReFT's files."""
    shipped = Path(__file__).resolve().parents[1] / "data" / "svamp"
    if not SHARED.exists():
        pytest.skip("ReFT's files are not on this machine")
    for source, name in (("svamp_nl.json", "train.jsonl"), ("svamp_test_set.json", "test.jsonl")):
        convert_reft(SHARED / source, tmp_path / name)
        assert (tmp_path / name).read_bytes() == (shipped / name).read_bytes()
