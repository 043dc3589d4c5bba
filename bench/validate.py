"""Benchmark `rft validate` on a 1,000,000-row training file and a 100,000-row validation file.

Usage:
    python bench/validate.py                      # 1M + 100k rows in a temporary directory
    python bench/validate.py --train-rows 100000  # a quicker run

Each measurement runs in a fresh child process. Peak memory is the largest sum of the proportional
set sizes (PSS: resident memory, pages shared after fork() split between the sharers; the plain RSS
sum, which counts shared pages twice, is printed too) of that process and its own children (the validator forks one for the second half of a large training
file), sampled every 10 ms from /proc/PID/smaps_rollup; `ru_maxrss` is not used because Linux
carries it over from the parent through exec. Measured:
  1. a plain `json.loads` loop over both files (the floor any Python validator pays);
  2. the full `validate_dataset(train, valid, overlap_fields=["reference_answer"])`, with the
     exact-overlap, near-duplicate and reference-value checks.
Data shapes (`--shape`, listed in `--help`; docs/benchmarks.md has the figures), each with some exact duplicates, exact train/valid
overlaps and one-word-longer near-duplicates planted, so every code path runs: `random` prompts over
a 20,000-word vocabulary, and shapes chosen to be hard for the near-duplicate search: tiny
vocabularies (every prompt shares common word 3-grams, the prefix filter's worst case), unique
tags, long shared beginnings and endings, near-identical rows, numbers only, very long and very
short rows, Unicode that NFKC rewrites, CJK text without spaces, and (`vocab`) many templates over
a 60-word vocabulary, written apart from the shapes the search was tuned on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

_CHILD_BASELINE = """
import json, resource, sys, time
start = time.perf_counter()
rows = 0
for path in sys.argv[1:]:
    with open(path, "rb") as handle:
        for line in handle:
            json.loads(line)
            rows += 1
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"rows": rows, "seconds": time.perf_counter() - start, "cpu_main": usage.ru_utime + usage.ru_stime, "cpu_workers": 0.0}))
"""

_CHILD_VALIDATE = """
import json, resource, sys, time
start = time.perf_counter()
from rft_cli.data.validation import validate_dataset
workers = int(sys.argv[3]) if len(sys.argv) > 3 else None
report = validate_dataset(sys.argv[1], sys.argv[2], overlap_fields=["reference_answer"], workers=workers)
seconds = time.perf_counter() - start
usage, workers_usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rows": report.stats["train"]["lines"] + report.stats["valid"]["lines"], "seconds": seconds,
                  "cpu_main": usage.ru_utime + usage.ru_stime, "cpu_workers": workers_usage.ru_utime + workers_usage.ru_stime,
                  "error_counts": report.error_counts, "warning_counts": report.warning_counts,
                  "overlap": report.stats["overlap"]}))
