"""Issue 24: every grader type and every reader, fed generated hostile inputs under a time and a
memory budget (derandomized hypothesis, like the fuzz tests of tests/test_cli_app.py).

A hostile input here is mostly an *amplifier*: a short piece repeated thousands of times (spaces
after "The answer is", unclosed braces, markup, NFKC-expanding characters, Unicode line breaks),
the shape that makes a backtracking regex, a quadratic table or a line splitter blow up. Each
grade must finish within its budget and allocate less than its memory budget (tracemalloc: Python
allocations, which is where the quadratic structures lived). `RFT_FUZZ_EXAMPLES=2000` hunts longer
with fresh random examples. Inputs that once failed are kept in tests/corpus/.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.graders import build_grader

_LONG = int(os.environ.get("RFT_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=_LONG or 12,
    deadline=None,
    derandomize=not _LONG,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # shrinking megabyte inputs takes minutes
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "example"

PIECES = [
    " ", "\t", "\n", "\u2028", "\x85", "\r", "answer", "The answer is", " is", ":", "=", "(", "[",
    "<", "*", "####", "\\boxed{", "{", "}", "\\frac{", "1", "12", ",", ".", "-", "$", "%", "/",
    "e", "x", "\u0663", "\uff14", "\u2212", "[/x]", "[link=https://e.example]", "\x1b]0;t\x07",
    "\ud800", "\ufdfa", "\u202e", "東", "a a", "1,000", "1_000", "\x00", '{"a": ', "[[",
]  # fmt: skip

# An amplifier: a head, a piece repeated up to 5,000 times, a tail.
amplified = st.builds(
    lambda head, piece, count, tail: head + piece * count + tail,
    st.sampled_from(["", "The answer is", "#### ", "\\boxed{", "answer: ", "5"]),
    st.sampled_from(PIECES),
    st.integers(0, 5_000),
    st.sampled_from(["", "x", "7", "}", "\n#### 7", " 75 - 30"]),
)
texts = amplified | st.lists(st.sampled_from(PIECES), max_size=30).map("".join)

_TEXT = {"input": "{{ sample.output_text }}", "reference": "{{ item.answer }}"}
# name -> (spec, seconds per grade, bytes of Python allocations per grade beyond 50 per character)
BUDGETS = {
    "string_check": ({"type": "string_check", **_TEXT, "operation": "ilike"}, 0.5, 20 << 20),
    "numeric": ({"type": "numeric", "reference": "{{ item.answer }}"}, 0.5, 20 << 20),
    "numeric_patterns": (
        {"type": "numeric", "reference": "{{ item.answer }}", "patterns": ["=\\s*(\\S+)"]},
        2.5,
        20 << 20,
    ),
    "regex": ({"type": "regex", "pattern": "(?:a|b)+c", "reference": "{{ item.answer }}"}, 2.5, 20 << 20),
    "json_match": ({"type": "json_match", "input": "{{ sample.output_text }}", "reference": {"a": 1}}, 0.5, 40 << 20),
    "fuzzy_match": ({"type": "text_similarity", **_TEXT, "evaluation_metric": "fuzzy_match"}, 2.0, 40 << 20),
    "rouge_l": ({"type": "text_similarity", **_TEXT, "evaluation_metric": "rouge_l"}, 2.0, 40 << 20),
    "rouge_2": ({"type": "text_similarity", **_TEXT, "evaluation_metric": "rouge_2"}, 2.0, 60 << 20),
    "bleu": ({"type": "text_similarity", **_TEXT, "evaluation_metric": "bleu"}, 2.0, 60 << 20),
    "gleu": ({"type": "text_similarity", **_TEXT, "evaluation_metric": "gleu"}, 2.0, 60 << 20),
    "multi": (
        {
            "type": "multi",
            "graders": {
                "a": {"type": "numeric", "reference": "{{ item.answer }}"},
                "b": {"type": "string_check", **_TEXT, "operation": "like"},
            },
            "calculate_output": "0.5 * a + 0.5 * b",
        },
        1.0,
        20 << 20,
    ),
}  # fmt: skip
GRADERS = {name: build_grader(spec) for name, (spec, _, _) in BUDGETS.items()}


def _measure(call, *args):
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = call(*args)
    finally:
        took, peak = time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, took, peak


@pytest.mark.slow
@pytest.mark.guarantee
@FUZZ
@given(sample=texts, reference=texts)
def test_every_rule_grader_stays_within_its_budget(sample, reference):
    """Each grader, each direction (the hostile text as the answer, then as the reference)."""
    for name, grader in GRADERS.items():
        _, seconds, memory = BUDGETS[name]
        for answer, answer_ref in ((sample, "7"), ("7", reference)):
            result, took, peak = _measure(grader.grade, answer, {"answer": answer_ref})
            # tracemalloc slows allocation-heavy code about 3x: the time budget allows for it
            assert took < 3 * seconds and peak < memory, (
                name,
                len(answer),
                len(answer_ref),
                took,
                peak,
            )
            assert 0.0 <= result.reward <= 1.0
            json.dumps(result.to_dict(), ensure_ascii=False).encode("utf-8", "surrogatepass")


@pytest.mark.slow
@pytest.mark.guarantee
@settings(FUZZ, max_examples=_LONG or 8)
@given(sample=texts)
def test_the_math_grader_stays_within_its_timeout(sample):
    grader = build_grader({"type": "math", "reference": "7", "timeout": 1})
    _, took, _ = _measure(grader.grade, sample[:20_000], {})
    assert took < 10, took  # math-verify's own timeout plus parsing (seconds per 20 KB)


# -- readers ----------------------------------------------------------------------------------

_line = texts.map(
    lambda text: json.dumps(
        {"messages": [{"role": "user", "content": text or "q"}], "answer": text},
        ensure_ascii=False,
    )
)
_raw_line = st.sampled_from(
    [b"\xff", b"[" * 5000, b"{" + b"\x00" * 10, "\u2028".encode(), b"\r", b"\x85", b""]
)


def _invoke(args):
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code in (0, 1, 2) and "Traceback" not in result.output, result.output
    return result


@pytest.mark.slow
@pytest.mark.guarantee
@FUZZ
@given(lines=st.lists(_line.map(str.encode) | _raw_line, min_size=1, max_size=4))
def test_validate_and_grade_read_any_jsonl_within_budget(tmp_path, lines):
    """`rft validate` (with a validation file: the near-duplicate search) and `rft grade --data
    --samples` on generated rows: exit 0/1/2 with a message, within seconds and bounded memory."""
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    samples = tmp_path / "samples.jsonl"
    samples.write_bytes(
        b"".join(
            json.dumps({"output_text": line.decode("utf-8", "replace")}).encode() + b"\n"
            for line in lines
        )
    )
    for args in (
        ["validate", str(path), "--valid", str(path)],
        ["grade", str(EXAMPLE / "grader.yaml"), "--data", str(path), "--samples", str(samples)],
    ):
        _, took, peak = _measure(_invoke, args)
        assert took < 20 and peak < 200 << 20, (args[0], took, peak)


_yaml_values = st.sampled_from(
    ["!!binary aGk=", "!!set {a}", "2020-01-01", ".inf", "&a [*a]", "!!python/object:os.system x",
     "[" * 300, "'" + "\u2028" * 10 + "'", "1e999", "!!omap [{a: 1}]"]
)  # fmt: skip


@pytest.mark.slow
@pytest.mark.guarantee
@FUZZ
@given(
    key=st.sampled_from(["type", "name", "pattern", "timeout", "reference", "graders"]),
    value=_yaml_values,
    depth=st.integers(1, 8),
)
def test_any_yaml_oddity_in_a_grader_or_config_is_a_config_error(tmp_path, key, value, depth):
    """Tags, dates, infinities, self-referencing and nested aliases in a grader file and in a run
    config: exit 2 with a message, never a traceback, a hang or gigabytes."""
    bomb = "\n".join(
        [f"l0: &l0 [{value if not value.startswith('&') else 'x'}, x, x, x, x, x, x, x, x]"]
        + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, depth)]
    )
    grader = tmp_path / "g.yaml"
    grader.write_text(f"type: regex\npattern: x\n{key}: {value}\n", encoding="utf-8")
    bombed = tmp_path / "bombed.yaml"
    bombed.write_text(f"{bomb}\ntype: regex\npattern: x\n{key}: *l{depth - 1}\n", encoding="utf-8")
    for path in (grader, bombed):
        _, took, peak = _measure(_invoke, ["grade", str(path), "--item", "{}", "--sample", "x"])
        assert took < 10 and peak < 100 << 20, (took, peak)
    recipe = tmp_path / "run.yaml"
    recipe.write_text(f"{bomb}\nseed: *l{depth - 1}\n", encoding="utf-8")
    _, took, peak = _measure(_invoke, ["train", str(recipe), "--dry-run"])
    assert took < 10 and peak < 100 << 20, (took, peak)
