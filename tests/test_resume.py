"""`--resume --set`: a setting the checkpoint's state would override is refused; the others apply
from the next step and are listed on its metrics line (issue 18: no silent config)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rft_cli.config import dump_run_config, load_run_config
from rft_cli.errors import ConfigError
from rft_cli.training.context import RunContext
from rft_cli.training.resume import changed_settings, check_resume_changes

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-test.yaml"


def _run_dir(tmp_path: Path, *overrides: str) -> Path:
    """A run folder whose config.yaml is the recipe's (with `overrides`), as `rft train` writes it."""
    run = tmp_path / "run"
    run.mkdir()
    config = load_run_config(RECIPE, list(overrides))
    (run / "config.yaml").write_text(
        yaml.safe_dump({**dump_run_config(config), "output_dir": str(run)})
    )
    return run


def test_unchanged_config_has_no_changes(tmp_path):
    run = _run_dir(tmp_path)
    assert changed_settings(run, load_run_config(RECIPE)) == {}
    assert check_resume_changes(run, load_run_config(RECIPE), "rl") == {}


def test_applied_changes_are_returned_for_the_metrics_line(tmp_path):
    run = _run_dir(tmp_path)
    config = load_run_config(
        RECIPE, ["rl.temperature=0.7", "eval.interval=1", "rl.steps=9", "rl.kl_coef=0.5"]
    )
    # rl.steps is the run's length; rl.kl_coef is logged by PPO itself from its KL controller
    assert check_resume_changes(run, config, "rl") == {
        "eval.interval": [2, 1],
        "rl.temperature": [1.0, 0.7],
    }


@pytest.mark.parametrize(
    "before,override,stage,message",
    [
        ((), "seed=3", "rl", "--set seed=3: cannot change on --resume (the saved data position"),
        (
            (),
            "sft.learning_rate=0.1",
            "sft",
            "--set sft.learning_rate=0.1: cannot change on --resume",
        ),
        (
            (),
            "sft.max_steps=9",
            "rl",
            "--set sft.max_steps=9: cannot change on --resume (the warm-up checkpoint",
        ),
        ((), "rl.critic=separate", "rl", "--set rl.critic=separate: cannot change on --resume"),
        (
            ("model.lora.r=8",),
            "model.lora.r=4",
            "rl",
            "--set model.lora.r=4: cannot change on --resume (the checkpoints hold these",
        ),
        ((), "model.lora.r=4", "rl", "--set model.lora={'r': 4, 'alpha': 32"),
        (
            ("rl.adaptive_kl=true",),
            "rl.kl_coef=0.5",
            "rl",
            "--set rl.kl_coef=0.5: cannot change on --resume (under rl.adaptive_kl",
        ),
        (
            ("rl.algorithm=grpo",),
            "rl.learning_rate=0.01",
            "rl",
            "--set rl.learning_rate=0.01: cannot change on --resume (TRL restores",
        ),
        (
            ("rl.algorithm=grpo",),
            "rl.ppo_epochs=3",
            "rl",
            "--set rl.ppo_epochs=3: cannot change on --resume (TRL's saved step count",
        ),
        # issue 25: accepted and only logged, so best-checkpoint selection and early stop compared
        # scores measured on other rows or limits
        (
            (),
            "eval.samples=2",
            "rl",
            "--set eval.samples=2: cannot change on --resume (the scores of the saved checkpoints",
        ),
        (
            (),
            "eval.max_new_tokens=9",
            "sft",
            "--set eval.max_new_tokens=9: cannot change on --resume (the saved checkpoints were evaluated with answers of up to 4 tokens",
        ),
        (
            (),
            "rl.max_new_tokens=9",
            "rl",
            "--set rl.max_new_tokens=9: cannot change on --resume (the saved checkpoints were evaluated with answers of up to 4 tokens",
        ),
    ],
)
def test_changes_the_checkpoint_would_override_are_refused(
    tmp_path, before, override, stage, message
):
    run = _run_dir(tmp_path, *before)
    config = load_run_config(RECIPE, [*before, override])
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")
    ) as raised:
        check_resume_changes(run, config, stage)
    assert raised.value.exit_code == 2


def test_a_longer_rollout_keeps_the_evaluation_it_had(tmp_path):
    """rl.max_new_tokens may change on --resume once eval.max_new_tokens holds the old limit."""
    run = _run_dir(tmp_path)
    config = load_run_config(RECIPE, ["rl.max_new_tokens=9", "eval.max_new_tokens=4"])
    assert check_resume_changes(run, config, "rl") == {
        "eval.max_new_tokens": [None, 4],
        "rl.max_new_tokens": [4, 9],
    }


def test_what_ppo_applies_itself_is_allowed(tmp_path):
    run = _run_dir(tmp_path)
    config = load_run_config(
        RECIPE, ["rl.learning_rate=0.002", "rl.weight_decay=0.1", "rl.kl_coef=0.5"]
    )
    assert check_resume_changes(run, config, "rl") == {}


def test_rl_settings_may_change_before_rl_starts(tmp_path):
    """`--stage sft`, then `--stage rl --resume`: RL has not run, so its settings are free."""
    run = _run_dir(tmp_path)
    config = load_run_config(RECIPE, ["rl.algorithm=grpo", "rl.learning_rate=0.01"])
    assert check_resume_changes(run, config, "sft") == {"rl.algorithm": ["ppo", "grpo"]}


def test_nothing_saved_means_nothing_is_refused(tmp_path):
    run = _run_dir(tmp_path)
    assert check_resume_changes(run, load_run_config(RECIPE, ["seed=3"]), None) == {}


def test_the_first_line_after_a_resume_lists_the_changes():
    lines = []

    class Logger:
        log = staticmethod(lines.append)

    ctx = RunContext(
        None, Path("."), [], [], None, Logger(), config_changes={"rl.temperature": [1.0, 0.7]}
    )
    ctx.report({"stage": "rl", "step": 4, "config_changed": {"kl_coef": [0.05, 0.5]}})
    ctx.report({"stage": "rl", "step": 5})
    assert lines[0]["config_changed"] == {"rl.temperature": [1.0, 0.7], "kl_coef": [0.05, 0.5]}
    assert "config_changed" not in lines[1]
