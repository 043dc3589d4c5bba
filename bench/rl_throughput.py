"""One RL step, ours (PPO with a value head) against TRL's GRPOTrainer, on the same model and prompts.

Both sides start from the same saved model folder, take the same prompts from data/arith, sample
the same number of answers per step (`--prompts` x `--samples`) with the same temperature, top-p
(no top-k) and length limit, using the KV cache, grade them with the same grader, and make the same
number of optimisation passes over the batch (`--epochs`: PPO epochs, GRPO `num_iterations`) in
the same minibatches (`--mini-batch`, one AdamW step each, gradients clipped at the same norm). Both
train in the precision `rft train` uses for the model (float32 on CPU) with gradient checkpointing
only if the config asks for it: TRL's side runs on the GRPOConfig `rft train` ships, built by the
same function (`rl_trl.build_trl_config`; TRL's own defaults would be bf16 autocast and gradient
checkpointing), with TRL's default loss and reward scaling as shipped. Each side runs in its
own subprocess so its peak memory is its own. Prints generated tokens/s, s/step, CPU s/step, peak
memory and the ratio, then where our step's time goes (generation, old policy+value pass, reference
pass, grading, optimisation).

On a shared machine the wall time of a side swings with the load: `--rounds N` runs the sides N
times, alternating, and reports each round's ratio and the median, also per CPU second (the
process's user + system time, which the load moves much less). `--before CHECKOUT` adds our PPO
as another checkout has it (a `git worktree` of main, say), so a change is measured before and
after in the same run.

Example:
    OMP_NUM_THREADS=2 python bench/rl_throughput.py                       # llama-1m, 16 prompts x 4 samples
    python bench/rl_throughput.py --model runs/arith/checkpoints/sft --steps 10
    python bench/rl_throughput.py --model runs/arith/checkpoints/sft --temperature 0.8 --max-new-tokens 64 \
        --rounds 3 --before ../rft-main
    python bench/rl_throughput.py --model runs/arith/checkpoints/sft --system-words 40 --samples 8 \
        --prompts 8 --mini-batch 32 --before ../rft-main     # long prompts, 8 answers each
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The "before" side (--before) imports rft_cli from another checkout; the data stay this one's.
sys.path.insert(0, os.environ.get("RFT_BENCH_CODE", str(ROOT)))

DATA = ROOT / "data" / "arith"

# Printed with the results, so a TRL upgrade that changes a default shows up in the output.
SHOWN_TRL_SETTINGS = (
    "bf16",
    "fp16",
    "gradient_checkpointing",
    "optim",
    "max_grad_norm",
    "per_device_train_batch_size",
    "steps_per_generation",
    "num_iterations",
    "top_k",
    "top_p",
    "loss_type",
    "scale_rewards",
    "beta",
)
# What no setting makes equal: each side's step does this work and the other does not.
INHERENT = (
    "ours trains a value head (values in the old pass, clipped value loss, GAE); GRPO has no critic and "
    "takes its baseline from the group mean; ours puts the KL penalty in the per-token reward, TRL in the "
    "loss; ours computes the policy entropy in every update pass"
)


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --system-words: instructions of this kind, repeated to the length asked, before every prompt.
SYSTEM_WORDS = (
    "You are a careful calculator. Add the numbers from left to right, one at a time, write each "
    "partial sum, check it, and give the final sum after four hash marks."
).split()


def _train_file(data: Path, system_words: int) -> Path:
    """The data folder's training rows, each with a system message of `system_words` words when asked
    (long prompts, as RFT tasks with instructions have; every answer of a prompt repeats it)."""
    if not system_words:
        return data / "train.jsonl"
    text = " ".join(SYSTEM_WORDS[i % len(SYSTEM_WORDS)] for i in range(system_words))
    path = Path(tempfile.mkdtemp(prefix="rft-bench-data-")) / "train.jsonl"
    with open(data / "train.jsonl") as src, open(path, "w") as out:
        for line in src:
            row = json.loads(line)
            row["messages"] = [{"role": "system", "content": text}, *row["messages"]]
            out.write(json.dumps(row) + "\n")
    return path


def _run_config(args: argparse.Namespace, model_dir: str, algorithm: str = "ppo"):
    from rft_cli.config import parse_run_config

    data = Path(args.data)
    model: dict = {"name": model_dir}
    if args.lora:
        model["lora"] = {"r": args.lora, "alpha": 2 * args.lora, "dropout": 0.0}
    return parse_run_config(
        {
            "model": model,
            "data": {
                "train": str(_train_file(data, args.system_words)),
                "valid": str(data / "valid.jsonl"),
                "demonstration_field": "solution",
            },
            "grader": str(data / "grader.yaml"),
            "sft": {"enabled": False},
            "rl": {
                "algorithm": algorithm,
                "steps": args.steps + args.warmup,
                "prompts_per_step": args.prompts,
                "samples_per_prompt": args.samples,
                "mini_batch_size": args.mini_batch,
                "ppo_epochs": args.epochs,
                "learning_rate": 1e-5,
                "temperature": args.temperature,
                "max_new_tokens": args.max_new_tokens,
                "max_prompt_length": 128 + 10 * args.system_words,
                "kl_coef": 0.05,
            },
            "seed": 0,
        },
        source="bench",
    )


class Timers:
    """Accumulated seconds per phase of our PPO step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def wrap(self, owner, attribute: str, name: str, when=lambda *a, **k: True) -> None:
        """Replace `owner.attribute` with a timed version (only calls where `when(...)` holds count)."""
        inner = getattr(owner, attribute)

        def timed(*a, **k):
            if not when(*a, **k):
                return inner(*a, **k)
            with self.phase(name):
                return inner(*a, **k)

        setattr(owner, attribute, timed)


