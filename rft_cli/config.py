"""The run config: one strict, typed YAML file for `rft train` (pydantic, extra keys forbidden).

Defaults follow the ReFT paper's released scripts (lqtrung1998/mwp_ReFT, `exps/paper_exps/`)
where they make sense on small hardware; each field's `source` says where its default comes from
(rendered into the config reference of docs/training.md).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticUndefined

from rft_cli import files
from rft_cli.errors import ConfigError
from rft_cli.run_folder.alarms import ALARM_NAMES
from rft_cli.tiny import TINY_ARCHITECTURES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, value: Any, info: Any) -> Any:
        """pydantic's lax mode reads `steps: true` as 1; a boolean where a number belongs is a typo."""
        if isinstance(value, bool):
            annotation = cls.model_fields[info.field_name].annotation
            kinds = getattr(annotation, "__args__", None) or (annotation,)
            if bool not in kinds and any(k in (int, float) for k in kinds):
                raise ValueError(f"expected a number, not the boolean {str(value).lower()}")
        return value


def setting(
    default: Any = PydanticUndefined, *, doc: str, source: str = "", **constraints: Any
) -> Any:
    """A config field with its documentation, written once: `doc` becomes the JSON Schema description
    and the config reference's text, `source` says where the default comes from (docs/training.md is
    generated from both by `python -m rft_cli.cli.docs_gen`, and a test keeps it in step)."""
    extra: dict[str, JsonValue] | None = {"default_source": source} if source else None
    if "default_factory" in constraints:
        return Field(description=doc, json_schema_extra=extra, **constraints)
    return Field(default, description=doc, json_schema_extra=extra, **constraints)


class LoraSettings(_Strict):
    """Optional LoRA adapters through peft (merged into the weights when a checkpoint is saved)."""

    r: int = setting(16, ge=1, le=1024, doc="LoRA rank (peft `r`).")
    alpha: int = setting(
        32,
        ge=1,
        doc="LoRA scale numerator (peft `lora_alpha`): the adapters' update is scaled by alpha / r.",
    )
    dropout: float = setting(
        0.05,
        ge=0.0,
        lt=1.0,
        doc="Dropout on the adapters' input in the SFT warm-up (PPO turns every dropout off).",
    )
    target_modules: list[str] | str = setting(
        "all-linear",
        doc="Which layers get adapters: `all-linear` or a list of module names (peft `target_modules`).",
        source="peft",
    )


