"""Training you can watch: real tiny runs keep their answers on disk, time each stage honestly
(resume included), and an alarm in `alarms.stop_on` stops the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.data.records import prompt_messages
from rft_cli.run_folder import checkpoints as ckpt
from rft_cli.run_folder.metrics import read_metrics
from rft_cli.run_folder.samples import list_sample_files, read_samples

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-test.yaml"
LINE_FIELDS = {
    "stage",
    "step",
    "row",
    "prompt",
    "output_text",
    "reward",
    "sub_rewards",
    "errors",
    "num_tokens",
    "truncated",
}


def rft_train(out: Path, *extra: str):
    return CliRunner().invoke(
        app, ["train", str(RECIPE), "--output-dir", str(out), "--quiet", *extra]
    )


def assert_honest_timings(run: Path) -> dict:
    """Each stage's elapsed_s covers at least the time between its own first and last metrics
    line, the stages add up to the run's total, and nothing is negative."""
    summary = json.loads((run / "summary.json").read_text())
    records = read_metrics(run / "metrics.jsonl")
    for stage, values in summary["stages"].items():
        times = [r["elapsed_s"] for r in records if r["stage"] == stage]
        assert values["elapsed_s"] > 0, (stage, values)
        assert values["elapsed_s"] >= max(times) - min(times) - 1e-9, (stage, values, times)
    assert summary["elapsed_s"] == pytest.approx(
        sum(v["elapsed_s"] for v in summary["stages"].values())
    )
    return summary


def test_a_run_keeps_its_answers_and_times_its_stages_across_a_resume(tmp_path):
    """Issue 13 / 18: on tiny-test the RL stage reported 0.317 s while its lines spanned 0.435 s
    (it subtracted the warm-up's end, measured on another clock), and -0.1163 s after a resume."""
    run = tmp_path / "run"
    first = rft_train(run)
    assert first.exit_code == 0, first.output
    assert "elapsed_s" in first.output and "eval_s" in first.output
    assert_honest_timings(run)
    kinds = [(f.kind, f.step) for f in list_sample_files(run)]
    assert kinds == [
        ("eval-sft", 4),
        ("rl", 1),
        ("rl", 2),
        ("eval-rl", 2),
        ("rl", 3),
        ("eval-rl", 3),
    ]
    rl_lines = read_samples(run / "samples" / "rl-step-0000001.jsonl")
    assert len(rl_lines) == 8 and all(LINE_FIELDS | {"kl"} <= set(line) for line in rl_lines)
    train_rows = (RECIPE.parent / "data" / "tiny-train.jsonl").read_text().splitlines()
    assert all(
        prompt_messages(json.loads(train_rows[line["row"]]))[-1]["content"] in line["prompt"]
        for line in rl_lines
    )
    eval_lines = read_samples(run / "samples" / "eval-rl-step-0000002.jsonl")
    assert [line["row"] for line in eval_lines] == [0, 1, 2, 3] and eval_lines[0]["after"] == "rl"

    again = rft_train(run, "--resume", "--set", "rl.steps=5")
    assert again.exit_code == 0, again.output
    summary = assert_honest_timings(run)
    assert summary["stages"]["rl"]["steps"] == 5
    assert [
        (r["stage"], r["step"]) for r in read_metrics(run / "metrics.jsonl") if r["stage"] == "rl"
    ] == [("rl", s) for s in range(1, 6)]
    rl_files = [f.step for f in list_sample_files(run) if f.kind == "rl"]
    assert rl_files == [1, 2, 3, 4, 5]  # one copy per step
    assert summary["alarms"] == [] and summary["stopped"] is None


LENGTH_GRADER = """\
type: python
name: longer_is_better
source: |
  def grade(sample, item):
      return min(len(sample["output_text"]) / 24.0, 1.0)
"""


def test_a_grader_that_pays_for_length_raises_the_length_alarm_and_stop_on_stops(tmp_path):
    """The warm-up learns to answer in ~2 tokens; PPO on a grader that pays for characters makes
    the answers run to max_new_tokens within a few steps (measured: 2.25, 9.25, 19, 24 tokens),
    past the default alarms.length_multiple of 2.5 over a 2-step window."""
    grader = tmp_path / "grader.yaml"
    grader.write_text(LENGTH_GRADER)
    run = tmp_path / "run"
    result = rft_train(
        run,
        "--set",
        f"grader={grader}",
        "--set",
        "sft.max_steps=80",
        "--set",
        "sft.learning_rate=0.01",
        "--set",
        "rl.steps=8",
        "--set",
        "rl.learning_rate=0.01",
        "--set",
        "rl.max_new_tokens=24",
        "--set",
        "rl.kl_coef=0",
        "--set",
        "save_interval=1",
        "--set",
        "keep_checkpoints=8",
        "--set",
        "alarms.window=2",
        "--set",
        "alarms.stop_on=[length_growth]",
        # the demonstrations are short, so this grader gives them little: no self-test
        "--set",
        "grader_check.enabled=false",
        "--set",
        "rl.final=last",
    )
    assert result.exit_code == 1, result.output
    output = " ".join(result.output.split())
    assert "Traceback" not in output
    records = read_metrics(run / "metrics.jsonl")
    alarmed = [r for r in records if r.get("alarms")]
    stop_step = alarmed[-1]["step"]
    assert 2 < stop_step < 8 and "length_growth" in [a["name"] for a in alarmed[-1]["alarms"]]
    assert f"alarm length_growth at rl step {stop_step}" in output  # live, on stderr
    assert (
        f"rl step {stop_step}: alarm length_growth (response_length_mean" in output
        and "alarms.stop_on" in output
    )
    assert (
        max(r["step"] for r in records if r["stage"] == "rl") == stop_step
    )  # nothing after the stop
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == {"alarm": "length_growth", "step": stop_step}
    assert "length_growth" in [
        a["name"] for a in summary["alarms"]
    ]  # truncation_rise may come with it
    previous = f"checkpoints/step-{stop_step - 1}"
    assert (
        ckpt.is_complete(run / previous) and summary["final_checkpoint"] == previous
    )  # rl.final: last
    report = CliRunner().invoke(app, ["report", str(run), "--fail-on-alarm"])
    assert report.exit_code == 3 and f"alarm length_growth at rl step {stop_step}" in report.output
