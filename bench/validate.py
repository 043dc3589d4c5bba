"""Benchmark `rft validate` on a 1,000,000-row training file and a 100,000-row validation file.

Usage:
    python bench/validate.py                      # 1M + 100k rows in a temporary directory
    python bench/validate.py --train-rows 100000  # a quicker run

Each measurement runs in a fresh child process, so its peak memory (ru_maxrss) is its own:
  1. a plain `json.loads` loop over both files (the floor any Python validator pays);
  2. the full `validate_dataset(train, valid, overlap_fields=["reference_answer"])`, with the
     exact-overlap, near-duplicate and reference-value checks.
The files hold random 25-45 word prompts over a 20,000-word vocabulary, some exact duplicates,
exact train/valid overlaps and one-word-different near-duplicates, so every code path runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD_BASELINE = """
import json, resource, sys, time
start = time.perf_counter()
rows = 0
for path in sys.argv[1:]:
    with open(path, "rb") as handle:
        for line in handle:
            json.loads(line)
            rows += 1
print(json.dumps({"rows": rows, "seconds": time.perf_counter() - start,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

_CHILD_VALIDATE = """
import json, resource, sys, time
start = time.perf_counter()
from rft_cli.data.validation import validate_dataset
report = validate_dataset(sys.argv[1], sys.argv[2], overlap_fields=["reference_answer"])
seconds = time.perf_counter() - start
print(json.dumps({"rows": report.stats["train"]["lines"] + report.stats["valid"]["lines"], "seconds": seconds,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "error_counts": report.error_counts, "warning_counts": report.warning_counts,
                  "overlap": report.stats["overlap"]}))
"""


def _vocabulary(rng: random.Random, size: int = 20_000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(size)]


def _row(prompt: str, answer: int) -> str:
    return json.dumps({
        "messages": [{"role": "user", "content": prompt}],
        "reference_answer": str(answer),
        "solution": f"Work through it step by step.\n#### {answer}",
    })


def generate(directory: Path, train_rows: int, valid_rows: int, seed: int = 0) -> tuple[Path, Path]:
    """Write train.jsonl and valid.jsonl; about 0.1% of valid rows are exact or near copies of train rows."""
    rng = random.Random(seed)
    vocab = _vocabulary(rng)
    prompts = [" ".join(rng.choices(vocab, k=rng.randint(25, 45))) + "?" for _ in range(train_rows)]
    train, valid = directory / "train.jsonl", directory / "valid.jsonl"
    with train.open("w") as handle:
        for i, prompt in enumerate(prompts):
            if i % 10_000 == 1:
                prompt = prompts[i - 1]  # an exact duplicate inside the training file
            handle.write(_row(prompt, rng.randint(0, 10**9)) + "\n")
    with valid.open("w") as handle:
        for i in range(valid_rows):
            if i % 1000 == 0:
                prompt = prompts[rng.randrange(train_rows)].upper()  # exact overlap after case folding
            elif i % 1000 == 1:
                prompt = prompts[rng.randrange(train_rows)] + " " + rng.choice(vocab)  # a near-duplicate
            else:
                prompt = " ".join(rng.choices(vocab, k=rng.randint(25, 45))) + "?"
            handle.write(_row(prompt, 10**9 + i) + "\n")
    return train, valid


def _run_child(code: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=1_000_000)
    parser.add_argument("--valid-rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train, valid = generate(Path(tmp), args.train_rows, args.valid_rows)
        size_mib = (train.stat().st_size + valid.stat().st_size) / 2**20
        print(f"generated {args.train_rows:,} + {args.valid_rows:,} rows ({size_mib:.0f} MiB) in {time.perf_counter() - start:.1f} s")
        for _ in range(args.repeats):
            base = _run_child(_CHILD_BASELINE, str(train), str(valid))
            full = _run_child(_CHILD_VALIDATE, str(train), str(valid))
            _print(base, full)


def _print(base: dict, full: dict) -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"json.loads loop : {base['rows']:,} rows in {base['seconds']:.2f} s ({base['rows'] / base['seconds']:,.0f} rows/s), peak RSS {base['peak_rss_mib']:.0f} MiB")
    print(f"validate_dataset: {full['rows']:,} rows in {full['seconds']:.2f} s ({full['rows'] / full['seconds']:,.0f} rows/s), peak RSS {full['peak_rss_mib']:.0f} MiB")
    print(f"ratio validate / json.loads: {full['seconds'] / base['seconds']:.2f}x")
    print(f"found: errors {full['error_counts']}, warnings {full['warning_counts']}, overlap {full['overlap']}")


if __name__ == "__main__":
    main()