"""


def _vocabulary(rng: random.Random, size: int = 20_000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(size)]


def _row(prompt: str, answer: int) -> str:
    return json.dumps(
        {
            "messages": [{"role": "user", "content": prompt}],
            "reference_answer": str(answer),
            "solution": f"Work through it step by step.\n#### {answer}",
        }
    )


TEMPLATE_WORDS = (
    "how many apples does the farmer have after selling some of them each day to market".split()
)
PREAMBLE = " ".join(f"rule{k}" for k in range(150))  # a long instruction every prompt repeats
_SENTENCE = "a train leaves the station at noon and travels east at a steady speed while a second train leaves the same station one hour later going the same way".split()
_MORE = [f"then{k}" for k in range(31)]  # makes _SENTENCE 60 different words
_CJK = [chr(code) for code in range(0x4E00, 0x4E00 + 2000)]  # common CJK ideographs
_SHAPES = {
    "random": "random 25-45 word prompts over a 20,000-word vocabulary",
    "templated": "8-30 words of a 16-word vocabulary, a number and a unique tag (the bench's original)",
    "tiny_vocabulary": "10-40 words of `red blue green` and a unique tag",
    "six_words": "8-30 words of a 6-word vocabulary, no tag",
    "two_words": "50-150 words of `yes no`: most rows are near-duplicates of many",
    "sentence": "one 30-word sentence with two words replaced by numbers",
    "preamble": "a 150-word shared preamble and a 25-word random tail",
    "short_tail": "a 60-word shared preamble and 3-12 words of a 30-word vocabulary",
    "suffix": "5-10 random words and a 100-word shared ending",
    "near_identical": "one 60-word sentence with one word replaced by a number (same place: Jaccard 0.90)",
    "numbers": "10-40 numbers below 100",
    "long_rows": "400-800 words of a 40-word vocabulary",
    "short_rows": "1-4 words of a 20-word vocabulary",
    "unicode": "8-30 CJK/emoji/fullwidth words of a 12-word vocabulary and a unique tag",
    "cjk": "20-60 CJK characters without spaces (one word, so one shingle)",
    "vocab": "400 templates of 2-90 words over a 60-word vocabulary, 3, 10 or 33 percent of each template's slots drawn afresh per row (some numbers, some repeated phrases)",
}


def _words(rng: random.Random, vocab: list[str], low: int, high: int) -> str:
    return " ".join(rng.choices(vocab, k=rng.randint(low, high)))


def _prompt_maker(rng: random.Random, shape: str) -> tuple[list[str], Any]:
    """(vocabulary, make(tag) -> a fresh prompt) for one data shape."""
    small = {
        "templated": TEMPLATE_WORDS,
        "tiny_vocabulary": ["red", "blue", "green"],
        "six_words": "one two three four five six".split(),
        "two_words": ["yes", "no"],
        "short_tail": [f"x{k}" for k in range(30)],
        "numbers": [str(k) for k in range(100)],
        "long_rows": [f"v{k}" for k in range(40)],
        "short_rows": [f"s{k}" for k in range(20)],
        "unicode": [
            "数学",
            "問題",
            "ｆｕｌｌ",
            "😀",
            "ﬁle",
            "é",
            "Ⅻ",
            "카드",
            "Ωmega",
            "①",
            "ｱｲｳ",
            "𝔸",
        ],
    }
    if shape == "vocab":
        return _template_maker(rng)
    vocab = small.get(shape) or _vocabulary(rng)
    makers = {
        "templated": lambda tag: f"{_words(rng, vocab, 8, 30)} {rng.randint(0, 99)} ({tag})",
        "tiny_vocabulary": lambda tag: f"{_words(rng, vocab, 10, 40)} id{tag}",
        "six_words": lambda tag: _words(rng, vocab, 8, 30),
        "two_words": lambda tag: _words(rng, vocab, 50, 150),
        "sentence": lambda tag: " ".join(
            _replace(rng, _SENTENCE, 2, lambda: str(rng.randint(0, 999)))
        ),
        "preamble": lambda tag: f"{PREAMBLE} {_words(rng, vocab, 25, 25)}",
        "short_tail": lambda tag: (
            f"{PREAMBLE[: PREAMBLE.index('rule60')]}{_words(rng, vocab, 3, 12)}"
        ),
        "suffix": lambda tag: (
            f"{_words(rng, _vocabulary_cached(rng), 5, 10)} {PREAMBLE[: PREAMBLE.index('rule100')]}"
        ),
        "near_identical": lambda tag: " ".join(
            _replace(rng, _SENTENCE + _MORE, 1, lambda: str(rng.randint(0, 9999)))
        ),
        "numbers": lambda tag: _words(rng, vocab, 10, 40),
        "long_rows": lambda tag: _words(rng, vocab, 400, 800),
        "short_rows": lambda tag: _words(rng, vocab, 1, 4),
        "unicode": lambda tag: f"{_words(rng, vocab, 8, 30)} 标{tag}",
        "cjk": lambda tag: "".join(rng.choices(_CJK, k=rng.randint(20, 60))),
    }
    return vocab, makers.get(shape) or (lambda tag: _words(rng, vocab, 25, 45) + "?")


def _template_maker(rng: random.Random) -> tuple[list[str], Any]:
    """(vocabulary, make) for the `vocab` shape, written apart from the shapes the search was tuned
    on: many templates of very different lengths over one small vocabulary, so every row shares
    3-grams with thousands of others, whole phrases recur between templates, and rows of one
    template differ in 3%, 10% or 33% of their words (a free slot: a word, sometimes a number), so
    that some templates give many near-duplicates of each other and others none."""
    vocab = _vocabulary(rng, 60)
    phrases = [rng.choices(vocab, k=rng.randint(3, 8)) for _ in range(40)]
    templates: list[list[str | None]] = []
    for _ in range(400):
        length = rng.choice(
            (rng.randint(2, 6), rng.randint(6, 20), rng.randint(20, 45), rng.randint(45, 90))
        )
        free = rng.choice((0.03, 0.1, 0.33))  # rows of a template differ in this share of words
        slots: list[str | None] = []
        while len(slots) < length:
            if rng.random() < 0.15:
                slots += rng.choice(phrases)
            else:
                slots.append(None if rng.random() < free else rng.choice(vocab))
        slots = slots[:length]
        slots[rng.randrange(length)] = None  # no template is one fixed prompt
        templates.append(slots)

    def fill(slot: str | None) -> str:
        if slot is not None:
            return slot
        return str(rng.randint(0, 99)) if rng.random() < 0.1 else rng.choice(vocab)

    return vocab, lambda tag: " ".join(fill(slot) for slot in rng.choice(templates))


def _replace(rng: random.Random, words: list[str], n: int, new: Any) -> list[str]:
    words = list(words)
    for place in rng.sample(range(len(words)), n):
        words[place] = new()
    return words


_VOCABULARY: list[list[str]] = []


def _vocabulary_cached(rng: random.Random) -> list[str]:
    if not _VOCABULARY:
        _VOCABULARY.append(_vocabulary(rng))
    return _VOCABULARY[0]


def generate(
    directory: Path, train_rows: int, valid_rows: int, seed: int = 0, shape: str = "random"
) -> tuple[Path, Path]:
    """Write train.jsonl and valid.jsonl; about 0.1% of valid rows are exact or near copies of train rows."""
    rng = random.Random(seed)
    vocab, make = _prompt_maker(rng, shape)
    # Only the training prompts that validation rows copy are kept (long rows would not fit memory).
    copied = {rng.randrange(train_rows) for _ in range(max(16, valid_rows // 250))}
    kept: list[str] = []
    train, valid = directory / "train.jsonl", directory / "valid.jsonl"
    with train.open("w") as handle:
        previous = ""
        for i in range(train_rows):
            prompt = previous if i % 10_000 == 1 else make(f"t{i}")  # an exact duplicate in train
            if i in copied:
                kept.append(prompt)
            handle.write(_row(prompt, rng.randint(0, 10**9)) + "\n")
            previous = prompt
    with valid.open("w") as handle:
        for i in range(valid_rows):
            if i % 1000 == 0:
                prompt = rng.choice(kept).upper()  # exact overlap after case folding
            elif i % 1000 == 1:
                prompt = _long_prompt(rng, kept) + " " + rng.choice(vocab)  # a near-duplicate
            else:
                prompt = make(f"v{i}")
            handle.write(_row(prompt, 10**9 + i) + "\n")
    return train, valid


def _long_prompt(rng: random.Random, prompts: list[str]) -> str:
    """A training prompt of 12 words or more, so one appended word keeps its 3-gram Jaccard >= 0.9
    (any prompt where the shape has none that long)."""
    long = [prompt for prompt in prompts if prompt.count(" ") >= 11]
    return rng.choice(long or prompts)


def _generate_in_child(
    directory: Path, train_rows: int, valid_rows: int, shape: str
) -> tuple[Path, Path]:
    """Generate the files in a child process, so this process stays small while it measures."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import validate; validate.generate(__import__('pathlib').Path({str(directory)!r}), {train_rows}, {valid_rows}, shape={shape!r})"
    subprocess.run([sys.executable, "-c", code], check=True)
    return directory / "train.jsonl", directory / "valid.jsonl"


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process plus its children; PSS splits pages shared after fork() between sharers."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            fields = dict(line.split()[:2] for line in handle if line.startswith(("Rss:", "Pss:")))
        rss, pss = int(fields["Rss:"]), int(fields["Pss:"])
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            for child in handle.read().split():
                child_rss, child_pss = _memory_kib(int(child))
                rss, pss = rss + child_rss, pss + child_pss
    except (OSError, KeyError, ValueError):
        pass
    return rss, pss


