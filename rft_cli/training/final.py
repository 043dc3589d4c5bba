"""The end of a run: which checkpoint becomes final/ (rl.final), its held-out score, and summary.json.

final/ is picked by its score on the validation rows evaluated during training (the first
`eval.samples`), so that score is optimistic: of many checkpoints, the luckiest on those rows
wins. Its score on the next `eval.samples` validation rows, which took no part in the choice, is
`final_heldout_reward_mean` / `final_heldout_accuracy` (None when data.valid has no such rows).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from rft_cli.run_folder import checkpoints as ckpt
from rft_cli.run_folder.alarms import alarms_in
from rft_cli.run_folder.metrics import read_metrics
from rft_cli.training.early_stop import start_checkpoint
from rft_cli.training.models import write_in_dtype

RFT_STATE_FILES = {
    "value_head.pt",
    "critic.pt",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state.pt",
    "rng_state.pth",
    "trainer_state.json",
    "training_args.bin",
    "scaler.pt",
}


def _final_source(ctx: Any, stage: str) -> Path | None:
    checkpoints = ctx.checkpoints_dir
    start = start_checkpoint(checkpoints)
    if stage in ("rl", "all"):
        if ctx.config.rl.final == "best":
            return ckpt.best_checkpoint(checkpoints, start)
        latest = ckpt.find_latest_complete(checkpoints)
        if latest is not None:
            return latest
    return checkpoints / "sft" if ckpt.is_complete(checkpoints / "sft") else None


def _selection(
    source: Path, run_dir: Path, stage: str, records: list[dict[str, Any]]
) -> dict[str, Any]:
    """Which checkpoint became final/ ("start", "step-N", or "sft" for a warm-up-only run) and its
    validation score beside the starting model's."""
    checkpoints = run_dir / "checkpoints"
    start = start_checkpoint(checkpoints)
    label = "start" if source == start and stage in ("rl", "all") else source.name
    chosen, first = ckpt.read_meta(source), ckpt.read_meta(start) if start is not None else {}
    if (
        "valid_accuracy" not in chosen
    ):  # an RL checkpoint's marker keeps the reward; its metrics line has the rest
        chosen = next(
            (
                r
                for r in records
                if r.get("stage") == "rl"
                and r.get("step") == chosen.get("step")
                and r.get("valid_reward_mean") is not None
            ),
            chosen,
        )
    return {
        "final_source": label,
        "final_checkpoint": os.path.relpath(source, run_dir),
        "final_valid_reward_mean": chosen.get("valid_reward_mean"),
        "final_valid_accuracy": chosen.get("valid_accuracy"),
        "start_valid_reward_mean": first.get("valid_reward_mean"),
        "start_valid_accuracy": first.get("valid_accuracy"),
    }


def _write_final(source: Path, run_dir: Path, settings: Any) -> None:
    def write(tmp: Path) -> None:
        if (source / "adapter_config.json").is_file() and not (source / "config.json").is_file():
            _merge_adapters(source, tmp)
        else:
            for child in source.iterdir():
                if (
                    child.is_file()
                    and child.name not in RFT_STATE_FILES
                    and child.name != ckpt.MARKER
                ):
                    shutil.copy2(child, tmp / child.name)
        write_in_dtype(
            tmp, settings
        )  # checkpoints hold float32 master weights; final/ has model.dtype's

    meta = {"stage": "final", "source": os.path.relpath(source, run_dir), **ckpt.read_meta(source)}
    meta["stage"] = "final"
    ckpt.write_checkpoint(run_dir / "final", write, meta)


def _merge_adapters(source: Path, target: Path) -> None:
    """A TRL LoRA checkpoint holds adapters only; final/ gets them merged into a plain HF model."""
    from transformers import AutoTokenizer

    model = ckpt.load_adapter_model(source)
    model.save_pretrained(str(target))
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(target))


def stage_summary(records: list[dict[str, Any]], stage: str) -> dict[str, Any]:
    """The last evaluation of a stage, its own elapsed time and the part of it spent evaluating.

    `stage_elapsed_s` is the stage's own clock (carried across resumes); metrics written before
    it existed only have the run's cumulative `elapsed_s`, which is used then.
    """
    lines = [r for r in records if r.get("stage") == stage]
    evaluated = [r for r in lines if r.get("valid_reward_mean") is not None]
    last_eval = evaluated[-1] if evaluated else {}
    own = [
        r["stage_elapsed_s"] for r in lines if isinstance(r.get("stage_elapsed_s"), (int, float))
    ]
    cumulative = [r["elapsed_s"] for r in lines if isinstance(r.get("elapsed_s"), (int, float))]
    return {
        "valid_reward_mean": last_eval.get("valid_reward_mean"),
        "valid_accuracy": last_eval.get("valid_accuracy"),
        "elapsed_s": max(own) if own else (max(cumulative) if cumulative else None),
        "eval_s": sum(r.get("eval_s") or 0.0 for r in lines)
        if any("eval_s" in r for r in lines)
        else None,
        "steps": max((r["step"] for r in lines), default=0),
    }


def held_out_rows(ctx: Any) -> list[dict]:
    """The validation rows that choose nothing: the `eval.samples` after those evaluated in training."""
    n = ctx.config.eval.samples
    return ctx.valid_rows[n : 2 * n]


def score_held_out(ctx: Any, folder: Path) -> dict[str, Any]:
    """The model in `folder` (final/) scored on `held_out_rows`, greedy, as `rft eval` scores it."""
    from rft_cli.generation import load_model_for_inference
    from rft_cli.training.context import evaluate_greedy

    rows = held_out_rows(ctx)
    scores: dict[str, float | None] = {
        "final_heldout_reward_mean": None,
        "final_heldout_accuracy": None,
    }
    if rows:
        model, tokenizer = load_model_for_inference(folder)
        valid = evaluate_greedy(
            model,
            tokenizer,
            ctx.grader,
            rows,
            demonstration_field=ctx.config.data.demonstration_field,
            max_new_tokens=ctx.config.eval.max_new_tokens or ctx.config.rl.max_new_tokens,
            batch_size=ctx.config.eval.batch_size,
            tools=ctx.tools,
        )
        scores = {
            "final_heldout_reward_mean": valid["valid_reward_mean"],
            "final_heldout_accuracy": valid["valid_accuracy"],
        }
    return {**scores, "heldout_rows": len(rows)}


def finish_run(
    ctx: Any, stage: str, seconds: float, stopped: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write final/, score it on the held-out rows, and write summary.json."""
    run_dir = ctx.run_dir
    source = _final_source(ctx, stage)
    held_out: dict[str, Any] = {}
    if source is not None:
        _write_final(source, run_dir, ctx.config.model)
        held_out = score_held_out(ctx, run_dir / "final")
    records = read_metrics(run_dir / "metrics.jsonl")
    stages = {
        name: stage_summary(records, name)
        for name in ("sft", "rl")
        if any(r.get("stage") == name for r in records)
    }
    if "rl" in stages and not any(
        "stage_elapsed_s" in r for r in records if r.get("stage") == "rl"
    ):
        stages["rl"]["elapsed_s"] = None  # an older run's cumulative clock cannot be split honestly
    timed = [s["elapsed_s"] for s in stages.values() if s["elapsed_s"] is not None]
    summary = {
        "stages": stages,
        "elapsed_s": sum(timed) if timed else seconds,
        "final": "final" if source is not None else None,
        "final_source": None,
        **(_selection(source, run_dir, stage, records) if source is not None else {}),
        **held_out,
        "alarms": alarms_in(records),
        "stopped": stopped,
    }
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    os.replace(tmp, run_dir / "summary.json")
    return summary
