"""PPO's forward passes in pieces of similar answer length, each cut to its own longest prompt and answer.

The story (issue 14): every minibatch was padded to the longest answer of the whole step, and the
old-policy and reference passes to it too; on the arith recipe the answers are ~24 or ~45 tokens
long, so a third of the tokens PPO computed were padding. Cutting the padding away must not change
a single result: the loss, its gradient and the old log-probs are those of the uncut batch.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rft_cli.training import ppo
from rft_cli.training import ppo_math as pm
from tests.test_ppo_math import _trainer

BASE = (
    "rl.ppo_epochs=1",
    "rl.prompts_per_step=3",
    "rl.samples_per_prompt=2",
    "rl.mini_batch_size=6",
    "rl.max_grad_norm=1e9",
)  # compared before clipping


def _cost(pieces, prompts, answers, piece_cost):
    return sum(
        len(p) * (max(prompts[i] for i in p) + max(answers[i] for i in p)) + piece_cost
        for p in pieces
    )


@given(
    st.lists(st.tuples(st.integers(0, 9), st.integers(1, 30)), min_size=1, max_size=40),
    st.integers(1, 12),
    st.one_of(st.none(), st.integers(0, 200)),
)
def test_every_row_is_in_one_piece_of_at_most_max_rows(rows, max_rows, piece_cost):
    prompts, answers = [p for p, _ in rows], [a for _, a in rows]
    pieces = pm.length_pieces(prompts, answers, max_rows, piece_cost)
    assert sorted(i for piece in pieces for i in piece) == list(range(len(rows)))
    assert all(1 <= len(piece) <= max_rows for piece in pieces)
    flat = [answers[i] for piece in pieces for i in piece]
    assert flat == sorted(
        flat, reverse=True
    )  # longest answer first, so similar lengths share a piece


@given(
    st.lists(st.tuples(st.integers(0, 9), st.integers(1, 30)), min_size=1, max_size=30),
    st.integers(1, 12),
    st.integers(0, 200),
    st.integers(1, 120),
)
def test_a_token_bound_holds_for_every_piece_of_more_than_one_row(
    rows, max_rows, piece_cost, max_tokens
):
    """`rl.pass_memory_mb`: a piece's padded tokens (what its backward keeps) stay under the bound."""
    prompts, answers = [p for p, _ in rows], [a for _, a in rows]
    pieces = pm.length_pieces(prompts, answers, max_rows, piece_cost, max_tokens=max_tokens)
    assert sorted(i for piece in pieces for i in piece) == list(range(len(rows)))
    for piece in pieces:
        padded = len(piece) * (max(prompts[i] for i in piece) + max(answers[i] for i in piece))
        assert len(piece) == 1 or padded <= max_tokens


def test_without_a_cost_the_pieces_are_fixed_size():
    """Processes that sync gradients in every backward must make the same number of them."""
    pieces = pm.length_pieces([0] * 7, [5, 1, 7, 2, 9, 3, 3], max_rows=3)
    assert [len(p) for p in pieces] == [3, 3, 1]
    assert pieces[0] == [4, 2, 0]


@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(1, 20)), min_size=1, max_size=7),
    st.integers(1, 7),
    st.integers(0, 60),
)
def test_the_split_is_the_cheapest_of_all_splits_of_the_sorted_rows(rows, max_rows, piece_cost):
    prompts, answers = [p for p, _ in rows], [a for _, a in rows]
    got = _cost(
        pm.length_pieces(prompts, answers, max_rows, piece_cost), prompts, answers, piece_cost
    )
    order = sorted(range(len(rows)), key=lambda i: (-answers[i], -prompts[i], i))
    best = min(
        _cost(pieces, prompts, answers, piece_cost)
        for cuts in itertools.product([False, True], repeat=len(rows) - 1)
        for pieces in [_split(order, cuts)]
        if all(len(p) <= max_rows for p in pieces)
    )
    assert got == best


