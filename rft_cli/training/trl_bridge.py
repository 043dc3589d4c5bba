"""Glue between TRL's trainers and the run folder: metric names, the stage protocol, grader reward.

`RunFolderCallback` is TRL's loop seen by the stage protocol (`stage_loop.py`), which evaluates,
writes the metrics lines, counts faults, names and prunes checkpoints and honours Ctrl-C for every
stage. TRL saves `checkpoint-<N>` folders into a hidden working folder; once TRL has written one
(its `trainer_state.json` comes last), `on_save` adds our marker and renames it to the run
layout's name (`step-<N>` or `sft-step-<N>`), so `--resume` only ever sees complete checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from rft_cli.errors import TrainingError
from rft_cli.graders import reward_function
from rft_cli.run_folder import checkpoints as ckpt
from rft_cli.run_folder.samples import render_prompt, result_fields, text_of
from rft_cli.training.context import RunContext
from rft_cli.training.models import resolve_dtype
from rft_cli.training.rewards import GradeStats, stats_of
from rft_cli.training.stage_loop import StageLoop, StageProgress, latest_checkpoint, non_finite

# TRL log key -> our metric name (the names OpenAI's RFT dashboard and our PPO use).
TRL_METRICS = {
    "loss": "loss",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
    "entropy": "entropy",
    "mean_token_accuracy": "mean_token_accuracy",
    "reward": "train_reward_mean",
    "reward_std": "train_reward_std",
    "kl": "kl",
    "completions/mean_length": "response_length_mean",
    "completions/clipped_ratio": "truncated_share",
    "clip_ratio/region_mean": "clip_frac",
    "policy_loss": "policy_loss",
}


def trl_metric_names(algorithm: str | None) -> dict[str, str]:
    """TRL_METRICS for a stage: RLOO's `kl` is the mean per-token log-ratio (it puts the summed
    log-ratio in the reward), not GRPO's k3, so it becomes `kl_logratio` as PPO names that one."""
    if algorithm == "rloo":
        return {**TRL_METRICS, "kl": "kl_logratio"}
    return TRL_METRICS


def optimizer_steps_per_batch(rl: Any) -> int:
    """TRL optimizer steps per sampled batch: one per minibatch, `ppo_epochs` passes (as our PPO)."""
    return rl.prompts_per_step * rl.samples_per_prompt // rl.mini_batch_size * rl.ppo_epochs