class ModelSettings(_Strict):
    """Which model to train: a hub id / local folder (`name`) or a tiny offline model (`tiny`)."""

    name: str | None = setting(
        None,
        doc="The model to train: a hub id, a local model folder, a run folder (its `final/`) or a `.gguf` file (converted once into `$RFT_HOME/cache/gguf`; see Models from GGUF files). Give this or `model.tiny`; `model: NAME` is short for it.",
    )
    tiny: str | dict[str, int] | None = setting(
        None,
        doc="A tiny Llama built offline from a config, with a character tokenizer: `llama-test`, `llama-1m` or `llama-4m`, or a mapping of sizes (`hidden_size`, `num_hidden_layers`, `num_attention_heads`, `num_key_value_heads`, `intermediate_size`). Give this or `model.name`.",
    )
    tokenizer: str | None = setting(
        None, doc="A tokenizer folder, `.gguf` file or hub id; unset: the model's own."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = setting(
        "auto",
        doc="The compute dtype. `auto`: bfloat16 on a GPU that supports it, else float32. `bfloat16`/`float16` are mixed precision over float32 master weights (`float16` needs a GPU); `final/` is written in this dtype (see Precision).",
    )
    lora: LoraSettings | None = setting(
        None,
        doc="LoRA adapters through peft (merged into PPO checkpoints and into `final/`; GRPO/RLOO checkpoints hold the adapters); unset: full fine-tuning. `lora: {}` takes every default.",
    )
    gradient_checkpointing: bool = setting(
        False, doc="Recompute activations in the backward pass: less memory, more time."
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSettings:
        if (self.name is None) == (self.tiny is None):
            raise ValueError(
                "give exactly one of model.name (hub id or folder) or model.tiny (e.g. llama-1m)"
            )
        if self.tiny is not None and self.tokenizer is not None:
            raise ValueError(
                "model.tokenizer cannot be used with model.tiny (tiny models use the built-in character tokenizer)"
            )
        if isinstance(self.tiny, str):
            if self.tiny not in TINY_ARCHITECTURES:
                raise ValueError(
                    f"unknown tiny architecture {self.tiny!r}; use one of {', '.join(TINY_ARCHITECTURES)}"
                )
        if isinstance(self.tiny, dict):
            _check_tiny_sizes(self.tiny)
        return self


_TINY_SIZES = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
)


def _check_tiny_sizes(sizes: dict[str, int]) -> None:
    """A model.tiny dict must build a Llama: known keys, positive sizes, heads that divide the width."""
    for key, value in sizes.items():
        if key not in _TINY_SIZES:
            raise ValueError(f"model.tiny.{key}: unknown size; use {', '.join(_TINY_SIZES)}")
        if value < 1:
            raise ValueError(f"model.tiny.{key}: must be at least 1, not {value}")
    width, heads = sizes.get("hidden_size", 16), sizes.get("num_attention_heads", 2)
    if width % (2 * heads):  # rotary embeddings need an even width per head
        raise ValueError(
            f"model.tiny.hidden_size ({width}) must be a multiple of 2 * model.tiny.num_attention_heads ({heads})"
        )
    if heads % sizes.get("num_key_value_heads", heads):
        raise ValueError(
            "model.tiny.num_attention_heads must be a multiple of model.tiny.num_key_value_heads"
        )


class DataSettings(_Strict):
    """Training and validation JSONL files (the dataset contract of `rft validate`)."""

    train: Path = setting(
        doc="Training JSONL in the dataset contract (a relative path is read relative to the config file)."
    )
    valid: Path | None = setting(
        None,
        doc="Validation JSONL: evaluated during training and checked for overlap with `data.train`; unset: no evaluation.",
    )
    demonstration_field: str = setting(
        "solution",
        doc="The row field that holds the warm-up demonstration when the chat does not end with an assistant message.",
        source="the dataset contract",
    )

    @field_validator("train", "valid")
    @classmethod
    def _exists(cls, value: Path | None) -> Path | None:
        if value is not None and not files.is_file(value):
            problem = "not a regular file" if files.exists(value) else "file not found"
            raise ValueError(f"{problem}: {value} (give the path of a JSONL file)")
        return value


class SFTSettings(_Strict):
    """The supervised warm-up (TRL SFTTrainer, loss on the demonstration tokens only)."""

    enabled: bool = setting(
        True, doc="Run the supervised warm-up before RL.", source="ReFT always warms up"
    )
    epochs: float = setting(
        2.0,
        gt=0,
        le=10_000,
        doc="Passes over the demonstrations (fractions allowed).",
        source="ReFT starts RL from the epoch-2 warm-up checkpoint",
    )
    max_steps: int | None = setting(
        None,
        ge=1,
        doc="Stop the warm-up after this many optimizer steps (wins over `sft.epochs`); unset: no limit.",
    )
    learning_rate: float = setting(
        1e-5,
        gt=0,
        lt=1,
        doc="Peak learning rate of AdamW.",
        source="ReFT's SFT script (`exps/paper_exps/SFT/_template.sh`)",
    )
    batch_size: int = setting(
        8,
        ge=1,
        doc="Demonstrations per device per optimizer step (before accumulation).",
        source="small-hardware choice (ReFT: 3 x 2 x 8 GPUs)",
    )
    gradient_accumulation_steps: int = setting(
        1,
        ge=1,
        doc="Batches accumulated into one optimizer step.",
        source="small-hardware choice (ReFT: 3 x 2 x 8 GPUs)",
    )
    max_length: int = setting(
        1024,
        ge=8,
        doc="Tokens per demonstration (prompt and answer); longer ones are cut at the end.",
        source="ReFT `max_input_length` for SFT",
    )
    weight_decay: float = setting(
        0.0,
        ge=0,
        doc="AdamW weight decay.",
        source="ReFT's SFT script (`exps/paper_exps/SFT/_template.sh`)",
    )
    warmup_ratio: float = setting(
        0.0,
        ge=0,
        lt=1,
        doc="Share of the warm-up's steps spent ramping the learning rate up from 0.",
        source="ReFT's SFT script (`exps/paper_exps/SFT/_template.sh`)",
    )
    max_grad_norm: float = setting(
        1.0,
        gt=0,
        doc="Gradient clipping norm.",
        source="ReFT's SFT script (`exps/paper_exps/SFT/_template.sh`)",
    )
    lr_scheduler: Literal["linear", "constant", "cosine"] = setting(
        "linear",
        doc="Learning-rate schedule after the ramp.",
        source="ReFT's SFT script (`exps/paper_exps/SFT/_template.sh`)",
    )
    max_numerical_faults: int = setting(
        3,
        ge=1,
        doc="Warm-up steps with a NaN/inf loss or gradient norm before the run stops (exit 1); the count is kept across `--resume`.",
    )


class RLSettings(_Strict):
    """The RL stage: our PPO (ReFT) or TRL's GRPO / RLOO with the same grader."""

    algorithm: Literal["ppo", "grpo", "rloo"] = setting(
        "ppo",
        doc="`ppo`: rft's PPO with a value head (ReFT). `grpo`/`rloo`: TRL's GRPOTrainer / RLOOTrainer with the same grader, run folder and metrics.",
        source="ReFT",
    )
    steps: int = setting(
        100,
        ge=1,
        doc="RL steps; each samples one batch of `prompts_per_step x samples_per_prompt` answers.",
    )
    prompts_per_step: int = setting(
        8,
        ge=1,
        doc="Training prompts sampled per step (per process under `accelerate launch`).",
        source="ReFT",
    )
    samples_per_prompt: int = setting(
        1,
        ge=1,
        doc="Answers sampled per prompt (TRL's `num_generations`; at least 2 for `grpo`/`rloo`).",
        source="ReFT samples one answer per question",
    )
    mini_batch_size: int = setting(
        4,
        ge=1,
        doc="Answers per optimizer step; the step's batch must be a multiple of it (all algorithms).",
        source="ReFT's RL script (`exps/paper_exps/ReFT/_template.sh`)",
    )
    micro_batch_size: int | None = setting(
        None,
        ge=1,
        doc="Answers per forward/backward pass inside a minibatch (gradient accumulation, same updates, less memory); unset: `rl.mini_batch_size`.",
    )
    pass_memory_mb: int | None = setting(
        None,
        ge=16,
        doc="PPO (`ppo`): the activation memory one forward/backward pass of the update may hold, estimated from the model's config (float32, every token counted with its logits); a minibatch is cut into more passes to stay under it (the same update). Unset: 512 on a CPU, no bound on a GPU (set `rl.micro_batch_size` there).",
    )
    ppo_epochs: int = setting(
        2,
        ge=1,
        doc="Passes over each step's answers (TRL's `num_iterations` under `grpo`/`rloo`).",
        source="ReFT's RL script (`exps/paper_exps/ReFT/_template.sh`)",
    )
    learning_rate: float = setting(
        3e-7,
        gt=0,
        lt=1,
        doc="AdamW learning rate (constant).",
        source="ReFT's RL script (`exps/paper_exps/ReFT/_template.sh`)",
    )
    weight_decay: float = setting(
        0.0,
        ge=0,
        doc="AdamW weight decay.",
        source="ReFT's RL script (`exps/paper_exps/ReFT/_template.sh`)",
    )
    max_grad_norm: float = setting(
        1.0,
        gt=0,
        doc="Gradient clipping norm.",
        source="ReFT's RL script (`exps/paper_exps/ReFT/_template.sh`)",
    )
    temperature: float = setting(
        1.0, gt=0, doc="Sampling temperature of the rollouts.", source="plain sampling"
    )
    top_p: float = setting(
        1.0, gt=0, le=1, doc="Nucleus sampling of the rollouts (1: off).", source="plain sampling"
    )
    max_new_tokens: int = setting(
        700,
        ge=1,
        doc="Longest sampled answer, in tokens; with `tools`, the longest turn of an episode (`episode.max_tokens` bounds the whole episode).",
        source="ReFT `max_gen_length`",
    )
    max_prompt_length: int = setting(
        300,
        ge=1,
        doc="Prompt tokens kept (the last ones, after the chat template).",
        source="ReFT `max_input_length`",
    )
    kl_coef: float = setting(
        0.05,
        ge=0,
        doc="Weight of the KL penalty to the reference (warm-up) model. PPO subtracts it times `log pi - log pi_ref` from every token's reward; under `grpo`/`rloo` it is TRL's `beta`, a different penalty (see below). 0 loads no reference model.",
        source="ReFT, natural-language CoT (0.01 for program CoT)",
    )
    adaptive_kl: bool = setting(
        False, doc="Adapt `kl_coef` towards `kl_target` (PPO only).", source="Ziegler et al. 2019"
    )
    kl_target: float = setting(
        6.0,
        gt=0,
        doc="The KL the adaptive controller aims for, in nats per answer as `kl_sum` logs it (PPO only).",
        source="Ziegler et al. 2019",
    )
    kl_horizon: int = setting(
        10000,
        ge=1,
        doc="The adaptive controller's horizon, in answers (PPO only).",
        source="Ziegler et al. 2019",
    )
    gamma: float = setting(1.0, ge=0, le=1, doc="Discount of GAE (PPO only).", source="ReFT")
    lam: float = setting(0.95, ge=0, le=1, doc="Lambda of GAE (PPO only).", source="ReFT")
    clip_range: float = setting(
        0.2,
        gt=0,
        doc="PPO's policy ratio clip (TRL's `epsilon` under `grpo`/`rloo`).",
        source="ReFT / PPO",
    )
    clip_range_value: float = setting(
        0.2,
        gt=0,
        doc="Clip of the value update around the old values (PPO only).",
        source="ReFT / PPO",
    )
    vf_coef: float = setting(
        5.0,
        ge=0,
        doc="Weight of the value loss (PPO only).",
        source="ReFT's RL script (`exps/paper_exps/ReFT/_template.sh`)",
    )
    whiten_advantages: bool = setting(
        True,
        doc="Whiten advantages over the step's batch (a step whose answers all scored the same is only centred; PPO only).",
        source="ReFT `adv_whitening: global`",
    )
    loss_aggregation: Literal["answer", "token"] = setting(
        "answer",
        doc="How the policy and value losses average over a minibatch. `answer`: each answer's token mean, then the mean over answers (every answer weighs the same). `token`: the mean over all response tokens (long answers weigh more). PPO only; GRPO/RLOO keep TRL's `dapo` token mean.",
        source="ReFT's `train_rl_reft.py`",
    )
    critic: Literal["value_head", "separate"] = setting(
        "value_head",
        doc="`value_head`: a value head on the policy's final hidden state (shares the backbone); `separate`: a critic with its own backbone (PPO only).",
        source="ReFT",
    )
    share_prompts: bool = setting(
        True,
        doc="Compute each distinct prompt once for the answers sampled from it in PPO's forward passes (its keys and values copied to every answer; the same results to float rounding), where a piece of a minibatch saves more prompt tokens than a second pass costs. Off under DeepSpeed, gradient checkpointing and models whose cache is not a plain KV cache. `false`: one pass over every whole [prompt | answer] (PPO only).",
    )
    truncated: Literal["grade", "penalize"] = setting(
        "grade",
        doc="Answers cut off at `max_new_tokens`: `grade` them as they are, or `penalize` them with `truncation_penalty`.",
        source="ReFT grades truncated answers",
    )
    truncation_penalty: float = setting(
        0.0, doc="The reward of a truncated answer under `truncated: penalize`."
    )
    max_grader_error_share: float = setting(
        0.5,
        ge=0,
        le=1,
        doc="Stop the run (exit 1) when more than this share of a step's grades fail. A tool call the "
        "policy wrote that cannot be read is counted (`grader_errors/tool_call_parse_error`), not a failure.",
        source="OpenAI RFT stops on grader errors",
    )
    max_numerical_faults: int = setting(
        3,
        ge=1,
        doc="RL steps with a NaN/inf reward, KL, loss or gradient norm (PPO skips each) before the run stops (exit 1); the count is kept across `--resume`.",
    )
    final: Literal["last", "best"] = setting(
        "best",
        doc="Which model becomes `final/`. `best`: the highest `valid_reward_mean` among the evaluated RL checkpoints and the model RL started from (ties go to the later one). `last`: the last RL checkpoint.",
        source="OpenAI RFT keeps its best checkpoints by validation reward",
    )

    @model_validator(mode="after")
    def _batch_fits(self) -> RLSettings:
        batch = self.prompts_per_step * self.samples_per_prompt
        if batch % self.mini_batch_size:
            raise ValueError(
                f"rl.prompts_per_step * rl.samples_per_prompt ({batch}) must be a multiple of "
                f"rl.mini_batch_size ({self.mini_batch_size})"
            )
        if self.micro_batch_size is not None and self.mini_batch_size % self.micro_batch_size:
            raise ValueError(
                f"rl.mini_batch_size ({self.mini_batch_size}) must be a multiple of rl.micro_batch_size ({self.micro_batch_size})"
            )
        if self.algorithm in ("grpo", "rloo") and self.samples_per_prompt < 2:
            raise ValueError(
                f"rl.samples_per_prompt must be at least 2 for {self.algorithm} (it compares samples of one prompt)"
            )
        return self

    @model_validator(mode="after")
    def _keys_that_apply(self) -> RLSettings:
        """A key that changes nothing for this algorithm is refused (its default value is allowed, so a
        resolved config.yaml loads again)."""
        if self.algorithm != "ppo":
            moved = [
                k
                for k in _PPO_ONLY
                if k in self.model_fields_set
                and getattr(self, k) != type(self).model_fields[k].default
            ]
            if moved:
                raise ValueError(
                    f"rl.{moved[0]} applies to rl.algorithm: ppo only (TRL's {self.algorithm} trainer has no "
                    f"{_PPO_ONLY[moved[0]]}); remove it"
                )
        if self.truncated == "grade" and self.truncation_penalty != 0.0:
            raise ValueError(
                "rl.truncation_penalty applies only with rl.truncated: penalize (truncated answers are graded now); "
                "set rl.truncated: penalize or remove it"
            )
        return self


# RL keys that only our PPO reads, and what TRL's GRPO/RLOO lack for them.
_PPO_ONLY = {
    "critic": "critic",
    "vf_coef": "critic",
    "clip_range_value": "critic",
    "gamma": "discounted returns (GAE)",
    "lam": "discounted returns (GAE)",
    "whiten_advantages": "global advantage whitening",
    "adaptive_kl": "adaptive KL controller (beta is fixed)",
    "kl_target": "adaptive KL controller (beta is fixed)",
    "kl_horizon": "adaptive KL controller (beta is fixed)",
    "share_prompts": "choice of prompt sharing (TRL computes every [prompt | completion] whole)",
    "pass_memory_mb": "memory bound per pass (set per_device_train_batch_size through rl.micro_batch_size)",
    "loss_aggregation": "choice of loss aggregation (its default loss_type, dapo, is a token mean over the batch)",
}


class EvalSettings(_Strict):
    """Greedy validation during training: `samples` rows of data.valid every `interval` RL steps."""

    interval: int = setting(10, ge=1, doc="Evaluate every N RL steps (and at the last).")
    samples: int = setting(
        64,
        ge=1,
        doc="Validation rows evaluated (the first N), one greedy answer each; the next N, when `data.valid` has them, score `final/` once at the end (held out from its choice).",
    )
    max_new_tokens: int | None = setting(
        None, ge=1, doc="Longest evaluation answer; unset: `rl.max_new_tokens`."
    )
    batch_size: int = setting(32, ge=1, doc="Prompts generated together during evaluation.")


class GraderCheckSettings(_Strict):
    """The grader self-test in preflight: each demonstration is graded as if the model wrote it."""

    enabled: bool = setting(
        True,
        doc="Run the grader self-test of `rft validate --grader` on the data before any model loads.",
    )
    max_failure_share: float = setting(
        0.02,
        ge=0,
        le=1,
        doc="Stop (exit 1) when more than this share of the demonstrations scores below full marks (or the grader's `pass_threshold`).",
        source="a grader that fails 2% of right answers is more likely wrong than the data",
    )


class SamplesSettings(_Strict):
    """Sampled and evaluation answers kept under RUN/samples/ (one JSONL file per step)."""

    enabled: bool = setting(True, doc="Keep sampled and evaluation answers in `RUN/samples/`.")
    per_step: int = setting(
        16, ge=1, doc="Answers kept of each kept RL step (whole prompt groups first)."
    )
    interval: int = setting(1, ge=1, doc="Keep every N-th RL step (the first and last always).")
    eval_rows: int = setting(64, ge=0, doc="Greedy answers kept of each evaluation (0: none).")
    max_chars: int = setting(
        2000, ge=100, doc="Prompt and answer texts are cut to this many characters."
    )
    max_mb: float = setting(
        200.0,
        gt=0,
        doc="Cap on the folder's size in MB: the oldest RL-step files are deleted past it.",
    )


class AlarmSettings(_Strict):
    """Detectors over the metrics stream (docs/reports.md "Alarms"); thresholds are conservative on purpose."""

    enabled: bool = setting(True, doc="Run the alarm detectors over the RL metrics.")
    stop_on: list[str] = setting(
        default_factory=list, doc="Alarm names that stop the run (exit 1)."
    )
    early_stop: list[str] = setting(
        default_factory=lambda: ["valid_regression"],
        doc="Alarms that end the RL stage early as a normal finish: the step is saved, `final/` is the best "
        "validated model, exit 0. Only `valid_regression` may be listed; `[]` turns early stopping off.",
        source="a run that only makes the model worse should hand back the best one, not run on",
    )
    disabled: list[str] = setting(default_factory=list, doc="Alarm names never raised.")
    window: int = setting(5, ge=1, doc='RL steps averaged for "at the start" and "now".')
    eval_window: int = setting(3, ge=2, doc="Evaluations `reward_hacking` looks back on.")
    valid_drop: float = setting(
        0.15,
        ge=0,
        doc="`reward_hacking`: drop of `valid_reward_mean` below the recent best.",
        source="loose on purpose: the default recipe raises no alarm",
    )
    train_rise: float = setting(
        0.02,
        ge=0,
        doc="`reward_hacking`: rise of `train_reward_mean` over the same time.",
        source="loose on purpose: the default recipe raises no alarm",
    )
    length_multiple: float = setting(
        2.5,
        gt=1,
        doc="`length_growth`: answer length now over its start.",
        source="loose on purpose: the default recipe raises no alarm",
    )
    truncated_rise: float = setting(
        0.25,
        gt=0,
        le=1,
        doc="`truncation_rise`: rise of `truncated_share` over its start.",
        source="loose on purpose: the default recipe raises no alarm",
    )
    no_signal_steps: int = setting(
        10,
        ge=1,
        doc="`no_signal`: steps in a row whose answers all scored the same.",
        source="loose on purpose: the default recipe raises no alarm",
    )
    entropy_fraction: float = setting(
        0.05,
        gt=0,
        lt=1,
        doc="`entropy_collapse`: entropy now below this fraction of its start.",
        source="loose on purpose: the default recipe raises no alarm",
    )
    kl_max: float = setting(
        1.0,
        gt=0,
        doc="`kl_high`: the KL per answer token now above this, in nats (`kl`; under RLOO `kl_logratio`).",
        source="loose on purpose: the default recipe's first 40 PPO steps log `kl` 0 to 0.056",
    )
    grader_error_rise: float = setting(
        0.1,
        gt=0,
        le=1,
        doc="`grader_errors`: rise of `grader_error_share` over its start.",
        source="loose on purpose: the default recipe raises no alarm",
    )
    regression_drop: float = setting(
        0.1,
        gt=0,
        doc="`valid_regression`: how far below the best validation reward so far (the start's included) an evaluation must score.",
    )
    regression_evals: int = setting(
        2, ge=1, doc="`valid_regression`: how many evaluations in a row must score that low."
    )
    tool_call_multiple: float = setting(
        2.0,
        gt=1,
        doc="`tool_call_growth` (episodes with tools): tool calls per episode now over its start (a start under one call counts as one).",
    )
    tool_error_rise: float = setting(
        0.25,
        gt=0,
        le=1,
        doc="`tool_errors` (episodes with tools): rise of `tool_error_share`, the share of calls whose result was an error, over its start.",
    )

    @field_validator("stop_on", "disabled")
    @classmethod
    def _known_names(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in ALARM_NAMES]
        if unknown:
            raise ValueError(
                f"unknown alarm {unknown[0]!r}; the alarms are {', '.join(ALARM_NAMES)}"
            )
        return names

    @field_validator("early_stop")
    @classmethod
    def _early_stop_names(cls, names: list[str]) -> list[str]:
        from rft_cli.run_folder.alarms import EARLY_STOP_ALARMS

        unknown = [n for n in names if n not in EARLY_STOP_ALARMS]
        if unknown:
            raise ValueError(
                f"{unknown[0]!r} cannot end a run early; early_stop takes {', '.join(EARLY_STOP_ALARMS)} "
                "(use stop_on to stop on other alarms)"
            )
        return names


_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)
_SECRET_HEADER = re.compile(r"auth|key|token|secret|password|cookie|session", re.IGNORECASE)
_ENV_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


