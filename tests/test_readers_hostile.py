"""Issue 24, where a file is the attacker: YAML alias bombs and odd tags, JSON Lines that are valid
but hold Unicode line breaks, FIFOs and devices, lines of hundreds of megabytes, files that vanish.

Each must end in a message and a documented exit code, within bounded time and memory; one
regression test per item of the issue (each fails on d6643b4).
"""

from __future__ import annotations

import json
import os
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rft_cli import files, yaml_safe
from rft_cli.cli import app
from rft_cli.data import records, scanning

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "tiny-test.yaml"
EXAMPLE = ROOT / "data" / "example"
runner = CliRunner()


def invoke(args, seconds=20.0):
    """Run `rft ARGS` in a thread: a reader that blocks (a FIFO) fails the test instead of hanging it."""
    box = {}
    thread = threading.Thread(
        target=lambda: box.update(result=runner.invoke(app, args)), daemon=True
    )
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"rft {' '.join(map(str, args))} blocked for {seconds} s"
    result = box["result"]
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    return result


# -- 8. YAML alias bombs --------------------------------------------------------------------------

BOMB = "\n".join(
    [
        'a: &a ["x","x","x","x","x","x","x","x","x"]',
        *(
            f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]"
            for prev, name in zip("abcdef", "bcdefg", strict=True)
        ),
        "type: *g",
    ]
)


def test_the_alias_bomb_is_a_few_hundred_bytes():
    assert len(BOMB) < 400 and BOMB.count("*") == 55


@pytest.mark.parametrize(
    "args",
    [
        lambda p: ["grade", str(p), "--item", "{}", "--sample", "x"],
        lambda p: ["train", str(RECIPE), "--dry-run", "--set", f"grader={p}"],
        lambda p: ["train", str(RECIPE), "--dry-run", "--set", "grader=" + p.read_text()],
        lambda p: ["validate", str(EXAMPLE / "train.jsonl"), "--grader", str(p)],
    ],
    ids=["grade", "train_grader", "set", "validate"],
)
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, args):
    """A 377-byte file of nested aliases (9**7 = 4.8 million strings) hung `rft grade` and
    `rft train --dry-run` while memory grew to gigabytes; it is now a config error, at once."""
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    tracemalloc.start()
    started = time.monotonic()
    result = invoke(args(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.monotonic() - started < 5 and peak < 50 * 2**20, peak
    assert result.exit_code == 2 and "alias" in result.output, result.output


def test_aliases_within_the_bound_still_work():
    text = "base: &b {lr: 0.1, steps: 2}\nsft: *b\nrl: {<<: *b, steps: 3}\n"
    assert yaml_safe.load(text) == {
        "base": {"lr": 0.1, "steps": 2},
        "sft": {"lr": 0.1, "steps": 2},
        "rl": {"lr": 0.1, "steps": 3},
    }


def test_a_recursive_alias_is_refused():
    import yaml

    with pytest.raises(yaml.YAMLError, match="refers to the value that contains it"):
        yaml_safe.load("a: &a [1, *a]")


def test_the_size_check_counts_each_node_once_at_any_depth():
    """A chain of 200 aliases each doubling the last: 2**200 values, counted in 200 steps."""
    import yaml

    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 200)]
    started = time.monotonic()
    with pytest.raises(yaml.YAMLError, match="alias bomb"):
        yaml_safe.load("\n".join(lines))
    assert time.monotonic() - started < 1


def test_deep_flow_nesting_is_refused_before_the_scanner_goes_quadratic():
    """PyYAML's scanner walks every open `[` for each token, so 6 KB of `[[[[...` (the corpus's
    deep_nesting files) took a second before the composer's recursion gave out: refused at the
    cap now, at once; within it, nesting loads as before."""
    depth = yaml_safe.MAX_FLOW_DEPTH
    assert yaml_safe.load("a: " + "[" * depth + "]" * depth) is not None
    with pytest.raises(yaml_safe.RefusedNesting, match=f"nested more than {depth} deep"):
        yaml_safe.load("a: " + "[" * (depth + 1) + "]" * (depth + 1))
    started = time.perf_counter()
    with pytest.raises(yaml_safe.RefusedNesting):
        yaml_safe.load("a: " + "{a: " * 20_000)
    assert time.perf_counter() - started < 0.3


