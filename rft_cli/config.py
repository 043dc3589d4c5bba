"""The run config: one strict, typed YAML file for `rft train` (pydantic, extra keys forbidden).

Defaults follow the ReFT paper's released scripts (lqtrung1998/mwp_ReFT, `exps/paper_exps/`)
where they make sense on small hardware; README's `train` section lists where each comes from.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rft_cli.errors import ConfigError


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


class LoraSettings(_Strict):
    """Optional LoRA adapters through peft (merged into the weights when a checkpoint is saved)."""

    r: int = Field(16, ge=1, le=1024)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | str = "all-linear"


class ModelSettings(_Strict):
    """Which model to train: a hub id / local folder (`name`) or a tiny offline model (`tiny`)."""

    name: str | None = None
    tiny: str | dict[str, int] | None = None
    tokenizer: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    lora: LoraSettings | None = None
    gradient_checkpointing: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> ModelSettings:
        if (self.name is None) == (self.tiny is None):
            raise ValueError("give exactly one of model.name (hub id or folder) or model.tiny (e.g. llama-1m)")
        if self.tiny is not None and self.tokenizer is not None:
            raise ValueError("model.tokenizer cannot be used with model.tiny (tiny models use the built-in character tokenizer)")
        if isinstance(self.tiny, str):
            from rft_cli.tiny import TINY_ARCHITECTURES

            if self.tiny not in TINY_ARCHITECTURES:
                raise ValueError(f"unknown tiny architecture {self.tiny!r}; use one of {', '.join(TINY_ARCHITECTURES)}")
        if isinstance(self.tiny, dict):
            _check_tiny_sizes(self.tiny)
        return self


_TINY_SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size")


def _check_tiny_sizes(sizes: dict[str, int]) -> None:
    """A model.tiny dict must build a Llama: known keys, positive sizes, heads that divide the width."""
    for key, value in sizes.items():
        if key not in _TINY_SIZES:
            raise ValueError(f"model.tiny.{key}: unknown size; use {', '.join(_TINY_SIZES)}")
        if value < 1:
            raise ValueError(f"model.tiny.{key}: must be at least 1, not {value}")
    width, heads = sizes.get("hidden_size", 16), sizes.get("num_attention_heads", 2)
    if width % (2 * heads):  # rotary embeddings need an even width per head
        raise ValueError(f"model.tiny.hidden_size ({width}) must be a multiple of 2 * model.tiny.num_attention_heads ({heads})")
    if heads % sizes.get("num_key_value_heads", heads):
        raise ValueError("model.tiny.num_attention_heads must be a multiple of model.tiny.num_key_value_heads")


class DataSettings(_Strict):
    """Training and validation JSONL files (the dataset contract of `rft validate`)."""

    train: Path
    valid: Path | None = None
    demonstration_field: str = "solution"

    @field_validator("train", "valid")
    @classmethod
    def _exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file not found: {value} (give the path of a JSONL file)")
        return value


class SFTSettings(_Strict):
    """The supervised warm-up (TRL SFTTrainer, loss on the demonstration tokens only)."""

    enabled: bool = True
    epochs: float = Field(2.0, gt=0, le=10_000)  # ReFT warm-up checkpoints are taken at epoch 2
    max_steps: int | None = Field(None, ge=1)
    learning_rate: float = Field(1e-5, gt=0, lt=1)  # ReFT SFT script
    batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=8)  # ReFT max_input_length for SFT
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    lr_scheduler: Literal["linear", "constant", "cosine"] = "linear"


class RLSettings(_Strict):
    """The RL stage: our PPO (ReFT) or TRL's GRPO / RLOO with the same grader."""

    algorithm: Literal["ppo", "grpo", "rloo"] = "ppo"
    steps: int = Field(100, ge=1)
    prompts_per_step: int = Field(8, ge=1)
    samples_per_prompt: int = Field(1, ge=1)  # ReFT samples one answer per question
    mini_batch_size: int = Field(4, ge=1)  # ReFT mini_batch_size
    micro_batch_size: int | None = Field(None, ge=1)  # gradient accumulation inside a minibatch (memory)
    ppo_epochs: int = Field(2, ge=1)  # ReFT
    learning_rate: float = Field(3e-7, gt=0, lt=1)  # ReFT
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)  # ReFT clip_grad_norm
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(700, ge=1)  # ReFT max_gen_length
    max_prompt_length: int = Field(300, ge=1)  # ReFT max_input_length
    kl_coef: float = Field(0.05, ge=0)  # ReFT, natural-language CoT (0.01 for program CoT)
    adaptive_kl: bool = False
    kl_target: float = Field(6.0, gt=0)  # Ziegler et al. 2019 adaptive controller
    kl_horizon: int = Field(10000, ge=1)
    gamma: float = Field(1.0, ge=0, le=1)  # ReFT
    lam: float = Field(0.95, ge=0, le=1)  # ReFT
    clip_range: float = Field(0.2, gt=0)
    clip_range_value: float = Field(0.2, gt=0)
    vf_coef: float = Field(5.0, ge=0)  # ReFT vf_coef
    whiten_advantages: bool = True  # ReFT adv_whitening=global
    loss_aggregation: Literal["answer", "token"] = "answer"  # ReFT: per-answer token mean, then mean over answers
    critic: Literal["value_head", "separate"] = "value_head"  # ReFT shares the backbone
    truncated: Literal["grade", "penalize"] = "grade"  # ReFT grades truncated samples
    truncation_penalty: float = 0.0
    max_grader_error_share: float = Field(0.5, ge=0, le=1)
    max_numerical_faults: int = Field(3, ge=1)
    final: Literal["last", "best"] = "best"  # best: the highest validation score, the starting model included

    @model_validator(mode="after")
    def _batch_fits(self) -> RLSettings:
        batch = self.prompts_per_step * self.samples_per_prompt
        if batch % self.mini_batch_size:
            raise ValueError(
                f"rl.prompts_per_step * rl.samples_per_prompt ({batch}) must be a multiple of "
                f"rl.mini_batch_size ({self.mini_batch_size})"
            )
        if self.micro_batch_size is not None and self.mini_batch_size % self.micro_batch_size:
            raise ValueError(f"rl.mini_batch_size ({self.mini_batch_size}) must be a multiple of rl.micro_batch_size ({self.micro_batch_size})")
        if self.algorithm in ("grpo", "rloo") and self.samples_per_prompt < 2:
            raise ValueError(f"rl.samples_per_prompt must be at least 2 for {self.algorithm} (it compares samples of one prompt)")
        return self

    @model_validator(mode="after")
    def _keys_that_apply(self) -> RLSettings:
        """A key that changes nothing for this algorithm is refused (its default value is allowed, so a
        resolved config.yaml loads again)."""
        if self.algorithm != "ppo":
            moved = [k for k in _PPO_ONLY if k in self.model_fields_set and getattr(self, k) != type(self).model_fields[k].default]
            if moved:
                raise ValueError(f"rl.{moved[0]} applies to rl.algorithm: ppo only (TRL's {self.algorithm} trainer has no "
                                 f"{_PPO_ONLY[moved[0]]}); remove it")
        if self.truncated == "grade" and self.truncation_penalty != 0.0:
            raise ValueError("rl.truncation_penalty applies only with rl.truncated: penalize (truncated answers are graded now); "
                             "set rl.truncated: penalize or remove it")
        return self