def worker_ppo(args: argparse.Namespace) -> dict:
    """Our PPO: `args.steps` timed steps after `args.warmup` untimed ones, with a phase breakdown."""
    import torch

    from rft_cli.run_folder.metrics import NullLogger
    from rft_cli.training import ppo
    from rft_cli.training.context import RunContext
    from rft_cli.training.models import load_model, load_tokenizer
    from rft_cli.training.run import preflight

    config = _run_config(args, args.model)
    pre = preflight(config)
    tokenizer = load_tokenizer(config.model)
    reference = (  # under LoRA the policy with its adapters off, as `rft train` does
        ppo.ADAPTERS_OFF
        if ppo.reference_is_policy(config.model)
        else load_model(config.model, tokenizer, seed=0, trainable=False)
    )
    policy = ppo._load_policy(config.model, tokenizer, None, None, 0)
    run_dir = Path(tempfile.mkdtemp(prefix="rft-bench-ppo-"))
    ctx = RunContext(config, run_dir, pre.train_rows, pre.valid_rows, pre.grader, NullLogger())
    trainer = ppo.PPOTrainer(ctx, policy, reference, tokenizer)
    timers = Timers()
    timers.wrap(ppo, "sample", "generation")
    timers.wrap(ppo, "grade", "grading")
    timers.wrap(trainer.ac, "reference_logprobs", "reference forward")
    timers.wrap(
        trainer.ac,
        "forward",
        "policy+value forward (old)",
        when=lambda *a, **k: not torch.is_grad_enabled(),
    )
    timers.wrap(trainer, "_update", "optimisation (PPO epochs)")
    for step in range(1, args.warmup + 1):
        trainer.step(step)
    timers.seconds.clear()
    tokens, started, cpu = 0.0, time.perf_counter(), _cpu_seconds()
    for step in range(args.warmup + 1, args.warmup + args.steps + 1):
        record = trainer.step(step)
        tokens += record["response_length_mean"] * args.prompts * args.samples
    seconds = time.perf_counter() - started
    return {
        "side": "ours (PPO)",
        "s_per_step": seconds / args.steps,
        "tokens_per_s": tokens / seconds,
        "tokens_per_step": tokens / args.steps,
        "peak_mb": _peak_memory_mb(),
        "cpu_s_per_step": (_cpu_seconds() - cpu) / args.steps,
        "phases": {k: v / args.steps for k, v in timers.seconds.items()},
    }


