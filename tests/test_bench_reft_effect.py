"""bench/reft_effect.py's verdict and table: the bar of issue 15, applied per seed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "reft_effect.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("reft_effect", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(seed, warmup, sft_only, ppo, final, source="step-100"):
    return {
        "seed": seed,
        "warmup": warmup,
        "sft_only": sft_only,
        "ppo": ppo,
        "final": final,
        "final_source": source,
    }


@pytest.mark.parametrize(
    "row,effect,kept",
    [
        (_row(0, 0.15, 0.30, 0.95, 0.96), True, True),
        (_row(1, 0.15, 0.86, 0.95, 0.96), False, True),  # only +9 over the SFT-only arm
        (
            _row(2, 0.845, 0.59, 0.55, 0.845, "start"),
            False,
            True,
        ),  # PPO fell; final/ is the warm-up
        (_row(3, 0.845, 0.59, 0.55, 0.83), False, False),  # final/ 1.5 points below the warm-up
        (_row(4, 0.20, 0.15, 0.30, None), True, False),  # no final/ at all
    ],
)
def test_verdict_applies_both_halves_of_the_bar(bench, row, effect, kept):
    assert bench.verdict(row) == {"effect": effect, "final_not_worse": kept}


def test_the_table_lists_every_seed_and_counts_the_bar(bench):
    table = bench.distribution_table(
        [_row(0, 0.15, 0.30, 0.95, 0.96), _row(7, 0.845, 0.59, 0.55, 0.845, "start")]
    )
    assert "| 0 | 15.0% | 30.0% | 95.0% | 96.0% (step-100) | - | +80.0 | +65.0 | yes |" in table
    assert (
        "| 7 | 84.5% | 59.0% | 55.0% | 84.5% (start) | - | -29.5 | -4.0 | final ok, no effect |"
        in table
    )
    assert "on 1 of 2 seeds; final/ within 1 point of the warm-up on 2 of 2." in table


def test_the_table_shows_final_on_the_rows_that_did_not_choose_it(bench):
    """Issue 25: final/ is chosen on the validation rows it is scored on; its score on held-out rows
    (summary.json's final_heldout_accuracy) gets a column of its own."""
    row = {**_row(0, 0.15, 0.30, 0.95, 0.96), "final_heldout": 0.91}
    assert "| 96.0% (step-100) | 91.0% | +80.0 |" in bench.distribution_table([row])
