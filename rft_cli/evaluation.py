"""Score a model the way its grader sees it: generate, grade, and summarise (pass@k, maj@k, ...).

    report = evaluate("runs/gsm8k", rows, grader, samples=4, temperature=1.0)
    report.mean_reward, report.pass_at[1], report.pass_at[4], report.maj_at_k

Outputs produced elsewhere (vLLM, an API) are graded with `grade_outputs` or `load_samples_file`.
Nothing here prints; `rft_cli.cli.evaluate` renders the reports.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rft_cli import threads
from rft_cli.data.openai_rows import row_tools, tool_names
from rft_cli.data.records import episode_prompt_messages, iter_rows, prompt_messages
from rft_cli.errors import ConfigError, DataError
from rft_cli.generation import ProgressFn, generate_completions, load_model_for_inference
from rft_cli.graders import GraderArg, opened_grader
from rft_cli.plots import plot_eval_comparison, require_matplotlib
from rft_cli.samples_file import read_samples_file
from rft_cli.tool_calls import grade_answers, output_parser

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
    episode: dict[str, Any] | None = None  # an episode's facts (`rft eval --tools`)
    turns: list[dict[str, Any]] | None = (
        None  # its turns after the prompt: calls, tool results, answer
    )


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
    episodes: dict[str, Any] | None = None  # `rft eval --tools`: see `episode_summary`
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
    grader: GraderArg,
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
        grader: a `Grader`, or the path of a grader file (loaded, and closed at the end); each
            row is the grader's `item`.
        threshold: a sample passes when its reward is at least this.
    Returns:
        An EvalReport, with per-sample results in `.results`.
    """
    with opened_grader(grader) as the_grader:  # a bad grader file fails before the model loads
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
            the_grader,
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