def worker_grpo(args: argparse.Namespace) -> dict:
    """TRL's GRPOTrainer with the same grader, batch, sampling, precision and optimisation passes."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from rft_cli.run_folder.metrics import NullLogger
    from rft_cli.training.context import RunContext
    from rft_cli.training.models import load_tokenizer
    from rft_cli.training.rl_trl import _peft_config, build_trl_config, rl_examples
    from rft_cli.training.run import preflight
    from rft_cli.training.trl_bridge import GraderReward

    config = _run_config(args, args.model, algorithm="grpo")
    pre = preflight(config)
    tokenizer = load_tokenizer(config.model)
    ctx = RunContext(
        config,
        Path(tempfile.mkdtemp(prefix="rft-bench-grpo-")),
        pre.train_rows,
        pre.valid_rows,
        pre.grader,
        NullLogger(),
    )
    # One of our PPO steps samples prompts x samples answers once, then makes `epochs` passes over
    # them in minibatches of `mini_batch`, one optimizer step each. TRL does the same with
    # steps_per_generation minibatches per sampled batch and num_iterations passes, so one of our
    # steps is `epochs * minibatches` TRL optimizer steps.
    minibatches = args.prompts * args.samples // args.mini_batch
    trl_steps_per_step = args.epochs * minibatches
    step_seconds: list[float] = []
    step_cpu: list[float] = []
    lengths: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):  # noqa: ANN001
            self.started, self.cpu = time.perf_counter(), _cpu_seconds()

        def on_step_end(self, a, state, control, **kw):  # noqa: ANN001
            step_seconds.append(time.perf_counter() - self.started)
            step_cpu.append(_cpu_seconds() - self.cpu)

        def on_log(self, a, state, control, logs=None, **kw):  # noqa: ANN001
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

    # The GRPOConfig `rft train` ships (rl_trl.build_trl_config), with checkpoint saving off.
    grpo_config = build_trl_config(ctx, ctx.run_dir, save_strategy="no")
    trainer = GRPOTrainer(
        model=args.model,
        reward_funcs=[GraderReward(pre.grader, 1.0)],
        args=grpo_config,
        train_dataset=Dataset.from_list(rl_examples(pre.train_rows, "solution")),
        processing_class=tokenizer,
        callbacks=[Clock()],
        peft_config=_peft_config(config.model, Path(args.model)),  # the same LoRA adapters as ours
    )
    trainer.train()
    seconds = sum(step_seconds[args.warmup * trl_steps_per_step :])
    mean_length = sum(lengths[args.warmup :]) / max(len(lengths[args.warmup :]), 1)
    tokens = mean_length * args.prompts * args.samples * args.steps
    return {
        "side": "TRL GRPOTrainer",
        "s_per_step": seconds / args.steps,
        "tokens_per_s": tokens / seconds,
        "tokens_per_step": tokens / args.steps,
        "peak_mb": _peak_memory_mb(),
        "phases": {},
        "cpu_s_per_step": sum(step_cpu[args.warmup * trl_steps_per_step :]) / args.steps,
        "optimizer_steps": len(step_seconds),
        "length_logs": len(lengths),
        "settings": {k: str(getattr(grpo_config, k)) for k in SHOWN_TRL_SETTINGS},
    }


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _save_default_model(folder: Path) -> str:
    from rft_cli.tiny import save_tiny

    return save_tiny(str(folder), "llama-1m", seed=0)


def _print_table(rounds: list[dict], args: argparse.Namespace) -> None:
    print(
        f"\nmodel {args.model}{f' (LoRA r={args.lora})' if args.lora else ''}; data {args.data}; {args.prompts} prompts x {args.samples} samples per step"
        f"{f', a {args.system_words}-word system message per prompt' if args.system_words else ''}, max {args.max_new_tokens} new "
        f"tokens, temperature {args.temperature}, {args.epochs} optimisation pass(es); {args.steps} timed steps "
        f"after {args.warmup} warm-up step(s); {len(rounds)} round(s), the sides alternating"
    )
    print(
        f"{'round':6s}{'side':22s} {'tokens/s':>10s} {'s/step':>8s} {'tokens/step':>12s} {'CPU s/step':>11s} {'peak MB':>9s}"
    )
    for n, results in enumerate(rounds, 1):
        for side in results.values():
            print(
                f"{n:<6d}{side['side']:22s} {side['tokens_per_s']:10.1f} {side['s_per_step']:8.2f} "
                f"{side['tokens_per_step']:12.0f} {side['cpu_s_per_step']:11.2f} {side['peak_mb']:9.0f}"
            )
    for other in [k for k in rounds[0] if k != "ppo"]:
        name = rounds[0][other]["side"]
        wall = [r["ppo"]["tokens_per_s"] / r[other]["tokens_per_s"] for r in rounds]
        cpu = [_per_cpu_s(r["ppo"]) / _per_cpu_s(r[other]) for r in rounds]
        print(
            f"ours / {name}: tokens per wall second x{statistics.median(wall):.2f} (rounds: "
            f"{', '.join(f'{x:.2f}' for x in wall)}), tokens per CPU second x{statistics.median(cpu):.2f} "
            f"({', '.join(f'{x:.2f}' for x in cpu)})"
        )
    for key in ("ppo", "before"):
        if key in rounds[0]:
            _print_phases(rounds[-1][key])
    theirs = rounds[-1]["grpo"]
    print(
        f"\nTRL side: {theirs['optimizer_steps']} optimizer steps, {theirs['length_logs']} sampled batches; "
        + ", ".join(f"{k}={v}" for k, v in theirs["settings"].items())
    )
    print(f"not made equal (inherent): {INHERENT}")


def _per_cpu_s(side: dict) -> float:
    return side["tokens_per_step"] / side["cpu_s_per_step"]


def _print_phases(side: dict) -> None:
    total = side["s_per_step"]
    print(f"\n{side['side']} step (last round), milliseconds per step:")
    for name, seconds in sorted(side["phases"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:28s} {1000 * seconds:9.1f}  ({100 * seconds / total:4.1f}%)")
    other = total - sum(side["phases"].values())
    print(
        f"  {'other (GAE, whitening, ...)':28s} {1000 * other:9.1f}  ({100 * other / total:4.1f}%)"
    )


def _run_side(side: str, args: argparse.Namespace) -> dict:
    """One side in its own process (its own peak memory); the before side imports the other checkout."""
    argv = [
        f"--{k.replace('_', '-')}={v}"
        for k, v in vars(args).items()
        if k not in ("worker", "before", "rounds")
    ] + ["--worker", "grpo" if side == "grpo" else "ppo"]
    env = {**os.environ, "RFT_BENCH_CODE": args.before} if side == "before" else dict(os.environ)
    out = subprocess.run(
        [sys.executable, __file__, *argv], capture_output=True, text=True, cwd=ROOT, env=env
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        sys.exit(f"{side} worker failed:\n{out.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    if side == "before":
        result["side"] = "ours before (--before)"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", help="a saved model folder (default: a fresh llama-1m with the char tokenizer)"
    )
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--mini-batch", type=int, default=16)
    parser.add_argument(
        "--epochs",
        type=int,
        default=2,
        help="optimisation passes per batch (PPO epochs / GRPO iterations)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--system-words",
        type=int,
        default=0,
        help="a system message of this many words before every prompt (long prompts, each shared by its samples)",
    )
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the sides this many times, alternating, and report each round's ratio and the median",
    )
    parser.add_argument(
        "--before",
        metavar="CHECKOUT",
        help="also run our PPO as another checkout of rft has it (e.g. a `git worktree` of main)",
    )
    parser.add_argument(
        "--data",
        default=str(DATA),
        help="a folder with train.jsonl, valid.jsonl and grader.yaml (default: data/arith)",
    )
    parser.add_argument(
        "--lora",
        type=int,
        default=0,
        help="LoRA rank (all linear layers, alpha 2r); 0: full fine-tune",
    )
    parser.add_argument("--worker", choices=["ppo", "grpo"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        result = (worker_ppo if args.worker == "ppo" else worker_grpo)(args)
        print("RESULT " + json.dumps(result), flush=True)
        return
    if args.model is None:
        args.model = _save_default_model(
            Path(tempfile.mkdtemp(prefix="rft-bench-model-")) / "llama-1m"
        )
    sides = ("ppo", "grpo", "before") if args.before else ("ppo", "grpo")
    rounds = [{side: _run_side(side, args) for side in sides} for _ in range(args.rounds)]
    _print_table(rounds, args)


if __name__ == "__main__":
    main()
