"""`rl.algorithm: grpo | rloo`: TRL's maintained GRPOTrainer / RLOOTrainer, fed by the same grader.

Same run layout and metric names as our PPO. The model is passed to TRL as a folder path: with
beta > 0 TRL builds its reference model from the policy's `name_or_path`, so an in-memory model
(a tiny model built from a config) is saved to disk first.

One RL step is one sampled batch, as in our PPO: TRL samples `prompts_per_step * samples_per_prompt`
completions, then makes `ppo_epochs` passes (its `num_iterations`) over them in minibatches of
`mini_batch_size` (its `steps_per_generation` slices, accumulated over `micro_batch_size` pieces),
one optimizer step per minibatch. TRL's `global_step` counts optimizer steps, so it is
`optimizer_steps_per_batch(rl)` times ours; logging and saving happen only at batch boundaries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rft_cli.data.openai_rows import row_tools
from rft_cli.data.records import item_of, prompt_messages
from rft_cli.errors import TrainingError
from rft_cli.generation import NEUTRAL_PROCESSORS, NEUTRAL_WARPERS, encode_prompt
from rft_cli.run_folder import checkpoints as ckpt
from rft_cli.tool_calls import output_parser
from rft_cli.training.architectures import lora_exclusions
from rft_cli.training.context import RunContext
from rft_cli.training.seeding import seed_everything
from rft_cli.training.trl_bridge import (
    GraderReward,
    TrlSampleKeeper,
    build_trl_trainer,
    common_trainer_args,
    latest_trl_checkpoint,
    optimizer_steps_per_batch,
    trl_callback_class,
)
from rft_cli.training.trl_episodes import (
    EpisodeReward,
    EpisodeRollout,
    EpisodeSampleKeeper,
    episode_trainer_class,
    quiet_rollout_hook,
)

STEP_PREFIX = "step-"


def rl_examples(rows: list[dict], demonstration_field: str) -> list[dict[str, Any]]:
    """Conversational prompts, each with its grader item as JSON (rows' fields differ in type).

    A row with tools (or tool calls in its prompt) also carries its prompt messages and tools as
    JSON (`rft_prompt`, `rft_tools`), which the trainer renders (`prompt_trainer_class`): an Arrow
    column of messages would give every message every key (tool_calls: None) and every arguments
    object every argument name. `prompt` keeps role and text, for TRL's own uses of it.
    """
    examples = []
    for i, row in enumerate(rows):
        messages, tools = prompt_messages(row), row_tools(row)
        plain = [{"role": m["role"], "content": m["content"]} for m in messages]
        examples.append(
            {
                "prompt": plain,
                "rft_item": json.dumps(item_of(row, demonstration_field)),
                "rft_row": i,
                "rft_prompt": json.dumps(messages) if plain != messages or tools else "",
                "rft_tools": json.dumps(tools) if tools else "",
            }
        )
    return examples


def build_trl_config(ctx: RunContext, work_dir: Path, **overrides: Any) -> Any:
    """The GRPOConfig / RLOOConfig of `rl.algorithm`, built from our settings only.

    `rft train` and `bench/rl_throughput.py` both build it here, so the bench measures the setup
    that ships. `overrides` replace single arguments (the bench turns saving off).
    """
    from trl import GRPOConfig, RLOOConfig

    rl = ctx.config.rl
    config_class = GRPOConfig if rl.algorithm == "grpo" else RLOOConfig
    per_batch = optimizer_steps_per_batch(rl)
    micro = rl.micro_batch_size or rl.mini_batch_size
    args = dict(
        **{
            **common_trainer_args(ctx, work_dir),
            "logging_steps": per_batch,
            "save_steps": ctx.config.save_interval * per_batch,
        },
        max_steps=rl.steps * per_batch,
        learning_rate=rl.learning_rate,
        weight_decay=rl.weight_decay,
        max_grad_norm=rl.max_grad_norm,
        lr_scheduler_type="constant",
        # one sampled batch = steps_per_generation slices of `micro` completions; an optimizer step
        # accumulates mini_batch_size / micro of them; num_iterations passes over the batch
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=rl.mini_batch_size // micro,
        steps_per_generation=rl.prompts_per_step * rl.samples_per_prompt // micro,
        num_iterations=rl.ppo_epochs,
        num_generations=rl.samples_per_prompt,
        max_completion_length=rl.max_new_tokens,
        temperature=rl.temperature,
        top_p=rl.top_p,
        top_k=0,
        beta=rl.kl_coef,
        epsilon=rl.clip_range,
        mask_truncated_completions=False,  # `truncated: penalize` is a reward (GraderReward), as in our PPO
        # TRL sets top_k/top_p/temperature/repetition_penalty itself, but a setting it leaves unset
        # (min_p, typical_p, no_repeat_ngram_size, suppress_tokens) would come from the model
        # folder's generation_config.json: the same neutral values as our PPO and eval.
        generation_kwargs={**NEUTRAL_PROCESSORS, **NEUTRAL_WARPERS},
        remove_unused_columns=False,
        shuffle_dataset=True,
    )
    return config_class(**{**args, **overrides})


def truncating_trainer_class(trainer_class: type, max_prompt_length: int) -> type:
    """`trainer_class` rendering prompts as our PPO does: each row's tools and tool-call messages
    through the chat template (`encode_prompt`), the last `max_prompt_length` tokens kept.

    TRL 1.16's GRPO/RLOO trainers have no prompt-length limit and pass one `tools` list to every
    prompt; both tokenize the prompts of a batch in `_tokenize_prompts`, which this subclass wraps.
    The batch's rows (and their `rft_prompt`/`rft_tools` columns) are seen first, in
    `_generate_and_score_completions`, in the order their prompts are tokenized.
    """
    for method in ("_tokenize_prompts", "_generate_and_score_completions"):
        if not callable(getattr(trainer_class, method, None)):
            raise TrainingError(
                f"this TRL version's {trainer_class.__name__} has no {method}, so rl.max_prompt_length "
                "and row tools cannot be applied; install trl 1.16 (the version rft is tested with)"
            )

    class PromptTruncating(trainer_class):
        def _generate_and_score_completions(self, inputs: list) -> Any:
            self._rft_rows = [(x.get("rft_prompt") or "", x.get("rft_tools") or "") for x in inputs]
            return super()._generate_and_score_completions(inputs)

        def _tokenize_prompts(self, prompts: list) -> Any:
            rows = getattr(self, "_rft_rows", [])
            if len(rows) == len(prompts) and any(
                m or t for m, t in rows
            ):  # text only: no images to return
                prompt_ids = [
                    _encode_row(self.processing_class, p, m, t)
                    for p, (m, t) in zip(prompts, rows, strict=True)
                ]
                rest: list[Any] = [None, {}]
            else:
                prompt_ids, *rest = super()._tokenize_prompts(prompts)
            return ([list(ids)[-max_prompt_length:] for ids in prompt_ids], *rest)

    PromptTruncating.__name__ = (
        trainer_class.__name__
    )  # TRL names its model card and logs after the class
    return PromptTruncating


def _encode_row(tokenizer: Any, prompt: list, messages: str, tools: str) -> list[int]:
    """A row's prompt ids, from its `rft_prompt`/`rft_tools` columns when it has them, as `rft eval` encodes it."""
    return encode_prompt(
        tokenizer,
        json.loads(messages) if messages else prompt,
        json.loads(tools) if tools else None,
    )


def run_trl_rl(ctx: RunContext, init_dir: Path, tokenizer: Any) -> dict[str, Any]:
    """Train with GRPO or RLOO from the model folder `init_dir`; checkpoints land as `step-<N>`."""
    from datasets import Dataset
    from trl import GRPOTrainer, RLOOTrainer

    config = ctx.config
    per_batch = optimizer_steps_per_batch(config.rl)
    resume = latest_trl_checkpoint(ctx.checkpoints_dir, STEP_PREFIX)
    if resume is not None and ckpt.read_meta(resume)["step"] >= config.rl.steps:
        return {
            "step": ckpt.read_meta(resume)["step"],
            "last_valid": None,
        }  # finished; Trainer would run one step more
    seed_everything(config.seed)
    work_dir = ctx.checkpoints_dir / f".trl-{config.rl.algorithm}"
    reward = _reward(ctx, tokenizer)

    def evaluate(model: Any, step: int) -> dict[str, float]:
        return ctx.evaluate(model, tokenizer, step, after="rl")

    callback = trl_callback_class()(
        ctx,
        "rl",
        STEP_PREFIX,
        work_dir,
        reward=reward,
        evaluate=evaluate,
        steps_per_record=per_batch,
    )
    if callback.loop.stopped_before():  # a resumed run that had stopped early stops again at once
        return {"step": callback.loop.progress.step, "last_valid": None}
    trainer_class: type = GRPOTrainer if config.rl.algorithm == "grpo" else RLOOTrainer
    episodes: dict[str, Any] = {}
    if ctx.tools is not None:  # GRPO over episodes (preflight refuses RLOO with tools)
        trainer_class = episode_trainer_class(trainer_class)
        episodes["rollout_func"] = EpisodeRollout(ctx, tokenizer)
    else:
        trainer_class = truncating_trainer_class(trainer_class, config.rl.max_prompt_length)
    peft_config = _peft_config(config.model, init_dir)
    with quiet_rollout_hook():
        trainer = build_trl_trainer(
            trainer_class,
            model=str(init_dir),
            reward_funcs=[reward],
            args=build_trl_config(ctx, work_dir),
            train_dataset=Dataset.from_list(
                rl_examples(ctx.train_rows, config.data.demonstration_field)
            ),
            processing_class=tokenizer,
            callbacks=[callback],
            peft_config=peft_config,
            **episodes,
        )
    # TRL's own rule for a truncated completion: its last id is no end-of-answer id (tokenizer, generation_config) nor pad
    reward.eos_token_ids = {*trainer.eos_token_ids, tokenizer.pad_token_id}
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if ctx.interrupt.requested:
        raise KeyboardInterrupt
    callback.loop.finish()
    return {"step": trainer.state.global_step // per_batch, "last_valid": callback.last_valid}


def _reward(ctx: RunContext, tokenizer: Any) -> GraderReward:
    """The grader as TRL's reward function: on single answers, or on whole episodes with tools."""
    rl = ctx.config.rl
    penalty = rl.truncation_penalty if rl.truncated == "penalize" else None
    if ctx.tools is not None:
        keeper = EpisodeSampleKeeper(ctx, tokenizer)
        return EpisodeReward(
            ctx.grader, rl.max_grader_error_share, keeper=keeper, truncation_penalty=penalty
        )
    return GraderReward(
        ctx.grader,
        rl.max_grader_error_share,
        truncation_penalty=penalty,
        keeper=TrlSampleKeeper(ctx, tokenizer),
        parser=output_parser(tokenizer),
    )


def _peft_config(settings: Any, model_dir: Path) -> Any:
    if settings.lora is None:
        return None
    from peft import LoraConfig
    from transformers import AutoConfig

    lora = settings.lora
    model_type = AutoConfig.from_pretrained(str(model_dir)).model_type
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        exclude_modules=lora_exclusions(model_type, lora.target_modules),
        task_type="CAUSAL_LM",
    )
