"""Validation of a training (and validation) JSONL file against the dataset contract.

`validate_dataset()` reads each file once, line by line, prints nothing and returns a
`ValidationReport`. Its jobs live beside it: `scanning` streams the files, `checks` checks a row,
`validation_report` collects the issues and statistics. Every check, its code and the JSON report's schema
are described in docs/data.md.

The validation file is read first, so that each training row can be checked against it as it
streams by: exact prompt overlap, near-duplicates (word 3-gram Jaccard, see `overlap.py`) and
reference values shared through `overlap_fields`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rft_cli import files
from rft_cli.data.checks import load_tokenizer_dir, printable
from rft_cli.data.records import DEFAULT_DEMONSTRATION_FIELD
from rft_cli.data.scanning import Scanner, ScanSettings, default_workers
from rft_cli.data.validation_report import Issue, Issues, ValidationReport, build_report
from rft_cli.errors import ConfigError

if TYPE_CHECKING:  # the graders (and transformers) load only when given
    from transformers import PreTrainedTokenizerBase

    from rft_cli.graders import GraderArg

DEFAULT_MAX_ERRORS = 20
DEFAULT_NEAR_DUPLICATE_THRESHOLD = 0.9
MIN_NEAR_DUPLICATE_THRESHOLD = 0.5

__all__ = [
    "DEFAULT_MAX_ERRORS",
    "DEFAULT_NEAR_DUPLICATE_THRESHOLD",
    "MIN_NEAR_DUPLICATE_THRESHOLD",
    "Issue",
    "ValidationReport",
    "validate_dataset",
]


def validate_dataset(
    train: str | Path,
    valid: str | Path | None = None,
    *,
    grader: GraderArg | None = None,
    demonstration_field: str = DEFAULT_DEMONSTRATION_FIELD,
    require_demonstrations: bool = False,
    strict: bool = False,
    overlap_fields: Iterable[str] = (),
    near_duplicate_threshold: float = DEFAULT_NEAR_DUPLICATE_THRESHOLD,
    required_item_fields: Iterable[str] | None = None,
    max_errors: int = DEFAULT_MAX_ERRORS,
    tokenizer: PreTrainedTokenizerBase | str | Path | None = None,
    max_tokens: int | None = None,
    workers: int | None = None,
    tools: dict[str, dict | None] | None = None,
) -> ValidationReport:
    """Check a training file (and optionally a validation file) against the dataset contract.

    Args:
        train: the training JSONL file.
        valid: the validation JSONL file; enables the train/valid overlap checks.
        grader: a `Grader` or a grader file (`rft validate --grader`): every row must have each
            `item.<field>` it reads, and when the data is valid, the grader self-test grades each
            demonstration; those below full marks (or `pass_threshold`) are issues of code
            `grader_self_test` (warnings; errors under `strict`), the test in `report.grader_check`.
        demonstration_field: the field holding a warm-up demonstration (besides a final assistant turn).
        require_demonstrations: every training row must have a demonstration.
        strict: duplicate prompts, near-duplicates and over-long prompts become errors.
        overlap_fields: reference fields whose validation values must not appear in training.
        near_duplicate_threshold: word 3-gram Jaccard similarity at which two prompts are near-duplicates.
        required_item_fields: fields every row must have (the grader's `item.<field>` names).
        max_errors: issues kept per code (all are counted).
        tokenizer: a tokenizer object or a local directory; adds prompt token statistics.
        max_tokens: prompts longer than this (in tokens) get a warning; needs `tokenizer`.
        tools: the tools of a recipe (name -> function definition, `rft_cli.tools.definitions_of`):
            rows are checked against them (a row's own tools must be run by one; calls in rows
            without `tools` must name one and fit its parameters).
        workers: processes for a training file of 32 MiB or more (default: $RFT_VALIDATE_WORKERS,
            else 2 where there are 2 cores, `fork` and a single thread, else 1). The result does
            not depend on it.

    Returns:
        A `ValidationReport`; nothing is printed.

    Example:
        >>> report = validate_dataset("data/example/train.jsonl", "data/example/valid.jsonl")
        >>> report.ok
        True
    """
    checks: dict[str, Any] = {
        "demonstration_field": demonstration_field,
        "require_demonstrations": require_demonstrations,
        "strict": strict,
        "overlap_fields": overlap_fields,
        "near_duplicate_threshold": near_duplicate_threshold,
        "max_errors": max_errors,
        "tokenizer": tokenizer,
        "max_tokens": max_tokens,
        "workers": workers,
        "tools": tools,
    }
    if grader is None:
        return _validate(train, valid, required_item_fields, **checks)
    from rft_cli.graders import opened_grader
    from rft_cli.graders.selftest import demonstration_field_files, self_test

    with opened_grader(grader) as built:  # a bad grader file fails before the data is read
        fields = {*built.item_fields(), *(required_item_fields or ())}
        report = _validate(train, valid, fields, **checks)
        if report.ok:
            pairs = demonstration_field_files(train, valid, demonstration_field)
            report.add_self_test(
                self_test(built, pairs, episodes=tools is not None), strict, max_errors
            )
    return report


def _validate(
    train: str | Path,
    valid: str | Path | None,
    required_item_fields: Iterable[str] | None,
    *,
    demonstration_field: str,
    require_demonstrations: bool,
    strict: bool,
    overlap_fields: Iterable[str],
    near_duplicate_threshold: float,
    max_errors: int,
    tokenizer: Any,
    max_tokens: int | None,
    workers: int | None,
    tools: dict[str, dict | None] | None,
) -> ValidationReport:
    train, valid = Path(train), Path(valid) if valid is not None else None
    overlap_fields = tuple(name for name in overlap_fields if name)
    _check_arguments(
        train, valid, near_duplicate_threshold, max_errors, tokenizer, max_tokens, overlap_fields
    )
    if isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer_dir(tokenizer)
    settings = ScanSettings(
        demonstration_field,
        require_demonstrations,
        overlap_fields,
        tuple(sorted(required_item_fields or ())),
        tokenizer,
        max_tokens,
        {name: d and d["function"] for name, d in tools.items()} if tools is not None else None,
    )
    issues = Issues(max_errors, strict)
    validator = Scanner(settings, issues, near_duplicate_threshold)
    stats: dict[str, Any] = {"train": None, "valid": None}
    if valid is not None:
        stats["valid"] = validator.scan(valid, is_train=False)
        validator.freeze_valid(valid)
    stats["train"] = validator.scan(
        train, is_train=True, workers=default_workers() if workers is None else workers
    )
    _warn_about_overlap_fields(validator, valid)
    return build_report(train, valid, validator, stats, tokenizer is not None)


def _check_arguments(
    train: Path,
    valid: Path | None,
    threshold: float,
    max_errors: int,
    tokenizer: Any,
    max_tokens: int | None,
    overlap_fields: tuple[str, ...],
) -> None:
    for path in (train, valid):
        if path is not None and not files.is_file(path):
            problem = "is not a regular file" if files.exists(path) else "no such file"
            raise ConfigError(f"{path}: {problem} (give the path of a JSONL file)")
    if not MIN_NEAR_DUPLICATE_THRESHOLD <= threshold <= 1.0:
        raise ConfigError(
            f"--near-duplicate-threshold {threshold}: use a value between {MIN_NEAR_DUPLICATE_THRESHOLD} and 1.0"
        )
    if max_errors < 1:
        raise ConfigError(f"--max-errors {max_errors}: use a positive number")
    if max_tokens is not None and tokenizer is None:
        raise ConfigError("--max-tokens needs --tokenizer (the directory of the model's tokenizer)")
    if overlap_fields and valid is None:
        raise ConfigError(
            "--overlap-fields needs --valid (the validation file whose answers must not appear in training)"
        )


def _warn_about_overlap_fields(validator: Scanner, valid: Path | None) -> None:
    """A field no validation row has (a typo), or one whose values repeat among the validation
    rows: it names no single task (an answer such as a number), so two splits share its values."""
    if valid is None:
        return
    values = Counter(name for name, _ in validator.valid_values)
    for name in validator.settings.overlap_fields:
        rows = validator.valid_field_rows[name]
        if not rows:
            validator.issues.warning(
                str(valid),
                None,
                "overlap_field_unseen",
                f'no row has the field "{printable(name)}" named in --overlap-fields (check its spelling)',
            )
        elif values[name] < rows:
            validator.issues.warning(
                str(valid),
                None,
                "overlap_field_repeats",
                f'"{printable(name)}" takes {values[name]} values over {rows} rows, so it does not identify a task '
                "(an answer such as a number): any two splits share such values; name a field with one value per "
                "task in --overlap-fields (an id, the source problem), or leave it out",
            )
