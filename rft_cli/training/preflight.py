"""The checks `rft train` runs before any model loads, and the plan it prints (`--dry-run`).

Every check that can fail on user input runs here, so a typo in a config or a grader field missing
from the data costs seconds, not a training run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rft_cli.config import RunConfig
from rft_cli.data.records import demonstration, load_rows
from rft_cli.data.validation import validate_dataset
from rft_cli.errors import ConfigError, DataError
from rft_cli.generation import resolve_model_path
from rft_cli.graders import load_grader
from rft_cli.graders.build import build_from_dict
from rft_cli.graders.selftest import demonstration_field_files, self_test
from rft_cli.run_folder.metrics import (
    check_tracker,
)
from rft_cli.training import sft
from rft_cli.training.architectures import check_architecture
from rft_cli.training.launch import check_launch

STAGES = ("sft", "rl", "all")


@dataclass
class Preflight:
    """The checked inputs of a run."""

    train_rows: list[dict]
    valid_rows: list[dict]
    grader: Any
    plan: dict[str, Any] = field(default_factory=dict)
    grader_check: Any = (
        None  # the self-test's SelfTestReport, None when grader_check.enabled is false
    )
    tools: Any = None  # the recipe's tools (`episode_rollouts.ToolSetup`), None without `tools`

    def close(self) -> None:
        """Stop the grader's and the tools' workers."""
        self.grader.close()
        if self.tools is not None:
            self.tools.close()


def build_run_grader(config: RunConfig) -> Any:
    """The grader the config names (a file or an inline spec)."""
    if isinstance(config.grader, str):
        return load_grader(config.grader)

    return build_from_dict(
        config.grader, where="grader"
    )  # errors name the key path, e.g. grader.reference


def _validation_error(report: Any, config: RunConfig) -> DataError:
    first = report.errors[0]
    where = f"{first.file} line {first.line}" if first.line else first.file
    total = sum(report.error_counts.values())
    valid = f" --valid {config.data.valid}" if config.data.valid else ""
    more = (
        f" ({total} errors in all; `rft validate {config.data.train}{valid}` lists them)"
        if total > 1
        else ""
    )
    return DataError(f"{where}: {first.message}{more}")


def _load_data(config: RunConfig, grader: Any) -> tuple[list[dict], list[dict]]:
    """Validate the data as `rft validate` does (overlap and the grader's item fields included), then load it."""
    field_name = config.data.demonstration_field
    report = validate_dataset(
        config.data.train,
        config.data.valid,
        demonstration_field=field_name,
        require_demonstrations=False,
        required_item_fields=sorted(grader.item_fields()),
    )
    if not report.ok:
        raise _validation_error(report, config)
    train = load_rows(config.data.train, field_name)
    valid = load_rows(config.data.valid, field_name) if config.data.valid else []
    return train, valid


def preflight(config: RunConfig, grader: Any = None, stage: str = "all") -> Preflight:
    """Build the grader, validate the data, make the plan; raises before any model is loaded."""
    if stage not in STAGES:
        raise ConfigError(f"--stage {stage!r}: use one of {', '.join(STAGES)}")
    problem = check_tracker(config.report_to)
    if problem:
        raise ConfigError(problem)
    if config.tools and stage in ("rl", "all"):
        _check_episode_algorithm(config)
    _check_model_source(config)
    if stage in ("rl", "all"):
        check_launch(config)  # a distributed mode our PPO cannot run, before any model loads
    grader = grader if grader is not None else build_run_grader(config)
    train, valid = _load_data(config, grader)
    if stage in ("sft", "all") and config.sft.enabled:
        _require_demonstrations(train, config)
    check = check_grader(config, grader)
    plan = build_plan(config, len(train), len(valid), stage)
    if check is not None:
        plan["grader_check"] = {k: v for k, v in check.to_dict().items() if k != "failures"}
    tools = _load_tools(config, train, valid)
    return Preflight(train, valid, grader, plan=plan, grader_check=check, tools=tools)


def _check_episode_algorithm(config: RunConfig) -> None:
    """RLOO cannot train over episodes: TRL 1.16's RLOOTrainer has neither a rollout hook nor a
    mask for tokens the policy did not write, so tool results would carry loss."""
    if config.rl.algorithm == "rloo":
        raise ConfigError(
            "rl.algorithm: rloo cannot train over episodes with tools: TRL's RLOOTrainer (1.16) has no "
            "rollout hook and no mask for the tool results' tokens, which would then carry loss; use "
            "rl.algorithm: ppo or grpo (docs/agent.md)"
        )


def _load_tools(config: RunConfig, train: list[dict], valid: list[dict]) -> Any:
    """The recipe's tools, checked against every row (nothing starts before the first call)."""
    from rft_cli.evaluation import check_rows_against_tools
    from rft_cli.training.episode_rollouts import load_tool_setup

    setup = load_tool_setup(config)
    if setup is None:
        return None
    try:
        for path, rows in ((config.data.train, train), (config.data.valid, valid)):
            if path is not None:  # no validation file: no rows to check
                check_rows_against_tools(path, list(enumerate(rows, 1)), setup.toolbox)
    except BaseException:
        setup.close()
        raise
    return setup


def check_grader(config: RunConfig, grader: Any) -> Any:
    """The grader self-test on the run's demonstrations; raises DataError when too many score below full marks."""
    settings = config.grader_check
    if not settings.enabled:
        return None
    report = self_test(
        grader,
        demonstration_field_files(
            config.data.train, config.data.valid, config.data.demonstration_field
        ),
        episodes=bool(config.tools),  # with tools a demonstration is a whole episode
    )
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
    for key, value in (
        ("model.name", config.model.name),
        ("model.tokenizer", config.model.tokenizer),
    ):
        if value is not None:
            try:
                source = resolve_model_path(value)
            except ConfigError as exc:
                raise ConfigError(f"{key}: {exc}") from None
            if key == "model.name":
                check_architecture(source)


def _require_demonstrations(rows: list[dict], config: RunConfig) -> None:
    if not any(demonstration(row, config.data.demonstration_field) is not None for row in rows):
        raise ConfigError(
            f"sft: no row of {config.data.train} has a demonstration (a final assistant message or "
            f"{config.data.demonstration_field!r}); add them or set sft.enabled: false"
        )


def build_plan(config: RunConfig, n_train: int, n_valid: int, stage: str) -> dict[str, Any]:
    """What a run will do: stages, steps, samples, output layout (`--dry-run` prints it)."""
    stages: dict[str, Any] = {}
    if stage in ("sft", "all") and config.sft.enabled:
        stages["sft"] = {
            "steps": sft.sft_steps(n_train, config.sft),
            "epochs": config.sft.epochs,
            "batch_size": config.sft.batch_size,
            "learning_rate": config.sft.learning_rate,
        }
    if stage in ("rl", "all"):
        rl = config.rl
        stages["rl"] = {
            "algorithm": rl.algorithm,
            "steps": rl.steps,
            "prompts_per_step": rl.prompts_per_step,
            "samples_per_prompt": rl.samples_per_prompt,
            "samples": rl.steps * rl.prompts_per_step * rl.samples_per_prompt,
            "kl_coef": rl.kl_coef,
            "learning_rate": rl.learning_rate,
        }
    return {
        "stages": stages,
        "train_rows": n_train,
        "valid_rows": n_valid,
        "eval": {"interval": config.eval.interval, "rows": min(config.eval.samples, n_valid)},
        "save_interval": config.save_interval,
        "keep_checkpoints": config.keep_checkpoints,
        "layout": [
            "config.yaml",
            "metrics.jsonl",
            "checkpoints/sft/",
            "checkpoints/step-<N>/",
            "samples/",
            "final/",
            "summary.json",
        ],
    }


def plan_run(config: RunConfig, stage: str = "all") -> dict[str, Any]:
    """What `train` would do (`rft train --dry-run`): every check of the preflight, then the plan."""
    pre = preflight(config, stage=stage)
    pre.close()
    return pre.plan
