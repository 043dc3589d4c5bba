"""`rft validate`: check a training (and validation) JSONL file against the dataset contract."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from rft_cli.cli import render
from rft_cli.cli.app import UsageError, app
from rft_cli.cli.render import safe
from rft_cli.data.validation import (
    DEFAULT_MAX_ERRORS,
    DEFAULT_NEAR_DUPLICATE_THRESHOLD,
    MIN_NEAR_DUPLICATE_THRESHOLD,
    Issue,
    ValidationReport,
    validate_dataset,
)
from rft_cli.data.validation_report import SELF_TEST_CODE
from rft_cli.errors import EXIT_INVALID

if TYPE_CHECKING:  # the graders load only with --grader
    from rft_cli.graders.selftest import SelfTestReport


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


_FILE = {"exists": True, "dir_okay": False, "readable": True}

VALIDATE_HELP = """Check a JSONL dataset against the contract and prove TRAIN and VALID do not overlap.

Every problem is reported with its file, line (and column for JSON syntax) and a fix: UTF-8, JSON syntax, the row's shape, empty files, blank lines (warning), duplicate prompts (warning), train/valid overlap (exact: error; near-duplicate: warning), and with --grader, every item.<field> the grader reads.

With --grader, the grader self-test also grades each row's demonstration (the final assistant message, or the --demonstration-field) as if the model had written it, and lists every row scoring below full marks (or the grader's pass_threshold) with its line, score and grader errors: a warning, an error with --strict. Rows without a demonstration are skipped and counted.

Exit codes: 0 valid (warnings allowed), 1 the data is invalid, 2 usage error.

[bold]Example[/bold]:

    rft validate data/example/train.jsonl --valid data/example/valid.jsonl --grader data/example/grader.yaml

