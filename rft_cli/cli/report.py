"""`rft report`: a run's stages, best validation reward and last values; plots of one or more runs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from rft_cli.cli import render
from rft_cli.cli.app import UsageError, app
from rft_cli.cli.render import safe

# The last values shown in the terminal, in this order, when the run logged them.
LAST_KEYS = [
    "train_reward_mean",
    "valid_reward_mean",
    "valid_accuracy",
    "kl",
    "kl_logratio",
    "kl_sum",
    "policy_loss",
    "value_loss",
    "entropy",
    "clip_frac",
    "response_length_mean",
    "loss",
    "learning_rate",
    "tokens_per_second",
    "elapsed_s",
]


class ReportFormat(str, Enum):
    text = "text"
    json = "json"


_EPILOG = """[bold]Examples[/]

  rft report runs/gsm8k runs/gsm8k-lowkl --output compare.png
  rft report runs/gsm8k --samples            (the last RL step's best, worst and most common answers)
  rft report runs/gsm8k --samples --row 3    (validation row 3's answer at each evaluation)
  rft report runs/gsm8k/metrics.jsonl --fail-on-alarm

Exit codes: 0 ok, 1 the run has no metrics yet, 2 usage error (no such run folder, bad --output,
no samples kept), 3 an alarm was raised and --fail-on-alarm was given."""
ALARM_EXIT_CODE = 3


@app.command("report", epilog=_EPILOG)
def report(
    runs: Annotated[
        list[Path], typer.Argument(help="Run folders of `rft train` (each has metrics.jsonl).")
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            dir_okay=False,
            help="Write plots to a .png or .html file (needs matplotlib).",
        ),
    ] = None,
    output_format: Annotated[
        ReportFormat, typer.Option("--format", help="text (tables) or json (one document).")
    ] = ReportFormat.text,
    samples: Annotated[
        bool, typer.Option("--samples", help="Show kept answers (RUN/samples/) instead of metrics.")
    ] = False,
    step: Annotated[
        int | None,
        typer.Option("--step", help="With --samples: this step (default: the last kept)."),
    ] = None,
    row: Annotated[
        int | None,
        typer.Option(
            "--row", help="With --samples: follow this validation row across evaluations."
        ),
    ] = None,
    eval_answers: Annotated[
        bool,
        typer.Option(
            "--eval", help="With --samples: the greedy evaluation answers, not the sampled RL ones."
        ),
    ] = False,
    fail_on_alarm: Annotated[
        bool,
        typer.Option(
            "--fail-on-alarm", help=f"Exit {ALARM_EXIT_CODE} when any run raises an alarm (for CI)."
        ),
    ] = False,
) -> None:
    """Summarise training runs from their metrics.jsonl, list alarms, show kept answers, plot reward, KL and length."""
    from rft_cli.plots import plot_runs, require_matplotlib
    from rft_cli.run_folder.summary import summarize_run

    if samples:
        _samples(runs, step, row, "eval" if eval_answers else "rl", output_format)
        return
    if step is not None or row is not None or eval_answers:
        raise UsageError("--step, --row and --eval go with --samples")

    if output is not None:
        if output.suffix.lower() not in (".png", ".html", ".htm"):
            raise UsageError(f"--output {output}: the report must be a .png or .html file")
        require_matplotlib()
    reports = [summarize_run(run) for run in runs]
    for r in reports:
        for message in r.warnings:
            render.warning(message)
    if output is not None:
        plot_runs(reports, output)
        render.stderr.print(f"Wrote {safe(str(output))}")
    if output_format is ReportFormat.json:
        render.json_document(
            {"runs": [r.to_dict() for r in reports], "plot": str(output) if output else None}
        )
    else:
        for r in reports:
            _print_run(r)
    if fail_on_alarm and any(r.alarms for r in reports):
        raise typer.Exit(code=ALARM_EXIT_CODE)


def _samples(
    runs: list[Path], step: int | None, row: int | None, stage: str, output_format: ReportFormat
) -> None:
    from rft_cli.run_folder.summary import samples_report

    if len(runs) != 1:
        raise UsageError("--samples reads one run folder at a time")
    found = samples_report(runs[0], step=step, row=row, stage=stage)
    if output_format is ReportFormat.json:
        render.json_document(found)
    elif row is not None:
        _print_row(found)
    else:
        _print_step(found)


def _cell(text: Any, width: int = 80) -> str:
    text = str(text if text is not None else "").replace("\n", "\u23ce")
    return safe(text if len(text) <= width else text[: width - 1] + "\u2026")


def _reward(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "-"


def _print_step(found: dict[str, Any]) -> None:
    from rich.table import Table

    mean = _reward(found["reward_mean"])
    render.stdout.print(
        f"[bold]{safe(found['run'])}[/]  {safe(found['stage'])} step {safe(found['step'])}: "
        f"{found['answers']} answers kept, mean reward {mean}"
    )
    for title, key in (("best", "best"), ("worst", "worst")):
        table = Table("reward", "row", "tokens", "answer", title=f"{title} answers")
        for line in found[key]:
            table.add_row(
                _reward(line.get("reward")),
                _cell(line.get("row")),
                _cell(line.get("num_tokens")),
                _answer_cell(line),
            )
        render.stdout.print(table)
    table = Table("count", "mean reward", "answer", title="most common answers")
    for entry in found["most_common"]:
        table.add_row(str(entry["count"]), _reward(entry["reward"]), _cell(entry["output_text"]))
    render.stdout.print(table)


def _print_row(found: dict[str, Any]) -> None:
    from rich.table import Table

    answers = found["answers"]
    render.stdout.print(
        f"[bold]{safe(found['run'])}[/]  validation row {safe(found['row'])}: "
        f"{_cell(answers[0].get('prompt'), 120)}"
    )
    table = Table("after", "step", "reward", "tokens", "answer")
    for line in answers:
        table.add_row(
            _cell(line.get("after", "-")),
            _cell(line.get("step")),
            _reward(line.get("reward")),
            _cell(line.get("num_tokens")),
            _answer_cell(line),
        )
    render.stdout.print(table)


def _answer_cell(line: dict[str, Any]) -> str:
    """The answer, or an episode's whole transcript (its calls, their results, the answer)."""
    from rft_cli.run_folder.samples import transcript

    return _cell(transcript(line), 160 if "turns" in line else 80)


def _print_run(r: Any) -> None:
    from rich.table import Table

    stages = ", ".join(
        f"{s.stage} steps {s.first_step}-{s.last_step} ({s.records} records)" for s in r.stages
    )
    render.stdout.print(f"[bold]{safe(r.run)}[/]  {safe(stages)}")
    if r.best_valid_reward is None:
        render.stdout.print("best valid_reward_mean: - (no validation logged)")
    else:
        stage = f" ({r.best_valid_stage})" if r.best_valid_stage else ""
        render.stdout.print(
            f"best valid_reward_mean: {r.best_valid_reward:.4f} at step {safe(r.best_valid_step)}{safe(stage)}"
        )
    if r.summary and r.summary.get("final"):
        text = f"final/: from {r.summary.get('final_source')}{render.final_scores(r.summary)}"
        render.stdout.print(render.safe(text))
    for alarm in r.alarms:
        render.stdout.print(
            f"[yellow]alarm[/] {safe(alarm['name'])} at {safe(alarm['stage'])} step {safe(alarm['step'])}: "
            f"{safe(alarm['message'])}\n  ({safe(alarm['meaning'])})"
        )
    if not r.alarms:
        render.stdout.print("alarms: none")
    table = Table("metric", "last value", "at step")
    keys = [k for k in LAST_KEYS if k in r.last] + sorted(k for k in r.last if k not in LAST_KEYS)
    for key in keys:
        table.add_row(safe(key), f"{r.last[key]:.6g}", safe(r.last_step.get(key)))
    render.stdout.print(table)
