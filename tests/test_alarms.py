"""Alarms: each detector on constructed metric streams (fires, and stays quiet on a healthy run),
raised once, only on RL lines, configurable, and stop_on wired through the logger."""

from __future__ import annotations

import json
import math
import random

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.config import AlarmSettings, parse_run_config
from rft_cli.errors import ConfigError
from rft_cli.run_folder.alarms import (
    ALARM_NAMES,
    DETECTORS,
    MEANINGS,
    AlarmMonitor,
    AlarmStop,
    WatchingLogger,
    rewards_differ,
    scan_metrics,
)
from rft_cli.run_folder.metrics import JsonlMetricsLogger, read_metrics


def healthy(steps: int = 100, seed: int = 0) -> list[dict]:
    """A run shaped like recipes/arith-cpu.yaml's PPO stage (bench/notes/2026-11-arith-exploration.md Phase 4 and a 40-step
    run of the recipe): reward climbs from ~0.3 to ~0.95, answers grow from ~30 to ~43 tokens as
    the policy moves to the step-by-step form, entropy ~0.1 drifting down, KL up to a few nats,
    validation every 25 steps with a late dip of 7 points (seed 1: 97.25% -> 90.5%)."""
    rng = random.Random(seed)
    valid = {25: 0.955, 50: 0.9725, 75: 0.9525, 100: 0.905}
    records = []
    for step in range(1, steps + 1):
        progress = step / steps
        reward = min(0.3 + 0.65 * progress + rng.uniform(-0.08, 0.08), 1.0)
        record = {
            "stage": "rl",
            "step": step,
            "train_reward_mean": reward,
            "train_reward_std": 0.0 if rng.random() < 0.1 else 0.2 + rng.uniform(0, 0.2),
            "kl": 0.7
            * step
            / 10
            * (1 + rng.uniform(-0.3, 0.3))
            / 40,  # per token, ~40 tokens an answer
            "entropy": 0.1 - 0.05 * progress,
            "response_length_mean": 30 + 13 * progress + rng.uniform(-2, 2),
            "truncated_share": 0.016 if rng.random() < 0.2 else 0.0,
            "grader_error_share": 0.0,
        }
        if step in valid:
            record["valid_reward_mean"] = valid[step]
        records.append(record)
    return records


def with_values(records: list[dict], key: str, values) -> list[dict]:
    return [{**r, key: values(r["step"])} for r in records]


def names(records: list[dict], **settings) -> list[str]:
    return [a.name for a in scan_metrics(records, AlarmSettings(**settings))]


def test_every_alarm_has_a_detector_and_a_meaning():
    assert set(DETECTORS) == set(MEANINGS) == set(ALARM_NAMES)


@pytest.mark.parametrize("seed", range(5))
def test_a_healthy_run_like_the_default_recipe_raises_nothing(seed):
    assert names(healthy(seed=seed)) == []


def test_reward_hacking_fires_when_validation_falls_while_training_rises():
    records = healthy()
    for r in records:
        r["train_reward_mean"] = 0.3 + 0.6 * r["step"] / 100
    valid = {25: 0.6, 50: 0.7, 75: 0.52, 100: 0.4}
    records = [
        {**r, "valid_reward_mean": valid[r["step"]]} if r["step"] in valid else r for r in records
    ]
    alarms = scan_metrics(records, AlarmSettings())
    assert [(a.name, a.step) for a in alarms] == [("reward_hacking", 75)]
    assert "fell 0.180 since step 50" in alarms[0].message


def test_reward_hacking_stays_quiet_when_training_reward_falls_too():
    records = healthy()
    for r in records:
        r["train_reward_mean"] = 0.9 - 0.5 * r["step"] / 100
    valid = {25: 0.6, 50: 0.7, 75: 0.5, 100: 0.3}
    records = [
        {**r, "valid_reward_mean": valid[r["step"]]} if r["step"] in valid else r for r in records
    ]
    assert "reward_hacking" not in names(records)  # the run is getting worse, not hacking


