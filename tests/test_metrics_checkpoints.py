"""metrics.jsonl reconciliation and atomic checkpoints (crash, full disk, pruning)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from rft_cli.errors import TrainingError
from rft_cli.run_folder import checkpoints as ckpt
from rft_cli.run_folder.metrics import (
    JsonlMetricsLogger,
    NullLogger,
    read_metrics,
    reconcile_metrics,
)


def test_logger_writes_one_flat_line_per_step_and_nan_as_null(tmp_path):
    logger = JsonlMetricsLogger(tmp_path / "m.jsonl")
    logger.log({"stage": "rl", "step": 1, "kl": 0.5})
    logger.log({"stage": "rl", "step": 2, "kl": float("nan")})
    logger.close()
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"stage": "rl", "step": 1, "kl": 0.5},
        {"stage": "rl", "step": 2, "kl": None},
    ]
    NullLogger().log({"step": 1})


def test_reconcile_drops_lines_after_the_checkpoint_and_a_torn_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    lines = [
        {"stage": "sft", "step": 1},
        {"stage": "sft", "step": 2},
        {"stage": "rl", "step": 1},
        {"stage": "rl", "step": 2},
        {"stage": "rl", "step": 3},
    ]
    path.write_text(
        "".join(json.dumps(x) + "\n" for x in lines) + '{"stage": "rl", "st', encoding="utf-8"
    )
    dropped = reconcile_metrics(path, "rl", 2)
    assert dropped == 2
    assert read_metrics(path) == lines[:4]
    assert path.read_text().endswith("\n")


def test_reconcile_within_sft_drops_rl_lines_and_optionally_the_checkpoint_line(tmp_path):
    path = tmp_path / "m.jsonl"
    lines = [
        {"stage": "sft", "step": 1},
        {"stage": "sft", "step": 2},
        {"stage": "sft", "step": 3},
        {"stage": "rl", "step": 1},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    reconcile_metrics(path, "sft", 2)
    assert read_metrics(path) == lines[:2]
    reconcile_metrics(path, "sft", 2, keep_step=False)
    assert read_metrics(path) == lines[:1]
    reconcile_metrics(path, None, 0)
    assert read_metrics(path) == []


def _write_files(folder):
    (folder / "model.bin").write_text("weights")


def test_checkpoint_is_renamed_only_when_complete(tmp_path):
    folder = ckpt.write_checkpoint(
        tmp_path / "step-2", _write_files, {"step": 2, "valid_reward_mean": 0.5}
    )
    assert ckpt.is_complete(folder) and ckpt.read_meta(folder)["step"] == 2
    # A crash mid-write leaves only a hidden temporary folder, which --resume never takes.
    (tmp_path / ".tmp-step-4").mkdir()
    (tmp_path / "step-6").mkdir()  # no marker: incomplete
    assert ckpt.find_latest_complete(tmp_path) == folder


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, code):
    good = ckpt.write_checkpoint(tmp_path / "step-2", _write_files, {"step": 2})

    def failing(folder):
        (folder / "half").write_text("x")
        raise OSError(code, os.strerror(code))

    with pytest.raises(
        TrainingError, match="cannot write the checkpoint .*previous checkpoint is intact"
    ):
        ckpt.write_checkpoint(tmp_path / "step-4", failing, {"step": 4})
    assert ckpt.find_latest_complete(tmp_path) == good
    assert not (tmp_path / ".tmp-step-4").exists()


def test_metrics_write_errors_are_training_errors(tmp_path, monkeypatch):
    logger = JsonlMetricsLogger(tmp_path / "m.jsonl")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(TrainingError, match="cannot write metrics \\(No space left on device\\)"):
        logger.log({"stage": "rl", "step": 1})


def test_prune_keeps_the_best_by_valid_reward_and_the_latest(tmp_path):
    scores = {1: 0.2, 2: 0.9, 3: None, 4: 0.5, 5: 0.1}
    for step, score in scores.items():
        ckpt.write_checkpoint(
            tmp_path / f"step-{step}", _write_files, {"step": step, "valid_reward_mean": score}
        )
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [n for n, _ in ckpt.step_checkpoints(tmp_path)] == [2, 4, 5]
    assert ckpt.best_checkpoint(tmp_path).name == "step-2"


def _adapters(folder, base):
    folder.mkdir(parents=True)
    (folder / ckpt.ADAPTER_CONFIG).write_text(json.dumps({"base_model_name_or_path": base}))
    return folder


def _complete(folder):
    folder.mkdir(parents=True)
    (folder / ckpt.MARKER).write_text("{}")
    return folder


def test_adapters_name_a_base_of_the_same_run_relative_to_where_they_will_live(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    _complete(tmp_path / "run" / "checkpoints" / "sft")
    work = _adapters(
        tmp_path / "run" / "checkpoints" / ".trl-grpo" / "checkpoint-4", "run/checkpoints/sft"
    )
    home = tmp_path / "run" / "checkpoints" / "step-2"
    ckpt.anchor_adapter_base(work, home, home.parent)
    assert (
        json.loads((work / ckpt.ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == "../sft"
    )
    user_model = _adapters(tmp_path / "run" / "checkpoints" / "x", str(tmp_path / "run"))
    ckpt.anchor_adapter_base(
        user_model, home, home.parent
    )  # a base outside the checkpoints: left as it is
    assert json.loads((user_model / ckpt.ADAPTER_CONFIG).read_text())[
        "base_model_name_or_path"
    ] == str(tmp_path / "run")


@pytest.mark.parametrize(
    "base", ["../sft", "run/checkpoints/sft"], ids=["relative-to-checkpoint", "older-run"]
)
def test_the_adapters_base_is_found_beside_them_from_any_folder(base, tmp_path, monkeypatch):
    """An older run's checkpoint named its base relative to the folder training ran in: it is
    found as the checkpoint's sibling, from another folder, after the run moved."""
    moved = tmp_path / "moved"
    sft = _complete(moved / "checkpoints" / "sft")
    step = _adapters(moved / "checkpoints" / "step-1", base)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert Path(ckpt.adapter_base(step)).resolve() == sft
    hub = _adapters(tmp_path / "hub", "org/model")
    assert ckpt.adapter_base(hub) == "org/model"
