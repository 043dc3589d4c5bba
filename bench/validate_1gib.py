"""`rft validate` on a generated ~1 GiB training file: peak memory stays bounded (guarantee 7).

Usage:
    python bench/validate_1gib.py                 # 1 GiB, in a temporary directory
    python bench/validate_1gib.py --gib 0.25      # a quicker run

Two files of the same size are validated, each by the real command (`python -m rft_cli validate
FILE --format json`) in a fresh child process:
  distinct  every row has its own prompt: memory grows with the number of distinct prompts
            (the exact-duplicate index), which is the validator's documented bound;
  repeated  1,000 prompts repeated to the same size: memory must not grow with the file size,
            because rows are streamed and never kept.
Peak memory is the largest PSS (and RSS) sum of the child and its own children (the validator
forks one worker for big files), sampled every 20 ms from /proc/PID/smaps_rollup. Not part of the
test suite (minutes of CPU); docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _row(prompt: str, answer: int) -> str:
    return json.dumps({"messages": [{"role": "user", "content": prompt}], "reference_answer": str(answer),
                       "solution": f"Work through it step by step.\n#### {answer}"}) + "\n"


def generate(path: Path, size: int, distinct: bool, seed: int = 0) -> int:
    """Write rows of random 25-45 word prompts until the file reaches `size` bytes; returns rows."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9))) for _ in range(20_000)]
    pool = [" ".join(rng.choices(vocab, k=rng.randint(25, 45))) + "?" for _ in range(1_000)]
    rows = written = 0
    with path.open("w", encoding="utf-8") as handle:
        while written < size:
            prompt = f"{rows} " + rng.choice(pool) if distinct else pool[rows % len(pool)]
            line = _row(prompt, rows % 997)
            handle.write(line)
            written += len(line)
            rows += 1
    return rows


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB of `pid` and its children, 0 when it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            fields = dict(line.split()[:2] for line in handle if line.startswith(("Rss:", "Pss:")))
        rss, pss = int(fields.get("Rss:", 0)), int(fields.get("Pss:", 0))
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            for child in handle.read().split():
                child_rss, child_pss = _memory_kib(int(child))
                rss, pss = rss + child_rss, pss + child_pss
    except (OSError, ValueError):
        pass
    return rss, pss


def measure(path: Path) -> dict:
    """Run `rft validate PATH --format json` and sample its memory until it exits."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "rft_cli", "validate", str(path), "--format", "json"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        rss, pss = _memory_kib(proc.pid)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.02)
    out, err = proc.communicate()
    report = json.loads(out) if out.strip().startswith("{") else {}
    return {"exit_code": proc.returncode, "seconds": round(time.perf_counter() - start, 1),
            "peak_pss_mib": round(peak_pss / 1024, 1), "peak_rss_mib": round(peak_rss / 1024, 1),
            "ok": report.get("ok"), "stderr_tail": err[-300:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of each generated file in GiB")
    parser.add_argument("--keep", type=Path, help="write the files here instead of a temporary directory")
    args = parser.parse_args()
    size = int(args.gib * 2**30)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for kind in ("repeated", "distinct"):
            path = folder / f"{kind}.jsonl"
            started = time.perf_counter()
            rows = generate(path, size, distinct=kind == "distinct")
            generated = time.perf_counter() - started
            result = measure(path)
            result.update({"file": kind, "rows": rows, "file_mib": round(path.stat().st_size / 2**20, 1),
                           "generate_seconds": round(generated, 1),
                           "pss_bytes_per_row": round(result["peak_pss_mib"] * 2**20 / rows)})
            print(json.dumps(result), flush=True)
            path.unlink()


if __name__ == "__main__":
    main()
