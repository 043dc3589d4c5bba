"""`rft grade`: run a grader on one sample, or on a file of samples paired with dataset rows."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from rft_cli.cli import render
from rft_cli.cli.app import app
from rft_cli.errors import DataError, UsageError

_BINS = ("0", "(0, 0.25)", "[0.25, 0.5)", "[0.5, 0.75)", "[0.75, 1)", "1")

_HELP = """Grade with GRADER, an OpenAI-style grader file (YAML or JSON, `type` at the top).

One sample, like OpenAI's grader run endpoint: --item is the dataset row (a JSON object) and --sample is the model's answer; --format json prints {"reward", "sub_rewards", "errors"}. A long or structured sample comes from a file (--sample-file PATH) or stdin (--sample -): a JSON object with "output_text" and optionally "output_json" and "output_tools" is the sample; any other content is the answer text itself.

A file of samples: --data ROWS.jsonl with --samples SAMPLES.jsonl (one {"output_text": ...} per line, paired by line with ROWS) prints the mean reward, the distribution and the errors by kind; --output writes one result per row.

Example:

    rft grade grader.yaml --item '{"answer_value": "18"}' --sample 'So she makes $18. #### 18' --format json

    rft grade tools.json --item '{"name": "get_weather"}' --sample-file sample.json

    rft grade grader.yaml --data data/test.jsonl --samples samples.jsonl --output graded.jsonl