# -- 13. grader files whose values are not plain data ---------------------------------------------


@pytest.mark.parametrize(
    "text,named",
    [
        ("type: 2020-01-01\n", '"2020-01-01" is not one of'),
        ("type: !!binary aGVsbG8=\n", "'binary' is not a value rft reads"),
        ("type: !!set {a, b}\n", "'set' is not a value rft reads"),
        ("type: !!omap [{a: 1}]\n", "'omap' is not a value rft reads"),
        ("type: !!pairs [{a: 1}]\n", "'pairs' is not a value rft reads"),
    ],
    ids=["date", "binary", "set", "omap", "pairs"],
)
def test_yaml_values_that_are_not_plain_data_are_config_errors(tmp_path, text, named):
    """`type: 2020-01-01` (a date), `!!binary` (bytes) and `!!set` gave a TypeError traceback
    when the error message serialised them; a date is now its text and the tags are refused."""
    path = tmp_path / "g.yaml"
    path.write_text(text)
    result = invoke(["grade", str(path), "--item", "{}", "--sample", "x"])
    assert result.exit_code == 2 and named in result.output, result.output


def test_a_date_in_a_run_config_is_its_text(tmp_path):
    result = invoke(["train", str(RECIPE), "--dry-run", "--set", "output_dir=2020-01-01"])
    assert result.exit_code == 0, result.output


