"""Small GGUF files for tests, written with the `gguf` package independently of `rft export`.

A tiny Llama over the hub-like byte-level BPE tokenizer (ChatML, `<|im_end|>` EOS), the shape of
SmolLM2-135M-Instruct's file: llama.cpp's tensor names, its rotary permutation of the q/k rows,
`tokenizer.ggml.*` metadata and the chat template. The tensor names and the permutation are
spelled out here rather than taken from `rft_cli.gguf_export`, so the loader's tests do not test
the exporter against itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Wide enough for q8_0 (rows are cut into blocks of 32 values).
TINY_LLAMA_SIZES = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
}

_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def build_tiny_llama(seed: int = 0) -> tuple[Any, Any]:
    """(model, tokenizer): a random tiny Llama over the hub-like BPE tokenizer, tied embeddings."""
    from rft_cli.tiny import random_causal_lm
    from tests.hub_like import build_bpe_tokenizer

    tokenizer = build_bpe_tokenizer()
    model = random_causal_lm(
        "llama",
        tokenizer,
        seed=seed,
        bos_token_id=tokenizer.pad_token_id,
        **TINY_LLAMA_SIZES,
    )
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _rotary_permute(weight: Any, heads: int) -> Any:
    """llama.cpp's row order for q/k: each head's two rotary halves interleaved."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _gguf_name(hf_name: str) -> str | None:
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return None  # tied to the embeddings: llama.cpp reuses token_embd
    _, _, layer, rest = hf_name.split(".", 3)
    return f"blk.{layer}.{_LAYER_NAMES[rest.removesuffix('.weight')]}.weight"


def write_gguf(
    model: Any, tokenizer: Any, path: str | Path, quantize: str | None = None, pre: str = "gpt-2"
) -> Path:
    """Write `model` (a tied Llama) and its byte-level BPE tokenizer as a GGUF file.

    Weights are float32; `quantize="Q8_0"` stores the 2-D ones in q8_0 blocks (as a real file would).
    `pre` is `tokenizer.ggml.pre` (SmolLM2's file says `smollm`).
    """
    import gguf
    import numpy as np

    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-test-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    _add_tokenizer(writer, tokenizer, pre)
    for hf_name, tensor in model.state_dict().items():
        name = _gguf_name(hf_name)
        if name is None:
            continue
        data = tensor.detach().float().numpy()
        if ".attn_q." in name:
            data = _rotary_permute(data, config.num_attention_heads)
        if ".attn_k." in name:
            data = _rotary_permute(data, config.num_key_value_heads)
        if quantize and data.ndim == 2:
            qtype = gguf.GGMLQuantizationType[quantize]
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def _add_tokenizer(writer: Any, tokenizer: Any, pre: str) -> None:
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = dict(state["model"]["vocab"])
    special = {added["content"] for added in state["added_tokens"] if added["special"]}
    for added in state["added_tokens"]:
        vocab[added["content"]] = added["id"]
    tokens = sorted(vocab, key=vocab.get)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token in special else 1 for token in tokens])  # 3: control
    merges = state["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tokenizer.pad_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(tokenizer.chat_template)
