"""Find the ReFT regime for the built-in task: where SFT saturates below perfect and sampling still finds answers.

A standalone experiment (it uses TRL's SFTTrainer and GRPOTrainer directly, not `rft train`):
warm-up SFT for a number of epochs, evaluating held-out greedy accuracy and pass@k after each
chunk of epochs, then optionally GRPO from the saved warm-up checkpoint. Prints one JSON line per
measurement, so runs can be pasted into bench/notes/.

Example:
    OMP_NUM_THREADS=1 nice python bench/explore_task.py --n-train 1000 --epochs 30 --eval-every 5
    OMP_NUM_THREADS=1 nice python bench/explore_task.py --n-train 1000 --epochs 20 --grpo-steps 200
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rft_cli.data.synthetic import ArithSpec, generate_arith  # noqa: E402

ANSWER = re.compile(r"####\s*(-?\d+)")
# float32 without gradient checkpointing, as `rft train` trains a model on CPU: TRL's SFTConfig and
# GRPOConfig default to bf16 autocast and gradient checkpointing, even with use_cpu=True.
FLOAT32_TRAINING = {"bf16": False, "fp16": False, "gradient_checkpointing": False}


def log(**fields) -> None:
    print(json.dumps(fields), flush=True)


def to_prompt_completion(rows: list[dict]) -> list[dict]:
    """SFTTrainer's conversational prompt/completion format (loss on the completion only)."""
    return [{"prompt": r["messages"], "completion": [{"role": "assistant", "content": r["solution"]}]} for r in rows]


def encode_prompts(tokenizer, rows: list[dict]) -> list[list[int]]:
    return [tokenizer.apply_chat_template(r["messages"], add_generation_prompt=True, tokenize=True)["input_ids"] for r in rows]


def generate(model, tokenizer, prompts: list[list[int]], *, samples: int = 1, temperature: float = 0.0,
             max_new_tokens: int = 40, batch_size: int = 256) -> list[str]:
    """Completions (decoded, special tokens dropped), `samples` per prompt, in prompt order."""
    import torch

    flat = [p for p in prompts for _ in range(samples)]
    outputs = []
    model.eval()
    for start in range(0, len(flat), batch_size):
        chunk = flat[start:start + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in chunk])
        mask = (ids != tokenizer.pad_token_id).long()
        kwargs = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature > 0 else {"do_sample": False}
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **kwargs)
        outputs.extend(tokenizer.batch_decode(out[:, width:], skip_special_tokens=True))
    return outputs


def correct(text: str, reference: str) -> bool:
    match = ANSWER.search(text)
    return bool(match) and match.group(1) == reference


def evaluate(model, tokenizer, rows: list[dict], *, k: int, n_pass: int, temperature: float, max_new_tokens: int = 64) -> dict:
    """Greedy accuracy on all rows; mean sample accuracy and pass@k on the first `n_pass` rows."""
    prompts = encode_prompts(tokenizer, rows)
    greedy = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
    acc = sum(correct(t, r["reference_answer"]) for t, r in zip(greedy, rows, strict=True)) / len(rows)
    sampled = generate(model, tokenizer, prompts[:n_pass], samples=k, temperature=temperature, max_new_tokens=max_new_tokens)
    hits = [[correct(sampled[i * k + j], rows[i]["reference_answer"]) for j in range(k)] for i in range(n_pass)]
    return {"examples": greedy[:3], "greedy_acc": round(acc, 4), "sample_acc": round(sum(map(sum, hits)) / (n_pass * k), 4),
            f"pass@{k}": round(sum(any(h) for h in hits) / n_pass, 4)}


