"""What every training stage does around its steps, whoever computes them: the stage protocol.

The SFT warm-up, our PPO and TRL's GRPO and RLOO compute their steps differently; each step then
ends the same way, here, in this order:

1. the thread governor's tick (`rft_cli.threads`);
2. at `eval.interval` steps and the last, a greedy evaluation on the validation rows; in RL it
   feeds the regression watch (`early_stop`), which may end the stage early (never at its last
   step: that is a normal finish);
3. the metrics line: the step's own metrics, the evaluation, and the clocks (`stage_elapsed_s`, the
   stage's own across resumes; `elapsed_s`, the run's), written to `metrics.jsonl` and shown;
4. a numerical fault (a step PPO skipped, or a NaN/inf loss, KL, reward or gradient norm) is
   counted; `<stage>.max_numerical_faults` of them stop the run (exit 1). The count is kept in
   every checkpoint, so a resumed run does not get a fresh allowance;
5. a checkpoint when one is due: every `save_interval` steps, at the last step, on Ctrl-C, at an
   early stop, and in RL at a new best validation score under `rl.final: best`. It is named
   `<prefix><step>` (`step-N`, `sft-step-N`), its marker (`rft_meta.json`) records the step's score
   and the counters above; RL keeps the best `keep_checkpoints` (and the latest), the warm-up
   its latest alone;
6. after Ctrl-C that step is saved and the run stops (exit 130).

Our PPO drives the loop itself (`run_steps`); TRL's trainers drive theirs and reach this one
through `trl_bridge`'s callback. The protocol's counters (`StageProgress`) are saved in each
checkpoint: PPO's `trainer_state.json`, the marker of a TRL checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rft_cli import threads
from rft_cli.errors import TrainingError
from rft_cli.run_folder import checkpoints as ckpt
from rft_cli.training.early_stop import regression_watch, stop_note

STAGE_PREFIXES = {"sft": "sft-step-", "rl": "step-"}
# Metrics that are numerical faults when not finite (a TRL step trains on whatever it computed).
FAULT_KEYS = ("loss", "kl", "kl_logratio", "train_reward_mean", "grad_norm")


@dataclass
class StageProgress:
    """Where a stage stands, as each of its checkpoints records it."""

    step: int = 0
    numerical_faults: int = 0
    elapsed_s: float = 0.0  # the stage's own clock, evaluations included, across resumes
    last_valid: dict[str, float] | None = None

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> StageProgress:
        """The counters a checkpoint's marker holds (a marker written before they existed: 0)."""
        return cls(
            step=int(meta.get("step", 0)),
            numerical_faults=int(meta.get("numerical_faults", 0)),
            elapsed_s=float(meta.get("stage_elapsed_s", 0.0)),
        )


def non_finite(record: dict[str, Any]) -> str | None:
    """The step's numerical fault read off its metrics ("loss, kl not finite"), or None."""
    bad = [
        k
        for k in FAULT_KEYS
        if isinstance(record.get(k), (int, float)) and not math.isfinite(record[k])
    ]
    return f"{', '.join(bad)} not finite" if bad else None


def latest_checkpoint(checkpoints_dir: Path, prefix: str) -> Path | None:
    """The complete `<prefix><N>` folder with the highest N."""
    found = ckpt.step_checkpoints(checkpoints_dir, prefix)
    return found[-1][1] if found else None


