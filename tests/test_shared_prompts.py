"""PPO's forward passes compute each distinct prompt once for the answers that share it.

The story (issue 14): PPO samples several answers per prompt, and every forward over the [prompt |
answer] rows (the update's, the reference's) went through each prompt once per answer. Computing
the distinct prompts once, copying their keys and values to the rows and running the answers on top
must give what one pass over the whole rows gives, to float rounding, on every architecture: the
logits, the LM head's input the value head reads, and the gradients that reach every weight.
"""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rft_cli.generation import load_model_for_inference
from rft_cli.tiny import TINY_FAMILIES
from rft_cli.training import ppo
from rft_cli.training import ppo_math as pm
from rft_cli.training.shared_prompts import answer_forward, can_share, prompt_groups
from tests.test_ppo_math import RECIPE, _first_gradient, _trainer
from tests.test_ppo_pieces import _split


def _rows(vocab: int, seed: int = 0):
    """Nine rows: three prompts (9, 4 and 6 tokens, left-padded) x three answers each, of lengths
    1-7 (right-padded), so the sliding windows (8) of the tiny families are crossed."""
    gen = torch.Generator().manual_seed(seed)
    prompt_lens, answer_lens = [9, 4, 6], [7, 1, 3, 5, 2, 6, 4, 7, 1]
    width, resp = max(prompt_lens), max(answer_lens)
    ids = torch.zeros(9, width + resp, dtype=torch.long)
    mask = torch.zeros_like(ids)
    prompts = [torch.randint(3, vocab, (n,), generator=gen) for n in prompt_lens]
    for row, answer_len in enumerate(answer_lens):
        prompt = prompts[row % 3]
        ids[row, width - len(prompt) : width] = prompt
        mask[row, width - len(prompt) : width + answer_len] = 1
        ids[row, width : width + answer_len] = torch.randint(3, vocab, (answer_len,), generator=gen)
    return ids, mask, resp


def test_the_shared_forward_hands_the_cache_over_as_cache(family_dir):
    """transformers 5.25 deprecates `past_key_values=` (removed in 5.40) for `cache=`; passing the
    old name warned on every shared forward and would stop working at 5.40."""
    model, _ = load_model_for_inference(family_dir("llama"))
    ids, mask, resp = _rows(model.config.vocab_size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answer_forward(model, ids, mask, resp, share=True)
        can_share(model)
    assert [str(w.message) for w in caught if "deprecated" in str(w.message)] == []


def test_rows_with_the_same_prompt_form_one_group():
    ids = torch.tensor([[0, 5, 6, 1], [7, 5, 6, 2], [0, 5, 6, 3], [0, 5, 6, 1]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]])
    first, inverse = prompt_groups(ids, mask, prompt_width=3)
    # rows 0 and 2 share their prompt; row 3 has the same ids as row 0 but the pad is a token there
    assert inverse[0] == inverse[2] and len(set(inverse.tolist())) == 3
    assert torch.equal(inverse[first], torch.arange(3))


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_sharing_prompts_computes_what_one_pass_over_the_rows_computes(family, family_dir):
    model, _ = load_model_for_inference(family_dir(family))
    model.train()  # as in the update (dropout is 0 in the tiny models)
    assert can_share(model)
    ids, mask, resp = _rows(model.config.vocab_size)
    answer_mask = mask[:, -resp:].float()
    results = []
    for share in (False, True):
        model.zero_grad()
        logits, hidden = answer_forward(model, ids, mask, resp, share=share, head=True)
        logprobs = pm.logprobs_from_logits(logits, ids[:, -resp:], 0.8)
        ((logprobs * answer_mask).sum() + (hidden.sum(-1) * answer_mask).sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((logprobs * answer_mask, hidden * answer_mask[..., None], grads))
    (lp_one, hidden_one, grad_one), (lp_shared, hidden_shared, grad_shared) = results
    assert torch.allclose(lp_shared, lp_one, atol=1e-5), (lp_shared - lp_one).abs().max()
    assert torch.allclose(hidden_shared, hidden_one, atol=1e-5), (
        (hidden_shared - hidden_one).abs().max()
    )
    # float rounding: 0.8-6e-7 of the gradient's norm on the eleven families (the same weights, summed
    # over rows in another order); a wrong position, mask or cache row moves it by orders more
    assert grad_one.abs().max() > 0
    gap = ((grad_shared - grad_one).norm() / grad_one.norm()).item()
    assert gap < 5e-6, gap


def test_no_shared_prompt_or_gradient_checkpointing_keeps_one_pass(family_dir, monkeypatch):
    model, _ = load_model_for_inference(family_dir("llama"))
    ids, mask, resp = _rows(model.config.vocab_size)
    calls = []
    monkeypatch.setattr(
        model, "forward", lambda *a, real=model.forward, **k: calls.append(1) or real(*a, **k)
    )
    answer_forward(model, ids[:3], mask[:3], resp, share=True)  # three rows, three prompts
    assert len(calls) == 1
    answer_forward(model, ids, mask, resp, share=True)
    assert len(calls) == 3
    model.gradient_checkpointing_enable()
    assert not can_share(model)


def _split_cost(pieces, prompts, answers, groups, piece_cost, share_cost):
    total = 0
    for piece in pieces:
        rows, distinct = len(piece), len({groups[i] for i in piece})
        widest, longest = max(prompts[i] for i in piece), max(answers[i] for i in piece)
        plain = rows * (widest + longest) + piece_cost
        shared = distinct * widest + rows * longest + piece_cost + share_cost
        total += shared if pm.shares_prompts(rows, distinct, widest, share_cost) else plain
    return total


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 20)), min_size=1, max_size=7),
    st.lists(st.integers(0, 40), min_size=4, max_size=4),
    st.integers(1, 7),
    st.integers(0, 60),
    st.integers(0, 120),
)
def test_pieces_by_prompt_are_the_cheapest_split_of_either_order(
    rows, prompt_of_group, max_rows, piece_cost, share_cost
):
    groups, answers = [g for g, _ in rows], [a for _, a in rows]
    prompts = [prompt_of_group[g] for g in groups]
    pieces = pm.length_pieces(prompts, answers, max_rows, piece_cost, groups, share_cost)
    assert sorted(i for piece in pieces for i in piece) == list(range(len(rows)))
    assert all(1 <= len(piece) <= max_rows for piece in pieces)
    longest = {g: max(a for a, h in zip(answers, groups, strict=True) if h == g) for g in groups}
    orders = [
        sorted(range(len(rows)), key=lambda i: (-answers[i], -prompts[i], i)),
        sorted(range(len(rows)), key=lambda i: (-longest[groups[i]], groups[i], -answers[i], i)),
    ]
    if not pm.shares_prompts(len(rows), len(set(groups)), max(prompts), share_cost):
        orders = orders[:1]  # no piece could share: the plain split, rows by answer length
    best = min(
        _split_cost(pieces_of, prompts, answers, groups, piece_cost, share_cost)
        for order in orders
        for cuts in itertools.product([False, True], repeat=len(rows) - 1)
        for pieces_of in [_split(order, cuts)]
        if all(len(p) <= max_rows for p in pieces_of)
    )
    assert _split_cost(pieces, prompts, answers, groups, piece_cost, share_cost) == best


