"""`rft train` as a library call: check everything, then warm-up (SFT), RL, final model and summary.

    result = train(load_run_config("recipes/tiny-test.yaml"), output_dir="runs/x")

Every check that can fail on user input runs before a model loads (`preflight`), so a typo in a
config or a grader field missing from the data costs seconds, not a training run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rft_cli import checkpoints as ckpt
from rft_cli.alarms import AlarmMonitor, AlarmStop, WatchingLogger, alarms_in
from rft_cli.config import RunConfig, dump_run_config
from rft_cli.errors import ConfigError, DataError, TrainingError
from rft_cli.metrics import (
    JsonlMetricsLogger,
    MultiLogger,
    NullLogger,
    build_tracker,
    read_metrics,
    reconcile_metrics,
)
from rft_cli.samples import SampleWriter, reconcile_samples
from rft_cli.training.early_stop import start_checkpoint

STAGES = ("sft", "rl", "all")
RFT_STATE_FILES = {"value_head.pt", "critic.pt", "optimizer.pt", "scheduler.pt", "rng_state.pt", "rng_state.pth",
                   "trainer_state.json", "training_args.bin", "scaler.pt"}


@dataclass
class Preflight:
    """The checked inputs of a run."""

    train_rows: list[dict]
    valid_rows: list[dict]
    grader: Any
    plan: dict[str, Any] = field(default_factory=dict)
    grader_check: Any = None  # the self-test's SelfTestReport, None when grader_check.enabled is false


@dataclass
class TrainResult:
    """Where the run is and what it reached."""

    run_dir: Path
    summary: dict[str, Any]


def is_main_process() -> bool:
    """False in the non-main processes of `accelerate launch` / torchrun (RANK > 0)."""
    return os.environ.get("RANK", "0") == "0"


# -- checks -------------------------------------------------------------------------------------


def build_run_grader(config: RunConfig) -> Any:
    """The grader the config names (a file or an inline spec)."""
    from rft_cli.graders import load_grader
    from rft_cli.graders.build import build_from_dict

    if isinstance(config.grader, str):
        return load_grader(config.grader)

    return build_from_dict(config.grader, where="grader")  # errors name the key path, e.g. grader.reference


def _validation_error(report: Any, config: RunConfig) -> DataError:
    first = report.errors[0]
    where = f"{first.file} line {first.line}" if first.line else first.file
    total = sum(report.error_counts.values())
    valid = f" --valid {config.data.valid}" if config.data.valid else ""
    more = f" ({total} errors in all; `rft validate {config.data.train}{valid}` lists them)" if total > 1 else ""
    return DataError(f"{where}: {first.message}{more}")


def _load_data(config: RunConfig, grader: Any) -> tuple[list[dict], list[dict]]:
    """Validate the data as `rft validate` does (overlap and the grader's item fields included), then load it."""
    from rft_cli.data.records import load_rows
    from rft_cli.data.validation import validate_dataset

    field_name = config.data.demonstration_field
    report = validate_dataset(config.data.train, config.data.valid, demonstration_field=field_name,
                              require_demonstrations=False, required_item_fields=sorted(grader.item_fields()))
    if not report.ok:
        raise _validation_error(report, config)
    train = load_rows(config.data.train, field_name)
    valid = load_rows(config.data.valid, field_name) if config.data.valid else []
    return train, valid


def preflight(config: RunConfig, grader: Any = None, stage: str = "all") -> Preflight:
    """Build the grader, validate the data, make the plan; raises before any model is loaded."""
    from rft_cli.metrics import check_tracker

    if stage not in STAGES:
        raise ConfigError(f"--stage {stage!r}: use one of {', '.join(STAGES)}")
    problem = check_tracker(config.report_to)
    if problem:
        raise ConfigError(problem)
    _check_model_source(config)
    if stage in ("rl", "all"):
        from rft_cli.training.launch import check_launch

        check_launch(config)  # a distributed mode our PPO cannot run, before any model loads
    grader = grader if grader is not None else build_run_grader(config)
    train, valid = _load_data(config, grader)
    if stage in ("sft", "all") and config.sft.enabled:
        _require_demonstrations(train, config)
    check = check_grader(config, grader)
    plan = build_plan(config, len(train), len(valid), stage)
    if check is not None:
        plan["grader_check"] = {k: v for k, v in check.to_dict().items() if k != "failures"}
    return Preflight(train, valid, grader, plan=plan, grader_check=check)


def check_grader(config: RunConfig, grader: Any) -> Any:
    """The grader self-test on the run's demonstrations; raises DataError when too many score below full marks."""
    from rft_cli.graders.selftest import demonstration_field_files, self_test

    settings = config.grader_check
    if not settings.enabled:
        return None
    report = self_test(grader, demonstration_field_files(config.data.train, config.data.valid,
                                                         config.data.demonstration_field))
    if report.failures and report.failure_share > settings.max_failure_share:
        valid = f" --valid {config.data.valid}" if config.data.valid else ""
        raise DataError(
            f"grader self-test: {report.summary()}; {report.failure_share:.1%} score below "
            f"{'full marks' if report.threshold >= report.full_marks else 'the pass_threshold'}, over "
            f"grader_check.max_failure_share {settings.max_failure_share:.1%} (first: {report.failures[0].message()}); "
            f"`rft validate {config.data.train}{valid} --grader GRADER` lists every row: fix the grader or the "
            "data, or raise grader_check.max_failure_share"
        )
    return report


def _check_model_source(config: RunConfig) -> None:
    """A missing local model folder, or an architecture rft cannot train, is a config error now, not after the data loads."""
    from rft_cli.errors import UsageError
    from rft_cli.generation import resolve_model_path
    from rft_cli.training.architectures import check_architecture

    for key, value in (("model.name", config.model.name), ("model.tokenizer", config.model.tokenizer)):
        if value is not None:
            try:
                source = resolve_model_path(value)
            except UsageError as exc:
                raise ConfigError(f"{key}: {exc}") from None
            if key == "model.name":
                check_architecture(source)


def _require_demonstrations(rows: list[dict], config: RunConfig) -> None:
    from rft_cli.data.records import demonstration

    if not any(demonstration(row, config.data.demonstration_field) is not None for row in rows):
        raise ConfigError(f"sft: no row of {config.data.train} has a demonstration (a final assistant message or "
                          f"{config.data.demonstration_field!r}); add them or set sft.enabled: false")


def build_plan(config: RunConfig, n_train: int, n_valid: int, stage: str) -> dict[str, Any]:
    """What a run will do: stages, steps, samples, output layout (`--dry-run` prints it)."""
    from rft_cli.training.sft import sft_steps

    stages: dict[str, Any] = {}
    if stage in ("sft", "all") and config.sft.enabled:
        stages["sft"] = {"steps": sft_steps(n_train, config.sft), "epochs": config.sft.epochs,
                         "batch_size": config.sft.batch_size, "learning_rate": config.sft.learning_rate}
    if stage in ("rl", "all"):
        rl = config.rl
        stages["rl"] = {"algorithm": rl.algorithm, "steps": rl.steps, "prompts_per_step": rl.prompts_per_step,
                        "samples_per_prompt": rl.samples_per_prompt,
                        "samples": rl.steps * rl.prompts_per_step * rl.samples_per_prompt,
                        "kl_coef": rl.kl_coef, "learning_rate": rl.learning_rate}
    return {"stages": stages, "train_rows": n_train, "valid_rows": n_valid,
            "eval": {"interval": config.eval.interval, "rows": min(config.eval.samples, n_valid)},
            "save_interval": config.save_interval, "keep_checkpoints": config.keep_checkpoints,
            "layout": ["config.yaml", "metrics.jsonl", "checkpoints/sft/", "checkpoints/step-<N>/", "samples/", "final/", "summary.json"]}


# -- the run ------------------------------------------------------------------------------------


def _prepare_run_dir(run_dir: Path, config: RunConfig, resume: bool) -> None:
    import yaml

    started = (run_dir / "metrics.jsonl").exists() or (run_dir / "checkpoints").exists()
    if started and not resume:
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --output-dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = {**dump_run_config(config), "output_dir": str(run_dir)}
        (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{run_dir}: cannot write the run folder ({exc.strerror or exc}); choose another --output-dir") from None


def _check_stage_order(run_dir: Path, config: RunConfig, stage: str) -> None:
    sft_dir = run_dir / "checkpoints" / "sft"
    if stage == "rl" and config.sft.enabled and not ckpt.is_complete(sft_dir):
        raise ConfigError(f"{sft_dir}: no finished warm-up checkpoint; run `rft train CONFIG --stage sft` first "
                          "(or set sft.enabled: false to start RL from the base model)")


def _resume_point(run_dir: Path, sft_total: int) -> tuple[str | None, int, bool, float]:
    """(stage, step, keep_step, elapsed_s) of the checkpoint a resumed run continues from.

    A warm-up checkpoint at the stage's last step does not own that step's line: the line is
    written after it, with the evaluation, so it is dropped and written again.
    """
    from rft_cli.training.sft import SFT_PREFIX
    from rft_cli.training.trl_bridge import latest_trl_checkpoint

    checkpoints = run_dir / "checkpoints"
    latest = ckpt.find_latest_complete(checkpoints)
    if latest is not None:
        meta = ckpt.read_meta(latest)
        return "rl", int(meta["step"]), True, 0.0
    if ckpt.is_complete(checkpoints / "sft"):
        meta = ckpt.read_meta(checkpoints / "sft")
        return "sft", int(meta["step"]), True, float(meta.get("elapsed_s", 0.0))
    partial = latest_trl_checkpoint(checkpoints, SFT_PREFIX)
    if partial is not None:
        meta = ckpt.read_meta(partial)
        return "sft", int(meta["step"]), int(meta["step"]) < sft_total, float(meta.get("elapsed_s", 0.0))
    return None, 0, True, 0.0


def train(config: RunConfig, *, config_path: str | Path | None = None, output_dir: str | Path | None = None,
          stage: str = "all", resume: bool = False, grader: Any = None, progress: Any = None,
          checked: Preflight | None = None) -> TrainResult:
    """Run the configured stages; returns the run folder and summary. Ctrl-C saves and re-raises."""
    from rft_cli.training.common import RunContext, graceful_interrupt, seed_everything
    from rft_cli.training.models import load_tokenizer
    from rft_cli.training.trl_bridge import quiet_libraries

    quiet_libraries()
    pre = checked or preflight(config, grader, stage)
    run_dir = Path(output_dir) if output_dir else config.resolved_output_dir(config_path)
    _check_stage_order(run_dir, config, stage)
    _prepare_run_dir(run_dir, config, resume)
    sft_total = pre.plan["stages"].get("sft", {}).get("steps", 0)
    resume_stage, resume_step, keep_step, elapsed_before = _resume_point(run_dir, sft_total) if resume else (None, 0, True, 0.0)
    if is_main_process():
        with _write_errors_stop_the_run(run_dir):
            reconcile_metrics(run_dir / "metrics.jsonl", resume_stage, resume_step, keep_step=keep_step)
            reconcile_samples(run_dir, resume_stage, resume_step, keep_step=keep_step)
    # Under `accelerate launch` only the main process writes metrics, samples and shows progress.
    main = is_main_process()
    samples = SampleWriter(run_dir, config.samples) if main else None
    logger = _build_logger(config, run_dir, samples) if main else NullLogger()
    progress = progress if main else None
    seed_everything(config.seed)
    tokenizer = load_tokenizer(config.model)
    ctx = RunContext(config, run_dir, pre.train_rows, pre.valid_rows, pre.grader, logger, progress,
                     elapsed_before=elapsed_before, samples=samples)
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
            summary = (_finish(ctx, stage, time.perf_counter() - started, stopped=ctx.early_stop)
                       if is_main_process() else {})
    finally:
        logger.close()
        if grader is None and checked is None:  # we built it, so we stop its workers
            pre.grader.close()
    return TrainResult(run_dir, summary)


def _build_logger(config: RunConfig, run_dir: Path, samples: SampleWriter) -> WatchingLogger:
    """metrics.jsonl (and the tracker) behind the alarm detectors, primed with a resumed run's lines."""
    inner = MultiLogger(JsonlMetricsLogger(run_dir / "metrics.jsonl"),
                        build_tracker(config.report_to, run_dir, dump_run_config(config)))
    monitor = AlarmMonitor(config.alarms)
    monitor.replay(read_metrics(run_dir / "metrics.jsonl"))  # raised before the resume: not raised again
    return WatchingLogger(inner, monitor, samples)


def _stopped_by_alarm(ctx: Any, stage: str, stop: AlarmStop, seconds: float) -> TrainingError:
    """final/ and summary.json from the checkpoints kept so far, and the error naming the alarm."""
    alarm = stop.alarm
    summary = _finish(ctx, stage, seconds, stopped={"alarm": alarm.name, "step": alarm.step})
    kept = f"final/ holds {summary['final_source']}" if summary.get("final_source") else "no checkpoint was saved yet"
    return TrainingError(f"{alarm.stage} step {alarm.step}: alarm {alarm.name} ({alarm.message}) is in alarms.stop_on, "
                         f"so the run stopped; {kept}; read {ctx.run_dir / 'samples'} to see what the model writes")


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
    from rft_cli.training.models import load_tokenizer

    config, checkpoints = ctx.config, ctx.checkpoints_dir
    sft_dir = checkpoints / "sft"
    if stage in ("sft", "all") and config.sft.enabled and not ckpt.is_complete(sft_dir):
        from rft_cli.training.sft import run_sft

        run_sft(ctx, tokenizer)
    if stage not in ("rl", "all"):
        return
    if config.sft.enabled and not ckpt.is_complete(sft_dir):
        raise ConfigError(f"{sft_dir}: no finished warm-up checkpoint; run `rft train CONFIG --stage sft` first "
                          "(or set sft.enabled: false to start RL from the base model)")
    init_dir = sft_dir if config.sft.enabled else None
    if init_dir is not None:
        tokenizer = load_tokenizer(config.model, init_dir)
        ctx.elapsed_before = float(ckpt.read_meta(sft_dir).get("elapsed_s", 0.0))
    # Without a warm-up, the base model is the start that final/ falls back to: save and score it.
    keeps_start = config.rl.final == "best" and bool(ctx.valid_rows)
    base = _save_base(ctx, tokenizer) if init_dir is None and (keeps_start or config.rl.algorithm != "ppo") else None
    if config.rl.algorithm == "ppo":
        _run_ppo_stage(ctx, init_dir, tokenizer)
    else:
        from rft_cli.training.rl_trl import run_trl_rl

        run_trl_rl(ctx, init_dir or base, tokenizer)


def _run_ppo_stage(ctx: Any, init_dir: Path | None, tokenizer: Any) -> None:
    from rft_cli.training.ppo import run_ppo

    latest = ckpt.find_latest_complete(ctx.checkpoints_dir)
    if latest is not None and int(ckpt.read_meta(latest)["step"]) >= ctx.config.rl.steps:
        return  # the RL stage already finished; only final/ and summary.json are (re)written
    run_ppo(ctx, init_dir, tokenizer, resume_from=latest)


def _save_base(ctx: Any, tokenizer: Any) -> Path:
    """Save the base model as `checkpoints/base`, with its validation score when rl.final is best.

    TRL's reference model loads by path, so a model built in memory is saved first; and a run
    without a warm-up hands this model back when RL never beat it. The evaluation's seconds count
    in the RL stage's time.
    """
    from accelerate import PartialState

    from rft_cli.training.models import load_model, save_pretrained
    from rft_cli.training.sft import evaluate_sft

    folder = ctx.checkpoints_dir / "base"
    if is_main_process() and not ckpt.is_complete(folder):
        started = time.perf_counter()
        model = load_model(ctx.config.model, tokenizer, seed=ctx.config.seed)
        meta = {"stage": "base", "step": 0}
        if ctx.config.rl.final == "best":
            meta.update(evaluate_sft(ctx, model, tokenizer) or {})
            ctx.elapsed_before += time.perf_counter() - started
        ckpt.write_checkpoint(folder, lambda tmp: save_pretrained(model, tokenizer, tmp), meta)
    PartialState().wait_for_everyone()
    return folder


# -- the end of a run ---------------------------------------------------------------------------


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


def _selection(source: Path, run_dir: Path, stage: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Which checkpoint became final/ ("start", "step-N", or "sft" for a warm-up-only run) and its
    validation score beside the starting model's."""
    checkpoints = run_dir / "checkpoints"
    start = start_checkpoint(checkpoints)
    label = "start" if source == start and stage in ("rl", "all") else source.name
    chosen, first = ckpt.read_meta(source), ckpt.read_meta(start) if start is not None else {}
    if "valid_accuracy" not in chosen:  # an RL checkpoint's marker keeps the reward; its metrics line has the rest
        chosen = next((r for r in records if r.get("stage") == "rl" and r.get("step") == chosen.get("step")
                       and r.get("valid_reward_mean") is not None), chosen)
    return {"final_source": label, "final_checkpoint": os.path.relpath(source, run_dir),
            "final_valid_reward_mean": chosen.get("valid_reward_mean"), "final_valid_accuracy": chosen.get("valid_accuracy"),
            "start_valid_reward_mean": first.get("valid_reward_mean"), "start_valid_accuracy": first.get("valid_accuracy")}


def _write_final(source: Path, run_dir: Path, settings: Any) -> None:
    from rft_cli.training.models import write_in_dtype

    def write(tmp: Path) -> None:
        if (source / "adapter_config.json").is_file() and not (source / "config.json").is_file():
            _merge_adapters(source, tmp)
        else:
            for child in source.iterdir():
                if child.is_file() and child.name not in RFT_STATE_FILES and child.name != ckpt.MARKER:
                    shutil.copy2(child, tmp / child.name)
        write_in_dtype(tmp, settings)  # checkpoints hold float32 master weights; final/ has model.dtype's

    meta = {"stage": "final", "source": os.path.relpath(source, run_dir), **ckpt.read_meta(source)}
    meta["stage"] = "final"
    ckpt.write_checkpoint(run_dir / "final", write, meta)


def _merge_adapters(source: Path, target: Path) -> None:
    """A TRL LoRA checkpoint holds adapters only; final/ gets them merged into a plain HF model."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    model = AutoPeftModelForCausalLM.from_pretrained(str(source)).merge_and_unload()
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
    own = [r["stage_elapsed_s"] for r in lines if isinstance(r.get("stage_elapsed_s"), (int, float))]
    cumulative = [r["elapsed_s"] for r in lines if isinstance(r.get("elapsed_s"), (int, float))]
    return {"valid_reward_mean": last_eval.get("valid_reward_mean"), "valid_accuracy": last_eval.get("valid_accuracy"),
            "elapsed_s": max(own) if own else (max(cumulative) if cumulative else None),
            "eval_s": sum(r.get("eval_s") or 0.0 for r in lines) if any("eval_s" in r for r in lines) else None,
            "steps": max((r["step"] for r in lines), default=0)}


def _finish(ctx: Any, stage: str, seconds: float, stopped: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write final/ and summary.json."""
    run_dir = ctx.run_dir
    source = _final_source(ctx, stage)
    if source is not None:
        _write_final(source, run_dir, ctx.config.model)
    records = read_metrics(run_dir / "metrics.jsonl")
    stages = {name: stage_summary(records, name) for name in ("sft", "rl") if any(r.get("stage") == name for r in records)}
    if "rl" in stages and not any("stage_elapsed_s" in r for r in records if r.get("stage") == "rl"):
        stages["rl"]["elapsed_s"] = None  # an older run's cumulative clock cannot be split honestly
    timed = [s["elapsed_s"] for s in stages.values() if s["elapsed_s"] is not None]
    summary = {"stages": stages, "elapsed_s": sum(timed) if timed else seconds,
               "final": "final" if source is not None else None,
               "final_source": None, **(_selection(source, run_dir, stage, records) if source is not None else {}),
               "alarms": alarms_in(records), "stopped": stopped}
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    os.replace(tmp, run_dir / "summary.json")
    return summary