class StageLoop:
    """The protocol of one stage's steps (module docstring), for whichever loop computes them.

    Args:
        ctx: the run's RunContext.
        stage: "sft" or "rl".
        steps: the stage's last step.
        progress: the counters so far (a resumed stage's, from its checkpoint).
        evaluate: `evaluate(model, step)` -> the validation fields; None: the stage does not
            evaluate between its steps (the warm-up evaluates once, at its end).
    """

    def __init__(
        self,
        ctx: Any,
        stage: str,
        steps: int,
        progress: StageProgress,
        evaluate: Callable[[Any, int], dict[str, float]] | None = None,
    ):
        self.ctx, self.stage, self.steps, self.progress = ctx, stage, steps, progress
        self.evaluate = evaluate
        self.prefix = STAGE_PREFIXES[stage]
        self.max_faults = getattr(ctx.config, stage).max_numerical_faults
        self.watch = regression_watch(ctx) if stage == "rl" and evaluate is not None else None
        self.started = time.perf_counter() - progress.elapsed_s
        self.stop_reason: str | None = None
        self.pending: dict[str, Any] = {}  # the evaluation's fields, for the step's metrics line
        self.scored: tuple[int, float] | None = (
            None  # (step, valid_reward_mean) of the last evaluation
        )

    # -- the clocks ------------------------------------------------------------------------------

    def stage_elapsed(self) -> float:
        """Seconds this stage has run, evaluations included, across resumes."""
        return time.perf_counter() - self.started

    def run_elapsed(self) -> float:
        """The run's cumulative seconds (the warm-up's before an RL stage)."""
        return (self.ctx.elapsed_before if self.stage == "rl" else 0.0) + self.stage_elapsed()

    # -- one step --------------------------------------------------------------------------------

    def stopped_before(self) -> bool:
        """Whether a resumed stage had already stopped early: then it ends again at once."""
        reason = self.watch.should_stop() if self.watch is not None else None
        if reason is not None:
            self.ctx.early_stop = stop_note(self.progress.step, reason)
        return reason is not None

    def tick(self) -> None:
        threads.tick()

    def end_step(self, step: int, model: Any = None) -> None:
        """Step `step` is computed: the governor's tick, then the evaluation when one is due."""
        self.tick()
        self.progress.step = step
        if self.evaluate is None or not self.ctx.valid_rows:
            return
        if step % self.ctx.config.eval.interval and step < self.steps:
            return
        started = time.perf_counter()
        valid = self.evaluate(model, step)
        self.progress.last_valid = valid
        self.scored = (step, valid["valid_reward_mean"])
        self.pending = {**valid, "eval_s": time.perf_counter() - started}
        if self.watch is not None:
            self.pending.update(self.watch.observe(valid["valid_reward_mean"], step))
            reason = self.watch.should_stop()
            if reason is not None and step < self.steps:
                self.stop_reason = reason

    def report(
        self, record: dict[str, Any], fault: str | None = None, hold: bool = False
    ) -> dict[str, Any]:
        """Complete the step's metrics line (evaluation, clocks) and write it, unless `hold` (the
        warm-up's last line waits for its evaluation); count `fault`, and stop past the budget."""
        record.update(self.pending)
        self.pending = {}
        self.progress.elapsed_s = self.stage_elapsed()
        record["stage_elapsed_s"] = self.progress.elapsed_s
        record["elapsed_s"] = self.run_elapsed()
        if fault is not None:
            self.progress.numerical_faults += 1
        stop = fault is not None and self.progress.numerical_faults >= self.max_faults
        if not hold or stop:
            self.ctx.report(record)
        if stop and fault is not None:
            raise self._fault_stop(record["step"], fault)
        return record

    def _fault_stop(self, step: int, fault: str) -> TrainingError:
        latest = latest_checkpoint(self.ctx.checkpoints_dir, self.prefix)
        kept = (
            f"the last good checkpoint is {latest}"
            if latest
            else f"no {self.stage.upper()} checkpoint was saved yet"
        )
        fix = (
            "lower rl.learning_rate or raise rl.kl_coef"
            if self.stage == "rl"
            else "lower sft.learning_rate"
        )
        return TrainingError(
            f"{self.stage} step {step}: stopped after {self.progress.numerical_faults} numerical faults "
            f"(last: {fault}); {kept}; {fix}, then rerun"
        )

    @property
    def stopping(self) -> bool:
        """Whether the stage ends after this step (Ctrl-C, or an early stop)."""
        return self.ctx.interrupt.requested or self.stop_reason is not None

    def finish(self) -> None:
        """The stage's steps are over: an early stop is noted for summary.json."""
        if self.stop_reason is not None:
            self.ctx.early_stop = stop_note(self.progress.step, self.stop_reason)

    # -- checkpoints -----------------------------------------------------------------------------

    def score(self, step: int) -> float | None:
        """Step `step`'s validation score (None when it was not evaluated)."""
        return self.scored[1] if self.scored is not None and self.scored[0] == step else None

    def save_due(self, step: int) -> bool:
        """Whether step `step` is saved: the interval, the last step, Ctrl-C, an early stop, or (RL
        under `rl.final: best`) a validation score above every saved checkpoint's."""
        config = self.ctx.config
        new_best = (
            self.stage == "rl"
            and config.rl.final == "best"
            and ckpt.beats_saved(self.ctx.checkpoints_dir, self.score(step))
        )
        return step % config.save_interval == 0 or step >= self.steps or self.stopping or new_best

    def checkpoint_dir(self, step: int) -> Path:
        return self.ctx.checkpoints_dir / f"{self.prefix}{step}"

    def checkpoint_meta(self, step: int) -> dict[str, Any]:
        """The marker of step `step`'s checkpoint: its score, the clocks and the fault count."""
        return {
            "stage": self.stage,
            "step": step,
            "valid_reward_mean": self.score(step),
            "elapsed_s": self.run_elapsed(),
            "stage_elapsed_s": self.progress.elapsed_s,
            "numerical_faults": self.progress.numerical_faults,
        }

    def write_checkpoint(
        self, step: int, write: Callable[[Path], None], extra: dict[str, Any] | None = None
    ) -> Path:
        """Write step `step`'s checkpoint atomically (`write(tmp)` fills it), then prune."""
        meta = {**self.checkpoint_meta(step), **(extra or {})}
        folder = ckpt.write_checkpoint(self.checkpoint_dir(step), write, meta)
        self.saved()
        return folder

    def saved(self) -> None:
        """A checkpoint was committed: RL keeps the best `keep_checkpoints` and the latest; the
        warm-up keeps its latest alone (all a resume needs, and none of them is evaluated), so a
        long warm-up holds one checkpoint on disk rather than one per `save_interval` steps, each
        with its optimizer state. The last goes when `checkpoints/sft` is written."""
        keep = self.ctx.config.keep_checkpoints if self.stage == "rl" else 0
        ckpt.prune_checkpoints(self.ctx.checkpoints_dir, keep, STAGE_PREFIXES[self.stage])


def run_steps(
    loop: StageLoop,
    step: Callable[[int], dict[str, Any]],
    save: Callable[[int], object],
    model: Any = None,
) -> None:
    """Our own loop over a stage's remaining steps: `step(n)` computes step n and returns its
    metrics line (`skipped` names a fault), `save(n)` writes its checkpoint."""
    if loop.stopped_before():
        return
    while loop.progress.step < loop.steps and loop.stop_reason is None:
        n = loop.progress.step + 1
        record = step(n)
        loop.end_step(n, model)
        loop.report(record, record.get("skipped"))
        if loop.save_due(n):
            save(n)
        if loop.ctx.interrupt.requested:
            raise KeyboardInterrupt
    loop.finish()
