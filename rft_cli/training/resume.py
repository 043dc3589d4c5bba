"""`--resume --set KEY=VALUE`: which settings a resumed run applies and which it refuses.

A resumed run continues from a checkpoint whose state (weights, optimizer, data position, TRL's
step count) was made under the run folder's `config.yaml`. A changed key is either

- refused (ConfigError, exit 2, naming the key) when the checkpoint's state would override it or
  give it another meaning, so `config.yaml` never claims a setting the run did not use; or
- applied from the first resumed step, and listed on that step's metrics line as
  `config_changed: {"<key>": [old, new]}`, so the run folder tells how every step was trained.

Our PPO applies `rl.learning_rate`, `rl.weight_decay` and `rl.kl_coef` over its restored
optimizer and trainer state itself and reports them as `learning_rate`, `weight_decay` and
`kl_coef` on that line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rft_cli.config import RunConfig, dump_run_config
from rft_cli.errors import ConfigError

# Keys the checkpoint's state holds, whatever stage it is in, and why.
_STATE_OF_ANY_CHECKPOINT = {
    "model.name": "the checkpoints hold this model's weights",
    "model.tiny": "the checkpoints hold this model's weights",
    "model.tokenizer": "the checkpoints were trained with this tokenizer",
    "model.lora": "the checkpoints hold these adapters",
    "data.train": "the saved data position counts rows of this file in a seeded order",
    "data.valid": "the scores of the saved checkpoints were measured on this file",
    "eval.samples": "the scores of the saved checkpoints were measured on this many validation rows",
    "data.demonstration_field": "the warm-up was trained on this field",
    "seed": "the saved data position counts rows in an order this seed drew",
    "sft": "the warm-up checkpoint was trained with these settings (TRL restores its optimizer and scheduler)",
}
# Keys an RL checkpoint's state holds.
_STATE_OF_AN_RL_CHECKPOINT = {
    "rl.algorithm": "the RL checkpoints are this algorithm's",
    "rl.critic": "the RL checkpoints hold this critic",
}
# Keys TRL's GRPO/RLOO checkpoints hold: its optimizer and scheduler state, and a step count that
# maps to our steps through the batch layout.
_STATE_OF_A_TRL_RL_CHECKPOINT = {
    "rl.learning_rate": "TRL restores the optimizer and scheduler, and their learning rate, from the checkpoint",
    "rl.weight_decay": "TRL restores the optimizer, and its weight decay, from the checkpoint",
    **{
        f"rl.{key}": "TRL's saved step count maps to rft's steps through the batch layout"
        for key in (
            "prompts_per_step",
            "samples_per_prompt",
            "mini_batch_size",
            "micro_batch_size",
            "ppo_epochs",
        )
    },
}
# Changes our PPO applies and logs itself (from its optimizer and KL controller), and the run's length.
_LOGGED_ELSEWHERE = {"rl.learning_rate", "rl.weight_decay", "rl.kl_coef", "rl.steps", "output_dir"}


def _differences(before: Any, now: Any, prefix: str = "") -> dict[str, list[Any]]:
    """{dotted key: [old, new]} where two configs differ, at the deepest level both are mappings."""
    if isinstance(before, dict) and isinstance(now, dict):
        out: dict[str, list[Any]] = {}
        for key in sorted(set(before) | set(now)):
            out.update(
                _differences(
                    before.get(key), now.get(key), f"{prefix}.{key}" if prefix else str(key)
                )
            )
        return out
    return {} if before == now else {prefix: [before, now]}


def changed_settings(run_dir: Path, config: RunConfig) -> dict[str, list[Any]]:
    """{key: [old, new]} for every leaf that differs from the run folder's config.yaml."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    from rft_cli.files import read_yaml

    before = read_yaml(path, "the run's config") or {}
    if not isinstance(before, dict):
        raise ConfigError(
            f"{path}: the run's config is not a mapping; it says how the checkpoints were trained"
        )
    changes = _differences(
        before, {**dump_run_config(config), "output_dir": before.get("output_dir")}
    )
    return changes


def _owner(key: str, table: dict[str, str]) -> str | None:
    """The entry of `table` that `key` is, or lies under (`sft.learning_rate` under `sft`)."""
    return next((name for name in table if key == name or key.startswith(name + ".")), None)


def check_resume_changes(
    run_dir: Path, config: RunConfig, resume_stage: str | None
) -> dict[str, list[Any]]:
    """Refuse a change the checkpoint's state overrides; return the applied ones to log.

    Args:
        run_dir: the run folder being resumed (its `config.yaml` is the config so far).
        config: the config of the resumed run (with its `--set` overrides).
        resume_stage: "sft" or "rl", the stage of the checkpoint resumed from; None when there is none.
    Returns:
        {key: [old, new]} of the applied changes that the first resumed metrics line lists.
    """
    changes = changed_settings(run_dir, config)
    if resume_stage is None:
        return {}  # nothing was saved: the run starts again under the new settings
    refused = dict(_STATE_OF_ANY_CHECKPOINT)
    if resume_stage == "rl":
        refused.update(_STATE_OF_AN_RL_CHECKPOINT)
    if resume_stage == "rl" and config.rl.algorithm != "ppo":
        refused.update(_STATE_OF_A_TRL_RL_CHECKPOINT)
    if resume_stage == "rl" and config.rl.adaptive_kl:
        refused["rl.kl_coef"] = (
            "under rl.adaptive_kl the KL coefficient is the controller's state, saved in the checkpoint"
        )
    for key, (old, new) in changes.items():
        owner = _owner(key, refused)
        if owner is not None:
            raise ConfigError(
                f"--set {key}={new}: cannot change on --resume ({refused[owner]}; it was {old}); "
                "start a new run in another --output-dir to change it"
            )
    _check_eval_length(changes, config)
    return {key: change for key, change in changes.items() if key not in _LOGGED_ELSEWHERE}


def _check_eval_length(changes: dict[str, list[Any]], config: RunConfig) -> None:
    """Refuse a change of how long the evaluations' answers may be (`eval.max_new_tokens`, which
    unset is `rl.max_new_tokens`): best-checkpoint selection and early stop would compare scores
    measured under two limits. Setting `eval.max_new_tokens` to the old limit keeps it."""

    def before(key: str, now: Any) -> Any:
        return changes[key][0] if key in changes else now

    new = config.eval.max_new_tokens or config.rl.max_new_tokens
    old = before("eval.max_new_tokens", config.eval.max_new_tokens) or before(
        "rl.max_new_tokens", config.rl.max_new_tokens
    )
    if old == new:
        return
    key = "eval.max_new_tokens" if "eval.max_new_tokens" in changes else "rl.max_new_tokens"
    raise ConfigError(
        f"--set {key}={changes[key][1]}: cannot change on --resume (the saved checkpoints were evaluated "
        f"with answers of up to {old} tokens, and would now be compared with scores of up to {new}); "
        f"add --set eval.max_new_tokens={old} to keep evaluating as before, or start a new run in another --output-dir"
    )
