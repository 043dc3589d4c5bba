"""`rft grade`: one sample, a file of samples, and clear errors with documented exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app

runner = CliRunner()
NUMERIC = str(Path(__file__).parent / "data" / "graders" / "numeric_reft.yaml")
MULTI = str(Path(__file__).parent / "data" / "graders" / "openai" / "multi_weighted.yaml")


def test_one_sample_as_json():
    result = runner.invoke(
        app,
        [
            "grade",
            NUMERIC,
            "--item",
            '{"answer_value": "18"}',
            "--sample",
            "So $18.\n#### 18",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"reward": 1.0, "sub_rewards": {}, "errors": {}}


def test_one_sample_as_text_shows_sub_rewards_and_errors():
    result = runner.invoke(
        app, ["grade", MULTI, "--item", '{"reference_answer": "a bear"}', "--sample", "A BEAR"]
    )
    assert result.exit_code == 0, result.output
    assert (
        "reward: 1" in result.output
        and "exact: 1" in result.output
        and "similar: 1" in result.output
    )
    missing = runner.invoke(
        app, ["grade", MULTI, "--item", "{}", "--sample", "x", "--format", "json"]
    )
    assert json.loads(missing.stdout)["errors"] == {"invalid_variable_error": 2}


def test_partial_credit_answer_is_shown():
    result = runner.invoke(
        app, ["grade", NUMERIC, "--item", '{"answer_value": "18"}', "--sample", "#### 17"]
    )
    assert result.exit_code == 0
    assert "reward: 0.1" in result.output and "answer: 17" in result.output


def _files(tmp_path: Path, rows: list, samples: list[str]) -> tuple[Path, Path]:
    data, outs = tmp_path / "rows.jsonl", tmp_path / "samples.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    outs.write_text("".join(s + "\n" for s in samples))
    return data, outs


def test_file_of_samples_summary_and_output(tmp_path):
    data, outs = _files(
        tmp_path,
        [{"answer_value": "18"}, {"answer_value": "3"}, {"answer_value": "5"}, {"other": 1}],
        [
            '{"output_text": "#### 18"}',
            '{"output_text": "#### 4"}',
            '"the answer is 5"',
            '{"output_text": "#### 1"}',
        ],
    )
    out = tmp_path / "graded.jsonl"
    result = runner.invoke(
        app,
        [
            "grade",
            NUMERIC,
            "--data",
            str(data),
            "--samples",
            str(outs),
            "--output",
            str(out),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n"] == 4
    assert summary["mean_reward"] == pytest.approx((1 + 0.1 + 1 + 0) / 4)
    assert (
        summary["distribution"]["1"] == 2
        and summary["distribution"]["(0, 0.25)"] == 1
        and summary["distribution"]["0"] == 1
    )
    assert summary["errors"] == {"invalid_variable_error": 1}
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["reward"] for line in lines] == [1.0, 0.1, 1.0, 0.0]
    assert lines[1]["answer"] == "4" and lines[3]["errors"] == {"invalid_variable_error": 1}


def test_file_of_samples_text_table(tmp_path):
    data, outs = _files(tmp_path, [{"answer_value": "1"}], ['{"output_text": "#### 1"}'])
    result = runner.invoke(app, ["grade", NUMERIC, "--data", str(data), "--samples", str(outs)])
    assert result.exit_code == 0
    assert "mean reward 1.0000" in result.output and "errors: none" in result.output


@pytest.mark.parametrize(
    "rows,samples,message",
    [
        ([{"a": 1}, {"a": 2}], ['{"output_text": "x"}'], "has 1 samples but"),
        ([{"a": 1}], ["{oops"], "samples.jsonl line 1: invalid JSON"),
        (
            [{"a": 1}],
            ['{"text": "x"}'],
            'samples.jsonl line 1: a sample must be {"output_text": "..."}',
        ),
        ([[1]], ['"x"'], "rows.jsonl line 1: a row must be a JSON object"),
    ],
)
def test_bad_sample_files_exit_1_with_the_line(tmp_path, rows, samples, message):
    data, outs = _files(tmp_path, rows, samples)
    result = runner.invoke(app, ["grade", NUMERIC, "--data", str(data), "--samples", str(outs)])
    assert result.exit_code == 1
    assert message in result.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["--item", "[1", "--sample", "x"], "--item is not valid JSON"),
        (["--item", "[1]", "--sample", "x"], "--item must be a JSON object"),
        (["--item", "{}"], "--item needs --sample"),
        ([], "give either --sample"),
        (["--sample", "x", "--data", "rows.jsonl"], "give either --sample"),
        (["--sample", "x", "--format", "yaml"], '--format "yaml" is not one of text, json'),
    ],
)
def test_usage_errors_exit_2(args, message):
    result = runner.invoke(app, ["grade", NUMERIC, *args])
    assert result.exit_code == 2
    assert message in result.output


def test_bad_grader_file_exits_2_naming_the_field(tmp_path):
    grader = tmp_path / "grader.yaml"
    grader.write_text(
        "type: multi\ngraders:\n  acc: {type: string_check, input: x, reference: y, operation: equal}\ncalculate_output: acc\n"
    )
    result = runner.invoke(app, ["grade", str(grader), "--sample", "x"])
    assert result.exit_code == 2
    assert (
        'grader.yaml: graders.acc.operation: "equal" is not one of eq, ne, like, ilike'
        in result.output
    )
    assert "Traceback" not in result.output


def test_missing_grader_file_exits_2(tmp_path):
    result = runner.invoke(app, ["grade", str(tmp_path / "absent.yaml"), "--sample", "x"])
    assert result.exit_code == 2 and "cannot read the grader file" in result.output


def test_help_has_an_example():
    result = runner.invoke(app, ["grade", "--help"])
    assert result.exit_code == 0 and "Example" in result.output


TOOLS = str(Path(__file__).parent / "data" / "graders" / "openai" / "multi_tools.json")
TOOL_ITEM = '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}'
TOOL_SAMPLE = {
    "output_text": "",
    "output_tools": [{"function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
}


def test_structured_sample_from_a_file(tmp_path):
    path = tmp_path / "sample.json"
    path.write_text(json.dumps(TOOL_SAMPLE))
    result = runner.invoke(
        app, ["grade", TOOLS, "--item", TOOL_ITEM, "--sample-file", str(path), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "reward": 1.0,
        "sub_rewards": {"name": 1.0, "args": 1.0},
        "errors": {},
    }


def test_structured_sample_from_stdin():
    result = runner.invoke(
        app,
        ["grade", TOOLS, "--item", TOOL_ITEM, "--sample", "-", "--format", "json"],
        input=json.dumps(TOOL_SAMPLE),
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["reward"] == 1.0


def test_a_128_kib_plain_text_sample_from_stdin():
    """A 128 KiB --sample argument fails in the shell (the argument list is too long); stdin does not."""
    answer = "x" * (128 * 1024) + "\n#### 18\n"
    result = runner.invoke(
        app,
        ["grade", NUMERIC, "--item", '{"answer_value": "18"}', "--sample", "-", "--format", "json"],
        input=answer,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["reward"] == 1.0


def test_sample_file_plain_text_loses_only_its_final_newline(tmp_path):
    path = tmp_path / "answer.txt"
    path.write_text("fuzzy wuzzy was a bear\n")
    exact = str(Path(__file__).parent / "data" / "graders" / "openai" / "string_check.json")
    result = runner.invoke(
        app,
        [
            "grade",
            exact,
            "--item",
            '{"reference_answer": "fuzzy wuzzy was a bear"}',
            "--sample-file",
            str(path),
            "--format",
            "json",
        ],
    )
    assert json.loads(result.stdout)["reward"] == 1.0


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"output_text": 5}', '"output_text" must be a string'),
        ('{"output_text": "", "output_tools": {}}', '"output_tools" must be a list'),
        ('{"output_text": "", "choices": []}', "unknown sample key 'choices'"),
    ],
)
def test_bad_sample_file_is_a_usage_error(tmp_path, content, message):
    path = tmp_path / "sample.json"
    path.write_text(content)
    result = runner.invoke(app, ["grade", NUMERIC, "--item", "{}", "--sample-file", str(path)])
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_sample_given_twice_is_a_usage_error(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("x")
    result = runner.invoke(app, ["grade", NUMERIC, "--sample", "x", "--sample-file", str(path)])
    assert result.exit_code == 2 and "give the sample once" in result.stderr
    missing = runner.invoke(
        app, ["grade", NUMERIC, "--item", "{}", "--sample-file", str(tmp_path / "nope.json")]
    )
    assert (
        missing.exit_code == 2 and "cannot read the sample file (file not found)" in missing.stderr
    )


def test_samples_file_in_the_eval_format_names_rows(tmp_path):
    """`rft grade --samples` reads the samples format of `rft eval --samples-file`: lines may name
    their 0-based row and model, and a row may have several samples."""
    data, outs = _files(
        tmp_path,
        [{"answer_value": "18"}, {"answer_value": "3"}],
        [
            '{"row": 1, "model": "m", "output_text": "#### 3"}',
            '{"row": 0, "output_text": "#### 18"}',
            '{"row": 1, "output_text": "#### 4"}',
        ],
    )
    out = tmp_path / "graded.jsonl"
    result = runner.invoke(
        app,
        [
            "grade",
            NUMERIC,
            "--data",
            str(data),
            "--samples",
            str(outs),
            "--output",
            str(out),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n"] == 3
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(line["row"], line["reward"]) for line in lines] == [(2, 1.0), (1, 1.0), (2, 0.1)]


def test_samples_file_row_past_the_data_exits_1(tmp_path):
    data, outs = _files(tmp_path, [{"answer_value": "1"}], ['{"row": 3, "output_text": "#### 1"}'])
    result = runner.invoke(app, ["grade", NUMERIC, "--data", str(data), "--samples", str(outs)])
    assert result.exit_code == 1
    assert "samples.jsonl line 1: row 3 is past the 1 rows" in result.output


def test_old_bare_string_samples_are_read_with_a_note(tmp_path):
    data, outs = _files(
        tmp_path,
        [{"answer_value": "5"}, {"answer_value": "6"}],
        ['{"output_text": "#### 5"}', '"#### 6"'],
    )
    result = runner.invoke(
        app, ["grade", NUMERIC, "--data", str(data), "--samples", str(outs), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mean_reward"] == 1.0
    assert (
        "1 line(s) (first: line 2) are a bare JSON string, the old samples format" in result.stderr
    )
