"""Streaming validation of a training (and validation) JSONL file against the dataset contract.

`validate_dataset()` reads each file once, line by line, prints nothing and returns a
`ValidationReport`. Memory grows with the number of distinct prompts (one 8-byte hash each, plus
the validation set's shingles for the near-duplicate search), never with the file size.

The validation file is read first, so that each training row can be checked against it as it
streams by: exact prompt overlap, near-duplicates (word 3-gram Jaccard, see `overlap.py`) and
reference values shared through `overlap_fields`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from hashlib import blake2b
from pathlib import Path
from typing import Any

from rft_cli.data.overlap import NearDuplicateIndex
from rft_cli.data.records import (
    DEFAULT_DEMONSTRATION_FIELD,
    PROMPT_END_ROLES,
    ROLES,
    Problem,
    check_row,
    demonstration,
    normalize_text,
    parse_line,
    prompt_messages,
    prompt_text,
)
from rft_cli.errors import ConfigError, DataError, UsageError

DEFAULT_MAX_ERRORS = 20
DEFAULT_NEAR_DUPLICATE_THRESHOLD = 0.9
MIN_NEAR_DUPLICATE_THRESHOLD = 0.5
# Warnings that --strict turns into errors (blank lines and unseen overlap fields stay warnings).
STRICT_CODES = frozenset({"duplicate_prompt", "near_duplicate", "too_many_tokens"})
_BOM = b"\xef\xbb\xbf"
_BATCH = 4096


@dataclass(frozen=True)
class Issue:
    """One problem: where it is (file, 1-based line, 1-based column), a code, and a sentence with the fix."""

    file: str
    line: int | None
    column: int | None
    code: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "column": self.column, "code": self.code, "message": self.message}


@dataclass
class ValidationReport:
    """What `validate_dataset` found. `ok` is True when there are no errors (warnings allowed).

    `errors` and `warnings` keep the first `max_errors` issues of each code; `error_counts` and
    `warning_counts` count them all. `overlap` lists train/valid pairs (first `max_errors` per kind).
    """

    files: dict[str, str | None]
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    error_counts: dict[str, int] = field(default_factory=dict)
    warning_counts: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    overlap: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error_counts

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
        }

    def raise_for_errors(self) -> None:
        """Raise `DataError` with the first error (and how many more) when the data is invalid."""
        if self.ok:
            return
        total = sum(self.error_counts.values())
        more = f" ({total - 1} more error(s); run `rft validate` to see them all)" if total > 1 else ""
        raise DataError(self.errors[0].message + more)


class _Issues:
    """Errors and warnings, keeping the first `limit` of each code and counting every one."""

    def __init__(self, limit: int, strict: bool) -> None:
        self.limit, self.strict = limit, strict
        self.errors: list[Issue] = []
        self.warnings: list[Issue] = []
        self.error_counts: Counter[str] = Counter()
        self.warning_counts: Counter[str] = Counter()

    def error(self, file: str, line: int | None, code: str, message: str, column: int | None = None) -> None:
        self.error_counts[code] += 1
        if self.error_counts[code] <= self.limit:
            self.errors.append(Issue(file, line, column, code, _where(file, line, column) + message))

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


class _FileStats:
    """Per-file counters; distributions are Counters of values, so memory stays small."""

    def __init__(self) -> None:
        self.lines = self.rows = self.blank_lines = self.invalid_rows = self.demonstrations = 0
        self.messages: Counter[int] = Counter()
        self.prompt_chars: Counter[int] = Counter()
        self.tokens: Counter[int] = Counter()
        self.over_max_tokens = 0
        self.fields: Counter[str] = Counter()  # top-level field names of valid rows
        self.distinct_prompts = 0

    def to_dict(self, max_tokens: int | None, tokenized: bool, demonstration_field: str) -> dict[str, Any]:
        reference = Counter()
        for name, count in self.fields.items():
            if name not in ("messages", demonstration_field):
                reference[_safe(name)] += count
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
            stats["prompt_tokens"] = {**_summary(self.tokens), "max_tokens": max_tokens, "rows_over_max": self.over_max_tokens}
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


def _fast_shape(row: Any, demonstration_field: str) -> tuple[str, int, bool] | None:
    """(prompt text, prompt characters, has a demonstration) for a row of the plain shape, else None.

    The plain shape (every content a non-blank string) is most rows; anything else goes through
    `check_row`, which alone decides what is wrong. This never accepts a row that `check_row` rejects
    (tests/test_validation.py checks that property).
    """
    if type(row) is not dict:
        return None
    messages = row.get("messages")
    if type(messages) is not list or not messages:
        return None
    for message in messages:
        if type(message) is not dict or message.get("role") not in ROLES:
            return None
        content = message.get("content")
        if type(content) is not str or not content or content.isspace():
            return None
    if messages[-1]["role"] == "assistant":
        if len(messages) < 2 or messages[-2]["role"] not in PROMPT_END_ROLES:
            return None
        messages = messages[:-1]
    elif messages[-1]["role"] not in PROMPT_END_ROLES:
        return None
    demo = row.get(demonstration_field) if demonstration_field != "messages" else None
    if demo is not None and (type(demo) is not str or not demo or demo.isspace()):
        return None
    text = "\n".join([f"{m['role']}: {m['content']}" for m in messages])
    has_demo = demo is not None or len(messages) < len(row["messages"])
    return text, sum(len(m["content"]) for m in messages), has_demo


def _slow_shape(row: dict, demonstration_field: str) -> tuple[str, int, bool]:
    """The same as `_fast_shape` for any row that passes `check_row` (text-part contents, ...)."""
    chars = sum(len(m["content"]) for m in prompt_messages(row))
    return prompt_text(row), chars, demonstration(row, demonstration_field) is not None


def _prompt_hash(key: str) -> int:
    return int.from_bytes(blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _value_key(value: Any) -> str:
    """A reference value, normalised for the --overlap-fields comparison ("42" matches 42)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return normalize_text(text)