def test_length_growth_fires_past_the_multiple_of_the_start():
    records = with_values(healthy(), "response_length_mean", lambda step: 30 + 2 * step)
    alarms = scan_metrics(records, AlarmSettings())
    first = next(a for a in alarms if a.name == "length_growth")
    # window 5: start = mean(32..40) = 36; fires once the last five average 2.5 x 36 = 90 (steps 28-32)
    assert first.step == 32
    assert (
        names(
            with_values(healthy(), "response_length_mean", lambda step: 30 + 2 * step),
            length_multiple=10,
        )
        == []
    )


def test_truncation_rise_fires_and_stays_quiet():
    rising = with_values(healthy(), "truncated_share", lambda step: min(step / 50, 1.0))
    assert "truncation_rise" in names(rising)
    flat_high = with_values(
        healthy(), "truncated_share", lambda step: 0.9
    )  # truncated from the start: not a rise
    assert "truncation_rise" not in names(flat_high)


def test_no_signal_needs_that_many_steps_in_a_row():
    records = with_values(
        healthy(), "train_reward_std", lambda step: 0.0 if 40 <= step < 49 else 0.3
    )
    assert "no_signal" not in names(records)  # 9 steps in a row, the default asks for 10
    records = with_values(healthy(), "train_reward_std", lambda step: 0.0 if step >= 40 else 0.3)
    assert [(a.name, a.step) for a in scan_metrics(records, AlarmSettings())] == [("no_signal", 49)]


def test_no_signal_fires_when_every_answer_scores_the_same_partial_credit(tmp_path):
    """Regression (issue 27): sixteen rewards of 0.1 have a float32 std of 7.7e-9, not 0, which
    was above the alarm's 1e-9 threshold: a real model's steps where every answer got the same
    partial credit raised nothing, and `rft report --fail-on-alarm` exited 0."""
    import torch

    for value in (0.1, 100.3):
        spread = torch.full((16,), value).std().item()  # as PPO and TRL log train_reward_std
        assert spread > 1e-9  # float32 rounding
        records = [
            {"stage": "rl", "step": step, "train_reward_mean": value, "train_reward_std": spread}
            for step in range(1, 11)
        ]
        path = _metrics_file(tmp_path / str(value) / "metrics.jsonl", records)
        result = CliRunner().invoke(app, ["report", str(path.parent), "--fail-on-alarm"])
        assert result.exit_code == 3 and "alarm no_signal at rl step 10" in result.output, value


def test_rewards_differ_above_float_noise_at_their_scale():
    import torch

    assert not rewards_differ(torch.full((1024,), 0.7).std().item(), 0.7)
    assert not rewards_differ(torch.full((64,), 12345.6).std().item(), 12345.6)
    assert rewards_differ(torch.tensor([0.1] * 15 + [0.2]).std().item(), 0.10625)
    assert rewards_differ(1e-3, None) and not rewards_differ(0.0, float("nan"))


def test_entropy_collapse_fires_below_the_fraction_of_the_start():
    records = with_values(healthy(), "entropy", lambda step: 0.1 * math.exp(-step / 10))
    assert "entropy_collapse" in names(records)
    assert "entropy_collapse" not in names(records, entropy_fraction=1e-6)


def test_kl_high_fires_above_the_bound():
    records = with_values(healthy(), "kl", lambda step: step / 30)
    alarm = next(a for a in scan_metrics(records, AlarmSettings()) if a.name == "kl_high")
    assert alarm.step == 33  # mean of steps 29-33 is 31/30 > 1
    assert "kl_high" not in names(records, kl_max=1000)


def test_kl_high_reads_the_per_token_kl_of_every_algorithm():
    """Regression (issue 27): PPO's `kl` was the summed log-ratio per answer, TRL's per token, both
    held to one bound. Now `kl` is per token (RLOO: `kl_logratio`); an older PPO run's per-answer
    `kl` (known by its `kl_coef` without `kl_sum`) is not read as per-token."""
    rloo = [{k: v for k, v in r.items() if k != "kl"} for r in healthy()]
    assert "kl_high" not in names(with_values(rloo, "kl_logratio", lambda step: 0.01))
    alarm = next(
        a
        for a in scan_metrics(
            with_values(rloo, "kl_logratio", lambda step: step / 30), AlarmSettings()
        )
        if a.name == "kl_high"
    )
    assert alarm.step == 33 and alarm.message.startswith("kl_logratio 1.03")
    older_ppo = with_values(healthy(), "kl", lambda step: 5.0)  # nats per answer
    assert "kl_high" in names(older_ppo)  # read as per-token
    older_ppo = with_values(older_ppo, "kl_coef", lambda step: 0.02)
    assert "kl_high" not in names(older_ppo)  # an older PPO line: its `kl` is kl_sum