# RL keys that only our PPO reads, and what TRL's GRPO/RLOO lack for them.
_PPO_ONLY = {
    "critic": "critic", "vf_coef": "critic", "clip_range_value": "critic", "gamma": "discounted returns (GAE)",
    "lam": "discounted returns (GAE)", "whiten_advantages": "global advantage whitening",
    "adaptive_kl": "adaptive KL controller (beta is fixed)", "kl_target": "adaptive KL controller (beta is fixed)",
    "kl_horizon": "adaptive KL controller (beta is fixed)",
    "loss_aggregation": "choice of loss aggregation (its default loss_type, dapo, is a token mean over the batch)",
}


class EvalSettings(_Strict):
    """Greedy validation during training: `samples` rows of data.valid every `interval` RL steps."""

    interval: int = Field(10, ge=1)
    samples: int = Field(64, ge=1)
    max_new_tokens: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)


class GraderCheckSettings(_Strict):
    """The grader self-test in preflight: each demonstration is graded as if the model wrote it."""

    enabled: bool = True
    max_failure_share: float = Field(0.02, ge=0, le=1)  # share of demonstrations below full marks that stops the run


class SamplesSettings(_Strict):
    """Sampled and evaluation answers kept under RUN/samples/ (one JSONL file per step)."""

    enabled: bool = True
    per_step: int = Field(16, ge=1)  # answers kept of each kept RL step (whole prompt groups first)
    interval: int = Field(1, ge=1)  # keep every N-th RL step (the first and last step always)
    eval_rows: int = Field(64, ge=0)  # greedy answers kept of each evaluation (0 = none)
    max_chars: int = Field(2000, ge=100)  # prompt and answer texts are cut to this many characters
    max_mb: float = Field(200.0, gt=0)  # oldest RL-step files are deleted beyond this total size


