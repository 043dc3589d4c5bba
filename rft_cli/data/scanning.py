"""Streaming a JSONL file once, line by line (the second half of a large training file in a forked
process), checking each row and the training rows against the validation file.

Memory grows with the number of distinct prompts (one 8-byte hash each, plus the validation set's
shingles for the near-duplicate search), never with the file size."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rft_cli.data import overlap as _overlap
from rft_cli.data.checks import (
    count_prompt_tokens,
    fast_shape,
    has_lone_surrogate,
    missing_demonstration,
    missing_item_field,
    printable,
    prompt_hash,
    slow_shape,
    value_key,
)
from rft_cli.data.overlap import NearDuplicateIndex
from rft_cli.data.records import check_row, normalize_text, tools_file_problems
from rft_cli.data.validation_report import FileStats, Issues
from rft_cli.errors import DataError, RftError
from rft_cli.files import MAX_LINE_BYTES, LineTooLong, open_regular, size_text, split_lines
from rft_cli.jsonl import parse_line

_BOM = b"\xef\xbb\xbf"
_BATCH = 4096

# Training files this big are scanned by two processes (the second half in a forked child).
PARALLEL_MIN_BYTES = 32 << 20


def _split_point(path: Path, offset: int) -> int:
    """The first byte of the first line that starts after `offset`."""
    with path.open("rb") as handle:
        handle.seek(offset)
        while True:  # in pieces: the line may be gigabytes long
            piece = handle.readline(1 << 20)
            if not piece or piece.endswith(b"\n"):
                return handle.tell()


def _size(path: Path) -> int:
    """The file's size; DataError when it is gone (it may vanish after the first check)."""
    try:
        return path.stat().st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _count_lines(path: Path, end: int, block: int = 1 << 22) -> int:
    """Newlines in the first `end` bytes of a file."""
    # One buffer read into again and again: a new 16 MiB bytes object a read cost a fifth more.
    buffer = bytearray(block)
    view, count = memoryview(buffer), 0
    with path.open("rb", buffering=0) as handle:
        while end > 0:
            size = handle.readinto(view[: min(block, end)])
            if not size:
                break
            count += buffer.count(b"\n", 0, size)
            end -= size
    return count