def run_sft(args, model, tokenizer, train_rows, valid_rows, out_dir: Path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    dataset = Dataset.from_list(to_prompt_completion(train_rows))
    done, t0 = 0, time.time()
    while done < args.epochs:
        chunk = min(args.eval_every, args.epochs - done)
        config = SFTConfig(output_dir=str(out_dir / "sft_tmp"), num_train_epochs=chunk, per_device_train_batch_size=args.batch,
                           learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, logging_steps=10**6,
                           save_strategy="no", report_to=[], use_cpu=True, seed=args.seed + done, max_length=256,
                           dataloader_num_workers=0, disable_tqdm=True, **FLOAT32_TRAINING)
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
        trainer.train()
        done += chunk
        sft_s = time.time() - t0
        metrics = evaluate(model, tokenizer, valid_rows, k=args.k, n_pass=args.n_pass, temperature=args.temperature)
        train_acc = evaluate(model, tokenizer, train_rows[:200], k=1, n_pass=1, temperature=args.temperature)["greedy_acc"]
        metrics["loss"] = round(trainer.state.log_history[-1].get("train_loss", float("nan")), 4)
        log(stage="sft", epochs=done, sft_s=round(sft_s, 1), train_greedy_acc=train_acc, **metrics)
        if args.save_every_eval:
            model.save_pretrained(out_dir / f"sft-{done}")
            tokenizer.save_pretrained(out_dir / f"sft-{done}")
        t0 = time.time() - sft_s
    return model


def run_grpo(args, model_dir: Path, tokenizer, train_rows, valid_rows, out_dir: Path) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    def reward(completions, reference_answer, **_):
        rewards = []
        for c, ref in zip(completions, reference_answer, strict=True):
            text = c[0]["content"] if isinstance(c, list) else c
            rewards.append(1.0 if correct(text, ref) else (0.1 if ANSWER.search(text) else 0.0))
        return rewards

    dataset = Dataset.from_list([{"prompt": r["messages"], "reference_answer": r["reference_answer"]} for r in train_rows])
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    done, t0 = 0, time.time()
    while done < args.grpo_steps:
        chunk = min(args.grpo_eval_every, args.grpo_steps - done)
        config = GRPOConfig(output_dir=str(out_dir / "grpo_tmp"), max_steps=chunk, per_device_train_batch_size=args.grpo_batch,
                            num_generations=args.grpo_generations, learning_rate=args.grpo_lr, lr_scheduler_type="constant",
                            warmup_steps=0, beta=args.kl, temperature=args.temperature, max_completion_length=40,
                            logging_steps=10**6, save_strategy="no", report_to=[], use_cpu=True, seed=args.seed + done,
                            disable_tqdm=True, top_k=0, **FLOAT32_TRAINING)
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=dataset, processing_class=tokenizer)
        trainer.train()
        model = trainer.model
        done += chunk
        rl_s = time.time() - t0
        metrics = evaluate(model, tokenizer, valid_rows, k=args.k, n_pass=args.n_pass, temperature=args.temperature)
        log(stage="grpo", steps=done, rl_s=round(rl_s, 1), **metrics)
        t0 = time.time() - rl_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-valid", type=int, default=300)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-start", type=int, default=30)
    parser.add_argument("--max-operand", type=int, default=9)
    parser.add_argument("--max-total", type=int, default=50)
    parser.add_argument("--ops", default="+-")
    parser.add_argument("--style", default="words", help="'words' (sentences) or 'equation' (\"12+47+30=?\")")
    parser.add_argument("--save-every-eval", action="store_true", help="save the model after each evaluation")
    parser.add_argument("--arch", default="llama-1m")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--n-pass", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--grpo-steps", type=int, default=0)
    parser.add_argument("--grpo-eval-every", type=int, default=50)
    parser.add_argument("--grpo-batch", type=int, default=64)
    parser.add_argument("--grpo-generations", type=int, default=8)
    parser.add_argument("--grpo-lr", type=float, default=5e-5)
    parser.add_argument("--kl", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="/tmp/rft_explore")
    args = parser.parse_args()

    import torch

    from rft_cli.tiny import build_char_tokenizer, build_tiny_model

    torch.manual_seed(args.seed)
    spec = ArithSpec(steps=args.steps, max_start=args.max_start, max_operand=args.max_operand, max_total=args.max_total, ops=args.ops,
                    style=args.style)
    train_rows, valid_rows = generate_arith(args.n_train, args.n_valid, seed=args.seed, spec=spec)
    tokenizer = build_char_tokenizer()
    tokenizer.padding_side = "left"
    arch = json.loads(args.arch) if args.arch.startswith("{") else args.arch
    model = build_tiny_model(tokenizer, arch, seed=args.seed)
    log(config=vars(args), params=sum(p.numel() for p in model.parameters()), threads=torch.get_num_threads(),
        load=os.getloadavg()[0])
    out_dir = Path(args.out)
    model = run_sft(args, model, tokenizer, train_rows, valid_rows, out_dir)
    if args.grpo_steps:
        model.save_pretrained(out_dir / "warmup")
        tokenizer.save_pretrained(out_dir / "warmup")
        run_grpo(args, out_dir / "warmup", tokenizer, train_rows, valid_rows, out_dir)


if __name__ == "__main__":
    main()
