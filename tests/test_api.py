"""The public Python API: `import rft_cli` gives the functions the commands call, loaded lazily."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import rft_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "example"
RECIPE = ROOT / "recipes" / "tiny-test.yaml"
GRADER = 'type: numeric\nname: answer\ninput: "{{ sample.output_text }}"\nreference: "{{ item.answer }}"\n'


def test_import_loads_no_heavy_library_and_every_name_resolves():
    """`import rft_cli` stays instant: the API names load on first use, not at import."""
    code = (
        "import sys, rft_cli; heavy = [m for m in ('torch', 'transformers', 'trl', 'rft_cli.graders') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "[]"
    assert set(rft_cli.__all__) == {"__version__", *rft_cli._API}
    for name in rft_cli.__all__:
        assert getattr(rft_cli, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rft_cli.nope  # noqa: B018


def test_validate_dataset():
    report = rft_cli.validate_dataset(EXAMPLE / "train.jsonl", EXAMPLE / "valid.jsonl")
    assert report.ok and report.stats["train"]["rows"] > 0
    assert isinstance(report, rft_cli.ValidationReport)


def test_the_errors_are_exported_and_catchable_by_their_kind(tmp_path):
    """What the functions raise is exported beside them, as llm exports its result and error types."""
    with pytest.raises(rft_cli.ConfigError) as info:
        rft_cli.load_run_config(tmp_path / "absent.yaml")
    assert isinstance(info.value, rft_cli.RftError) and info.value.exit_code == 2
    assert issubclass(rft_cli.GraderError, rft_cli.ConfigError)
    assert {rft_cli.DataError.exit_code, rft_cli.TrainingError.exit_code} == {1}


def test_validate_dataset_reports_a_bad_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{oops\n')
    report = rft_cli.validate_dataset(bad)
    assert not report.ok and report.errors[0].line == 2


def _rows(tmp_path, demonstrations):
    """A train file whose rows end in the demonstrations (answer "2" each) and its grader file."""
    rows = tmp_path / "train.jsonl"
    rows.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"{i}+2-{i}="},
                        {"role": "assistant", "content": demo},
                    ],
                    "answer": "2",
                }
            )
            + "\n"
            for i, demo in enumerate(demonstrations)
        )
    )
    grader = tmp_path / "grader.yaml"
    grader.write_text(GRADER)
    return rows, grader


def test_validate_dataset_self_tests_a_grader(tmp_path):
    """`rft validate --grader` as one library call: the data checks, then the grader self-test,
    whose failures are issues like any other (warnings, errors under strict)."""
    rows, grader = _rows(tmp_path, ["so 2", "so 3", "so 2"])
    report = rft_cli.validate_dataset(rows, grader=grader)
    assert report.ok and report.grader_check.graded == 3 and len(report.grader_check.failures) == 1
    assert [(w.code, w.line) for w in report.warnings] == [("grader_self_test", 2)]
    assert report.warnings[0].message.startswith(f"{rows} line 2: score 0")
    strict = rft_cli.validate_dataset(rows, grader=grader, strict=True)
    assert not strict.ok and strict.error_counts == {"grader_self_test": 1}
    document = strict.to_dict()
    assert document["grader_check"]["failed"] == 1 and document["grader_check"]["strict"] is True


def test_validate_dataset_checks_the_fields_a_grader_reads(tmp_path):
    rows, grader = _rows(tmp_path, ["so 2"])
    grader.write_text(GRADER.replace("item.answer", "item.solution_value"))
    with rft_cli.load_grader(grader) as built:
        report = rft_cli.validate_dataset(rows, grader=built)
        assert (
            built.grade({"output_text": "2"}, {"solution_value": "2"}).reward == 1.0
        )  # not closed
    assert not report.ok and report.grader_check is None
    assert (
        report.errors[0].code == "missing_item_field"
        and "solution_value" in report.errors[0].message
    )


def test_load_grader(tmp_path):
    path = tmp_path / "grader.yaml"
    path.write_text(GRADER)
    with rft_cli.load_grader(path) as grader:
        assert grader.grade({"output_text": "so 42"}, {"answer": "42"}).reward == 1.0
        assert grader.grade({"output_text": "41"}, {"answer": "42"}).reward < 1.0


def test_grade_file(tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"answer": "1"}\n{"answer": "2"}\n')
    (tmp_path / "samples.jsonl").write_text('{"output_text": "1"}\n{"output_text": "3"}\n')
    path = tmp_path / "grader.yaml"
    path.write_text(GRADER)
    with rft_cli.load_grader(path) as grader:
        report = rft_cli.grade_file(grader, tmp_path / "rows.jsonl", tmp_path / "samples.jsonl")
    assert (
        report.summary["n"] == 2
        and report.results[0].reward == 1.0
        and report.results[1].reward < 1.0
    )


def test_load_run_config():
    config = rft_cli.load_run_config(RECIPE, ["rl.steps=5"])
    assert config.rl.steps == 5 and config.rl.algorithm == "ppo"


def test_load_run_config_names_the_bad_key():
    with pytest.raises(rft_cli.RftError, match="rl.steps"):
        rft_cli.load_run_config(RECIPE, ["rl.steps=-1"])


def test_evaluate_models_grades_a_samples_file(tmp_path):
    (tmp_path / "rows.jsonl").write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": f"{i}+0="}], "answer": str(i)})
            + "\n"
            for i in range(3)
        )
    )
    (tmp_path / "samples.jsonl").write_text(
        '{"output_text": "0"}\n{"output_text": "1"}\n{"output_text": "9"}\n'
    )
    (tmp_path / "grader.yaml").write_text(GRADER)
    run = rft_cli.evaluate_models(
        tmp_path / "rows.jsonl",
        tmp_path / "grader.yaml",
        samples_file=tmp_path / "samples.jsonl",
        min_score=0.5,
    )
    assert run.reports[0].mean_reward == pytest.approx(2 / 3) and run.gate == "passed"
    # The grader argument is one type across the API: a grader file or a Grader (left open).
    with rft_cli.load_grader(tmp_path / "grader.yaml") as grader:
        again = rft_cli.evaluate_models(
            tmp_path / "rows.jsonl", grader, samples_file=tmp_path / "samples.jsonl"
        )
        graded = rft_cli.grade_file(grader, tmp_path / "rows.jsonl", tmp_path / "samples.jsonl")
        assert grader.grade({"output_text": "1"}, {"answer": "1"}).reward == 1.0
    assert again.reports[0].mean_reward == run.reports[0].mean_reward
    by_path = rft_cli.grade_file(
        tmp_path / "grader.yaml", tmp_path / "rows.jsonl", tmp_path / "samples.jsonl"
    )
    assert by_path.summary == graded.summary and by_path.summary["n"] == 3


def test_evaluate_a_model(tiny_model_dir, tmp_path):
    path = tmp_path / "grader.yaml"
    path.write_text(GRADER)
    rows = [{"messages": [{"role": "user", "content": "1+1="}], "answer": "2"}]
    with rft_cli.load_grader(path) as grader:
        report = rft_cli.evaluate(str(tiny_model_dir), rows, grader, max_new_tokens=2)
    assert report.rows == 1 and len(report.results) == 1 and 0.0 <= report.mean_reward <= 1.0
    assert isinstance(report, rft_cli.EvalReport) and isinstance(
        report.results[0], rft_cli.SampleResult
    )
    by_path = rft_cli.evaluate(str(tiny_model_dir), rows, path, max_new_tokens=2)
    assert by_path.mean_reward == report.mean_reward


def test_read_metrics_skips_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"stage": "rl", "step": 1, "kl": 0.1}\n{"stage": "rl", "st')
    assert rft_cli.read_metrics(path) == [{"stage": "rl", "step": 1, "kl": 0.1}]


def test_summarize_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        '{"stage": "rl", "step": 1, "valid_reward_mean": 0.25}\n'
        '{"stage": "rl", "step": 2, "valid_reward_mean": 0.5}\n'
    )
    report = rft_cli.summarize_run(run)
    assert (report.best_valid_reward, report.best_valid_step) == (0.5, 2)
    assert isinstance(report, rft_cli.RunReport)


@pytest.mark.slow
def test_train_from_a_config(tmp_path):
    config = rft_cli.load_run_config(RECIPE, ["sft.max_steps=1", "rl.steps=1"])
    result = rft_cli.train(config, output_dir=tmp_path / "run")
    assert (result.run_dir / "final" / "config.json").is_file()
    assert result.summary["stages"]["rl"]["steps"] == 1
