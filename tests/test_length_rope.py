"""A RoPE that changes with the longest position of a forward call keeps each row in its company.

The story (issue 25): Phi-3's `longrope` switches from its short to its long factors, and `dynamic`
NTK scaling recomputes its frequencies, once a call holds a position past the trained length
(transformers `dynamic_rope_update` reads the call's largest position id). Computing each prompt
once, splitting a minibatch into pieces of similar length, or letting ended answers leave the
decoding batch then changed log-probs (2.1e-4 shared vs one pass on a Phi-3 longrope config).
Here a tiny Phi-3 with longrope past its 16 trained positions shows it: 0.31 shared, 0.21 split.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rft_cli.generation import _decode_dropping_ended_rows, rope_depends_on_length
from rft_cli.tiny import _FAMILY_SIZES, build_char_tokenizer, random_causal_lm
from rft_cli.training import ppo

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-test.yaml"
TRAINED = 16  # original_max_position_embeddings
LONGROPE = {
    "rope_type": "longrope",
    "rope_theta": 10000.0,
    "short_factor": [1.0] * 4,
    "long_factor": [1.0, 4.0, 16.0, 64.0],
    "original_max_position_embeddings": TRAINED,
}


def _phi3(tokenizer, rope: dict | None = LONGROPE, seed: int = 0):
    extra = {"rope_parameters": rope, "original_max_position_embeddings": TRAINED} if rope else {}
    model = random_causal_lm(
        "phi3",
        tokenizer,
        seed=seed,
        max_position_embeddings=64,
        initializer_range=0.2,  # larger weights: the rope's switch moves log-probs visibly
        **_FAMILY_SIZES,
        **extra,
    )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def test_ropes_that_read_the_longest_position_are_told_apart():
    tokenizer = build_char_tokenizer()
    assert rope_depends_on_length(_phi3(tokenizer))
    assert not rope_depends_on_length(_phi3(tokenizer, None))
    for rope, depends in (("dynamic", True), ("linear", False), ("yarn", False)):
        parameters = {"rope_type": rope, "rope_theta": 10000.0, "factor": 2.0}
        llama = random_causal_lm("llama", tokenizer, **_FAMILY_SIZES, rope_parameters=parameters)
        assert rope_depends_on_length(llama) is depends, rope


def _rows(vocab: int):
    """Two 14-token prompts x 3 answers of 1-6 tokens: the longest rows pass position 16."""
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(8, vocab, (2, 14), generator=gen).repeat_interleave(3, dim=0)
    lengths = [6, 1, 3, 2, 5, 4]
    mask = torch.tensor([[1.0] * k + [0.0] * (6 - k) for k in lengths])
    ids = torch.cat([prompts, torch.randint(8, vocab, (6, 6), generator=gen)], dim=1)
    attn = torch.cat([torch.ones(6, 14, dtype=torch.long), mask.long()], dim=1)
    return ids * attn, attn, mask


def test_ppo_neither_shares_nor_splits_such_rows(tmp_path, monkeypatch):
    from rft_cli.config import load_run_config
    from rft_cli.run_folder.metrics import NullLogger
    from rft_cli.training.context import RunContext

    monkeypatch.setitem(ppo.PIECE_COST_TOKENS, "cpu", 0)  # split wherever padding is saved
    tokenizer = build_char_tokenizer()
    ctx = RunContext(
        load_run_config(RECIPE, ["sft.enabled=false"]), tmp_path, [], [], None, NullLogger()
    )
    trainer = ppo.PPOTrainer(ctx, _phi3(tokenizer), _phi3(tokenizer), tokenizer)
    ids, attn, mask = _rows(len(tokenizer))
    old_logprobs, _, ref_logprobs = trainer._old_pass(ids, attn, 6)
    with torch.no_grad():
        want, _, _ = trainer.ac.forward(ids, attn, 6, 1.0)  # one pass over the whole rows
    assert torch.allclose(old_logprobs * mask, want * mask, atol=1e-5), (
        ((old_logprobs - want) * mask).abs().max()
    )
    assert torch.allclose(ref_logprobs * mask, want * mask, atol=1e-5)
    assert not trainer._shares_prompts and trainer._piece_cost() is None


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_decoding_keeps_every_row_and_draws_what_hfs_loop_draws(temperature):
    from rft_cli.generation import neutral_generation_defaults, sampling_config

    tokenizer = build_char_tokenizer()
    model = _phi3(tokenizer).eval()
    ids, attn, _ = _rows(len(tokenizer))
    prompt_lens = torch.tensor([[4], [9], [14]]).repeat_interleave(2, dim=0)
    attn = (torch.arange(14) >= 14 - prompt_lens).long()  # left-padded prompts of 4, 9 and 14
    ids = ids[:, :14] * attn
    config = sampling_config(model, tokenizer, max_new_tokens=8, temperature=temperature)
    config.eos_token_id = [*config.eos_token_id, *range(20, 50)]  # answers end at different steps
    outs = []
    for custom in (None, _decode_dropping_ended_rows):
        torch.manual_seed(0)
        with torch.inference_mode(), neutral_generation_defaults(model):
            outs.append(
                model.generate(
                    input_ids=ids,
                    attention_mask=attn,
                    generation_config=config,
                    custom_generate=custom,
                )
            )
    assert torch.equal(outs[0], outs[1])