def _safe(text: str) -> str:
    """A field name that can be printed and written as UTF-8 (lone surrogates become '?')."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _iter_lines(path: Path, file: str, issues: _Issues, stats: _FileStats) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed JSON value) for each line that decodes and parses; report the rest."""
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            stats.lines = line_no
            if line_no == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                issues.error(file, line_no, "invalid_utf8", f"byte {exc.start + 1} is not valid UTF-8 ({exc.reason}); save the file as UTF-8", column=exc.start + 1)
                continue
            if not text.strip():
                stats.blank_lines += 1
                issues.warning(file, line_no, "blank_line", "blank line (it is skipped; delete it)")
                continue
            try:
                yield line_no, parse_line(text)
            except json.JSONDecodeError as exc:
                issues.error(file, line_no, "json_syntax", f"invalid JSON ({exc.msg}); write one complete strict-JSON object per line (no trailing commas, comments or single quotes)", column=exc.colno)
            except (ValueError, RecursionError) as exc:
                reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                issues.error(file, line_no, "json_syntax", f"invalid JSON ({reason}); write one complete strict-JSON object per line")


@dataclass
class _Settings:
    demonstration_field: str
    require_demonstrations: bool
    overlap_fields: tuple[str, ...]
    required_item_fields: tuple[str, ...]
    tokenizer: Any
    max_tokens: int | None


