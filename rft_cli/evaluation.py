"""Score a model the way its grader sees it: generate, grade, and summarise (pass@k, maj@k, ...).

    report = evaluate("runs/gsm8k", rows, grader, samples=4, temperature=1.0)
    report.mean_reward, report.pass_at[1], report.pass_at[4], report.maj_at_k

Outputs produced elsewhere (vLLM, an API) are graded with `grade_outputs` or `load_samples_file`.
Nothing here prints; `rft_cli.cli.evaluate` renders the reports.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rft_cli.data.records import parse_line, prompt_messages
from rft_cli.errors import DataError, UsageError
from rft_cli.generation import ProgressFn

DEFAULT_THRESHOLD = 1.0


@dataclass
class SampleResult:
    """One graded answer: which row and sample it is, its text, and its grade."""

    row: int
    sample: int
    output_text: str
    reward: float
    passed: bool
    sub_rewards: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    answer: str | None = None
    num_tokens: int | None = None
    truncated: bool | None = None


@dataclass
class EvalReport:
    """The summary of one model on one set of rows (see README "rft eval" for the definitions)."""

    model: str
    rows: int
    samples: int
    threshold: float
    mean_reward: float
    pass_at: dict[int, float]
    maj_at_k: float | None
    errors: dict[str, int]
    sub_rewards: dict[str, float]
    generated_tokens: int | None = None
    generation_seconds: float | None = None
    truncated_fraction: float | None = None
    results: list[SampleResult] = field(default_factory=list, repr=False)

    @property
    def tokens_per_second(self) -> float | None:
        if not self.generated_tokens or not self.generation_seconds:
            return None
        return self.generated_tokens / self.generation_seconds

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data (per-sample results left out)."""
        data = {k: v for k, v in asdict(self).items() if k != "results"}
        data["pass_at"] = {str(k): v for k, v in self.pass_at.items()}
        data["tokens_per_second"] = self.tokens_per_second
        return data


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021: 1 - C(n-c, k) / C(n, k), for n samples with c passing.

    >>> round(pass_at_k(4, 1, 2), 4)
    0.5
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    # The product form avoids huge binomials: C(n-c,k)/C(n,k) = prod_{i=n-c+1..n} (1 - k/i).
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def majority_answer(answers: Sequence[str | None]) -> str | None:
    """The most common extracted answer (None ignored); a tie goes to the answer seen first."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def evaluate(
    model_path: str,
    rows: Sequence[dict],
    grader: Any,
    *,
    samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 512,
    batch_size: int = 32,
    threshold: float = DEFAULT_THRESHOLD,
    seed: int | None = None,
    progress: ProgressFn | None = None,
) -> EvalReport:
    """Generate `samples` answers per row with the model and grade them.

    Args:
        model_path: a model folder, checkpoint folder, run folder (its `final/`) or hub id.
        rows: dataset rows (the `rft validate` contract); the prompt is `prompt_messages(row)`.
        grader: a `Grader`; each row is the grader's `item`.
        threshold: a sample passes when its reward is at least this.
    Returns:
        An EvalReport, with per-sample results in `.results`.
    """
    from rft_cli.data.openai_rows import row_tools
    from rft_cli.generation import generate_completions, load_model_for_inference
    from rft_cli.tool_calls import output_parser

    model, tokenizer = load_model_for_inference(model_path)
    started = time.perf_counter()
    completions = generate_completions(
        model,
        tokenizer,
        [prompt_messages(r) for r in rows],
        tools=[row_tools(r) for r in rows],
        max_new_tokens=max_new_tokens,
        num_samples=samples,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        progress=progress,
        seed=seed,
    )
    seconds = time.perf_counter() - started
    report = grade_outputs(
        str(model_path),
        rows,
        [[c.text for c in per_row] for per_row in completions],
        grader,
        threshold=threshold,
        parser=output_parser(tokenizer),
    )
    flat = [c for per_row in completions for c in per_row]
    for result, completion in zip(report.results, flat, strict=True):
        result.num_tokens, result.truncated = completion.num_tokens, completion.truncated
    # Greedy samples of a row are copies of one generation: count the tokens actually generated.
    generated = [per_row[0] for per_row in completions] if temperature == 0 else flat
    report.generated_tokens = sum(c.num_tokens for c in generated)
    report.generation_seconds = seconds
    report.truncated_fraction = sum(c.truncated for c in flat) / len(flat)
    return report


def grade_outputs(
    name: str,
    rows: Sequence[dict],
    outputs: Sequence[Sequence[str]],
    grader: Any,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    parser: Any = None,
) -> EvalReport:
    """Grade given answers (`outputs[i]` holds row i's samples, the same number for every row).

    Rows with `tools` have the answers' tool calls read into `sample.output_tools` by `parser`
    (`rft_cli.tool_calls`; the family parsers when None)."""
    from rft_cli.tool_calls import grade_answers

    if len(outputs) != len(rows):
        raise UsageError(f"{name}: {len(outputs)} lists of outputs for {len(rows)} rows")
    counts = {len(o) for o in outputs}
    if len(counts) != 1 or 0 in counts:
        raise DataError(
            f"{name}: every row needs the same number of samples (at least one); got {sorted(counts)}"
        )
    samples = counts.pop()
    texts = [text for per_row in outputs for text in per_row]
    items = [row for row in rows for _ in range(samples)]
    grades = grade_answers(grader, texts, items, parser)
    results = [
        SampleResult(
            row=i // samples,
            sample=i % samples,
            output_text=t,
            reward=float(g.reward),
            passed=float(g.reward) >= threshold,
            sub_rewards=dict(g.sub_rewards),
            errors=dict(g.errors),
            answer=g.answer,
        )
        for i, (t, g) in enumerate(zip(texts, grades, strict=True))
    ]
    return summarize(name, results, len(rows), samples, threshold)


def summarize(
    name: str, results: list[SampleResult], rows: int, samples: int, threshold: float
) -> EvalReport:
    """Compute the report's metrics from graded samples (`results` ordered by row, then sample)."""
    by_row = [results[i * samples : (i + 1) * samples] for i in range(rows)]
    passes = [sum(r.passed for r in per_row) for per_row in by_row]
    ks = sorted({1, samples})
    return EvalReport(
        model=name,
        rows=rows,
        samples=samples,
        threshold=threshold,
        mean_reward=sum(r.reward for r in results) / len(results),
        pass_at={k: sum(pass_at_k(samples, c, k) for c in passes) / rows for k in ks},
        maj_at_k=_maj_at_k(by_row),
        errors=_sum_counts(r.errors for r in results),
        sub_rewards=_mean_sub_rewards(results),
        results=results,
    )


def _maj_at_k(by_row: list[list[SampleResult]]) -> float | None:
    """Share of rows whose majority answer passes; None when the grader extracts no answers."""
    if not any(r.answer is not None for per_row in by_row for r in per_row):
        return None
    correct = 0
    for per_row in by_row:
        voted = majority_answer([r.answer for r in per_row])
        # Samples with the same answer get the same grade; the first one speaks for them.
        correct += voted is not None and next(r for r in per_row if r.answer == voted).passed
    return correct / len(by_row)


def _sum_counts(counts: Any) -> dict[str, int]:
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return dict(sorted(total.items()))


def _mean_sub_rewards(results: list[SampleResult]) -> dict[str, float]:
    values: dict[str, list[float]] = defaultdict(list)
    for r in results:
        for key, value in r.sub_rewards.items():
            values[key].append(float(value))
    return {key: sum(v) / len(v) for key, v in sorted(values.items())}


def load_samples_file(path: str | Path, num_rows: int) -> dict[str, list[list[str]]]:
    """Read outputs produced elsewhere: {name: outputs per row}, ready for `grade_outputs`.

    Each line is a JSON object with `output_text`. Without a `row` field, line i answers row i
    (one sample per row). With `row` (0-based index into the data file), lines are grouped by row,
    so a row may have several samples. A `model` field (as `rft eval --output` writes) splits the
    file into one entry per model; otherwise the entry is named after the file. Rows at or past
    `num_rows` (after --limit) are ignored.
    """
    path = Path(path)
    lines = list(_iter_sample_lines(path))
    keyed = [("row" in obj) for _, obj in lines]
    if any(keyed) and not all(keyed):
        raise DataError(
            f'{path}: some lines have a "row" field and some do not (give it on every line or none)'
        )
    grouped: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for index, (line_no, obj) in enumerate(lines):
        row = obj["row"] if keyed[index] else index
        if not isinstance(row, int) or isinstance(row, bool) or row < 0:
            raise DataError(
                f'{path} line {line_no}: "row" must be a row index (0, 1, ...), got {row!r}'
            )
        if row < num_rows:
            grouped[str(obj.get("model", path.name))][row].append(obj["output_text"])
    return {name: _rows_in_order(path, name, by_row, num_rows) for name, by_row in grouped.items()}


def _iter_sample_lines(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the samples file ({exc})") from None
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = parse_line(line)
        except ValueError as exc:
            raise DataError(f"{path} line {line_no}: invalid JSON ({exc})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("output_text"), str):
            raise DataError(
                f'{path} line {line_no}: each line needs an "output_text" string, '
                f'e.g. {{"row": 0, "output_text": "42"}}'
            )
        yield line_no, obj


def _rows_in_order(
    path: Path, name: str, by_row: dict[int, list[str]], num_rows: int
) -> list[list[str]]:
    missing = [i for i in range(num_rows) if i not in by_row]
    if missing:
        label = f" (model {name})" if name != path.name else ""
        raise DataError(
            f"{path}{label}: no output for row {missing[0]} ({len(missing)} rows missing); "
            f"the file needs an output for each of the {num_rows} data rows"
        )
    return [by_row[i] for i in range(num_rows)]


def write_results(path: str | Path, reports: Sequence[EvalReport], rows: Sequence[dict]) -> None:
    """Write one JSON line per model, row and sample: prompt, output, reward, sub-rewards, errors."""
    path = Path(path)
    try:
        with path.open("w", encoding="utf-8") as handle:
            for report in reports:
                for r in report.results:
                    record = {
                        "model": report.model,
                        "prompt": prompt_messages(rows[r.row]),
                        **asdict(r),
                    }
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write results ({exc.strerror or exc})") from None
