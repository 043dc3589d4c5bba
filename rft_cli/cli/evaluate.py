"""`rft eval`: score one or more models (or outputs made elsewhere) with a grader; gate CI on it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from rft_cli.cli import render
from rft_cli.cli.app import app
from rft_cli.cli.render import safe
from rft_cli.cli.ticker import Ticker, progress_interval


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
            help="Model folder, checkpoint, run folder (its final/), .gguf file or hub id; repeat to compare.",
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
    tools: Annotated[
        Path | None,
        typer.Option(
            "--tools",
            exists=True,
            dir_okay=False,
            help="Run episodes with tools: a recipe, or a YAML file with `tools:` (and `episode:`). "
            "Each answer is a whole episode (calls, tool results, final answer), graded as one; "
            "the report adds tool calls, tool errors and tokens per episode, and episodes dropped.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed for sampling.")] = 0,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="text (a table) or json (one document).")
    ] = OutputFormat.text,
) -> None:
    """Generate answers with each model, grade them, and report mean reward, pass@k and maj@k."""
    from rft_cli.evaluation import evaluate_models

    run = evaluate_models(
        data,
        grader,
        list(model or []),
        samples_file=samples_file,
        samples=samples,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        limit=limit,
        threshold=threshold,
        seed=seed,
        min_score=min_score,
        output=output,
        plot=plot,
        tools=tools,
        progress=_progress(),
    )
    _render(run, output_format)
    if run.gate == "failed":
        raise typer.Exit(code=1)


def _progress() -> Any:
    """The evaluation's progress on stderr: a line per model or samples file, and a bar in a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rft_cli.evaluation import EvalProgress

    class _Stderr(EvalProgress):
        def note(self, message: str) -> None:
            render.warning(message)

        @contextlib.contextmanager
        def model(self, name: str, rows: int, samples: int, temperature: float) -> Iterator[Any]:
            render.stderr.print(
                f"Evaluating {safe(name)}: {rows} rows x {samples} sample(s), temperature {temperature:g}"
            )
            if not render.stderr.is_terminal:  # a log: plain lines, as the bar would show nothing
                with _plain_generation(name) as report:
                    yield report
                return
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            with Progress(
                *columns,
                console=render.stderr,
                transient=True,
                disable=not render.stderr.is_terminal,
            ) as bar:
                task = bar.add_task("generating", total=rows * (samples if temperature > 0 else 1))
                yield lambda done, total: bar.update(task, completed=done, total=total)

        def samples_file(self, path: Path, models: int, rows: int) -> None:
            render.stderr.print(f"Grading {safe(str(path))}: {models} model(s), {rows} rows")

    return _Stderr()


@contextlib.contextmanager
def _plain_generation(name: str) -> Iterator[Any]:
    """Plain progress lines for one model's evaluation (`rft_cli.cli.ticker`): answers and rate."""
    ticker = Ticker(progress_interval())
    ticker.start(f"{name}: loading the model")
    first: list[tuple[float, int]] = []  # the first batch's time and count: the rate runs from it

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if not first:
            first.append((now, done))
        text = f"{name}: {done}/{total} answers generated"
        if done > first[0][1]:
            text += f", {(done - first[0][1]) / max(now - first[0][0], 1e-9):.3g} answers/s"
        ticker.update(text, now=done == total)

    try:
        yield report
    finally:
        ticker.stop()


def _render(run: Any, output_format: OutputFormat) -> None:
    if output_format is OutputFormat.json:
        render.json_document(run.to_dict())
    else:
        _print_wide(_table(run.reports))
    for report in run.reports:
        if report.episodes and report.episodes["dropped"]:
            render.warning(
                f"{report.model}: {report.episodes['dropped']} episode(s) dropped (scored 0): "
                f"{report.episodes['drop_reason']}"
            )
    if run.gate is not None:
        first = run.reports[0]
        verdict = "[green]passed[/]" if run.gate == "passed" else "[bold red]failed[/]"
        render.stderr.print(
            f"Gate {verdict}: {safe(first.model)} mean reward {first.mean_reward:.4f} "
            f"{'>=' if run.gate == 'passed' else '<'} --min-score {run.min_score:g}"
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
    episodes = any(r.episodes is not None for r in reports)
    names = ["model", "rows", "k", "mean reward", "pass@1", "pass@k", "maj@k", "grader errors"]
    if episodes:
        names += ["tool calls/ep", "tool errors", "tokens/ep", "dropped"]
    for name in [*names, "tokens/s"]:
        left = name in ("model", "grader errors", "tool errors")
        table.add_column(name, justify="left" if left else "right", overflow="fold")
    for r in reports:
        tps = r.tokens_per_second
        cells = [
            safe(r.model),
            str(r.rows),
            str(r.samples),
            f"{r.mean_reward:.4f}",
            f"{r.pass_at[1]:.4f}",
            f"{r.pass_at[r.samples]:.4f}",
            "-" if r.maj_at_k is None else f"{r.maj_at_k:.4f}",
            safe(", ".join(f"{kind}: {n}" for kind, n in r.errors.items()) or "0"),
        ]
        if episodes:
            cells += _episode_cells(r.episodes)
        table.add_row(*cells, "-" if tps is None else f"{tps:.1f}")
    return table


def _episode_cells(summary: dict | None) -> list[str]:
    if summary is None:
        return ["-"] * 4
    kinds = safe(", ".join(f"{k}: {n}" for k, n in summary["tool_errors_by_kind"].items()))
    return [
        f"{summary['tool_calls_per_episode']:.2f}",
        kinds or "0",
        f"{summary['tokens_per_episode']:.1f}",
        f"{summary['dropped']} of {summary['episodes']}",
    ]