class _Validator:
    """Streams the files of one validation run and fills a report."""

    def __init__(self, settings: _Settings, issues: _Issues, threshold: float) -> None:
        self.settings, self.issues, self.threshold = settings, issues, threshold
        self.valid_name: str | None = None
        self.valid_prompts: dict[int, int] = {}  # prompt hash -> first valid line
        self.valid_values: dict[tuple[str, str], int] = {}  # (field, value) -> first valid line
        self.valid_lines: list[int] = []  # near-duplicate index row id -> valid line
        self.valid_keys: list[str] = []  # normalised prompts waiting to be indexed
        self.index = NearDuplicateIndex(threshold)
        self.overlap: list[dict[str, Any]] = []
        self.overlap_counts: Counter[str] = Counter()

    def scan(self, path: Path, is_train: bool) -> _FileStats:
        """Check every line of one file; the validation file must be scanned before the training file."""
        file, stats = str(path), _FileStats()
        seen: dict[int, int] = {}
        batch: list[tuple[int, int, str]] = []
        try:
            for line_no, row in _iter_lines(path, file, self.issues, stats):
                key = self._check(file, line_no, row, stats, is_train)
                if key is None:
                    continue
                digest = _prompt_hash(key)
                first = seen.setdefault(digest, line_no)
                if first != line_no:
                    self.issues.warning(file, line_no, "duplicate_prompt", f"same prompt as line {first} after normalisation (case, Unicode form, whitespace); remove one of the two rows")
                if is_train:
                    self._check_against_valid(file, line_no, row, digest, key, batch)
                elif first == line_no:
                    self._remember_valid(line_no, row, digest, key)
        except OSError as exc:
            raise DataError(f"{file}: read error ({exc.strerror or exc}); check the file and the disk") from None
        self._flush(file, batch)
        stats.distinct_prompts = len(seen)
        if not stats.rows and not stats.invalid_rows:
            self.issues.error(file, None, "empty_file", "the file has no rows (write one JSON object per line)")
        return stats

    def _check(self, file: str, line_no: int, row: Any, stats: _FileStats, is_train: bool) -> str | None:
        """Check the contract and gather stats; returns the normalised prompt, or None for a bad row."""
        s = self.settings
        shape = _fast_shape(row, s.demonstration_field)
        problems = [] if shape is not None else check_row(row, s.demonstration_field)
        if s.required_item_fields and isinstance(row, dict):
            problems += [_missing_item_field(name) for name in s.required_item_fields if name not in row]
        if not problems and shape is None:
            shape = _slow_shape(row, s.demonstration_field)
        if not problems and is_train and s.require_demonstrations and not shape[2]:
            problems.append(_missing_demonstration(s.demonstration_field))
        if problems:
            stats.invalid_rows += 1
            for problem in problems:
                self.issues.error(file, line_no, problem.code, problem.message)
            return None
        text, chars, has_demo = shape
        stats.rows += 1
        stats.messages[len(row["messages"])] += 1
        stats.prompt_chars[chars] += 1
        stats.demonstrations += has_demo
        stats.fields.update(row.keys())
        if s.tokenizer is not None:
            self._count_tokens(file, line_no, row, stats)
        return normalize_text(text)

    def _count_tokens(self, file: str, line_no: int, row: dict, stats: _FileStats) -> None:
        n = count_prompt_tokens(self.settings.tokenizer, row)
        stats.tokens[n] += 1
        limit = self.settings.max_tokens
        if limit is not None and n > limit:
            stats.over_max_tokens += 1
            self.issues.warning(file, line_no, "too_many_tokens", f"the prompt is {n} tokens, over --max-tokens {limit}; shorten it or raise the limit")

    def _remember_valid(self, line_no: int, row: dict, digest: int, key: str) -> None:
        self.valid_prompts[digest] = line_no
        for name in self.settings.overlap_fields:
            if name in row:
                self.valid_values.setdefault((name, _value_key(row[name])), line_no)
        self.valid_lines.append(line_no)
        self.valid_keys.append(key)
        if len(self.valid_keys) >= _BATCH:
            self.index.add_batch(self.valid_keys)
            self.valid_keys.clear()

    def freeze_valid(self, path: Path) -> None:
        """Index the last validation prompts; the training file can be scanned after this."""
        self.index.add_batch(self.valid_keys)
        self.valid_keys.clear()
        self.index.freeze()
        self.valid_name = str(path)

    def _check_against_valid(self, file: str, line_no: int, row: dict, digest: int, key: str, batch: list) -> None:
        if self.valid_name is None:
            return
        valid_line = self.valid_prompts.get(digest)
        if valid_line is not None:
            self._record("exact", line_no, valid_line, 1.0, None)
            self.issues.error(file, line_no, "overlap_prompt", f"same prompt as {self.valid_name} line {valid_line} after normalisation (case, Unicode form, whitespace); remove it from the training file")
        for name in self.settings.overlap_fields:
            found = self.valid_values.get((name, _value_key(row[name]))) if name in row else None
            if found is not None:
                self._record("field", line_no, found, None, name)
                self.issues.error(file, line_no, "overlap_field", f'"{_safe(name)}" has the same value as {self.valid_name} line {found}; no validation answer may appear in training (remove or change the row)')
        batch.append((line_no, digest, key))
        if len(batch) >= _BATCH:
            self._flush(file, batch)

    def _flush(self, file: str, batch: list[tuple[int, int, str]]) -> None:
        """Query a batch of training rows against the validation near-duplicate index."""
        if not batch or not len(self.index):
            batch.clear()
            return
        for i, row_id, similarity in self.index.query_batch([item[2] for item in batch]):
            line_no, digest, _ = batch[i]
            valid_line = self.valid_lines[row_id]
            if self.valid_prompts.get(digest) == valid_line:
                continue  # an exact overlap, already reported
            self._record("near_duplicate", line_no, valid_line, round(similarity, 4), None)
            self.issues.warning(file, line_no, "near_duplicate", f"near-duplicate of {self.valid_name} line {valid_line} (word 3-gram Jaccard {similarity:.2f} >= {self.threshold}); remove or rewrite one of them")
        batch.clear()

    def _record(self, kind: str, train_line: int, valid_line: int, similarity: float | None, name: str | None) -> None:
        self.overlap_counts[kind] += 1
        if self.overlap_counts[kind] <= self.issues.limit:
            self.overlap.append({"kind": kind, "train_line": train_line, "valid_line": valid_line, "similarity": similarity, "field": name})


