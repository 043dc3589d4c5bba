"""`rft export --gguf`: a trained model as one GGUF file for llama.cpp, Ollama and LM Studio.

Written with the `gguf` package's GGUFWriter in llama.cpp's layout for the Llama architecture:
its tensor names (`token_embd`, `blk.N.attn_q`, ..., `output` only when the head is not tied to
the embeddings), the q/k rows reordered the way llama.cpp's rotary embedding reads them (each
head's two halves interleaved; transformers' GGUF reader undoes it), norms in float32, the other
matrices in float16 or q8_0, and the tokenizer as `tokenizer.ggml.*` metadata with the chat
template and the EOS/BOS/pad ids.

    report = export_gguf("runs/arith", "arith.gguf", quantization="q8_0")   # a run means its final/
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rft_cli.errors import ConfigError, RftError

TYPES = ("f16", "q8_0")
ARCHITECTURES = ("llama",)  # transformers model_type -> GGUF architecture of the same name
_Q8_BLOCK = (
    32  # q8_0 stores rows in blocks of 32 values; other rows stay float16, as llama.cpp does
)


@dataclass
class ExportReport:
    """What `export_gguf` wrote."""

    path: str
    source: str
    architecture: str
    quantization: str
    tensors: int
    quantized_tensors: int
    parameters: int
    bytes: int
    tokenizer_pre: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_gguf(
    model_path: str | Path, out: str | Path, quantization: str = "f16", force: bool = False
) -> ExportReport:
    """Write the model at `model_path` (run folder, checkpoint, LoRA checkpoint, model folder or .gguf)
    as the GGUF file `out`. Refuses to replace an existing `out` unless `force`."""
    from rft_cli.generation import load_model_for_inference

    started = time.perf_counter()
    out = Path(out)
    _check_target(out, quantization, force)
    model, tokenizer = load_model_for_inference(model_path, dtype=_float32(), gpu=False)
    check_exportable(model.config, model_path)
    vocab = tokenizer_metadata(tokenizer, model.config.vocab_size, model_path)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        counts = _write(model, vocab, partial, quantization, Path(str(model_path)).name)
        os.replace(partial, out)
    except OSError as exc:
        raise RftError(f"{out}: cannot write the GGUF file ({exc})") from None
    finally:
        if partial.exists():  # False, not an error, when the folder cannot exist
            partial.unlink()
    return ExportReport(
        path=str(out),
        source=str(model_path),
        architecture=model.config.model_type,
        quantization=quantization,
        tensors=counts[0],
        quantized_tensors=counts[1],
        parameters=sum(p.numel() for p in model.parameters()),
        bytes=out.stat().st_size,
        tokenizer_pre=vocab["pre"],
        seconds=round(time.perf_counter() - started, 1),
    )


def _float32() -> Any:
    import torch

    return torch.float32


def _check_target(out: Path, quantization: str, force: bool) -> None:
    if quantization not in TYPES:
        raise ConfigError(f"--type {quantization!r}: use one of {', '.join(TYPES)}")
    if out.is_dir():
        raise ConfigError(f"{out}: is a folder; give the path of the .gguf file to write")
    if out.exists() and not force:
        raise ConfigError(f"{out}: already exists; pass --force to replace it")


def check_exportable(config: Any, where: str | Path) -> None:
    """ConfigError for a model this exporter cannot write in llama.cpp's layout, naming why."""
    kind = config.model_type
    if kind not in ARCHITECTURES:
        raise ConfigError(
            f"{where}: GGUF export supports the {', '.join(ARCHITECTURES)} architecture, not {kind!r} "
            f"(SmolLM2, Llama 2 and 3 without rope scaling, TinyLlama are Llama)"
        )
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ConfigError(
            f"{where}: a Llama with bias terms in its linear layers cannot be exported"
        )
    if config.hidden_act != "silu":
        raise ConfigError(f"{where}: llama.cpp's Llama uses SiLU, this model {config.hidden_act!r}")
    rope = _rope(config)
    if rope.get("rope_type", "default") not in ("default", "linear"):
        raise ConfigError(
            f"{where}: rope scaling {rope['rope_type']!r} is not supported by this exporter "
            "(default and linear are)"
        )


def _rope(config: Any) -> dict[str, Any]:
    """transformers 5 keeps rope settings in `rope_parameters`, 4.x in `rope_theta`/`rope_scaling`."""
    rope = dict(
        getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    )
    rope.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    rope.setdefault("rope_type", rope.pop("type", "default"))
    return rope


# -- the tokenizer ------------------------------------------------------------------------------


