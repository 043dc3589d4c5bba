"""Every shipped recipe passes `rft train --dry-run`; the real-data recipe shape trains end to end
with a tiny local model in place of the hub id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.run_folder.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "recipes").glob("*.yaml"))
ACCELERATE = sorted((ROOT / "recipes" / "accelerate").glob("*.yaml"))
HUB_RECIPES = [
    p for p in RECIPES if "qwen" in p.name and "multi-gpu" not in p.name
]  # same shape, one process


def _dry_run(recipe: Path, *overrides: str) -> dict:
    args = ["train", str(recipe), "--dry-run"]
    for override in overrides:
        args += ["--set", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{") :])


def test_the_recipes_are_there():
    names = {p.name for p in RECIPES}
    assert {
        "arith-cpu.yaml",
        "svamp-qwen2.5-0.5b.yaml",
        "svamp-qwen2.5-0.5b-lora.yaml",
        "svamp-qwen2.5-1.5b-multi-gpu.yaml",
    } <= names
    assert {p.name for p in ACCELERATE} == {
        "multi-gpu.yaml",
        "deepspeed-zero2.yaml",
        "deepspeed-zero3.yaml",
    }


def _pulled_stand_in(recipe: Path, tiny_gguf) -> tuple[str, ...]:
    """A recipe naming a model `rft model pull` fetches gets a tiny GGUF in its place (tests pull
    nothing; tests/test_smollm2_e2e.py pulls the real one)."""
    from rft_cli.model_pull import KNOWN_MODELS

    name = yaml.safe_load(recipe.read_text())["model"].get("name")
    return (f"model.name={tiny_gguf[0]}",) if name in KNOWN_MODELS else ()


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.name for p in RECIPES])
def test_every_recipe_passes_dry_run(recipe, tiny_gguf):
    """Config, data (train/valid overlap included) and grader are checked without loading weights."""
    plan = _dry_run(recipe, *_pulled_stand_in(recipe, tiny_gguf))
    assert plan["dry_run"] is True
    assert plan["stages"]["sft"]["steps"] > 0 and plan["stages"]["rl"]["algorithm"] == "ppo"
    assert plan["train_rows"] > 0 and plan["valid_rows"] > 0


def test_default_recipe_is_an_offline_tiny_model_on_the_shipped_task():
    config = yaml.safe_load((ROOT / "recipes" / "arith-cpu.yaml").read_text())
    assert "tiny" in config["model"] and "name" not in config["model"]
    assert config["data"]["train"].endswith("data/arith/train.jsonl")
    assert config["grader"].endswith("data/arith/grader.yaml")


@pytest.mark.parametrize("path", ACCELERATE, ids=[p.name for p in ACCELERATE])
def test_accelerate_configs_are_valid_yaml_for_accelerate(path):
    config = yaml.safe_load(path.read_text())
    assert config["distributed_type"] in ("MULTI_GPU", "DEEPSPEED")
    assert config["num_processes"] >= 2 and config["mixed_precision"] == "bf16"
    if config["distributed_type"] == "DEEPSPEED":
        assert config["deepspeed_config"]["zero_stage"] in (2, 3)


TINY_OVERRIDES = (
    "sft.max_steps=2",
    "sft.batch_size=2",
    "sft.max_length=256",
    "rl.steps=2",
    "rl.prompts_per_step=2",
    "rl.mini_batch_size=2",
    "rl.max_new_tokens=8",
    "rl.max_prompt_length=96",
    "eval.samples=4",
    "eval.interval=1",
    "eval.batch_size=4",
    "save_interval=1",
    "model.dtype=float32",
    "model.gradient_checkpointing=false",
)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", HUB_RECIPES, ids=[p.name for p in HUB_RECIPES])
def test_real_data_recipe_shape_trains_with_a_tiny_local_model(recipe, tiny_model_dir, tmp_path):
    """The SVAMP recipes unchanged except the model (a local tiny llama) and the step counts."""
    out = _train_recipe(recipe, tiny_model_dir, tmp_path / "run")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"]["sft"]["valid_accuracy"] is not None
    assert summary["stages"]["rl"]["steps"] == 2
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out / "final") is not None


@pytest.mark.slow
@pytest.mark.parametrize("recipe", HUB_RECIPES, ids=[p.name for p in HUB_RECIPES])
def test_svamp_recipe_on_a_hub_like_model_folder(recipe, hub_like_model_dir, tmp_path):
    """The real-user path: `model.name` is a local folder shaped like Qwen2.5-Instruct's (byte-level
    BPE, ChatML, <|im_end|> EOS, <|endoftext|> pad, two EOS ids and top_k 20 / temperature 0.7 /
    repetition penalty in generation_config.json). SFT + 2 PPO steps, then `rft eval` on the result."""
    out = _train_recipe(recipe, hub_like_model_dir, tmp_path / "run")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"]["rl"]["steps"] == 2
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rl = [m for m in metrics if m.get("stage") == "rl" and "kl" in m]
    assert rl and abs(rl[0]["kl"]) < 1e-4  # step 1: the policy is the reference
    # The trained folder keeps the user's tokenizer and generation_config.json (two EOS ids, their defaults).
    saved = json.loads((out / "final" / "generation_config.json").read_text())
    source = json.loads((Path(hub_like_model_dir) / "generation_config.json").read_text())
    assert {k: saved.get(k) for k in ("eos_token_id", "top_k", "temperature")} == {
        k: source[k] for k in ("eos_token_id", "top_k", "temperature")
    }
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            str(out),
            "--data",
            str(ROOT / "data/svamp/test.jsonl"),
            "--grader",
            str(ROOT / "data/svamp/grader.yaml"),
            "--limit",
            "3",
            "--samples",
            "2",
            "--max-new-tokens",
            "8",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)["models"]
    assert (report["rows"], report["samples"]) == (3, 2) and report["generated_tokens"] > 0


def _train_recipe(recipe: Path, model_dir: str, out: Path) -> Path:
    """`rft train RECIPE` with `model.name` set to a local folder and the step counts cut to TINY_OVERRIDES."""
    args = [
        "train",
        str(recipe),
        "--output-dir",
        str(out),
        "--quiet",
        "--set",
        f"model.name={model_dir}",
    ]
    for override in TINY_OVERRIDES:
        args += ["--set", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_default_recipe_runs_shortened(tmp_path):
    """recipes/arith-cpu.yaml as shipped, with a few steps per stage: the table-ending run works."""
    out = tmp_path / "run"
    args = [
        "train",
        str(ROOT / "recipes" / "arith-cpu.yaml"),
        "--output-dir",
        str(out),
        "--quiet",
        "--set",
        "sft.max_steps=3",
        "--set",
        "rl.steps=2",
        "--set",
        "eval.samples=8",
        "--set",
        "eval.interval=1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["stages"]) == {"sft", "rl"}
    assert str(out) in result.stdout


@pytest.mark.slow
def test_the_tool_recipe_runs_shortened(tmp_path):
    """recipes/lookup-cpu.yaml as shipped, a few steps per stage: the warm-up on demonstrated
    episodes, PPO over episodes with the lookup tool in the sandbox, evaluated on episodes."""
    out = tmp_path / "run"
    overrides = ["sft.max_steps=2", "rl.steps=1", "rl.prompts_per_step=2", "rl.mini_batch_size=16"]
    overrides += ["eval.samples=4", "eval.interval=1"]
    args = ["train", str(ROOT / "recipes" / "lookup-cpu.yaml"), "--output-dir", str(out), "--quiet"]
    for override in overrides:
        args += ["--set", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rl = [r for r in read_metrics(out / "metrics.jsonl") if r["stage"] == "rl"]
    assert rl[-1]["tool_calls_per_episode"] >= 0 and "valid_tool_calls_per_episode" in rl[-1]
    assert json.loads((out / "summary.json").read_text())["final"] == "final"


@pytest.mark.slow
def test_the_real_model_recipe_trains_on_a_gguf_stand_in(tiny_gguf, tmp_path):
    """recipes/smollm2-wordsums.yaml as shipped (LoRA, the reference with the adapters off) with a
    tiny GGUF in place of the pulled SmolLM2 and a few steps: GGUF in, a plain final/ out."""
    out = _train_recipe(ROOT / "recipes" / "smollm2-wordsums.yaml", tiny_gguf[0], tmp_path / "run")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"]["rl"]["steps"] == 2
    assert (out / "final" / "config.json").is_file()
    assert "quantization_config" not in json.loads((out / "final" / "config.json").read_text())