"""


@app.command(help=_HELP)
def grade(
    grader_path: Annotated[Path, typer.Argument(metavar="GRADER", help="Grader file (YAML or JSON, `type` at the top).")],
    item: Annotated[str | None, typer.Option("--item", help="The dataset row as a JSON object (the `item` namespace).")] = None,
    sample: Annotated[str | None, typer.Option("--sample", help="The model's answer text (the `sample` namespace); - reads it from stdin.")] = None,
    sample_file: Annotated[Path | None, typer.Option("--sample-file", help='Read the sample from a file: {"output_text", "output_json"?, "output_tools"?} or plain text.')] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Dataset JSONL: each row is the `item` of the sample on the same line of --samples.")] = None,
    samples: Annotated[Path | None, typer.Option("--samples", help='JSONL samples, one {"output_text": ...} per line, paired with --data.')] = None,
    output: Annotated[Path | None, typer.Option("--output", help="With --data: write one result per row here (JSONL: reward, sub-rewards, errors).")] = None,
    output_format: Annotated[str, typer.Option("--format", help="text (a summary) or json (one document).")] = "text",
) -> None:
    from rft_cli.graders import load_grader

    if output_format not in ("text", "json"):
        raise UsageError(f'--format "{output_format}" is not one of text, json')
    if sample is not None and sample_file is not None:
        raise UsageError("give the sample once: --sample TEXT, --sample - (stdin) or --sample-file PATH")
    if sample_file is not None or sample == "-":
        sample = _read_sample(sample_file)
    single = sample is not None or item is not None
    if single == (data is not None or samples is not None):
        raise UsageError("give either --sample (and --item) for one sample, or --data with --samples for a file of samples")
    with load_grader(grader_path) as grader:
        if single:
            _grade_one(grader, item, sample, output_format)
        else:
            _grade_files(grader, data, samples, output, output_format)


SAMPLE_KEYS = ("output_text", "output_json", "output_tools")


def _read_sample(path: Path | None) -> Any:
    """The sample from a file (or stdin when `path` is None): a sample object, or the answer text."""
    import sys

    where = str(path) if path is not None else "stdin"
    try:
        text = path.read_text(encoding="utf-8-sig") if path is not None else sys.stdin.read()
    except OSError as exc:
        raise UsageError(f"--sample-file {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: the sample is not valid UTF-8 ({exc.reason}); save it as UTF-8") from None
    plain = text.removesuffix("\n").removesuffix("\r")  # the newline `echo` and editors add ends no answer
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return plain
    if not (isinstance(value, dict) and "output_text" in value):
        return plain  # the answer itself (JSON answers reach graders as sample.output_json)
    return _check_sample(value, where)


def _check_sample(value: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = [key for key in value if key not in SAMPLE_KEYS]
    if unknown:
        raise UsageError(f"{where}: unknown sample key {unknown[0]!r}; a sample has {', '.join(SAMPLE_KEYS)}")
    if not isinstance(value["output_text"], str):
        raise UsageError(f'{where}: "output_text" must be a string (the model\'s answer text)')
    if "output_tools" in value and not isinstance(value["output_tools"], list):
        raise UsageError(f'{where}: "output_tools" must be a list of tool calls ({{"function": {{"name", "arguments"}}}})')
    return value


def _grade_one(grader: Any, item_text: str | None, sample: Any, output_format: str) -> None:
    if sample is None:
        raise UsageError("--item needs --sample or --sample-file (the model's answer to grade)")
    try:
        item = json.loads(item_text) if item_text is not None else {}
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"--item is not valid JSON ({exc}); pass an object such as '{{\"answer\": \"42\"}}'") from None
    if not isinstance(item, dict):
        raise UsageError("--item must be a JSON object such as '{\"answer\": \"42\"}'")
    from rft_cli.tool_calls import grade_answers

    (result,) = grade_answers(grader, [sample], [item])  # an item with tools: calls read from the text
    if output_format == "json":
        render.json_document(result.to_dict())
        return
    render.stdout.print(f"reward: {result.reward:.4g}")
    for name, reward in result.sub_rewards.items():
        render.stdout.print(f"  {name}: {reward:.4g}")
    if result.answer is not None:
        render.stdout.print(f"answer: {result.answer}")
    for kind, count in result.errors.items():
        detail = result.details.get(kind)
        render.stdout.print(f"error: {kind} x{count}" + (f" ({detail})" if detail else ""), markup=False)


def _read_objects(path: Path, what: str) -> list[tuple[int, Any]]:
    from rft_cli.data.records import parse_line

    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 ({exc.reason}); save the file as UTF-8") from None
    values = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            values.append((number, parse_line(line)))
        except ValueError as exc:
            raise DataError(f"{path} line {number}: invalid JSON ({exc})") from None
    return values


def _load_pairs(data: Path, samples: Path) -> tuple[list[dict], list[Any]]:
    rows = _read_objects(data, "the rows")
    outputs = _read_objects(samples, "the samples")
    if len(rows) != len(outputs):
        raise DataError(
            f"{samples} has {len(outputs)} samples but {data} has {len(rows)} rows; "
            "write one sample per row, in the same order"
        )
    for number, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{data} line {number}: a row must be a JSON object")
    for number, value in outputs:
        if not (isinstance(value, str) or (isinstance(value, dict) and isinstance(value.get("output_text"), str))):
            raise DataError(f'{samples} line {number}: a sample must be {{"output_text": "..."}} (or a JSON string)')
    return [row for _, row in rows], [value for _, value in outputs]


def _bin(reward: float) -> str:
    if reward == 0.0:
        return "0"
    if reward == 1.0:
        return "1"
    if not 0.0 < reward < 1.0:
        return "outside [0, 1]"
    return _BINS[1 + int(reward * 4)]


def summarize(rewards: list[float], errors: Counter) -> dict[str, Any]:
    """Mean, distribution over fixed bins, and errors by kind."""
    counts = dict.fromkeys(_BINS, 0)
    for reward in rewards:
        label = _bin(reward)
        counts[label] = counts.get(label, 0) + 1
    mean = sum(rewards) / len(rewards) if rewards else 0.0
    return {"n": len(rewards), "mean_reward": mean, "distribution": counts, "errors": dict(errors)}


def _grade_files(grader: Any, data: Path | None, samples: Path | None, output: Path | None, output_format: str) -> None:
    if data is None or samples is None:
        raise UsageError("--data and --samples go together (rows and the samples to grade, paired by line)")
    rows, outputs = _load_pairs(data, samples)
    from rft_cli.tool_calls import grade_answers

    results = grade_answers(grader, outputs, rows)  # rows with tools: calls read from the text
    errors: Counter = Counter()
    for result in results:
        errors.update(result.errors)
    summary = summarize([r.reward for r in results], errors)
    if output is not None:
        _write_results(output, results)
        summary["output"] = str(output)
    if output_format == "json":
        render.json_document(summary)
    else:
        _print_summary(summary)


def _write_results(path: Path, results: list) -> None:
    try:
        with path.open("w", encoding="utf-8") as handle:
            for index, result in enumerate(results, start=1):
                record = {"row": index, **result.to_dict(), "answer": result.answer}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the results ({exc.strerror or exc})") from None


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

    render.stdout.print(f"graded {summary['n']} samples; mean reward {summary['mean_reward']:.4f}")
    table = Table("reward", "samples", "share")
    for label, count in summary["distribution"].items():
        table.add_row(label, str(count), f"{count / max(1, summary['n']):.1%}")
    render.stdout.print(table)
    if summary["errors"]:
        errors = ", ".join(f"{kind} x{count}" for kind, count in sorted(summary["errors"].items()))
        render.stdout.print(f"errors: {errors}", markup=False)
    else:
        render.stdout.print("errors: none")
    if "output" in summary:
        render.stdout.print(f"per-row results: {summary['output']}", markup=False)