def _run_child(code: str, *args: str, root: Path = ROOT) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    # cwd=root: `python -c` puts the working directory first on sys.path, ahead of PYTHONPATH.
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, env=env, cwd=root
    )
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        start = time.perf_counter()
        rss, pss = _memory_kib(proc.pid)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        # Reading smaps_rollup walks the page tables (several ms at 1.6 GiB): polled every 10 ms it
        # took 16 s of CPU, a quarter of a core, in a 59 s run on 2 cores. At most a tenth now.
        time.sleep(max(0.01, 10 * (time.perf_counter() - start)))
    if proc.returncode:
        raise SystemExit(f"the benchmark child failed with exit code {proc.returncode}")
    return {
        **json.loads(proc.stdout.read()),
        "peak_rss_mib": peak_rss / 1024,
        "peak_pss_mib": peak_pss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=1_000_000)
    parser.add_argument("--valid-rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--shape",
        choices=sorted(_SHAPES),
        default="random",
        help="the prompts' shape: "
        + "; ".join(f"{name}: {text}" for name, text in _SHAPES.items()),
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep the generated files here; files already there are reused as they are (shape and sizes unchecked)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        action="append",
        help="a checkout to import rft_cli from (repeat to compare, alternating; default: this one)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="validator processes (default: automatic)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        directory = args.data_dir or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        if args.data_dir and (directory / "valid.jsonl").exists():
            train, valid = directory / "train.jsonl", directory / "valid.jsonl"
        else:
            train, valid = _generate_in_child(
                directory, args.train_rows, args.valid_rows, args.shape
            )
        size_mib = (train.stat().st_size + valid.stat().st_size) / 2**20
        print(
            f"{args.shape} data: {args.train_rows:,} + {args.valid_rows:,} rows ({size_mib:.0f} MiB) in {time.perf_counter() - start:.1f} s ({directory})"
        )
        for _ in range(args.repeats):
            base = _run_child(_CHILD_BASELINE, str(train), str(valid))
            for root in args.root or [ROOT]:
                full = _run_child(
                    _CHILD_VALIDATE,
                    str(train),
                    str(valid),
                    *([str(args.workers)] if args.workers else []),
                    root=root,
                )
                _print(
                    base,
                    full,
                    (f"{args.workers} worker(s)" if args.workers else "automatic workers")
                    + f", {root}",
                )


def _print(base: dict, full: dict, label: str) -> None:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    for name, m in (("json.loads loop", base), (f"validate_dataset ({label})", full)):
        print(
            f"{name}: {m['rows']:,} rows in {m['seconds']:.2f} s wall ({m['rows'] / m['seconds']:,.0f} rows/s); "
            f"CPU {m['cpu_main']:.2f} s main + {m['cpu_workers']:.2f} s worker; peak memory {m['peak_pss_mib']:.0f} MiB PSS ({m['peak_rss_mib']:.0f} MiB RSS)"
        )
    print(
        f"ratio validate / json.loads: {full['seconds'] / base['seconds']:.2f}x wall, "
        f"{(full['cpu_main'] + full['cpu_workers']) / base['cpu_main']:.2f}x total CPU, "
        f"{full['cpu_main'] / base['cpu_main']:.2f}x main-process CPU"
    )
    print(
        f"found: errors {full['error_counts']}, warnings {full['warning_counts']}, overlap {full['overlap']}"
    )


if __name__ == "__main__":
    main()