class AlarmSettings(_Strict):
    """Detectors over the metrics stream (README "Alarms"); thresholds are conservative on purpose."""

    enabled: bool = True
    stop_on: list[str] = Field(default_factory=list)  # alarm names that stop the run (exit 1)
    # Alarms that end RL early as a normal finish: final/ = the best validated model, exit 0.
    early_stop: list[str] = Field(default_factory=lambda: ["valid_regression"])
    disabled: list[str] = Field(default_factory=list)  # alarm names never raised
    window: int = Field(5, ge=1)  # steps averaged for "at the start" and "now"
    eval_window: int = Field(3, ge=2)  # evaluations looked back on by reward_hacking
    valid_drop: float = Field(0.15, ge=0)
    train_rise: float = Field(0.02, ge=0)
    length_multiple: float = Field(2.5, gt=1)
    truncated_rise: float = Field(0.25, gt=0, le=1)
    no_signal_steps: int = Field(10, ge=1)
    entropy_fraction: float = Field(0.05, gt=0, lt=1)
    kl_max: float = Field(30.0, gt=0)
    grader_error_rise: float = Field(0.1, gt=0, le=1)
    regression_drop: float = Field(0.1, gt=0)  # valid_regression: this far below the best validation reward...
    regression_evals: int = Field(2, ge=1)  # ...this many evaluations in a row

    @field_validator("stop_on", "disabled")
    @classmethod
    def _known_names(cls, names: list[str]) -> list[str]:
        from rft_cli.alarms import ALARM_NAMES

        unknown = [n for n in names if n not in ALARM_NAMES]
        if unknown:
            raise ValueError(f"unknown alarm {unknown[0]!r}; the alarms are {', '.join(ALARM_NAMES)}")
        return names

    @field_validator("early_stop")
    @classmethod
    def _early_stop_names(cls, names: list[str]) -> list[str]:
        from rft_cli.alarms import EARLY_STOP_ALARMS

        unknown = [n for n in names if n not in EARLY_STOP_ALARMS]
        if unknown:
            raise ValueError(f"{unknown[0]!r} cannot end a run early; early_stop takes {', '.join(EARLY_STOP_ALARMS)} "
                             "(use stop_on to stop on other alarms)")
        return names


