"""`generate`'s decoding loop drops rows that have ended, and draws exactly what HF's own loop draws.

The story (issue 14): HF's loop computes every row of the batch until the last answer ends; on the
arith recipe half the answers end after ~24 tokens and the rest run to ~50, so a third of the
sampling forwards were spent on answers that had already ended. Our loop (`custom_generate`)
lets them leave the batch; everything else about the draw must stay as it was.
"""

from __future__ import annotations

import pytest
import torch

from rft_cli.generation import (
    _decode_dropping_ended_rows,
    load_model_for_inference,
    neutral_generation_defaults,
    rows_can_be_selected,
    sampling_config,
)
from rft_cli.tiny import TINY_FAMILIES
from rft_cli.training.rollouts import encode_prompts

PROMPTS = [
    {"messages": [{"role": "user", "content": text}]}
    for text in ("1+2=", "a much longer prompt: 3+4=", "9", "12+30=", "x")
]


def _load(folder: str):
    model, tokenizer = load_model_for_inference(folder)
    return model, tokenizer


def _generate(model, ids, mask, config, custom, seed=0):
    """Token ids generated, and the batch size of every forward `generate` made."""
    batches = []
    hook = model.register_forward_pre_hook(
        lambda m, args, kwargs: batches.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        torch.manual_seed(seed)
        with neutral_generation_defaults(model):
            out = model.generate(
                input_ids=ids, attention_mask=mask, generation_config=config, custom_generate=custom
            )
    finally:
        hook.remove()
    return out, batches


def with_many_stop_ids(config):
    """`config` stopping at 40 more ids, so that a random model's answers end at different steps."""
    config.eos_token_id = [*config.eos_token_id, *range(20, 60)]
    return config


def _early_stopping_config(model, tokenizer, temperature: float, top_p: float = 1.0):
    return with_many_stop_ids(
        sampling_config(model, tokenizer, max_new_tokens=16, temperature=temperature, top_p=top_p)
    )


# Each family's cache at one sampling setting (temperature and top-p both on), and every setting on
# a plain attention cache and the hybrid attention+SSM one: what a family changes (the cache) and
# what a setting changes (the logits processors, the random draws) meet in no other place.
DECODE_CASES = [
    *((family, 0.7, 0.8) for family in TINY_FAMILIES),
    *((family, t, p) for family in ("llama", "falcon_h1") for t, p in ((1.0, 1.0), (0.0, 1.0))),
]


@pytest.mark.parametrize(("family", "temperature", "top_p"), DECODE_CASES)
def test_our_loop_draws_what_hfs_loop_draws_with_fewer_rows(family, temperature, top_p, family_dir):
    model, tokenizer = _load(family_dir(family))
    ids, mask = encode_prompts(tokenizer, PROMPTS * 4, 32, torch.device("cpu"))
    config = _early_stopping_config(model, tokenizer, temperature, top_p)
    theirs, their_batches = _generate(model, ids, mask, config, None)
    ours, our_batches = _generate(model, ids, mask, config, _decode_dropping_ended_rows)
    assert torch.equal(ours, theirs)
    assert set(their_batches) == {len(ids)}
    # the prefill computes each of the 5 distinct prompts once; then the rows not yet ended
    not_ended = _rows_not_ended(theirs[:, ids.shape[1] :], config.eos_token_id)
    assert our_batches == [len(PROMPTS), *not_ended[1:]]


def test_only_cache_layers_whose_every_row_state_is_selected_let_rows_leave():
    """Issue 25: the check was `isinstance(layer, DynamicLayer)`, which Falcon-H1's hybrid layer
    passes while `batch_select_indices` selected only its keys and values, not its SSM state
    ("Expected size 15 but got size 11"). Exact types now, whose `reorder_cache` selects all."""
    from transformers.cache_utils import (
        DynamicCache,
        DynamicLayer,
        DynamicSlidingWindowLayer,
        LinearAttentionAndFullAttentionLayer,
    )

    class Wider(DynamicLayer):
        """A layer type rft has not checked (it may keep more per row)."""

    cache = DynamicCache()
    for layers, selectable in (
        ([DynamicLayer(), DynamicSlidingWindowLayer(sliding_window=8)], True),
        ([LinearAttentionAndFullAttentionLayer(), DynamicLayer()], True),
        ([DynamicLayer(), Wider()], False),
    ):
        cache.layers = layers
        assert rows_can_be_selected(cache) is selectable


def test_a_batch_without_repeated_prompts_is_prefilled_whole(family_dir):
    model, tokenizer = _load(family_dir("llama"))
    ids, mask = encode_prompts(tokenizer, PROMPTS, 32, torch.device("cpu"))
    config = _early_stopping_config(model, tokenizer, 1.0)
    theirs, _ = _generate(model, ids, mask, config, None)
    ours, our_batches = _generate(model, ids, mask, config, _decode_dropping_ended_rows)
    assert torch.equal(ours, theirs) and our_batches[0] == len(PROMPTS)


def _rows_not_ended(generated, stop_ids):
    """The batch of each forward if ended rows leave: all rows, then those whose first k tokens hold no stop id."""
    stopped = torch.isin(generated, torch.tensor(stop_ids)).long().cumsum(dim=1) > 0
    return [len(generated)] + [
        int((~stopped[:, k - 1]).sum()) for k in range(1, generated.shape[1])
    ]


def test_a_stopping_rule_our_loop_does_not_know_keeps_hfs_loop(tiny_model_dir):
    """What our loop does not do itself (here: a time limit) is HF's loop, with all rows throughout."""
    model, tokenizer = _load(tiny_model_dir)
    ids, mask = encode_prompts(tokenizer, PROMPTS * 4, 32, torch.device("cpu"))
    config = _early_stopping_config(model, tokenizer, 1.0)
    config.max_time = 600.0
    theirs, _ = _generate(model, ids, mask, config, None)
    ours, batches = _generate(model, ids, mask, config, _decode_dropping_ended_rows)
    assert torch.equal(ours, theirs) and set(batches) == {len(ids)}


def test_only_the_neutral_processors_are_left_out(tiny_model_dir):
    """min_p 0 and empty suppress lists change no score, so our loop skips them; any other stays."""
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        SuppressTokensAtBeginLogitsProcessor,
        SuppressTokensLogitsProcessor,
        TemperatureLogitsWarper,
    )

    from rft_cli.generation import _without_no_ops

    neutral = [
        SuppressTokensLogitsProcessor([]),
        SuppressTokensAtBeginLogitsProcessor([], 3),
        MinPLogitsWarper(0.0),
    ]
    working = [
        SuppressTokensLogitsProcessor([5]),
        SuppressTokensAtBeginLogitsProcessor([5], 3),
        MinPLogitsWarper(0.1),
        TemperatureLogitsWarper(0.7),
    ]
    assert _without_no_ops([*neutral, *working]) == working
    scores, ids = torch.randn(3, 40), torch.zeros(3, 4, dtype=torch.long)
    for processor in neutral:
        assert torch.equal(processor(ids, scores), scores)
