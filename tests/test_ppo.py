"""Guarantee 5: a non-finite loss, KL or gradient skips the PPO step (no optimizer update), is logged,
and after rl.max_numerical_faults the run stops with the last good checkpoint kept.
(A non-finite reward is tested in tests/test_train_e2e.py::test_nan_rewards_are_skipped_then_stop_the_run.)

Faults are injected on steps 2 and 3 of a 3-step run with save_interval 1: step 1 trains and is saved,
step 2 is skipped (its checkpoint holds step 1's weights), step 3 is the second fault and stops the run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.config import load_run_config
from rft_cli.errors import TrainingError
from rft_cli.run_folder import checkpoints as ckpt
from rft_cli.run_folder.metrics import read_metrics
from rft_cli.training import ppo_math as pm
from rft_cli.training.ppo import ActorCritic, PPOTrainer
from rft_cli.training.run import train

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-test.yaml"
FAULTY_STEPS = {2, 3}


def _inject(monkeypatch, kind: str) -> None:
    """Make `kind` non-finite on FAULTY_STEPS by wrapping the function that computes it."""
    import torch

    current = {"step": 0}
    real_step = PPOTrainer.step

    def step(self, n):
        current["step"] = n
        return real_step(self, n)

    monkeypatch.setattr(PPOTrainer, "step", step)
    faulty = lambda: current["step"] in FAULTY_STEPS  # noqa: E731
    if kind == "loss":
        real = pm.policy_loss
        monkeypatch.setattr(
            pm,
            "policy_loss",
            lambda *a: (lambda loss, c, k: (loss * float("nan") if faulty() else loss, c, k))(
                *real(*a)
            ),
        )
    elif kind == "gradient":
        real = pm.value_loss

        def value_loss(values, *rest):
            loss, clip = real(values, *rest)
            if faulty():  # finite forward value, NaN gradient: d sqrt(x)/dx at 0 is inf, times 0
                zero = (values - values.detach()).sum()
                loss = loss + 0.0 * torch.sqrt(zero)
            return loss, clip

        monkeypatch.setattr(pm, "value_loss", value_loss)
    elif kind == "kl":
        real = ActorCritic.reference_logprobs
        monkeypatch.setattr(
            ActorCritic,
            "reference_logprobs",
            lambda self, *a: real(self, *a) * (float("inf") if faulty() else 1.0),
        )


@pytest.mark.slow
@pytest.mark.guarantee
@pytest.mark.parametrize(
    "kind,reason",
    [
        ("loss", "non-finite loss"),
        ("gradient", "non-finite gradient norm"),
        ("kl", "non-finite reward or KL"),
    ],
)
@pytest.mark.slow
@pytest.mark.guarantee
def test_a_non_finite_value_skips_the_step_and_stops_the_run(tmp_path, monkeypatch, kind, reason):
    from safetensors.torch import load_file

    _inject(monkeypatch, kind)
    config = load_run_config(
        RECIPE,
        [
            "sft.enabled=false",
            "rl.steps=3",
            "save_interval=1",
            "keep_checkpoints=5",
            "rl.max_numerical_faults=2",
            "eval.interval=10",
        ],
    )
    out = tmp_path / "run"
    with pytest.raises(
        TrainingError,
        match=f"rl step 3: stopped after 2 numerical faults \\(last: {reason}\\); "
        "the last good checkpoint is .*step-2",
    ):
        train(config, output_dir=out)
    rl = [r for r in read_metrics(out / "metrics.jsonl") if r["stage"] == "rl"]
    assert [(r["step"], r.get("skipped")) for r in rl] == [(1, None), (2, reason), (3, reason)]
    assert "policy_loss" in rl[0] and "policy_loss" not in rl[1] and "policy_loss" not in rl[2]
    checkpoints = out / "checkpoints"
    assert ckpt.find_latest_complete(checkpoints) == checkpoints / "step-2"
    assert not (checkpoints / "step-3").exists()
    # The skipped step changed no weight, and the kept checkpoint is finite.
    one, two = (load_file(checkpoints / f"step-{n}" / "model.safetensors") for n in (1, 2))
    assert all(one[name].equal(two[name]) and two[name].isfinite().all() for name in one)


@pytest.mark.slow
@pytest.mark.guarantee
def test_the_fault_counter_survives_a_resume(tmp_path, monkeypatch):
    """Faults are counted in the checkpoint: a resumed run does not get a fresh allowance."""
    _inject(monkeypatch, "loss")
    overrides = [
        "sft.enabled=false",
        "rl.steps=3",
        "save_interval=1",
        "keep_checkpoints=5",
        "rl.max_numerical_faults=2",
        "eval.interval=10",
    ]
    out = tmp_path / "run"
    with pytest.raises(TrainingError):
        train(load_run_config(RECIPE, overrides), output_dir=out)
    assert ckpt.read_meta(out / "checkpoints" / "step-2")["step"] == 2
    with pytest.raises(TrainingError, match="stopped after 2 numerical faults"):
        train(load_run_config(RECIPE, overrides), output_dir=out, resume=True)


# -- Guarantee 4 inside a training run: hostile python graders ---------------------------------------
# Guarantee 4 inside a training run: a python grader that loops, allocates without bound, kills its
# own worker or reads the trainer's environment on some rows. The PPO run continues, each failure is
# scored 0 and counted under its kind in metrics.jsonl, and past rl.max_grader_error_share the run
# stops with exit code 1. (The sandbox itself, row by row, is tested in tests/test_graders_python.py.)


HOSTILE = """
import os

