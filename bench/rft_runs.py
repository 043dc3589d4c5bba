"""Small helpers the benches share: `rft train` in a subprocess, a run's metrics, and the figures read from them.

Every bench run goes through rft's own command line (exactly what a user runs), so a bench measures
the shipped code paths; these helpers only start runs and read what they wrote.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def rft_train(
    recipe: Path,
    run_dir: Path,
    seed: int,
    overrides: list[str],
    *,
    stage: str = "all",
    resume: bool = False,
) -> dict[str, Any]:
    """`rft train RECIPE --stage STAGE` in a subprocess; returns the run's summary.json."""
    command = [
        sys.executable,
        "-m",
        "rft_cli",
        "train",
        str(recipe),
        "--output-dir",
        str(run_dir),
        "--quiet",
        "--stage",
        stage,
        "--set",
        f"seed={seed}",
    ]
    for override in overrides:
        command += ["--set", override]
    if resume:
        command.append("--resume")
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return json.loads((run_dir / "summary.json").read_text())


def fork_run(warmup_dir: Path, run_dir: Path) -> None:
    """Copy a finished `--stage sft` run, so `--stage rl --resume` starts each arm from the same warm-up."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    shutil.copytree(warmup_dir, run_dir, ignore=shutil.ignore_patterns("final", "samples"))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as a list of dicts (one per logged step)."""
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rl_lines(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The RL stage's metric lines, in step order."""
    return sorted((r for r in records if r.get("stage") == "rl"), key=lambda r: r["step"])


def rl_train_seconds(records: list[dict[str, Any]], first: int, last: int) -> float:
    """RL seconds spent between the ends of steps `first` and `last`, evaluations left out.

    Starting after step `first` (not at 0) leaves out loading and the first step's warm-up, which
    differ between PPO and TRL's trainers but do not grow with the step count.
    """
    lines = {r["step"]: r for r in rl_lines(records)}
    if first not in lines or last not in lines or last <= first:
        raise ValueError(
            f"no RL metrics lines for steps {first} and {last} (steps logged: {sorted(lines)})"
        )
    evals = sum(r.get("eval_s") or 0.0 for s, r in lines.items() if first < s <= last)
    return lines[last]["stage_elapsed_s"] - lines[first]["stage_elapsed_s"] - evals


def sampled_tokens(records: list[dict[str, Any]], answers_per_step: int) -> int:
    """Answer tokens sampled over the RL stage (mean answer length x answers, summed over steps)."""
    return round(
        sum(r.get("response_length_mean", 0.0) * answers_per_step for r in rl_lines(records))
    )


def best_validated(records: list[dict[str, Any]], start_accuracy: float | None) -> float | None:
    """The highest validation accuracy of the RL stage's evaluations and the start's."""
    scores = [r["valid_accuracy"] for r in rl_lines(records) if r.get("valid_accuracy") is not None]
    if start_accuracy is not None:
        scores.append(start_accuracy)
    return max(scores) if scores else None


def steps_for_time(
    ppo_steps: int, ppo_step_s: float, arm_step_s: float, max_factor: float = 5.0
) -> int:
    """RL steps that take an arm as long as PPO's `ppo_steps` did, from the two per-step times.

    >>> steps_for_time(100, 1.0, 2.0)
    50
    """
    if ppo_step_s <= 0 or arm_step_s <= 0:
        raise ValueError(f"per-step times must be positive (PPO {ppo_step_s}, arm {arm_step_s})")
    steps = math.floor(ppo_steps * ppo_step_s / arm_step_s + 0.5)
    return max(1, min(steps, math.ceil(max_factor * ppo_steps)))


def spread(values: list[float]) -> str:
    """'mean ± sd (min, max)' in percent points for accuracies in [0, 1]."""
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} ± {100 * sd:.1f} (min {100 * min(values):.1f}, max {100 * max(values):.1f})"


def machine_load() -> str:
    """The 1/5/15-minute load averages, for the notes."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"
