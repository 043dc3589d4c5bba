"""PPO reads the old policy's log-probs and values off the sampling pass instead of a second forward.

The story (issue 14): after sampling, PPO ran the policy once more over every [prompt | answer] to
get the log-probs and values the sampling pass had already computed token by token (~9% of a CPU
step). The decoding loop now hands each step's logits and final hidden state to PPO
(`recording_steps`); what PPO reads must be what the full forward computes, to float rounding, on
every architecture, and where our loop is not the one that ran, PPO must compute them as before.
"""

from __future__ import annotations

import pytest
import torch

from rft_cli import generation
from rft_cli.generation import load_model_for_inference, recording_steps, sampling_config
from rft_cli.tiny import TINY_FAMILIES
from rft_cli.training import rollouts
from rft_cli.training.ppo import PolicyValue, SampledOldPolicy
from rft_cli.training.rollouts import sample
from tests.test_decode_loop import with_many_stop_ids
from tests.test_ppo_math import _trainer

ROWS = [
    {"messages": [{"role": "user", "content": text}]}
    for text in ("1+2=", "a much longer prompt: 3+4=", "9", "12+30=", "x")
] * 3


@pytest.fixture(autouse=True)
def _answers_of_different_lengths(monkeypatch):
    """Many stop ids, so that the random models' answers end at different steps and rows leave."""

    monkeypatch.setattr(
        rollouts, "sampling_config", lambda *a, **k: with_many_stop_ids(sampling_config(*a, **k))
    )


def _sample_recorded(model, tokenizer, value_head, temperature=0.8, seed=0):
    recorder = SampledOldPolicy(value_head, temperature)
    torch.manual_seed(seed)
    with recording_steps(recorder):
        rollout = sample(
            model, tokenizer, ROWS, max_prompt_length=32, max_new_tokens=12, temperature=temperature
        )
    return rollout, recorder


def _full_forward(core, rollout, temperature):
    with torch.no_grad():
        logprobs, values, _ = core(
            rollout.input_ids, rollout.attention_mask, rollout.response_ids.shape[1], temperature
        )
    return logprobs, values


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_what_sampling_recorded_is_what_a_full_forward_computes(family, family_dir):
    model, tokenizer = load_model_for_inference(family_dir(family))
    core = PolicyValue(model).eval()
    torch.nn.init.normal_(core.value_head.weight)  # a trained head: values that differ per token
    rollout, recorder = _sample_recorded(model, tokenizer, core.value_head)
    mask, width = rollout.response_mask, rollout.response_ids.shape[1]
    assert 0 < mask.sum() < mask.numel()  # answers of different lengths: some rows left the batch
    recorded = recorder.tensors(len(ROWS), width)
    assert recorded is not None
    for got, want in zip(recorded, _full_forward(core, rollout, 0.8), strict=True):
        assert torch.allclose(got * mask, want * mask, atol=1e-5), (got - want).abs().max()


def test_hfs_own_loop_records_nothing_and_ppo_computes_the_old_pass(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path)
    core = trainer.ac.core.eval()
    monkeypatch.setattr(generation, "_plain_stops", lambda criteria: None)  # HF's loop runs
    rollout, recorder = _sample_recorded(trainer.ac.policy, trainer.tokenizer, core.value_head)
    assert recorder.tensors(len(ROWS), rollout.response_ids.shape[1]) is None


def test_the_old_pass_from_sampling_equals_the_recomputed_one(tmp_path):
    trainer = _trainer(tmp_path)
    assert trainer._reads_old_policy_off_sampling()
    core = trainer.ac.core.eval()
    torch.nn.init.normal_(core.value_head.weight)
    rollout, recorder = _sample_recorded(
        trainer.ac.policy, trainer.tokenizer, core.value_head, trainer.cfg.temperature
    )
    ids, attn, width = rollout.input_ids, rollout.attention_mask, rollout.response_ids.shape[1]
    mask = rollout.response_mask
    read = trainer._old_pass(ids, attn, width, recorder.tensors(len(ROWS), width))
    recomputed = trainer._old_pass(ids, attn, width)
    for got, want in zip(read, recomputed, strict=True):
        assert torch.allclose(got * mask, want * mask, atol=1e-5)
    assert torch.equal(read[2], recomputed[2])  # the reference is computed the same way in both


@pytest.mark.parametrize(
    "override", ["rl.critic=separate", "model.dtype=bfloat16"], ids=["separate-critic", "bf16"]
)
def test_a_separate_critic_or_low_precision_recomputes_the_old_pass(tmp_path, override):
    # a separate critic's values are not in the policy's states; in bfloat16 the cached decode and
    # the full forward differ by far more than rounding (the sampler/trainer mismatch)
    assert not _trainer(tmp_path, override)._reads_old_policy_off_sampling()
