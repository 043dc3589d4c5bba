"""The architecture matrix end to end: every tested family goes through `rft train` and `rft eval`.

Per family, as lean as the pipeline allows: SFT (1 step) then 2 PPO steps, pressed Ctrl-C after
step 1 and resumed (it must log what an uninterrupted run logs), then `rft eval` on the run; 2 PPO
steps with LoRA; 2 GRPO steps, with and without LoRA. The fast checks (KL 0 at step 1, log-probs
equal to a plain forward) are in test_architectures.py.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.config import load_run_config
from rft_cli.graders.base import Grader, GradeResult
from rft_cli.run_folder.metrics import read_metrics
from rft_cli.tiny import TINY_FAMILIES
from rft_cli.training.run import train

pytestmark = pytest.mark.slow

FAMILIES = list(TINY_FAMILIES)
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-test.yaml"
LEAN = (
    "rl.steps=2",
    "rl.prompts_per_step=2",
    "rl.samples_per_prompt=2",
    "rl.mini_batch_size=4",
    "rl.max_new_tokens=4",
    "sft.max_steps=1",
    "sft.batch_size=4",
    "eval.interval=100",
    "eval.samples=2",
    "save_interval=1",
    "model.dtype=float32",
)
TIMING_KEYS = {"elapsed_s", "stage_elapsed_s", "eval_s", "tokens_per_second"}


class ChecksumGrader(Grader):
    """An arbitrary reward that differs between random answers, so every step has something to learn."""

    name = "checksum"

    def grade(self, sample, item):
        text = sample["output_text"] if isinstance(sample, dict) else sample
        return GradeResult(reward=sum(map(ord, text)) % 7 / 6)


def _run(folder: str, out: Path, *overrides: str, **kwargs):
    config = load_run_config(
        RECIPE, [f"model={{name: {folder}}}", *LEAN, "grader_check.enabled=false", *overrides]
    )
    return train(
        config, output_dir=out, grader=ChecksumGrader(), **kwargs
    )  # the checksum grader fails the self-test


def _rl(run_dir: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k not in TIMING_KEYS}
        for r in read_metrics(run_dir / "metrics.jsonl")
        if r["stage"] == "rl"
    ]


def _ctrl_c_after_rl_step_1(record):
    if record["stage"] == "rl" and record["step"] == 1:
        os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("family", FAMILIES)
def test_sft_then_ppo_resumes_exactly_and_evaluates(family, family_dir, tmp_path):
    folder = family_dir(family)
    whole = _run(folder, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        _run(folder, tmp_path / "cut", progress=_ctrl_c_after_rl_step_1)
    resumed = _run(folder, tmp_path / "cut", resume=True)
    rl = _rl(whole.run_dir)
    assert [r["step"] for r in rl] == [1, 2] and not any("skipped" in r for r in rl)
    assert abs(rl[0]["kl"]) <= 1e-5  # policy == reference at step 1, through the model's own head
    assert rl[0]["grad_norm"] > 0 and rl[1]["kl"] != 0.0  # step 1 trained: the policy moved
    assert _rl(resumed.run_dir) == rl

    grader = tmp_path / "grader.yaml"
    grader.write_text(yaml.safe_dump(load_run_config(RECIPE).grader))
    args = [
        "eval",
        "--model",
        str(resumed.run_dir),
        "--data",
        str(RECIPE.parent / "data" / "tiny-valid.jsonl"),
        "--grader",
        str(grader),
        "--limit",
        "2",
        "--max-new-tokens",
        "4",
        "--format",
        "json",
    ]
    evaluated = CliRunner().invoke(app, args)
    assert evaluated.exit_code == 0, evaluated.output
    assert str(resumed.run_dir) in evaluated.stdout and json.loads(
        evaluated.stdout[evaluated.stdout.index("{") :]
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_ppo_with_lora(family, family_dir, tmp_path):
    result = _run(family_dir(family), tmp_path / "run", "sft.enabled=false", "model.lora={r: 4}")
    rl = _rl(result.run_dir)
    assert abs(rl[0]["kl"]) <= 1e-5 and rl[0]["grad_norm"] > 0 and rl[1]["kl"] != 0.0
    assert (result.run_dir / "checkpoints" / "step-2" / "adapter" / "adapter_config.json").is_file()
    assert (result.run_dir / "final" / "config.json").is_file()


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("family", FAMILIES)
def test_grpo(family, lora, family_dir, tmp_path):
    extra = ("model.lora={r: 4}",) if lora else ()
    result = _run(
        family_dir(family), tmp_path / "run", "sft.enabled=false", "rl.algorithm=grpo", *extra
    )
    rl = _rl(result.run_dir)
    assert [r["step"] for r in rl] == [1, 2] and any(r["grad_norm"] > 0 for r in rl)
    assert (result.run_dir / "final" / "config.json").is_file()
