"""`rft config`: the run config's format, as a JSON Schema editors read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rft_cli.cli import render
from rft_cli.cli.app import app

config_app = typer.Typer(
    help=(
        "The run config format: its JSON Schema, for editor completion and checks.\n\n"
        "Example: rft config schema -o rft.schema.json"
    ),
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")


@config_app.command("schema")
def schema(
    grader: Annotated[
        bool, typer.Option("--grader", help="The schema of a grader file instead of a run config.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            dir_okay=False,
            help="Write the schema to this file instead of stdout.",
        ),
    ] = None,
) -> None:
    """Print the JSON Schema of a run config (a recipe), or with --grader of a grader file.

    Point your editor's YAML language server at it for completion, descriptions and errors as you
    type: save it (rft config schema -o rft.schema.json) and put this first line in the recipe:

        # yaml-language-server: $schema=rft.schema.json

    The schema checks keys, types and ranges; `rft train RECIPE --dry-run` checks the rest (files,
    the data, the grader, settings that depend on each other).

    Example:

        rft config schema -o rft.schema.json

        rft config schema --grader -o rft-grader.schema.json
    """
    from rft_cli.schema import grader_schema, run_config_schema

    document = grader_schema() if grader else run_config_schema()
    if output is None:
        render.json_document(document)
        return
    try:
        output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot write {output} ({exc.strerror or exc})", param_hint="--output"
        ) from None
    render.stderr.print(f"wrote {render.safe(output)}")
