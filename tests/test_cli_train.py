"""Guarantee 3: a full disk or an unwritable folder while writing a checkpoint or metrics gives a
clear error naming the path and exit code 1; the previous checkpoint stays complete and loadable.

The faults are injected at the write calls with the exception each library really raises (probed
on a 64 KiB tmpfs: torch.save raises RuntimeError "unexpected pos", safetensors raises
SafetensorError "No space left on device (os error 28)", plain files raise OSError ENOSPC). Tests
run as root in CI, where chmod does not stop writes, so EACCES is injected too. One test fills a
real tmpfs when this machine lets it mount one.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.run_folder import checkpoints as ckpt
from rft_cli.run_folder.metrics import read_metrics

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-test.yaml"
RL_ONLY = [
    "--set",
    "sft.enabled=false",
    "--set",
    "rl.steps=2",
    "--set",
    "save_interval=1",
    "--set",
    "keep_checkpoints=3",
]


def rft_train(out: Path, *extra: str):
    return CliRunner().invoke(
        app, ["train", str(RECIPE), "--output-dir", str(out), "--quiet", *RL_ONLY, *extra]
    )


def assert_failed_cleanly(result, *fragments: str, code: int = 1) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "Error:" in result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)


def assert_loadable(folder: Path) -> None:
    from transformers import AutoModelForCausalLM

    assert ckpt.is_complete(folder), folder
    AutoModelForCausalLM.from_pretrained(folder)
    assert ckpt.read_meta(folder)["step"] >= 1


def _torch_full_disk(monkeypatch, fragment: str) -> None:
    """torch.save fails as on a full disk for paths containing `fragment`."""
    import torch

    real = torch.save

    def save(obj, f, *args, **kwargs):
        if fragment in str(f):
            raise RuntimeError(
                "[enforce fail at inline_container.cc:672] . unexpected pos 640 vs 534"
            )
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


@pytest.mark.slow
@pytest.mark.guarantee
def test_full_disk_while_writing_a_ppo_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _torch_full_disk(monkeypatch, ".tmp-step-2")
    result = rft_train(out)
    assert_failed_cleanly(
        result, "checkpoints/step-2: cannot write the checkpoint", "unexpected pos", "--resume"
    )
    assert_loadable(out / "checkpoints" / "step-1")
    assert (
        not (out / "checkpoints" / ".tmp-step-2").exists()
        and not (out / "checkpoints" / "step-2").exists()
    )
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "base",
        "step-1",
    ]  # base: the start final/ may fall back to
    # Once there is space again, --resume finishes the run from step 1 with each step logged once.
    monkeypatch.undo()
    again = rft_train(out, "--resume")
    assert again.exit_code == 0, again.output
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["stage"] == "rl"] == [1, 2]


@pytest.mark.slow
@pytest.mark.guarantee
def test_safetensors_full_disk_and_permission_denied_are_clean_errors(tmp_path, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    real = safetensors.torch.save_file

    def save_file(tensors, filename, *args, **kwargs):
        if ".tmp-step-2" in str(filename):
            raise SafetensorError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            )
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    import transformers.modeling_utils

    if hasattr(transformers.modeling_utils, "safe_save_file"):
        monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", save_file)
    result = rft_train(tmp_path / "a")
    assert_failed_cleanly(result, "step-2: cannot write the checkpoint", "No space left on device")
    assert_loadable(tmp_path / "a" / "checkpoints" / "step-1")

    monkeypatch.undo()
    real_rename = os.rename

    def rename(src, dst, *args, **kwargs):
        if str(dst).endswith("step-2"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    result = rft_train(tmp_path / "b")
    assert_failed_cleanly(result, "step-2: cannot write the checkpoint (Permission denied")
    assert_loadable(tmp_path / "b" / "checkpoints" / "step-1")


@pytest.mark.slow
@pytest.mark.guarantee
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_metrics_write_failure_stops_the_run_and_names_the_file(tmp_path, monkeypatch, code):
    out = tmp_path / "run"
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("metrics.jsonl"):
            calls.append(fd)
            if len(calls) == 2:  # the second metrics line (rl step 2)
                raise OSError(code, os.strerror(code))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    result = rft_train(out)
    assert_failed_cleanly(result, "metrics.jsonl: cannot write metrics", os.strerror(code))
    assert_loadable(out / "checkpoints" / "step-1")
    assert not (out / "checkpoints" / "step-2").exists()


@pytest.mark.slow
@pytest.mark.guarantee
def test_full_disk_during_the_sft_stage(tmp_path, monkeypatch):
    """TRL's Trainer saves SFT checkpoints itself; its torch.save failure is caught at the run level."""
    out = tmp_path / "run"
    _torch_full_disk(monkeypatch, "checkpoint-2")
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(RECIPE),
            "--output-dir",
            str(out),
            "--quiet",
            "--set",
            "sft.max_steps=2",
            "--set",
            "save_interval=1",
            "--set",
            "rl.steps=1",
        ],
    )
    assert_failed_cleanly(result, f"{out}: a write failed", "unexpected pos", "--resume")
    assert ckpt.is_complete(out / "checkpoints" / "sft-step-1")
    assert not ckpt.is_complete(out / "checkpoints" / "sft")