class RunConfig(_Strict):
    """One `rft train` run."""

    model: ModelSettings
    data: DataSettings
    grader: str | dict[str, Any]
    sft: SFTSettings = Field(default_factory=SFTSettings)
    rl: RLSettings = Field(default_factory=RLSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    grader_check: GraderCheckSettings = Field(default_factory=GraderCheckSettings)
    samples: SamplesSettings = Field(default_factory=SamplesSettings)
    alarms: AlarmSettings = Field(default_factory=AlarmSettings)
    output_dir: Path | None = None
    seed: int = Field(42, ge=0, lt=2**32)  # ReFT; numpy seeds are 32-bit
    save_interval: int = Field(10, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    report_to: Literal["none", "tensorboard", "trackio", "wandb"] = "none"

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("grader")
    @classmethod
    def _grader_file(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(value, str) and not Path(value).is_file():
            raise ValueError(f"grader file not found: {value} (give a grader YAML/JSON file or an inline grader)")
        return value

    def resolved_output_dir(self, config_path: str | Path | None = None) -> Path:
        """`output_dir`, else $RFT_HOME/runs/<config name> (RFT_HOME defaults to ~/.rft)."""
        if self.output_dir is not None:
            return Path(self.output_dir)
        home = Path(os.environ.get("RFT_HOME") or Path.home() / ".rft")
        return home / "runs" / (Path(config_path).stem if config_path else "run")


# -- loading ---------------------------------------------------------------------------------


def _fields_at(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The field names allowed at `path` inside `model` (for "did you mean")."""
    current: Any = model
    for part in path:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        annotation = fields[part].annotation
        current = next((a for a in getattr(annotation, "__args__", (annotation,)) if hasattr(a, "model_fields")), None)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def _key(part: Any) -> str:
    """One key of a path, quoted when it is not a plain name (a key may hold newlines or quotes)."""
    text = str(part)
    return text if text.replace("_", "").replace("-", "").isalnum() else json.dumps(text)


def _format_error(error: dict[str, Any]) -> str:
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
    key = ".".join(_key(p) for p in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        allowed = _fields_at(RunConfig, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {'.'.join([*map(_key, loc[:-1]), close[0]])!r}?" if close else f"; allowed keys: {', '.join(allowed)}"
        return f"{key}: unknown key{hint}"
    message = " ".join(str(error["msg"]).removeprefix("Value error, ").split())
    return f"{key}: {message}"


def parse_run_config(data: Any, source: str = "config") -> RunConfig:
    """Validate a dict as a RunConfig; raises ConfigError naming the key path of the first problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a YAML mapping (key: value lines), not {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise ConfigError(f"{source}: " + "; ".join(_format_error(e) for e in errors[:5]) + more) from None


def _set_path(data: dict[str, Any], override: str) -> None:
    import yaml

    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: write it as key=value, e.g. --set rl.kl_coef=0.1")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    except RecursionError:
        raise ConfigError(f"--set {key.strip()}: the value is nested too deeply for the YAML parser; flatten it") from None
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None or not isinstance(child, dict):
            if child is not None:
                raise ConfigError(f"--set {key}: {part} is not a mapping, so it has no key {parts[-1]!r}")
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file with the safe loader; raises ConfigError with the line of a syntax error."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (give the path of a run config YAML)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc})") from None
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply for the YAML parser (hundreds of levels of lists or mappings); flatten it") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{where}: {problem} (fix the YAML syntax)") from None


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Relative data/grader paths are read relative to the config file, like an include."""
    def fix(value: Any) -> Any:
        if isinstance(value, str) and not Path(value).is_absolute():
            candidate = base / value
            if not Path(value).exists() and candidate.exists():
                return str(candidate)
        return value

    if isinstance(data.get("data"), dict):
        for key in ("train", "valid"):
            if key in data["data"]:
                data["data"][key] = fix(data["data"][key])
    if "grader" in data:
        data["grader"] = fix(data["grader"])


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a run config YAML, apply `--set key=value` overrides (YAML-typed values), validate."""
    data = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a YAML mapping (key: value lines), not {type(data).__name__}")
    for override in overrides or []:
        _set_path(data, override)
    _resolve_paths(data, Path(path).resolve().parent)
    return parse_run_config(data, source=str(path))


def dump_run_config(config: RunConfig) -> dict[str, Any]:
    """The resolved config as plain YAML-able data (paths as strings)."""
    return config.model_dump(mode="json")
