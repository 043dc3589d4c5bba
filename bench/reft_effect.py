"""The ReFT effect, measured: warm-up vs PPO vs an SFT-only arm given the PPO stage's wall-clock time.

For each seed it runs the recipe (`rft train`, SFT warm-up then PPO), then continues supervised
training from the same warm-up checkpoint, on the same demonstrations with the same SFT settings,
for as many seconds as the PPO stage took (the comparison that separates reinforcement from more
training), once at a low constant learning rate and once at the peak one; PPO is compared with the
better of the two. The model in `final/` (the best validated checkpoint, the warm-up included, under
the default `rl.final: best`) is reported beside the last step as `final`. All models are scored by the same greedy evaluation on the recipe's validation
rows (`eval.samples` of them). Prints one line per seed and the mean and spread per arm; writes
`results.json` in the output folder.

A recipe with `tools` (recipes/lookup-cpu.yaml) trains over episodes: the SFT-only arm trains on
the demonstrated episodes as the warm-up does (loss on every assistant turn), every arm is scored
on greedy episodes, and each seed also reports tool calls per validation episode after the warm-up,
after PPO and after SFT-only.

Example:
    OMP_NUM_THREADS=2 python bench/reft_effect.py                      # recipes/arith-cpu.yaml, 3 seeds
    python bench/reft_effect.py --seeds 1 --set rl.steps=20 --out /tmp/reft-quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_recipe(recipe: Path, run_dir: Path, seed: int, overrides: list[str]) -> dict:
    """`rft train` in a subprocess (exactly what a user runs); returns summary.json."""
    command = [
        sys.executable,
        "-m",
        "rft_cli",
        "train",
        str(recipe),
        "--output-dir",
        str(run_dir),
        "--quiet",
        "--set",
        f"seed={seed}",
    ]
    if (run_dir / "config.yaml").is_file():  # a bench run that was stopped: continue the seed's run
        command.append("--resume")
    for override in overrides:
        command += ["--set", override]
    subprocess.run(command, cwd=ROOT, check=True)
    return json.loads((run_dir / "summary.json").read_text())


def sft_only_arm(
    recipe: Path, run_dir: Path, seed: int, seconds: float, overrides: list[str], lr_scale: float
) -> dict:
    """Continue SFT from the run's warm-up checkpoint for `seconds` of wall-clock time, then evaluate.

    The learning rate is constant at `lr_scale` times the recipe's `sft.learning_rate`: the warm-up
    ended its cosine schedule near zero, and restarting at the peak can knock a converged model off
    its optimum, so the bench runs a low and a peak rate and compares PPO with the better one.
    """
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from rft_cli.config import load_run_config
    from rft_cli.training.context import evaluate_greedy
    from rft_cli.training.models import apply_lora, save_pretrained
    from rft_cli.training.run import preflight
    from rft_cli.training.seeding import seed_everything
    from rft_cli.training.sft import SFTCollator, build_encoder, sft_examples, sft_rows
    from rft_cli.training.trl_bridge import precision_args

    config = load_run_config(recipe, [f"seed={seed}", *overrides])
    pre = preflight(config)
    sft_dir = run_dir / "checkpoints" / "sft"
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    # Under LoRA the warm-up checkpoint holds merged weights; the arm trains fresh adapters on them,
    # as PPO does from the same checkpoint.
    model = apply_lora(AutoModelForCausalLM.from_pretrained(sft_dir), config.model)
    settings = config.sft
    examples = sft_examples(pre.train_rows, config.data.demonstration_field)
    encode = None
    if pre.tools is not None:  # whole demonstrated episodes, as the warm-up trains on them
        from types import SimpleNamespace

        from rft_cli.generation import stop_token_ids

        ctx = SimpleNamespace(config=config, train_rows=pre.train_rows, tools=pre.tools)
        encode = build_encoder(ctx, tokenizer)
        encode.stop = set(stop_token_ids(model, tokenizer))
        examples = [{"row": i} for i in sft_rows(pre.train_rows, config.data.demonstration_field)]

    class StopAfter(TrainerCallback):
        """Stops training once the PPO stage's wall-clock time is spent."""

        def __init__(self) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            control.should_training_stop = time.perf_counter() - self.started >= seconds
            return control

    seed_everything(seed + 1)
    name = f"sft-only-lr{lr_scale:g}"
    # The warm-up's own precision and memory settings (TRL's SFTConfig defaults to bf16 autocast and
    # gradient checkpointing, which `rft train` turns off for a float32 model).
    args = SFTConfig(
        output_dir=str(run_dir / f"{name}-work"),
        max_steps=10**6,
        learning_rate=settings.learning_rate * lr_scale,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        lr_scheduler_type="constant",
        max_length=settings.max_length,
        completion_only_loss=True,
        save_strategy="no",
        report_to=[],
        logging_steps=10**6,
        seed=seed + 1,
        disable_tqdm=True,
        use_cpu=not _cuda(),
        **precision_args(config.model),
        **(
            {"remove_unused_columns": False, "dataset_kwargs": {"skip_prepare_dataset": True}}
            if encode is not None
            else {}
        ),
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        callbacks=[StopAfter()],
    )
    if encode is not None:  # each batch of row numbers tokenized as `rft train`'s warm-up does
        trainer.data_collator = SFTCollator(encode, trainer.data_collator)
    started = time.perf_counter()
    trainer.train()
    trained_s = time.perf_counter() - started
    save_pretrained(trainer.model, tokenizer, run_dir / name)  # LoRA adapters merged
    # Score the saved model as `rft eval` and the recipe's own evaluation would, loaded afresh.
    saved = AutoModelForCausalLM.from_pretrained(run_dir / name)
    valid = evaluate_greedy(
        saved,
        tokenizer,
        pre.grader,
        pre.valid_rows[: config.eval.samples],
        demonstration_field=config.data.demonstration_field,
        max_new_tokens=config.eval.max_new_tokens or config.rl.max_new_tokens,
        batch_size=config.eval.batch_size,
        tools=pre.tools,
    )
    pre.close()
    return {
        **valid,
        "elapsed_s": trained_s,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.global_step
        * settings.batch_size
        * settings.gradient_accumulation_steps
        / len(examples),
    }


