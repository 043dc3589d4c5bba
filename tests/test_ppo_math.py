"""The PPO pieces against hand-computed values (GAE, whitening, clipped losses, KL and reward placement)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from rft_cli.training import ppo_math as pm


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_gae_on_a_short_sequence_matches_hand_computed_values():
    # r = [0, 0, 1], V = [0.5, 0.6, 0.7], gamma 1, lam 0.95:
    # deltas = [0.1, 0.1, 0.3]; A2 = 0.3, A1 = 0.1 + 0.95*0.3 = 0.385, A0 = 0.1 + 0.95*0.385 = 0.46575
    adv, ret = pm.compute_gae(
        t([[0, 0, 1]]), t([[0.5, 0.6, 0.7]]), t([[1, 1, 1]]), gamma=1.0, lam=0.95
    )
    assert adv[0].tolist() == pytest.approx([0.46575, 0.385, 0.3], abs=1e-6)
    assert ret[0].tolist() == pytest.approx([0.96575, 0.985, 1.0], abs=1e-6)


def test_gae_with_discount_and_padding():
    # gamma 0.9, lam 0.5: deltas = [0.9*0.6-0.5, 0.9*0.7-0.6, 1-0.7] = [0.04, 0.03, 0.3]
    adv, _ = pm.compute_gae(
        t([[0, 0, 1]]), t([[0.5, 0.6, 0.7]]), t([[1, 1, 1]]), gamma=0.9, lam=0.5
    )
    assert adv[0].tolist() == pytest.approx([0.04 + 0.45 * 0.165, 0.165, 0.3], abs=1e-6)
    # A padded position's value (9.9) must not leak into the last real token's advantage.
    adv, ret = pm.compute_gae(
        t([[0, 1, 0]]), t([[0.2, 0.4, 9.9]]), t([[1, 1, 0]]), gamma=1.0, lam=0.95
    )
    assert adv[0].tolist() == pytest.approx([0.2 + 0.95 * 0.6, 0.6, 0.0], abs=1e-6)
    assert ret[0, 2].item() == 0.0


def _gae_loop(rewards, values, gamma, lam):
    last, out = 0.0, [0.0] * len(rewards)
    for i in reversed(range(len(rewards))):
        next_value = values[i + 1] if i + 1 < len(rewards) else 0.0
        delta = rewards[i] + gamma * next_value - values[i]
        last = delta + gamma * lam * last
        out[i] = last
    return out


def test_vectorised_gae_equals_the_textbook_loop():
    gen = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(3, 17, generator=gen), torch.randn(3, 17, generator=gen)
    adv, _ = pm.compute_gae(rewards, values, torch.ones(3, 17), gamma=0.97, lam=0.9)
    for row in range(3):
        assert adv[row].tolist() == pytest.approx(
            _gae_loop(rewards[row].tolist(), values[row].tolist(), 0.97, 0.9), abs=1e-5
        )


def test_whitening_uses_only_masked_positions():
    out = pm.whiten(t([[1, 2, 3, 100]]), t([[1, 1, 1, 0]]))
    assert out[0].tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-4)


def test_advantages_are_whitened_when_scores_differ():
    adv, mask = t([[0.01, 0.02, 0.03, 5.0]]), t([[1, 1, 1, 0]])
    out, scaled = pm.normalise_advantages(adv, mask, t([1.0, 0.1]))
    assert scaled
    assert out[0].tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-3)


def test_a_batch_that_scored_the_same_is_centred_not_scaled_up():
    # all answers right: the advantages are KL and critic noise, which unit-variance scaling would blow up 50x
    adv, mask = t([[0.01, 0.02, 0.03, 5.0]]), t([[1, 1, 1, 0]])
    out, scaled = pm.normalise_advantages(adv, mask, t([1.0, 1.0, 1.0]))
    assert not scaled
    assert out[0].tolist() == pytest.approx([-0.01, 0.0, 0.01, 0.0], abs=1e-6)


def test_kl_sums_hold_k3_and_the_log_ratio_of_the_answer_tokens():
    logprobs, ref = (
        t([[-1.0, -2.0, -0.5], [-0.1, -3.0, 0.0]]),
        t([[-1.5, -1.0, -9.0], [-0.1, -2.0, 0.0]]),
    )
    mask = t([[1, 1, 0], [1, 1, 0]])
    k3 = [math.exp(d) - d - 1 for d in (-0.5, 1.0, 0.0, 1.0)]  # d = log pi_ref - log pi
    sums = pm.kl_sums(logprobs * mask, ref * mask, mask)
    assert sums.flatten().tolist() == pytest.approx(
        [k3[0] + k3[1], -0.5, 2.0, k3[2] + k3[3], -1.0, 2.0]
    )
    assert (sums[:, 0] >= 0).all() and (sums[:, 1] < 0).all()  # k3 is never negative; k1 can be
    # a policy barely moved: k3 is d**2 / 2 a token, where float32's exp(d) - d - 1 gives noise
    d = [3e-5, -2e-5, 1e-4]
    small = pm.kl_sums(t([[-1.0] * 3]), t([[-1.0 + x for x in d]]), t([[1, 1, 1]]))
    exact = sum(x * x / 2 for x in (t([[-1.0 + x for x in d]])[0].double() + 1.0).tolist())
    assert small[0, 0].item() == pytest.approx(exact, rel=1e-3)


def test_equal_scores_far_from_one_are_centred_too():
    """Equal float32 scores of 100.3 have a std of 7.9e-6 (rounding): still no difference to whiten."""
    adv, mask = t([[0.01, 0.02, 0.03, 5.0]]), t([[1, 1, 1, 0]])
    out, scaled = pm.normalise_advantages(adv, mask, t([100.3] * 16))
    assert not scaled


@pytest.mark.parametrize(
    "adv,new_lp,loss,clip_frac",
    [
        (1.0, math.log(1.5), -1.2, 1.0),  # ratio 1.5 clipped to 1.2 for a positive advantage
        (
            -1.0,
            math.log(1.5),
            1.5,
            0.0,
        ),  # negative advantage: the pessimistic (unclipped) term wins
        (
            1.0,
            math.log(0.5),
            -0.5,
            0.0,
        ),  # ratio below 1 - eps with a positive advantage is not clipped
        (-1.0, math.log(0.5), 0.8, 1.0),  # ... but is with a negative one: -(-1) * 0.8
    ],
)
def test_clipped_policy_loss(adv, new_lp, loss, clip_frac):
    got_loss, got_clip, approx_kl = pm.policy_loss(
        t([[new_lp]]), t([[0.0]]), t([[adv]]), t([[1.0]]), 0.2
    )
    assert got_loss.item() == pytest.approx(loss, abs=1e-6)
    assert got_clip.item() == clip_frac
    assert approx_kl.item() == pytest.approx(0.5 * new_lp**2, abs=1e-6)


def test_clipped_value_loss():
    # v = 1.0 moves 0.5 from old 0.5; clipped to 0.7; errors (1-2)^2 = 1 and (0.7-2)^2 = 1.69 -> 0.5 * 1.69
    loss, clip_frac = pm.value_loss(t([[1.0]]), t([[0.5]]), t([[2.0]]), t([[1.0]]), 0.2)
    assert loss.item() == pytest.approx(0.845, abs=1e-6)
    assert clip_frac.item() == 1.0
    loss, _ = pm.value_loss(t([[1.0, 5.0]]), t([[0.9, 0.0]]), t([[2.0, 0.0]]), t([[1.0, 0.0]]), 0.2)
    assert loss.item() == pytest.approx(0.5, abs=1e-6)  # the masked token's huge error is ignored


def test_value_clip_fraction_counts_real_clipping_not_rounding():
    # Inside the clip range nothing is clipped, so the fraction is exactly 0. It used to count
    # rounding ties too: old + (values - old) != values in float32 for a third of these tokens
    # (values near 0, as a value head that starts at 0 predicts), 1.2% of them counted as clipped.
    gen = torch.Generator().manual_seed(0)
    old = 0.03 * torch.randn(64, 64, generator=gen)
    values = 0.03 * torch.randn(64, 64, generator=gen)  # all within 0.16 of old
    returns = torch.randn(64, 64, generator=gen)
    weights = torch.full((64, 64), 1 / 64**2)
    _, clip_frac = pm.value_loss(values, old, returns, weights, 0.2)
    assert clip_frac.item() == 0.0
    values = values.clone().requires_grad_(True)
    loss, _ = pm.value_loss(values, old, returns, weights, 0.2)
    (grad,) = torch.autograd.grad(loss, values)
    assert torch.allclose(grad, (values - returns).detach() * weights)  # the unclipped gradient


def test_kl_penalty_on_every_token_and_score_on_the_last():
    rewards, kl = pm.token_rewards(
        t([1.0]), t([[-1, -1, -1, 0]]), t([[-2, -1, -0.5, 0]]), t([[1, 1, 1, 0]]), kl_coef=0.1
    )
    assert kl[0].tolist() == pytest.approx([1.0, 0.0, -0.5, 0.0])
    assert rewards[0].tolist() == pytest.approx([-0.1, 0.0, 1.05, 0.0])


@pytest.mark.parametrize(
    "mask,last", [([1, 1, 0, 0], 1), ([0, 0, 1, 1], 3), ([1, 1, 1, 1], 3), ([0, 1, 1, 0], 2)]
)
def test_reward_lands_on_the_last_real_token_with_left_or_right_padding(mask, last):
    rewards, _ = pm.token_rewards(
        t([0.7]), torch.zeros(1, 4), torch.zeros(1, 4), t([mask]), kl_coef=0.05
    )
    assert pm.last_token_index(t([mask])).item() == last
    expected = [0.0] * 4
    expected[last] = 0.7
    assert rewards[0].tolist() == pytest.approx(expected)


def test_response_mask_stops_after_the_first_eos_and_flags_truncation():
    mask, truncated = pm.response_mask(
        torch.tensor([[5, 3, 7, 3, 9], [5, 5, 5, 5, 5]]), eos_token_id=3
    )
    assert mask.tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert truncated.tolist() == [False, True]


def test_entropy_and_logprobs_of_uniform_logits():
    logits = torch.zeros(1, 2, 4)
    assert pm.entropy_from_logits(logits)[0].tolist() == pytest.approx([math.log(4)] * 2)
    assert pm.logprobs_from_logits(logits, torch.tensor([[0, 3]]))[0].tolist() == pytest.approx(
        [-math.log(4)] * 2
    )


def test_adaptive_kl_controller_moves_toward_the_target():
    ctl = pm.AdaptiveKLController(0.1, target=6.0, horizon=100)
    ctl.update(current_kl=12.0, n_samples=10)  # error clipped to +0.2 -> x1.02
    assert ctl.value == pytest.approx(0.102)
    ctl.update(current_kl=0.0, n_samples=10)  # error clipped to -0.2 -> x0.98
    assert ctl.value == pytest.approx(0.102 * 0.98)


def test_batched_forward_with_left_padding_matches_unpadded_sequences(tiny_model_dir):
    """Left-padded prompts get position ids from the attention mask, so padding changes nothing."""
    from transformers import AutoModelForCausalLM

    from rft_cli.training.ppo import ActorCritic

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ac = ActorCritic(model, reference, "value_head")
    long_seq, short_seq, response = [10, 11, 12, 13], [20, 21], [30, 31, 32]
    pad = 0
    ids = torch.tensor([long_seq + response, [pad, pad] + short_seq + response])
    mask = torch.tensor([[1] * 7, [0, 0] + [1] * 5])
    with torch.no_grad():
        batched, values, _ = ac.forward(ids, mask, 3, temperature=1.0)
        alone, alone_values, _ = ac.forward(
            torch.tensor([short_seq + response]), torch.ones(1, 5, dtype=torch.long), 3, 1.0
        )
        ref = ac.reference_logprobs(ids, mask, 3, 1.0)
    assert batched[1].tolist() == pytest.approx(alone[0].tolist(), abs=1e-5)
    assert values[1].tolist() == pytest.approx(alone_values[0].tolist(), abs=1e-5)
    assert torch.allclose(ref, batched, atol=1e-5)  # same weights -> same log-probs


def test_a_fresh_value_head_predicts_zero(tiny_model_dir):
    """The critic starts at V = 0, so the first advantages are the returns, not value-head noise."""
    from transformers import AutoModelForCausalLM

    from rft_cli.training.ppo import ActorCritic

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ac = ActorCritic(model, AutoModelForCausalLM.from_pretrained(tiny_model_dir), "value_head")
    with torch.no_grad():
        _, values, _ = ac.forward(
            torch.tensor([[10, 11, 12, 13]]), torch.ones(1, 4, dtype=torch.long), 2, 1.0
        )
    assert values.abs().max().item() == 0.0


def test_loss_weights_token_and_answer_means():
    mask = t([[1, 1, 1, 1], [1, 0, 0, 0]])  # a 4-token answer and a 1-token answer
    token = pm.loss_weights(mask, "token")
    answer = pm.loss_weights(mask, "answer")
    assert token.flatten().tolist() == pytest.approx([0.2] * 4 + [0.2, 0, 0, 0])
    assert answer.flatten().tolist() == pytest.approx(
        [0.125] * 4 + [0.5, 0, 0, 0]
    )  # each answer weighs 1/2 in all
    losses = t([[1, 1, 1, 1], [3, 9, 9, 9]])  # padded positions carry junk that must not count
    assert (losses * token).sum().item() == pytest.approx(7 / 5)  # token mean over the minibatch
    assert (losses * answer).sum().item() == pytest.approx(
        (1 + 3) / 2
    )  # mean of the per-answer means


# -- PPOTrainer._update on a tiny model ---------------------------------------------------------------

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-test.yaml"


def _trainer(tmp_path, *overrides, model_config=None):
    """A PPOTrainer on the tiny llama (optionally with config changes, e.g. attention dropout)."""
    from rft_cli.config import load_run_config
    from rft_cli.run_folder.metrics import NullLogger
    from rft_cli.training.context import RunContext
    from rft_cli.training.models import load_model, load_tokenizer
    from rft_cli.training.ppo import PPOTrainer

    config = load_run_config(RECIPE, ["sft.enabled=false", *overrides])
    tokenizer = load_tokenizer(config.model)
    policy, reference = (
        load_model(config.model, tokenizer),
        load_model(config.model, tokenizer, trainable=False),
    )
    critic = (
        load_model(config.model, tokenizer).get_decoder()
        if config.rl.critic == "separate"
        else None
    )
    for model in (policy, reference, critic):
        for key, value in (model_config or {}).items():
            if model is not None:
                setattr(model.config, key, value)
                for module in model.modules():  # attention layers copy the rate when they are built
                    if hasattr(module, key):
                        setattr(module, key, value)
    ctx = RunContext(config, tmp_path, [], [], None, NullLogger())
    return PPOTrainer(ctx, policy, reference, tokenizer, critic)


def _batch(trainer, lengths=(5, 1, 3, 2), seed=0):
    """Four sampled-looking answers of different lengths after a 3-token prompt, with old values from the old pass."""
    gen = torch.Generator().manual_seed(seed)
    n, width = len(lengths), max(lengths)
    input_ids = torch.randint(5, 60, (n, 3 + width), generator=gen)
    mask = torch.tensor([[1.0] * k + [0.0] * (width - k) for k in lengths])
    attn = torch.cat([torch.ones(n, 3, dtype=torch.long), mask.long()], dim=1)
    old_logprobs, old_values, _ = trainer._old_pass(input_ids, attn, width)
    return {
        "input_ids": input_ids,
        "attention_mask": attn,
        "mask": mask,
        "old_logprobs": old_logprobs * mask,
        "old_values": old_values * mask,
        "advantages": torch.randn(n, width, generator=gen) * mask,
        "returns": torch.randn(n, width, generator=gen) * mask,
    }


def _first_gradient(trainer, batch):
    """The gradient `_update`'s first minibatch accumulated, before clipping (no step is taken).

    Read after clipping (to rl.max_grad_norm 1.0, against norms of 6-9 here) any two gradients of
    the same direction looked alike: a micro-batch loss scaled by a constant would pass."""
    grads = []

    def step():
        grads.append(
            torch.cat([p.grad.flatten() for p in trainer.ac.parameters() if p.grad is not None])
        )
        trainer.optimizer.zero_grad(set_to_none=True)
        return 1.0, "ok"

    trainer.updates.step = step
    trainer._update(batch, step=1)
    return grads[0]


@pytest.mark.filterwarnings("ignore:Detected call of")  # the optimizer step is stubbed
@pytest.mark.parametrize("aggregation", ["token", "answer"])
def test_micro_batches_accumulate_the_minibatch_gradient(tmp_path, aggregation):
    """Splitting a minibatch of answers of different lengths into micro-batches changes memory, not the gradient."""
    base = (
        "rl.ppo_epochs=1",
        "rl.prompts_per_step=2",
        "rl.samples_per_prompt=2",
        f"rl.loss_aggregation={aggregation}",
    )
    whole = _trainer(tmp_path, *base)
    batch = _batch(whole)
    expected = _first_gradient(whole, batch)
    assert expected.norm() > 2 * whole.cfg.max_grad_norm  # clipping would hide a scale
    for micro in (1, 2):
        split = _trainer(tmp_path, *base, f"rl.micro_batch_size={micro}")
        got = _first_gradient(split, batch)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-7), (
            micro,
            (got - expected).abs().max(),
        )
    other = "token" if aggregation == "answer" else "answer"
    different = _first_gradient(
        _trainer(tmp_path, *base[:-1], f"rl.loss_aggregation={other}"), batch
    )
    assert not torch.allclose(different, expected, rtol=1e-2, atol=1e-5)  # the setting is used


def test_old_and_new_logprobs_agree_before_the_first_update_with_attention_dropout(
    tmp_path, monkeypatch
):
    """Issue 11: attention dropout is a float read only in train mode, so disabling nn.Dropout modules
    left it on: the old pass (eval mode) and the update (train mode) computed different networks."""
    trainer = _trainer(
        tmp_path,
        "rl.ppo_epochs=1",
        "rl.prompts_per_step=2",
        "rl.samples_per_prompt=2",
        model_config={"attention_dropout": 0.5},
    )
    batch = _batch(trainer, lengths=(6, 6, 6, 6))
    gaps = []
    real = pm.policy_loss

    def policy_loss(logprobs, old_logprobs, advantages, weights, clip_range):
        gaps.append(((logprobs - old_logprobs) * (weights > 0)).abs().max().item())
        return real(logprobs, old_logprobs, advantages, weights, clip_range)

    monkeypatch.setattr(pm, "policy_loss", policy_loss)
    trainer._update(batch, step=1)
    assert gaps[0] <= 1e-5


def test_the_separate_critic_trains_in_train_mode(tmp_path):
    """The critic backbone used to stay in eval mode during updates (only the policy was switched)."""
    trainer = _trainer(
        tmp_path,
        "rl.critic=separate",
        "rl.ppo_epochs=1",
        "rl.prompts_per_step=2",
        "rl.samples_per_prompt=2",
    )
    batch = _batch(trainer)
    trainer.ac.critic_backbone.eval()  # as from_pretrained returns it, and as the rollout leaves it
    modes = []
    trainer.ac.critic_backbone.register_forward_pre_hook(
        lambda module, args: modes.append(module.training)
    )
    trainer._update(batch, step=1)
    assert modes and all(modes)
    assert all(m.training for m in trainer.ac.critic_backbone.modules())


@pytest.mark.filterwarnings("ignore:Detected call of")  # the scaler skipped the optimizer step
def test_a_float16_overflow_is_left_to_the_loss_scaler_not_counted_as_a_fault(tmp_path):
    """Under float16 an inf gradient norm is the loss scaler's business: it skips the step and lowers
    the scale. (accelerate scales only on a GPU; a CPU GradScaler stands in for it here.)"""
    trainer = _trainer(
        tmp_path, "rl.ppo_epochs=1", "rl.prompts_per_step=2", "rl.samples_per_prompt=2"
    )
    scaler = torch.amp.GradScaler("cpu", init_scale=3e38)  # the first scaled loss overflows float32
    from accelerate.optimizer import AcceleratedOptimizer

    trainer.accelerator.scaler = scaler
    trainer.updates.optimizer = AcceleratedOptimizer(trainer.optimizer.optimizer, scaler=scaler)
    before = [p.detach().clone() for p in trainer.ac.parameters()]
    result = trainer._update(_batch(trainer), step=1)
    assert isinstance(result, dict) and result["fp16_overflow_steps"] == 1.0
    assert scaler.get_scale() < 3e38
    assert all(
        torch.equal(a, p) for a, p in zip(before, trainer.ac.parameters(), strict=True)
    )  # the step was skipped


def test_loss_aggregation_defaults_to_reft_and_is_a_ppo_setting():
    from rft_cli.config import load_run_config
    from rft_cli.errors import ConfigError

    assert load_run_config(RECIPE).rl.loss_aggregation == "answer"
    assert load_run_config(RECIPE, ["rl.loss_aggregation=token"]).rl.loss_aggregation == "token"
    with pytest.raises(ConfigError, match="rl.loss_aggregation applies to rl.algorithm: ppo only"):
        load_run_config(RECIPE, ["rl.algorithm=grpo", "rl.loss_aggregation=token"])
    # at its default it loads, so a grpo run's resolved config.yaml (every key written) loads again
    assert (
        load_run_config(RECIPE, ["rl.algorithm=grpo", "rl.loss_aggregation=answer"]).rl.algorithm
        == "grpo"
    )
    assert (
        load_run_config(RECIPE, ["rl.algorithm=grpo"]).rl.algorithm == "grpo"
    )  # the default alone is fine


def test_ppo_steps_adamw_with_the_fused_kernel_and_the_same_update(tmp_path):
    from rft_cli.training.ppo_optim import fused_adamw

    fused, looped = (
        _trainer(tmp_path, "rl.weight_decay=0.1"),
        _trainer(tmp_path, "rl.weight_decay=0.1"),
    )
    assert fused.optimizer.param_groups[0]["fused"] is True
    looped.optimizer.param_groups[0]["fused"] = None  # torch's per-tensor loop on CPU
    batch = _batch(fused)
    for trainer in (fused, looped):
        trainer._update(batch, step=1)
    start = _trainer(tmp_path).ac.parameters()
    moved = max(
        (a - b).abs().max().item() for a, b in zip(fused.ac.parameters(), start, strict=True)
    )
    gap = max(
        (a - b).abs().max().item()
        for a, b in zip(fused.ac.parameters(), looped.ac.parameters(), strict=True)
    )
    assert moved > 1e-6 and gap < 1e-7, (moved, gap)
    # DeepSpeed wraps the optimizer in its own, and a device without the kernel keeps torch's choice
    params = fused.ac.parameters()
    assert fused_adamw(params, deepspeed=True) is None
    assert fused_adamw([torch.nn.Parameter(torch.zeros(2, device="meta"))], False) is None


def test_under_lora_the_reference_is_the_policy_with_its_adapters_off(tiny_model_dir):
    """Under LoRA PPO holds no second copy of the weights (`reference_is_policy`): the reference is
    the policy with its adapters off. At the start it computes what a separate frozen copy does,
    bit for bit, and once the adapters have trained it still computes the warm-up model, not the
    policy."""
    from transformers import AutoModelForCausalLM

    from rft_cli.config import ModelSettings
    from rft_cli.training.models import apply_lora
    from rft_cli.training.ppo import ADAPTERS_OFF, ActorCritic, reference_is_policy

    settings = ModelSettings(name=tiny_model_dir, lora={"r": 4, "target_modules": "all-linear"})
    assert reference_is_policy(settings) and not reference_is_policy(ModelSettings(name="x"))
    policy = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), settings)
    copy = ActorCritic(
        apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), settings),
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        "value_head",
    )
    shared = ActorCritic(policy, ADAPTERS_OFF, "value_head")
    ids = torch.tensor([[0, 10, 11, 12, 13, 30, 31], [20, 21, 22, 23, 24, 40, 41]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1, 1], [1] * 7])
    with torch.no_grad():
        at_start = shared.reference_logprobs(ids, mask, 2, 1.0)
        assert torch.equal(at_start, copy.reference_logprobs(ids, mask, 2, 1.0))
        assert torch.equal(at_start, shared.forward(ids, mask, 2, 1.0)[0])  # KL 0 at step 1
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.5)  # the adapters have trained
        assert torch.equal(shared.reference_logprobs(ids, mask, 2, 1.0), at_start)
        assert not torch.allclose(shared.forward(ids, mask, 2, 1.0)[0], at_start)
    assert not any(p.requires_grad for p in copy.reference.parameters())
