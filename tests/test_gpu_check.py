"""bench/gpu_check.py cannot rot: its CPU mode (tiny sizes) runs the whole path the GPU check takes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_small(tmp_path):
    out = tmp_path / "figures.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--cpu", "--small", "--json", str(out)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    sampling = report["sampling"]
    assert max(sampling["tv_ppo_sampler"], sampling["tv_eval"]) <= sampling["tv_noise_bound"]
    assert set(report["arms"]) == {"ppo", "grpo", "ppo-lora"}
    for name, figures in report["arms"].items():
        assert figures["steps"] == 3, name
        assert abs(figures["kl_step1"]) <= 1e-6, name  # the policy is the reference at step 1
        assert 0 < figures["updated_share"] <= 1, name
        assert figures["gen_tokens_per_s"] > 0, name
    assert "sampling TV" in proc.stdout and "ppo-lora" in proc.stdout
