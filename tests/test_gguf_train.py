"""Training from a `.gguf` model: the run's checkpoints and final/ are ordinary Hugging Face folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rft_cli.config import load_run_config
from rft_cli.generation import load_model_for_inference
from rft_cli.training.run import train

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-test.yaml"


def _train(tmp_path: Path, gguf: str, *overrides: str):
    config = load_run_config(
        RECIPE, [f"model={{name: {gguf}}}", "sft.max_steps=2", "rl.steps=2", *overrides]
    )
    return train(config, output_dir=tmp_path / "run")


def _is_plain(folder: Path) -> bool:
    config = json.loads((folder / "config.json").read_text())
    return "quantization_config" not in config and (folder / "model.safetensors").is_file()


def test_sft_then_ppo_from_a_gguf_writes_plain_folders(tiny_gguf, tmp_path):
    path, _ = tiny_gguf
    result = _train(tmp_path, path)
    run = result.run_dir
    assert _is_plain(run / "checkpoints" / "sft") and _is_plain(run / "final")
    model, tokenizer = load_model_for_inference(run)
    assert tokenizer.eos_token == "<|im_end|>" and model.config.model_type == "llama"


def test_grpo_with_lora_from_a_gguf_keeps_adapters_loadable(tiny_gguf, tmp_path):
    """TRL's LoRA checkpoints hold adapters over the saved base model, a plain folder too."""
    path, _ = tiny_gguf
    result = _train(tmp_path, path, "rl.algorithm=grpo", "model.lora.r=4", "sft.enabled=false")
    run = result.run_dir
    assert _is_plain(run / "checkpoints" / "base") and _is_plain(run / "final")
    adapter = run / "checkpoints" / "step-2"
    assert (adapter / "adapter_config.json").is_file()
    model, _ = load_model_for_inference(adapter)
    assert not hasattr(model, "peft_config")  # merged, as for any LoRA checkpoint
