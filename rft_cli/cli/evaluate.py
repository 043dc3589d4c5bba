"""`rft eval`: score one or more models (or outputs made elsewhere) with a grader; gate CI on it."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from rft_cli.cli import render
from rft_cli.cli.app import app
from rft_cli.cli.app import UsageError
from rft_cli.errors import DataError

SAMPLING_TEMPERATURE = 1.0


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


_EPILOG = """[bold]Example[/]

  rft eval --model runs/gsm8k --model Qwen/Qwen2.5-0.5B-Instruct --data data/test.jsonl --grader grader.yaml --samples 4 --min-score 0.5

Sampling: greedy, or softmax(logits / --temperature) cut to --top-p; the model folder's own generation_config.json sampling settings are ignored (its EOS ids are kept), as in training rollouts.

Exit codes: 0 ok (and --min-score met), 1 the first model's mean reward is below --min-score or the data is invalid, 2 usage error (bad flag, missing file, bad grader file)."""


@app.command("eval", epilog=_EPILOG)
def evaluate(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            exists=True,
            dir_okay=False,
            help="Rows to evaluate (JSONL, the `rft validate` format).",
        ),
    ],
    grader: Annotated[
        Path,
        typer.Option("--grader", exists=True, dir_okay=False, help="Grader file (YAML or JSON)."),
    ],
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Model folder, checkpoint, run folder (its final/) or hub id; repeat to compare.",
        ),
    ] = None,
    samples: Annotated[
        int,
        typer.Option(
            "--samples", "-k", min=1, help="Answers per row (K); pass@K and maj@K use them."
        ),
    ] = 1,
    temperature: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Sampling temperature; 0 is greedy. Default: 0 with one sample, 1.0 with --samples > 1. "
            "Tokens are drawn from softmax(logits / T): the model's generation_config.json sampling "
            "settings (top_k, repetition_penalty...) are not used, only its EOS ids.",
        ),
    ] = None,
    top_p: Annotated[
        float,
        typer.Option(
            "--top-p",
            min=0.0,
            max=1.0,
            help="Nucleus sampling (with temperature > 0); 1 samples the whole softmax. No top-k is applied.",
        ),
    ] = 1.0,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", min=1, help="Longest answer, in tokens.")
    ] = 512,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Sequences generated at once.")
    ] = 32,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Evaluate only the first N rows.")
    ] = None,
    threshold: Annotated[
        float,
        typer.Option("--pass-threshold", help="A sample passes when its reward is at least this."),
    ] = 1.0,
    min_score: Annotated[
        float | None,
        typer.Option(
            "--min-score", help="Exit 1 when the first model's mean reward is below this."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", dir_okay=False, help="Write one JSON line per row and sample."
        ),
    ] = None,
    samples_file: Annotated[
        Path | None,
        typer.Option(
            "--samples-file",
            exists=True,
            dir_okay=False,
            help="Grade outputs made elsewhere (JSONL with output_text, optional row and model).",
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            dir_okay=False,
            help="Bar chart of the models (.png or .html; needs matplotlib).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed for sampling.")] = 0,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="text (a table) or json (one document).")
    ] = OutputFormat.text,
) -> None:
    """Generate answers with each model, grade them, and report mean reward, pass@k and maj@k."""
    from rft_cli import graders
    from rft_cli.evaluation import write_results

    models = list(model or [])
    if not models and samples_file is None:
        raise UsageError(
            "nothing to evaluate: pass --model PATH (repeatable) or --samples-file FILE"
        )
    if plot is not None:
        _check_plot(plot)
    if output is not None:
        _check_writable(output)
    temperature = _pick_temperature(temperature, samples, bool(models))
    rows = _load_rows(data, limit)
    with graders.load_grader(grader) as the_grader:
        _check_item_fields(data, rows, the_grader)
        reports = [
            _evaluate_model(
                m,
                rows,
                the_grader,
                samples,
                temperature,
                top_p,
                max_new_tokens,
                batch_size,
                threshold,
                seed,
            )
            for m in models
        ]
        reports += _grade_samples_file(samples_file, rows, the_grader, threshold)
    if output is not None:
        write_results(output, reports, [row for _, row in rows])
    if plot is not None:
        from rft_cli.reports import plot_eval_comparison

        plot_eval_comparison(reports, plot)
    gate = _gate(reports[0].mean_reward, min_score)
    _render(reports, temperature if models else None, min_score, gate, output_format)
    if gate == "failed":
        raise typer.Exit(code=1)


def _check_plot(plot: Path) -> None:
    from rft_cli.reports import require_matplotlib

    if plot.suffix.lower() not in (".png", ".html", ".htm"):
        raise UsageError(f"--plot {plot}: the plot must be a .png or .html file")
    require_matplotlib()


def _check_writable(output: Path) -> None:
    """Fail now, not after an hour of generation, when --output cannot be written."""
    import os

    parent = output.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(
            f"--output {output}: the folder {parent} does not exist or is not writable"
        )


