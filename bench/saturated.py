"""Does our PPO add on top of a saturated warm-up? A plain task: three-number additions, every demonstration step by step.

Beside the designed default task (a mixture of demonstration forms), this bench takes the plainest
case: every demonstration works the sum step by step ("59+1+9=?" -> "59+1=60. 60+9=69. #### 69"),
made by rft's own generator (`rft data make-arith --steps 2 --one-line-share 0`; single-digit
numbers added by default, `--max-operand 99` for two-digit ones), and a warm-up
trained for many epochs. For each seed:

1. the warm-up, `rft train --stage sft` with `sft.epochs` = --epochs (the recipe's other SFT settings);
2. the saturation check: supervised training continued from the warm-up for the PPO stage's
   seconds (bench/reft_effect.py's SFT-only arm at a constant 0.1x the recipe's peak lr; the peak
   itself knocks a converged model off its optimum, NOTES.md Phase 4), so "saturated" means more
   SFT does not raise held-out accuracy by more than --tolerance;
3. PPO on top (`rft train --stage rl --resume`, the recipe's RL settings, --rl-steps steps), and
   with --grpo TRL's GRPO for the same steps from the same warm-up (for reference, not equal time).

All models are scored by the same greedy evaluation on the same 400 held-out sums. Prints one line
per seed and a markdown table; writes results.json in the output folder.

Example:
    OMP_NUM_THREADS=1 python bench/saturated.py --seeds 1 --grpo
    python bench/saturated.py --recipe recipes/tiny-test.yaml --train-rows 64 --epochs 1 --rl-steps 2 --out /tmp/sat-tiny
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from algorithms import trl_overrides
from rft_runs import (
    ROOT,
    best_validated,
    fork_run,
    machine_load,
    read_metrics,
    rft_train,
    sampled_tokens,
)


def plain_task(max_operand: int) -> list[str]:
    """`rft data make-arith` options of the plain task: 10-99 plus two numbers of 1-`max_operand`, all step by step.

    max_operand 9 is the default task's arithmetic (NOTES Phase 4, v5) with three numbers instead of
    five and no one-line demonstrations; 99 is NOTES Phase 3's task v4 ("59+6+66=?").
    """
    return [
        "--style",
        "equation",
        "--steps",
        "2",
        "--max-start",
        "99",
        "--max-operand",
        str(max_operand),
        "--max-total",
        str(99 + 2 * max_operand),
        "--ops",
        "+",
        "--one-line-share",
        "0",
    ]


def make_plain_data(
    out_dir: Path, n_train: int, n_valid: int, seed: int, max_operand: int = 9
) -> Path:
    """Write train.jsonl and valid.jsonl of the plain task with `rft data make-arith`; returns the folder."""
    command = [
        sys.executable,
        "-m",
        "rft_cli",
        "data",
        "make-arith",
        str(out_dir),
        "--train",
        str(n_train),
        "--valid",
        str(n_valid),
        "--seed",
        str(seed),
        *plain_task(max_operand),
    ]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return out_dir


def saturation(warmup: float, more_sft: dict[str, float], tolerance: float) -> dict[str, Any]:
    """Whether continued SFT left held-out accuracy within `tolerance` of the warm-up's (the best lr counts).

    >>> saturation(0.80, {"0.1": 0.81, "1": 0.75}, 0.02)["saturated"]
    True
    """
    best_scale = max(more_sft, key=more_sft.get)
    gain = more_sft[best_scale] - warmup
    return {
        "saturated": gain <= tolerance,
        "more_sft_gain": gain,
        "more_sft_best_lr_scale": best_scale,
    }


def _rl_arm(
    recipe: Path, seed_dir: Path, seed: int, arm: str, overrides: list[str], answers: int
) -> dict[str, Any]:
    """One RL arm from a copy of the warm-up; its held-out figures, tokens and seconds."""
    run_dir = seed_dir / arm
    fork_run(seed_dir / "warmup", run_dir)
    summary = rft_train(
        recipe, run_dir, seed, [*overrides, f"rl.algorithm={arm}"], stage="rl", resume=True
    )
    records, rl = read_metrics(run_dir), summary["stages"]["rl"]
    return {
        "last": rl["valid_accuracy"],
        "final": summary.get("final_valid_accuracy"),
        "final_source": summary.get("final_source"),
        "best": best_validated(records, summary.get("start_valid_accuracy")),
        "steps": rl["steps"],
        "rl_s": rl["elapsed_s"],
        "eval_s": rl["eval_s"],
        "sampled_tokens": sampled_tokens(records, answers),
        "load": machine_load(),
    }


def run_seed(
    recipe: Path, out: Path, seed: int, overrides: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """Warm-up, saturation check, PPO (and GRPO) for one seed."""
    from reft_effect import sft_only_arm

    from rft_cli.config import load_run_config

    seed_dir = out / f"seed-{seed}"
    config = load_run_config(recipe, [f"seed={seed}", *overrides])
    answers = config.rl.prompts_per_step * config.rl.samples_per_prompt
    warm_dir = seed_dir / "warmup"
    warm = (
        json.loads((warm_dir / "summary.json").read_text())
        if (warm_dir / "summary.json").is_file()
        else rft_train(recipe, warm_dir, seed, overrides, stage="sft")
    )
    row: dict[str, Any] = {
        "seed": seed,
        "warmup": warm["stages"]["sft"]["valid_accuracy"],
        "sft_s": warm["stages"]["sft"]["elapsed_s"],
        "epochs": config.sft.epochs,
        "arms": {},
    }
    row["arms"]["ppo"] = _rl_arm(recipe, seed_dir, seed, "ppo", overrides, answers)
    if args.grpo:
        row["arms"]["grpo"] = _rl_arm(
            recipe, seed_dir, seed, "grpo", [*overrides, *trl_overrides(recipe, overrides)], answers
        )
    seconds = row["arms"]["ppo"]["rl_s"]
    # The SFT-only arms write into the warm-up's folder, so they run after the RL arms have copied it.
    more = {
        f"{scale:g}": sft_only_arm(recipe, warm_dir, seed, seconds, overrides, scale)
        for scale in args.sft_lr_scales
    }
    row["more_sft"] = {
        k: {
            "valid_accuracy": v["valid_accuracy"],
            "epochs": round(v["epochs"], 2),
            "elapsed_s": round(v["elapsed_s"], 1),
        }
        for k, v in more.items()
    }
    row.update(
        saturation(row["warmup"], {k: v["valid_accuracy"] for k, v in more.items()}, args.tolerance)
    )
    return row


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def markdown_table(results: list[dict[str, Any]]) -> str:
    """One line per seed: warm-up, more SFT, PPO (and GRPO) last step and final/, seconds."""
    arms = sorted({arm for r in results for arm in r["arms"]}, key=["ppo", "grpo"].index)
    head = ["seed", "warm-up (epochs, s)", "more SFT, equal time (best lr)", "saturated"]
    for arm in arms:
        head += [f"{arm} last step", f"{arm} final/", f"{arm} s (steps)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in results:
        cells = [
            str(r["seed"]),
            f"{_pct(r['warmup'])} ({r['epochs']:g}, {r['sft_s']:.0f})",
            f"{_pct(r['warmup'] + r['more_sft_gain'])} (lr x{r['more_sft_best_lr_scale']})",
            "yes" if r["saturated"] else "no",
        ]
        for arm in arms:
            a = r["arms"].get(arm)
            cells += (
                ["-", "-", "-"]
                if a is None
                else [
                    _pct(a["last"]),
                    f"{_pct(a['final'])} ({a['final_source']})",
                    f"{a['rl_s']:.0f} ({a['steps']})",
                ]
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--recipe",
        type=Path,
        default=ROOT / "recipes" / "arith-cpu.yaml",
        help="SFT and RL settings (its data is replaced by the plain task)",
    )
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--train-rows", type=int, default=1000)
    parser.add_argument("--valid-rows", type=int, default=400)
    parser.add_argument(
        "--max-operand",
        type=int,
        default=9,
        help="largest number added (99: NOTES Phase 3's task v4)",
    )
    parser.add_argument("--epochs", type=float, default=40.0, help="warm-up epochs (sft.epochs)")
    parser.add_argument("--rl-steps", type=int, default=100)
    parser.add_argument(
        "--grpo", action="store_true", help="also TRL's GRPO from the same warm-up, same steps"
    )
    parser.add_argument(
        "--sft-lr-scales",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[0.1],
        help="continued-SFT arms: constant lr as fractions of sft.learning_rate",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.02,
        help="largest gain of more SFT that still counts as saturated",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="recipe override key=value"
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/rft-saturated"))
    args = parser.parse_args()

    data = make_plain_data(
        args.out / "data", args.train_rows, args.valid_rows, seed=0, max_operand=args.max_operand
    )
    overrides = [
        f"data.train={data / 'train.jsonl'}",
        f"data.valid={data / 'valid.jsonl'}",
        "data.demonstration_field=solution",
        f"sft.epochs={args.epochs}",
        f"rl.steps={args.rl_steps}",
        *args.overrides,
    ]
    results = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        started = time.perf_counter()
        row = run_seed(args.recipe.resolve(), args.out, seed, overrides, args)
        row["seed_wall_s"] = time.perf_counter() - started
        results.append(row)
        print(json.dumps(row), flush=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print()
    print(markdown_table(results))


if __name__ == "__main__":
    main()
