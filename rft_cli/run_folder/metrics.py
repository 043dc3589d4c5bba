"""Metrics: one flat JSON object per step in `RUN/metrics.jsonl`, flushed and fsynced.

Tracking off means `NullLogger`, not `if` branches. On resume, `reconcile_metrics` drops lines
written after the checkpoint that training resumes from and repairs a torn last line, so each
step appears exactly once.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, TextIO

from rft_cli.errors import TrainingError
from rft_cli.jsonl import read_records

STAGE_ORDER = {"sft": 0, "rl": 1}


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null (the step is also flagged by the NaN guard)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class NullLogger:
    """Logs nothing (tracking off)."""

    def log(self, record: dict[str, Any]) -> None:
        """Drop the record."""

    def close(self) -> None:
        """Nothing to close."""


class JsonlMetricsLogger:
    """Appends one JSON line per `log()` call and fsyncs it, so a crash loses at most that line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._handle: TextIO | None = None

    def log(self, record: dict[str, Any]) -> None:
        """Write `record` (a flat dict with `stage` and `step`) as one line."""
        line = json.dumps(
            {k: _clean(v) for k, v in record.items()}, ensure_ascii=False, allow_nan=False
        )
        try:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = self.path.open("a", encoding="utf-8")
            self._handle.write(line + "\n")
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            raise TrainingError(
                f"{self.path}: cannot write metrics ({exc.strerror or exc}); free disk space or fix permissions, then rerun with --resume"
            ) from None

    def close(self) -> None:
        """Close the file (safe to call twice)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def position(stage: str, step: int) -> tuple[int, int]:
    """Order of a (stage, step) pair in a run: SFT steps come before RL steps."""
    return STAGE_ORDER.get(stage, len(STAGE_ORDER)), int(step)


def read_metrics(path: str | Path, warnings: list[str] | None = None) -> list[dict[str, Any]]:
    """Every complete line of a metrics file; a torn line (a crash mid-write) is skipped, and noted
    in `warnings` when a list is given. A missing file has no lines."""
    return read_records(path, warnings)


def reconcile_metrics(
    path: str | Path, stage: str | None, step: int, keep_step: bool = True
) -> int:
    """Keep only lines at or before (stage, step); drop later and torn lines. Returns lines dropped.

    `stage=None` means "nothing was checkpointed": every line is dropped. `keep_step=False` also
    drops the checkpoint's own line, for a line the resumed run writes again (the SFT stage's
    last line, which carries its evaluation).
    """
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()  # lines end at "\n" only, as read_records splits them
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    kept = []
    limit = position(stage, step) if stage is not None else None
    for record in read_metrics(path):
        if limit is None or position(str(record.get("stage")), int(record.get("step", 0))) > limit:
            continue
        if (
            not keep_step
            and position(str(record.get("stage")), int(record.get("step", 0))) == limit
        ):
            continue
        kept.append(record)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in kept:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return lines - len(kept)


class _TensorBoardLogger:
    """Scalars to TensorBoard under RUN/tensorboard, one global step per stage line."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        stage, step = record.get("stage", "run"), int(record.get("step", 0))
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                self.writer.add_scalar(f"{stage}/{key}", value, step)

    def close(self) -> None:
        self.writer.close()


class _ModuleLogger:
    """wandb or trackio: both take `init(project=..., name=..., config=...)` and `log(dict, step=...)`."""

    def __init__(self, module_name: str, run_dir: Path, config: dict[str, Any]):
        import importlib

        self.module = importlib.import_module(module_name)
        self.module.init(project="rft", name=Path(run_dir).name, config=config)

    def log(self, record: dict[str, Any]) -> None:
        stage = record.get("stage", "run")
        values = {
            f"{stage}/{k}": v
            for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self.module.log(values)

    def close(self) -> None:
        finish = getattr(self.module, "finish", None)
        if finish is not None:
            finish()


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


def check_tracker(report_to: str) -> str | None:
    """A sentence saying which package `report_to` needs, or None when it is available."""
    import importlib.util

    package = TRACKER_PACKAGES.get(report_to)
    if package and importlib.util.find_spec(package) is None:
        return f"report_to: {report_to} needs the `{package}` package (pip install {package}), or set report_to: none"
    return None


def build_tracker(report_to: str, run_dir: Path, config: dict[str, Any]) -> Any:
    """The experiment tracker `report_to` names; NullLogger for none."""
    if report_to == "tensorboard":
        return _TensorBoardLogger(run_dir)
    if report_to in ("wandb", "trackio"):
        return _ModuleLogger(report_to, run_dir, config)
    return NullLogger()


class MultiLogger:
    """Sends each record to several loggers (metrics.jsonl first: it is the record of truth)."""

    def __init__(self, *loggers: Any):
        self.loggers = loggers

    def log(self, record: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log(record)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def with_current_names(record: dict[str, Any]) -> dict[str, Any]:
    """A metrics line under today's names. Before rft told its KL metrics apart, PPO logged the
    mean over answers of the summed log-ratio as `kl` (now `kl_sum`; `kl` is the per-token k3);
    such a line is known by PPO's `kl_coef` without `kl_sum`."""
    if "kl_coef" in record and "kl" in record and "kl_sum" not in record:
        return {**{k: v for k, v in record.items() if k != "kl"}, "kl_sum": record["kl"]}
    return record
