"""Guarantee 7 (the part fast enough for the suite): the checks `rft train` runs before any model
loads read 50,000 training rows (OpenAI's RFT limit) in seconds and hold them once: the peak
traced allocation is not much above what the returned rows keep. bench/train_50k_start.py measures
the real command (and the start of SFT and PPO); bench/validate_1gib.py measures `rft validate`.
"""

from __future__ import annotations

import json
import random
import time
import tracemalloc
from pathlib import Path

import pytest

from rft_cli.config import parse_run_config
from rft_cli.training.run import preflight

pytestmark = pytest.mark.slow

ROWS = 50_000
WORDS = ["apples", "trays", "muffins", "each", "how", "many", "total", "garden", "rows", "left", "baker", "party"]


def write_rows(path: Path, n: int, seed: int = 0) -> Path:
    """GSM8K-sized rows: a 30-word question, a short solution and an answer (about 300 bytes)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            question = f"Problem {i}: " + " ".join(rng.choices(WORDS, k=30)) + "?"
            handle.write(json.dumps({"messages": [{"role": "user", "content": question}],
                                     "solution": f"Work it out step by step.\n#### {i}", "answer": str(i)}) + "\n")
    return path


def test_50k_rows_are_checked_in_seconds_and_held_once(tmp_path, monkeypatch):
    monkeypatch.setenv("RFT_VALIDATE_WORKERS", "1")  # one process, so tracemalloc sees every allocation
    train = write_rows(tmp_path / "train.jsonl", ROWS)
    config = parse_run_config({"model": {"tiny": "llama-test"}, "data": {"train": str(train)},
                               "grader": {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
                                          "reference": "{{ item.answer }}", "operation": "eq"}})
    started = time.perf_counter()
    preflight(config)  # also warms the imports, so the traced run below measures the rows only
    seconds = time.perf_counter() - started
    tracemalloc.start()
    try:
        checked = preflight(config)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(checked.train_rows) == ROWS and checked.plan["train_rows"] == ROWS
    # Holding the rows twice (say a list plus a copy, or every line as text and parsed) would double the peak.
    assert peak < 1.3 * held, (peak / 2**20, held / 2**20)
    assert seconds < 60, seconds  # 1-3 s on the (loaded, 2-core) build machine
