"""Alarms: detectors over the metrics stream for the ways RL fails while the loss looks fine.

Each detector has a name, a plain-language meaning and thresholds in the run config's `alarms:`
section. They read only metrics lines (flat dicts with `stage` and `step`), so the same code runs
live during `rft train` and afterwards over any `metrics.jsonl` (`rft report`).

    monitor = AlarmMonitor(AlarmSettings())
    for record in records:
        for alarm in monitor.check(record):
            print(alarm.name, alarm.step, alarm.message)

Only RL lines are watched: the warm-up has no rewards, and its entropy falling is the point of it.
An alarm is raised once per run, at the first step its condition holds.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from rft_cli.run_folder.metrics import with_current_names

# name -> what it means, in the words a user reads on stderr and in `rft report`.
MEANINGS = {
    "reward_hacking": "the validation reward fell while the training reward rose: the policy may be pleasing the "
    "grader instead of solving the task; read the samples of both",
    "length_growth": "answers grew much longer than at the start of RL: the grader may reward length",
    "truncation_rise": "more answers hit max_new_tokens than at the start of RL: answers run on instead of ending",
    "no_signal": "every answer of a step scored the same, step after step: no reward difference, nothing to learn",
    "entropy_collapse": "the policy's entropy fell far below its starting value: sampling has become nearly "
    "deterministic and exploration stopped",
    "kl_high": "the policy moved far from the reference model (KL above the bound): raise rl.kl_coef",
    "grader_errors": "the share of answers whose grading failed rose: the grader breaks on what the model now writes",
    "valid_regression": "the validation reward fell far below its best (the starting model's included), evaluation "
    "after evaluation: training is making the model worse; final/ keeps the best model",
    "tool_call_growth": "episodes make many more tool calls than at the start of RL: the reward may pay for calls, "
    "or the model loops on a tool; read the episodes in the samples",
    "tool_errors": "the share of tool calls that return an error rose: the model calls tools wrongly, or a tool "
    "started failing; read the episodes in the samples",
}
ALARM_NAMES = tuple(MEANINGS)


@dataclass
class Alarm:
    """One raised alarm: which detector, where, and the figures that raised it."""

    name: str
    stage: str
    step: int
    message: str

    @property
    def meaning(self) -> str:
        return MEANINGS[self.name]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "meaning": self.meaning}


class MetricStream:
    """The finite values of each metric, with their steps, kept as lines arrive (so each check is
    cheap however long the run: detectors look at the first and last few values)."""

    def __init__(self) -> None:
        self._steps: dict[str, list[int]] = {}
        self._values: dict[str, list[float]] = {}

    def add(self, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
            ):
                self._steps.setdefault(key, []).append(record["step"])
                self._values.setdefault(key, []).append(float(value))

    def values(self, key: str) -> list[float]:
        return self._values.get(key, [])

    def steps(self, key: str) -> list[int]:
        return self._steps.get(key, [])

    def value_at(self, key: str, step: int) -> float | None:
        """The value logged at `step` (None when that line has none)."""
        steps = self.steps(key)
        i = bisect.bisect_left(steps, step)
        return self.values(key)[i] if i < len(steps) and steps[i] == step else None

    def values_until(self, key: str, step: int) -> list[float]:
        """Values logged at or before `step`."""
        return self.values(key)[: bisect.bisect_right(self.steps(key), step)]


# The std of equal rewards is float32 rounding noise, not 0 (sixteen rewards of 0.1: 7.45e-9), and
# the noise grows with the rewards' magnitude: a spread within this share of max(1, |mean|) is none.
CONSTANT_REWARD_TOLERANCE = 1e-6


def rewards_differ(std: float, mean: float | None = None) -> bool:
    """Whether a step's rewards differ: their std is above float rounding noise at their scale.

    >>> rewards_differ(7.45e-9, 0.1), rewards_differ(6e-6, 100.0), rewards_differ(0.3, 0.5)
    (False, False, True)
    """
    scale = max(1.0, abs(mean)) if mean is not None and math.isfinite(mean) else 1.0
    return std > CONSTANT_REWARD_TOLERANCE * scale


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _start_and_now(stream: MetricStream, key: str, window: int) -> tuple[float, float] | None:
    """Mean of the first `window` values and of the last `window` (None until 2 windows exist)."""
    values = stream.values(key)
    if len(values) < 2 * window:
        return None
    return _mean(values[:window]), _mean(values[-window:])


def detect_reward_hacking(stream: MetricStream, s: Any) -> str | None:
    evals = list(
        zip(stream.steps("valid_reward_mean"), stream.values("valid_reward_mean"), strict=True)
    )[-s.eval_window :]
    if len(evals) < 2:
        return None
    peak_step, peak = max(evals[:-1], key=lambda e: e[1])
    drop = peak - evals[-1][1]
    train_then = stream.values_until("train_reward_mean", peak_step)[-s.window :]
    train_now = stream.values("train_reward_mean")[-s.window :]
    if not train_then or not train_now or drop < s.valid_drop:
        return None
    rise = _mean(train_now) - _mean(train_then)
    if rise < s.train_rise:
        return None
    return (
        f"valid_reward_mean fell {drop:.3f} since step {peak_step} ({peak:.3f} -> {evals[-1][1]:.3f}) "
        f"while train_reward_mean rose {rise:.3f}"
    )


def detect_length_growth(stream: MetricStream, s: Any) -> str | None:
    pair = _start_and_now(stream, "response_length_mean", s.window)
    if pair is None or pair[0] <= 0 or pair[1] < s.length_multiple * pair[0]:
        return None
    return (
        f"response_length_mean {pair[1]:.1f} tokens (last {s.window} steps) is {pair[1] / pair[0]:.2f}x its "
        f"start {pair[0]:.1f}, above alarms.length_multiple={s.length_multiple}"
    )


def _share_rose(
    stream: MetricStream, key: str, window: int, setting: str, rise: float
) -> str | None:
    """A share (0-1) whose mean over the last `window` steps rose `rise` or more over its start."""
    pair = _start_and_now(stream, key, window)
    if pair is None or pair[1] - pair[0] < rise:
        return None
    return (
        f"{key} {pair[1]:.2f} (last {window} steps) rose {pair[1] - pair[0]:.2f} from its start "
        f"{pair[0]:.2f}, above alarms.{setting}={rise}"
    )


def detect_truncation_rise(stream: MetricStream, s: Any) -> str | None:
    return _share_rose(stream, "truncated_share", s.window, "truncated_rise", s.truncated_rise)


def detect_no_signal(stream: MetricStream, s: Any) -> str | None:
    steps = stream.steps("train_reward_std")[-s.no_signal_steps :]
    stds = stream.values("train_reward_std")[-s.no_signal_steps :]
    if len(stds) < s.no_signal_steps or any(
        rewards_differ(std, stream.value_at("train_reward_mean", step))
        for step, std in zip(steps, stds, strict=True)
    ):
        return None
    return f"train_reward_std was 0 (up to float rounding) for the last {s.no_signal_steps} steps (alarms.no_signal_steps)"


def detect_entropy_collapse(stream: MetricStream, s: Any) -> str | None:
    pair = _start_and_now(stream, "entropy", s.window)
    if pair is None or pair[0] <= 0 or pair[1] > s.entropy_fraction * pair[0]:
        return None
    return (
        f"entropy {pair[1]:.4g} (last {s.window} steps) is {pair[1] / pair[0]:.1%} of its start {pair[0]:.4g}, "
        f"below alarms.entropy_fraction={s.entropy_fraction}"
    )


def detect_kl_high(stream: MetricStream, s: Any) -> str | None:
    # the per-token KL: k3 (PPO, GRPO), else RLOO's per-token log-ratio, an estimate of the same
    key = "kl" if stream.values("kl") else "kl_logratio"
    values = stream.values(key)[-s.window :]
    if len(values) < s.window or _mean(values) <= s.kl_max:
        return None
    return f"{key} {_mean(values):.3g} (mean of the last {s.window} steps) is above alarms.kl_max={s.kl_max}"


def detect_grader_errors(stream: MetricStream, s: Any) -> str | None:
    values = stream.values("grader_error_share")
    if len(values) < s.window:
        return None
    start = _mean(values[: s.window]) if len(values) >= 2 * s.window else 0.0
    now = _mean(values[-s.window :])
    if now - start < s.grader_error_rise:
        return None
    return (
        f"grader_error_share {now:.2f} (last {s.window} steps) rose {now - start:.2f} from {start:.2f}, "
        f"above alarms.grader_error_rise={s.grader_error_rise}"
    )


def detect_valid_regression(stream: MetricStream, s: Any) -> str | None:
    """The last `regression_evals` evaluations all scored `regression_drop` or more below the best
    score so far (`valid_best_reward_mean`, logged by the RL loops with the start's score in it)."""
    values, bests = stream.values("valid_reward_mean"), stream.values("valid_best_reward_mean")
    if len(bests) != len(values) or len(values) < s.regression_evals:  # older runs log no best
        return None
    recent = list(zip(values, bests, strict=True))[-s.regression_evals :]
    if any(
        best - value < s.regression_drop - 1e-9 for value, best in recent
    ):  # 1e-9: 0.9 - 0.8 < 0.1 in floats
        return None
    value, best = recent[-1]
    return (
        f"valid_reward_mean {value:.3f} is {best - value:.3f} below the best {best:.3f}, "
        f"{s.regression_evals} evaluations in a row (alarms.regression_drop={s.regression_drop})"
    )


def detect_tool_call_growth(stream: MetricStream, s: Any) -> str | None:
    """Episodes with tools: calls per episode now above `tool_call_multiple` times the start (a
    start under one call counts as one, so a model that starts with few calls may grow some)."""
    pair = _start_and_now(stream, "tool_calls_per_episode", s.window)
    if pair is None or pair[1] <= s.tool_call_multiple * max(pair[0], 1.0):
        return None
    return (
        f"tool_calls_per_episode {pair[1]:.2f} (last {s.window} steps) is above "
        f"alarms.tool_call_multiple={s.tool_call_multiple} times its start {pair[0]:.2f}"
    )


def detect_tool_errors(stream: MetricStream, s: Any) -> str | None:
    """Episodes with tools: the share of calls whose result was an error rose over its start."""
    return _share_rose(stream, "tool_error_share", s.window, "tool_error_rise", s.tool_error_rise)


DETECTORS: dict[str, Callable[[MetricStream, Any], str | None]] = {
    "reward_hacking": detect_reward_hacking,
    "length_growth": detect_length_growth,
    "truncation_rise": detect_truncation_rise,
    "no_signal": detect_no_signal,
    "entropy_collapse": detect_entropy_collapse,
    "kl_high": detect_kl_high,
    "grader_errors": detect_grader_errors,
    "valid_regression": detect_valid_regression,
    "tool_call_growth": detect_tool_call_growth,
    "tool_errors": detect_tool_errors,
}
# Alarms that may end the RL stage early as a normal finish (final/ = the best model, exit 0): only
# those computed from the validation scores, which every process of a multi-process run holds alike.
EARLY_STOP_ALARMS = ("valid_regression",)


class AlarmMonitor:
    """Feeds RL metrics lines to the detectors; each alarm is raised once, at its first step."""

    def __init__(self, settings: Any):
        self.settings = settings
        self.stream = MetricStream()
        self.raised: list[Alarm] = []

    def check(self, record: dict[str, Any]) -> list[Alarm]:
        """New alarms at this line (none for non-RL lines, when disabled, or when already raised)."""
        if (
            not self.settings.enabled
            or record.get("stage") != "rl"
            or not isinstance(record.get("step"), int)
        ):
            return []
        self.stream.add(with_current_names(record))  # an older run's PPO `kl` is its kl_sum
        done = {a.name for a in self.raised}
        new = []
        for name, detect in DETECTORS.items():
            if name in done or name in self.settings.disabled:
                continue
            message = detect(self.stream, self.settings)
            if message is not None:
                new.append(Alarm(name, "rl", record["step"], message))
        self.raised.extend(new)
        return new

    def replay(self, records: Iterable[dict[str, Any]]) -> list[Alarm]:
        """Feed earlier lines (a resumed run's, or a finished run's for `rft report`); returns all alarms."""
        for record in records:
            self.check(record)
        return list(self.raised)


def scan_metrics(records: Iterable[dict[str, Any]], settings: Any) -> list[Alarm]:
    """The alarms a metrics stream raises under `settings` (a config's `alarms`, `AlarmSettings()` for the defaults)."""
    return AlarmMonitor(settings).replay(records)


class RegressionWatch:
    """The best validation score so far (the starting model's included) and the early-stop check.

    Both RL loops feed it each evaluation on every process (evaluations are gathered, so every
    process sees the same scores and stops at the same step); `observe` returns the fields logged
    on the evaluation's metrics line, which the `valid_regression` alarm reads back.
    """

    def __init__(
        self, settings: Any, start_score: float | None, earlier: Iterable[dict[str, Any]] = ()
    ):
        self.settings, self.best = settings, start_score
        self.stream = MetricStream()
        for record in earlier:  # a resumed run's evaluations
            if record.get("stage") == "rl" and isinstance(
                record.get("valid_reward_mean"), (int, float)
            ):
                self.observe(float(record["valid_reward_mean"]), record.get("step", 0))

    def observe(self, score: float, step: int) -> dict[str, float]:
        self.best = score if self.best is None else max(self.best, score)
        fields = {"valid_best_reward_mean": self.best}
        self.stream.add({"step": step, "valid_reward_mean": score, **fields})
        return fields

    def should_stop(self) -> str | None:
        """The reason to end RL now, when `valid_regression` is in `alarms.early_stop`."""
        s = self.settings
        if (
            not s.enabled
            or "valid_regression" not in s.early_stop
            or "valid_regression" in s.disabled
        ):
            return None
        return detect_valid_regression(self.stream, s)


def stopping(alarms: list[Alarm], settings: Any) -> Alarm | None:
    """The first of `alarms` that `alarms.stop_on` names."""
    return next((a for a in alarms if a.name in settings.stop_on), None)


class AlarmStop(Exception):
    """Raised after a line whose alarm `alarms.stop_on` names is logged and shown."""

    def __init__(self, alarm: Alarm):
        super().__init__(alarm.message)
        self.alarm = alarm


class WatchingLogger:
    """Wraps the metrics logger: checks each line for alarms before it is written.

    A raised alarm goes on its line as `alarms: [{name, message, ...}]` (so the progress display
    and `metrics.jsonl` both see it); an alarm `stop_on` names is raised as AlarmStop by
    `raise_pending_stop`, which `RunContext.report` calls after the progress display.
    A samples write error is noted once, as `samples_error`, on the next line.
    """

    def __init__(self, inner: Any, monitor: AlarmMonitor, samples: Any = None):
        self.inner, self.monitor, self.samples = inner, monitor, samples
        self.pending_stop: Alarm | None = None

    def log(self, record: dict[str, Any]) -> None:
        problem = self.samples.take_problem() if self.samples is not None else None
        if problem:
            record["samples_error"] = problem
        alarms = self.monitor.check(record)
        if alarms:
            record["alarms"] = [a.to_dict() for a in alarms]
        self.inner.log(record)
        self.pending_stop = stopping(alarms, self.monitor.settings) or self.pending_stop

    def raise_pending_stop(self) -> None:
        """Raise AlarmStop for a logged stop_on alarm (called once the progress display has shown it)."""
        if self.pending_stop is not None:
            raise AlarmStop(self.pending_stop)

    def close(self) -> None:
        self.inner.close()


def alarms_in(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alarms logged on metrics lines (what a run raised live)."""
    return [a for r in records for a in (r.get("alarms") or []) if isinstance(a, dict)]
