"""An OpenAI RFT project end to end on a tiny tool-calling model: validate, import, train (SFT then
PPO), eval, with `sample.output_tools` graded.

The files are `data/openai-tools/` (OpenAI's schema); the model is the hub-like tiny Qwen2 with a
chat template that renders `tools` and `tool_calls` the Qwen2.5/Hermes way. A 2-step model emits no
valid call, so the grading of a parsed call is checked by feeding known answers through `rft eval
--samples-file`, the same grading path as the model's answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.run_folder.metrics import read_metrics

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1] / "data" / "openai-tools"
runner = CliRunner()
# Seconds on two CPU cores: two warm-up steps, two PPO steps of 2 prompts x 2 answers, short answers
# (prompts are about 1,100 tokens: the tool definitions, spelt by a 384-token BPE).
SMALL = [
    "sft.enabled=true",
    "sft.max_steps=2",
    "sft.batch_size=2",
    "sft.max_length=1400",
    "sft.learning_rate=0.01",
    "rl.steps=2",
    "rl.prompts_per_step=2",
    "rl.samples_per_prompt=2",
    "rl.mini_batch_size=4",
    "rl.max_new_tokens=8",
    "rl.max_prompt_length=1400",
    "eval.interval=1",
    "eval.samples=2",
    "eval.max_new_tokens=8",
    "save_interval=2",
]


@pytest.fixture(scope="module")
def tools_model_dir(tmp_path_factory) -> str:
    from tests.hub_like import TOOLS_CHATML_TEMPLATE, save_hub_like

    return save_hub_like(
        str(tmp_path_factory.mktemp("tools_model") / "model"),
        "tiny",
        seed=0,
        chat_template=TOOLS_CHATML_TEMPLATE,
    )


def _ok(args: list[str]):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def test_openai_project_validate_import_train_eval(tmp_path, tools_model_dir):
    train, valid, grader = (
        str(DATA / "train.jsonl"),
        str(DATA / "valid.jsonl"),
        str(DATA / "grader.json"),
    )
    checked = _ok(
        ["validate", train, "--valid", valid, "--grader", grader, "--tokenizer", tools_model_dir]
    )
    assert "full marks to 9 of 9 demonstrations" in checked.output

    recipe = tmp_path / "recipe.yaml"
    _ok(
        [
            "import",
            "openai",
            str(DATA / "job.json"),
            "--training-file",
            train,
            "--validation-file",
            valid,
            "--model",
            tools_model_dir,
            "-o",
            str(recipe),
        ]
    )
    run_dir = tmp_path / "run"
    _ok(
        [
            "train",
            str(recipe),
            "--output-dir",
            str(run_dir),
            *[a for s in SMALL for a in ("--set", s)],
        ]
    )
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records if r["stage"] == "sft"] == [1, 2]
    rl = [r for r in records if r["stage"] == "rl"]
    assert [r["step"] for r in rl] == [1, 2]
    # No call yet: OpenAI's grader reads output_tools[0] -> counted errors, and the imported recipe keeps going.
    assert rl[-1]["grader_errors/invalid_variable_error"] > 0

    # The tools reached the model in every stage's prompt: eval answers and PPO rollouts kept in RUN/samples.
    kept = [
        json.loads(line)
        for path in sorted((run_dir / "samples").rglob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert {
        "<tools>" in line["prompt"] and "convert_currency" in line["prompt"] for line in kept
    } == {True}
    assert len(kept) >= 4

    results = tmp_path / "results.jsonl"
    evaluated = _ok(
        [
            "eval",
            "--model",
            str(run_dir),
            "--data",
            valid,
            "--grader",
            grader,
            "--max-new-tokens",
            "8",
            "--output",
            str(results),
            "--format",
            "json",
        ]
    )
    (report,) = json.loads(evaluated.stdout)["models"]
    assert report["rows"] == 4

    # The same grading path on known answers: a parsed call is what OpenAI's grader reads.
    rows = [json.loads(line) for line in Path(valid).read_text().splitlines()]
    answers = [
        {
            "row": i,
            "output_text": "<tool_call>\n"
            + json.dumps({"name": row["name"], "arguments": json.loads(row["arguments"])})
            + "\n</tool_call>",
        }
        for i, row in enumerate(rows)
    ]
    answers[3]["output_text"] = answers[3]["output_text"].replace("Dublin", "Cork")
    samples = tmp_path / "answers.jsonl"
    samples.write_text("".join(json.dumps(a) + "\n" for a in answers))
    graded = _ok(
        [
            "eval",
            "--samples-file",
            str(samples),
            "--data",
            valid,
            "--grader",
            grader,
            "--format",
            "json",
        ]
    )
    (known,) = json.loads(graded.stdout)["models"]
    assert known["mean_reward"] == pytest.approx((1 + 1 + 1 + 0.5) / 4)