def _split(order, cuts):
    pieces, current = [], [order[0]]
    for i, cut in zip(order[1:], cuts, strict=True):
        if cut:
            pieces.append(current)
            current = []
        current.append(i)
    return [*pieces, current]


def _padded_batch(trainer, prompt_lens=(3, 1, 2, 3, 1, 2), answer_lens=(7, 1, 5, 2, 6, 1), seed=0):
    """Left-padded prompts of different lengths and right-padded answers of different lengths, with
    old log-probs and values from the old pass. One more column of padding on each side than these
    rows need: the step's longest prompt and answer were in another minibatch."""
    gen = torch.Generator().manual_seed(seed)
    n, p_width, a_width = len(answer_lens), max(prompt_lens) + 1, max(answer_lens) + 1
    input_ids = torch.randint(5, 60, (n, p_width + a_width), generator=gen)
    prompt_mask = torch.tensor([[0] * (p_width - k) + [1] * k for k in prompt_lens])
    mask = torch.tensor([[1.0] * k + [0.0] * (a_width - k) for k in answer_lens])
    attn = torch.cat([prompt_mask, mask.long()], dim=1)
    input_ids = torch.where(
        attn.bool(), input_ids, torch.zeros_like(input_ids)
    )  # pad id 0, as sampled
    old_logprobs, old_values, _ = trainer._old_pass(input_ids, attn, a_width)
    return {
        "input_ids": input_ids,
        "attention_mask": attn,
        "mask": mask,
        "old_logprobs": old_logprobs * mask,
        "old_values": old_values * mask,
        "advantages": torch.randn(n, a_width, generator=gen) * mask,
        "returns": torch.randn(n, a_width, generator=gen) * mask,
    }


def _uncut_loss_and_gradient(trainer, batch):
    """The whole minibatch in one forward, padded to the batch's longest prompt and answer (as before)."""
    trainer.ac.core.train()
    mb = dict(batch, weights=pm.loss_weights(batch["mask"], trainer.cfg.loss_aggregation))
    loss, _ = trainer._micro_losses(mb)
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in trainer.ac.parameters() if p.grad is not None])
    trainer.optimizer.zero_grad(set_to_none=True)
    return loss.item(), grad


def _cut_loss_and_gradient(trainer, batch):
    """`_update`'s first minibatch: its pieces' losses added up, and the gradient it steps with."""
    losses, grads = [], []
    real = trainer._micro_losses

    def micro_losses(mb, *share):
        loss, stats = real(mb, *share)
        losses.append((loss.item(), mb["input_ids"].shape))
        return loss, stats

    def step():  # before clipping, as `_uncut_loss_and_gradient` reads it
        grads.append(
            torch.cat([p.grad.flatten() for p in trainer.ac.parameters() if p.grad is not None])
        )
        trainer.optimizer.zero_grad(set_to_none=True)
        return 1.0, "ok"

    trainer._micro_losses, trainer.updates.step = micro_losses, step
    trainer._update(batch, step=1)
    return sum(loss for loss, _ in losses), grads[0], [shape for _, shape in losses]


@pytest.mark.filterwarnings("ignore:Detected call of")  # the optimizer step is stubbed
@pytest.mark.parametrize("aggregation", ["token", "answer"])
@pytest.mark.parametrize("piece_cost", [0, 10**6])
def test_cut_pieces_give_the_uncut_minibatch_loss_and_gradient(
    tmp_path, monkeypatch, aggregation, piece_cost
):
    """piece_cost 0 splits wherever padding is saved; 10**6 keeps one piece, cut to its own longest."""
    monkeypatch.setitem(ppo.PIECE_COST_TOKENS, "cpu", piece_cost)
    trainer = _trainer(tmp_path, *BASE, f"rl.loss_aggregation={aggregation}")
    batch = _padded_batch(trainer)
    want_loss, want_grad = _uncut_loss_and_gradient(trainer, batch)
    got_loss, got_grad, shapes = _cut_loss_and_gradient(trainer, batch)
    assert got_loss == pytest.approx(want_loss, rel=1e-5, abs=1e-7)
    assert torch.allclose(got_grad, want_grad, rtol=1e-4, atol=1e-7), (
        (got_grad - want_grad).abs().max()
    )
    tokens = sum(rows * width for rows, width in shapes)
    assert tokens < batch["input_ids"].numel()  # padding was left out
    if piece_cost == 0:
        assert len(shapes) > 1
    else:
        assert shapes == [(6, 3 + 7)]  # the rows' own longest prompt and answer


