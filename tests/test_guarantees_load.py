"""Guarantee 7 (the part fast enough for the suite): the checks `rft train` runs before any model
loads read 50,000 training rows (OpenAI's RFT limit) in seconds and hold them once: the peak
traced allocation is not much above what the returned rows keep. The SFT warm-up tokenizes only the
rows it trains on, when their batch is drawn, and its dataset holds row numbers, not a copy of the
rows. bench/train_50k_start.py measures the real command (and the start of SFT and PPO);
bench/validate_1gib.py measures `rft validate`.
"""

from __future__ import annotations

import json
import random
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from rft_cli.config import RunConfig, parse_run_config
from rft_cli.tiny import build_char_tokenizer
from rft_cli.training import sft
from rft_cli.training.run import preflight, train

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


def _config(train: Path, **extra: Any) -> RunConfig:
    return parse_run_config({"model": {"tiny": "llama-test"}, "data": {"train": str(train)},
                             "grader": {"type": "numeric", "name": "answer", "reference": "{{ item.answer }}"},
                             **extra})  # a grader the demonstrations pass: the preflight self-test grades all 50,000


def test_50k_rows_are_checked_in_seconds_and_held_once(tmp_path, monkeypatch):
    monkeypatch.setenv("RFT_VALIDATE_WORKERS", "1")  # one process, so tracemalloc sees every allocation
    config = _config(write_rows(tmp_path / "train.jsonl", ROWS))
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


def test_the_warm_up_tokenizes_only_the_rows_it_trains_on(tmp_path, monkeypatch):
    """Found by bench/train_50k_start.py: TRL's SFTTrainer prepared all 50,000 demonstrations (chat
    template twice per row, then several Arrow copies) before its first step: 110 s and +473 MiB.
    A one-step warm-up on 50,000 rows must now template a few batches' worth of rows, not every
    row, and hand the Trainer a dataset of row numbers rather than another copy of the rows."""
    monkeypatch.setenv("RFT_VALIDATE_WORKERS", "1")
    sft_settings = {"max_steps": 1, "batch_size": 8, "max_length": 512}
    config = _config(write_rows(tmp_path / "train.jsonl", ROWS), sft=sft_settings)
    tokenizer_class, templated = type(build_char_tokenizer()), []
    real_template, real_build = tokenizer_class.apply_chat_template, sft.build_sft_trainer

    def counting_template(self, conversation, *args, **kwargs):
        templated.append(len(conversation))
        return real_template(self, conversation, *args, **kwargs)

    trainers = []
    monkeypatch.setattr(tokenizer_class, "apply_chat_template", counting_template)
    monkeypatch.setattr(sft, "build_sft_trainer", lambda *a, **k: trainers.append(real_build(*a, **k)) or trainers[-1])
    train(config, output_dir=tmp_path / "run", stage="sft")

    assert (tmp_path / "run" / "checkpoints" / "sft").is_dir()
    dataset = trainers[0].train_dataset
    assert len(dataset) == ROWS and dataset.column_names == ["row"]
    assert dataset.data.nbytes <= 8 * ROWS  # one int64 per row; the rows themselves are 15 MiB of JSON
    # Two templates per row: the fit check's first row, then the step's batch of 8 (and at most two
    # batches the data loader draws ahead). Preparing every row up front would be 100,000 calls.
    assert 2 * (1 + 8) <= len(templated) <= 2 * (1 + 3 * 8), len(templated)
