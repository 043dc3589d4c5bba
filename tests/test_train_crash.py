"""`kill -9` in the middle of writing a checkpoint, during SFT and during PPO, then `rft train
--resume`: every step exactly once, the same metrics as an uninterrupted run (guarantee 2); and the
two-process data-parallel run.

The kill is exact, not timed: the subprocess runs `rft` with torch.save wrapped so that the process
sends itself SIGKILL when it starts writing a file whose path contains RFT_TEST_KILL_IN (after the
model weights of that checkpoint, before its optimizer state and marker).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rft_cli.run_folder import checkpoints as ckpt
from rft_cli.run_folder.metrics import read_metrics

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "tiny-test.yaml"
SETTINGS = [
    "--set",
    "sft.max_steps=6",
    "--set",
    "rl.steps=6",
    "--set",
    "save_interval=2",
    "--set",
    "eval.interval=3",
]
TIMING_KEYS = {"elapsed_s", "stage_elapsed_s", "eval_s", "tokens_per_second"}

KILLING_RFT = """
import os, runpy, signal, sys
import torch
target, real_save = os.environ.get("RFT_TEST_KILL_IN"), torch.save
def save(obj, f, *args, **kwargs):
    if target and target in str(f):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = save
sys.argv = ["rft", *sys.argv[1:]]
runpy.run_module("rft_cli", run_name="__main__")
"""


def rft(out: Path, *extra: str, kill_in: str | None = None) -> subprocess.CompletedProcess:
    environment = env()
    environment.pop("RFT_TEST_KILL_IN", None)
    if kill_in:
        environment["RFT_TEST_KILL_IN"] = kill_in
    args = [
        sys.executable,
        "-c",
        KILLING_RFT,
        "train",
        str(RECIPE),
        "--output-dir",
        str(out),
        "--quiet",
        *SETTINGS,
        *extra,
    ]
    return subprocess.run(
        args, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300
    )


def steps(records: list[dict]) -> list[tuple]:
    return [(r["stage"], r["step"], bool(r.get("eval"))) for r in records]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def rl_lines(records: list[dict]) -> list[dict]:
    return [r for r in records if r["stage"] == "rl"]


@pytest.mark.guarantee
def test_kill_9_while_writing_checkpoints_then_resume(tmp_path):
    """SIGKILL while TRL writes the warm-up's checkpoint-4 and while our writer fills .tmp-step-4,
    then `--resume`: every step once, SFT losses to float noise, PPO lines exactly (each step is
    seeded from (seed, step); optimizer, RNG and data position are restored). One scenario: it used
    to run twice, as timed kills here and as exact kills in the guarantees file."""
    full = tmp_path / "full"
    assert rft(full).returncode == 0

    cut = tmp_path / "cut"
    killed = rft(cut, kill_in=f"{os.sep}checkpoint-4{os.sep}")  # TRL's SFT save of step 4
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert ckpt.is_complete(cut / "checkpoints" / "sft-step-2") and not ckpt.is_complete(
        cut / "checkpoints" / "sft"
    )
    killed = rft(cut, "--resume", kill_in=".tmp-step-4")  # our PPO checkpoint writer, mid-write
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (cut / "checkpoints" / ".tmp-step-4").is_dir()  # the torn checkpoint is there...
    # ...and never taken: the latest complete one is step 3, saved as the first evaluation (rl.final: best)
    assert ckpt.find_latest_complete(cut / "checkpoints") == cut / "checkpoints" / "step-3"
    # The kill left metrics lines after the last checkpoint (rl steps 3-4): resume must drop them.
    assert max(r["step"] for r in read_metrics(cut / "metrics.jsonl") if r["stage"] == "rl") == 4

    done = rft(cut, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    got, want = read_metrics(cut / "metrics.jsonl"), read_metrics(full / "metrics.jsonl")
    assert steps(got) == steps(want)  # every step exactly once, in order
    assert len(set(steps(got))) == len(got)
    for a, b in zip(got, want, strict=True):
        for key, value in b.items():
            if key not in TIMING_KEYS and isinstance(value, float):
                assert a[key] == pytest.approx(value, rel=1e-3, abs=1e-5), (key, a, b)
        if a["stage"] == "sft" and "loss" in b:  # TRL's Trainer restores data order and RNG
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    if all(
        a.get("loss") == b.get("loss")
        for a, b in zip(got, want, strict=True)
        if a["stage"] == "sft"
    ):
        assert without_timing(rl_lines(got)) == without_timing(
            rl_lines(want)
        )  # PPO reproduces exactly
    assert not (cut / "checkpoints" / ".tmp-step-4").exists()  # pruned once the run moved past it
    assert json.loads((cut / "summary.json").read_text())["final"] == "final"


def test_two_process_data_parallel_run_with_torchrun(tmp_path):
    """The accelerate/DDP path on CPU (gloo): two processes, one metrics file, one checkpoint writer."""
    out = tmp_path / "ddp"
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "rft_cli",
    ]
    args = [
        "train",
        str(RECIPE),
        "--output-dir",
        str(out),
        "--quiet",
        "--set",
        "sft.max_steps=2",
        "--set",
        "rl.steps=2",
    ]
    done = subprocess.run(
        torchrun + args,
        check=False,
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_metrics(out / "metrics.jsonl")
    assert [(r["stage"], r["step"]) for r in records] == [
        ("sft", 1),
        ("sft", 2),
        ("rl", 1),
        ("rl", 2),
    ]
    assert done.stdout.count("final model:") == 1  # only the main process prints the summary
    assert (out / "final" / "config.json").is_file() and (
        out / "checkpoints" / "step-2" / "rft_meta.json"
    ).is_file()
