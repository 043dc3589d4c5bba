"""How fast `rft train` starts on 50,000 training rows (OpenAI's RFT limit), and how much memory the
rows take on the way to the first step (guarantee 7).

Usage:
    python bench/train_50k_start.py              # 50,000 rows of about 300 bytes (15 MiB)
    python bench/train_50k_start.py --rows 10000

Each case runs at --baseline-rows (1,000) and at --rows, so the difference is what the rows cost.
Each case runs the real command in a fresh child process; peak RSS/PSS of the child and its
children is sampled every 20 ms from /proc/PID/smaps_rollup:
  rows        a bare `load_rows` of the file: what holding the rows once costs (RSS after - before);
  dry-run     `rft train --dry-run`: config, data validation, grader and plan, no model;
  ppo start   `rft train` with sft.enabled=false, rl.steps=1 (tiny model), to its first metrics line;
  sft start   `rft train --stage sft` with sft.max_steps=1 (tiny model), to its first metrics line.

Measured 2026-11-25, shared 2-core VM, another engineer's jobs running (load average about 2-3),
1,000 / 50,000 rows, seconds to the first metrics line and peak PSS:
  ppo start               5.2-6.0 s / 6.1-6.7 s    414-423 / 475 MiB
  sft start, main 9f6df52 7.4 s / 58.6 s           477 / 978 MiB (+500 MiB: TRL prepared every row up front)
  sft start, lazy batches 6.1-6.9 s / 9.0-9.2 s    435-438 / 500-503 MiB (+65 MiB: the rows once)
(`rows` measured +61 MiB for holding the 50,000 rows once.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from validate_1gib import _memory_kib  # noqa: E402

from tests.train_fakes import write_rows  # noqa: E402

_ROWS_ONCE = """
import json, sys
def rss():
    return int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmRSS:")))
from rft_cli.data.records import load_rows
before = rss()
rows = load_rows(sys.argv[1])
print(json.dumps({"rows": len(rows), "rows_rss_mib": round((rss() - before) / 1024, 1)}))
"""


def run(args: list[str], until_metrics: Path | None = None) -> dict:
    """Run a child; sample memory until it exits (or writes its first metrics line, then stop it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_rss = peak_pss = 0
    first_step = None
    while proc.poll() is None:
        rss, pss = _memory_kib(proc.pid)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        if until_metrics is not None and until_metrics.exists() and until_metrics.stat().st_size > 0:
            first_step = time.perf_counter() - start
            proc.kill()
            break
        time.sleep(0.02)
    out, err = proc.communicate()
    result = {"seconds": round(time.perf_counter() - start, 1), "peak_rss_mib": round(peak_rss / 1024, 1),
              "peak_pss_mib": round(peak_pss / 1024, 1)}
    if first_step is not None:
        result["seconds_to_first_step"] = round(first_step, 1)
    elif proc.returncode != 0:
        result["error"] = err[-400:]
    if out.strip().startswith("{") and until_metrics is None:
        result["stdout"] = json.loads(out) if "dry_run" not in out else "plan"
    return result


def _cases(folder: Path, rows: int) -> list[dict]:
    train = write_rows(folder / f"train-{rows}.jsonl", rows)
    config = folder / f"run-{rows}.yaml"
    config.write_text(json.dumps({
        "model": {"tiny": "llama-test"}, "data": {"train": str(train)},
        "grader": {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
                   "reference": "{{ item.answer }}", "operation": "eq"},
        "sft": {"max_steps": 1, "batch_size": 8, "max_length": 512},
        "rl": {"steps": 1, "prompts_per_step": 8, "mini_batch_size": 4, "max_new_tokens": 8, "max_prompt_length": 256},
    }), encoding="utf-8")
    rft = ["-m", "rft_cli", "train", str(config), "--quiet"]
    ppo, sft = folder / f"ppo-{rows}", folder / f"sft-{rows}"
    return [
        {"case": "file", "rows": rows, "file_mib": round(train.stat().st_size / 2**20, 1)},
        {"case": "rows", "rows": rows, **run(["-c", _ROWS_ONCE, str(train)])},
        {"case": "dry-run", "rows": rows, **run([*rft, "--dry-run"])},
        {"case": "ppo start", "rows": rows, **run([*rft, "-o", str(ppo), "--set", "sft.enabled=false"], ppo / "metrics.jsonl")},
        {"case": "sft start", "rows": rows, **run([*rft, "-o", str(sft), "--stage", "sft"], sft / "metrics.jsonl")},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--baseline-rows", type=int, default=1_000, help="the same cases on a small file, for the difference")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for rows in (args.baseline_rows, args.rows):
            for case in _cases(Path(tmp), rows):
                print(json.dumps(case), flush=True)


if __name__ == "__main__":
    main()
