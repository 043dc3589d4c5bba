"""Grade answers made elsewhere: one sample (like OpenAI's grader run endpoint), or a samples file.

A samples file is the one format `rft grade --samples` and `rft eval --samples-file` both read
(and `rft eval --output` writes): one JSON object per line with `output_text` (and optionally
`output_json`, `output_tools`), an optional `row` (0-based index into the data file) and an
optional `model`. Without `row`, line i answers row i. A line that is a bare JSON string (the
format `rft grade --samples` read before) is still read as `{"output_text": ...}`, with a note.

    with load_grader("grader.yaml") as grader:
        report = grade_file(grader, "rows.jsonl", "samples.jsonl")
    report.summary["mean_reward"]

Nothing here prints; `rft_cli.cli.grade` renders the results.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rft_cli.errors import ConfigError, DataError
from rft_cli.jsonl import read_values
from rft_cli.tool_calls import grade_answers

if TYPE_CHECKING:  # the graders load on first use, not with this module
    from rft_cli.graders import GraderArg
    from rft_cli.graders.base import GradeResult

SAMPLE_KEYS = ("output_text", "output_json", "output_tools")
LINE_KEYS = (*SAMPLE_KEYS, "row", "model")
BINS = ("0", "(0, 0.25)", "[0.25, 0.5)", "[0.5, 0.75)", "[0.75, 1)", "1")


@dataclass
class SampleLine:
    """One line of a samples file: where it is, the sample, and which row (and model) it answers."""

    line: int
    sample: dict[str, Any]
    row: int | None = None
    model: str | None = None


@dataclass
class SamplesFile:
    """The lines of a samples file, and notes for the user (an old format read, ...)."""

    path: Path
    lines: list[SampleLine]
    notes: list[str] = field(default_factory=list)

    @property
    def keyed(self) -> bool:
        """True when the lines name their row (`row`), False when line i answers row i."""
        return bool(self.lines) and self.lines[0].row is not None


@dataclass
class GradeFileReport:
    """A graded samples file: the summary (mean, distribution, errors) and one result per sample."""

    summary: dict[str, Any]
    results: list[GradeResult]
    notes: list[str] = field(default_factory=list)


def read_samples_file(path: str | Path) -> SamplesFile:
    """Read a samples file (see the module docstring); raises DataError naming the first bad line."""
    path = Path(path)
    lines, old = [], []
    for line_no, value in read_values(path, "the samples file"):
        if isinstance(value, str):  # the old `rft grade --samples` form: the answer text alone
            old.append(line_no)
            value = {"output_text": value}
        lines.append(_sample_line(path, line_no, value))
    keyed = [line.row is not None for line in lines]
    if any(keyed) and not all(keyed):
        raise DataError(
            f'{path}: some lines have a "row" field and some do not (give it on every line or none)'
        )
    notes = []
    if old:
        notes.append(
            f"{path}: {len(old)} line(s) (first: line {old[0]}) are a bare JSON string, the old samples "
            'format; they were read as {"output_text": ...}, which is the format to write'
        )
    return SamplesFile(path, lines, notes)


def _sample_line(path: Path, line_no: int, value: Any) -> SampleLine:
    if not isinstance(value, dict) or not isinstance(value.get("output_text"), str):
        raise DataError(
            f'{path} line {line_no}: a sample must be {{"output_text": "..."}} ("row" and "model" '
            f'optional), e.g. {{"row": 0, "output_text": "42"}}'
        )
    row = value.get("row")
    if row is not None and (not isinstance(row, int) or isinstance(row, bool) or row < 0):
        raise DataError(
            f'{path} line {line_no}: "row" must be a row index (0, 1, ...), got {row!r}'
        )
    sample = {key: value[key] for key in SAMPLE_KEYS if key in value}
    model = value.get("model")
    return SampleLine(line_no, sample, row, None if model is None else str(model))


def read_items(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a data file as grader items (any JSON object); DataError naming a bad line."""
    path = Path(path)
    rows = read_values(path, "the rows")
    for number, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{path} line {number}: a row must be a JSON object")
    return [row for _, row in rows]


def pair_with_rows(
    samples: SamplesFile, rows: list[dict], data: str | Path
) -> list[tuple[int, dict[str, Any]]]:
    """(row index, sample) for every sample; line i answers row i unless the lines give `row`."""
    if samples.keyed:
        for line in samples.lines:
            if line.row is not None and line.row >= len(rows):
                raise DataError(
                    f"{samples.path} line {line.line}: row {line.row} is past the {len(rows)} rows of {data}"
                )
        return [(int(line.row or 0), line.sample) for line in samples.lines]
    if len(samples.lines) != len(rows):
        raise DataError(
            f"{samples.path} has {len(samples.lines)} samples but {data} has {len(rows)} rows; "
            'write one sample per row, in the same order (or give each line its "row")'
        )
    return [(index, line.sample) for index, line in enumerate(samples.lines)]


