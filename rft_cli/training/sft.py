"""The supervised warm-up: TRL's SFTTrainer on the demonstrations, loss on the completion tokens only.

Each row is a conversational prompt/completion pair, {"prompt": [messages], "completion": [{"role":
"assistant", "content": demo}]} (the demonstration's tool calls too, and the row's `tools` passed to
the chat template, as TRL passes a `tools` column), tokenized the way TRL prepares such a pair: the chat template,
prompt tokens masked out of the loss, the first `sft.max_length` tokens kept. TRL would prepare
every row before the first step (1-2 minutes and about +500 MiB for 50,000 rows, see
bench/train_50k_start.py); here the Trainer's dataset holds only row numbers and each batch is
tokenized when it is drawn, so the warm-up starts in seconds and the rows stay held once, in
`ctx.train_rows`. A row the chat template cannot render now fails when its batch is drawn, not
before the first step. One difference in training: TRL drops a row whose demonstration is cut off
entirely by `sft.max_length`; here it keeps its place in the order and adds nothing to the loss
(finding them all would mean tokenizing every row up front).
The result is saved as `checkpoints/sft/` (the PPO policy's start and its frozen reference).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rft_cli.data.openai_rows import row_tools
from rft_cli.data.records import (
    demonstration,
    demonstration_message,
    episode_prompt_messages,
    episode_turns,
    prompt_messages,
)
from rft_cli.errors import ConfigError
from rft_cli.run_folder import checkpoints as ckpt
from rft_cli.training.context import RunContext
from rft_cli.training.models import apply_lora, load_model, save_pretrained
from rft_cli.training.seeding import seed_everything
from rft_cli.training.trl_bridge import (
    build_trl_trainer,
    common_trainer_args,
    latest_trl_checkpoint,
    record_from_history,
    trl_callback_class,
)

SFT_PREFIX = "sft-step-"


def sft_example(row: dict, demonstration_field: str) -> dict[str, Any] | None:
    """The row as a prompt/completion pair (and its `tools`, JSON text as TRL reads a `tools`
    column), or None when it has no demonstration."""
    demo = demonstration_message(row, demonstration_field)
    if demo is None:
        return None
    example = {"prompt": prompt_messages(row), "completion": [demo]}
    tools = row_tools(row)
    return {**example, "tools": json.dumps(tools)} if tools else example


def sft_examples(rows: Sequence[dict], demonstration_field: str) -> list[dict[str, Any]]:
    """Prompt/completion pairs for every row that has a demonstration (for TRL's own preparation,
    as bench/reft_effect.py uses; `run_sft` tokenizes rows lazily instead)."""
    return [
        example
        for example in (sft_example(row, demonstration_field) for row in rows)
        if example is not None
    ]


def sft_rows(rows: Sequence[dict], demonstration_field: str) -> list[int]:
    """Indices of the rows that have a demonstration: the warm-up's examples, in file order."""
    return [i for i, row in enumerate(rows) if demonstration(row, demonstration_field) is not None]


class SFTEncoder:
    """Token ids and labels of one warm-up example, made when a batch needs it.

    The steps of TRL's preparation of a conversational prompt/completion pair: the chat template on
    the prompt (with the generation prompt) and on prompt + completion; the completion starts where
    the two token lists part; prompt labels are -100; the first `max_length` tokens are kept.
    """

    def __init__(
        self, rows: Sequence[dict], tokenizer: Any, demonstration_field: str, max_length: int
    ):
        self.rows, self.tokenizer = rows, tokenizer
        self.demonstration_field, self.max_length = demonstration_field, max_length

    def __call__(self, index: int) -> dict[str, list[int]]:
        example = sft_example(self.rows[index], self.demonstration_field)
        if example is None:
            raise ValueError(
                f"training row {index} has no demonstration"
            )  # sft_rows() leaves such rows out
        tools = self._tools(self.rows[index])
        prompt_ids = self._ids(example["prompt"], tools, add_generation_prompt=True)
        ids = self._ids(example["prompt"] + example["completion"], tools)
        start = _common_prefix(prompt_ids, ids)
        labels = [-100] * start + ids[start:]
        return {"input_ids": ids[: self.max_length], "labels": labels[: self.max_length]}

    def _tools(self, row: dict) -> list[dict] | None:
        from rft_cli.tool_calls import template_tools

        return template_tools(self.tokenizer, row_tools(row))

    def _ids(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict] | None,
        add_generation_prompt: bool = False,
    ) -> list[int]:
        encoded = self.tokenizer.apply_chat_template(
            messages,
            tools=tools,
            tokenize=True,
            return_dict=True,
            add_generation_prompt=add_generation_prompt,
        )
        return list(encoded["input_ids"])


