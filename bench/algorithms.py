"""Which RL algorithm? Our PPO against TRL's GRPO and RLOO, from the same warm-up, at equal wall-clock time.

For each seed: the recipe's warm-up once (`rft train --stage sft`); then each arm continues a copy of
that run (`rft train --stage rl --resume --set rl.algorithm=ARM`), so all three start from the same
weights and are scored on the same validation rows by the same greedy evaluation. PPO runs the
recipe's `rl.steps`. rft has no time-budget stop, so the GRPO and RLOO arms get the step count that
fills PPO's RL training time: a short calibration run of each (`--calibration-steps`, from the same
warm-up) measures its seconds per step against PPO's over the same first steps. Evaluations are
left out of the per-step times (they cost the same per evaluation in every arm) and reported beside.
PPO-only keys of the recipe (vf_coef, ...) go back to their defaults for TRL's arms; every other
setting (learning rate, batch, KL coefficient as TRL's beta, clip range, temperature) is shared.

Reported per arm: the last step's held-out greedy accuracy, the model in `final/` (the best
validated, the warm-up included: rl.final best), answer tokens sampled, steps and seconds. Prints a
markdown table and who wins each seed; writes `results.json` in the output folder.

Example:
    OMP_NUM_THREADS=1 python bench/algorithms.py                     # recipes/arith-cpu.yaml, 3 seeds
    python bench/algorithms.py --recipe recipes/tiny-test.yaml --seeds 1 --out /tmp/algos-tiny
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rft_runs import (
    ROOT,
    best_validated,
    fork_run,
    machine_load,
    read_metrics,
    rft_train,
    rl_lines,
    rl_train_seconds,
    sampled_tokens,
    spread,
    steps_for_time,
)

ARMS = ("ppo", "grpo", "rloo")


def trl_overrides(recipe: Path, overrides: list[str]) -> list[str]:
    """`--set` lines that put the recipe's PPO-only RL keys back to their defaults, so GRPO/RLOO accept it."""
    from rft_cli.config import _PPO_ONLY, RLSettings, load_run_config

    rl = load_run_config(recipe, overrides).rl
    defaults = RLSettings.model_fields
    return [
        f"rl.{key}={json.dumps(defaults[key].default)}"
        for key in _PPO_ONLY
        if key in rl.model_fields_set and getattr(rl, key) != defaults[key].default
    ]


def arm_row(
    arm: str, summary: dict[str, Any], records: list[dict[str, Any]], answers_per_step: int
) -> dict[str, Any]:
    """One arm's figures from its summary.json and metrics lines."""
    rl = summary["stages"]["rl"]
    lines = rl_lines(records)
    eval_s = rl["eval_s"] or 0.0
    return {
        "arm": arm,
        "steps": rl["steps"],
        "last": rl["valid_accuracy"],
        "final": summary.get("final_valid_accuracy"),
        "final_source": summary.get("final_source"),
        "best": best_validated(records, summary.get("start_valid_accuracy")),
        "sampled_tokens": sampled_tokens(records, answers_per_step),
        "rl_s": rl["elapsed_s"],
        "eval_s": eval_s,
        "train_s": rl["elapsed_s"] - eval_s,
        "train_reward_last": lines[-1].get("train_reward_mean") if lines else None,
    }


def calibrate(
    recipe: Path, seed_dir: Path, seed: int, arm: str, overrides: list[str], steps: int
) -> float:
    """Seconds per RL step of `arm` over steps 2..`steps`, from a short run on a copy of the warm-up."""
    run_dir = seed_dir / f"calibrate-{arm}"
    fork_run(seed_dir / "warmup", run_dir)
    rft_train(
        recipe,
        run_dir,
        seed,
        [*overrides, f"rl.algorithm={arm}", f"rl.steps={steps}", f"eval.interval={steps}"],
        stage="rl",
        resume=True,
    )
    return rl_train_seconds(read_metrics(run_dir), 1, steps) / (steps - 1)


