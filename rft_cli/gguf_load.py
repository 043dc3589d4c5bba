"""A GGUF file as a model source: converted once into a plain Hugging Face folder in the cache.

transformers reads GGUF (`from_pretrained(folder, gguf_file=name)`) and dequantizes it, but marks
the model quantized (`hf_quantizer`, `config.quantization_config`), so it refuses
`save_pretrained` and training. rft rebuilds a plain model from its config and weights and saves
it, with the tokenizer, chat template and generation config the file describes, under
`$RFT_HOME/cache/gguf/<sha256>/`; every later load of the same file is a safetensors load.

    folder = hf_folder("SmolLM2-135M-Instruct.Q4_1.gguf")     # converts on the first call only
    AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rft_cli.config import rft_home
from rft_cli.errors import ConfigError, RftError

MARKER = "rft_gguf.json"  # written last: a folder without it is an interrupted conversion
_LAYOUT = 2  # bump when the converted folder's contents change, so old caches convert again

# GGUF names transformers' reader spells differently (its own model_type names).
_ARCH_ALIASES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss"}
# Read by transformers, but not decoder-only causal LMs, which is what rft trains.
_NOT_CAUSAL = {"t5", "t5encoder", "umt5"}
_DIGITS_THEN_GPT2 = {"smollm"}  # llama.cpp pre-splits: each digit alone, then GPT-2's regex


def is_gguf_file(name: str | Path) -> bool:
    """Whether `name` is an existing file ending in `.gguf`."""
    path = Path(str(name)).expanduser()
    return path.suffix.lower() == ".gguf" and path.is_file()


def cache_root() -> Path:
    """Where converted GGUF files live: `$RFT_HOME/cache/gguf`."""
    return rft_home() / "cache" / "gguf"


def hf_folder(path: str | Path) -> Path:
    """The Hugging Face folder converted from the GGUF file at `path` (converting it the first time).

    The cache is keyed by the file's sha256, so a changed file converts again and a copy of the
    same file elsewhere reuses the folder. Raises ConfigError for a file transformers cannot read.
    """
    source = Path(path).expanduser().resolve()
    digest = file_sha256(source)
    folder = cache_root() / digest[:24]
    if _is_converted(folder):
        return folder
    partial = cache_root() / f".{digest[:24]}.{os.getpid()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        convert(source, partial, digest)
        _publish(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks (0.14 s for a 98 MB file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_converted(folder: Path) -> bool:
    try:
        meta = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("layout") == _LAYOUT


def _publish(partial: Path, folder: Path) -> None:
    """Move a finished conversion into place; a stale or older one there is replaced."""
    if folder.exists():
        if _is_converted(folder):  # another process converted the same file meanwhile
            return
        shutil.rmtree(folder, ignore_errors=True)
    try:
        os.replace(partial, folder)
    except OSError:
        if not _is_converted(folder):  # lost a race to a process that finished first: use its copy
            raise


def convert(source: Path, target: Path, digest: str = "") -> None:
    """Write the GGUF at `source` as a plain float32 Hugging Face folder at `target`."""
    started = time.perf_counter()
    header = read_header(source)
    check_supported(source, header.architecture, header.types)
    tokenizer, model = _load_with_transformers(source)
    _split_like_llama_cpp(tokenizer, header.pre)
    plain = plain_model(model)
    try:
        target.mkdir(parents=True)
        plain.save_pretrained(str(target))
        tokenizer.save_pretrained(str(target))
    except OSError as exc:
        raise RftError(
            f"{target.parent}: cannot write the converted model ({exc}); it needs about 4 bytes "
            "per parameter: free space there or point RFT_HOME elsewhere"
        ) from None
    meta = {
        "layout": _LAYOUT,
        "source": str(source),
        "sha256": digest or file_sha256(source),
        "bytes": source.stat().st_size,
        "architecture": header.architecture,
        "tensor_types": header.types,
        "tokenizer_pre": header.pre,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (target / MARKER).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


@dataclass
class Header:
    """What rft reads from a GGUF before converting it."""

    architecture: str
    types: dict[str, int]  # ggml tensor type -> how many tensors use it
    pre: str | None  # tokenizer.ggml.pre: llama.cpp's name for how text is split before BPE


def read_header(path: Path) -> Header:
    """The file's architecture, tensor types and tokenizer pre-split name."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        architecture = str(reader.fields["general.architecture"].contents())
    except (ValueError, KeyError, OSError) as exc:
        raise ConfigError(f"{path}: not a readable GGUF file ({_first_line(exc)})") from None
    types: dict[str, int] = {}
    for tensor in reader.tensors:
        types[tensor.tensor_type.name] = types.get(tensor.tensor_type.name, 0) + 1
    pre = reader.fields.get("tokenizer.ggml.pre")
    return Header(architecture, types, str(pre.contents()) if pre is not None else None)


