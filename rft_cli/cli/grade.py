"""`rft grade`: run a grader on one sample, or on a file of samples paired with dataset rows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rft_cli.cli import render
from rft_cli.cli.app import UsageError, app

_HELP = """Grade with GRADER, an OpenAI-style grader file (YAML or JSON, `type` at the top).

One sample, like OpenAI's grader run endpoint: --item is the dataset row (a JSON object) and --sample is the model's answer; --format json prints {"reward", "sub_rewards", "errors"}. A long or structured sample comes from a file (--sample-file PATH) or stdin (--sample -): a JSON object with "output_text" and optionally "output_json" and "output_tools" is the sample; any other content is the answer text itself.

A file of samples: --data ROWS.jsonl with --samples SAMPLES.jsonl (one {"output_text": ...} per line, paired by line with ROWS, or naming its 0-based "row"; the format `rft eval --samples-file` reads) prints the mean reward, the distribution and the errors by kind; --output writes one result per sample.

Example:

    rft grade grader.yaml --item '{"answer_value": "18"}' --sample 'So she makes $18. #### 18' --format json

    rft grade tools.json --item '{"name": "get_weather"}' --sample-file sample.json

    rft grade grader.yaml --data data/test.jsonl --samples samples.jsonl --output graded.jsonl
"""


@app.command(help=_HELP)
def grade(
    grader_path: Annotated[
        Path,
        typer.Argument(metavar="GRADER", help="Grader file (YAML or JSON, `type` at the top)."),
    ],
    item: Annotated[
        str | None,
        typer.Option("--item", help="The dataset row as a JSON object (the `item` namespace)."),
    ] = None,
    sample: Annotated[
        str | None,
        typer.Option(
            "--sample",
            help="The model's answer text (the `sample` namespace); - reads it from stdin.",
        ),
    ] = None,
    sample_file: Annotated[
        Path | None,
        typer.Option(
            "--sample-file",
            help='Read the sample from a file: {"output_text", "output_json"?, "output_tools"?} or plain text.',
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Dataset JSONL: each row is the `item` of the sample on the same line of --samples.",
        ),
    ] = None,
    samples: Annotated[
        Path | None,
        typer.Option(
            "--samples",
            help='JSONL samples, one {"output_text": ...} per line, paired with --data.',
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            help="With --data: write one result per row here (JSONL: reward, sub-rewards, errors).",
        ),
    ] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="text (a summary) or json (one document).")
    ] = "text",
) -> None:
    from rft_cli.graders import load_grader
    from rft_cli.samples_file import grade_file, grade_sample, parse_item

    if output_format not in ("text", "json"):
        raise UsageError(f'--format "{output_format}" is not one of text, json')
    if sample is not None and sample_file is not None:
        raise UsageError(
            "give the sample once: --sample TEXT, --sample - (stdin) or --sample-file PATH"
        )
    if sample_file is not None or sample == "-":
        sample = _read_sample(sample_file)
    single = sample is not None or item is not None
    if single == (data is not None or samples is not None):
        raise UsageError(
            "give either --sample (and --item) for one sample, or --data with --samples for a file of samples"
        )
    if single and sample is None:
        raise UsageError("--item needs --sample or --sample-file (the model's answer to grade)")
    paired = None if single else _paired(data, samples)
    with load_grader(grader_path) as grader:
        if paired is None:
            _print_one(grade_sample(grader, sample, parse_item(item)), output_format)
            return
        report = grade_file(grader, *paired, output)
    for note in report.notes:
        render.warning(note)
    if output_format == "json":
        render.json_document(report.summary)
    else:
        _print_summary(report.summary)


def _paired(data: Path | None, samples: Path | None) -> tuple[Path, Path]:
    """--data and --samples, which go together."""
    if data is None or samples is None:
        raise UsageError(
            "--data and --samples go together (rows and the samples to grade, paired by line)"
        )
    return data, samples


def _read_sample(path: Path | None) -> Any:
    """The sample from a file, or from stdin when `path` is None."""
    import sys

    from rft_cli import files
    from rft_cli.samples_file import read_sample, read_sample_file

    if path is not None:
        return read_sample_file(path)
    try:
        text = sys.stdin.read(files.MAX_TEXT_BYTES + 1)
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"stdin: the sample is not valid UTF-8 ({exc.reason}); save it as UTF-8"
        ) from None
    if len(text) > files.MAX_TEXT_BYTES:
        raise UsageError(
            f"stdin: the sample is over {files.size_text(files.MAX_TEXT_BYTES)}, more than rft reads as one sample"
        )
    return read_sample(text, "stdin")


def _print_one(result: Any, output_format: str) -> None:
    if output_format == "json":
        render.json_document(result.to_dict())
        return
    safe = render.safe  # names, answers and details come from the grader file, the sample, a judge
    render.stdout.print(f"reward: {result.reward:.4g}")
    for name, reward in result.sub_rewards.items():
        render.stdout.print(f"  {safe(name)}: {reward:.4g}")
    if result.answer is not None:
        render.stdout.print(f"answer: {safe(result.answer)}", highlight=False)
    for kind, count in result.errors.items():
        detail = result.details.get(kind)
        render.stdout.print(
            f"error: {safe(kind)} x{count}" + (f" ({safe(detail)})" if detail else ""),
            highlight=False,
        )


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

    render.stdout.print(f"graded {summary['n']} samples; mean reward {summary['mean_reward']:.4f}")
    table = Table("reward", "samples", "share")
    for label, count in summary["distribution"].items():
        table.add_row(label, str(count), f"{count / max(1, summary['n']):.1%}")
    render.stdout.print(table)
    if summary["errors"]:
        errors = ", ".join(f"{kind} x{count}" for kind, count in sorted(summary["errors"].items()))
        render.stdout.print(f"errors: {render.safe(errors)}")
    else:
        render.stdout.print("errors: none")
    if "output" in summary:
        render.stdout.print(f"per-row results: {render.safe(summary['output'])}")