def score(
    recipe: Path, overrides: list[str], model_dir: Path | None, rows_file: Path | None
) -> dict:
    """valid_accuracy and valid_reward_mean of one model's greedy answers, scored as the recipe's own
    evaluation scores (`evaluate_greedy`, its eval settings): on `rows_file` (all its rows), or on
    the recipe's first `eval.samples` validation rows. `model_dir` None is the recipe's base model."""
    from rft_cli.config import load_run_config
    from rft_cli.training.context import evaluate_greedy
    from rft_cli.training.models import load_model, load_tokenizer
    from rft_cli.training.run import preflight

    config = load_run_config(recipe, overrides)
    pre = preflight(config)
    rows = (
        [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()]
        if rows_file is not None
        else pre.valid_rows[: config.eval.samples]
    )
    tokenizer = load_tokenizer(config.model, model_dir)
    model = load_model(config.model, tokenizer, model_dir, trainable=False)
    started = time.perf_counter()
    result = evaluate_greedy(
        model,
        tokenizer,
        pre.grader,
        rows,
        demonstration_field=config.data.demonstration_field,
        max_new_tokens=config.eval.max_new_tokens or config.rl.max_new_tokens,
        batch_size=config.eval.batch_size,
        tools=pre.tools,
    )
    pre.close()
    return {**result, "rows": len(rows), "eval_s": time.perf_counter() - started}


def base_arm(recipe: Path, overrides: list[str], out: Path, rows_file: Path | None) -> dict:
    """The recipe's base model (before any training) scored the same way, once: greedy decoding
    makes it the same for every seed. Kept in `out`, so a rerun does not score it again."""
    cached = out / f"base{'-' + rows_file.stem if rows_file else ''}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    result = score(recipe, overrides, None, rows_file)
    out.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(result))
    return result


def find_latest_complete(folder: Path) -> Path:
    """The run's last step checkpoint (PPO's last step: the run saves it whatever save_interval)."""
    from rft_cli.run_folder.checkpoints import find_latest_complete as latest

    return latest(folder)


def held_out_scores(
    recipe: Path, overrides: list[str], run_dir: Path, rows_file: Path, arms: dict
) -> dict:
    """Each trained arm's held-out accuracy on `rows_file`: the warm-up, PPO's last step, final/ and
    the chosen SFT-only arm (`arms`: arm -> model folder)."""
    return {
        arm: score(recipe, overrides, folder, rows_file)["valid_accuracy"]
        for arm, folder in arms.items()
    }


# Issue 15's bar for the default recipe: PPO at least 10 points over the warm-up and over the
# equal-time SFT-only arm, and final/ never more than 1 point below the warm-up.
GAIN = 0.10
FINAL_SLACK = 0.01


