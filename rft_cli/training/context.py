"""What every training stage is handed (RunContext), its greedy validation, and Ctrl-C handling."""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rft_cli.data.openai_rows import row_tools
from rft_cli.data.records import item_of, prompt_messages
from rft_cli.generation import ProgressFn, generate_completions
from rft_cli.run_folder.samples import eval_lines
from rft_cli.tool_calls import output_parser
from rft_cli.training.rewards import grade


def evaluate_greedy(
    model: Any,
    tokenizer: Any,
    grader: Any,
    rows: Sequence[dict],
    *,
    demonstration_field: str,
    max_new_tokens: int,
    batch_size: int,
    answers: list | None = None,
    progress: ProgressFn | None = None,
    tools: Any = None,
) -> dict[str, float]:
    """valid_reward_mean and valid_accuracy (share of rows with reward 1.0) of greedy answers.

    `answers`, when given, receives one samples line per row (`rft_cli.run_folder.samples.eval_lines`);
    `progress(done, total)` is called after each generated batch.

    Generation is `rft_cli.generation.generate_completions`, the same as `rft eval`, so the
    validation score during training matches what `rft eval` reports for the checkpoint. With
    `tools` (a recipe's `ToolSetup`) each row is a greedy episode graded whole, as `rft eval
    --tools` runs it, and the episodes' metrics come too (`episode_rollouts.episode_metrics`).
    """
    if tools is not None:
        from rft_cli.training.episode_rollouts import evaluate_episodes_greedy

        return evaluate_episodes_greedy(
            model,
            tokenizer,
            grader,
            rows,
            tools,
            demonstration_field=demonstration_field,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            answers=answers,
            progress=progress,
        )
    was_training = model.training
    prompts = [prompt_messages(row) for row in rows]
    tools = [row_tools(row) for row in rows]
    outs = generate_completions(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        temperature=0.0,
        batch_size=batch_size,
        tools=tools,
        progress=progress,
    )
    model.train(was_training)
    stats = grade(
        grader,
        [o[0].text for o in outs],
        [item_of(r, demonstration_field) for r in rows],
        parser=output_parser(tokenizer),
    )
    if answers is not None:
        answers.extend(
            eval_lines(
                tokenizer, prompts, [o[0] for o in outs], stats.results, len(rows), tools=tools
            )
        )
    finite = [r for r in stats.rewards if math.isfinite(r)]
    mean = sum(finite) / len(finite) if finite else float("nan")
    return {
        "valid_reward_mean": mean,
        "valid_accuracy": sum(r >= 1.0 for r in finite) / max(len(stats.rewards), 1),
    }


class InterruptFlag:
    """Set by the first Ctrl-C; the loop saves a checkpoint at the next step boundary and stops."""

    def __init__(self) -> None:
        self.requested = False


@contextmanager
def graceful_interrupt() -> Iterator[InterruptFlag]:
    """First SIGINT sets a flag (finish the step, save, exit 130); a second one interrupts at once."""
    flag = InterruptFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class RunContext:
    """Everything a stage needs: the config, the run folder, data, grader, logger and progress hook."""

    config: Any
    run_dir: Any
    train_rows: list[dict]
    valid_rows: list[dict]
    grader: Any
    logger: Any
    progress: Any = None
    interrupt: InterruptFlag = field(default_factory=InterruptFlag)
    elapsed_before: float = 0.0
    samples: Any = None  # a rft_cli.run_folder.samples.SampleWriter (None: keep no answers)
    early_stop: dict[str, Any] | None = (
        None  # set when RL ended early (rft_cli.training.early_stop)
    )
    config_changes: dict[str, list[Any]] | None = (
        None  # `--resume --set` changes, listed on the next metrics line
    )
    tools: Any = None  # the recipe's tools (`episode_rollouts.ToolSetup`): RL runs episodes

    @property
    def checkpoints_dir(self) -> Any:
        return self.run_dir / "checkpoints"

    def report(self, record: dict[str, Any]) -> None:
        """Log a metrics line and show it on the progress display."""
        if (
            self.config_changes
        ):  # the first line after a resume says which settings changed from here on
            record["config_changed"] = {
                **self.config_changes,
                **(record.get("config_changed") or {}),
            }
            self.config_changes = None
        self.logger.log(record)
        if self.progress is not None:
            self.progress(record)
        stop = getattr(
            self.logger, "raise_pending_stop", None
        )  # alarms.stop_on (rft_cli.run_folder.alarms.WatchingLogger)
        if stop is not None:
            stop()

    def keep_samples(
        self, stage: str, step: int, lines: list[dict], after: str | None = None
    ) -> None:
        """Write a step's answers to RUN/samples/ (nothing when samples are off)."""
        if self.samples is not None:
            self.samples.write(stage, step, lines, after)

    def wants_samples(self, stage: str, step: int) -> bool:
        return self.samples is not None and self.samples.wants(stage, step, self.config.rl.steps)

    def eval_rows(self) -> list[dict]:
        """The validation rows evaluated during training (the first `eval.samples`)."""
        return self.valid_rows[: self.config.eval.samples]

    def evaluate(self, model: Any, tokenizer: Any, step: int, after: str) -> dict[str, float]:
        """Greedy validation of `model` at `step` of stage `after` (sft/rl), its answers kept in RUN/samples/."""
        cfg, ev = self.config, self.config.eval
        answers: list | None = [] if self.wants_samples("eval", step) else None
        rows = self.eval_rows()
        # a progress display that follows evaluations (the CLI's) gets each generated batch
        evaluating = getattr(self.progress, "evaluating", None)
        valid = evaluate_greedy(
            model,
            tokenizer,
            self.grader,
            rows,
            demonstration_field=cfg.data.demonstration_field,
            max_new_tokens=ev.max_new_tokens or cfg.rl.max_new_tokens,
            batch_size=ev.batch_size,
            answers=answers,
            progress=evaluating(after, step, len(rows)) if evaluating else None,
            tools=self.tools,
        )
        self.keep_samples("eval", step, (answers or [])[: cfg.samples.eval_rows], after=after)
        return valid
