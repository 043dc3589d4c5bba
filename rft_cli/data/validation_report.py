"""What `validate_dataset` found: issues (kept per code, all counted), per-file statistics, the report."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rft_cli.data.checks import printable
from rft_cli.errors import DataError

if TYPE_CHECKING:  # scanning imports this module; the graders load only when a grader is given
    from rft_cli.data.scanning import Scanner
    from rft_cli.graders.selftest import SelfTestReport

# Warnings that --strict turns into errors (blank lines and unseen overlap fields stay warnings).
STRICT_CODES = frozenset({"duplicate_prompt", "near_duplicate", "too_many_tokens"})
SELF_TEST_CODE = "grader_self_test"


@dataclass(frozen=True)
class Issue:
    """One problem: where it is (file, 1-based line, 1-based column), a code, and a sentence with the fix."""

    file: str
    line: int | None
    column: int | None
    code: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "code": self.code,
            "message": self.message,
        }


@dataclass
class ValidationReport:
    """What `validate_dataset` found. `ok` is True when there are no errors (warnings allowed).

    `errors` and `warnings` keep the first `max_errors` issues of each code; `error_counts` and
    `warning_counts` count them all. `overlap` lists train/valid pairs (first `max_errors` per kind).
    `grader_check` is the grader self-test (a `SelfTestReport`) when a grader was given and the
    data was valid; its failures are also issues of code `grader_self_test`.
    """

    files: dict[str, str | None]
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    error_counts: dict[str, int] = field(default_factory=dict)
    warning_counts: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    overlap: list[dict[str, Any]] = field(default_factory=list)
    grader_check: SelfTestReport | None = None
    grader_check_strict: bool = False

    @property
    def ok(self) -> bool:
        return not self.error_counts

    def add_self_test(self, check: SelfTestReport, strict: bool, max_errors: int) -> None:
        """Keep the grader self-test, and its failures as issues of code `grader_self_test`:
        warnings, errors under `strict` (the first `max_errors` kept, all counted)."""
        self.grader_check, self.grader_check_strict = check, strict
        if not check.failures:
            return
        issues = [
            Issue(
                failure.file,
                failure.line,
                None,
                SELF_TEST_CODE,
                f"{failure.message()} (the demonstration scores below {check.bar()})",
            )
            for failure in check.failures[:max_errors]
        ]
        kept, counts = (
            (self.errors, self.error_counts) if strict else (self.warnings, self.warning_counts)
        )
        kept.extend(issues)
        counts[SELF_TEST_CODE] = len(check.failures)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (schema documented in README, section `validate`)."""
        return {
            "ok": self.ok,
            "files": dict(self.files),
            "errors": [issue.to_dict() for issue in self.errors],
            "warnings": [issue.to_dict() for issue in self.warnings],
            "error_counts": dict(self.error_counts),
            "warning_counts": dict(self.warning_counts),
            "stats": self.stats,
            "overlap": list(self.overlap),
            **(
                {
                    "grader_check": {
                        **self.grader_check.to_dict(),
                        "strict": self.grader_check_strict,
                    }
                }
                if self.grader_check is not None
                else {}
            ),
        }

    def raise_for_errors(self) -> None:
        """Raise `DataError` with the first error (and how many more) when the data is invalid."""
        if self.ok:
            return
        total = sum(self.error_counts.values())
        more = (
            f" ({total - 1} more error(s); run `rft validate` to see them all)" if total > 1 else ""
        )
        raise DataError(self.errors[0].message + more)


class Issues:
    """Errors and warnings, keeping the first `limit` of each code and counting every one."""

    def __init__(self, limit: int, strict: bool) -> None:
        self.limit, self.strict = limit, strict
        self.errors: list[Issue] = []
        self.warnings: list[Issue] = []
        self.error_counts: Counter[str] = Counter()
        self.warning_counts: Counter[str] = Counter()

    def error(
        self, file: str, line: int | None, code: str, message: str, column: int | None = None
    ) -> None:
        self.error_counts[code] += 1
        if self.error_counts[code] <= self.limit:
            self.errors.append(
                Issue(file, line, column, code, _where(file, line, column) + message)
            )

    def absorb(self, other: Issues) -> None:
        """Add another collector's issues (the lists are trimmed back to `limit` per code in the report)."""
        self.errors.extend(other.errors)
        self.warnings.extend(other.warnings)
        self.error_counts.update(other.error_counts)
        self.warning_counts.update(other.warning_counts)

    def keeps_warning(self, code: str) -> bool:
        """Whether the next warning of this code is kept (not only counted): a caller with a
        million of them builds the message only then."""
        if self.strict and code in STRICT_CODES:
            return self.error_counts[code] < self.limit
        return self.warning_counts[code] < self.limit

    def warning(self, file: str, line: int | None, code: str, message: str) -> None:
        if self.strict and code in STRICT_CODES:
            return self.error(file, line, code, message)
        self.warning_counts[code] += 1
        if self.warning_counts[code] <= self.limit:
            self.warnings.append(Issue(file, line, None, code, _where(file, line, None) + message))


