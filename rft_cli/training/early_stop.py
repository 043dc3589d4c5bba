"""Ending RL early when validation only falls: the `valid_regression` alarm in `alarms.early_stop`.

A run whose validation reward sits far below its best (the starting model's score included) for
several evaluations in a row is making the model worse; it ends as a normal finish, with final/
= the best validated model (under `rl.final: best`) and `summary.json` saying why it stopped.
Both RL loops (our PPO and the TRL bridge) use the same watch, on every process alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rft_cli.run_folder import checkpoints as ckpt
from rft_cli.run_folder.alarms import RegressionWatch
from rft_cli.run_folder.metrics import read_metrics


def start_checkpoint(checkpoints: Path) -> Path | None:
    """The model RL started from: the warm-up, else the saved base model (None if neither is saved)."""
    for folder in (checkpoints / "sft", checkpoints / "base"):
        if ckpt.is_complete(folder):
            return folder
    return None


def regression_watch(ctx: Any) -> RegressionWatch:
    """The watch primed with the start's score and a resumed run's earlier RL evaluations."""
    start = start_checkpoint(ctx.checkpoints_dir)
    score = ckpt.validation_score(start) if start is not None else None
    return RegressionWatch(ctx.config.alarms, score, read_metrics(ctx.run_dir / "metrics.jsonl"))


def stop_note(step: int, reason: str) -> dict[str, Any]:
    """What `summary.json`'s `stopped` says about an early stop."""
    return {"early_stop": "valid_regression", "step": step, "reason": reason}
