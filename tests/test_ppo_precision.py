"""PPO computes what it says in the precision it says (issue 25): the value head in float32 under
bf16 autocast, no reference model under `rl.kl_coef: 0`, and the base model scored in the
precision RL's evaluations use."""

from __future__ import annotations

from pathlib import Path

import torch

from rft_cli.config import load_run_config
from rft_cli.data.records import load_rows
from rft_cli.run_folder.metrics import NullLogger
from rft_cli.tiny import build_char_tokenizer, build_tiny_model
from rft_cli.training import ppo
from rft_cli.training.context import RunContext
from tests.train_fakes import ExactGrader

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-test.yaml"


def test_the_value_head_computes_in_float32_under_bf16_autocast():
    """Its weights are float32, but autocast ran the Linear in bf16: values to 3 significant digits."""
    model = build_tiny_model(build_char_tokenizer())
    core = ppo.PolicyValue(model)
    torch.nn.init.normal_(core.value_head.weight)
    read = []
    core.value_head.register_forward_pre_hook(lambda module, args: read.append(args[0]))
    ids = torch.randint(8, 60, (2, 7))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, values, _ = core(ids, torch.ones_like(ids), 3, 1.0)
    head = core.value_head
    want = (read[0].float() @ head.weight.T + head.bias).squeeze(-1)
    assert values.dtype == torch.float32
    assert torch.allclose(values, want, atol=1e-6), (values - want).abs().max()


def _context(tmp_path, *sets: str) -> RunContext:
    config = load_run_config(RECIPE, ["sft.enabled=false", *sets])
    rows = load_rows(config.data.train, config.data.demonstration_field)
    return RunContext(config, tmp_path, rows, [], ExactGrader(), NullLogger())


def test_kl_coef_0_loads_no_reference_model_and_logs_no_kl(tmp_path, monkeypatch):
    """docs/training.md promised that `rl.kl_coef: 0` loads no reference model; PPO loaded one
    and ran it on every step, for a penalty of 0 times its log-probs."""
    from rft_cli.training.models import load_model, load_tokenizer

    ctx = _context(tmp_path, "rl.kl_coef=0")
    loads = []
    real_load = ppo.load_model

    def recording_load(*args, **kwargs):
        loads.append(kwargs.get("trainable", True))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(ppo, "load_model", recording_load)
    monkeypatch.setattr(ppo.PPOTrainer, "train", lambda self: self.state)
    tokenizer = load_tokenizer(ctx.config.model)
    ppo.run_ppo(ctx, None, tokenizer)
    assert loads == [True]  # the policy only
    trainer = ppo.PPOTrainer(ctx, load_model(ctx.config.model, tokenizer), None, tokenizer)
    record = trainer.step(1)
    assert "policy_loss" in record and "skipped" not in record
    assert not {"kl", "kl_logratio", "kl_sum"} & set(record)  # nothing was measured
    assert record["kl_coef"] == 0.0


def test_the_base_model_is_scored_in_the_precision_rl_evaluates_in(tmp_path, monkeypatch):
    """Without a warm-up the base model competes for final/ with RL's checkpoints, which are
    scored under bf16 autocast (`PPOTrainer.evaluate`); the base model was scored in float32."""
    from rft_cli.training import run, sft
    from rft_cli.training.models import load_tokenizer

    ctx = _context(tmp_path, "model.dtype=bfloat16")
    ctx.valid_rows = ctx.train_rows[:2]
    seen = []

    def evaluate_sft(ctx, model, tokenizer, step=0):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return {"valid_reward_mean": 0.5, "valid_accuracy": 0.5}

    monkeypatch.setattr(sft, "evaluate_sft", evaluate_sft)
    run._save_base(ctx, load_tokenizer(ctx.config.model))
    assert seen == [(True, torch.bfloat16)]