def test_grader_errors_fire_when_the_share_rises():
    records = with_values(healthy(), "grader_error_share", lambda step: 0.0 if step < 50 else 0.2)
    # the last five steps average 0.2 * k / 5 at step 49 + k: 0.12 >= 0.1 at step 52
    assert [(a.name, a.step) for a in scan_metrics(records, AlarmSettings())] == [
        ("grader_errors", 52)
    ]
    steady = with_values(healthy(), "grader_error_share", lambda step: 0.02)
    assert "grader_errors" not in names(steady)


def test_an_alarm_is_raised_once_and_only_for_rl_lines():
    monitor = AlarmMonitor(AlarmSettings(no_signal_steps=2))
    sft = {"stage": "sft", "step": 1, "train_reward_std": 0.0}
    assert monitor.check(sft) == [] and monitor.check(sft) == []
    raised = [
        monitor.check({"stage": "rl", "step": s, "train_reward_std": 0.0}) for s in range(1, 6)
    ]
    assert [[a.name for a in r] for r in raised] == [[], ["no_signal"], [], [], []]


def test_disabled_and_enabled_switch_detectors_off():
    records = with_values(healthy(), "kl", lambda step: step)
    assert "kl_high" not in names(records, disabled=["kl_high"])
    assert names(records, enabled=False) == []


def test_unknown_alarm_names_in_the_config_are_refused(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"prompt": "1+1=", "completion": "2"}\n')
    base = {
        "model": {"tiny": "llama-test"},
        "data": {"train": str(tmp_path / "x.jsonl")},
        "grader": {"type": "string_check"},
    }
    with pytest.raises(ConfigError, match="alarms.stop_on.*unknown alarm 'length'.*length_growth"):
        parse_run_config({**base, "alarms": {"stop_on": ["length"]}}, source="run.yaml")
    config = parse_run_config(
        {**base, "alarms": {"stop_on": ["length_growth"], "kl_max": 5}}, source="run.yaml"
    )
    assert config.alarms.stop_on == ["length_growth"] and config.samples.per_step == 16


def test_the_watching_logger_writes_the_alarm_on_its_line_then_stops(tmp_path):
    path = tmp_path / "metrics.jsonl"
    logger = WatchingLogger(
        JsonlMetricsLogger(path),
        AlarmMonitor(AlarmSettings(no_signal_steps=2, stop_on=["no_signal"])),
    )
    logger.log({"stage": "rl", "step": 1, "train_reward_std": 0.0})
    logger.raise_pending_stop()  # nothing to stop for yet
    logger.log({"stage": "rl", "step": 2, "train_reward_std": 0.0})
    with pytest.raises(AlarmStop) as stopped:
        logger.raise_pending_stop()
    logger.close()
    assert stopped.value.alarm.name == "no_signal" and stopped.value.alarm.step == 2
    lines = read_metrics(path)
    assert "alarms" not in lines[0]
    assert [a["name"] for a in lines[1]["alarms"]] == ["no_signal"] and lines[1]["alarms"][0][
        "meaning"
    ]


