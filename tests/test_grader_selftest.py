"""The grader self-test: `rft validate --grader` and `rft train`'s preflight grade each demonstration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.errors import DataError
from rft_cli.graders import build_grader
from rft_cli.graders.selftest import self_test

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "tiny-test.yaml"
NUMERIC = {"type": "numeric", "name": "answer", "reference": "{{ item.answer }}"}


def _row(prompt: str, answer: str, demo: str | None, *, as_message: bool = False) -> str:
    messages = [{"role": "user", "content": prompt}]
    row: dict = {"messages": messages, "answer": answer}
    if demo is not None and as_message:
        messages.append({"role": "assistant", "content": demo})
    elif demo is not None:
        row["solution"] = demo
    return json.dumps(row)


def _data(tmp_path: Path) -> Path:
    """Five rows: three right demonstrations (one as a final assistant turn), one wrong, one missing."""
    path = tmp_path / "train.jsonl"
    path.write_text(
        "\n".join(
            [
                _row("1+1=", "2", "#### 2"),
                _row("2+2=", "4", "so #### 4", as_message=True),
                _row("3+3=", "6", "#### 7"),
                _row("4+4=", "8", None),
                _row("5+5=", "10", "#### 10"),
            ]
        )
        + "\n"
    )
    return path


def test_self_test_reports_each_demonstration_below_full_marks(tmp_path):
    path = _data(tmp_path)
    report = self_test(build_grader({**NUMERIC, "partial_credit": 0.1}), [(path, "solution")])
    assert (report.rows, report.graded, report.skipped, report.passed) == (5, 4, 1, 3)
    assert [(f.line, f.score) for f in report.failures] == [(3, 0.1)]
    assert report.summary() == (
        "the grader 'answer' gives full marks to 3 of 4 demonstrations; "
        "1 row(s) without a demonstration skipped"
    )


def test_grader_errors_and_their_details_are_reported(tmp_path):
    path = _data(tmp_path)
    grader = build_grader(
        {
            "type": "string_check",
            "name": "s",
            "input": "{{ sample.output_text }}",
            "reference": "{{ item.missing }}",
            "operation": "eq",
        }
    )
    report = self_test(grader, [(path, "solution")])
    assert len(report.failures) == 4 and report.failures[0].errors == {"invalid_variable_error": 1}
    assert report.error_counts == {"invalid_variable_error": 4}


def test_pass_threshold_is_the_bar(tmp_path):
    path = _data(tmp_path)
    grader = build_grader(
        {
            "type": "text_similarity",
            "name": "sim",
            "input": "{{ sample.output_text }}",
            "reference": "#### {{ item.answer }}",
            "evaluation_metric": "fuzzy_match",
            "pass_threshold": 0.5,
        }
    )
    report = self_test(grader, [(path, "solution")])
    assert report.threshold == 0.5 and report.failures == []  # "#### 7" is close to "#### 6"
    assert "at or above its pass_threshold 0.5" in report.summary()


def _validate(*args):
    return runner.invoke(app, ["validate", *map(str, args)])


def _grader_file(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "grader.json"
    path.write_text(json.dumps(spec))
    return path


def test_validate_warns_by_default_and_fails_with_strict(tmp_path):
    path, grader = _data(tmp_path), _grader_file(tmp_path, NUMERIC)
    result = _validate(path, "--grader", grader)
    assert result.exit_code == 0, result.output
    assert f"{path} line 3: score 0" in result.stdout
    assert (
        "Grader self-test: the grader 'answer' gives full marks to 3 of 4 demonstrations; "
        "1 row(s) without a demonstration skipped."
    ) in result.stdout
    assert "OK: the data is valid (1 warning(s))." in result.stdout
    strict = _validate(path, "--grader", grader, "--strict")
    assert strict.exit_code == 1 and "INVALID: 1 error(s), 0 warning(s)." in strict.stdout


def test_validate_json_report_has_the_self_test(tmp_path):
    path, grader = _data(tmp_path), _grader_file(tmp_path, NUMERIC)
    report = json.loads(_validate(path, "--grader", grader, "--format", "json").stdout)
    check = report["grader_check"]
    assert (
        report["ok"] is True
        and check["graded"] == 4
        and check["skipped"] == 1
        and check["failed"] == 1
    )
    assert check["failures"] == [
        {"file": str(path), "line": 3, "score": 0.0, "errors": {}, "details": {}}
    ]
    strict = _validate(path, "--grader", grader, "--format", "json", "--strict")
    assert strict.exit_code == 1 and json.loads(strict.stdout)["ok"] is False


def test_validate_json_lists_the_self_test_failures_where_the_text_does(tmp_path):
    """Issue 25: the text output counts a demonstration below full marks as a warning (an error
    with --strict), while the JSON listed it only under grader_check.failures."""
    path, grader = _data(tmp_path), _grader_file(tmp_path, NUMERIC)
    for flags, kind in (((), "warning"), (("--strict",), "error")):
        report = json.loads(_validate(path, "--grader", grader, "--format", "json", *flags).stdout)
        issues = [i for i in report[f"{kind}s"] if i["code"] == "grader_self_test"]
        assert [(i["file"], i["line"]) for i in issues] == [(str(path), 3)]
        assert issues[0]["message"].startswith(f"{path} line 3: score 0")
        assert report[f"{kind}_counts"] == {"grader_self_test": 1}
        other = "error" if kind == "warning" else "warning"
        assert report[f"{other}_counts"] == {}


def test_validate_without_demonstrations_counts_them_skipped(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(_row("1+1=", "2", None) + "\n")
    result = _validate(path, "--grader", _grader_file(tmp_path, NUMERIC))
    assert result.exit_code == 0
    assert (
        "gives full marks to 0 of 0 demonstrations; 1 row(s) without a demonstration skipped"
        in result.stdout
    )


def test_model_grader_without_endpoint_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    grader = _grader_file(
        tmp_path,
        {
            "type": "score_model",
            "name": "j",
            "model": "gpt-4o",
            "input": [{"role": "user", "content": "{{ sample.output_text }}"}],
        },
    )
    result = _validate(_data(tmp_path), "--grader", grader)
    assert (
        result.exit_code == 2
        and "no judge for model 'gpt-4o'" in result.stderr
        and "Traceback" not in result.output
    )


@pytest.mark.parametrize("name", ["example", "arith"])
def test_shipped_data_passes_its_own_self_test(name):
    folder = ROOT / "data" / name
    result = _validate(
        folder / "train.jsonl",
        "--valid",
        folder / "valid.jsonl",
        "--grader",
        folder / "grader.yaml",
        "--strict",
    )
    assert result.exit_code == 0, result.output
    assert "gives full marks to" in result.stdout and "Warnings" not in result.stdout


def _train(*args):
    return runner.invoke(app, ["train", str(RECIPE), "--dry-run", *args])


def test_train_preflight_stops_before_any_model_loads(tmp_path):
    out = tmp_path / "run"
    wrong = "grader={type: numeric, name: shifted, reference: '{{ item.answer }}1'}"
    result = runner.invoke(app, ["train", str(RECIPE), "--output-dir", str(out), "--set", wrong])
    assert result.exit_code == 1, result.output
    assert (
        "grader self-test: the grader 'shifted' gives full marks to 0 of 56 demonstrations"
        in result.stderr
    )
    assert (
        "over grader_check.max_failure_share 2.0%" in result.stderr
        and "Traceback" not in result.output
    )
    assert not out.exists()


def test_train_preflight_share_and_switch(tmp_path):
    wrong = "grader={type: numeric, name: shifted, reference: '{{ item.answer }}1'}"
    assert _train("--set", wrong, "--set", "grader_check.max_failure_share=1").exit_code == 0
    assert _train("--set", wrong, "--set", "grader_check.enabled=false").exit_code == 0
    plan = json.loads(_train().stdout)
    assert plan["grader_check"]["graded"] == 56 and plan["grader_check"]["failed"] == 0


def test_train_preflight_as_a_library_call(tmp_path):
    from rft_cli.config import load_run_config
    from rft_cli.training.run import preflight

    config = load_run_config(
        RECIPE, ["grader={type: numeric, name: shifted, reference: '{{ item.answer }}1'}"]
    )
    with pytest.raises(DataError, match="first: .*tiny-train.jsonl line 1: score 0"):
        preflight(config)


def test_bad_share_is_a_config_error():
    result = _train("--set", "grader_check.max_failure_share=2")
    assert result.exit_code == 2 and "grader_check.max_failure_share" in result.stderr


def test_a_judge_without_endpoint_stops_preflight_even_without_demonstrations(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    path = tmp_path / "train.jsonl"
    path.write_text(_row("1+1=", "2", None) + "\n")
    judge = {
        "type": "label_model",
        "name": "lab",
        "model": "gpt-4o",
        "labels": ["a"],
        "passing_labels": ["a"],
        "input": [{"role": "user", "content": "{{ sample.output_text }}"}],
    }
    multi = {
        "type": "multi",
        "graders": {"num": NUMERIC, "lab": judge},
        "calculate_output": "num * lab",
    }
    from rft_cli.errors import GraderError

    with pytest.raises(GraderError, match="label_model 'lab': no judge for model 'gpt-4o'"):
        self_test(build_grader(multi), [(path, "solution")])