class EpisodeSFTEncoder(SFTEncoder):
    """A recipe with tools: each demonstration is an episode, tokenized as the episode runner builds
    one (`rft_cli.episodes.demonstration_ids`), loss on its assistant turns only.

    A row that ends with a demonstrated episode (its calls, the tool results and the answer after
    the last user turn) trains on every assistant turn of it, each through its stop token; the tool
    results and template tokens between them are context, labelled -100. A row with its
    demonstration in a field is a one-turn episode. The tools shown are the row's own, else the
    recipe's, as in the episodes RL samples. `stop` is the model's stop ids (set once it loads).
    """

    def __init__(
        self,
        rows: Sequence[dict],
        tokenizer: Any,
        demonstration_field: str,
        max_length: int,
        tools: list[dict] | None,
    ):
        super().__init__(rows, tokenizer, demonstration_field, max_length)
        self.tools, self.stop = tools, {tokenizer.eos_token_id}

    def __call__(self, index: int) -> dict[str, list[int]]:
        from rft_cli.episodes import demonstration_ids

        row = self.rows[index]
        if row["messages"][-1].get("role") == "assistant":
            prompt, turns = episode_prompt_messages(row), episode_turns(row)
        else:
            demo = demonstration_message(row, self.demonstration_field)
            if demo is None:
                raise ValueError(
                    f"training row {index} has no demonstration"
                )  # sft_rows() leaves such rows out
            prompt, turns = prompt_messages(row), [demo]
        tools = row_tools(row) or self.tools
        ids, mask = demonstration_ids(self.tokenizer, prompt, turns, tools, self.stop)
        labels = [token if bit else -100 for token, bit in zip(ids, mask, strict=True)]
        return {"input_ids": ids[: self.max_length], "labels": labels[: self.max_length]}


class SFTCollator:
    """Turns a batch of row indices into padded tensors: `SFTEncoder` per row, then TRL's padding collator.

    A row's tokens are kept once made (as int32 arrays, up to `cache_tokens` tokens in all; rows
    past that are tokenized each time they are drawn), so later epochs skip the chat template:
    about 12 ms of a 0.13-0.17 s warm-up step on the tool task's 4-head tiny model, 26 s of a
    2,500-step warm-up (bench/sft_encode_cache.py; bench/notes/2026-12-07-lookup-80-steps.md).
    """

    CACHE_TOKENS = 16_000_000  # 128 MB of ids and labels

    def __init__(self, encode: SFTEncoder, pad: Any, cache_tokens: int = CACHE_TOKENS):
        self.encode, self.pad = encode, pad
        self.cached: dict[int, tuple[array, array]] = {}
        self.cache_left = cache_tokens

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return self.pad([self.example(feature["row"]) for feature in features])

    def example(self, index: int) -> dict[str, list[int]]:
        """Row `index` encoded, from the cache when it is there."""
        hit = self.cached.get(index)
        if hit is not None:
            return {"input_ids": hit[0].tolist(), "labels": hit[1].tolist()}
        example = self.encode(index)
        size = len(example["input_ids"])
        if size <= self.cache_left:
            self.cached[index] = (array("i", example["input_ids"]), array("i", example["labels"]))
            self.cache_left -= size
        return example


def _common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two lists share (a chat template may render a prompt alone differently)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def check_demonstrations_fit(encode: SFTEncoder, rows: Sequence[int]) -> None:
    """Raise unless some demonstration keeps a token within `max_length`.

    Rows are tokenized in order until one fits, so a normal run tokenizes one row here; only a run
    where none fits tokenizes them all, to say so.
    """
    for index in rows:
        if any(label != -100 for label in encode(index)["labels"]):
            return
    raise ConfigError(
        f"sft: none of the {len(rows)} demonstrations fits in sft.max_length={encode.max_length} "
        "tokens after its prompt; raise sft.max_length"
    )


def sft_steps(n_examples: int, settings: Any) -> int:
    """Optimizer steps of the warm-up: `max_steps`, else ceil(epochs * examples / effective batch)."""
    if settings.max_steps:
        return settings.max_steps
    batches_per_epoch = math.ceil(n_examples / settings.batch_size)
    return max(
        1, math.ceil(settings.epochs * batches_per_epoch / settings.gradient_accumulation_steps)
    )


def sft_trainer_args(ctx: RunContext, n_examples: int) -> dict[str, Any]:
    """SFTConfig arguments of the warm-up (our settings, never TRL's YAML)."""
    settings = ctx.config.sft
    return dict(
        **common_trainer_args(ctx, ctx.checkpoints_dir / ".trl-sft"),
        max_steps=sft_steps(n_examples, settings),
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_ratio,
        max_grad_norm=settings.max_grad_norm,
        lr_scheduler_type=settings.lr_scheduler,
        max_length=settings.max_length,
        completion_only_loss=True,
        packing=False,
        dataset_num_proc=None,
        include_num_input_tokens_seen=True,
    )