class ToolSettings(_Strict):
    """One tool the policy may call during an episode: a Python function or an HTTP endpoint."""

    name: str = setting(
        doc="The function name the model calls (1 to 64 letters, digits, `_` or `-`); for a python tool, the function's name in its file."
    )
    python: Path | None = setting(
        None,
        doc="A Python file that defines `def <name>(...)`, run in the python grader's sandbox with the same limits (a relative path is read relative to the config file). The tool's JSON schema comes from the signature and docstring. Give this or `server_url`.",
    )
    server_url: str | None = setting(
        None,
        doc='An http(s) endpoint in OpenAI\'s Agent RFT shape: each call is POSTed there as a function call (`name`, `arguments`, `call_id`, `item`, `trace_id`) and answered with `{"output": ...}`. Give this or `python`.',
    )
    headers: dict[str, str] = setting(
        default_factory=dict,
        doc="Headers sent to `server_url`. Secrets are written as `${ENV_VAR}` (`Authorization: Bearer ${SEARCH_KEY}`) and read from the environment at each call, so only the variable's name reaches the run folder; a header whose name looks secret (auth, key, token...) must use one.",
    )
    description: str | None = setting(
        None,
        doc="What an endpoint tool does, for the model (a python tool's comes from its docstring); rows' own `tools` definitions win.",
    )
    parameters: dict[str, Any] | None = setting(
        None,
        doc="The JSON schema of an endpoint tool's arguments, for rows without their own `tools` (a python tool's comes from its signature).",
    )
    timeout: float = setting(
        10.0,
        gt=0,
        le=600,
        doc="Seconds a call may take, all of it (connecting, sending, reading; for a python tool, wall clock and CPU time).",
        source="python graders' timeout; OpenAI waits up to 600 s",
    )
    retries: int = setting(
        3,
        ge=0,
        le=10,
        doc="Further attempts after a server error, a timeout or a crash; when they are spent the episode is dropped (not graded) and counted.",
        source="OpenAI retries a failing tool at most 3 times",
    )
    memory_mb: int = setting(
        1024, ge=64, doc="A python tool's memory (address space) limit, as for python graders."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> ToolSettings:
        if not _TOOL_NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: use 1 to 64 letters, digits, '_' or '-'")
        if (self.python is None) == (self.server_url is None):
            raise ValueError("give exactly one of python (a file) or server_url (an endpoint)")
        if self.python is not None:
            endpoint_only = [
                k for k in ("headers", "description", "parameters") if getattr(self, k)
            ]
            if endpoint_only:
                raise ValueError(
                    f"{endpoint_only[0]} applies to server_url tools only (a python tool's schema comes from its signature and docstring)"
                )
        else:
            from rft_cli.http_post import check_url

            problem = check_url(self.server_url or "")
            if problem:
                raise ValueError(f"server_url {self.server_url!r}: {problem}")
            if "memory_mb" in self.model_fields_set:
                raise ValueError("memory_mb applies to python tools only")
            _check_headers(self.headers)
        if self.parameters is not None:
            from rft_cli.data.openai_rows import check_tools

            problems = check_tools(
                [
                    {
                        "type": "function",
                        "function": {"name": self.name, "parameters": self.parameters},
                    }
                ]
            )
            if problems:
                raise ValueError(problems[0].replace("tools[0].function.", ""))
        return self

    @field_validator("python")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        try:
            found = value is None or value.is_file()
        except (OSError, ValueError):  # a name too long for the filesystem, a NUL byte
            found = False
        if not found:
            raise ValueError(
                f"file not found: {value} (give the Python file that defines the tool)"
            )
        return value


def _check_headers(headers: dict[str, str]) -> None:
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"headers: {name!r} is not a valid header name")
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"headers.{name}: the value holds a line break or NUL")
        if _SECRET_HEADER.search(name) and not _ENV_REFERENCE.search(value):
            raise ValueError(
                f'headers.{name}: write the secret as ${{ENV_VAR}} (for example "Bearer ${{SEARCH_KEY}}") and '
                "export the variable; a literal secret would be copied into the run folder's config.yaml"
            )


