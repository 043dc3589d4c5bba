"""Grader throughput: string_check and numeric (grades/s), and the python grader's worker pool
against starting a fresh sandboxed process per grade.

Run from the repository root:
    OMP_NUM_THREADS=1 python bench/graders.py            # full run
    python bench/graders.py --quick                      # a smoke run (a few seconds)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rft_cli.graders import build_grader  # noqa: E402
from rft_cli.graders.sandbox import SandboxPool  # noqa: E402

COT = "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n#### 72"
SVAMP_COT = (
    "Each box holds 7 pencils and there are 29 boxes, so 29 * 7 = 203 pencils.\n"
    "Therefore, the answer is <203>."
)
PYTHON_SOURCE = "def grade(sample, item):\n    return 1.0 if sample['output_text'].strip() == item['answer'] else 0.0\n"


def rate(grader, sample: str, item: dict, n: int) -> float:
    """Grades per second for `n` calls of grader.grade (best of three runs)."""
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(n):
            grader.grade(sample, item)
        best = max(best, n / (time.perf_counter() - started))
    return best


def bench_fast(n: int) -> dict[str, float]:
    exact = build_grader(
        {
            "type": "string_check",
            "input": "{{ sample.output_text }}",
            "reference": "{{ item.answer }}",
            "operation": "eq",
        }
    )
    numeric = build_grader(
        {"type": "numeric", "reference": "{{ item.answer }}", "partial_credit": 0.1}
    )
    return {
        "string_check eq": rate(exact, "72", {"answer": "72"}, n),
        "numeric (#### 72, GSM8K-style CoT)": rate(numeric, COT, {"answer": "72"}, n),
        "numeric ('the answer is <203>', SVAMP-style CoT)": rate(
            numeric, SVAMP_COT, {"answer": "203.0"}, n
        ),
        "numeric (no marker: last number)": rate(
            numeric, "so she sold 72 clips in all", {"answer": "72"}, n
        ),
    }


def bench_python(n_pool: int, n_spawn: int) -> dict[str, float]:
    payload = {"sample": {"output_text": "72"}, "item": {"answer": "72"}}
    pool = SandboxPool(PYTHON_SOURCE, timeout=10, workers=1)
    pool.run([payload])  # start the worker outside the timing
    started = time.perf_counter()
    for _ in range(n_pool):
        assert pool.run([payload])[0].value == 1.0
    pool_rate = n_pool / (time.perf_counter() - started)
    batch = [payload] * n_pool
    started = time.perf_counter()
    pool.run(batch)
    batch_rate = n_pool / (time.perf_counter() - started)
    pool.close()
    started = time.perf_counter()
    for _ in range(n_spawn):  # the same sandbox, but a fresh process for every grade
        fresh = SandboxPool(PYTHON_SOURCE, timeout=10, workers=1)
        assert fresh.run([payload])[0].value == 1.0
        fresh.close()
    spawn_rate = n_spawn / (time.perf_counter() - started)
    return {
        "python pool, one call at a time (grades/s)": pool_rate,
        "python pool, batch on 1 worker (grades/s)": batch_rate,
        "python, new process per grade (grades/s)": spawn_rate,
        "pool speed-up over process per grade (x)": pool_rate / spawn_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    n_fast, n_pool, n_spawn = (20_000, 200, 10) if args.quick else (200_000, 2_000, 40)
    results = {**bench_fast(n_fast), **bench_python(n_pool, n_spawn)}
    results["machine"] = (
        f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}"
    )
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name, value in results.items():
        print(f"{name:55s} {value:>12,.0f}" if isinstance(value, float) else f"{name:55s} {value}")


if __name__ == "__main__":
    main()
