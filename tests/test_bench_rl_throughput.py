"""bench/rl_throughput.py runs end to end, both sides, with LoRA: a bench that only breaks when a
figure is due is found too late (its TRL side once passed `_peft_config` one argument too few)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_rl_throughput_runs_both_sides_with_lora(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "rl_throughput.py")]
        + ["--lora", "4", "--prompts", "2", "--samples", "2", "--mini-batch", "4"]
        + ["--max-new-tokens", "4", "--steps", "1", "--warmup", "1", "--epochs", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(LoRA r=4)" in out.stdout
    assert "ours / TRL" in out.stdout
    rows = [line for line in out.stdout.splitlines() if line.startswith("1 ")]
    assert [row[6:28].strip() for row in rows] == ["ours (PPO)", "TRL GRPOTrainer"]