def evaluate_episodes(
    model_path: str,
    rows: Sequence[dict],
    grader: Any,
    toolbox: Any,
    limits: Any,
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
    """Run `samples` episodes with tools per row and grade each whole episode.

    The prompt is `episode_prompt_messages(row)`; a row's own `tools` are the definitions its
    episodes offer, else every tool of `toolbox`. A dropped episode (a tool failed past its
    retries) is not graded: it scores 0 with the error `episode_dropped`, and the report counts it.
    `limits` is an `EpisodeLimits` (its `max_new_tokens` is replaced by this call's).
    """
    from rft_cli.episodes import ModelPolicy, grade_episodes, run_episodes

    model, tokenizer = load_model_for_inference(model_path)
    copies = 1 if temperature == 0 else samples
    jobs = [i for i in range(len(rows)) for _ in range(copies)]
    limits = replace(limits, max_new_tokens=max_new_tokens)
    started = time.perf_counter()
    episodes = run_episodes(
        ModelPolicy(model, tokenizer, temperature, top_p),
        tokenizer,
        [episode_prompt_messages(rows[i]) for i in jobs],
        [rows[i] for i in jobs],
        toolbox,
        tools=[row_tools(rows[i]) for i in jobs],
        limits=limits,
        batch_size=batch_size,
        parser=output_parser(tokenizer),
        seed=seed,
        progress=progress,
    )
    seconds = time.perf_counter() - started
    grades = grade_episodes(grader, episodes)
    # Greedy samples of a row are copies of its one episode.
    picks = [
        (row, k, row * copies + k % copies) for row in range(len(rows)) for k in range(samples)
    ]
    results = [_episode_result(row, k, episodes[j], grades[j], threshold) for row, k, j in picks]
    report = summarize_results(str(model_path), results, len(rows), samples, threshold)
    report.generated_tokens = sum(e.policy_tokens for e in episodes)
    report.generation_seconds = seconds
    report.truncated_fraction = sum(e.end == "truncated" for e in episodes) / len(episodes)
    report.episodes = episode_summary(episodes)
    return report


def _episode_result(
    row: int, sample: int, episode: Any, grade: Any, threshold: float
) -> SampleResult:
    from rft_cli.episodes import EPISODE_DROPPED

    facts = (
        {**episode.facts(), "drop_reason": episode.drop_reason}
        if episode.dropped
        else episode.facts()
    )
    reward = float(grade.reward) if grade is not None else 0.0
    return SampleResult(
        row=row,
        sample=sample,
        output_text=episode.final_text,
        reward=reward,
        passed=grade is not None and reward >= threshold,
        sub_rewards=dict(grade.sub_rewards) if grade is not None else {},
        errors=dict(grade.errors) if grade is not None else {EPISODE_DROPPED: 1},
        answer=grade.answer if grade is not None else None,
        num_tokens=episode.policy_tokens,
        truncated=episode.end == "truncated",
        episode=facts,
        turns=[dict(m) for m in episode.messages],
    )


def episode_summary(episodes: Sequence[Any]) -> dict[str, Any]:
    """What `rft eval --tools` reports beside the rewards, over the episodes run (a greedy
    episode once, however many samples copy it)."""
    n = len(episodes)
    kinds = _sum_counts(e.tool_errors for e in episodes)
    dropped = [e for e in episodes if e.dropped]
    return {
        "episodes": n,
        "tool_calls_per_episode": sum(e.tool_calls for e in episodes) / n,
        "steps_per_episode": sum(e.steps for e in episodes) / n,
        "tool_errors": sum(kinds.values()),
        "tool_errors_by_kind": kinds,
        "tokens_per_episode": sum(len(e.ids) for e in episodes) / n,
        "policy_tokens_per_episode": sum(e.policy_tokens for e in episodes) / n,
        "dropped": len(dropped),
        "drop_reason": dropped[0].drop_reason if dropped else None,
        "ends": dict(sorted(Counter(e.end for e in episodes).items())),
    }


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
    if len(outputs) != len(rows):
        raise ConfigError(f"{name}: {len(outputs)} lists of outputs for {len(rows)} rows")
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
    return summarize_results(name, results, len(rows), samples, threshold)


def summarize_results(
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


def load_samples_file(
    path: str | Path, num_rows: int, notes: list[str] | None = None
) -> dict[str, list[list[str]]]:
    """Read outputs produced elsewhere: {name: outputs per row}, ready for `grade_outputs`.

    The file is the samples format of `rft_cli.samples_file` (the one `rft grade --samples` reads).
    Without a `row` field, line i answers row i (one sample per row). With `row` (0-based index
    into the data file), lines are grouped by row, so a row may have several samples. A `model`
    field (as `rft eval --output` writes) splits the file into one entry per model; otherwise the
    entry is named after the file. Rows at or past `num_rows` (after --limit) are ignored. Notes
    for the user (an old format read) are appended to `notes`.
    """
    read = read_samples_file(path)
    if notes is not None:
        notes.extend(read.notes)
    grouped: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for index, line in enumerate(read.lines):
        row = line.row if line.row is not None else index
        if row < num_rows:
            grouped[line.model or read.path.name][row].append(line.sample["output_text"])
    return {
        name: _rows_in_order(read.path, name, by_row, num_rows) for name, by_row in grouped.items()
    }


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
                    fields = asdict(r)
                    if r.episode is None:  # a plain answer: no episode keys
                        fields = {k: v for k, v in fields.items() if k not in ("episode", "turns")}
                    prompt = episode_prompt_messages if r.episode is not None else prompt_messages
                    record = {"model": report.model, "prompt": prompt(rows[r.row]), **fields}
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write results ({exc.strerror or exc})") from None


# -- a whole `rft eval`: models and samples files against one data file and grader ---------------


SAMPLING_TEMPERATURE = 1.0  # the default temperature when several samples per row are drawn


class EvalProgress:
    """What an evaluation reports while it runs; the command line shows it on stderr. Silent here."""

    def note(self, message: str) -> None:
        """A warning for the user (greedy samples that are all alike, an old samples format...)."""

    @contextlib.contextmanager
    def model(
        self, name: str, rows: int, samples: int, temperature: float
    ) -> Iterator[ProgressFn | None]:
        """Around one model's generation; yields the (done, total) callback generation reports to."""
        yield None

    def samples_file(self, path: Path, models: int, rows: int) -> None:
        """A samples file is about to be graded."""


@dataclass
class EvalRun:
    """The reports of every model (the first one gates), the temperature used, and the gate."""

    reports: list[EvalReport]
    temperature: float | None  # None when nothing was generated (samples files only)
    min_score: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def gate(self) -> str | None:
        """ "passed" or "failed" when a min_score was given: the first model's mean reward against it."""
        if self.min_score is None:
            return None
        return "passed" if self.reports[0].mean_reward >= self.min_score else "failed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "min_score": self.min_score,
            "gate": self.gate,
            "models": [r.to_dict() for r in self.reports],
        }


def evaluate_models(
    data: str | Path,
    grader: GraderArg,
    models: Sequence[str] = (),
    *,
    samples_file: str | Path | None = None,
    samples: int = 1,
    temperature: float | None = None,
    top_p: float = 1.0,
    max_new_tokens: int = 512,
    batch_size: int = 32,
    limit: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    seed: int = 0,
    min_score: float | None = None,
    output: str | Path | None = None,
    plot: str | Path | None = None,
    tools: str | Path | None = None,
    progress: EvalProgress | None = None,
) -> EvalRun:
    """Evaluate each model (and the outputs of a samples file) on the rows of `data` with one grader.

    Args:
        data: JSONL rows (the `rft validate` format).
        grader: a `Grader`, or the path of a grader file (YAML or JSON; loaded, and closed at the end).
        models: model folders, checkpoints, run folders (their `final/`) or hub ids.
        samples_file: outputs made elsewhere (see `rft_cli.samples_file`), graded as further models.
        samples: answers per row; temperature: None is greedy for one sample, 1.0 for more.
        limit: evaluate only the first rows; threshold: a sample passes at this reward or above.
        min_score: the gate on the first model's mean reward (`run.gate`).
        output: write one JSON line per model, row and sample here.
        plot: a bar chart of the models (.png or .html; needs matplotlib).
        tools: a recipe or tools file (`tools:` and `episode:`): each model then runs episodes
            with those tools, graded whole (docs/agent.md).
    Returns:
        An EvalRun; `run.gate` is "failed" when the first model's mean reward is below min_score.

    Example:
        >>> run = evaluate_models("data/test.jsonl", "grader.yaml", ["runs/tiny"], samples=4)  # doctest: +SKIP
        >>> run.reports[0].pass_at[4]  # doctest: +SKIP
    """
    progress = progress or EvalProgress()
    notes: list[str] = []
    _check_outputs(models, samples_file, output, plot)
    temperature = _pick_temperature(temperature, samples, bool(models), notes)
    for note in notes:
        progress.note(note)
    rows = _load_rows(Path(data), limit)
    generation = {
        "samples": samples,
        "temperature": temperature,
        "top_p": top_p,
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "threshold": threshold,
        "seed": seed,
    }
    episodes = _load_tools(tools, Path(data), rows, samples_file) if tools is not None else None
    with opened_grader(grader) as the_grader, episodes or contextlib.nullcontext():
        _check_item_fields(Path(data), rows, the_grader)
        plain = [row for _, row in rows]
        reports = [
            _evaluate_one(m, plain, the_grader, generation, progress, episodes) for m in models
        ]
        if samples_file is not None:
            reports += _grade_samples_file(
                Path(samples_file), plain, the_grader, threshold, progress, notes
            )
    if output is not None:
        write_results(output, reports, plain)
    if plot is not None:
        plot_eval_comparison(reports, plot)
    return EvalRun(reports, temperature if models else None, min_score, notes)


def _check_outputs(models: Sequence[str], samples_file: Any, output: Any, plot: Any) -> None:
    """Fail now, not after an hour of generation, on nothing to do or outputs that cannot be written."""
    if not models and samples_file is None:
        raise ConfigError(
            "nothing to evaluate: pass --model PATH (repeatable) or --samples-file FILE"
        )
    if plot is not None:
        if Path(plot).suffix.lower() not in (".png", ".html", ".htm"):
            raise ConfigError(f"--plot {plot}: the plot must be a .png or .html file")
        require_matplotlib()
    if output is not None:
        parent = Path(output).parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise ConfigError(
                f"--output {output}: the folder {parent} does not exist or is not writable"
            )


def _pick_temperature(
    temperature: float | None, samples: int, generating: bool, notes: list[str]
) -> float:
    if temperature is None:
        return 0.0 if samples == 1 else SAMPLING_TEMPERATURE
    if temperature == 0 and samples > 1 and generating:
        notes.append(
            f"--temperature 0 is greedy: the {samples} samples of a row are identical, "
            f"so pass@{samples} equals pass@1"
        )
    return temperature


def _load_rows(data: Path, limit: int | None) -> list[tuple[int, dict]]:
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


def _evaluate_one(
    model: str,
    rows: list[dict],
    grader: Any,
    generation: dict[str, Any],
    progress: EvalProgress,
    episodes: _Episodes | None = None,
) -> EvalReport:
    _quiet_transformers()
    threads.govern()
    with progress.model(
        model, len(rows), generation["samples"], generation["temperature"]
    ) as report_progress:
        if episodes is not None:
            return evaluate_episodes(
                model,
                rows,
                grader,
                episodes.toolbox,
                episodes.limits,
                progress=report_progress,
                **generation,
            )
        return evaluate(model, rows, grader, progress=report_progress, **generation)


@dataclass
class _Episodes:
    """The tools of `rft eval --tools` and the limits of an episode; closes the tools' workers."""

    toolbox: Any
    limits: Any

    def __enter__(self) -> _Episodes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.toolbox.close()


def _load_tools(
    path: str | Path, data: Path, rows: list[tuple[int, dict]], samples_file: Any
) -> _Episodes:
    """The toolbox of a tools file, checked against the rows before any model loads."""
    from rft_cli.episodes import EpisodeLimits
    from rft_cli.tools import load_toolbox, read_tools_file

    if samples_file is not None:
        raise ConfigError(
            "--tools runs episodes with each --model; a --samples-file holds finished answers, so "
            "evaluate it in a separate rft eval without --tools"
        )
    settings, episode = read_tools_file(path)
    toolbox = load_toolbox(settings, f"{path}: tools")
    try:
        check_rows_against_tools(data, rows, toolbox)
    except BaseException:
        toolbox.close()
        raise
    limits = EpisodeLimits(episode.max_episode_steps, episode.max_tokens)
    return _Episodes(toolbox, limits)


def check_rows_against_tools(data: Path, rows: list[tuple[int, dict]], toolbox: Any) -> None:
    """Every tool a row offers has a tool to run it; a row without `tools` gets the toolbox's
    definitions, so there must be some."""
    for line_no, row in rows:
        for name in sorted(tool_names(row.get("tools")) or ()):
            if name not in toolbox.names:
                raise DataError(
                    f'{data} line {line_no}: the row offers the tool "{name}", which the tools file does not '
                    f"run (it has: {', '.join(toolbox.names)}); add a tool named {name} with python: or server_url:"
                )
        if not row_tools(row) and not toolbox.tool_definitions():
            raise ConfigError(
                f"{data} line {line_no}: the row has no `tools` and the tools file defines no schema "
                "(endpoint tools need `parameters`); give the rows OpenAI's `tools` or the tools `parameters`"
            )


def _quiet_transformers() -> None:
    """The caller's progress is the one shown: silence transformers' weight-loading bars and notes."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _grade_samples_file(
    path: Path,
    rows: list[dict],
    grader: Any,
    threshold: float,
    progress: EvalProgress,
    notes: list[str],
) -> list[EvalReport]:
    read: list[str] = []
    outputs = load_samples_file(path, len(rows), read)
    for note in read:
        progress.note(note)
    notes.extend(read)
    progress.samples_file(path, len(outputs), len(rows))
    return [
        grade_outputs(name, rows, per_row, grader, threshold=threshold)
        for name, per_row in outputs.items()
    ]