def verdict(row: dict) -> dict:
    """Whether one seed's figures meet the bar (accuracies as fractions)."""
    gain = row["ppo"] - row["warmup"] >= GAIN - 1e-9 and row["ppo"] - row["sft_only"] >= GAIN - 1e-9
    final = row.get("final")
    kept = final is not None and final >= row["warmup"] - FINAL_SLACK - 1e-9
    return {"effect": gain, "final_not_worse": kept}


def tool_calls_of(run_dir: Path) -> dict:
    """Tool calls per validation episode after the warm-up and at PPO's last evaluation (a recipe
    with tools logs them as `valid_tool_calls_per_episode`)."""
    from rft_cli.run_folder.metrics import read_metrics

    key = "valid_tool_calls_per_episode"
    evaluated = [r for r in read_metrics(run_dir / "metrics.jsonl") if key in r]
    last = {r["stage"]: r[key] for r in evaluated}
    return {"warmup": last.get("sft"), "ppo": last.get("rl")}


def distribution_table(results: list[dict]) -> str:
    """Each seed's figures as a markdown table (README reports the distribution, not only the mean)."""
    with_base = any(r.get("base") is not None for r in results)
    lines = [
        f"| seed |{' base |' if with_base else ''} warm-up | SFT-only | PPO (last step) | final/ (source) | final/ held-out | PPO - warm-up | PPO - SFT-only | bar |",
        "| --- " * (9 + with_base) + "|",
    ]
    for r in results:
        v = verdict(r)
        final = (
            "-" if r.get("final") is None else f"{100 * r['final']:.1f}% ({r.get('final_source')})"
        )
        held_out = "-" if r.get("final_heldout") is None else f"{100 * r['final_heldout']:.1f}%"
        mark = (
            "yes"
            if v["effect"] and v["final_not_worse"]
            else ("final ok, no effect" if v["final_not_worse"] else "NO")
        )
        base = f" {100 * r['base']:.1f}% |" if with_base else ""
        lines.append(
            f"| {r['seed']} |{base} {100 * r['warmup']:.1f}% | {100 * r['sft_only']:.1f}% | {100 * r['ppo']:.1f}% | {final} | {held_out} | "
            f"{100 * (r['ppo'] - r['warmup']):+.1f} | {100 * (r['ppo'] - r['sft_only']):+.1f} | {mark} |"
        )
    met = sum(verdict(r)["effect"] for r in results)
    kept = sum(verdict(r)["final_not_worse"] for r in results)
    lines.append(
        f"\nPPO >= +{100 * GAIN:.0f} points over both arms on {met} of {len(results)} seeds; "
        f"final/ within {100 * FINAL_SLACK:.0f} point of the warm-up on {kept} of {len(results)}."
    )
    return "\n".join(lines)