def _split_like_llama_cpp(tokenizer: Any, pre: str | None) -> None:
    """Split text as llama.cpp does for pre-splits transformers' reader does not know.

    llama.cpp's `smollm` puts each digit apart, then applies GPT-2's split, as SmolLM's own
    tokenizer does; transformers' reader leaves GPT-2's split alone, which can merge digits.
    """
    if pre not in _DIGITS_THEN_GPT2:
        return
    from tokenizers import pre_tokenizers

    backend = tokenizer.backend_tokenizer
    if type(backend.pre_tokenizer).__name__ != "ByteLevel":
        return  # transformers already set a split of its own
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )


def supported_architectures() -> list[str]:
    """GGUF architectures transformers reads into a causal LM (its names)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    names = set(GGUF_SUPPORTED_ARCHITECTURES)
    try:  # transformers 5.x added a second reader for a few architectures
        from transformers.integrations.gguf import GGUF_ARCHS

        names |= set(GGUF_ARCHS)
    except ImportError:
        pass
    return sorted(names - {"general", "tokenizer"} - _NOT_CAUSAL)


def supported_types() -> list[str]:
    """ggml tensor types the `gguf` package dequantizes: each is tried on one zero block."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    names = []
    for qtype in GGMLQuantizationType:
        if qtype not in GGML_QUANT_SIZES:
            continue
        try:
            dequantize(np.zeros((1, GGML_QUANT_SIZES[qtype][1]), dtype=np.uint8), qtype)
        except NotImplementedError:
            continue
        names.append(qtype.name)
    return names


def check_supported(path: Path, architecture: str, types: dict[str, int]) -> None:
    """One ConfigError naming what is supported, for an architecture or tensor types rft cannot load."""
    name = _ARCH_ALIASES.get(architecture, architecture)
    problems = []
    if name not in supported_architectures():
        problems.append(
            f"architecture {architecture!r} is not one transformers reads into a causal LM "
            f"(supported: {', '.join(supported_architectures())}; rft's tests cover llama)"
        )
    unknown = sorted(set(types) - set(supported_types()))
    if unknown:
        problems.append(
            f"tensor type(s) {', '.join(unknown)} cannot be dequantized "
            f"(supported: {', '.join(supported_types())})"
        )
    if problems:
        raise ConfigError(
            f"{path}: {'; '.join(problems)}; use another GGUF of this model or its Hugging Face folder"
        )


def _load_with_transformers(source: Path) -> tuple[Any, Any]:
    """The tokenizer and the dequantized (float32, still marked quantized) model of a GGUF file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, name = str(source.parent), source.name
    options: dict[str, Any] = {}
    try:  # transformers >= 5 can keep GGUF blocks packed; training needs dense weights
        from transformers import GgufConfig

        options["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older versions always dequantize
        pass
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(
            where,
            gguf_file=name,
            dtype=torch.float32,
            **options,
        )
    except (ValueError, NotImplementedError, KeyError, OSError, RuntimeError) as exc:
        raise ConfigError(
            f"{source}: transformers cannot load this GGUF file ({_first_line(exc)}); "
            "use a Hugging Face model folder instead"
        ) from None
    return tokenizer, model


def plain_model(model: Any) -> Any:
    """The same network and weights as an ordinary (not quantized) model, which saves and trains."""
    import torch
    from transformers import AutoModelForCausalLM

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config = type(model.config).from_dict(config)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ConfigError(
            f"the GGUF's weights do not fill a {type(plain).__name__}: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}"
        )
    plain.tie_weights()
    plain.generation_config = model.generation_config
    return plain


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
