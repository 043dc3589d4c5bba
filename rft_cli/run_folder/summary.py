"""What `rft report` shows of a run: read its `metrics.jsonl` and summarise it (`rft_cli.plots`
draws it).

    report = summarize_run("runs/gsm8k")
    report.best_valid_reward, report.best_valid_step, report.last["kl"]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rft_cli import files
from rft_cli.config import AlarmSettings
from rft_cli.errors import ConfigError, DataError, RftError
from rft_cli.run_folder.alarms import scan_metrics
from rft_cli.run_folder.metrics import read_metrics, with_current_names
from rft_cli.run_folder.samples import follow_row, step_samples

METRICS_FILE = "metrics.jsonl"


@dataclass
class StageSummary:
    """One training stage as logged: how many records and its step range."""

    stage: str
    records: int
    first_step: int | None
    last_step: int | None


@dataclass
class RunReport:
    """What `rft report` shows for one run folder."""

    run: str
    records: list[dict[str, Any]] = field(repr=False)
    stages: list[StageSummary]
    best_valid_reward: float | None
    best_valid_step: int | None
    best_valid_stage: str | None
    last: dict[str, float]
    last_step: dict[str, int | None]
    summary: dict[str, Any] | None
    warnings: list[str]
    alarms: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the raw records left out)."""
        return {
            "run": self.run,
            "stages": [vars(s) for s in self.stages],
            "best_valid_reward_mean": self.best_valid_reward,
            "best_valid_step": self.best_valid_step,
            "best_valid_stage": self.best_valid_stage,
            "last": self.last,
            "last_step": self.last_step,
            "summary": self.summary,
            "warnings": self.warnings,
            "alarms": self.alarms,
        }


def summarize_run(run_dir: str | Path) -> RunReport:
    """Summarise a run folder (or a metrics.jsonl alone): stages, best valid_reward_mean and its
    step, the last values, and the alarms the detectors raise on its metrics."""
    run = Path(run_dir)
    if files.is_file(run) and run.suffix == ".jsonl":
        run, metrics = run.parent, run
    elif not files.is_dir(run):
        raise ConfigError(f"{run}: no such run folder (pass the --output-dir of `rft train`)")
    else:
        metrics = run / METRICS_FILE
    if not metrics.is_file():
        raise ConfigError(f"{run}: no {METRICS_FILE} here; is this a run folder of `rft train`?")
    warnings: list[str] = []
    records = [with_current_names(r) for r in read_metrics(metrics, warnings)]
    if not records:
        raise DataError(f"{metrics}: no metrics logged yet (the run has not finished a step)")
    best = _best(records, "valid_reward_mean")
    last, last_step = _last_values(records)
    return RunReport(
        run=str(run),
        records=records,
        stages=_stages(records),
        best_valid_reward=best[0] if best else None,
        best_valid_step=best[1] if best else None,
        best_valid_stage=best[2] if best else None,
        last=last,
        last_step=last_step,
        summary=_read_summary(run, warnings) if metrics.name == METRICS_FILE else None,
        warnings=warnings,
        alarms=[a.to_dict() for a in scan_metrics(records, alarm_settings(run, warnings))],
    )


def alarm_settings(run: Path, warnings: list[str]) -> Any:
    """The `alarms:` section of the run's config.yaml, or the defaults (a run folder without one)."""
    path = run / "config.yaml"
    if not path.is_file():
        return AlarmSettings()
    try:
        data = files.read_yaml(path, "the run's config")
        section = data.get("alarms") if isinstance(data, dict) else None
        return AlarmSettings.model_validate(section or {})
    except (RftError, ValueError) as exc:
        warnings.append(
            f"{path}: its alarms section is unreadable ({str(exc).splitlines()[0]}); used the defaults"
        )
        return AlarmSettings()


def samples_report(
    run_dir: str | Path,
    step: int | None = None,
    row: int | None = None,
    stage: str = "rl",
    top: int = 5,
) -> dict[str, Any]:
    """What `rft report --samples` shows: one step's best, worst and most common answers, or with
    `row`, one validation question's greedy answer at each kept evaluation."""
    run = Path(run_dir)
    if not files.is_dir(run):
        raise ConfigError(f"{run}: no such run folder (pass the --output-dir of `rft train`)")
    if row is not None:
        answers = follow_row(run, row)
        if not answers:
            raise ConfigError(
                f"--row {row}: no evaluation kept an answer for validation row {row} in {run / 'samples'} "
                "(samples.eval_rows limits how many rows are kept)"
            )
        return {"run": str(run), "row": row, "answers": answers}
    return {"run": str(run), **step_samples(run, step, stage, top)}


def as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _stages(records: list[dict[str, Any]]) -> list[StageSummary]:
    stages: dict[str, StageSummary] = {}
    for r in records:
        name = str(r.get("stage", "-"))
        s = stages.setdefault(name, StageSummary(name, 0, None, None))
        s.records += 1
        step = r.get("step")
        if isinstance(step, int):
            s.first_step = step if s.first_step is None else min(s.first_step, step)
            s.last_step = step if s.last_step is None else max(s.last_step, step)
    return list(stages.values())


def _best(records: list[dict[str, Any]], key: str) -> tuple[float, int | None, str | None] | None:
    best = None
    for r in records:
        value = as_number(r.get(key))
        if value is not None and (best is None or value > best[0]):
            best = (value, r.get("step"), r.get("stage"))
    return best


def _last_values(records: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, int | None]]:
    last: dict[str, float] = {}
    steps: dict[str, int | None] = {}
    for r in records:
        for key, value in r.items():
            number = as_number(value)
            if key != "step" and number is not None:
                last[key], steps[key] = number, r.get("step")
    return last, steps


def _read_summary(run: Path, warnings: list[str]) -> dict[str, Any] | None:
    path = run / "summary.json"
    if not path.is_file():
        return None
    try:
        data = files.read_json(path, "the run's summary")
    except RftError as exc:
        warnings.append(f"{str(exc)[:300]}; ignored it")
        return None
    return data if isinstance(data, dict) else None