def _calls(row: dict, arm: str) -> str:
    value = row["tool_calls"].get(arm)
    return "-" if value is None else f"{value:.2f}"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:5.1f} ± {100 * sd:4.1f}  (min {100 * min(values):.1f}, max {100 * max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "arith-cpu.yaml")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0 .. N-1)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="recipe override key=value"
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/rft-reft-effect"))
    parser.add_argument(
        "--results",
        default="results.json",
        help="file name of the results in --out (processes that share --out, one seed each, "
        "name their own)",
    )
    parser.add_argument(
        "--table",
        type=Path,
        nargs="+",
        help="only print the table of these results.json files "
        "(runs split over several processes) and exit",
    )
    parser.add_argument(
        "--sft-only-lr-scales",
        default="0.1,1",
        help="SFT-only arms: constant lr as fractions of sft.learning_rate; PPO is compared with the best",
    )
    parser.add_argument(
        "--base",
        action="store_true",
        help="also score the recipe's base model once (a pretrained model; tiny ones start random)",
    )
    parser.add_argument(
        "--test",
        type=Path,
        help="held-out rows (JSONL) every arm is scored on, reported instead of the validation "
        "scores (which still choose final/ and the SFT-only learning rate)",
    )
    args = parser.parse_args()
    if args.table:
        rows = sorted(
            (r for path in args.table for r in json.loads(path.read_text())),
            key=lambda r: r["seed"],
        )
        print(distribution_table(rows))
        return

    base = base_arm(args.recipe, args.overrides, args.out, args.test) if args.base else None
    if base is not None:
        print(json.dumps({"base": base}), flush=True)
    results = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        run_dir = args.out / f"seed-{seed}"
        summary = run_recipe(args.recipe, run_dir, seed, args.overrides)
        sft, rl = summary["stages"]["sft"], summary["stages"]["rl"]
        arms = {
            scale: sft_only_arm(args.recipe, run_dir, seed, rl["elapsed_s"], args.overrides, scale)
            for scale in (float(x) for x in args.sft_only_lr_scales.split(","))
        }
        best = max(arms, key=lambda scale: arms[scale]["valid_accuracy"])
        # `ppo` is the last RL step's score; `final` is the model in final/ (rl.final: best may hand
        # back the warm-up) on the rows that chose it; `final_heldout` on validation rows that did
        # not (None unless data.valid holds more than eval.samples rows).
        row = {
            "seed": seed,
            "base": None if base is None else base["valid_accuracy"],
            "warmup": sft["valid_accuracy"],
            "ppo": rl["valid_accuracy"],
            "sft_only": arms[best]["valid_accuracy"],
            "final": summary.get("final_valid_accuracy"),
            "final_source": summary.get("final_source"),
            "final_heldout": summary.get("final_heldout_accuracy"),
            "heldout_rows": summary.get("heldout_rows"),
            "sft_only_best_lr_scale": best,
            "sft_only_by_lr_scale": {
                f"{k:g}": {
                    "valid_accuracy": v["valid_accuracy"],
                    "epochs": round(v["epochs"], 2),
                    "elapsed_s": round(v["elapsed_s"], 1),
                }
                for k, v in arms.items()
            },
            "sft_s": sft["elapsed_s"],
            "ppo_s": rl["elapsed_s"],
            "total_s": summary["elapsed_s"],
            "run_dir": str(run_dir),
        }
        if "valid_tool_calls_per_episode" in arms[best]:  # a recipe with tools
            row["tool_calls"] = {
                **tool_calls_of(run_dir),
                "sft_only": arms[best]["valid_tool_calls_per_episode"],
            }
        if args.test is not None:
            # the validation figures stay beside the held-out ones, which the tables report
            row["valid"] = {arm: row[arm] for arm in ("warmup", "ppo", "sft_only", "final")}
            row["scored_on"] = str(args.test)
            row.update(
                held_out_scores(
                    args.recipe,
                    args.overrides,
                    run_dir,
                    args.test,
                    {
                        "warmup": run_dir / "checkpoints" / "sft",
                        "ppo": find_latest_complete(run_dir / "checkpoints"),
                        "final": run_dir / "final",
                        "sft_only": run_dir / f"sft-only-lr{best:g}",
                    },
                )
            )
        results.append(row)
        print(json.dumps(row), flush=True)
        # Written after every seed, so a long multi-seed run that is stopped keeps what it measured.
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / args.results).write_text(json.dumps(results, indent=2))
    print(f"\nheld-out greedy accuracy (%), {len(results)} seeds, mean ± sd:")
    for arm, label in (
        ("base", "base model"),
        ("warmup", "warm-up (SFT)"),
        ("sft_only", "SFT-only, best lr"),
        ("ppo", "PPO (ReFT), last step"),
        ("final", "final/ (rl.final)"),
        ("final_heldout", "final/, held-out rows"),
    ):
        values = [r[arm] for r in results if r.get(arm) is not None]
        if values:
            print(f"  {label:22s} {_spread(values)}")
    print(
        "  final/ from           "
        + ", ".join(f"seed {r['seed']}: {r['final_source']}" for r in results)
    )
    gains = [r["ppo"] - r["warmup"] for r in results]
    over_sft = [r["ppo"] - r["sft_only"] for r in results]
    print(f"  PPO - warm-up          {_spread(gains)}")
    print(f"  PPO - SFT-only         {_spread(over_sft)}")
    print(
        f"  recipe wall-clock s    {statistics.mean(r['total_s'] for r in results):.0f} "
        f"(SFT {statistics.mean(r['sft_s'] for r in results):.0f}, PPO {statistics.mean(r['ppo_s'] for r in results):.0f})"
    )
    with_tools = [r for r in results if r.get("tool_calls")]
    if with_tools:
        print(
            "  tool calls / episode   "
            + ", ".join(
                f"seed {r['seed']}: warm-up {_calls(r, 'warmup')} -> PPO {_calls(r, 'ppo')} "
                f"(SFT-only {_calls(r, 'sft_only')})"
                for r in with_tools
            )
        )
    print("\n" + distribution_table(results))


if __name__ == "__main__":
    main()
