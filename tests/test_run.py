"""Guarantee 7 (the part fast enough for the suite): the checks `rft train` runs before any model
loads read 50,000 training rows (OpenAI's RFT limit) in seconds and hold them once: the peak
traced allocation is not much above what the returned rows keep. (The SFT warm-up's share of it is in
tests/test_sft.py.) bench/train_50k_start.py measures the real command (and the start of SFT and PPO);
bench/validate_1gib.py measures `rft validate`.
"""

from __future__ import annotations

import time
import tracemalloc

import pytest

from rft_cli.training.run import preflight
from tests.train_fakes import ROWS_50K, load_test_config, write_rows


@pytest.mark.slow
@pytest.mark.guarantee
def test_50k_rows_are_checked_in_seconds_and_held_once(tmp_path, monkeypatch):
    monkeypatch.setenv("RFT_VALIDATE_WORKERS", "1")  # one process, so tracemalloc sees every allocation
    config = load_test_config(write_rows(tmp_path / "train.jsonl", ROWS_50K))
    started = time.perf_counter()
    preflight(config)  # also warms the imports, so the traced run below measures the rows only
    seconds = time.perf_counter() - started
    tracemalloc.start()
    try:
        checked = preflight(config)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(checked.train_rows) == ROWS_50K and checked.plan["train_rows"] == ROWS_50K
    # Holding the rows twice (say a list plus a copy, or every line as text and parsed) would double the peak.
    assert peak < 1.3 * held, (peak / 2**20, held / 2**20)
    assert seconds < 60, seconds  # 1-3 s on the (loaded, 2-core) build machine
