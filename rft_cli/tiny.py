"""Offline building blocks: a character-level tokenizer with a chat template, and tiny models.

Tests and the built-in CPU recipe use these instead of downloading anything: the tokenizer is
built in code (printable ASCII, one token per character) and the model from an architecture
config. Both save with `save_pretrained` and load back with the `Auto*` classes, like a hub model.
"""

from __future__ import annotations

import string
from typing import Any

SPECIAL_TOKENS = [
    "<|pad|>",
    "<|unk|>",
    "<|bos|>",
    "<|end|>",
    "<|system|>",
    "<|developer|>",
    "<|user|>",
    "<|assistant|>",
]

# Each turn is "<|role|>content<|end|>"; generation stops at <|end|> (the EOS token). The
# {% generation %} markers let TRL compute an assistant-only loss on conversational data.
# Tools, for a model this small, are listed as signatures in a first system turn
# ("<|system|>tools: lookup(key)<|end|>"), an assistant's calls follow its text as
# <tool_call>{"name": ..., "arguments": {...}}</tool_call> (the Qwen/Hermes form the parsers read),
# and a tool's result is a "<|tool|>" turn (plain characters: no new special token, so the
# vocabulary, and every model built on it, stays as it was). A conversation without tools renders
# exactly as before they were added.
CHAT_TEMPLATE = (
    "{% if tools %}{{ '<|system|>tools: ' }}"
    "{% for tool in tools %}{% set props = (tool.function.parameters or {}).properties or {} %}"
    "{{ tool.function.name + '(' + (props.keys() | join(', ')) + ')' }}{% if not loop.last %}{{ '; ' }}{% endif %}"
    "{% endfor %}{{ '<|end|>' }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>' }}{% generation %}{{ message['content'] or '' }}"
    "{% for call in message.get('tool_calls') or [] %}"
    "{{ '<tool_call>' + ({'name': call.function.name, 'arguments': call.function.arguments} | tojson) + '</tool_call>' }}"
    "{% endfor %}{{ '<|end|>' }}{% endgeneration %}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

# Architectures small enough to train on two CPU cores. Sizes are (hidden, layers, heads, mlp).
TINY_ARCHITECTURES: dict[str, dict[str, int]] = {
    "llama-test": {
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 32,
    },
    "llama-1m": {
        "hidden_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 384,
    },
    "llama-4m": {
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "intermediate_size": 768,
    },
}


def build_char_tokenizer(model_max_length: int = 1024) -> Any:
    """A PreTrainedTokenizerFast with one token per printable ASCII character and a chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.printable) - set("\x0b\x0c\r"))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<|pad|>",
        unk_token="<|unk|>",
        bos_token="<|bos|>",
        eos_token="<|end|>",
        model_max_length=model_max_length,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[4:]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def random_causal_lm(
    model_type: str,
    tokenizer: Any,
    *,
    seed: int = 0,
    max_position_embeddings: int = 1024,
    bos_token_id: int | None = None,
    **config: Any,
) -> Any:
    """A randomly initialised causal LM of `model_type` over `tokenizer`'s vocabulary, tied
    embeddings, its config's token ids the tokenizer's (`bos_token_id` defaults to the tokenizer's)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id if bos_token_id is None else bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **config,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(model_config)


def _with_generation_ids(model: Any, tokenizer: Any) -> Any:
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def build_tiny_model(
    tokenizer: Any,
    architecture: str | dict[str, int] = "llama-test",
    seed: int = 0,
    max_position_embeddings: int = 1024,
) -> Any:
    """A randomly initialised LlamaForCausalLM sized by `architecture` (a name or a dict)."""
    sizes = (
        TINY_ARCHITECTURES[architecture] if isinstance(architecture, str) else dict(architecture)
    )
    model = random_causal_lm(
        "llama", tokenizer, seed=seed, max_position_embeddings=max_position_embeddings, **sizes
    )
    return _with_generation_ids(model, tokenizer)


# One tiny model per family users fine-tune (transformers `model_type` -> config overrides), each
# with the quirk that sets it apart from Llama switched on, so a code path that skips the model's
# own head or its multipliers shows up as a nonzero KL between identical policy and reference.
_FAMILY_SIZES = {
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "intermediate_size": 32,
}
TINY_FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {},
    "qwen2": {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1},
    "qwen3": {"head_dim": 8},
    "mistral": {"sliding_window": 8, "head_dim": 8},
    "gemma2": {
        "head_dim": 8,
        "final_logit_softcapping": 0.5,
        "attn_logit_softcapping": 5.0,
        "sliding_window": 8,
        "query_pre_attn_scalar": 8,
    },
    "gemma3_text": {
        "head_dim": 8,
        "final_logit_softcapping": 0.5,
        "sliding_window": 8,
        "query_pre_attn_scalar": 8,
        "layer_types": ["sliding_attention", "full_attention"],
    },
    "phi3": {"sliding_window": 8},
    "granite": {
        "logits_scaling": 0.25,
        "embedding_multiplier": 4.0,
        "residual_multiplier": 0.5,
        "attention_multiplier": 0.3,
    },
    "olmo2": {},
    "cohere": {"logit_scale": 4.0, "use_qk_norm": False},
    # a hybrid: attention and a Mamba-2 mixer in every layer, whose cache holds conv and SSM states
    # beside the keys and values; larger initial weights, so a prompt's state visibly moves logits
    "falcon_h1": {
        "head_dim": 8,
        "mamba_d_ssm": 16,
        "mamba_n_heads": 2,
        "mamba_d_head": 8,
        "mamba_d_state": 8,
        "mamba_chunk_size": 16,
        "mamba_expand": 1,
        "lm_head_multiplier": 0.5,
        "embedding_multiplier": 2.0,
        "initializer_range": 0.2,
    },
}


def build_tiny_family_model(
    tokenizer: Any, family: str, seed: int = 0, max_position_embeddings: int = 1024
) -> Any:
    """A randomly initialised 2-layer causal LM of `family` (a key of TINY_FAMILIES), tied embeddings."""
    model = random_causal_lm(
        family,
        tokenizer,
        seed=seed,
        max_position_embeddings=max_position_embeddings,
        **_FAMILY_SIZES,
        **TINY_FAMILIES[family],
    )
    return _with_generation_ids(model, tokenizer)


def save_tiny_family(path: str, family: str, seed: int = 0) -> str:
    """Build and save a tiny model of `family` and the character tokenizer to `path`; returns the path."""
    tokenizer = build_char_tokenizer()
    build_tiny_family_model(tokenizer, family, seed=seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny(path: str, architecture: str | dict[str, int] = "llama-test", seed: int = 0) -> str:
    """Build and save a tiny model and its tokenizer to `path`; returns the path."""
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, architecture, seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