def trl_callback_class() -> type:
    """A TrainerCallback subclass (built lazily so `transformers` is imported only when training)."""
    from transformers import TrainerCallback

    class RunFolderCallback(TrainerCallback):
        """TRL's loop onto the stage protocol (`stage_loop.StageLoop`): its steps end, log and save
        there. A step of ours is `steps_per_record` TRL optimizer steps (GRPO/RLOO: one sampled
        batch), so evaluating, saving and stopping happen only between them."""

        def __init__(
            self,
            ctx: RunContext,
            stage: str,
            prefix: str,
            work_dir: Path,
            reward: GraderReward | None = None,
            evaluate: Any = None,
            steps_per_record: int = 1,
        ):
            self.ctx, self.stage, self.work_dir = ctx, stage, work_dir
            self.per = steps_per_record
            self.reward = reward
            resumed = latest_checkpoint(ctx.checkpoints_dir, prefix)
            progress = (
                StageProgress.from_meta(ckpt.read_meta(resumed)) if resumed else StageProgress()
            )
            # the stage's last step is TRL's count, known on_train_begin
            self.loop = StageLoop(ctx, stage, 0, progress, evaluate)
            self.final_record: dict[str, Any] | None = None
            self.tokens_at_last_log = 0
            self.time_at_last_log = time.perf_counter()
            self.names = trl_metric_names(ctx.config.rl.algorithm if stage == "rl" else None)

        @property
        def last_valid(self) -> dict[str, float] | None:
            return self.loop.progress.last_valid

        def stage_elapsed(self) -> float:
            return self.loop.stage_elapsed()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            self.loop.steps = state.max_steps // self.per
            return control

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if state.global_step % self.per:  # inside a sampled batch
                self.loop.tick()
                return control
            step = state.global_step // self.per
            self.loop.end_step(step, kwargs.get("model"))
            control.should_save = self.loop.save_due(step)
            if self.loop.stopping:
                control.should_training_stop = True
            return control

        def on_log(
            self,
            args: Any,
            state: Any,
            control: Any,
            logs: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> Any:
            if not logs or "train_loss" in logs:  # the end-of-training summary, not a step
                return control
            record: dict[str, Any] = {"stage": self.stage, "step": state.global_step // self.per}
            record.update(
                {ours: float(logs[theirs]) for theirs, ours in self.names.items() if theirs in logs}
            )
            if self.reward is not None:
                record.update(self.reward.drain_metrics())
            self._tokens_per_second(record, state)
            # the warm-up's last line is written with its evaluation, by run_sft
            last_sft = self.stage == "sft" and state.global_step >= state.max_steps
            self.loop.report(record, non_finite(record), hold=last_sft)
            if last_sft:
                self.final_record = record
            if self.ctx.interrupt.requested:  # Ctrl-C: save this very step, then stop
                control.should_save = True
                control.should_training_stop = True
            return control

        def _tokens_per_second(self, record: dict[str, Any], state: Any) -> None:
            now, tokens = time.perf_counter(), int(getattr(state, "num_input_tokens_seen", 0) or 0)
            seconds = max(now - self.time_at_last_log, 1e-9)
            if self.stage == "rl" and "response_length_mean" in record:  # generated tokens
                rl = self.ctx.config.rl
                generated = (
                    record["response_length_mean"] * rl.prompts_per_step * rl.samples_per_prompt
                )
                record["tokens_per_second"] = generated / seconds
            elif tokens:
                record["tokens_per_second"] = (tokens - self.tokens_at_last_log) / seconds
            self.tokens_at_last_log, self.time_at_last_log = tokens, now

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            source = self.work_dir / f"checkpoint-{state.global_step}"
            step = state.global_step // self.per
            if state.is_world_process_zero and source.is_dir():
                meta = {**self.loop.checkpoint_meta(step), "trl": True}
                promote_trl_checkpoint(source, self.loop.checkpoint_dir(step), meta)
                self.loop.saved()
            return control

    return RunFolderCallback


def record_from_history(stage: str, step: int, log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """A metrics line rebuilt from TRL's `log_history` (a resumed run never re-logs its last step)."""
    record: dict[str, Any] = {"stage": stage, "step": step}
    for logs in log_history:
        if logs.get("step") == step and "train_loss" not in logs:
            record.update(
                {
                    ours: float(logs[theirs])
                    for theirs, ours in TRL_METRICS.items()
                    if theirs in logs
                }
            )
    return record


def promote_trl_checkpoint(source: Path, target: Path, meta: dict[str, Any]) -> Path:
    """Add the marker to a finished TRL checkpoint and rename it into the run layout.

    LoRA adapters get their base model (the run's warm-up or saved base) named relative to
    `target`, so the run folder can move.
    """
    try:
        ckpt.anchor_adapter_base(source, target, target.parent)
        with (source / ckpt.MARKER).open("w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        if target.exists():
            shutil.rmtree(target)
        os.rename(source, target)
    except OSError as exc:
        raise TrainingError(
            f"{target}: cannot write the checkpoint ({exc.strerror or exc}); the previous checkpoint is intact, "
            "free disk space or fix permissions, then rerun with --resume"
        ) from None
    return target


def latest_trl_checkpoint(checkpoints_dir: Path, prefix: str) -> Path | None:
    """The complete `<prefix><N>` folder with the highest N."""
    return latest_checkpoint(checkpoints_dir, prefix)


class GraderReward:
    """A TRL reward function backed by our grader through `rft_cli.graders.reward_function`.

    Each dataset row carries its grader item as JSON in the `rft_item` column (rows' fields may
    differ in type, which Arrow columns cannot hold). Grader error counts and sub-rewards are
    accumulated until the next metrics line; too many failures in one batch stop the run.
    With `truncation_penalty` set (`rl.truncated: penalize`), a completion that ends without an
    end-of-answer id (`eos_token_ids`, set from the trainer's) gets the penalty instead of its
    grade, as in our PPO.
    """

    __name__ = "grader"

    def __init__(
        self,
        grader: Any,
        max_error_share: float,
        truncation_penalty: float | None = None,
        keeper: Any = None,
        parser: Any = None,
    ):
        self.inner = reward_function(grader, parser)
        self.max_error_share = max_error_share
        self.truncation_penalty = truncation_penalty
        self.eos_token_ids: set[int] = set()
        self.keeper = keeper
        self._stats: list[GradeStats] = []

    def __call__(
        self,
        prompts: list[Any],
        completions: list[Any],
        rft_item: list[str],
        completion_ids: list[list[int]] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        items = [json.loads(i) for i in rft_item]
        keys = sorted({k for item in items for k in item})
        rewards = self.inner(
            prompts=prompts,
            completions=completions,
            **{k: [item.get(k) for item in items] for k in keys},
        )
        truncated = self._truncated(completion_ids)
        rewards = self._penalize_truncated(rewards, truncated)
        stats = stats_of(self.inner.last_results)
        self._stats.append(stats)
        if self.keeper is not None:
            self.keeper(
                prompts,
                completions,
                stats.results,
                completion_ids=completion_ids,
                truncated=truncated,
                **kwargs,
            )
        self.check_failures(stats)
        return [float(r) for r in rewards]

    def check_failures(self, stats: GradeStats) -> None:
        """Stop the run when more than `rl.max_grader_error_share` of a batch's grades failed."""
        if stats.failed_share > self.max_error_share:
            kinds = ", ".join(f"{k}: {v}" for k, v in sorted(stats.errors.items())) or "unknown"
            raise TrainingError(
                f"{stats.failed} of {len(stats.rewards)} grades failed ({kinds}), more than "
                f"rl.max_grader_error_share={self.max_error_share}; fix the grader (try `rft grade`) and rerun with --resume"
            )

    def _truncated(self, completion_ids: list[list[int]] | None) -> list[bool] | None:
        """TRL's rule: a completion is truncated when its last id is no end-of-answer id (None when
        the trainer passed no ids, or no end-of-answer ids are known)."""
        if completion_ids is None or not self.eos_token_ids:
            return None
        return [bool(len(ids)) and ids[-1] not in self.eos_token_ids for ids in completion_ids]

    def _penalize_truncated(
        self, rewards: list[float], truncated: list[bool] | None
    ) -> list[float]:
        if self.truncation_penalty is None:
            return rewards
        if truncated is None:
            raise TrainingError(
                "rl.truncated=penalize: the trainer passed no completion ids or end-of-answer ids, so "
                "truncated answers cannot be told apart; use rl.truncated=grade with this TRL version"
            )
        return [
            self.truncation_penalty if cut else r for r, cut in zip(rewards, truncated, strict=True)
        ]

    def drain_metrics(self) -> dict[str, Any]:
        """Grader error counts and mean sub-rewards since the last call."""
        merged = GradeStats(rewards=[])
        subs: dict[str, list[float]] = {}
        failed, graded = (
            sum(s.failed for s in self._stats),
            sum(len(s.rewards) for s in self._stats),
        )
        for stats in self._stats:
            for kind, count in stats.errors.items():
                merged.errors[kind] = merged.errors.get(kind, 0) + count
            for name, value in stats.sub_rewards.items():
                subs.setdefault(name, []).append(value)
        merged.sub_rewards = {k: sum(v) / len(v) for k, v in subs.items()}
        self._stats.clear()
        return {**merged.metrics(), **({"grader_error_share": failed / graded} if graded else {})}


class TrlSampleKeeper:
    """Writes a GRPO/RLOO step's sampled answers to RUN/samples/ from inside the reward function.

    TRL hands the reward function the trainer state, the completion token ids and the dataset's
    `rft_row` column; GraderReward adds which completions were truncated.
    """

    def __init__(self, ctx: RunContext, tokenizer: Any):
        self.ctx, self.tokenizer = ctx, tokenizer

    def __call__(
        self, prompts: list[Any], completions: list[Any], results: list[Any], **kwargs: Any
    ) -> None:
        state, rl = kwargs.get("trainer_state"), self.ctx.config.rl
        # TRL calls the reward at the start of a sampled batch; its counter is in optimizer steps
        step = int(getattr(state, "global_step", 0)) // optimizer_steps_per_batch(rl) + 1
        if not self.ctx.wants_samples("rl", step):
            return
        ids, rows = kwargs.get("completion_ids") or [], kwargs.get("rft_row") or []
        truncated = (
            kwargs.get("truncated") or []
        )  # GraderReward's (TRL's) rule, every end-of-answer id
        keep = self.ctx.samples.keep(len(completions), rl.samples_per_prompt)
        lines = []
        # a row with tools renders from its `rft_prompt`/`rft_tools` columns (rl_trl.rl_examples), as it was generated
        full, tools = (
            kwargs.get("rft_prompt") or [],
            [json.loads(t) if t else None for t in kwargs.get("rft_tools") or []],
        )
        for i in range(min(keep, len(results))):
            prompt = json.loads(full[i]) if i < len(full) and full[i] else prompts[i]
            lines.append(
                {
                    "row": rows[i] if i < len(rows) else None,
                    "output_text": text_of(completions[i]),
                    "prompt": render_prompt(
                        self.tokenizer, prompt, tools[i] if i < len(tools) else None
                    )
                    if isinstance(prompt, list)
                    else prompt,
                    **result_fields(results[i]),
                    "num_tokens": len(ids[i]) if i < len(ids) else None,
                    "truncated": truncated[i] if i < len(truncated) else None,
                }
            )
        self.ctx.keep_samples("rl", step, lines)


def quiet_libraries() -> None:
    """Progress bars of datasets/transformers would interleave with ours on stderr."""
    import warnings

    import datasets
    import transformers

    # Deprecation notices raised inside transformers/TRL about their own internals are not
    # actionable for an rft user; our own code keeps warnings on.
    for module in ("transformers", "trl", "peft", "accelerate"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def build_trl_trainer(trainer_class: Any, **kwargs: Any) -> Any:
    """Build a TRL trainer without its log printer (our callback writes the metrics)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer = trainer_class(**kwargs)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def precision_args(model: Any) -> dict[str, Any]:
    """bf16, fp16 and gradient_checkpointing for a TRL config, from our `model` settings.

    All three are set explicitly: TRL's SFTConfig/GRPOConfig default to bf16 autocast and gradient
    checkpointing, even on CPU. bf16/fp16 is mixed precision, autocast over the float32 weights
    TRL is handed (the warm-up's model comes from `load_model`, float32 for a full fine-tune;
    GRPO/RLOO load their model folder in float32, TRL's default), so the optimizer updates
    float32 master weights, as the Trainer does with bf16=True. Checkpointing goes by the name the
    installed transformers reads: `activation_checkpointing` where TrainingArguments has it (5.25
    does, and warns that `gradient_checkpointing`, which TRL's default sets, is deprecated), else
    `gradient_checkpointing`.
    """
    import dataclasses

    import torch
    from transformers import TrainingArguments

    dtype = resolve_dtype(model.dtype)
    names = {field.name for field in dataclasses.fields(TrainingArguments)}
    checkpointing = (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else "gradient_checkpointing"
    )
    return {
        "bf16": dtype == torch.bfloat16,
        "fp16": dtype == torch.float16,
        checkpointing: model.gradient_checkpointing,
    }


def common_trainer_args(ctx: RunContext, work_dir: Path) -> dict[str, Any]:
    """TrainingArguments shared by the SFT and RL stages (our settings, never TRL's YAML)."""
    import torch

    return {
        **precision_args(ctx.config.model),
        "output_dir": str(work_dir),
        "seed": ctx.config.seed,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": ctx.config.save_interval,
        "save_total_limit": None,
        "report_to": "none",  # our tracker logs every stage with the same names
        "disable_tqdm": True,
        "use_cpu": not torch.cuda.is_available(),
        "dataloader_num_workers": 0,
    }