def grade_file(
    grader: GraderArg, data: str | Path, samples: str | Path, output: str | Path | None = None
) -> GradeFileReport:
    """Grade every sample of a samples file against its row of `data`; write per-sample results to `output`.

    Args:
        grader: a `Grader` (see `load_grader`), or the path of a grader file (loaded, and closed
            at the end).
        data: JSONL rows, one grader `item` per line.
        samples: a samples file (see the module docstring).
        output: where to write one JSON line per sample (`row` counts from 1 there), or None.
    Returns:
        A GradeFileReport: `summary` has n, mean_reward, distribution and errors (and output).
    """
    from rft_cli.graders import opened_grader

    with opened_grader(grader) as the_grader:
        rows, read = read_items(data), read_samples_file(samples)
        pairs = pair_with_rows(read, rows, data)
        results = grade_answers(
            the_grader, [sample for _, sample in pairs], [rows[index] for index, _ in pairs]
        )
    errors: Counter = Counter()
    for result in results:
        errors.update(result.errors)
    summary = summarize_rewards([r.reward for r in results], errors)
    if output is not None:
        write_grades(output, [index + 1 for index, _ in pairs], results)
        summary["output"] = str(output)
    return GradeFileReport(summary, results, read.notes)


def _bin(reward: float) -> str:
    if reward == 0.0:
        return "0"
    if reward == 1.0:
        return "1"
    if not 0.0 < reward < 1.0:
        return "outside [0, 1]"
    return BINS[1 + int(reward * 4)]


def summarize_rewards(rewards: list[float], errors: Counter) -> dict[str, Any]:
    """Mean, distribution over fixed bins, and errors by kind."""
    counts = dict.fromkeys(BINS, 0)
    for reward in rewards:
        label = _bin(reward)
        counts[label] = counts.get(label, 0) + 1
    mean = sum(rewards) / len(rewards) if rewards else 0.0
    return {"n": len(rewards), "mean_reward": mean, "distribution": counts, "errors": dict(errors)}


def write_grades(path: str | Path, rows: list[int], results: list[Any]) -> None:
    """One JSON line per graded sample: its row (from 1), reward, sub-rewards, errors and answer."""
    path = Path(path)
    try:
        with path.open("w", encoding="utf-8") as handle:
            for row, result in zip(rows, results, strict=True):
                record = {"row": row, **result.to_dict(), "answer": result.answer}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the results ({exc.strerror or exc})") from None


# -- one sample ---------------------------------------------------------------------------------


def grade_sample(grader: Any, sample: Any, item: dict[str, Any]) -> Any:
    """Grade one sample against its item; an item with `tools` has the answer's tool calls read
    into `sample.output_tools` (`rft_cli.tool_calls`)."""
    (result,) = grade_answers(grader, [sample], [item])
    return result


def read_sample(text: str, where: str) -> Any:
    """A sample given as text: a JSON object with `output_text` is the sample, anything else the answer."""
    plain = text.removesuffix("\n").removesuffix(
        "\r"
    )  # the newline `echo` and editors add ends no answer
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return plain
    if not (isinstance(value, dict) and "output_text" in value):
        return plain  # the answer itself (JSON answers reach graders as sample.output_json)
    return check_sample(value, where)


def read_sample_file(path: str | Path) -> Any:
    """The sample in a file (see `read_sample`); ConfigError when it cannot be read as UTF-8 text."""
    from rft_cli.files import read_text

    return read_sample(read_text(path, "the sample file"), str(path))


def check_sample(value: dict[str, Any], where: str) -> dict[str, Any]:
    """A sample object has only `output_text` (a string), `output_json` and `output_tools` (a list)."""
    unknown = [key for key in value if key not in SAMPLE_KEYS]
    if unknown:
        raise ConfigError(
            f"{where}: unknown sample key {unknown[0]!r}; a sample has {', '.join(SAMPLE_KEYS)}"
        )
    if not isinstance(value["output_text"], str):
        raise ConfigError(f'{where}: "output_text" must be a string (the model\'s answer text)')
    if "output_tools" in value and not isinstance(value["output_tools"], list):
        raise ConfigError(
            f'{where}: "output_tools" must be a list of tool calls ({{"function": {{"name", "arguments"}}}})'
        )
    return value


def parse_item(text: str | None) -> dict[str, Any]:
    """The `--item` JSON object (an empty item when none is given)."""
    try:
        item = json.loads(text) if text is not None else {}
    except (ValueError, RecursionError) as exc:
        raise ConfigError(
            f'--item is not valid JSON ({exc}); pass an object such as \'{{"answer": "42"}}\''
        ) from None
    if not isinstance(item, dict):
        raise ConfigError('--item must be a JSON object such as \'{"answer": "42"}\'')
    return item
