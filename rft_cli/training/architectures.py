"""Which model architectures `rft train` can train, decided from the model's config before any weight loads.

`rft` trains decoder-only causal language models through `AutoModelForCausalLM`. The families in
TESTED_FAMILIES run the whole pipeline in the test suite (tests/test_architectures.py); any other
causal LM is attempted, and a model that cannot work (an encoder-decoder, a model with no causal-LM
class, a checkpoint without its language-model head) is refused with a message naming it.
"""

from __future__ import annotations

from typing import Any

from rft_cli.errors import ConfigError

# transformers `model_type`s whose tiny versions pass tests/test_architectures.py (KL 0 at step 1,
# log-probs equal to a plain forward, SFT + PPO + GRPO + LoRA + resume + `rft eval`).
TESTED_FAMILIES = (
    "llama",
    "qwen2",
    "qwen3",
    "mistral",
    "gemma2",
    "gemma3_text",
    "phi3",
    "granite",
    "olmo2",
    "cohere",
    "falcon_h1",
)

_HEAD_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
# Model types with Mamba mixers, whose `out_proj` and `conv1d` peft refuses to give LoRA adapters
# (peft 0.21 `_check_lora_target_modules_mamba`); `all-linear` would name them.
_MAMBA_MODEL_TYPES = {"falcon_h1", "mamba", "mamba2", "falcon_mamba", "nemotron_h"}


def lora_exclusions(model_type: str | None, target_modules: Any) -> list[str] | None:
    """The modules `model.lora.target_modules: all-linear` leaves out on this model type (peft's
    `exclude_modules`): a Mamba mixer's `out_proj` and `conv1d`. None: nothing to leave out."""
    if target_modules == "all-linear" and model_type in _MAMBA_MODEL_TYPES:
        return ["out_proj", "conv1d"]
    return None


def check_architecture(source: str, key: str = "model.name") -> None:
    """Raise ConfigError when the model at `source` (a folder or hub id) cannot be trained; reads only its config.

    A hub id whose config cannot be fetched (offline, not cached) passes: loading the model
    reports that with the same source, and `--dry-run` stays usable offline.
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source)
    except OSError:
        return
    except ValueError as exc:  # an unknown model_type: transformers has no code for it
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"{key}: cannot read the config of {source!r} ({reason}); rft trains architectures "
            "that transformers knows without custom code"
        ) from None
    problem = architecture_problem(config)
    if problem is not None:
        raise ConfigError(f"{key}: {source}: {problem}")


def architecture_problem(config: Any) -> str | None:
    """Why a model with this config cannot be trained by rft, or None."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    name = _architecture_name(config)
    advice = "give a decoder-only causal LM such as Llama, Qwen, Gemma, Mistral or Phi"
    if getattr(config, "is_encoder_decoder", False):
        return f"{name} is an encoder-decoder model; {advice}"
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        return f"{name} (model_type {config.model_type!r}) has no causal-LM class in transformers; {advice}"
    architectures = getattr(config, "architectures", None) or []
    if architectures and not any(a.endswith(_HEAD_SUFFIXES) for a in architectures):
        return (
            f"{name} is a checkpoint without a language-model head (a base, classifier or reward model), "
            f"whose head would start random; {advice}"
        )
    return None


def _architecture_name(config: Any) -> str:
    architectures = getattr(config, "architectures", None)
    return architectures[0] if architectures else type(config).__name__.removesuffix("Config")
