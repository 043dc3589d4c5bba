"""Load the model and tokenizer a run config names: a hub id, a local folder, or a tiny offline model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rft_cli.config import ModelSettings
from rft_cli.errors import ConfigError
from rft_cli.generation import resolve_model_path
from rft_cli.tiny import build_char_tokenizer, build_tiny_model


def resolve_dtype(name: str) -> Any:
    """The compute dtype: `auto` is bfloat16 on a GPU that supports it, else float32 (CPU training is float32).

    float16 needs a GPU: its mixed precision relies on loss scaling, which accelerate runs on GPUs only.
    """
    import torch

    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name == "float16" and not torch.cuda.is_available():
        raise ConfigError(
            "model.dtype float16 needs a GPU (fp16 mixed precision scales the loss on the GPU); "
            "use bfloat16 or float32 on a CPU"
        )
    return getattr(torch, name)


def mixed_precision(settings: ModelSettings) -> str:
    """accelerate's `mixed_precision` for the compute dtype: "no", "bf16" or "fp16"."""
    import torch

    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(resolve_dtype(settings.dtype), "no")


def weights_dtype(settings: ModelSettings) -> Any:
    """The dtype weights are held in: float32 for a full fine-tune, the compute dtype under LoRA.

    A full fine-tune keeps float32 master weights and reaches the compute dtype by autocast (as
    TRL's Trainer does with bf16=True): AdamW updating bf16 weights in place rounds ReFT-size steps
    (lr 3e-7) away. The frozen reference is held like the policy, so at step 1 both compute the
    same numbers (KL 0). Under LoRA the frozen base stays in the compute dtype (half the memory);
    peft keeps the adapters, the only trained weights, in float32.
    """
    import torch

    compute = resolve_dtype(settings.dtype)  # refuses float16 without a GPU before any weight loads
    return torch.float32 if settings.lora is None else compute


def device() -> Any:
    """The device a single-process run trains on (the first GPU when present)."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _resolve(name: str | None) -> str:
    """A run folder means its final/ model, as everywhere else in rft."""
    return resolve_model_path(str(name))


def load_tokenizer(settings: ModelSettings, path: str | Path | None = None) -> Any:
    """The tokenizer of `path` (a checkpoint), else of the configured model; left padding for generation."""
    from transformers import AutoTokenizer

    if path is None and settings.tiny is not None:
        tokenizer = build_char_tokenizer()
    else:
        source = str(path or _resolve(settings.tokenizer or settings.name))
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"model.tokenizer: cannot load a tokenizer from {source!r} ({exc}); give a local folder or a hub id"
            ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ConfigError(
            f"model: the tokenizer of {path or settings.name!r} has no chat template; use an instruct/chat model or set model.tokenizer"
        )
    return tokenizer


def load_model(
    settings: ModelSettings,
    tokenizer: Any,
    path: str | Path | None = None,
    seed: int = 0,
    trainable: bool = True,
    dtype: Any = None,
) -> Any:
    """The causal LM at `path` (a checkpoint), else the configured one (tiny models built from a config).

    Weights load in `dtype`, by default `weights_dtype(settings)` (float32 master weights for a full fine-tune).
    """
    from transformers import AutoModelForCausalLM

    dtype = dtype or weights_dtype(settings)
    if path is None and settings.tiny is not None:
        model = build_tiny_model(tokenizer, settings.tiny, seed=seed).to(dtype)
    else:
        source = str(path or _resolve(settings.name))
        try:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"model.name: cannot load a model from {source!r} ({exc}); give a local folder or a hub id"
            ) from None
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

    from rft_cli.training.architectures import lora_exclusions

    lora = settings.lora
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        exclude_modules=lora_exclusions(model.config.model_type, lora.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def save_pretrained(model: Any, tokenizer: Any, folder: str | Path) -> None:
    """Save HF files at the top of `folder`; LoRA adapters are merged so the folder loads directly."""
    to_save = model
    if hasattr(model, "merge_and_unload"):
        import copy

        to_save = copy.deepcopy(model).merge_and_unload()
    to_save.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def write_in_dtype(folder: str | Path, settings: ModelSettings) -> None:
    """Rewrite the model saved in `folder` in the dtype `model.dtype` asks for, when it differs.

    Checkpoints keep float32 master weights (an exact resume); `final/` is what users load and
    share, so it is written in their dtype (bf16 for `model.dtype: bfloat16`).
    """
    import json

    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    wanted = resolve_dtype(settings.dtype)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("dtype", config.get("torch_dtype")) == str(wanted).removeprefix("torch."):
        return
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=wanted)
    for old in [
        *folder.glob("*.safetensors"),
        *folder.glob("*.safetensors.index.json"),
        *folder.glob("pytorch_model*.bin*"),
    ]:
        old.unlink()  # the cast weights are new tensors, and a shard count may change
    model.save_pretrained(str(folder))


def disable_dropout(model: Any) -> None:
    """PPO's ratios assume the same network computes old and new log-probs: no dropout (as ReFT).

    The old pass runs in eval mode and the update in train mode, so every dropout must go, not
    only `nn.Dropout` modules: attention layers keep their rate as a float (`attention_dropout`,
    read only in train mode) and pass it to the attention kernel.
    """
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if "dropout" in name and isinstance(value, float):
                setattr(module, name, 0.0)
