"""`rft report`: a run's stages, best validation reward and last values; plots of one or more runs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from rft_cli.cli import render
from rft_cli.cli.app import app
from rft_cli.errors import UsageError

# The last values shown in the terminal, in this order, when the run logged them.
LAST_KEYS = [
    "train_reward_mean",
    "valid_reward_mean",
    "valid_accuracy",
    "kl",
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


_EPILOG = """[bold]Example[/]

  rft report runs/gsm8k runs/gsm8k-lowkl --output compare.png

Exit codes: 0 ok, 1 the run has no metrics yet, 2 usage error (no such run folder, bad --output)."""


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
) -> None:
    """Summarise training runs from their metrics.jsonl and plot reward, KL and response length."""
    from rft_cli.reports import plot_runs, require_matplotlib, summarize_run

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
        render.stderr.print(f"Wrote {escape(str(output))}")
    if output_format is ReportFormat.json:
        render.json_document(
            {"runs": [r.to_dict() for r in reports], "plot": str(output) if output else None}
        )
    else:
        for r in reports:
            _print_run(r)


def _print_run(r: Any) -> None:
    from rich.table import Table

    stages = ", ".join(
        f"{s.stage} steps {s.first_step}-{s.last_step} ({s.records} records)" for s in r.stages
    )
    render.stdout.print(f"[bold]{escape(r.run)}[/]  {escape(stages)}")
    if r.best_valid_reward is None:
        render.stdout.print("best valid_reward_mean: - (no validation logged)")
    else:
        stage = f" ({r.best_valid_stage})" if r.best_valid_stage else ""
        render.stdout.print(
            f"best valid_reward_mean: {r.best_valid_reward:.4f} at step {r.best_valid_step}{stage}"
        )
    table = Table("metric", "last value", "at step")
    keys = [k for k in LAST_KEYS if k in r.last] + sorted(k for k in r.last if k not in LAST_KEYS)
    for key in keys:
        table.add_row(key, f"{r.last[key]:.6g}", str(r.last_step.get(key)))
    render.stdout.print(table)