def run_seed(
    recipe: Path, out: Path, seed: int, overrides: list[str], calibration_steps: int
) -> dict[str, Any]:
    """The warm-up, then PPO, GRPO and RLOO from it; returns the seed's row."""
    from rft_cli.config import load_run_config

    seed_dir = out / f"seed-{seed}"
    config = load_run_config(recipe, [f"seed={seed}", *overrides])
    answers = config.rl.prompts_per_step * config.rl.samples_per_prompt
    warm_dir = seed_dir / "warmup"
    # A finished warm-up is reused, so a bench stopped midway restarts without training it again.
    warm = (
        json.loads((warm_dir / "summary.json").read_text())
        if (warm_dir / "summary.json").is_file()
        else rft_train(recipe, warm_dir, seed, overrides, stage="sft")
    )
    row: dict[str, Any] = {
        "seed": seed,
        "warmup": warm["stages"]["sft"]["valid_accuracy"],
        "sft_s": warm["stages"]["sft"]["elapsed_s"],
        "arms": {},
        "load": {},
    }
    ppo_overrides = [*overrides, "rl.algorithm=ppo"]
    ppo_dir = seed_dir / "ppo"
    fork_run(seed_dir / "warmup", ppo_dir)
    summary = rft_train(recipe, ppo_dir, seed, ppo_overrides, stage="rl", resume=True)
    ppo_records = read_metrics(ppo_dir)
    row["arms"]["ppo"] = arm_row("ppo", summary, ppo_records, answers)
    row["load"]["ppo"] = machine_load()
    ppo_steps = config.rl.steps
    k = min(calibration_steps, ppo_steps)
    ppo_calibration = rl_train_seconds(ppo_records, 1, k) / (k - 1) if k >= 2 else None
    trl_fix = trl_overrides(recipe, overrides)
    for arm in ARMS[1:]:
        arm_overrides = [*overrides, *trl_fix, f"rl.algorithm={arm}"]
        steps = ppo_steps
        if ppo_calibration is not None:
            per_step = calibrate(recipe, seed_dir, seed, arm, arm_overrides, k)
            steps = steps_for_time(ppo_steps, ppo_calibration, per_step)
            row.setdefault("calibration", {})[arm] = {
                "steps": k,
                "arm_step_s": per_step,
                "ppo_step_s": ppo_calibration,
            }
        run_dir = seed_dir / arm
        fork_run(seed_dir / "warmup", run_dir)
        summary = rft_train(
            recipe, run_dir, seed, [*arm_overrides, f"rl.steps={steps}"], stage="rl", resume=True
        )
        row["arms"][arm] = arm_row(arm, summary, read_metrics(run_dir), answers)
        row["load"][arm] = machine_load()
    return row


def winners(row: dict[str, Any], key: str) -> list[str]:
    """The arms with the highest `key` accuracy in a seed's row (ties keep every winner)."""
    scores = {arm: figures[key] for arm, figures in row["arms"].items() if figures[key] is not None}
    if not scores:
        return []
    top = max(scores.values())
    return [arm for arm, score in scores.items() if score == top]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def markdown_table(results: list[dict[str, Any]]) -> str:
    """One line per seed and arm, then each arm's mean over seeds."""
    lines = [
        "| seed | arm | warm-up | last step | final/ (best validated) | steps | RL train s | eval s | sampled tokens |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results:
        for arm, f in row["arms"].items():
            lines.append(
                f"| {row['seed']} | {arm} | {_pct(row['warmup'])} | {_pct(f['last'])} | "
                f"{_pct(f['final'])} ({f['final_source']}) | {f['steps']} | {f['train_s']:.0f} | "
                f"{f['eval_s']:.0f} | {f['sampled_tokens']:,} |"
            )
    for arm in ARMS:
        rows = [r["arms"][arm] for r in results if arm in r["arms"]]
        if not rows:
            continue
        mean = {
            key: statistics.mean(f[key] for f in rows if f[key] is not None)
            if any(f[key] is not None for f in rows)
            else None
            for key in ("last", "final", "steps", "train_s", "eval_s", "sampled_tokens")
        }
        warm = statistics.mean(r["warmup"] for r in results if r["warmup"] is not None)
        lines.append(
            f"| mean | {arm} | {_pct(warm)} | {_pct(mean['last'])} | {_pct(mean['final'])} | {mean['steps']:.0f} | "
            f"{mean['train_s']:.0f} | {mean['eval_s']:.0f} | {mean['sampled_tokens']:,.0f} |"
        )
    return "\n".join(lines)


def verdict(results: list[dict[str, Any]]) -> str:
    """Who wins each seed (last step and final/), and the mean and spread of each arm."""
    lines = []
    for row in results:
        lines.append(
            f"seed {row['seed']}: best last step {'/'.join(winners(row, 'last'))}, "
            f"best final/ {'/'.join(winners(row, 'final'))}"
        )
    for arm in ARMS:
        for key in ("last", "final"):
            values = [
                r["arms"][arm][key]
                for r in results
                if arm in r["arms"] and r["arms"][arm][key] is not None
            ]
            if values:
                lines.append(f"{arm:5s} {key:5s} {spread(values)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "arith-cpu.yaml")
    parser.add_argument(
        "--seeds", type=int, default=3, help="number of seeds (first-seed .. first-seed + N - 1)"
    )
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="recipe override key=value"
    )
    parser.add_argument(
        "--calibration-steps",
        type=int,
        default=10,
        help="steps of the timing run per TRL arm (0 or 1: give every arm PPO's step count)",
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/rft-algorithms"))
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        started = time.perf_counter()
        row = run_seed(
            args.recipe.resolve(), args.out, seed, args.overrides, args.calibration_steps
        )
        row["seed_wall_s"] = time.perf_counter() - started
        results.append(row)
        print(json.dumps(row), flush=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print()
    print(markdown_table(results))
    print()
    print(verdict(results))


if __name__ == "__main__":
    main()