def _update_gradient(trainer, batch):
    """The gradient of `_update`'s first optimizer step (`_first_gradient`), and the number of
    model forwards it made."""
    forwards = []
    hook = trainer.ac.policy.register_forward_pre_hook(lambda *a: forwards.append(1))
    try:
        return _first_gradient(trainer, batch), len(forwards)
    finally:
        hook.remove()


@pytest.mark.filterwarnings("ignore:Detected call of")  # the optimizer step is stubbed
def test_ppo_updates_with_shared_prompts_as_with_whole_rows(tmp_path, monkeypatch):
    """A 30-token and a left-padded 22-token prompt x 3 answers: the update computes each prompt
    once, the same gradient before clipping (with equal, unpadded prompts and clipped gradients a
    wrong position or mask on the answers' pass went unseen)."""
    monkeypatch.setitem(ppo.PIECE_COST_TOKENS, "cpu", 16)  # sharing 4 x 30 tokens pays
    base = (
        "rl.ppo_epochs=1",
        "rl.prompts_per_step=2",
        "rl.samples_per_prompt=3",
        "rl.mini_batch_size=6",
    )
    shared, whole = _trainer(tmp_path, *base), _trainer(tmp_path, *base, "rl.share_prompts=false")
    assert shared._shares_prompts and not whole._shares_prompts
    gen = torch.Generator().manual_seed(0)
    prompt_mask = (torch.arange(30) >= torch.tensor([[0], [8]])).long().repeat_interleave(3, dim=0)
    prompts = torch.randint(5, 60, (2, 30), generator=gen).repeat_interleave(3, dim=0)
    lengths = [5, 1, 3, 2, 6, 4]
    mask = torch.tensor([[1.0] * k + [0.0] * (6 - k) for k in lengths])
    ids = torch.cat([prompts * prompt_mask, torch.randint(5, 60, (6, 6), generator=gen)], dim=1)
    attn = torch.cat([prompt_mask, mask.long()], dim=1)
    old_logprobs, old_values, _ = whole._old_pass(ids, attn, 6)
    batch = {
        "input_ids": ids,
        "attention_mask": attn,
        "mask": mask,
        "old_logprobs": old_logprobs * mask,
        "old_values": old_values * mask,
        "advantages": torch.randn(6, 6, generator=gen) * mask,
        "returns": torch.randn(6, 6, generator=gen) * mask,
    }
    want, whole_forwards = _update_gradient(whole, batch)
    got, shared_forwards = _update_gradient(shared, batch)
    assert want.norm() > 2 * whole.cfg.max_grad_norm  # unclipped: a wrong scale would show
    assert shared_forwards > whole_forwards  # a prompt pass and an answer pass per piece
    gap = ((got - want).norm() / want.norm()).item()
    assert gap < 5e-6, gap
    # the old pass shares them too, and reads the same log-probs
    again = shared._old_pass(ids, attn, 6)
    assert torch.allclose(again[0] * mask, old_logprobs * mask, atol=1e-5)


def test_share_prompts_is_a_ppo_setting():
    from rft_cli.config import load_run_config
    from rft_cli.errors import ConfigError

    assert load_run_config(RECIPE).rl.share_prompts is True
    with pytest.raises(ConfigError, match="share_prompts"):
        load_run_config(RECIPE, ["rl.algorithm=grpo", "rl.share_prompts=false"])