@pytest.mark.filterwarnings("ignore:Detected call of")  # the optimizer step is stubbed
def test_a_tight_pass_memory_gives_the_uncut_loss_and_gradient_in_more_passes(tmp_path):
    """The story (issue 27): a PPO step of SmolLM2-135M held 5.6 GB, the whole minibatch's
    activations in one backward. A pass bound of ~3 rows cuts it into more passes; the gradient
    is the minibatch's all the same."""
    trainer = _trainer(tmp_path, *BASE, "rl.pass_memory_mb=16")
    assert trainer._pass_tokens() == pm.pass_token_budget(trainer.ac.policy.config, 16)
    batch = _padded_batch(trainer)
    want_loss, want_grad = _uncut_loss_and_gradient(trainer, batch)
    trainer._pass_tokens = lambda: 30  # tokens: about three of the padded rows
    got_loss, got_grad, shapes = _cut_loss_and_gradient(trainer, batch)
    assert got_loss == pytest.approx(want_loss, rel=1e-5, abs=1e-7)
    assert torch.allclose(got_grad, want_grad, rtol=1e-4, atol=1e-7)
    assert len(shapes) >= 2 and all(r == 1 or r * w <= 30 for r, w in shapes), shapes


def test_the_old_pass_in_cut_pieces_equals_one_uncut_forward(tmp_path, monkeypatch):
    monkeypatch.setitem(ppo.PIECE_COST_TOKENS, "cpu", 0)
    trainer = _trainer(tmp_path, *BASE)
    batch = _padded_batch(trainer)
    mask, width = batch["mask"], batch["mask"].shape[1]
    old_logprobs, old_values, ref_logprobs = trainer._old_pass(
        batch["input_ids"], batch["attention_mask"], width
    )
    with torch.no_grad():
        want_logprobs, want_values, _ = trainer.ac.forward(
            batch["input_ids"], batch["attention_mask"], width, 1.0
        )
        want_ref = trainer.ac.reference_logprobs(
            batch["input_ids"], batch["attention_mask"], width, 1.0
        )
    for got, want in (
        (old_logprobs, want_logprobs),
        (old_values, want_values),
        (ref_logprobs, want_ref),
    ):
        assert torch.allclose(got * mask, want * mask, atol=1e-5)
        assert (got * (1 - mask)).abs().max().item() == 0.0  # past an answer's end: 0, not computed


def test_logprobs_a_chunk_of_rows_at_a_time_equal_all_rows_at_once(monkeypatch):
    torch.manual_seed(0)
    logits = torch.randn(5, 4, 30, requires_grad=True)
    tokens = torch.randint(0, 30, (5, 4))
    whole = pm.logprobs_from_logits(logits, tokens, 0.7)
    (whole_grad,) = torch.autograd.grad(whole.sum(), logits)
    whole_entropy = pm.entropy_from_logits(logits, 0.7)
    monkeypatch.setattr(pm, "_CHUNK_ELEMENTS", 2 * 4 * 30)  # two rows a chunk: chunks of 2, 2 and 1
    chunked = pm.logprobs_from_logits(logits, tokens, 0.7)
    (chunked_grad,) = torch.autograd.grad(chunked.sum(), logits)
    assert torch.allclose(chunked, whole) and torch.allclose(chunked_grad, whole_grad)
    assert torch.allclose(pm.entropy_from_logits(logits, 0.7), whole_entropy)
