"""final/ is the best validated model, the one RL started from included (rl.final: best, the default).

The training tests replace the validation with scripted scores, so which checkpoint wins is known
in advance; the weights in final/ are then compared with the winner's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rft_cli.config import load_run_config
from rft_cli.run_folder import checkpoints as ckpt
from rft_cli.training import ppo as ppo_module
from rft_cli.training import sft as sft_module
from rft_cli.training.run import train
from tests.train_fakes import SevensGrader

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-test.yaml"


def _write(tmp: Path) -> None:
    (tmp / "weights.bin").write_bytes(b"x")


def _checkpoint(folder: Path, score: float | None) -> Path:
    return ckpt.write_checkpoint(folder, _write, {"step": 0, "valid_reward_mean": score})


@pytest.mark.parametrize(
    "start_score,steps,expected",
    [
        (0.9, {1: 0.5, 2: 0.7}, "sft"),  # validation only fell: the start comes back
        (0.5, {1: 0.5, 2: 0.7}, "step-2"),
        (0.7, {1: 0.5, 2: 0.7}, "step-2"),  # a tie goes to the trained model
        (0.7, {1: 0.8, 2: 0.8}, "step-2"),  # and to the later step
        (
            None,
            {1: 0.2, 2: None},
            "step-1",
        ),  # an unscored start or step never wins over a scored one
        (0.4, {1: None, 2: None}, "sft"),
        (None, {1: None, 2: None}, "step-2"),  # nothing scored: the latest step, as rl.final: last
    ],
)
def test_best_checkpoint_counts_the_start_as_a_candidate(tmp_path, start_score, steps, expected):
    start = _checkpoint(tmp_path / "sft", start_score)
    for step, score in steps.items():
        _checkpoint(tmp_path / f"step-{step}", score)
    assert ckpt.best_checkpoint(tmp_path, start).name == expected


def test_best_checkpoint_without_any_step_is_the_start(tmp_path):
    assert ckpt.best_checkpoint(tmp_path, _checkpoint(tmp_path / "sft", None)).name == "sft"
    assert ckpt.best_checkpoint(tmp_path / "none") is None


def test_beats_saved_only_for_a_strictly_higher_score(tmp_path):
    assert ckpt.beats_saved(tmp_path, 0.1) and not ckpt.beats_saved(tmp_path, None)
    _checkpoint(tmp_path / "step-2", 0.5)
    _checkpoint(tmp_path / "step-4", None)
    assert ckpt.beats_saved(tmp_path, 0.6)
    assert not ckpt.beats_saved(tmp_path, 0.5) and not ckpt.beats_saved(tmp_path, 0.2)


# -- training with scripted validation scores ----------------------------------------------------------


def _script_validation(monkeypatch, start: float, by_step: dict[int, float]) -> None:
    """The warm-up (or base model) scores `start`; RL step N scores by_step[N]."""
    monkeypatch.setattr(
        sft_module, "evaluate_sft", lambda ctx, model, tokenizer, step=0: _scores(start)
    )

    def evaluate(self):
        return _scores(by_step[self.state.step])

    monkeypatch.setattr(ppo_module.PPOTrainer, "evaluate", evaluate)


def _scores(value: float) -> dict[str, float]:
    return {"valid_reward_mean": value, "valid_accuracy": value}


def _run(tmp_path: Path, *overrides: str):
    # The sevens grader's rewards differ between answers from the first step, so PPO moves the weights.
    config = load_run_config(
        RECIPE, ["grader_check.enabled=false", *overrides]
    )  # the sevens grader fails the demonstrations
    return train(config, output_dir=tmp_path / "run", grader=SevensGrader())


def _same_weights(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return left.keys() == right.keys() and all(bool((left[k] == right[k]).all()) for k in left)


@pytest.mark.slow
def test_a_run_whose_validation_falls_hands_back_its_warm_up(tmp_path, monkeypatch):
    _script_validation(monkeypatch, 0.9, {2: 0.5, 3: 0.4})
    result = _run(tmp_path)
    run_dir, summary = result.run_dir, result.summary
    assert summary["final_source"] == "start" and summary["final_checkpoint"] == "checkpoints/sft"
    assert summary["final_valid_reward_mean"] == summary["start_valid_reward_mean"] == 0.9
    assert _same_weights(run_dir / "final", run_dir / "checkpoints" / "sft")
    assert not _same_weights(run_dir / "final", run_dir / "checkpoints" / "step-3")


@pytest.mark.slow
def test_rl_final_last_keeps_the_last_step(tmp_path, monkeypatch):
    _script_validation(monkeypatch, 0.9, {2: 0.5, 3: 0.4})
    result = _run(tmp_path, "rl.final=last")
    assert (
        result.summary["final_source"] == "step-3"
        and result.summary["start_valid_reward_mean"] == 0.9
    )
    assert (
        result.summary["final_valid_reward_mean"] == result.summary["final_valid_accuracy"] == 0.4
    )
    assert _same_weights(result.run_dir / "final", result.run_dir / "checkpoints" / "step-3")


@pytest.mark.slow
def test_a_best_step_between_saves_is_saved_and_survives_pruning(tmp_path, monkeypatch):
    """Step 2 is evaluated but not a save step (save_interval 10); as a new best it is saved, and
    keep_checkpoints: 1 keeps it beside the latest, so final/ is step 2."""
    _script_validation(monkeypatch, 0.2, {2: 0.8, 4: 0.6, 6: 0.3})
    result = _run(tmp_path, "rl.steps=6", "save_interval=10")
    steps = [n for n, _ in ckpt.step_checkpoints(result.run_dir / "checkpoints")]
    assert steps == [2, 6]  # step 4 was a new best of nothing: not saved; step 6 is the last
    assert (
        result.summary["final_source"] == "step-2"
        and result.summary["final_valid_reward_mean"] == 0.8
    )
    assert result.summary["final_valid_accuracy"] == 0.8
    assert result.summary["start_valid_reward_mean"] == 0.2
    assert _same_weights(result.run_dir / "final", result.run_dir / "checkpoints" / "step-2")
    # the 4 validation rows after the 4 that chose final/ score it (a real greedy evaluation)
    assert result.summary["heldout_rows"] == 4
    assert 0.0 <= result.summary["final_heldout_reward_mean"] <= 1.0


def test_final_is_scored_on_the_validation_rows_that_did_not_choose_it(tmp_path, monkeypatch):
    """Issue 25: final/ was reported only on the rows that chose it (the luckiest of many
    checkpoints on those rows); summary.json now adds its score on the next eval.samples rows."""
    from rft_cli.run_folder.metrics import NullLogger
    from rft_cli.training import context, final
    from rft_cli.training.context import RunContext

    rows = [
        {"messages": [{"role": "user", "content": f"{i}"}], "answer": str(i)} for i in range(10)
    ]
    config = load_run_config(RECIPE, ["eval.samples=4"])
    ctx = RunContext(config, tmp_path, [], rows, "grader", NullLogger())
    graded = []

    def evaluate_greedy(model, tokenizer, grader, rows, **kwargs):
        graded.extend(rows)
        return {"valid_reward_mean": 0.25, "valid_accuracy": 0.25}

    monkeypatch.setattr(context, "evaluate_greedy", evaluate_greedy)
    monkeypatch.setattr(
        "rft_cli.generation.load_model_for_inference", lambda folder: ("model", "tokenizer")
    )
    assert final.score_held_out(ctx, tmp_path / "final") == {
        "final_heldout_reward_mean": 0.25,
        "final_heldout_accuracy": 0.25,
        "heldout_rows": 4,
    }
    assert graded == rows[4:8]
    ctx.valid_rows = rows[:4]  # every validation row chose final/: nothing held out
    assert final.score_held_out(ctx, tmp_path / "final")["final_heldout_reward_mean"] is None


@pytest.mark.slow
def test_without_a_warm_up_the_base_model_is_the_start(tmp_path, monkeypatch):
    _script_validation(monkeypatch, 0.7, {2: 0.1, 3: 0.1})
    result = _run(tmp_path, "sft.enabled=false")
    base = result.run_dir / "checkpoints" / "base"
    assert ckpt.read_meta(base)["valid_reward_mean"] == 0.7
    assert (
        result.summary["final_source"] == "start"
        and result.summary["final_checkpoint"] == "checkpoints/base"
    )
    assert _same_weights(result.run_dir / "final", base)


@pytest.mark.parametrize(
    "summary,expected",
    [
        (
            {
                "final_source": "step-50",
                "final_valid_reward_mean": 0.97,
                "start_valid_reward_mean": 0.85,
            },
            ", valid_reward_mean 0.97, start 0.85",
        ),
        (
            {
                "final_source": "start",
                "final_valid_reward_mean": 0.85,
                "start_valid_reward_mean": 0.85,
            },
            ", valid_reward_mean 0.85",
        ),
        (
            {
                "final_source": "step-3",
                "final_valid_reward_mean": None,
                "start_valid_reward_mean": None,
            },
            "",
        ),
        (
            {
                "final_source": "step-50",
                "final_valid_reward_mean": 0.97,
                "start_valid_reward_mean": 0.85,
                "final_heldout_reward_mean": 0.91,
                "heldout_rows": 64,
            },
            ", valid_reward_mean 0.97, start 0.85, held-out 0.91 on 64 rows",
        ),
    ],
)
def test_the_final_line_shows_the_score_beside_the_start(summary, expected):
    from rft_cli.cli.train import _scores

    assert _scores(summary) == expected


# -- ending RL early when validation only falls (alarms.early_stop: [valid_regression], the default) ---


@pytest.mark.slow
def test_a_run_whose_validation_keeps_falling_stops_early_with_its_warm_up(tmp_path, monkeypatch):
    from rft_cli.run_folder.metrics import read_metrics

    _script_validation(monkeypatch, 0.9, {1: 0.85, 2: 0.7, 3: 0.75, 4: 0.2, 5: 0.2, 6: 0.2})
    result = _run(tmp_path, "rl.steps=6", "eval.interval=1")
    summary, run_dir = result.summary, result.run_dir
    # steps 2 and 3 are both 0.1 or more below the start's 0.9: the run ends after step 3
    assert (
        summary["stopped"]["early_stop"] == "valid_regression" and summary["stopped"]["step"] == 3
    )
    assert (
        "0.750 is 0.150 below the best 0.900, 2 evaluations in a row"
        in summary["stopped"]["reason"]
    )
    assert [n for n, _ in ckpt.step_checkpoints(run_dir / "checkpoints")][-1] == 3
    rl = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("stage") == "rl"]
    assert [r["step"] for r in rl] == [1, 2, 3]
    assert [r["valid_best_reward_mean"] for r in rl] == [0.9, 0.9, 0.9]
    assert [a["name"] for a in rl[-1]["alarms"]] == ["valid_regression"]
    assert summary["final_source"] == "start" and _same_weights(
        run_dir / "final", run_dir / "checkpoints" / "sft"
    )

    # a resume of the stopped run stops again at once: no further steps, the same final/
    config = load_run_config(
        RECIPE, ["grader_check.enabled=false", "rl.steps=6", "eval.interval=1"]
    )
    again = train(config, output_dir=run_dir, grader=SevensGrader(), resume=True)
    assert again.summary["stopped"]["step"] == 3 and again.summary["final_source"] == "start"
    assert [
        r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if r.get("stage") == "rl"
    ] == [1, 2, 3]


@pytest.mark.slow
def test_early_stop_off_runs_every_step(tmp_path, monkeypatch):
    _script_validation(monkeypatch, 0.9, {1: 0.2, 2: 0.2, 3: 0.2, 4: 0.2})
    result = _run(tmp_path, "rl.steps=4", "eval.interval=1", "alarms.early_stop=[]")
    assert result.summary["stopped"] is None and result.summary["stages"]["rl"]["steps"] == 4
    assert result.summary["final_source"] == "start"


@pytest.mark.slow
def test_a_dip_that_recovers_does_not_stop_the_run(tmp_path, monkeypatch):
    _script_validation(monkeypatch, 0.5, {1: 0.6, 2: 0.45, 3: 0.7, 4: 0.55, 5: 0.8})
    result = _run(tmp_path, "rl.steps=5", "eval.interval=1")
    assert result.summary["stopped"] is None and result.summary["final_source"] == "step-5"
