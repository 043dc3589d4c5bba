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
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from hashlib import blake2b
from pathlib import Path
from typing import Any

from rft_cli.data import overlap as _overlap
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
from rft_cli.errors import ConfigError, DataError, RftError, UsageError

DEFAULT_MAX_ERRORS = 20
DEFAULT_NEAR_DUPLICATE_THRESHOLD = 0.9
MIN_NEAR_DUPLICATE_THRESHOLD = 0.5
# Warnings that --strict turns into errors (blank lines and unseen overlap fields stay warnings).
STRICT_CODES = frozenset({"duplicate_prompt", "near_duplicate", "too_many_tokens"})
_BOM = b"\xef\xbb\xbf"
_BATCH = 4096
# Training files this big are scanned by two processes (the second half in a forked child).
PARALLEL_MIN_BYTES = 32 << 20


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

    def absorb(self, other: _Issues) -> None:
        """Add another collector's issues (the lists are trimmed back to `limit` per code in the report)."""
        self.errors.extend(other.errors)
        self.warnings.extend(other.warnings)
        self.error_counts.update(other.error_counts)
        self.warning_counts.update(other.warning_counts)

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

    def merge(self, other: _FileStats) -> None:
        """Add the counters of a later part of the same file."""
        self.lines = max(self.lines, other.lines)
        for name in ("rows", "blank_lines", "invalid_rows", "demonstrations", "over_max_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("messages", "prompt_chars", "tokens", "fields"):
            getattr(self, name).update(getattr(other, name))

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
    if type(row) is not dict or "tools" in row:  # tools and tool calls: `check_row` (openai_rows)
        return None
    messages = row.get("messages")
    if type(messages) is not list or not messages:
        return None
    for message in messages:
        if type(message) is not dict or message.get("role") not in ROLES or "tool_calls" in message:
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


def _split_point(path: Path, offset: int) -> int:
    """The first byte of the first line that starts after `offset`."""
    with path.open("rb") as handle:
        handle.seek(offset)
        handle.readline()
        return handle.tell()


def _count_lines(path: Path, end: int, block: int = 1 << 24) -> int:
    """Newlines in the first `end` bytes of a file."""
    count = 0
    with path.open("rb") as handle:
        while end > 0:
            data = handle.read(min(block, end))
            if not data:
                break
            count += data.count(b"\n")
            end -= len(data)
    return count


def _prompt_hash(key: str) -> int:
    return int.from_bytes(blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _value_key(value: Any) -> str:
    """A reference value, normalised for the --overlap-fields comparison ("42" matches 42)."""
    try:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    except (RecursionError, ValueError):  # nested deeper than json.dumps goes: compare by identity only
        text = f"<unprintable {id(value)}>"
    return normalize_text(text)


def _safe(text: str) -> str:
    """A field name that can be printed and written as UTF-8 (lone surrogates become '?')."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _iter_lines(path: Path, file: str, issues: _Issues, stats: _FileStats,
                start: int = 0, end: int | None = None, first_line: int = 1) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed JSON value) for each line that decodes and parses; report the rest.

    `start`/`end` select a byte range that begins and ends at line boundaries; `first_line` is the
    number of its first line.
    """
    left = float("inf") if end is None else end - start
    with path.open("rb") as handle:
        handle.seek(start)
        for line_no, raw in enumerate(handle, start=first_line):
            if left <= 0:
                break
            left -= len(raw)
            stats.lines = line_no
            if line_no == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                issues.error(file, line_no, "invalid_utf8", f"byte {exc.start + 1} is not valid UTF-8 ({exc.reason}); save the file as UTF-8", column=exc.start + 1)
                continue
            if text.isspace():
                stats.blank_lines += 1
                issues.warning(file, line_no, "blank_line", "blank line (it is skipped; delete it)")
                continue
            try:
                row = parse_line(text)
            except json.JSONDecodeError as exc:
                issues.error(file, line_no, "json_syntax", f"invalid JSON ({exc.msg}); write one complete strict-JSON object per line (no trailing commas, comments or single quotes)", column=exc.colno)
                continue
            except (ValueError, RecursionError) as exc:
                reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                issues.error(file, line_no, "json_syntax", f"invalid JSON ({reason}); write one complete strict-JSON object per line")
                continue
            if "\\u" in text and _has_lone_surrogate(text, row):
                issues.warning(file, line_no, "lone_surrogate", "a string holds a lone surrogate escape (\\ud800-\\udfff without its pair), which is not text; graders score it, but tokenizers and UTF-8 files cannot hold it: remove it")
            yield line_no, row


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(text: str, row: Any) -> bool:
    """True when a parsed string holds an unpaired surrogate (cheap: only lines with such an escape)."""
    if _SURROGATE_ESCAPE.search(text) is None:
        return False
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (RecursionError, ValueError):
        return False
    return False


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
        self.valid_bytes = 0
        self.valid_prompts: dict[int, int] = {}  # prompt hash -> first valid line
        self.valid_values: dict[tuple[str, str], int] = {}  # (field, value) -> first valid line
        self.valid_lines: list[int] = []  # near-duplicate index row id -> valid line
        self.valid_keys: list[str] = []  # normalised prompts waiting to be indexed
        self.index = NearDuplicateIndex(threshold, _overlap.CANDIDATE_BUDGET)
        self.overlap: list[dict[str, Any]] = []
        self.overlap_counts: Counter[str] = Counter()

    def scan(self, path: Path, is_train: bool, workers: int = 1) -> _FileStats:
        """Check every line of one file; the validation file must be scanned before the training file."""
        file = str(path)
        size = path.stat().st_size
        if is_train and workers > 1 and size >= PARALLEL_MIN_BYTES and self.settings.tokenizer is None:
            stats, seen = self._scan_parallel(path, size)
        else:
            stats, seen = self._scan_range(path, is_train)
        stats.distinct_prompts = len(seen)
        if stats.lines == stats.blank_lines:
            self.issues.error(file, None, "empty_file", "the file has no rows (write one JSON object per line)")
        return stats

    def _scan_range(self, path: Path, is_train: bool, start: int = 0, end: int | None = None,
                    first_line: int = 1) -> tuple[_FileStats, dict[int, int]]:
        """Scan one byte range; returns its stats and its prompt hashes (hash -> first line)."""
        file, stats = str(path), _FileStats()
        seen: dict[int, int] = {}
        batch: list[tuple[int, int, str]] = []
        try:
            for line_no, row in _iter_lines(path, file, self.issues, stats, start, end, first_line):
                key = self._check(file, line_no, row, stats, is_train)
                if key is None:
                    continue
                digest = _prompt_hash(key)
                first = seen.setdefault(digest, line_no)
                if first != line_no:
                    self._duplicate(file, line_no, first)
                if is_train:
                    self._check_against_valid(file, line_no, row, digest, key, batch)
                elif first == line_no:
                    self._remember_valid(line_no, row, digest, key)
        except OSError as exc:
            raise DataError(f"{file}: read error ({exc.strerror or exc}); check the file and the disk") from None
        self._flush(file, batch)
        return stats, seen

    def _duplicate(self, file: str, line_no: int, first: int) -> None:
        self.issues.warning(file, line_no, "duplicate_prompt", f"same prompt as line {first} after normalisation (case, Unicode form, whitespace); remove one of the two rows")

    def _scan_parallel(self, path: Path, size: int) -> tuple[_FileStats, dict[int, int]]:
        """Scan the first half of the file here and the second half in a forked child process.

        The child shares the validation index (copy-on-write) and sends back its stats, issues,
        overlap records and prompt hashes; duplicates across the two halves are found on merge.
        """
        import multiprocessing

        # The parent has already scanned the validation file and will merge: give it less training data.
        split = _split_point(path, max(0, size - self.valid_bytes) // 2)
        context = multiprocessing.get_context("fork")
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(target=self._scan_child, args=(path, split, size, sender), daemon=True)
        child.start()
        sender.close()
        try:
            stats, seen = self._scan_range(path, True, 0, split, 1)
            outcome = receiver.recv()
        except EOFError:
            raise RftError(f"{path}: the second validation process died (out of memory?); "
                           "retry with RFT_VALIDATE_WORKERS=1") from None
        except BaseException:
            child.terminate()  # the parent failed or was interrupted: do not wait for the child's half
            raise
        finally:
            child.join()
        if isinstance(outcome, BaseException):
            raise outcome
        return self._merge_child(str(path), stats, seen, *outcome)

    def _scan_child(self, path: Path, start: int, end: int, sender: Any) -> None:
        """In the child: scan [start, end) with fresh issue and overlap collectors, send them back."""
        self.issues = _Issues(self.issues.limit, self.issues.strict)
        self.overlap, self.overlap_counts = [], Counter()
        self.index.counts = Counter()
        try:
            first_line = _count_lines(path, start) + 1
            stats, seen = self._scan_range(path, True, start, end, first_line)
            import numpy as np

            # Two flat arrays pickle in 16 bytes a prompt; the dict would take about 110.
            digests = np.fromiter(seen.keys(), dtype=np.uint64, count=len(seen))
            lines = np.fromiter(seen.values(), dtype=np.int64, count=len(seen))
            del seen
            sender.send((stats, (digests, lines), self.issues, self.overlap, self.overlap_counts, self.index.counts))
        except RftError as exc:
            sender.send(exc)
        finally:
            sender.close()

    def _merge_child(self, file: str, stats: _FileStats, seen: dict[int, int], child_stats: _FileStats,
                     child_seen: tuple[Any, Any], issues: _Issues, overlap: list, overlap_counts: Counter,
                     search_counts: Counter) -> tuple[_FileStats, dict[int, int]]:
        self.issues.absorb(issues)
        self.index.counts.update(search_counts)
        self.overlap.extend(overlap)
        self.overlap_counts.update(overlap_counts)
        stats.merge(child_stats)
        digests, lines = child_seen
        for start in range(0, len(digests), 1 << 16):  # in slices, to bound the temporary Python ints
            for digest, line_no in zip(digests[start : start + (1 << 16)].tolist(), lines[start : start + (1 << 16)].tolist()):
                first = seen.setdefault(digest, line_no)
                if first != line_no:
                    self._duplicate(file, line_no, first)
        return stats, seen

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
        self.valid_bytes = path.stat().st_size

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
        if valid_line is None:  # a row with an exact overlap is not also searched for near-duplicates
            batch.append((line_no, digest, key))
        if len(batch) >= _BATCH:
            self._flush(file, batch)

    def _flush(self, file: str, batch: list[tuple[int, int, str]]) -> None:
        """Query a batch of training rows against the validation near-duplicate index."""
        if not batch or not len(self.index):
            batch.clear()
            return
        for i, row_id, similarity in self.index.query_batch([item[2] for item in batch]):
            line_no, valid_line = batch[i][0], self.valid_lines[row_id]
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
        encoded = tokenizer.apply_chat_template(messages, tools=row.get("tools") or None, add_generation_prompt=True, tokenize=True)
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
    workers: int | None = None,
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
    stats["train"] = validator.scan(train, is_train=True, workers=_default_workers() if workers is None else workers)
    _warn_unseen_fields(validator, valid)
    return _build_report(train, valid, validator, stats, tokenizer is not None)


def _default_workers() -> int:
    import multiprocessing
    import os
    import threading

    if os.environ.get("RFT_VALIDATE_WORKERS", "").strip().isdigit():
        return max(1, int(os.environ["RFT_VALIDATE_WORKERS"]))
    # fork() is only safe in a single-threaded process (no torch/tokenizers threads yet).
    if "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(2, cores)


def _check_arguments(train: Path, valid: Path | None, threshold: float, max_errors: int, tokenizer: Any,
                     max_tokens: int | None, overlap_fields: tuple[str, ...]) -> None:
    for path in (train, valid):
        if path is not None and not path.is_file():
            problem = "is not a regular file" if path.exists() else "no such file"
            raise UsageError(f"{path}: {problem} (give the path of a JSONL file)")
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
        errors=_first_per_code(sorted(issues.errors, key=sort_key), issues.limit),
        warnings=_first_per_code(sorted(issues.warnings, key=sort_key), issues.limit),
        error_counts=dict(issues.error_counts),
        warning_counts=dict(issues.warning_counts),
        stats={**per_file, "overlap": {**counts, "near_duplicate_threshold": validator.threshold,
                                       **({"near_duplicate_search": validator.index.search_stats()} if valid is not None else {})}},
        overlap=_first_per_kind(sorted(validator.overlap, key=lambda o: (o["train_line"], o["valid_line"], o["kind"])), issues.limit),
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