def _where(file: str, line: int | None, column: int | None) -> str:
    if line is None:
        return f"{file}: "
    return f"{file} line {line}" + (f" column {column}" if column else "") + ": "


class FileStats:
    """Per-file counters; distributions are Counters of values, so memory stays small."""

    def __init__(self) -> None:
        self.lines = self.rows = self.blank_lines = self.invalid_rows = self.demonstrations = 0
        self.messages: Counter[int] = Counter()
        self.prompt_chars: Counter[int] = Counter()
        self.tokens: Counter[int] = Counter()
        self.over_max_tokens = 0
        self.fields: Counter[str] = Counter()  # top-level field names of valid rows
        self.distinct_prompts = 0

    def merge(self, other: FileStats) -> None:
        """Add the counters of a later part of the same file."""
        self.lines = max(self.lines, other.lines)
        for name in ("rows", "blank_lines", "invalid_rows", "demonstrations", "over_max_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("messages", "prompt_chars", "tokens", "fields"):
            getattr(self, name).update(getattr(other, name))

    def to_dict(
        self, max_tokens: int | None, tokenized: bool, demonstration_field: str
    ) -> dict[str, Any]:
        reference: Counter[str] = Counter()
        for name, count in self.fields.items():
            if name not in ("messages", demonstration_field):
                reference[printable(name)] += count
        stats = {
            "lines": self.lines,
            "rows": self.rows,
            "invalid_rows": self.invalid_rows,
            "blank_lines": self.blank_lines,
            "distinct_prompts": self.distinct_prompts,
            "messages_per_row": _summary(self.messages),
            "prompt_chars": _summary(self.prompt_chars),
            "demonstrations": self.demonstrations,
            "reference_fields": dict(sorted(reference.items())),
        }
        if tokenized:
            stats["prompt_tokens"] = {
                **_summary(self.tokens),
                "max_tokens": max_tokens,
                "rows_over_max": self.over_max_tokens,
            }
        return stats


def _summary(values: Counter[int]) -> dict[str, float | None]:
    """min / median / max of a Counter of integers (None when it is empty)."""
    n = sum(values.values())
    if not n:
        return {"min": None, "median": None, "max": None}
    keys = sorted(values)
    middle = _nth(keys, values, (n - 1) // 2), _nth(keys, values, n // 2)
    median = middle[0] if middle[0] == middle[1] else (middle[0] + middle[1]) / 2
    median = int(median) if median == int(median) else median
    return {"min": keys[0], "median": median, "max": keys[-1]}


def _nth(keys: list[int], values: Counter[int], k: int) -> int:
    seen = 0
    for key in keys:
        seen += values[key]
        if seen > k:
            return key
    return keys[-1]


def build_report(
    train: Path, valid: Path | None, validator: Scanner, stats: dict[str, Any], tokenized: bool
) -> ValidationReport:
    issues, max_tokens = validator.issues, validator.settings.max_tokens
    order = {str(train): 0, str(valid): 1}
    sort_key = lambda issue: (order.get(issue.file, 2), issue.line or 0)  # noqa: E731
    demo_field = validator.settings.demonstration_field
    per_file = {
        name: (s.to_dict(max_tokens, tokenized, demo_field) if s is not None else None)
        for name, s in stats.items()
    }
    counts = {
        kind: validator.overlap_counts.get(kind, 0) for kind in ("exact", "near_duplicate", "field")
    }
    return ValidationReport(
        files={"train": str(train), "valid": str(valid) if valid is not None else None},
        errors=_first_per_code(sorted(issues.errors, key=sort_key), issues.limit),
        warnings=_first_per_code(sorted(issues.warnings, key=sort_key), issues.limit),
        error_counts=dict(issues.error_counts),
        warning_counts=dict(issues.warning_counts),
        stats={
            **per_file,
            "overlap": {
                **counts,
                "near_duplicate_threshold": validator.threshold,
                **(
                    {"near_duplicate_search": validator.index.search_stats()}
                    if valid is not None
                    else {}
                ),
            },
        },
        overlap=_first_per_kind(
            sorted(validator.overlap, key=lambda o: (o["train_line"], o["valid_line"], o["kind"])),
            issues.limit,
        ),
    )


def _first_per_code(issues: list[Issue], limit: int) -> list[Issue]:
    seen: Counter[str] = Counter()
    kept = []
    for issue in issues:
        seen[issue.code] += 1
        if seen[issue.code] <= limit:
            kept.append(issue)
    return kept


def _first_per_kind(records: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    seen: Counter[str] = Counter()
    kept = []
    for record in records:
        seen[record["kind"]] += 1
        if seen[record["kind"]] <= limit:
            kept.append(record)
    return kept
