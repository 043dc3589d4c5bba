"""End to end on CPU with the tiny recipe: SFT then PPO (and GRPO), the run folder, resume, faults."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest

from rft_cli.config import load_run_config
from rft_cli.errors import TrainingError
from rft_cli.metrics import read_metrics
from rft_cli.training.run import train
from tests.train_fakes import FailingGrader, NaNGrader

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-test.yaml"
TIMING_KEYS = {"elapsed_s", "tokens_per_second"}
PPO_METRICS = {"stage", "step", "train_reward_mean", "train_reward_std", "kl", "policy_loss", "value_loss", "entropy",
               "clip_frac", "approx_kl", "response_length_mean", "learning_rate", "tokens_per_second", "elapsed_s"}


def run(tmp_path: Path, *overrides: str, name: str = "run", grader=None, **kwargs):
    config = load_run_config(RECIPE, list(overrides))
    return train(config, output_dir=tmp_path / name, grader=grader, **kwargs)


def without_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def assert_loads(folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "1+2="}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=2, do_sample=False)
    assert out.shape[1] >= ids["input_ids"].shape[1]


def test_sft_then_ppo_writes_the_run_folder(tmp_path):
    result = run(tmp_path)
    root = result.run_dir
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "checkpoints/sft/model.safetensors",
                 "checkpoints/step-3/value_head.pt", "checkpoints/step-3/optimizer.pt", "checkpoints/step-3/scheduler.pt",
                 "checkpoints/step-3/rng_state.pt", "checkpoints/step-3/trainer_state.json",
                 "checkpoints/step-3/rft_meta.json", "final/config.json"):
        assert (root / name).is_file(), name
    assert not (root / "checkpoints" / "step-2").exists()  # keep_checkpoints: 1 keeps the best and the latest only
    records = read_metrics(root / "metrics.jsonl")
    sft = [r for r in records if r["stage"] == "sft" and not r.get("eval")]
    rl = [r for r in records if r["stage"] == "rl"]
    assert [r["step"] for r in sft] == [1, 2, 3, 4] and [r["step"] for r in rl] == [1, 2, 3]
    assert all({"loss", "learning_rate"} <= set(r) for r in sft)
    for record in rl:
        assert PPO_METRICS <= set(record), PPO_METRICS - set(record)
        assert all(math.isfinite(v) for v in record.values() if isinstance(v, float))
    assert "valid_reward_mean" in rl[1] and "valid_reward_mean" in rl[2] and "valid_reward_mean" not in rl[0]
    summary = json.loads((root / "summary.json").read_text())
    assert set(summary["stages"]) == {"sft", "rl"} and summary["final"] == "final"
    assert set(summary["stages"]["rl"]) >= {"valid_reward_mean", "valid_accuracy", "elapsed_s"}
    assert_loads(root / "final")
    assert_loads(root / "checkpoints" / "step-3")


def test_grpo_uses_the_same_layout_and_metric_names(tmp_path):
    result = run(tmp_path, "rl.algorithm=grpo", "rl.steps=2", "sft.max_steps=2")
    root = result.run_dir
    rl = [r for r in read_metrics(root / "metrics.jsonl") if r["stage"] == "rl"]
    assert [r["step"] for r in rl] == [1, 2]
    assert {"train_reward_mean", "train_reward_std", "kl", "entropy", "response_length_mean", "learning_rate"} <= set(rl[0])
    assert rl[-1]["valid_reward_mean"] is not None
    assert (root / "checkpoints" / "step-2" / "rft_meta.json").is_file()
    assert_loads(root / "final")


def _interrupt_at(stage: str, step: int):
    """A progress hook that presses Ctrl-C (SIGINT) once the given step's metrics line is written."""
    def hook(record):
        if record["stage"] == stage and record["step"] == step and not record.get("eval"):
            os.kill(os.getpid(), signal.SIGINT)
    return hook


def test_ctrl_c_then_resume_writes_the_same_metrics_as_an_uninterrupted_run(tmp_path):
    overrides = ("rl.steps=4", "save_interval=3")
    full = run(tmp_path, *overrides, name="full")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, *overrides, name="cut", progress=_interrupt_at("rl", 2))
    cut = tmp_path / "cut"
    assert (cut / "checkpoints" / "step-2" / "rft_meta.json").is_file()  # saved on Ctrl-C
    # Simulate a crash after the checkpoint: a later line and a torn line that resume must drop.
    with (cut / "metrics.jsonl").open("a") as handle:
        handle.write(json.dumps({"stage": "rl", "step": 3, "kl": 99.0}) + "\n" + '{"stage": "rl", "st')
    run(tmp_path, *overrides, name="cut", resume=True)
    expected = without_timing(read_metrics(full.run_dir / "metrics.jsonl"))
    assert without_timing(read_metrics(cut / "metrics.jsonl")) == expected


def test_ctrl_c_during_sft_then_resume(tmp_path):
    overrides = ("sft.max_steps=4", "save_interval=2", "rl.steps=1")
    full = run(tmp_path, *overrides, name="full")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, *overrides, name="cut", progress=_interrupt_at("sft", 1))
    assert (tmp_path / "cut" / "checkpoints" / "sft-step-1" / "rft_meta.json").is_file()
    run(tmp_path, *overrides, name="cut", resume=True)
    got, want = read_metrics(tmp_path / "cut" / "metrics.jsonl"), read_metrics(full.run_dir / "metrics.jsonl")
    assert [(r["stage"], r["step"]) for r in got] == [(r["stage"], r["step"]) for r in want]
    for a, b in zip(got, want):
        for key in ("loss", "train_reward_mean", "kl"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (key, a, b)


def test_nan_rewards_are_skipped_then_stop_the_run(tmp_path):
    with pytest.raises(TrainingError, match="stopped after 2 numerical faults"):
        run(tmp_path, "rl.max_numerical_faults=2", "sft.enabled=false", grader=NaNGrader())
    rl = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["stage"] == "rl"]
    assert [r.get("skipped") for r in rl] == ["non-finite reward or KL"] * 2
    assert "policy_loss" not in rl[0]  # nothing was trained on the faulty step


def test_too_many_grader_errors_stop_the_run(tmp_path):
    with pytest.raises(TrainingError, match="8 of 8 grades failed \\(python_exception: 8\\).*max_grader_error_share=0.5"):
        run(tmp_path, "sft.enabled=false", grader=FailingGrader())
    last = read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]
    assert last["stopped"] == "grader_errors" and last["grader_errors/python_exception"] == 8


def test_an_existing_run_needs_resume(tmp_path):
    from rft_cli.errors import ConfigError

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        run(tmp_path)


def test_cli_trains_and_prints_the_summary(tmp_path):
    from typer.testing import CliRunner

    from rft_cli.cli import app

    out = tmp_path / "cli-run"
    args = ["train", str(RECIPE), "--output-dir", str(out), "--set", "rl.steps=1", "--set", "sft.max_steps=1", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "final model:" in result.output and (out / "final" / "config.json").is_file()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "pass --resume" in again.output


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path):
    from typer.testing import CliRunner

    from rft_cli.cli import app

    out = tmp_path / "dry"
    result = CliRunner().invoke(app, ["train", str(RECIPE), "--output-dir", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["dry_run"] is True and plan["stages"]["sft"]["steps"] == 4 and plan["stages"]["rl"]["samples"] == 24
    assert not out.exists()
