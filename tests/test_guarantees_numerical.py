"""Guarantee 5: a non-finite loss, KL or gradient skips the PPO step (no optimizer update), is logged,
and after rl.max_numerical_faults the run stops with the last good checkpoint kept.
(A non-finite reward is tested in tests/test_train_e2e.py::test_nan_rewards_are_skipped_then_stop_the_run.)

Faults are injected on steps 2 and 3 of a 3-step run with save_interval 1: step 1 trains and is saved,
step 2 is skipped (its checkpoint holds step 1's weights), step 3 is the second fault and stops the run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rft_cli import checkpoints as ckpt
from rft_cli.config import load_run_config
from rft_cli.errors import TrainingError
from rft_cli.metrics import read_metrics
from rft_cli.training import ppo_math as pm
from rft_cli.training.ppo import ActorCritic, PPOTrainer
from rft_cli.training.run import train

pytestmark = pytest.mark.slow

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
        monkeypatch.setattr(pm, "policy_loss", lambda *a: (lambda loss, c, k: (loss * float("nan") if faulty() else loss, c, k))(*real(*a)))
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
        monkeypatch.setattr(ActorCritic, "reference_logprobs",
                            lambda self, *a: real(self, *a) * (float("inf") if faulty() else 1.0))


@pytest.mark.parametrize("kind,reason", [("loss", "non-finite loss"), ("gradient", "non-finite gradient norm"),
                                         ("kl", "non-finite reward or KL")])
def test_a_non_finite_value_skips_the_step_and_stops_the_run(tmp_path, monkeypatch, kind, reason):
    from safetensors.torch import load_file

    _inject(monkeypatch, kind)
    config = load_run_config(RECIPE, ["sft.enabled=false", "rl.steps=3", "save_interval=1", "keep_checkpoints=5",
                                      "rl.max_numerical_faults=2", "eval.interval=10"])
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=f"rl step 3: stopped after 2 numerical faults \\(last: {reason}\\); "
                                            "the last good checkpoint is .*step-2"):
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


def test_the_fault_counter_survives_a_resume(tmp_path, monkeypatch):
    """Faults are counted in the checkpoint: a resumed run does not get a fresh allowance."""
    _inject(monkeypatch, "loss")
    overrides = ["sft.enabled=false", "rl.steps=3", "save_interval=1", "keep_checkpoints=5", "rl.max_numerical_faults=2",
                 "eval.interval=10"]
    out = tmp_path / "run"
    with pytest.raises(TrainingError):
        train(load_run_config(RECIPE, overrides), output_dir=out)
    assert ckpt.read_meta(out / "checkpoints" / "step-2")["step"] == 2
    with pytest.raises(TrainingError, match="stopped after 2 numerical faults"):
        train(load_run_config(RECIPE, overrides), output_dir=out, resume=True)