[bold]Example[/bold] (no test problem's id in training; name fields that identify a task, not answers such as numbers that different problems share):

    rft validate data/svamp/train.jsonl --valid data/svamp/test.jsonl --overlap-fields id

[bold]Example[/bold] (CI, machine-readable):

    rft validate train.jsonl --valid valid.jsonl --strict --format json > report.json
"""


@app.command(help=VALIDATE_HELP)
def validate(
    train: Annotated[Path, typer.Argument(help="Training JSONL file.", metavar="TRAIN", **_FILE)],
    valid: Annotated[
        Path | None,
        typer.Option("--valid", help="Validation JSONL file; enables the overlap checks.", **_FILE),
    ] = None,
    grader: Annotated[
        Path | None,
        typer.Option(
            "--grader",
            help="Grader file: check that every row has each item.<field> it reads, and that it gives each demonstration full marks.",
            **_FILE,
        ),
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="text (a summary) or json (one JSON document).")
    ] = OutputFormat.text,
    max_errors: Annotated[
        int,
        typer.Option(
            "--max-errors", min=1, help="Show at most N issues of each kind (all are counted)."
        ),
    ] = DEFAULT_MAX_ERRORS,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Duplicate prompts, near-duplicates, over-long prompts and demonstrations the grader scores below full marks are errors.",
        ),
    ] = False,
    require_demonstrations: Annotated[
        bool,
        typer.Option(
            "--require-demonstrations", help="Every training row needs a warm-up demonstration."
        ),
    ] = False,
    demonstration_field: Annotated[
        str,
        typer.Option(
            "--demonstration-field",
            help="Field holding the demonstration (besides a final assistant turn).",
        ),
    ] = "solution",
    overlap_fields: Annotated[
        str,
        typer.Option(
            "--overlap-fields",
            help="Comma-separated fields whose VALID values must not appear in TRAIN: fields that identify a task (an id), not answers that problems share.",
        ),
    ] = "",
    near_duplicate_threshold: Annotated[
        float,
        typer.Option(
            "--near-duplicate-threshold",
            min=MIN_NEAR_DUPLICATE_THRESHOLD,
            max=1.0,
            help="Word 3-gram Jaccard similarity at which prompts are near-duplicates.",
        ),
    ] = DEFAULT_NEAR_DUPLICATE_THRESHOLD,
    tokenizer: Annotated[
        Path | None,
        typer.Option(
            "--tokenizer",
            help="Local tokenizer directory: adds prompt token statistics.",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-tokens",
            min=1,
            help="Warn about prompts longer than N tokens (needs --tokenizer).",
        ),
    ] = None,
    tools: Annotated[
        Path | None,
        typer.Option(
            "--tools",
            help="A recipe or tools file (`tools:`): every tool a row offers must be run by one of its tools, "
            "and in rows without `tools` each demonstrated call must name one of them and fit its parameters.",
            **_FILE,
        ),
    ] = None,
) -> None:
    if max_tokens is not None and tokenizer is None:
        raise UsageError("--max-tokens needs --tokenizer (the directory of the model's tokenizer)")
    fields = [name.strip() for name in overlap_fields.split(",") if name.strip()]
    if fields and valid is None:
        raise UsageError(
            "--overlap-fields needs --valid (the validation file whose answers must not appear in training)"
        )
    report = validate_dataset(
        train,
        valid,
        grader=grader,
        demonstration_field=demonstration_field,
        require_demonstrations=require_demonstrations,
        strict=strict,
        overlap_fields=fields,
        near_duplicate_threshold=near_duplicate_threshold,
        max_errors=max_errors,
        tokenizer=tokenizer,
        max_tokens=max_tokens,
        tools=_tool_definitions(tools) if tools is not None else None,
    )
    if output_format is OutputFormat.json:
        render.json_document(report.to_dict())
    else:
        _print_report(report, max_errors)
    if not report.ok:
        raise typer.Exit(code=EXIT_INVALID)


def _tool_definitions(path: Path) -> dict[str, Any]:
    """The tools of a recipe or tools file, as definitions (no tool is started, no secret read)."""
    from rft_cli.tools import read_tools_file
    from rft_cli.tools.toolbox import definitions_of

    settings, _ = read_tools_file(path)
    return definitions_of(settings, f"{path}: tools")


def _print_report(report: ValidationReport, max_errors: int) -> None:
    """The Rich summary: stats per file, overlap counts, errors and warnings grouped by kind, the grader self-test."""
    out = render.stdout
    out.print(_stats_table(report))
    overlap = report.stats["overlap"]
    if report.files["valid"] is not None:
        out.print(
            f"Overlap train/valid: {overlap['exact']} exact, {overlap['near_duplicate']} near-duplicate "
            f"(Jaccard >= {overlap['near_duplicate_threshold']}), {overlap['field']} shared reference value(s)"
        )
    _print_issues("Errors", "red", report.errors, _without_self_test(report.error_counts))
    _print_issues("Warnings", "yellow", report.warnings, _without_self_test(report.warning_counts))
    if report.grader_check is not None:
        _print_self_test(report.grader_check, report.grader_check_strict, max_errors)
    n_errors, n_warnings = sum(report.error_counts.values()), sum(report.warning_counts.values())
    if n_errors == 0:
        out.print(f"[bold green]OK[/]: the data is valid ({n_warnings} warning(s)).")
    else:
        out.print(f"[bold red]INVALID[/]: {n_errors} error(s), {n_warnings} warning(s).")


def _without_self_test(counts: dict[str, int]) -> dict[str, int]:
    """The issue counts but the self-test's, which `_print_self_test` shows in its own block."""
    return {code: n for code, n in counts.items() if code != SELF_TEST_CODE}


def _print_self_test(check: SelfTestReport, strict: bool, max_errors: int) -> None:
    out = render.stdout
    if check.failures:
        color, label = ("red", "Errors") if strict else ("yellow", "Warnings")
        shown = check.failures[:max_errors]
        more = f", first {len(shown)} shown" if len(shown) < len(check.failures) else ""
        bar = check.bar()
        out.print(f"[bold {color}]{label}[/] ({len(check.failures)}):")
        out.print(
            f"  [{color}]grader_self_test[/] ({len(check.failures)}{more}): demonstrations scored below {bar}"
        )
        for failure in shown:
            out.print(f"    {safe(failure.message())}", highlight=False)
    out.print(f"Grader self-test: {safe(check.summary())}.", highlight=False)


def _stats_table(report: ValidationReport) -> Table:
    table = Table(
        title="rft validate",
        title_justify="left",
        caption="spreads are min / median / max",
        caption_justify="left",
    )
    table.add_column("")
    for role in ("train", "valid"):
        if report.files[role] is not None:
            table.add_column(role, overflow="fold")
    per_file = [report.stats[role] for role in ("train", "valid") if report.files[role] is not None]
    table.add_row(
        "file",
        *[
            safe(report.files[role])
            for role in ("train", "valid")
            if report.files[role] is not None
        ],
    )
    for label, cell in _STAT_ROWS:
        if all(cell(s) is None for s in per_file):
            continue
        table.add_row(label, *[safe(str(cell(s))) for s in per_file])
    return table


def _spread(summary: dict[str, Any] | None) -> str | None:
    if not summary or summary.get("min") is None:
        return None if summary is None else "-"
    return f"{summary['min']} / {summary['median']} / {summary['max']}"


def _tokens(stats: dict[str, Any]) -> str | None:
    tokens = stats.get("prompt_tokens")
    if tokens is None:
        return None
    over = (
        f", {tokens['rows_over_max']} over {tokens['max_tokens']}" if tokens["max_tokens"] else ""
    )
    return (_spread(tokens) or "-") + over


_STAT_ROWS = [
    ("rows (valid / lines)", lambda s: f"{s['rows']} / {s['lines']}"),
    ("distinct prompts", lambda s: s["distinct_prompts"]),
    ("messages per row", lambda s: _spread(s["messages_per_row"])),
    ("prompt characters", lambda s: _spread(s["prompt_chars"])),
    ("prompt tokens", _tokens),
    ("demonstrations", lambda s: s["demonstrations"]),
    (
        "reference fields",
        lambda s: ", ".join(f"{k} ({v})" for k, v in s["reference_fields"].items()) or "-",
    ),
]


def _print_issues(title: str, color: str, issues: list[Issue], counts: dict[str, int]) -> None:
    if not counts:
        return
    out = render.stdout
    out.print(f"[bold {color}]{title}[/] ({sum(counts.values())}):")
    for code, total in sorted(counts.items(), key=lambda item: -item[1]):
        shown = [issue for issue in issues if issue.code == code]
        more = f", first {len(shown)} shown" if len(shown) < total else ""
        out.print(f"  [{color}]{code}[/] ({total}{more})")
        for issue in shown:
            out.print(f"    {safe(issue.message)}", highlight=False)