@pytest.mark.slow
@pytest.mark.guarantee
def test_unwritable_output_dir_at_start_is_a_usage_error(tmp_path, monkeypatch):
    out = tmp_path / "locked" / "run"
    out.parent.mkdir()
    out.parent.chmod(0o500)  # stops a normal user; root ignores it, so the error is also injected
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self == out:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    result = rft_train(out)
    assert_failed_cleanly(
        result, f"{out}: cannot write the run folder (Permission denied)", "--output-dir", code=2
    )
    out.parent.chmod(0o700)


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    return done.returncode == 0


@pytest.mark.slow
@pytest.mark.guarantee
def test_a_real_full_disk_mid_run(tmp_path):
    """The run folder on a 4 MiB tmpfs; after step 1 a file takes all but 8 KiB, so step 2's checkpoint
    hits a real ENOSPC inside torch or safetensors."""
    from rft_cli.config import load_run_config
    from rft_cli.errors import TrainingError
    from rft_cli.training.run import train

    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "4m"):
        pytest.skip(
            "mounting a tmpfs needs CAP_SYS_ADMIN; the injected faults above cover the same paths"
        )
    try:

        def fill_after_step_1(record):
            if record["stage"] == "rl" and record["step"] == 2:
                free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
                (disk / "filler").write_bytes(b"\0" * max(free - 8192, 0))

        config = load_run_config(
            RECIPE, ["sft.enabled=false", "rl.steps=2", "save_interval=1", "keep_checkpoints=3"]
        )
        with pytest.raises(
            TrainingError,
            match="step-2: cannot write the checkpoint .*previous checkpoint is intact",
        ) as info:
            train(config, output_dir=disk / "run", progress=fill_after_step_1)
        assert "No space left on device" in str(info.value) and "MiB free;" in str(info.value)
        assert_loadable(disk / "run" / "checkpoints" / "step-1")
        assert not (disk / "run" / "checkpoints" / ".tmp-step-2").exists()
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_the_ctrl_c_hint_repeats_the_stage_and_settings(tmp_path, monkeypatch):
    """Regression (issue 27): after Ctrl-C in `--stage sft`, the printed command dropped the stage
    (and the --set values), so following it ran on into RL under other settings."""
    import rft_cli.training.run as run_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "train", interrupted)
    out = tmp_path / "my run"
    result = CliRunner().invoke(
        app,
        ["train", str(RECIPE), "-o", str(out), "--stage", "sft", "--set", "sft.max_steps=2"]
        + ["--set", "rl.temperature=0.7", "--quiet"],
    )
    assert result.exit_code == 130
    command = " ".join(result.output.split())  # Rich wraps long lines
    expected = (
        f"continue with: rft train {RECIPE} --output-dir '{out}' --stage sft "
        "--set sft.max_steps=2 --set rl.temperature=0.7 --resume"
    )
    assert expected in command, result.output


@pytest.mark.parametrize("content", [None, "notes.txt"], ids=["missing", "not-a-run"])
def test_resume_without_a_run_in_the_folder_is_a_usage_error(tmp_path, content):
    """Regression (issue 27): `--resume` on an empty or unrelated folder silently started a new run."""
    out = tmp_path / "runs"
    if content is not None:
        out.mkdir()
        (out / content).write_text("mine")
    result = rft_train(out, "--resume")
    assert_failed_cleanly(result, f"{out}: no run to resume", "drop --resume", code=2)
    assert (sorted(p.name for p in out.iterdir()) if out.exists() else None) == (
        [content] if content else None
    )  # nothing written