def tokenizer_metadata(tokenizer: Any, vocab_size: int, where: str | Path) -> dict[str, Any]:
    """tokenizer.ggml.* for a byte-level BPE tokenizer: tokens by id, their types, merges, ids.

    Ids the embedding has but the tokenizer does not get `[PADn]` tokens of type UNUSED, as
    llama.cpp's converter writes them.
    """
    import gguf

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    pre = _pre_tokenizer_name(state, where)
    ids = dict(state["model"]["vocab"])
    kinds = {}
    for added in state["added_tokens"]:
        ids[added["content"]] = added["id"]
        kinds[added["id"]] = (
            gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
        )
    if max(ids.values()) >= vocab_size:
        raise ConfigError(
            f"{where}: the tokenizer has ids up to {max(ids.values())}, the model's embedding only {vocab_size}"
        )
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [gguf.TokenType.UNUSED] * vocab_size
    for token, index in ids.items():
        tokens[index], types[index] = token, kinds.get(index, gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    return {
        "pre": pre,
        "tokens": tokens,
        "types": [int(t) for t in types],
        "merges": merges,
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "pad": tokenizer.pad_token_id,
        "add_bos": _adds_bos(tokenizer),
        "chat_template": tokenizer.chat_template,
    }


def _pre_tokenizer_name(state: dict[str, Any], where: str | Path) -> str:
    """llama.cpp's name (`tokenizer.ggml.pre`) for how this tokenizer splits text before BPE."""
    model, steps = state["model"], _steps(state.get("pre_tokenizer"))
    byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
    if model.get("type") != "BPE" or len(byte_level) != 1:
        kind = model.get("type", "?") + ("" if byte_level else " without byte-level pre-tokenizer")
        raise ConfigError(
            f"{where}: GGUF export supports byte-level BPE tokenizers (SmolLM, Llama 3, Qwen, GPT-2), "
            f"not {kind}"
        )
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and byte_level[0].get("use_regex", True):
        return "gpt-2"  # llama.cpp refuses "gpt2" here (that is the tokenizer model's name)
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"  # llama.cpp: each digit alone, then GPT-2's split
    if kinds == ["Split", "ByteLevel"] and not byte_level[0].get("use_regex", True):
        name = _split_name(steps[0].get("pattern", {}).get("Regex"))
        if name is not None:
            return name
    raise ConfigError(
        f"{where}: this tokenizer splits text as {kinds}, which has no llama.cpp pre-tokenizer "
        "name rft knows (known: GPT-2's, SmolLM's, and the Split regexes of Llama 3, Qwen 2 and "
        "others that transformers' GGUF reader lists)"
    )


def _steps(pre: dict[str, Any] | None) -> list[dict[str, Any]]:
    if pre is None:
        return []
    return list(pre["pretokenizers"]) if pre.get("type") == "Sequence" else [pre]


def _split_name(regex: str | None) -> str | None:
    """The llama.cpp name transformers' GGUF reader maps to this split regex (so it reads back alike)."""
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (
            GGUF_PRE_TOKENIZER_SPLITS,
        )
    except ImportError:
        return None
    return next((name for name, split in GGUF_PRE_TOKENIZER_SPLITS.items() if split == regex), None)


def _adds_bos(tokenizer: Any) -> bool:
    """Whether encoding plain text starts with BOS (llama.cpp then adds it too)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


# -- the file -----------------------------------------------------------------------------------


def _write(
    model: Any, vocab: dict[str, Any], path: Path, quantization: str, name: str
) -> tuple[int, int]:
    """Write metadata and tensors; returns (tensors written, tensors stored as q8_0)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    _add_model_metadata(writer, model.config, quantization, name)
    _add_tokenizer(writer, vocab)
    written = quantized = 0
    for gguf_name, data in _llama_tensors(model):
        qtype = _tensor_type(data, quantization)
        if qtype == gguf.GGMLQuantizationType.Q8_0:
            writer.add_tensor(gguf_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
            quantized += 1
        else:
            writer.add_tensor(gguf_name, data.astype("float16" if data.ndim == 2 else "float32"))
        written += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return written, quantized


def _tensor_type(data: Any, quantization: str) -> Any:
    import gguf

    if quantization == "q8_0" and data.ndim == 2 and data.shape[-1] % _Q8_BLOCK == 0:
        return gguf.GGMLQuantizationType.Q8_0
    return gguf.GGMLQuantizationType.F16 if data.ndim == 2 else gguf.GGMLQuantizationType.F32


def _add_model_metadata(writer: Any, config: Any, quantization: str, name: str) -> None:
    import gguf

    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = _rope(config)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    if head_dim * heads != config.hidden_size:  # llama.cpp assumes hidden / heads otherwise
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    if rope["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    file_type = (
        gguf.LlamaFileType.MOSTLY_Q8_0 if quantization == "q8_0" else gguf.LlamaFileType.MOSTLY_F16
    )
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_tokenizer(writer: Any, vocab: dict[str, Any]) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab["pre"])
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    for key, add in (
        ("bos", writer.add_bos_token_id),
        ("eos", writer.add_eos_token_id),
        ("pad", writer.add_pad_token_id),
    ):
        if vocab[key] is not None:
            add(vocab[key])
    writer.add_add_bos_token(vocab["add_bos"])
    if vocab["chat_template"]:
        writer.add_chat_template(vocab["chat_template"])


def _llama_tensors(model: Any) -> Any:
    """(GGUF name, float32 numpy array) for each weight, q/k rows in llama.cpp's rotary order."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = config.tie_word_embeddings
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reads the output layer from token_embd when `output` is absent
        base, suffix = hf_name.rsplit(".", 1)
        gguf_name = names.get_name(base)
        if gguf_name is None:
            raise ConfigError(f"{hf_name}: no llama.cpp tensor for this weight")
        data = tensor.detach().cpu().float().numpy()
        if hf_name.endswith("self_attn.q_proj.weight"):
            data = rotary_rows(data, config.num_attention_heads)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            data = rotary_rows(data, config.num_key_value_heads)
        yield f"{gguf_name}.{suffix}", data


def rotary_rows(weight: Any, heads: int) -> Any:
    """Reorder a q/k projection's rows for llama.cpp: per head, rows [a0..an, b0..bn] become
    [a0, b0, a1, b1, ...], since its rotary embedding rotates adjacent pairs where transformers
    rotates the two halves of a head."""
    half = weight.shape[0] // heads // 2
    pairs = weight.reshape(heads, 2, half, *weight.shape[1:])
    return pairs.swapaxes(1, 2).reshape(weight.shape)
