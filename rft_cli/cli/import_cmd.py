"""`rft import`: bring settings from another platform across (OpenAI reinforcement fine-tuning jobs)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rft_cli.cli import render
from rft_cli.cli.app import app

if TYPE_CHECKING:
    from rft_cli.openai_import import ImportReport

import_app = typer.Typer(
    help=(
        "Turn another platform's job into an rft recipe.\n\n"
        "Example: rft import openai job.json --training-file train.jsonl --validation-file valid.jsonl "
        "--model Qwen/Qwen2.5-0.5B-Instruct -o recipe.yaml"
    ),
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


@import_app.command("openai")
def openai_cmd(
    job_path: Annotated[
        Path,
        typer.Argument(
            metavar="JOB.json",
            exists=True,
            dir_okay=False,
            help="The JSON body of an OpenAI fine-tuning job (method: reinforcement).",
        ),
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="The open model to train: a hub id or a local folder (OpenAI's models have no local weights).",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            dir_okay=False,
            help="The recipe to write; the grader goes beside it as <name>.grader.json.",
        ),
    ],
    training_file: Annotated[
        Path | None,
        typer.Option(
            "--training-file",
            dir_okay=False,
            help="The local JSONL behind the job's training_file id.",
        ),
    ] = None,
    validation_file: Annotated[
        Path | None,
        typer.Option(
            "--validation-file",
            dir_okay=False,
            help="The local JSONL behind the job's validation_file id.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the recipe and grader files if they exist.")
    ] = False,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="text (a table) or json (one document).")
    ] = OutputFormat.text,
) -> None:
    """Turn an OpenAI reinforcement fine-tuning job into a recipe that `rft train` runs.

    The grader is written unchanged beside the recipe (<name>.grader.json); each hyperparameter becomes an rft key (the table is at the top of the recipe and in docs/openai.md, "Coming from OpenAI RFT").

    OpenAI's file ids name no local file: pass the JSONL files with --training-file and --validation-file. Fields with no local meaning are listed on stderr and in the recipe.

    Example:

        rft import openai job.json --training-file train.jsonl --validation-file valid.jsonl --model Qwen/Qwen2.5-0.5B-Instruct -o recipe.yaml

        rft train recipe.yaml
    """
    from rft_cli.openai_import import import_openai_job

    report = import_openai_job(
        job_path, output, model, training_file, validation_file, overwrite=force
    )
    if report.unsupported or report.unknown:
        render.warning(
            "not carried across: "
            + "; ".join(report.unsupported + [f"{k} (unknown field)" for k in report.unknown])
        )
    if report.secrets:
        render.warning(
            "the tools' secret headers are read from the environment, not written to the recipe: export "
            + ", ".join(report.secrets)
        )
    if output_format is OutputFormat.json:
        render.json_document(report.as_dict())
        return
    _print_mapping(report)


def _print_mapping(report: ImportReport) -> None:
    import json

    from rich.table import Table

    from rft_cli.cli.render import safe

    table = Table(title=safe(f"rft import openai: {report.recipe}"))
    for column in ("OpenAI", "value", "rft key", "rft value"):
        table.add_column(column)
    for row in report.mapping:
        table.add_row(
            safe(row["openai"]),
            safe(json.dumps(row["value"])),
            safe(row["rft"]),
            safe(str(row["rft_value"])),
        )
    render.stdout.print(table)
    run = f"rft train {report.recipe}"
    render.stdout.print(safe(f"Wrote {report.recipe} and {report.grader}; run: {run}"))
    if report.ignored:
        render.stdout.print(safe(f"job status fields not read: {', '.join(report.ignored)}"))