def grade(sample, item):
    kind = item["kind"]
    if kind == "loop":
        while True:
            pass
    if kind == "bomb":
        hoard = []
        while True:
            hoard.append(bytearray(10**7))
    if kind == "exit":
        os._exit(3)
    if kind == "env":
        leaked = "RFT_TEST_SECRET" in os.environ
        try:
            leaked = leaked or b"RFT_TEST_SECRET" in open(f"/proc/{os.getppid()}/environ", "rb").read()
        except OSError:
            pass
        if leaked:
            raise RuntimeError("the trainer's environment leaked into the grader")
    return 1.0 if sample["output_text"].strip() == item["answer"] else 0.0
"""


def write_run(tmp_path: Path, kinds: list[str]) -> Path:
    """A config whose 8 training rows carry a `kind`; one RL step grades each row once."""
    train = tmp_path / "train.jsonl"
    rows = [
        {
            "messages": [{"role": "user", "content": f"{i}+1="}],
            "solution": str(i + 1),
            "answer": str(i + 1),
            "kind": kind,
        }
        for i, kind in enumerate(kinds)
    ]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    grader = tmp_path / "grader.yaml"
    grader.write_text(
        yaml.safe_dump(
            {
                "type": "python",
                "name": "hostile",
                "source": HOSTILE,
                "timeout": 1.0,
                "memory_mb": 256,
                "workers": 2,
            }
        ),
        encoding="utf-8",
    )
    config = {
        "model": {"tiny": "llama-test"},
        "data": {"train": str(train)},
        "grader": str(grader),
        "sft": {"enabled": False},
        "rl": {
            "steps": 2,
            "prompts_per_step": 8,
            "samples_per_prompt": 1,
            "mini_batch_size": 4,
            "ppo_epochs": 1,
            "learning_rate": 0.001,
            "max_new_tokens": 3,
            "max_prompt_length": 16,
        },
        "seed": 0,
        "save_interval": 1,
        "grader_check": {"enabled": False},
    }  # the hostile rows would stop the run in its self-test
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.guarantee
def test_hostile_rows_are_counted_by_kind_and_the_run_continues(tmp_path, monkeypatch):
    monkeypatch.setenv("RFT_TEST_SECRET", "hunter2")
    config = write_run(tmp_path, ["loop", "bomb", "exit", "env", "ok", "ok", "ok", "ok"])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["train", str(config), "--output-dir", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    rl = [r for r in read_metrics(out / "metrics.jsonl") if r["stage"] == "rl"]
    assert [r["step"] for r in rl] == [1, 2]
    for (
        record
    ) in rl:  # every row is graded once per step: one of each failure, none from the env row
        errors = {k: v for k, v in record.items() if k.startswith("grader_errors/")}
        assert errors == {
            "grader_errors/python_grader_timeout": 1,
            "grader_errors/python_grader_memory_error": 1,
            "grader_errors/python_grader_crash": 1,
        }, record
        assert "policy_loss" in record and "skipped" not in record
    assert (out / "final" / "config.json").is_file()


@pytest.mark.slow
@pytest.mark.guarantee
def test_too_many_failing_grades_stop_the_run_with_exit_1(tmp_path):
    config = write_run(tmp_path, ["exit"] * 5 + ["ok"] * 3)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["train", str(config), "--output-dir", str(out), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "rl step 1: 5 of 8 grades failed (python_grader_crash: 5)" in result.output
    assert "max_grader_error_share=0.5" in result.output
    last = read_metrics(out / "metrics.jsonl")[-1]
    assert last["stopped"] == "grader_errors" and last["grader_errors/python_grader_crash"] == 5
    assert "policy_loss" not in last  # nothing was trained on that step
    # A higher share lets the same run go on.
    again = CliRunner().invoke(
        app,
        [
            "train",
            str(config),
            "--output-dir",
            str(tmp_path / "tolerant"),
            "--quiet",
            "--set",
            "rl.max_grader_error_share=0.7",
            "--set",
            "rl.steps=1",
        ],
    )
    assert again.exit_code == 0, again.output
