"""Load the model and tokenizer a run config names: a hub id, a local folder, or a tiny offline model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rft_cli.config import ModelSettings
from rft_cli.errors import ConfigError


def resolve_dtype(name: str) -> Any:
    """`auto` is bfloat16 on a GPU that supports it, else float32 (CPU training is float32)."""
    import torch

    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, name)


def device() -> Any:
    """The device a single-process run trains on (the first GPU when present)."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_tokenizer(settings: ModelSettings, path: str | Path | None = None) -> Any:
    """The tokenizer of `path` (a checkpoint), else of the configured model; left padding for generation."""
    from transformers import AutoTokenizer

    from rft_cli.tiny import build_char_tokenizer

    if path is None and settings.tiny is not None:
        tokenizer = build_char_tokenizer()
    else:
        source = str(path or settings.tokenizer or settings.name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model.tokenizer: cannot load a tokenizer from {source!r} ({exc}); give a local folder or a hub id") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ConfigError(f"model: the tokenizer of {path or settings.name!r} has no chat template; use an instruct/chat model or set model.tokenizer")
    return tokenizer


def load_model(settings: ModelSettings, tokenizer: Any, path: str | Path | None = None, seed: int = 0,
               trainable: bool = True) -> Any:
    """The causal LM at `path` (a checkpoint), else the configured one (tiny models built from a config)."""
    from transformers import AutoModelForCausalLM

    from rft_cli.tiny import build_tiny_model

    dtype = resolve_dtype(settings.dtype)
    if path is None and settings.tiny is not None:
        model = build_tiny_model(tokenizer, settings.tiny, seed=seed).to(dtype)
    else:
        source = str(path or settings.name)
        try:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model.name: cannot load a model from {source!r} ({exc}); give a local folder or a hub id") from None
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if trainable and settings.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return model.to(device())


def apply_lora(model: Any, settings: ModelSettings) -> Any:
    """Wrap `model` with peft LoRA adapters when `model.lora` is set."""
    if settings.lora is None:
        return model
    from peft import LoraConfig, get_peft_model

    lora = settings.lora
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def save_pretrained(model: Any, tokenizer: Any, folder: str | Path) -> None:
    """Save HF files at the top of `folder`; LoRA adapters are merged so the folder loads directly."""
    to_save = model
    if hasattr(model, "merge_and_unload"):
        import copy

        to_save = copy.deepcopy(model).merge_and_unload()
    to_save.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
