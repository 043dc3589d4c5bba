"""GRPO over episodes with tools, through TRL's `rollout_func` (issue 26): TRL's loss mask is the
episodes' policy mask (tool results and template tokens carry no loss), the grader scores each
episode whole, and a dropped episode is left out (no loss, advantage 0, not in the baseline)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rft_cli.episodes import EpisodeLimits, run_episodes
from rft_cli.tiny import build_char_tokenizer
from tests.test_ppo_episodes import CALL, ROWS, SCRIPT
from tests.tool_fakes import FakeToolBox, ScriptedPolicy


def _expected_masks():
    """The scripted episodes' completion ids -> (policy mask, dropped), as the runner builds them."""
    tokenizer = build_char_tokenizer()
    episodes = run_episodes(
        ScriptedPolicy(tokenizer, SCRIPT, "<|assistant|>"),
        tokenizer,
        [r["messages"] for r in ROWS],
        [{}] * len(ROWS),
        FakeToolBox(),
        limits=EpisodeLimits(4, 400, 80),
    )
    return {tuple(e.ids): (e.policy_mask, e.dropped) for e in episodes}


def _run_grpo(tmp_path, tiny_model_dir, monkeypatch, seen):
    from trl import GRPOTrainer

    from rft_cli import episodes as episodes_module
    from rft_cli.config import load_run_config
    from rft_cli.graders.build import build_from_dict
    from rft_cli.run_folder.metrics import NullLogger
    from rft_cli.training.context import RunContext
    from rft_cli.training.episode_rollouts import ToolSetup
    from rft_cli.training.models import load_tokenizer
    from rft_cli.training.rl_trl import run_trl_rl

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny-test.yaml"
    config = load_run_config(
        recipe,
        [
            "sft.enabled=false",
            "rl.algorithm=grpo",
            "rl.steps=1",
            "rl.prompts_per_step=3",
            "rl.samples_per_prompt=2",
            "rl.mini_batch_size=6",
            "rl.max_new_tokens=80",
        ],
    )
    tokenizer = load_tokenizer(config.model)
    monkeypatch.setattr(
        episodes_module,
        "ModelPolicy",
        lambda model, tok, *a, **k: ScriptedPolicy(tok, SCRIPT, "<|assistant|>"),
    )
    compute_loss = GRPOTrainer._compute_loss

    def capture(self, model, inputs):
        seen.append({k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)})
        return compute_loss(self, model, inputs)

    monkeypatch.setattr(GRPOTrainer, "_compute_loss", capture)
    grader = build_from_dict(
        {
            "type": "string_check",
            "input": "{{ sample.output_text }}",
            "reference": "{{ item.answer }}",
            "operation": "eq",
        }
    )
    setup = ToolSetup(FakeToolBox(), EpisodeLimits(4, 400, 80))
    ctx = RunContext(config, tmp_path, list(ROWS), [], grader, NullLogger(), tools=setup)
    return run_trl_rl(ctx, tiny_model_dir, tokenizer)


@pytest.mark.slow
def test_grpo_s_loss_mask_is_the_episodes_policy_mask_and_a_dropped_episode_is_left_out(
    tmp_path, tiny_model_dir, monkeypatch
):
    seen: list[dict] = []
    _run_grpo(tmp_path, tiny_model_dir, monkeypatch, seen)
    expected = _expected_masks()
    inputs = seen[0]
    rows = inputs["completion_ids"].shape[0]
    assert rows == 6
    found = {False: 0, True: 0}
    for row in range(rows):
        length = int(inputs["completion_mask"][row].sum())
        ids = tuple(inputs["completion_ids"][row][:length].tolist())
        policy_mask, dropped = expected[ids]
        loss_mask = (inputs["completion_mask"][row] * inputs["tool_mask"][row])[:length]
        assert loss_mask.tolist() == ([0] * length if dropped else policy_mask)
        if dropped:
            assert inputs["advantages"][row].abs().max() == 0
        found[dropped] += 1
    assert found == {False: 4, True: 2}
    assert any(0 in m for m, d in expected.values() if not d)  # tool tokens inside graded episodes


def test_a_dropped_episode_is_unscorable_for_trl_and_a_cut_one_is_penalized():
    from rft_cli.graders.build import build_from_dict
    from rft_cli.training.trl_episodes import EpisodeReward

    tokenizer = build_char_tokenizer()
    script = {
        "ka+mo=?": [CALL.format(name="lookup", key="ka"), "#### 17"],
        "zz?": [CALL.format(name="fail", key="zz")],
        "cut?": ["#### 17" + ScriptedPolicy.NO_STOP],
    }
    episodes = run_episodes(
        ScriptedPolicy(tokenizer, script, "<|assistant|>"),
        tokenizer,
        [[{"role": "user", "content": k}] for k in script],
        [{"answer": "#### 17"}] * 3,
        FakeToolBox(),
        limits=EpisodeLimits(max_new_tokens=80),
    )
    grader = build_from_dict(
        {
            "type": "string_check",
            "input": "{{ sample.output_text }}",
            "reference": "{{ item.answer }}",
            "operation": "eq",
        }
    )
    reward = EpisodeReward(grader, 0.5, truncation_penalty=-1.0)
    assert reward(prompts=[], completions=[], rft_episode=episodes) == [1.0, None, -1.0]
    metrics = reward.drain_metrics()
    assert metrics["episodes_dropped"] == 1.0 and metrics[
        "tool_calls_per_episode"
    ] == pytest.approx(2 / 3)