# -- 11. JSON Lines holding Unicode line breaks ------------------------------------------------


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85"])
def test_raw_unicode_line_breaks_inside_json_strings_are_read(tmp_path, char):
    """`rft grade --data/--samples` split lines with str.splitlines, which breaks at U+2028,
    U+2029, U+0085 and more; raw inside a JSON string they are valid JSON (rft's own writers emit
    them), and `rft validate` accepted the same file. Lines end at "\\n" only."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"reference_answer": f"4{char}2"}, ensure_ascii=False) + "\n")
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"output_text": f"a{char}b #### 42"}, ensure_ascii=False) + "\n")
    grader = EXAMPLE / "grader.yaml"
    result = invoke(["grade", str(grader), "--data", str(rows), "--samples", str(samples)])
    assert result.exit_code == 0 and "graded 1 samples" in result.output, result.output


def test_rfts_own_records_keep_lines_with_unicode_line_breaks(tmp_path):
    """metrics.jsonl and samples files are written with ensure_ascii=False: a grader error detail
    holding U+2028 made read_records drop the whole line as torn."""
    from rft_cli.jsonl import read_records
    from rft_cli.run_folder.metrics import reconcile_metrics

    path = tmp_path / "metrics.jsonl"
    lines = [{"stage": "rl", "step": i, "detail": f"a\u2028b\x85c{i}"} for i in (1, 2)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))
    warnings: list[str] = []
    assert read_records(path, warnings) == lines and warnings == []
    assert reconcile_metrics(path, "rl", 1) == 1
    assert read_records(path) == lines[:1]


# -- 12. devices and FIFOs ------------------------------------------------------------------------


def test_a_device_as_the_sample_file_is_refused():
    """`--sample-file /dev/zero` read until a MemoryError traceback."""
    result = invoke(["grade", str(EXAMPLE / "grader.yaml"), "--sample-file", "/dev/zero"])
    assert result.exit_code == 2 and "not a regular file" in result.output, result.output


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.jsonl"
    os.mkfifo(path)
    yield path
    # A reader still blocked on the FIFO (the bug) is released by a writer opening it.
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK) if _has_reader(path) else None
    if fd is not None:
        os.close(fd)


def _has_reader(path: Path) -> bool:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        return True
    except OSError:
        return False


@pytest.mark.parametrize(
    "args,code",
    [
        (
            lambda f: [
                "grade",
                str(EXAMPLE / "grader.yaml"),
                "--data",
                str(f),
                "--samples",
                str(f),
            ],
            2,
        ),
        (lambda f: ["grade", str(f), "--item", "{}", "--sample", "x"], 2),
        (lambda f: ["validate", str(EXAMPLE / "train.jsonl"), "--grader", str(f)], 2),
        (lambda f: ["validate", str(f)], 2),
        (lambda f: ["train", str(f), "--dry-run"], 2),
        (lambda f: ["train", str(RECIPE), "--dry-run", "--set", f"data.train={f}"], 1),
        (lambda f: ["import", "openai", str(f), "--model", "m", "-o", str(f) + ".yaml"], 2),
    ],
    ids=["grade_data", "grader", "validate_grader", "validate", "recipe", "train_data", "import"],
)
def test_a_fifo_is_refused_without_blocking(fifo, args, code):
    """A FIFO as `--data` or as `rft validate --grader` blocked forever (open() waits for a writer)."""
    result = invoke(args(fifo), seconds=10)
    assert result.exit_code in (code, 2) and result.output.strip(), result.output
    assert "regular file" in result.output or "no rows" in result.output, result.output


def test_a_file_that_vanishes_after_the_check_is_an_error(tmp_path, monkeypatch):
    """`rft validate` checked the file, then took its size: a file removed in between gave a
    FileNotFoundError traceback."""
    from rft_cli.data import validation

    path = tmp_path / "train.jsonl"
    path.write_text((EXAMPLE / "train.jsonl").read_text())
    check = validation._check_arguments

    def check_then_remove(*args):
        check(*args)
        path.unlink()

    monkeypatch.setattr(validation, "_check_arguments", check_then_remove)
    result = invoke(["validate", str(path)])
    assert result.exit_code == 1 and "No such file" in result.output, result.output


# -- 13. a line of hundreds of megabytes --------------------------------------------------------


def _row(content: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": content}]}, ensure_ascii=False)


def test_a_line_over_the_cap_is_an_error_without_being_read_whole(tmp_path, monkeypatch):
    """A 200 MiB single line peaked at 3.9 GB in `rft validate`: lines over MAX_LINE_BYTES are
    now an error (`line_too_long`), skipped in pieces; the cap is lowered here to keep it quick."""
    monkeypatch.setattr(files, "MAX_LINE_BYTES", 1 << 16)
    monkeypatch.setattr(scanning, "MAX_LINE_BYTES", 1 << 16)
    path = tmp_path / "train.jsonl"
    path.write_text(_row("hi") + "\n" + _row("a " * 200_000) + "\n" + _row("ok") + "\n")
    monkeypatch.setattr(files.split_lines, "__defaults__", (1 << 16,))
    result = invoke(["validate", str(path), "--format", "json"])
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and report["error_counts"] == {"line_too_long": 1}, report
    assert report["errors"][0]["line"] == 2 and report["stats"]["train"]["rows"] == 2


def test_a_line_over_the_cap_is_refused_by_the_other_readers(tmp_path, monkeypatch):
    monkeypatch.setattr(files.split_lines, "__defaults__", (1 << 16,))
    path = tmp_path / "rows.jsonl"
    path.write_text(_row("a " * 100_000) + "\n")
    result = invoke(
        ["grade", str(EXAMPLE / "grader.yaml"), "--data", str(path), "--samples", str(path)]
    )
    assert result.exit_code == 1 and "line 1: longer than" in result.output, result.output
    with pytest.raises(Exception, match="line 1: longer than"):
        records.load_rows(path)


@pytest.mark.slow
def test_a_long_nfkc_expanding_text_is_normalised_in_bounded_memory():
    """U+FDFA is one character that NFKC makes 18: a 6 MiB row of them held 0.78 GB as one
    normalised key in `rft validate`. A long key now keeps 64K characters and a digest of the
    rest, normalised piece by piece (150,000 of them: 45 MB before, about 7 MB now)."""
    tracemalloc.start()
    key = records.normalize_text("\ufdfa" * 150_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20 and len(key) < records.KEY_CHARS + 40, peak


def test_long_rows_are_still_found_as_duplicates_and_overlaps(tmp_path):
    path = tmp_path / "train.jsonl"
    long = " ".join(f"Word{i}" for i in range(20_000))
    path.write_text(_row(long) + "\n" + _row(long.lower()) + "\n" + _row(long + " more") + "\n")
    result = invoke(["validate", str(path), "--valid", str(path), "--format", "json"])
    report = json.loads(result.stdout)
    assert report["warning_counts"] == {"duplicate_prompt": 2}, report
    assert report["error_counts"] == {"overlap_prompt": 3}, report


def test_long_keys_are_exact_for_duplicates():
    """Two long texts equal after normalisation share a key; one differing in its last word does not."""
    text = " ".join(f"Word{i}" for i in range(30_000))
    key = records.normalize_text(text)
    assert len(key) < records.KEY_CHARS + 40
    assert records.normalize_text(text.upper().replace(" ", " \t ")) == key
    assert records.normalize_text(text[:-1] + "x") != key
    assert key.startswith(records.normalize_text(text[:1000]))


# -- 14. the near-duplicate search on repetitive data ------------------------------------------


def _repetitive(name, rng, i):
    if name == "tiny_vocabulary":  # three words and a unique tag: every prompt shares most 3-grams
        return " ".join(rng.choices(["red", "blue", "green"], k=rng.randint(10, 40))) + f" id{i}"
    if name == "shared_prefix":  # a 60-word shared start and a short random tail
        tail = rng.choices([f"x{k}" for k in range(30)], k=rng.randint(3, 12))
        return " ".join([f"w{k}" for k in range(60)] + tail)
    return " ".join(rng.choices(["yes", "no"], k=rng.randint(50, 150)))  # two words, long


@pytest.mark.slow
def test_the_near_duplicate_search_is_bounded_on_repetitive_data():
    """On prompts that share most of their 3-grams every candidate list is long: the search
    verified up to 256 candidates a row, one Python set at a time (1.1M such rows took 139 s, 16x a
    json.loads pass). Candidates are now cut by exact size and sketch bounds and verified in one
    vectorised pass, at most VERIFY_LIMIT a row (tests/test_near_duplicates.py counts the work on
    more shapes): 4,000 rows of each shape took 4.5 s of CPU here before, 0.5 s now. Nothing
    reported is below the threshold."""
    import random

    from rft_cli.data.overlap import VERIFY_LIMIT, NearDuplicateIndex

    spent = 0.0
    for name in ("tiny_vocabulary", "shared_prefix", "two_words"):
        rng = random.Random(0)
        valid = [records.normalize_text(_repetitive(name, rng, i)) for i in range(4000)]
        train = [records.normalize_text(_repetitive(name, rng, 10**6 + i)) for i in range(4000)]
        index = NearDuplicateIndex(0.9)
        index.add_batch(valid)
        index.freeze()
        started = time.process_time()
        found = index.query_batch(train)
        spent += time.process_time() - started
        stats = index.search_stats()
        assert stats.get("pairs_verified", 0) <= len(train) * VERIFY_LIMIT
        assert all(similarity >= 0.9 - 1e-9 for _, _, similarity in found)
        assert stats["rows_capped"] <= stats["rows_estimated"]
    assert spent < 1.5, spent


def test_a_path_too_long_for_the_system_is_a_message():
    """Found while testing `--set grader=<a bomb>`: a 300-character path made Path.exists() raise
    OSError (ENAMETOOLONG) in the config's path checks, a traceback."""
    long = "a" * 300
    for key in ("data.train", "grader"):
        result = invoke(["train", str(RECIPE), "--dry-run", "--set", f"{key}={long}"])
        assert result.exit_code == 2 and "not found" in result.output, result.output


def test_a_sample_from_stdin_is_read_up_to_the_cap(monkeypatch):
    """`--sample -` read stdin whole: `< /dev/zero` ran into a MemoryError like --sample-file."""
    monkeypatch.setattr(files, "MAX_TEXT_BYTES", 1000)
    grader = str(EXAMPLE / "grader.yaml")
    result = runner.invoke(app, ["grade", grader, "--sample", "-"], input="\0" * 5000)
    assert result.exit_code == 2 and "over 0 MiB" not in result.output, result.output
    assert "more than rft reads as one sample" in result.output
    result = runner.invoke(app, ["grade", grader, "--sample", "-"], input="#### 5\n")
    assert result.exit_code == 0, result.output