def _pick_temperature(temperature: float | None, samples: int, generating: bool) -> float:
    if temperature is None:
        return 0.0 if samples == 1 else SAMPLING_TEMPERATURE
    if temperature == 0 and samples > 1 and generating:
        render.warning(
            f"--temperature 0 is greedy: the {samples} samples of a row are identical, so pass@{samples} equals pass@1"
        )
    return temperature


def _load_rows(data: Path, limit: int | None) -> list[tuple[int, dict]]:
    from rft_cli.data.records import iter_rows

    rows = list(iter_rows(data))
    if not rows:
        raise DataError(f"{data}: the file has no rows (write one JSON object per line)")
    return rows[:limit] if limit else rows


def _check_item_fields(data: Path, rows: list[tuple[int, dict]], grader: Any) -> None:
    """Fail before generating when a row lacks a field the grader's templates read."""
    for line_no, row in rows:
        missing = sorted(grader.item_fields() - set(row))
        if missing:
            raise DataError(
                f'{data} line {line_no}: missing field "{missing[0]}" that the grader reads '
                f"(item.{missing[0]}); add it to every row or change the grader"
            )


def _evaluate_model(
    model: str,
    rows: list[tuple[int, dict]],
    grader: Any,
    samples: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    batch_size: int,
    threshold: float,
    seed: int,
) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rft_cli.evaluation import evaluate

    _quiet_transformers()
    render.stderr.print(
        f"Evaluating {escape(model)}: {len(rows)} rows x {samples} sample(s), temperature {temperature:g}"
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(
        *columns, console=render.stderr, transient=True, disable=not render.stderr.is_terminal
    ) as bar:
        task = bar.add_task("generating", total=len(rows) * (samples if temperature > 0 else 1))
        return evaluate(
            model,
            [row for _, row in rows],
            grader,
            samples=samples,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            threshold=threshold,
            seed=seed,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )


def _quiet_transformers() -> None:
    """Our progress bar is the one on stderr: silence transformers' weight-loading bars and notes."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _grade_samples_file(
    samples_file: Path | None, rows: list[tuple[int, dict]], grader: Any, threshold: float
) -> list[Any]:
    from rft_cli.evaluation import grade_outputs, load_samples_file

    if samples_file is None:
        return []
    plain = [row for _, row in rows]
    outputs = load_samples_file(samples_file, len(plain))
    render.stderr.print(
        f"Grading {escape(str(samples_file))}: {len(outputs)} model(s), {len(plain)} rows"
    )
    return [
        grade_outputs(name, plain, per_row, grader, threshold=threshold)
        for name, per_row in outputs.items()
    ]


def _gate(score: float, min_score: float | None) -> str | None:
    if min_score is None:
        return None
    return "passed" if score >= min_score else "failed"


def _render(
    reports: list[Any],
    temperature: float | None,
    min_score: float | None,
    gate: str | None,
    output_format: OutputFormat,
) -> None:
    if output_format is OutputFormat.json:
        render.json_document(
            {
                "temperature": temperature,
                "min_score": min_score,
                "gate": gate,
                "models": [r.to_dict() for r in reports],
            }
        )
    else:
        _print_wide(_table(reports))
    if gate is not None:
        first = reports[0]
        verdict = "[green]passed[/]" if gate == "passed" else "[bold red]failed[/]"
        render.stderr.print(
            f"Gate {verdict}: {escape(first.model)} mean reward {first.mean_reward:.4f} "
            f"{'>=' if gate == 'passed' else '<'} --min-score {min_score:g}"
        )


def _print_wide(table: Any) -> None:
    """In a terminal, fit the table to it; in a pipe or CI log, print it whole (no cut model names)."""
    import sys

    from rich.console import Console
    from rich.measure import Measurement

    console = render.stdout
    if not console.is_terminal:
        width = max(
            console.width,
            Measurement.get(console, console.options.update_width(1000), table).maximum,
        )
        console = Console(file=sys.stdout, width=width, soft_wrap=True)
    console.print(table)


def _table(reports: list[Any]) -> Any:
    from rich.table import Table

    table = Table(
        title=f"rft eval (k = samples per row; pass = reward >= {reports[0].threshold:g})"
    )
    for name in [
        "model",
        "rows",
        "k",
        "mean reward",
        "pass@1",
        "pass@k",
        "maj@k",
        "grader errors",
        "tokens/s",
    ]:
        table.add_column(
            name, justify="left" if name in ("model", "grader errors") else "right", overflow="fold"
        )
    for r in reports:
        tps = r.tokens_per_second
        table.add_row(
            r.model,
            str(r.rows),
            str(r.samples),
            f"{r.mean_reward:.4f}",
            f"{r.pass_at[1]:.4f}",
            f"{r.pass_at[r.samples]:.4f}",
            "-" if r.maj_at_k is None else f"{r.maj_at_k:.4f}",
            ", ".join(f"{kind}: {n}" for kind, n in r.errors.items()) or "0",
            "-" if tps is None else f"{tps:.1f}",
        )
    return table