class EpisodeSettings(_Strict):
    """Multi-turn episodes with `tools`: how many calls and tokens an episode may use."""

    max_episode_steps: int = setting(
        10,
        ge=1,
        le=1000,
        doc="Tool calls an episode may make; past them the model's next turn is its answer (calls in it are not run).",
        source="OpenAI's Agent RFT (`max_episode_steps`; its examples use 10)",
    )
    max_tokens: int = setting(
        2048,
        ge=16,
        doc="Token budget of an episode after the prompt: the model's turns, tool results and chat-template tokens together. The episode ends where the next piece would pass it.",
    )


class RunConfig(_Strict):
    """One `rft train` run."""

    model: ModelSettings = setting(doc="The model to train.")
    data: DataSettings = setting(doc="The training and validation files.")
    grader: str | dict[str, Any] = setting(
        doc="A grader file (YAML or JSON, relative to the config file) or an inline grader mapping."
    )
    sft: SFTSettings = setting(default_factory=SFTSettings, doc="The supervised warm-up.")
    rl: RLSettings = setting(default_factory=RLSettings, doc="The RL stage.")
    eval: EvalSettings = setting(
        default_factory=EvalSettings, doc="Greedy validation during training."
    )
    grader_check: GraderCheckSettings = setting(
        default_factory=GraderCheckSettings, doc="The grader self-test before training."
    )
    samples: SamplesSettings = setting(
        default_factory=SamplesSettings, doc="Answers kept in `RUN/samples/`."
    )
    alarms: AlarmSettings = setting(
        default_factory=AlarmSettings, doc="Detectors over the metrics stream."
    )
    tools: list[ToolSettings] = setting(
        default_factory=list,
        doc="Tools the model may call in multi-turn episodes (docs/agent.md). With tools, `rft train` trains over whole episodes (the warm-up on demonstrated episodes, PPO or GRPO on sampled ones; RLOO is refused), and `rft eval --tools` runs episodes with them.",
    )
    episode: EpisodeSettings = setting(
        default_factory=EpisodeSettings, doc="Limits of an episode with tools."
    )
    output_dir: Path | None = setting(
        None,
        doc="The run folder; `--output-dir` wins; unset: `$RFT_HOME/runs/<config name>` (`RFT_HOME` defaults to `~/.rft`).",
    )
    seed: int = setting(
        42,
        ge=0,
        lt=2**32,
        doc="Seed of sampling, shuffling and initialisation (each RL step is seeded from `(seed, step)`).",
        source="ReFT",
    )  # lt 2**32: numpy's seeds are 32-bit
    save_interval: int = setting(
        10,
        ge=1,
        doc="Save a checkpoint every N steps of each stage, and at its last step, on Ctrl-C, at an early stop and (RL under `rl.final: best`) at a new best validation score.",
    )
    keep_checkpoints: int = setting(
        2, ge=1, doc="RL checkpoints kept: the best N by `valid_reward_mean`, plus the latest."
    )
    report_to: Literal["none", "tensorboard", "trackio", "wandb"] = setting(
        "none",
        doc="Also log metrics to `tensorboard`, `wandb` or `trackio` (their package must be installed).",
    )

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, tools: list[ToolSettings]) -> list[ToolSettings]:
        seen: set[str] = set()
        for tool in tools:
            if tool.name in seen:
                raise ValueError(f"two tools are named {tool.name!r}; give each its own name")
            seen.add(tool.name)
        return tools

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("grader")
    @classmethod
    def _grader_file(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(value, str) and not files.is_file(value):
            raise ValueError(
                f"grader file not found: {value} (give a grader YAML/JSON file or an inline grader)"
            )
        return value

    def resolved_output_dir(self, config_path: str | Path | None = None) -> Path:
        """`output_dir`, else $RFT_HOME/runs/<config name> (RFT_HOME defaults to ~/.rft)."""
        if self.output_dir is not None:
            return Path(self.output_dir)
        return rft_home() / "runs" / (Path(config_path).stem if config_path else "run")


def rft_home() -> Path:
    """Where rft keeps its state: `$RFT_HOME`, else `~/.rft` (runs, the model cache)."""
    return Path(os.environ.get("RFT_HOME") or Path.home() / ".rft")


# -- loading ---------------------------------------------------------------------------------


def _fields_at(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The field names allowed at `path` inside `model` (for "did you mean")."""
    current: Any = model
    for part in path:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        annotation = fields[part].annotation
        current = next(
            (
                a
                for a in getattr(annotation, "__args__", (annotation,))
                if hasattr(a, "model_fields")
            ),
            None,
        )
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def _key(part: Any) -> str:
    """One key of a path, quoted when it is not a plain name (a key may hold newlines or quotes)."""
    text = str(part)
    return text if text.replace("_", "").replace("-", "").isalnum() else json.dumps(text)


def _format_error(error: ErrorDetails) -> str:
    loc = tuple(
        p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-after"))
    )
    key = ".".join(_key(p) for p in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        allowed = _fields_at(RunConfig, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = (
            f"; did you mean {'.'.join([*map(_key, loc[:-1]), close[0]])!r}?"
            if close
            else f"; allowed keys: {', '.join(allowed)}"
        )
        return f"{key}: unknown key{hint}"
    message = " ".join(str(error["msg"]).removeprefix("Value error, ").split())
    return f"{key}: {message}"


def parse_run_config(data: Any, source: str = "config") -> RunConfig:
    """Validate a dict as a RunConfig; raises ConfigError naming the key path of the first problem."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the config must be a YAML mapping (key: value lines), not {type(data).__name__}"
        )
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise ConfigError(
            f"{source}: " + "; ".join(_format_error(e) for e in errors[:5]) + more
        ) from None


def _set_path(data: dict[str, Any], override: str) -> None:
    import yaml

    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: write it as key=value, e.g. --set rl.kl_coef=0.1")
    from rft_cli import yaml_safe

    try:
        value = yaml_safe.load(raw) if raw.strip() else ""
    except (yaml_safe.RefusedAlias, yaml_safe.RefusedTag) as exc:
        raise ConfigError(f"--set {key.strip()}: {exc.problem}") from None
    except (RecursionError, yaml_safe.RefusedNesting):
        raise ConfigError(
            f"--set {key.strip()}: the value is nested too deeply for the YAML parser; flatten it"
        ) from None
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None or not isinstance(child, dict):
            if child is not None:
                raise ConfigError(
                    f"--set {key}: {part} is not a mapping, so it has no key {parts[-1]!r}"
                )
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Relative data/grader paths are read relative to the config file, like an include."""

    def fix(value: Any) -> Any:
        if isinstance(value, str) and not Path(value).is_absolute():
            candidate = base / value
            if not files.exists(value) and files.exists(candidate):
                return str(candidate)
        return value

    if isinstance(data.get("data"), dict):
        for key in ("train", "valid"):
            if key in data["data"]:
                data["data"][key] = fix(data["data"][key])
    if "grader" in data:
        data["grader"] = fix(data["grader"])
    tools = data.get("tools")
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict) and "python" in tool:
            tool["python"] = fix(tool["python"])


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a run config YAML, apply `--set key=value` overrides (YAML-typed values), validate."""
    data = files.read_yaml(path, "the run config")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the config must be a YAML mapping (key: value lines), not {type(data).__name__}"
        )
    for override in overrides or []:
        _set_path(data, override)
    _resolve_paths(data, Path(path).resolve().parent)
    return parse_run_config(data, source=str(path))


def dump_run_config(config: RunConfig) -> dict[str, Any]:
    """The resolved config as plain YAML-able data (paths as strings)."""
    return config.model_dump(mode="json")