def iter_lines(
    path: Path,
    file: str,
    issues: Issues,
    stats: FileStats,
    start: int = 0,
    end: int | None = None,
    first_line: int = 1,
) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed JSON value) for each line that decodes and parses; report the rest.

    `start`/`end` select a byte range that begins and ends at line boundaries; `first_line` is the
    number of its first line.
    """
    left = float("inf") if end is None else end - start
    with open_regular(path) as handle:
        handle.seek(start)
        for line_no, raw in enumerate(split_lines(handle), start=first_line):
            if left <= 0:
                break
            stats.lines = line_no
            if isinstance(raw, LineTooLong):
                left -= raw.size
                issues.error(
                    file,
                    line_no,
                    "line_too_long",
                    f"the line is {raw.size:,} bytes, over the {size_text(MAX_LINE_BYTES)} rft reads as one row (it was not read whole); shorten it",
                )
                continue
            left -= len(raw)
            if line_no == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                issues.error(
                    file,
                    line_no,
                    "invalid_utf8",
                    f"byte {exc.start + 1} is not valid UTF-8 ({exc.reason}); save the file as UTF-8",
                    column=exc.start + 1,
                )
                continue
            if text.isspace():
                stats.blank_lines += 1
                issues.warning(file, line_no, "blank_line", "blank line (it is skipped; delete it)")
                continue
            try:
                row = parse_line(text)
            except json.JSONDecodeError as exc:
                issues.error(
                    file,
                    line_no,
                    "json_syntax",
                    f"invalid JSON ({exc.msg}); write one complete strict-JSON object per line (no trailing commas, comments or single quotes)",
                    column=exc.colno,
                )
                continue
            except (ValueError, RecursionError) as exc:
                reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                issues.error(
                    file,
                    line_no,
                    "json_syntax",
                    f"invalid JSON ({reason}); write one complete strict-JSON object per line",
                )
                continue
            if "\\u" in text and has_lone_surrogate(text, row):
                issues.warning(
                    file,
                    line_no,
                    "lone_surrogate",
                    "a string holds a lone surrogate escape (\\ud800-\\udfff without its pair), which is not text; graders score it, but tokenizers and UTF-8 files cannot hold it: remove it",
                )
            yield line_no, row


@dataclass
class ScanSettings:
    demonstration_field: str
    require_demonstrations: bool
    overlap_fields: tuple[str, ...]
    required_item_fields: tuple[str, ...]
    tokenizer: Any
    max_tokens: int | None
    tools: dict[str, dict | None] | None = None  # `--tools`: name -> function definition


class Scanner:
    """Streams the files of one validation run and fills a report."""

    def __init__(self, settings: ScanSettings, issues: Issues, threshold: float) -> None:
        self.settings, self.issues, self.threshold = settings, issues, threshold
        self.valid_name: str | None = None
        self.valid_prompts: dict[int, int] = {}  # prompt hash -> first valid line
        self.valid_values: dict[tuple[str, str], int] = {}  # (field, value) -> first valid line
        self.valid_field_rows: Counter[str] = Counter()  # overlap field -> valid rows that have it
        self.valid_lines: list[int] = []  # near-duplicate index row id -> valid line
        self.valid_keys: list[str] = []  # normalised prompts waiting to be indexed
        # a row's field names -> rows that have exactly them, in the range being scanned
        self._field_sets: dict[tuple[str, ...], int] = {}
        self.index = NearDuplicateIndex(threshold, _overlap.CANDIDATE_BUDGET)
        self.overlap: list[dict[str, Any]] = []
        self.overlap_counts: Counter[str] = Counter()

    def scan(self, path: Path, is_train: bool, workers: int = 1) -> FileStats:
        """Check every line of one file; the validation file must be scanned before the training file."""
        file = str(path)
        size = _size(path)
        if (
            is_train
            and workers > 1
            and size >= PARALLEL_MIN_BYTES
            and self.settings.tokenizer is None
        ):
            stats, seen = self._scan_parallel(path, size)
        else:
            stats, seen = self._scan_range(path, is_train)
        stats.distinct_prompts = len(seen)
        if stats.lines == stats.blank_lines:
            self.issues.error(
                file, None, "empty_file", "the file has no rows (write one JSON object per line)"
            )
        return stats

    def _scan_range(
        self,
        path: Path,
        is_train: bool,
        start: int = 0,
        end: int | None = None,
        first_line: int = 1,
    ) -> tuple[FileStats, dict[int, int]]:
        """Scan one byte range; returns its stats and its prompt hashes (hash -> first line)."""
        file, stats = str(path), FileStats()
        seen: dict[int, int] = {}
        batch: list[tuple[int, int, str]] = []
        self._field_sets = {}
        try:
            for line_no, row in iter_lines(path, file, self.issues, stats, start, end, first_line):
                key = self._check(file, line_no, row, stats, is_train)
                if key is None:
                    continue
                digest = prompt_hash(key)
                first = seen.setdefault(digest, line_no)
                if first != line_no:
                    self._duplicate(file, line_no, first)
                if is_train:
                    self._check_against_valid(file, line_no, row, digest, key, batch)
                elif first == line_no:
                    self._remember_valid(line_no, row, digest, key)
        except OSError as exc:
            raise DataError(
                f"{file}: read error ({exc.strerror or exc}); check the file and the disk"
            ) from None
        self._flush(file, batch)
        for names, count in self._field_sets.items():
            for name in names:
                stats.fields[name] += count
        return stats, seen

    def _duplicate(self, file: str, line_no: int, first: int) -> None:
        self.issues.warning(
            file,
            line_no,
            "duplicate_prompt",
            f"same prompt as line {first} after normalisation (case, Unicode form, whitespace); remove one of the two rows",
        )

    def _scan_parallel(self, path: Path, size: int) -> tuple[FileStats, dict[int, int]]:
        """Scan the first half of the file here and the second half in a forked child process.

        The child shares the validation index (copy-on-write) and sends back its stats, issues,
        overlap records and prompt hashes; duplicates across the two halves are found on merge.
        """
        import multiprocessing

        # Halves of equal bytes: the child forks after the validation file is scanned and indexed, so
        # both start together; the child's line count and the parent's merge are about even.
        split = _split_point(path, size // 2)
        context = multiprocessing.get_context("fork")
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(
            target=self._scan_child, args=(path, split, size, sender), daemon=True
        )
        child.start()
        sender.close()
        try:
            stats, seen = self._scan_range(path, True, 0, split, 1)
            outcome = receiver.recv()
        except EOFError:
            raise RftError(
                f"{path}: the second validation process died (out of memory?); "
                "retry with RFT_VALIDATE_WORKERS=1"
            ) from None
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
        self.issues = Issues(self.issues.limit, self.issues.strict)
        self.overlap, self.overlap_counts = [], Counter()
        self.index.counts = Counter()
        try:
            first_line = _count_lines(path, start) + 1
            stats, seen = self._scan_range(path, True, start, end, first_line)
            import numpy as np

            # Two flat arrays pickle in 16 bytes a prompt; the dict would take about 110.
            digests = np.fromiter(seen.keys(), dtype=np.int64, count=len(seen))
            lines = np.fromiter(seen.values(), dtype=np.int64, count=len(seen))
            del seen
            sender.send(
                (
                    stats,
                    (digests, lines),
                    self.issues,
                    self.overlap,
                    self.overlap_counts,
                    self.index.counts,
                )
            )
        except RftError as exc:
            sender.send(exc)
        finally:
            sender.close()

    def _merge_child(
        self,
        file: str,
        stats: FileStats,
        seen: dict[int, int],
        child_stats: FileStats,
        child_seen: tuple[Any, Any],
        issues: Issues,
        overlap: list,
        overlap_counts: Counter,
        search_counts: Counter,
    ) -> tuple[FileStats, dict[int, int]]:
        self.issues.absorb(issues)
        self.index.counts.update(search_counts)
        self.overlap.extend(overlap)
        self.overlap_counts.update(overlap_counts)
        stats.merge(child_stats)
        digests, lines = child_seen
        for start in range(
            0, len(digests), 1 << 16
        ):  # in slices, to bound the temporary Python ints
            for digest, line_no in zip(
                digests[start : start + (1 << 16)].tolist(),
                lines[start : start + (1 << 16)].tolist(),
                strict=True,
            ):
                first = seen.setdefault(digest, line_no)
                if first != line_no:
                    self._duplicate(file, line_no, first)
        return stats, seen

    def _check(
        self, file: str, line_no: int, row: Any, stats: FileStats, is_train: bool
    ) -> str | None:
        """Check the contract and gather stats; returns the normalised prompt, or None for a bad row."""
        s = self.settings
        shape = fast_shape(row, s.demonstration_field)
        problems = [] if shape is not None else check_row(row, s.demonstration_field)
        if s.required_item_fields and isinstance(row, dict):
            problems += [
                missing_item_field(name) for name in s.required_item_fields if name not in row
            ]
        if not problems and s.tools is not None:
            problems += tools_file_problems(row, s.tools)
        if not problems and shape is None:
            shape = slow_shape(row, s.demonstration_field)
        if shape is not None and not problems and is_train and s.require_demonstrations:
            if not shape[2]:
                problems.append(missing_demonstration(s.demonstration_field))
        if problems or shape is None:  # no problems: a shape was found
            stats.invalid_rows += 1
            for problem in problems:
                self.issues.error(file, line_no, problem.code, problem.message)
            return None
        text, chars, has_demo = shape
        stats.rows += 1
        stats.messages[len(row["messages"])] += 1
        stats.prompt_chars[chars] += 1
        stats.demonstrations += has_demo
        # Rows mostly share one set of field names: count the sets (one dict update), and the
        # names once at the end of the range (`_scan_range`).
        names = tuple(row)
        self._field_sets[names] = self._field_sets.get(names, 0) + 1
        if s.tokenizer is not None:
            self._count_tokens(file, line_no, row, stats)
        return normalize_text(text)

    def _count_tokens(self, file: str, line_no: int, row: dict, stats: FileStats) -> None:
        n = count_prompt_tokens(self.settings.tokenizer, row)
        stats.tokens[n] += 1
        limit = self.settings.max_tokens
        if limit is not None and n > limit:
            stats.over_max_tokens += 1
            self.issues.warning(
                file,
                line_no,
                "too_many_tokens",
                f"the prompt is {n} tokens, over --max-tokens {limit}; shorten it or raise the limit",
            )

    def _remember_valid(self, line_no: int, row: dict, digest: int, key: str) -> None:
        self.valid_prompts[digest] = line_no
        for name in self.settings.overlap_fields:
            if name in row:
                self.valid_values.setdefault((name, value_key(row[name])), line_no)
                self.valid_field_rows[name] += 1
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

    def _check_against_valid(
        self, file: str, line_no: int, row: dict, digest: int, key: str, batch: list
    ) -> None:
        if self.valid_name is None:
            return
        valid_line = self.valid_prompts.get(digest)
        if valid_line is not None:
            self._record("exact", line_no, valid_line, 1.0, None)
            self.issues.error(
                file,
                line_no,
                "overlap_prompt",
                f"same prompt as {self.valid_name} line {valid_line} after normalisation (case, Unicode form, whitespace); remove it from the training file",
            )
        for name in self.settings.overlap_fields:
            found = self.valid_values.get((name, value_key(row[name]))) if name in row else None
            if found is not None:
                self._record("field", line_no, found, None, name)
                self.issues.error(
                    file,
                    line_no,
                    "overlap_field",
                    f'"{printable(name)}" has the same value as {self.valid_name} line {found}; no validation answer may appear in training (remove or change the row; if "{printable(name)}" is an answer that different problems share, such as a number, leave it out of --overlap-fields)',
                )
        if (
            valid_line is None
        ):  # a row with an exact overlap is not also searched for near-duplicates
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
            message = (
                f"near-duplicate of {self.valid_name} line {valid_line} (word 3-gram Jaccard {similarity:.2f} >= {self.threshold}); remove or rewrite one of them"
                if self.issues.keeps_warning("near_duplicate")
                else ""  # counted only: no message is kept past the limit
            )
            self.issues.warning(file, line_no, "near_duplicate", message)
        batch.clear()

    def _record(
        self,
        kind: str,
        train_line: int,
        valid_line: int,
        similarity: float | None,
        name: str | None,
    ) -> None:
        self.overlap_counts[kind] += 1
        if self.overlap_counts[kind] <= self.issues.limit:
            self.overlap.append(
                {
                    "kind": kind,
                    "train_line": train_line,
                    "valid_line": valid_line,
                    "similarity": similarity,
                    "field": name,
                }
            )


def default_workers() -> int:
    import multiprocessing
    import os
    import threading

    if os.environ.get("RFT_VALIDATE_WORKERS", "").strip().isdigit():
        return max(1, int(os.environ["RFT_VALIDATE_WORKERS"]))
    # fork() is only safe in a single-threaded process (no torch/tokenizers threads yet).
    if "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        return 1
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    return min(2, cores)