def _metrics_file(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_rft_report_lists_alarms_and_fails_ci_on_request(tmp_path):
    hacked = _metrics_file(
        tmp_path / "hacked" / "metrics.jsonl",
        with_values(healthy(), "response_length_mean", lambda step: 30 + 2 * step),
    )
    result = CliRunner().invoke(app, ["report", str(hacked.parent)])
    assert result.exit_code == 0, result.output
    assert "alarm length_growth at rl step 32" in result.output
    result = CliRunner().invoke(app, ["report", str(hacked), "--fail-on-alarm", "--format", "json"])
    assert result.exit_code == 3, result.output
    document = json.loads(result.output)
    assert [a["name"] for a in document["runs"][0]["alarms"]] == ["length_growth"]
    clean = _metrics_file(tmp_path / "clean" / "metrics.jsonl", healthy())
    result = CliRunner().invoke(app, ["report", str(clean.parent), "--fail-on-alarm"])
    assert result.exit_code == 0 and "alarms: none" in result.output


def test_rft_report_uses_the_run_config_thresholds(tmp_path):
    run = _metrics_file(
        tmp_path / "run" / "metrics.jsonl",
        with_values(healthy(), "response_length_mean", lambda step: 30 + 2 * step),
    ).parent
    (run / "config.yaml").write_text("alarms:\n  length_multiple: 10\n")
    result = CliRunner().invoke(app, ["report", str(run), "--fail-on-alarm"])
    assert result.exit_code == 0 and "alarms: none" in result.output


# -- valid_regression and the early-stop watch ------------------------------------------------------


def _eval_lines(pairs):
    return [
        {"stage": "rl", "step": i + 1, "valid_reward_mean": v, "valid_best_reward_mean": b}
        for i, (v, b) in enumerate(pairs)
    ]


@pytest.mark.parametrize(
    "pairs,raised",
    [
        ([(0.8, 0.9), (0.79, 0.9)], True),  # two evaluations 0.1 or more below the best
        ([(0.8, 0.9), (0.85, 0.9)], False),  # the second is only 0.05 below
        ([(0.5, 0.9)], False),  # one evaluation is not a trend
        ([(0.5, 0.9), (0.9, 0.9), (0.5, 0.9)], False),  # the run came back in between
    ],
)
def test_valid_regression_needs_consecutive_evaluations_far_below_the_best(pairs, raised):
    alarms = scan_metrics(_eval_lines(pairs), AlarmSettings())
    assert ("valid_regression" in [a.name for a in alarms]) is raised


def test_valid_regression_ignores_runs_that_log_no_best():
    lines = [{"stage": "rl", "step": s, "valid_reward_mean": 0.1} for s in (1, 2, 3)]
    assert scan_metrics(lines, AlarmSettings()) == []


def test_the_watch_counts_the_start_and_a_resumed_runs_evaluations():
    from rft_cli.run_folder.alarms import RegressionWatch

    watch = RegressionWatch(AlarmSettings(), start_score=0.9)
    assert watch.observe(0.95, 1) == {"valid_best_reward_mean": 0.95}
    assert watch.observe(0.8, 2) == {"valid_best_reward_mean": 0.95} and watch.should_stop() is None
    watch.observe(0.85, 3)
    assert "0.850 is 0.100 below the best 0.950" in watch.should_stop()
    # primed from a resumed run's metrics lines (SFT lines ignored): the same decision
    earlier = [
        {"stage": "sft", "step": 9, "valid_reward_mean": 0.1},
        *(
            {"stage": "rl", "step": s, "valid_reward_mean": v}
            for s, v in ((1, 0.95), (2, 0.8), (3, 0.85))
        ),
    ]
    assert RegressionWatch(AlarmSettings(), 0.9, earlier).should_stop() is not None
    assert RegressionWatch(AlarmSettings(), None, earlier[:2]).best == 0.95
    assert RegressionWatch(AlarmSettings(early_stop=[]), 0.9, earlier).should_stop() is None
    assert (
        RegressionWatch(AlarmSettings(disabled=["valid_regression"]), 0.9, earlier).should_stop()
        is None
    )
    assert RegressionWatch(AlarmSettings(regression_evals=3), 0.9, earlier).should_stop() is None


def test_early_stop_takes_only_alarms_every_process_can_decide_alike(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"prompt": "1+1=", "completion": "2"}\n')
    base = {
        "model": {"tiny": "llama-test"},
        "data": {"train": str(tmp_path / "x.jsonl")},
        "grader": {"type": "string_check"},
    }
    with pytest.raises(ConfigError, match="'kl_high' cannot end a run early.*valid_regression"):
        parse_run_config({**base, "alarms": {"early_stop": ["kl_high"]}}, source="run.yaml")
