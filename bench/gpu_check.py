"""GPU check: bf16 PPO, GRPO and LoRA through `rft train` on a Qwen2.5-0.5B-sized model, nothing downloaded.

What it prints, per arm (PPO full fine-tune, GRPO full fine-tune, PPO with LoRA), all in bfloat16:
  - kl_step1: the KL logged at RL step 1 (the policy is the reference then: it should be ~0);
  - updated: the share of the weights in `final/` that differ from the starting folder (compared
    in float32; `final/` is written in the dtype shown beside it), and `master`: the same share in
    the last step checkpoint, which keeps the float32 master weights (small updates show there
    before they add up to a bf16 step in `final/`);
  - gen tok/s: generated tokens per second of RL step time (metrics.jsonl `tokens_per_second`);
  - peak GB: peak GPU memory of the arm (torch.cuda.max_memory_allocated);
and once, on the starting model: the total-variation distance between 4,000 first tokens drawn by
the PPO sampler / the `rft eval` path and softmax(logits) (with its sampling-noise bound, as in
tests/test_sampling_fidelity.py), and the sampler's generated tokens/s alone.

The model: random weights at Qwen2.5-0.5B's sizes (hidden 896, 24 layers, 14 heads, 2 KV heads,
MLP 4864, from its config.json), over the hub-like fixture tokenizer of `tests.hub_like`
(byte-level BPE, ChatML, two EOS ids, Qwen2.5-Instruct's generation_config.json). The vocabulary
is that tokenizer's 384 tokens, not Qwen's 151,936: a random model over 151,936 ids would sample
ids the tokenizer cannot decode. So the model has 358M parameters instead of 494M (the embedding
is tied), and the figures leave out the 136M-parameter embedding/LM head and its logits. The data is data/svamp, the grader data/svamp/grader.yaml; SFT is off.

    python bench/gpu_check.py                  # CUDA; planned for under 8 minutes on one H100/H200 (unmeasured)
    python bench/gpu_check.py --cpu --small    # the same path on CPU with tiny sizes (tests run it)
    python bench/gpu_check.py --json out.json  # also write the figures as JSON

Bringing the dependencies to a GPU machine that has torch and transformers but no trl, datasets,
peft or accelerate, and no package index (`rft train` imports all four, PPO included). On a machine
with an index, in a virtual environment where rft is installed, with the GPU machine's Python
minor version and CPU architecture (`python -V` there), write every installed package except what
the GPU machine already has, and build a wheel of each:

    pip freeze --exclude-editable | grep -viE '^(torch|nvidia-|triton|transformers|tokenizers|safetensors|huggingface.hub)' > gpu-reqs.txt
    pip wheel --no-deps --wheel-dir wheels/ -r gpu-reqs.txt     # sdists (rouge-score) become wheels too
    pip wheel --no-deps --wheel-dir wheels/ .                    # rft itself

carry wheels/ and gpu-reqs.txt there with the repository, then:

    pip install --no-index --find-links wheels/ -r gpu-reqs.txt
    PYTHONPATH=. python bench/gpu_check.py

pip checks the brought packages against the machine's torch and transformers; if it reports a
conflict (trl needs a newer transformers), bring the transformers, tokenizers, safetensors and
huggingface-hub wheels too. pyarrow, pandas, numpy and sympy make up most of the wheels' size.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Qwen2.5-0.5B's config.json, minus the vocabulary (see the docstring).
QWEN25_05B = {
    "hidden_size": 896,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "intermediate_size": 4864,
}
SMALL = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
}
DRAWS = 4000


def _arms(small: bool) -> dict[str, dict]:
    """Recipe overrides per arm. Step sizes: ReFT-like learning rates, a few steps, one rollout batch each."""
    prompts, new = (4, 8) if small else (32, 128)
    rl = {
        "steps": 3,
        "prompts_per_step": prompts,
        "mini_batch_size": prompts // 2,
        "max_new_tokens": new,
        "max_prompt_length": 256,
        "learning_rate": 1e-6,
        "ppo_epochs": 2,
    }
    return {
        "ppo": {"rl": {**rl, "algorithm": "ppo"}},
        "grpo": {
            "rl": {
                **rl,
                "algorithm": "grpo",
                "prompts_per_step": max(prompts // 4, 1),
                "samples_per_prompt": 4,
            }
        },
        "ppo-lora": {
            "rl": {**rl, "algorithm": "ppo", "learning_rate": 1e-5},
            "model": {"lora": {"r": 16, "alpha": 32, "dropout": 0.0}},
        },
    }


def build_base(folder: Path, small: bool) -> Path:
    """Save the starting model folder: random Qwen2 weights in bf16 beside the hub-like tokenizer."""
    import torch

    from tests.hub_like import build_bpe_tokenizer, build_qwen2_model, hub_generation_config

    tokenizer = build_bpe_tokenizer()
    model = build_qwen2_model(tokenizer, SMALL if small else QWEN25_05B, seed=0).to(torch.bfloat16)
    model.generation_config = hub_generation_config(tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_recipe(path: Path, model_dir: Path, arm: dict) -> Path:
    """A recipe for `rft train`: the model folder in bf16, SVAMP prompts and grader, RL only."""
    import yaml

    recipe = {
        "model": {"name": str(model_dir), "dtype": "bfloat16", **arm.get("model", {})},
        "data": {
            "train": str(ROOT / "data/svamp/train.jsonl"),
            "valid": str(ROOT / "data/svamp/test.jsonl"),
        },
        "grader": str(ROOT / "data/svamp/grader.yaml"),
        "sft": {"enabled": False},
        "rl": arm["rl"],
        "eval": {"interval": 1000, "samples": 4, "batch_size": 4},
        "save_interval": 1000,
        "seed": 0,
        "report_to": "none",
    }
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def sampling_distance(model_dir: Path) -> dict[str, float]:
    """TV between DRAWS first tokens (PPO sampler, `rft eval` path) and softmax(logits), plus the bound."""
    import torch

    from rft_cli.generation import encode_prompt, generate_completions, load_model_for_inference
    from rft_cli.training.rollouts import sample

    model, tokenizer = load_model_for_inference(str(model_dir))
    prompt = [{"role": "user", "content": "What is 5 + 3?"}]
    ids = encode_prompt(tokenizer, prompt)
    device = next(model.parameters()).device
    with torch.no_grad():
        probs = (
            torch.softmax(model(torch.tensor([ids], device=device)).logits[0, -1].float(), -1)
            .cpu()
            .double()
        )
    torch.manual_seed(0)
    rollout = sample(
        model, tokenizer, [{"messages": prompt}] * DRAWS, max_prompt_length=256, max_new_tokens=1
    )
    # a partial, not a lambda: `model` is deleted below, and a closure over it reads as undefined
    drawn = _capture_first_tokens(
        model,
        functools.partial(
            generate_completions,
            model,
            tokenizer,
            [prompt],
            max_new_tokens=1,
            num_samples=DRAWS,
            temperature=1.0,
            batch_size=1000,
            seed=0,
        ),
    )
    out = {
        "tv_ppo_sampler": _tv(rollout.response_ids[:, 0].cpu(), probs),
        "tv_eval": _tv(drawn, probs),
        "tv_noise_bound": 0.5 * float(torch.sqrt(probs * (1 - probs) / DRAWS).sum()),
    }
    out["sampler_tokens_per_s"] = _sampler_speed(model, tokenizer)
    del model
    _free()
    return out


def _capture_first_tokens(model, call) -> object:
    import torch

    firsts = []
    original = model.generate

    def spy(**kwargs):
        result = original(**kwargs)
        firsts.append(result[:, kwargs["input_ids"].shape[1]].cpu())
        return result

    model.generate = spy
    try:
        call()
    finally:
        del model.generate
    return torch.cat(firsts)


def _tv(tokens, probs) -> float:
    import torch

    counts = torch.bincount(tokens, minlength=probs.numel()).double() / tokens.numel()
    return 0.5 * float((counts - probs).abs().sum())


def _sampler_speed(model, tokenizer, batch: int = 64, new_tokens: int = 128) -> float:
    """Generated tokens/s of the PPO sampler alone: a batch of SVAMP prompts, T=1, KV cache."""
    from rft_cli.data.records import iter_rows
    from rft_cli.training.rollouts import sample

    rows = [row for _, row in iter_rows(ROOT / "data/svamp/test.jsonl")][:batch]
    _sync()
    started = time.perf_counter()
    rollout = sample(model, tokenizer, rows, max_prompt_length=256, max_new_tokens=new_tokens)
    _sync()
    return float(rollout.response_mask.sum()) / (time.perf_counter() - started)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_arm(name: str, arm: dict, base: Path, work: Path) -> dict[str, float | None]:
    """`rft train` on a generated recipe (through the library, as the CLI does); figures from metrics.jsonl."""
    import torch

    from rft_cli.config import load_run_config
    from rft_cli.run_folder.metrics import read_metrics
    from rft_cli.training.run import train

    recipe = write_recipe(work / f"{name}.yaml", base, arm)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = train(load_run_config(recipe, []), config_path=recipe, output_dir=work / name)
    seconds = time.perf_counter() - started
    rl = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r.get("stage") == "rl"]
    speeds = [r["tokens_per_second"] for r in rl if r.get("tokens_per_second")]
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    from rft_cli.run_folder.checkpoints import find_latest_complete

    last = find_latest_complete(result.run_dir / "checkpoints")
    figures = {
        "kl_step1": rl[0].get("kl") if rl else None,
        "updated_share": updated_share(base, result.run_dir / "final"),
        "updated_master_share": updated_share(base, last) if last is not None else None,
        "final_dtype": _dtype(result.run_dir / "final"),
        "gen_tokens_per_s": sum(speeds) / len(speeds) if speeds else None,
        "peak_gb": peak,
        "seconds": seconds,
        "steps": len(rl),
    }
    _free()
    return figures


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def updated_share(before: Path, after: Path) -> float:
    """The share of weight elements whose saved value changed (both folders hold safetensors)."""
    from safetensors.torch import load_file

    old, new = _weights(before, load_file), _weights(after, load_file)
    changed = total = 0
    for key, tensor in old.items():
        if key in new:
            changed += int((new[key].float() != tensor.float()).sum())
            total += tensor.numel()
    return changed / max(total, 1)


def _dtype(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    return str(config.get("dtype") or config.get("torch_dtype"))


def _weights(folder: Path, load_file) -> dict:
    out: dict = {}
    for shard in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(shard)))
    return out


def _print(report: dict) -> None:
    s = report["sampling"]
    print(f"device: {report['device']}  model: {report['model']}")
    print(
        f"sampling TV vs softmax(logits), {DRAWS} first tokens: PPO sampler {s['tv_ppo_sampler']:.3f}, "
        f"rft eval {s['tv_eval']:.3f} (noise bound {s['tv_noise_bound']:.3f}); "
        f"sampler alone {s['sampler_tokens_per_s']:.0f} generated tokens/s"
    )
    print(
        f"{'arm':10} {'kl_step1':>10} {'updated':>9} {'final/':>9} {'master':>9} {'gen tok/s':>10} {'peak GB':>8} "
        f"{'seconds':>8}"
    )
    for name, f in report["arms"].items():
        kl = "-" if f["kl_step1"] is None else f"{f['kl_step1']:.2e}"
        speed = "-" if f["gen_tokens_per_s"] is None else f"{f['gen_tokens_per_s']:.0f}"
        peak = "-" if f["peak_gb"] is None else f"{f['peak_gb']:.1f}"
        master = "-" if f["updated_master_share"] is None else f"{f['updated_master_share']:.2%}"
        print(
            f"{name:10} {kl:>10} {f['updated_share']:>9.2%} {f['final_dtype']:>9} {master:>9} {speed:>10} {peak:>8} "
            f"{f['seconds']:>8.1f}"
        )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run on CPU (hides any GPU)")
    parser.add_argument("--small", action="store_true", help="tiny sizes instead of Qwen2.5-0.5B's")
    parser.add_argument(
        "--arms", default="ppo,grpo,ppo-lora", help="comma-separated subset of ppo,grpo,ppo-lora"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    if not args.cpu and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or pass --cpu --small")
    arms = _arms(args.small)
    with tempfile.TemporaryDirectory(prefix="rft-gpu-check-") as tmp:
        work = Path(tmp)
        base = build_base(work / "base", args.small)
        report = {
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "model": "qwen2 small" if args.small else "qwen2 at Qwen2.5-0.5B sizes, vocab 384",
            "sampling": sampling_distance(base),
            "arms": {},
        }
        for name in args.arms.split(","):
            report["arms"][name] = run_arm(name, arms[name], base, work)
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
