"""`rft train` as a library call: check everything, then warm-up (SFT), RL, final model and summary.

    result = train(load_run_config("recipes/tiny-test.yaml"), output_dir="runs/x")

Every check that can fail on user input runs first (`training.preflight`), before a model loads;
`training.final` picks final/ and writes summary.json at the end.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rft_cli import threads
from rft_cli.config import RunConfig, dump_run_config
from rft_cli.errors import ConfigError, TrainingError
from rft_cli.run_folder import checkpoints as ckpt
from rft_cli.run_folder.alarms import AlarmMonitor, AlarmStop, WatchingLogger
from rft_cli.run_folder.metrics import (
    JsonlMetricsLogger,
    MultiLogger,
    NullLogger,
    build_tracker,
    read_metrics,
    reconcile_metrics,
)
from rft_cli.run_folder.samples import SampleWriter, reconcile_samples
from rft_cli.training import sft
from rft_cli.training.context import RunContext, graceful_interrupt
from rft_cli.training.final import finish_run
from rft_cli.training.models import load_model, load_tokenizer, save_pretrained
from rft_cli.training.preflight import Preflight, preflight
from rft_cli.training.resume import check_resume_changes
from rft_cli.training.rl_trl import run_trl_rl
from rft_cli.training.seeding import seed_everything
from rft_cli.training.trl_bridge import latest_trl_checkpoint, quiet_libraries

if TYPE_CHECKING:
    from rft_cli.graders.base import Grader


@dataclass
class TrainResult:
    """Where the run is and what it reached."""

    run_dir: Path
    summary: dict[str, Any]


def is_main_process() -> bool:
    """False in the non-main processes of `accelerate launch` / torchrun (RANK > 0)."""
    return os.environ.get("RANK", "0") == "0"


# -- the run ------------------------------------------------------------------------------------


def _prepare_run_dir(run_dir: Path, config: RunConfig, resume: bool) -> None:
    import yaml

    started = (run_dir / "metrics.jsonl").exists() or (run_dir / "checkpoints").exists()
    if started and not resume:
        raise ConfigError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --output-dir"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = {**dump_run_config(config), "output_dir": str(run_dir)}
        (run_dir / "config.yaml").write_text(
            yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8"
        )
    except OSError as exc:
        raise ConfigError(
            f"{run_dir}: cannot write the run folder ({exc.strerror or exc}); choose another --output-dir"
        ) from None


def _check_resumable(run_dir: Path) -> None:
    """`--resume` needs a run folder: one a run has started in (it writes config.yaml first)."""
    marks = ("config.yaml", "metrics.jsonl", "checkpoints")
    if not any((run_dir / name).exists() for name in marks):
        raise ConfigError(
            f"{run_dir}: no run to resume (no config.yaml, metrics.jsonl or checkpoints/ in it); "
            "pass the --output-dir of the run to continue, or drop --resume to start a new run"
        )


def _check_stage_order(run_dir: Path, config: RunConfig, stage: str) -> None:
    sft_dir = run_dir / "checkpoints" / "sft"
    if stage == "rl" and config.sft.enabled and not ckpt.is_complete(sft_dir):
        raise ConfigError(
            f"{sft_dir}: no finished warm-up checkpoint; run `rft train CONFIG --stage sft` first "
            "(or set sft.enabled: false to start RL from the base model)"
        )


def _resume_point(run_dir: Path, sft_total: int) -> tuple[str | None, int, bool, float]:
    """(stage, step, keep_step, elapsed_s) of the checkpoint a resumed run continues from.

    A warm-up checkpoint at the stage's last step does not own that step's line: the line is
    written after it, with the evaluation, so it is dropped and written again.
    """
    checkpoints = run_dir / "checkpoints"
    latest = ckpt.find_latest_complete(checkpoints)
    if latest is not None:
        meta = ckpt.read_meta(latest)
        return "rl", int(meta["step"]), True, 0.0
    if ckpt.is_complete(checkpoints / "sft"):
        meta = ckpt.read_meta(checkpoints / "sft")
        return "sft", int(meta["step"]), True, float(meta.get("elapsed_s", 0.0))
    partial = latest_trl_checkpoint(checkpoints, sft.SFT_PREFIX)
    if partial is not None:
        meta = ckpt.read_meta(partial)
        return (
            "sft",
            int(meta["step"]),
            int(meta["step"]) < sft_total,
            float(meta.get("elapsed_s", 0.0)),
        )
    return None, 0, True, 0.0


def train(
    config: RunConfig,
    *,
    config_path: str | Path | None = None,
    output_dir: str | Path | None = None,
    stage: str = "all",
    resume: bool = False,
    grader: Grader | None = None,
    progress: Callable[[dict[str, Any]], object] | None = None,
    on_checked: Callable[[Preflight], None] | None = None,
) -> TrainResult:
    """Check everything (`preflight`), then run the configured stages. Ctrl-C saves and re-raises.

    Args:
        config: the run config (`load_run_config`).
        output_dir: the run folder (default: the config's output_dir, else $RFT_HOME/runs/<name>).
        stage: "sft", "rl" or "all".
        resume: continue the run in `output_dir` from its last complete checkpoint.
        grader: a built grader to train with (default: the one the config names, closed at the end).
        progress: called with each metrics line; its `evaluating(stage, step, rows)` method, when it
            has one, is called as an evaluation starts and returns a `(done, total)` callback.
        on_checked: called with the preflight's result once every check passed, before a model loads.
    Returns:
        A TrainResult: the run folder and the summary (`summary.json`).
    """
    if resume:
        _check_resumable(
            Path(output_dir) if output_dir else config.resolved_output_dir(config_path)
        )
    pre = preflight(config, grader, stage)  # before the heavy imports: a typo costs seconds
    try:
        if on_checked is not None:
            on_checked(pre)
        return _train_checked(config, pre, config_path, output_dir, stage, resume, progress)
    finally:
        if grader is None:  # we built it, so we stop its workers
            pre.grader.close()
        if pre.tools is not None:
            pre.tools.close()


def _train_checked(
    config: RunConfig,
    pre: Preflight,
    config_path: str | Path | None,
    output_dir: str | Path | None,
    stage: str,
    resume: bool,
    progress: Any,
) -> TrainResult:
    quiet_libraries()
    threads.govern()
    run_dir = Path(output_dir) if output_dir else config.resolved_output_dir(config_path)
    _check_stage_order(run_dir, config, stage)
    sft_total = pre.plan["stages"].get("sft", {}).get("steps", 0)
    resume_stage, resume_step, keep_step, elapsed_before = (
        _resume_point(run_dir, sft_total) if resume else (None, 0, True, 0.0)
    )
    changes = (
        check_resume_changes(run_dir, config, resume_stage) if resume else {}
    )  # before config.yaml is rewritten
    _prepare_run_dir(run_dir, config, resume)
    if is_main_process():
        with _write_errors_stop_the_run(run_dir):
            reconcile_metrics(
                run_dir / "metrics.jsonl", resume_stage, resume_step, keep_step=keep_step
            )
            reconcile_samples(run_dir, resume_stage, resume_step, keep_step=keep_step)
    # Under `accelerate launch` only the main process writes metrics, samples and shows progress.
    main = is_main_process()
    samples = SampleWriter(run_dir, config.samples) if main else None
    logger = _build_logger(config, run_dir, samples) if samples is not None else NullLogger()
    progress = progress if main else None
    seed_everything(config.seed)
    tokenizer = load_tokenizer(config.model)
    ctx = RunContext(
        config,
        run_dir,
        pre.train_rows,
        pre.valid_rows,
        pre.grader,
        logger,
        progress,
        elapsed_before=elapsed_before,
        samples=samples,
        config_changes=changes or None,
        tools=pre.tools,
    )
    started = time.perf_counter()
    try:
        with _write_errors_stop_the_run(run_dir):
            try:
                with graceful_interrupt() as flag:
                    ctx.interrupt = flag
                    _run_stages(ctx, stage, tokenizer)
            except AlarmStop as stop:
                raise _stopped_by_alarm(ctx, stage, stop, time.perf_counter() - started) from None
            # Under `accelerate launch` the main process writes final/ and summary.json alone.
            summary = (
                finish_run(ctx, stage, time.perf_counter() - started, stopped=ctx.early_stop)
                if is_main_process()
                else {}
            )
    finally:
        logger.close()
    return TrainResult(run_dir, summary)


def _build_logger(config: RunConfig, run_dir: Path, samples: SampleWriter) -> WatchingLogger:
    """metrics.jsonl (and the tracker) behind the alarm detectors, primed with a resumed run's lines."""
    inner = MultiLogger(
        JsonlMetricsLogger(run_dir / "metrics.jsonl"),
        build_tracker(config.report_to, run_dir, dump_run_config(config)),
    )
    monitor = AlarmMonitor(config.alarms)
    monitor.replay(
        read_metrics(run_dir / "metrics.jsonl")
    )  # raised before the resume: not raised again
    return WatchingLogger(inner, monitor, samples)


def _stopped_by_alarm(ctx: Any, stage: str, stop: AlarmStop, seconds: float) -> TrainingError:
    """final/ and summary.json from the checkpoints kept so far, and the error naming the alarm."""
    alarm = stop.alarm
    summary = finish_run(ctx, stage, seconds, stopped={"alarm": alarm.name, "step": alarm.step})
    kept = (
        f"final/ holds {summary['final_source']}"
        if summary.get("final_source")
        else "no checkpoint was saved yet"
    )
    return TrainingError(
        f"{alarm.stage} step {alarm.step}: alarm {alarm.name} ({alarm.message}) is in alarms.stop_on, "
        f"so the run stopped; {kept}; read {ctx.run_dir / 'samples'} to see what the model writes"
    )


@contextlib.contextmanager
def _write_errors_stop_the_run(run_dir: Path) -> Iterator[None]:
    """A full disk or a permission error anywhere in a run (TRL's own saves included) becomes one
    clear TrainingError; complete checkpoints are never touched by a failed write."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001  only write errors are translated, everything else re-raises
        if not ckpt.is_write_error(exc):
            raise
        raise TrainingError(
            f"{run_dir}: a write failed {ckpt.describe_write_error(exc, run_dir)}; the last complete checkpoint is "
            "intact, free disk space or fix permissions, then rerun with --resume"
        ) from None


def _run_stages(ctx: Any, stage: str, tokenizer: Any) -> None:
    config, checkpoints = ctx.config, ctx.checkpoints_dir
    sft_dir = checkpoints / "sft"
    if stage in ("sft", "all") and config.sft.enabled and not ckpt.is_complete(sft_dir):
        sft.run_sft(ctx, tokenizer)
    if stage not in ("rl", "all"):
        return
    if config.sft.enabled and not ckpt.is_complete(sft_dir):
        raise ConfigError(
            f"{sft_dir}: no finished warm-up checkpoint; run `rft train CONFIG --stage sft` first "
            "(or set sft.enabled: false to start RL from the base model)"
        )
    init_dir = sft_dir if config.sft.enabled else None
    if init_dir is not None:
        tokenizer = load_tokenizer(config.model, init_dir)
        ctx.elapsed_before = float(ckpt.read_meta(sft_dir).get("elapsed_s", 0.0))
    # Without a warm-up, the base model is the start that final/ falls back to: save and score it.
    keeps_start = config.rl.final == "best" and bool(ctx.valid_rows)
    if config.rl.algorithm != "ppo":  # TRL starts from a folder: the warm-up, else the base
        run_trl_rl(ctx, init_dir or _save_base(ctx, tokenizer), tokenizer)
        return
    if init_dir is None and keeps_start:
        _save_base(ctx, tokenizer)
    _run_ppo_stage(ctx, init_dir, tokenizer)


def _run_ppo_stage(ctx: Any, init_dir: Path | None, tokenizer: Any) -> None:
    # training.ppo imports torch: loaded when a PPO stage starts, not with `rft train --help`
    from rft_cli.training.ppo import run_ppo

    latest = ckpt.find_latest_complete(ctx.checkpoints_dir)
    if latest is not None and int(ckpt.read_meta(latest)["step"]) >= ctx.config.rl.steps:
        return  # the RL stage already finished; only final/ and summary.json are (re)written
    run_ppo(ctx, init_dir, tokenizer, resume_from=latest)


def evaluation_autocast(settings: Any) -> Any:
    """The autocast RL's evaluations run under (`accelerator.autocast()`): `model.dtype`
    bfloat16/float16 is mixed precision over float32 weights; float32 computes as it is."""
    import torch

    from rft_cli.training.models import mixed_precision

    precision = mixed_precision(settings)
    if precision == "no":
        return contextlib.nullcontext()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.autocast(device, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _save_base(ctx: Any, tokenizer: Any) -> Path:
    """Save the base model as `checkpoints/base`, with its validation score when rl.final is best.

    TRL's reference model loads by path, so a model built in memory is saved first; and a run
    without a warm-up hands this model back when RL never beat it, so it is scored as RL's
    checkpoints are, in the precision RL computes in. The evaluation's seconds count in the RL
    stage's time.
    """
    from accelerate import PartialState

    folder = ctx.checkpoints_dir / "base"
    if is_main_process() and not ckpt.is_complete(folder):
        started = time.perf_counter()
        model = load_model(ctx.config.model, tokenizer, seed=ctx.config.seed)
        meta = {"stage": "base", "step": 0}
        if ctx.config.rl.final == "best":
            with evaluation_autocast(ctx.config.model):  # the precision RL evaluates in
                meta.update(sft.evaluate_sft(ctx, model, tokenizer) or {})
            ctx.elapsed_before += time.perf_counter() - started
        ckpt.write_checkpoint(folder, lambda tmp: save_pretrained(model, tokenizer, tmp), meta)
    PartialState().wait_for_everyone()
    return folder
