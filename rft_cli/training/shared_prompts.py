"""Forward passes over [prompt | answer] rows that compute each distinct prompt once.

PPO samples `rl.samples_per_prompt` answers per prompt, and its forward passes (the update's and
the reference's) read whole [prompt | answer] rows, so a prompt's tokens would go through the model
once per answer. With the KV cache they need not: the distinct prompts go through once
(`use_cache=True`), their keys and values are copied to the rows that share them (an index_select,
whose backward sums the rows' gradients back onto the prompt), and the answers go through on top of
them, as in decoding. Causal attention means no prompt position sees an answer, so the logits, the
LM head's input and the gradients are those of one pass over the whole rows, to float rounding
(tests/test_shared_prompts.py, on every tiny architecture). It pays when prompts are long against
answers: a 600-token prompt with 8 answers of 300 is 67% prompt tokens, 20% once shared.

    logits, head_input = answer_forward(model, input_ids, attention_mask, response_len, share=True)
"""

from __future__ import annotations

from typing import Any

from rft_cli.generation import (
    distinct_rows,
    lm_head_input,
    rope_depends_on_length,
    rows_can_be_selected,
)


def prompt_groups(input_ids: Any, attention_mask: Any, prompt_width: int) -> tuple[Any, Any]:
    """(one row of each distinct prompt, every row's index into those): rows whose first
    `prompt_width` columns (ids and mask, so padding included) are identical share a prompt."""
    import torch

    return distinct_rows(
        torch.cat([input_ids[:, :prompt_width], attention_mask[:, :prompt_width]], dim=1)
    )


def can_share(model: Any) -> bool:
    """Whether the model's forward can continue from a cache whose rows were copied: every row state
    of its cache is copied (`rows_can_be_selected`), no gradient checkpointing (which turns the
    cache off in training), and a RoPE that does not change with a call's longest position (the
    prompts' pass would use other frequencies than the whole rows': `rope_depends_on_length`)."""
    from transformers.cache_utils import DynamicCache

    if getattr(model, "is_activation_checkpointing", False) or rope_depends_on_length(model):
        return False
    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # a config the cache does not understand: keep the one-pass forward
        return False
    return rows_can_be_selected(cache)


def answer_forward(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    response_len: int,
    share: bool = False,
    head: bool = False,
) -> tuple[Any, Any]:
    """(logits, LM-head input) at the positions that predict the last `response_len` tokens.

    Rows are left-padded prompts then right-padded answers; position ids come from the mask. The
    model's own forward computes the logits, so its head applies (Gemma's softcapping, Granite's
    scaling, Cohere's logit_scale); the LM head's input (the final, normed hidden states) is
    returned when `head` (None otherwise). With `share`, rows with the same prompt compute it once
    (see the module); without, or when no two rows share a prompt, one pass over the whole rows.
    """
    import torch
    from transformers import DynamicCache

    positions = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    prompt_width = input_ids.shape[1] - response_len
    groups = prompt_groups(input_ids, attention_mask, prompt_width) if share else None
    if groups is None or len(groups[0]) == len(input_ids):
        with lm_head_input(model, head) as head_input:
            out = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=positions,
                logits_to_keep=response_len + 1,
                use_cache=False,
            )
        hidden = head_input.value[:, -response_len - 1 : -1] if head else None
        return out.logits[:, -response_len - 1 : -1], hidden
    first, inverse = groups
    cache = DynamicCache(config=model.config)
    with lm_head_input(model, head) as head_input:
        # The distinct prompts; only the last position's logits: it predicts the first answer token.
        prompts = model(
            input_ids=input_ids[first, :prompt_width],
            attention_mask=attention_mask[first, :prompt_width],
            position_ids=positions[first, :prompt_width],
            cache=cache,
            logits_to_keep=1,
            use_cache=True,
        )
        prompt_hidden = head_input.value[:, -1:] if head else None
        cache.reorder_cache(inverse)  # every row gets its prompt's keys and values
        answers = model(
            input_ids=input_ids[:, prompt_width:],
            attention_mask=attention_mask,
            position_ids=positions[:, prompt_width:],
            cache=cache,
            logits_to_keep=response_len,
            use_cache=True,
        )
        answer_hidden = head_input.value[:, :-1] if head else None
    logits = torch.cat([prompts.logits[inverse, -1:], answers.logits[:, :-1]], dim=1)
    hidden = (
        torch.cat([prompt_hidden[inverse], answer_hidden], dim=1)
        if prompt_hidden is not None and answer_hidden is not None
        else None
    )
    return logits, hidden