def build_sft_trainer(
    ctx: RunContext,
    model: Any,
    tokenizer: Any,
    rows: list[int],
    encode: SFTEncoder,
    callbacks: Sequence[Any] = (),
) -> Any:
    """TRL's SFTTrainer over a dataset of row indices; `encode` tokenizes each batch as it is drawn."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    # TRL's preparation is skipped (our encoder does it per batch), and the one "row" column must
    # reach the collator rather than be dropped as unknown to the model.
    args = SFTConfig(
        **sft_trainer_args(ctx, len(rows)),
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
    )
    trainer = build_trl_trainer(
        SFTTrainer,
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({"row": rows}),
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    # Wrapped after construction: TRL sets the pad token on the tokenizer and the model only when it
    # builds its own collator, and that collator pads our batches.
    trainer.data_collator = SFTCollator(encode, trainer.data_collator)
    return trainer


def run_sft(ctx: RunContext, tokenizer: Any) -> Path:
    """Warm up the configured model on the demonstrations; returns `checkpoints/sft`."""
    config = ctx.config
    rows = sft_rows(ctx.train_rows, config.data.demonstration_field)
    if not rows:
        raise ConfigError(
            f"sft: no training row has a demonstration (a final assistant message or "
            f"{config.data.demonstration_field!r}); add them or set sft.enabled: false"
        )
    encode = build_encoder(ctx, tokenizer)
    check_demonstrations_fit(encode, rows)
    seed_everything(config.seed)
    model = apply_lora(load_model(config.model, tokenizer, seed=config.seed), config.model)
    if isinstance(encode, EpisodeSFTEncoder):  # a turn ends at the model's stop ids, as sampled
        from rft_cli.generation import stop_token_ids

        encode.stop = set(stop_token_ids(model, tokenizer))
    callback = trl_callback_class()(ctx, "sft", SFT_PREFIX, ctx.checkpoints_dir / ".trl-sft")
    trainer = build_sft_trainer(ctx, model, tokenizer, rows, encode, [callback])
    resume = latest_trl_checkpoint(ctx.checkpoints_dir, SFT_PREFIX)
    if resume is not None and ckpt.read_meta(resume)["step"] >= trainer.args.max_steps:
        _load_finished(trainer, resume)
    else:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if ctx.interrupt.requested:
        raise KeyboardInterrupt
    last = callback.final_record or record_from_history(
        "sft", trainer.state.global_step, trainer.state.log_history
    )
    return _save_sft(ctx, trainer, tokenizer, callback.stage_elapsed, last)


def build_encoder(ctx: RunContext, tokenizer: Any) -> SFTEncoder:
    """The warm-up's encoder: single answers, or with tools whole demonstrated episodes."""
    config = ctx.config
    field, length = config.data.demonstration_field, config.sft.max_length
    if ctx.tools is None:
        return SFTEncoder(ctx.train_rows, tokenizer, field, length)
    tools = ctx.tools.toolbox.tool_definitions() or None
    return EpisodeSFTEncoder(ctx.train_rows, tokenizer, field, length, tools)


def _load_finished(trainer: Any, folder: Path) -> None:
    """The warm-up finished but `checkpoints/sft` was not written (a crash in between): load the
    last TRL checkpoint instead of calling `train()`, which would run one step past `max_steps`."""
    from transformers import TrainerState

    trainer._load_from_checkpoint(
        str(folder)
    )  # the Trainer's own loader (full weights or LoRA adapters)
    trainer.state = TrainerState.load_from_json(str(folder / "trainer_state.json"))


def _save_sft(
    ctx: RunContext, trainer: Any, tokenizer: Any, clock: Any, last: dict[str, Any]
) -> Path:
    """Evaluate the warm-up model, write `checkpoints/sft` atomically, drop TRL's working folders.

    The stage's last metrics line is written here, with the evaluation. Every process takes part
    (TRL gathers sharded weights under DeepSpeed ZeRO-3); the main process alone writes the
    marker and renames.
    """
    from accelerate import PartialState

    state, folder = PartialState(), ctx.checkpoints_dir / "sft"
    step, model = trainer.state.global_step, trainer.model
    eval_started = time.perf_counter()
    with (
        trainer.accelerator.autocast()
    ):  # evaluate in the precision it trained in (bf16 autocast over float32)
        valid = evaluate_sft(ctx, model, tokenizer, step)
    eval_s = time.perf_counter() - eval_started if valid else None
    elapsed = clock()  # the warm-up's own clock, its evaluation included
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
        timing = {
            "elapsed_s": elapsed,
            "stage_elapsed_s": elapsed,
            **({"eval_s": eval_s} if eval_s else {}),
        }
        ctx.report({**last, **(valid or {}), **timing})
        meta = {
            "stage": "sft",
            "step": step,
            "elapsed_s": elapsed,
            "stage_elapsed_s": elapsed,
            **(valid or {}),
        }
        for name in ("training_args.bin",):
            (tmp / name).unlink(missing_ok=True)
        ckpt.commit_checkpoint(tmp, folder, meta)
        shutil.rmtree(ctx.checkpoints_dir / ".trl-sft", ignore_errors=True)
        for stale in ctx.checkpoints_dir.glob(f"{SFT_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
    state.wait_for_everyone()
    return folder


def evaluate_sft(
    ctx: RunContext, model: Any, tokenizer: Any, step: int = 0
) -> dict[str, float] | None:
    """Greedy validation score of the warm-up model (None without validation rows); answers to RUN/samples/."""
    if not ctx.valid_rows:
        return None
    return ctx.evaluate(model, tokenizer, step, after="sft")
