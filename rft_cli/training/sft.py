"""The supervised warm-up: TRL's SFTTrainer on the demonstrations, loss on the completion tokens only.

Rows become conversational prompt/completion pairs, so TRL applies the chat template and masks
the prompt: {"prompt": [messages], "completion": [{"role": "assistant", "content": demo}]}.
The result is saved as `checkpoints/sft/` (the PPO policy's start and its frozen reference).
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

from rft_cli import checkpoints as ckpt
from rft_cli.data.records import demonstration, prompt_messages
from rft_cli.errors import ConfigError
from rft_cli.training.common import RunContext, evaluate_greedy, seed_everything
from rft_cli.training.trl_bridge import (
    build_trl_trainer,
    common_trainer_args,
    latest_trl_checkpoint,
    record_from_history,
    trl_callback_class,
)

SFT_PREFIX = "sft-step-"


def sft_examples(rows: list[dict], demonstration_field: str) -> list[dict[str, Any]]:
    """Prompt/completion pairs for every row that has a demonstration."""
    examples = []
    for row in rows:
        demo = demonstration(row, demonstration_field)
        if demo:
            examples.append({"prompt": prompt_messages(row),
                             "completion": [{"role": "assistant", "content": demo}]})
    return examples


def sft_steps(n_examples: int, settings: Any) -> int:
    """Optimizer steps of the warm-up: `max_steps`, else ceil(epochs * examples / effective batch)."""
    if settings.max_steps:
        return settings.max_steps
    batches_per_epoch = math.ceil(n_examples / settings.batch_size)
    return max(1, math.ceil(settings.epochs * batches_per_epoch / settings.gradient_accumulation_steps))


def run_sft(ctx: RunContext, tokenizer: Any) -> Path:
    """Warm up the configured model on the demonstrations; returns `checkpoints/sft`."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from rft_cli.training.models import apply_lora, load_model

    config, settings = ctx.config, ctx.config.sft
    examples = sft_examples(ctx.train_rows, config.data.demonstration_field)
    if not examples:
        raise ConfigError(f"sft: no training row has a demonstration (a final assistant message or "
                          f"{config.data.demonstration_field!r}); add them or set sft.enabled: false")
    seed_everything(config.seed)
    work_dir = ctx.checkpoints_dir / ".trl-sft"
    model = apply_lora(load_model(config.model, tokenizer, seed=config.seed), config.model)
    args = SFTConfig(
        **common_trainer_args(ctx, work_dir),
        max_steps=sft_steps(len(examples), settings), learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size, gradient_accumulation_steps=settings.gradient_accumulation_steps,
        weight_decay=settings.weight_decay, warmup_steps=settings.warmup_ratio, max_grad_norm=settings.max_grad_norm,
        lr_scheduler_type=settings.lr_scheduler, max_length=settings.max_length, completion_only_loss=True,
        packing=False, dataset_num_proc=None, include_num_input_tokens_seen=True,
    )
    callback = trl_callback_class()(ctx, "sft", SFT_PREFIX, work_dir)
    trainer = build_trl_trainer(SFTTrainer, model=model, args=args, train_dataset=Dataset.from_list(examples),
                                processing_class=tokenizer, callbacks=[callback])
    if len(trainer.train_dataset) == 0:  # TRL drops examples whose demonstration is cut off entirely
        raise ConfigError(f"sft: none of the {len(examples)} demonstrations fits in sft.max_length={settings.max_length} "
                          "tokens after its prompt; raise sft.max_length")
    resume = latest_trl_checkpoint(ctx.checkpoints_dir, SFT_PREFIX)
    started = time.perf_counter()
    if resume is not None and ckpt.read_meta(resume)["step"] >= args.max_steps:
        _load_finished(trainer, resume)
    else:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if ctx.interrupt.requested:
        raise KeyboardInterrupt
    last = callback.final_record or record_from_history("sft", trainer.state.global_step, trainer.state.log_history)
    return _save_sft(ctx, trainer, tokenizer, time.perf_counter() - started, last)


def _load_finished(trainer: Any, folder: Path) -> None:
    """The warm-up finished but `checkpoints/sft` was not written (a crash in between): load the
    last TRL checkpoint instead of calling `train()`, which would run one step past `max_steps`."""
    from transformers import TrainerState

    trainer._load_from_checkpoint(str(folder))  # the Trainer's own loader (full weights or LoRA adapters)
    trainer.state = TrainerState.load_from_json(str(folder / "trainer_state.json"))


def _save_sft(ctx: RunContext, trainer: Any, tokenizer: Any, elapsed: float, last: dict[str, Any]) -> Path:
    """Evaluate the warm-up model, write `checkpoints/sft` atomically, drop TRL's working folders.

    The stage's last metrics line is written here, with the evaluation. Every process takes part
    (TRL gathers sharded weights under DeepSpeed ZeRO-3); the main process alone writes the
    marker and renames.
    """
    from accelerate import PartialState

    from rft_cli.training.models import save_pretrained

    state, folder = PartialState(), ctx.checkpoints_dir / "sft"
    step, model = trainer.state.global_step, trainer.model
    valid = evaluate_sft(ctx, model, tokenizer)
    tmp = ckpt.temp_folder(folder)
    if state.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    state.wait_for_everyone()
    try:
        if ctx.config.model.lora is not None:  # merge the adapters so the folder loads directly
            if state.is_main_process:
                save_pretrained(model, tokenizer, tmp)
        else:
            trainer.save_model(str(tmp))
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ckpt.io_error(folder, exc) from None
    if state.is_main_process:
        ctx.report({**last, **(valid or {}), "elapsed_s": ctx.elapsed_before + elapsed})
        meta = {"stage": "sft", "step": step, "elapsed_s": ctx.elapsed_before + elapsed, **(valid or {})}
        for name in ("training_args.bin",):
            (tmp / name).unlink(missing_ok=True)
        ckpt.commit_checkpoint(tmp, folder, meta)
        shutil.rmtree(ctx.checkpoints_dir / ".trl-sft", ignore_errors=True)
        for stale in ctx.checkpoints_dir.glob(f"{SFT_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
    state.wait_for_everyone()
    return folder


def evaluate_sft(ctx: RunContext, model: Any, tokenizer: Any) -> dict[str, float] | None:
    """Greedy validation score of the warm-up model (None without validation rows)."""
    if not ctx.valid_rows:
        return None
    cfg, ev = ctx.config, ctx.config.eval
    return evaluate_greedy(model, tokenizer, ctx.grader, ctx.eval_rows(), demonstration_field=cfg.data.demonstration_field,
                           max_new_tokens=ev.max_new_tokens or cfg.rl.max_new_tokens, batch_size=ev.batch_size)
