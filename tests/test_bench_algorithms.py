"""The pure parts of bench/algorithms.py, bench/saturated.py and bench/rft_runs.py (no training)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

# The bench scripts import each other by name (they run as `python bench/x.py`), so bench/ goes on the path first.
import algorithms  # noqa: E402
import rft_runs  # noqa: E402
import saturated  # noqa: E402

from rft_cli.config import load_run_config  # noqa: E402
from rft_cli.errors import ConfigError  # noqa: E402

RECIPE = ROOT / "recipes" / "arith-cpu.yaml"


def _rl(step: int, elapsed: float, **extra: float) -> dict:
    return {"stage": "rl", "step": step, "stage_elapsed_s": elapsed, **extra}


@pytest.mark.parametrize(
    "ppo_steps,ppo_s,arm_s,expected",
    [
        (100, 1.0, 2.0, 50),  # an arm twice as slow per step gets half the steps
        (100, 1.5, 1.0, 150),
        (100, 1.0, 1.0, 100),
        (100, 1.0, 1000.0, 1),  # never fewer than one step
        (100, 10.0, 1.0, 500),  # at most five times PPO's steps
        (3, 1.0, 0.4, 8),  # 7.5 rounds half up
    ],
)
def test_steps_for_time(ppo_steps, ppo_s, arm_s, expected):
    assert rft_runs.steps_for_time(ppo_steps, ppo_s, arm_s) == expected


def test_steps_for_time_refuses_a_zero_time():
    with pytest.raises(ValueError, match="positive"):
        rft_runs.steps_for_time(100, 0.0, 1.0)


def test_rl_train_seconds_leaves_out_evaluations_and_the_first_step():
    records = [
        {"stage": "sft", "step": 5, "stage_elapsed_s": 99.0, "eval_s": 7.0},
        _rl(1, 10.0),
        _rl(2, 12.0, eval_s=3.0),
        _rl(3, 16.0),
        _rl(4, 18.0, eval_s=1.0),
    ]
    # 18 - 10 = 8 s after step 1, of which 3 + 1 s evaluating
    assert rft_runs.rl_train_seconds(records, 1, 4) == pytest.approx(4.0)
    assert rft_runs.rl_train_seconds(records, 2, 3) == pytest.approx(
        4.0
    )  # step 2's evaluation is before its end


def test_rl_train_seconds_names_missing_steps():
    with pytest.raises(ValueError, match="steps logged: \\[1\\]"):
        rft_runs.rl_train_seconds([_rl(1, 1.0)], 1, 10)


def test_sampled_tokens_and_best_validated():
    records = [
        {"stage": "sft", "step": 9, "response_length_mean": 50.0, "valid_accuracy": 0.9},
        _rl(1, 1.0, response_length_mean=10.0),
        _rl(2, 2.0, response_length_mean=12.5, valid_accuracy=0.4),
        _rl(3, 3.0, response_length_mean=20.0, valid_accuracy=0.3),
    ]
    assert (
        rft_runs.sampled_tokens(records, 64) == (10 + 12.5 + 20) * 64
    )  # the warm-up's lines do not count
    assert rft_runs.best_validated(records, 0.35) == 0.4
    assert (
        rft_runs.best_validated(records, 0.5) == 0.5
    )  # the start is a candidate, as in rl.final: best
    assert rft_runs.best_validated([_rl(1, 1.0)], None) is None


def test_trl_overrides_make_the_ppo_recipe_valid_for_grpo_and_rloo():
    """The default recipe sets vf_coef (PPO only); without the reset GRPO refuses the recipe."""
    with pytest.raises(ConfigError, match="vf_coef"):
        load_run_config(RECIPE, ["rl.algorithm=grpo"])
    fix = algorithms.trl_overrides(RECIPE, [])
    assert fix == ["rl.vf_coef=5.0"]
    for arm in ("grpo", "rloo"):
        config = load_run_config(RECIPE, [*fix, f"rl.algorithm={arm}"])
        assert (
            config.rl.learning_rate == load_run_config(RECIPE).rl.learning_rate
        )  # shared settings untouched


def test_trl_overrides_include_keys_set_by_overrides():
    fix = algorithms.trl_overrides(RECIPE, ["rl.lam=0.9", "rl.whiten_advantages=false"])
    assert set(fix) == {"rl.vf_coef=5.0", "rl.lam=0.95", "rl.whiten_advantages=true"}


def _seed_row(seed: int, ppo: float, grpo: float, rloo: float) -> dict:
    def arm(name: str, acc: float) -> dict:
        return {
            "arm": name,
            "steps": 100,
            "last": acc,
            "final": max(acc, 0.5),
            "final_source": "step-100",
            "best": acc,
            "sampled_tokens": 1000,
            "rl_s": 10.0,
            "eval_s": 2.0,
            "train_s": 8.0,
        }

    return {
        "seed": seed,
        "warmup": 0.5,
        "arms": {"ppo": arm("ppo", ppo), "grpo": arm("grpo", grpo), "rloo": arm("rloo", rloo)},
    }


def test_winners_keep_ties():
    row = _seed_row(0, 0.9, 0.9, 0.2)
    assert algorithms.winners(row, "last") == ["ppo", "grpo"]
    assert algorithms.winners(_seed_row(1, 0.1, 0.3, 0.2), "last") == ["grpo"]


def test_markdown_table_has_a_line_per_seed_and_arm_and_the_means():
    table = algorithms.markdown_table([_seed_row(0, 0.9, 0.6, 0.2), _seed_row(1, 0.7, 0.8, 0.4)])
    lines = table.splitlines()
    assert len(lines) == 2 + 6 + 3
    assert "| 0 | grpo | 50.0% | 60.0% | 60.0% (step-100) | 100 | 8 | 2 | 1,000 |" in lines
    assert "| mean | ppo | 50.0% | 80.0% | 80.0% |" in table
    assert "seed 1: best last step grpo" in algorithms.verdict([_seed_row(1, 0.7, 0.8, 0.4)])


@pytest.mark.parametrize(
    "warmup,more,tolerance,expected",
    [
        (0.80, {"0.1": 0.81, "1": 0.75}, 0.02, True),
        (0.80, {"0.1": 0.83, "1": 0.75}, 0.02, False),
        (0.80, {"0.1": 0.70, "1": 0.60}, 0.0, True),
    ],
)
def test_saturation(warmup, more, tolerance, expected):
    report = saturated.saturation(warmup, more, tolerance)
    assert report["saturated"] is expected
    assert report["more_sft_best_lr_scale"] == "0.1"


@pytest.mark.slow
def test_plain_data_is_three_number_sums_worked_step_by_step(tmp_path):
    folder = saturated.make_plain_data(tmp_path / "plain", 50, 10, seed=0)
    rows = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 50
    for row in rows:
        numbers = row["messages"][-1]["content"].removesuffix("=?").split("+")
        steps = row["solution"].split(" #### ")[0].split(". ")
        assert len(numbers) == 3 and len(steps) == 2, row  # two additions, each on its own step
        assert 10 <= int(numbers[0]) <= 99 and all(1 <= int(n) <= 9 for n in numbers[1:]), row
        assert int(row["reference_answer"]) == sum(map(int, numbers))


@pytest.mark.slow
def test_algorithms_bench_runs_on_the_tiny_recipe(tmp_path):
    """The whole bench path on recipes/tiny-test.yaml: one warm-up, three arms, a table."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "algorithms.py"),
            "--recipe",
            str(ROOT / "recipes" / "tiny-test.yaml"),
            "--seeds",
            "1",
            "--calibration-steps",
            "2",
            "--out",
            str(tmp_path),
        ],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (row,) = json.loads((tmp_path / "results.json").read_text())
    assert set(row["arms"]) == {"ppo", "grpo", "rloo"}
    assert row["arms"]["ppo"]["steps"] == 3
    assert all(a["sampled_tokens"] > 0 and a["rl_s"] > 0 for a in row["arms"].values())
    assert "| mean | rloo |" in proc.stdout