def _missing_item_field(name: str) -> Problem:
    name = _safe(name)
    return Problem("missing_item_field", f'missing field "{name}" that the grader reads as {{{{ item.{name} }}}} (add it to every row or change the grader)')


def _missing_demonstration(field_name: str) -> Problem:
    return Problem("missing_demonstration", f'no warm-up demonstration (add a final assistant message or a "{_safe(field_name)}" field)')


def load_tokenizer(path: str | Path) -> Any:
    """A tokenizer from a local directory (transformers is imported here, lazily); ConfigError if it fails."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(f"--tokenizer {path}: cannot load a tokenizer from it ({reason}); give a local directory saved with save_pretrained") from None


def count_prompt_tokens(tokenizer: Any, row: dict) -> int:
    """Tokens in the prompt as the model sees it: the chat template with a generation prompt, if any."""
    messages = prompt_messages(row)
    if getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
        return len(ids)
    return len(tokenizer(prompt_text(row), add_special_tokens=True)["input_ids"])


def validate_dataset(
    train: str | Path,
    valid: str | Path | None = None,
    *,
    demonstration_field: str = DEFAULT_DEMONSTRATION_FIELD,
    require_demonstrations: bool = False,
    strict: bool = False,
    overlap_fields: Iterable[str] = (),
    near_duplicate_threshold: float = DEFAULT_NEAR_DUPLICATE_THRESHOLD,
    required_item_fields: Iterable[str] | None = None,
    max_errors: int = DEFAULT_MAX_ERRORS,
    tokenizer: Any = None,
    max_tokens: int | None = None,
) -> ValidationReport:
    """Check a training file (and optionally a validation file) against the dataset contract.

    Args:
        train: the training JSONL file.
        valid: the validation JSONL file; enables the train/valid overlap checks.
        demonstration_field: the field holding a warm-up demonstration (besides a final assistant turn).
        require_demonstrations: every training row must have a demonstration.
        strict: duplicate prompts, near-duplicates and over-long prompts become errors.
        overlap_fields: reference fields whose validation values must not appear in training.
        near_duplicate_threshold: word 3-gram Jaccard similarity at which two prompts are near-duplicates.
        required_item_fields: fields every row must have (the grader's `item.<field>` names).
        max_errors: issues kept per code (all are counted).
        tokenizer: a tokenizer object or a local directory; adds prompt token statistics.
        max_tokens: prompts longer than this (in tokens) get a warning; needs `tokenizer`.

    Returns:
        A `ValidationReport`; nothing is printed.

    Example:
        >>> report = validate_dataset("data/example/train.jsonl", "data/example/valid.jsonl")
        >>> report.ok
        True
    """
    train, valid = Path(train), Path(valid) if valid is not None else None
    overlap_fields = tuple(name for name in overlap_fields if name)
    _check_arguments(train, valid, near_duplicate_threshold, max_errors, tokenizer, max_tokens, overlap_fields)
    if isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer(tokenizer)
    settings = _Settings(demonstration_field, require_demonstrations, overlap_fields,
                         tuple(sorted(required_item_fields or ())), tokenizer, max_tokens)
    issues = _Issues(max_errors, strict)
    validator = _Validator(settings, issues, near_duplicate_threshold)
    stats: dict[str, Any] = {"train": None, "valid": None}
    if valid is not None:
        stats["valid"] = validator.scan(valid, is_train=False)
        validator.freeze_valid(valid)
    stats["train"] = validator.scan(train, is_train=True)
    _warn_unseen_fields(validator, valid)
    return _build_report(train, valid, validator, stats, tokenizer is not None)


def _check_arguments(train: Path, valid: Path | None, threshold: float, max_errors: int, tokenizer: Any,
                     max_tokens: int | None, overlap_fields: tuple[str, ...]) -> None:
    for path in (train, valid):
        if path is not None and not path.is_file():
            raise UsageError(f"{path}: no such file (give the path of a JSONL file)")
    if not MIN_NEAR_DUPLICATE_THRESHOLD <= threshold <= 1.0:
        raise UsageError(f"--near-duplicate-threshold {threshold}: use a value between {MIN_NEAR_DUPLICATE_THRESHOLD} and 1.0")
    if max_errors < 1:
        raise UsageError(f"--max-errors {max_errors}: use a positive number")
    if max_tokens is not None and tokenizer is None:
        raise UsageError("--max-tokens needs --tokenizer (the directory of the model's tokenizer)")
    if overlap_fields and valid is None:
        raise UsageError("--overlap-fields needs --valid (the validation file whose answers must not appear in training)")


def _warn_unseen_fields(validator: _Validator, valid: Path | None) -> None:
    if valid is None:
        return
    seen = {name for name, _ in validator.valid_values}
    for name in validator.settings.overlap_fields:
        if name not in seen:
            validator.issues.warning(str(valid), None, "overlap_field_unseen", f'no row has the field "{_safe(name)}" named in --overlap-fields (check its spelling)')


def _build_report(train: Path, valid: Path | None, validator: _Validator, stats: dict[str, Any], tokenized: bool) -> ValidationReport:
    issues, max_tokens = validator.issues, validator.settings.max_tokens
    order = {str(train): 0, str(valid): 1}
    sort_key = lambda issue: (order.get(issue.file, 2), issue.line or 0)  # noqa: E731
    demo_field = validator.settings.demonstration_field
    per_file = {name: (s.to_dict(max_tokens, tokenized, demo_field) if s is not None else None) for name, s in stats.items()}
    counts = {kind: validator.overlap_counts.get(kind, 0) for kind in ("exact", "near_duplicate", "field")}
    return ValidationReport(
        files={"train": str(train), "valid": str(valid) if valid is not None else None},
        errors=sorted(issues.errors, key=sort_key),
        warnings=sorted(issues.warnings, key=sort_key),
        error_counts=dict(issues.error_counts),
        warning_counts=dict(issues.warning_counts),
        stats={**per_file, "overlap": {**counts, "near_duplicate_threshold": validator.threshold}},
        overlap=sorted(validator.overlap, key=lambda o: (o["train_line"], o["valid_line"], o["kind"])),
    )
