"""Issue 24, where a policy's answer, a dataset row or a server reply is the attacker: the built-in
graders are bounded in time and memory, and nothing they read can raise, hang or leak.

One regression test per numbered item of the issue (each fails on d6643b4); the generated hostile
inputs for every grader type are in tests/test_hostile_fuzz.py.
"""

from __future__ import annotations

import random
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rft_cli.graders import answers, build_grader, lcs

# -- 6. numeric: the default answer patterns cannot backtrack -----------------------------------

SVAMP = {"type": "numeric", "reference": "{{ item.reference_answer }}", "partial_credit": 0.1}


def _seconds(call, *args):
    started = time.perf_counter()
    call(*args)
    return time.perf_counter() - started


def test_numeric_answer_is_followed_by_spaces_is_graded_at_once():
    """The SVAMP grader took 111 s on "The answer is" + 2,000 spaces + a letter: the regex
    `answer\\s*(?:is|:|=)\\s*[:=]?\\s*[<(\\[*]*\\s*(NUMBER)` backtracks cubically over the spaces.
    1,000 spaces took 5 s before; a megabyte of them now takes milliseconds."""
    grader = build_grader(SVAMP)
    for spaces in (1_000, 1_000_000):
        text = "The answer is" + " " * spaces + "x"
        assert _seconds(grader.grade, text, {"reference_answer": "7"}) < 0.5
    assert grader.grade("The answer is  <7>.", {"reference_answer": "7"}).reward == 1.0


def test_numeric_hostile_reference_is_read_at_once():
    """The same through the reference (read with the same patterns when it is not a number), and
    a number followed by spaces and a letter, which `\\s*(NUMBER)\\s*\\.?\\s*` read in quadratic time."""
    grader = build_grader(SVAMP)
    for reference in ("The answer is" + " " * 1_000 + "x", "5" + " " * 20_000 + "x"):
        started = time.perf_counter()
        result = grader.grade("#### 5", {"reference_answer": reference})
        assert time.perf_counter() - started < 0.5
    assert result.reward == 1.0  # "5   ...   x": its first number


HOSTILE_ANSWERS = {
    "answer_spaces": lambda n: "The answer is" + " " * n + "x",
    "hash_spaces": lambda n: "#### " + " \t" * (n // 2) + "x",
    "hashes": lambda n: "####" * (n // 4),
    "hash_words": lambda n: "#### " + "a " * (n // 2),
    "boxed_groups": lambda n: "\\boxed{" + "{a}" * (n // 3),
    "boxed_open": lambda n: "\\boxed{" * (n // 7) + "}",
    "answer_repeated": lambda n: "answer is " * (n // 10),
    "answer_parens": lambda n: "answer is " + "(" * n + "x",
    "number_spaces": lambda n: "5" + " " * n + "x",
    "digits_spaces": lambda n: "1" * (n // 2) + " " * (n // 2) + "x",
    "signs": lambda n: "- " * (n // 2),
    "commas": lambda n: "1," * (n // 2),
    "fractions": lambda n: "\\frac{" * (n // 6),
    "frac_spaces": lambda n: "\\frac{a}" + " " * n + "x",
    "arabic_digits": lambda n: "\u0663" * n,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HOSTILE_ANSWERS))
def test_numeric_is_linear_on_hostile_answers(name):
    """Ten times the text takes about ten times as long (under 30x allows for a shared machine);
    a megabyte of any of them as an answer or as a reference stays well under a second."""
    grader = build_grader({"type": "numeric", "reference": "{{ item.r }}"})
    small, large = HOSTILE_ANSWERS[name](100_000), HOSTILE_ANSWERS[name](1_000_000)
    for answer, reference in ((small, "1"), (large, "1"), ("1", small), ("1", large)):
        grader._cache.clear()
        took = _seconds(grader.grade, answer, {"r": reference})
        assert took < 2.0, (name, len(answer), len(reference), took)


_PIECES = [
    "####", "\\boxed", "{", "}", "answer", "ANSWER", " is", ":", "=", "  ", " ", "\n", "\t", "\r",
    "5", "12", "-", "$", ",", ".", "%", "/", "e", "x", "<", "(", "*", "\u2212", "\u0663", "1,234",
    "\u00a0", "\\frac",
]  # fmt: skip


@settings(max_examples=800, deadline=None, derandomize=True, database=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=14).map("".join))
def test_the_scanners_find_what_the_patterns_find(text):
    """The linear scanners give exactly the captures of `re.findall` with the documented
    patterns, and the whole-number check the match of `\\s*(NUMBER)\\s*\\.?\\s*`."""
    for scanner in answers.DEFAULT_SCANNERS:
        assert scanner.findall(text) == re.findall(scanner.pattern, text), scanner.pattern
    whole = re.fullmatch(rf"\s*({answers.NUMBER})\s*\.?\s*", text)
    assert answers._whole_number(text) == (whole.group(1) if whole else None)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("75 - 30", 30.0),  # issue 27: the last number of a subtraction, not -30
        ("so 75 - 30 = 45 and then 12 -7", 7.0),
        ("75-30", 30.0),
        ("(2) -1", 1.0),
        ("it is -5", -5.0),
        ("from 3, -4", -4.0),
        ("x = \u22127", -7.0),
        ("y" * 300 + " 75 - 30", 30.0),
        ("y" * 300 + " it is -5", -5.0),
    ],
)
def test_numeric_reads_a_binary_minus_as_an_operator(text, expected):
    """Issue 27: `numeric` read "75 - 30" as -30 when it fell back to the last number: a sign
    after an operand (and any spaces) is a binary minus."""
    assert answers.extract_answer(text, answers.DEFAULT_REGEXES) == expected


def test_numeric_reads_a_final_non_ascii_digit_in_a_long_answer():
    """Past 256 characters only ASCII digits were looked for: "... ٣" read as the earlier 7."""
    assert answers.last_number_in("7 " + "y" * 300 + " \u0663") == 3.0
    assert answers.last_number_in("y" * 300 + " \uff14\uff12") == 42.0  # full-width digits
    assert answers.last_number_in("\u0663") == 3.0  # as a short answer always did


def test_numeric_reads_a_reference_with_underscores_as_python_does():
    """A reference "1_000" was read as 1 (the first number of "1_000"); float() reads 1000."""
    grader = build_grader({"type": "numeric", "reference": "{{ item.a }}", "abs_tol": 0})
    assert grader.grade("#### 1000", {"a": "1_000"}).reward == 1.0
    assert grader.grade("#### 1", {"a": "1_000"}).reward == 0.0


# -- 7. similarity: LCS metrics are bounded ----------------------------------------------------


def _similarity(metric):
    return build_grader(
        {
            "type": "text_similarity",
            "input": "{{ sample.output_text }}",
            "reference": "{{ item.r }}",
            "evaluation_metric": metric,
        }
    )


def _words(n, seed=0):
    rnd = random.Random(seed)
    return " ".join(rnd.choice(["the", "cat", "sat", "on", "a", "mat"]) for _ in range(n))


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["rouge_l", "fuzzy_match"])
def test_lcs_metrics_grade_a_megabyte_quickly_in_little_memory(metric):
    """rouge_l on a 1 MB answer against a 5 KB reference took 71 s and 1.76 GB (rouge-score's
    quadratic table); it now takes under a second, in memory linear in the texts, and two
    megabyte texts (English or Chinese) take about a second."""
    import tracemalloc

    grader = _similarity(metric)
    tracemalloc.start()
    result = grader.grade(_words(40_000), {"r": _words(1_200, 1)})  # rouge-score: 48 M cells
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 30 * 2**20 and 0.0 < result.reward < 1.0, peak
    for answer, reference in (
        (_words(250_000), _words(1_200, 1)),
        (_words(250_000), _words(250_000, 1)),
        ("\u6771\u4eac" * 500_000, "\u4eac\u6771" * 30_000),
    ):
        took = _seconds(grader.grade, answer, {"r": reference})
        assert took < 6, (len(answer), len(reference), took)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    a=st.lists(st.sampled_from("ab東 c1"), max_size=80).map("".join),
    b=st.lists(st.sampled_from("ab東 c1"), max_size=80).map("".join),
)
def test_lcs_metrics_equal_the_libraries_they_replace(a, b):
    """fuzzy_match equals rapidfuzz's fuzz.ratio / 100 and rouge_l rouge-score's rougeL, to the
    bit, with the bit-parallel LCS forced through several blocks."""
    from rapidfuzz import fuzz
    from rouge_score import rouge_scorer

    from rft_cli.graders import similarity

    scorer = rouge_scorer.RougeScorer(
        ["rougeL"], use_stemmer=False, tokenizer=similarity.RougeTokenizer()
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lcs, "BLOCK", 8)
        patch.setattr(lcs, "_SMALL_WORK", 0)
        assert similarity._fuzzy(a, b) == fuzz.ratio(a, b) / 100
        assert similarity._RougeL()(a, b) == scorer.score(b, a)["rougeL"].fmeasure


def test_lcs_past_the_work_limit_is_a_lower_bound(monkeypatch):
    """Past WORK_LIMIT the prefixes are compared: never more than the exact LCS."""
    rnd = random.Random(5)
    a = "".join(rnd.choice("abc") for _ in range(3000))
    b = "".join(rnd.choice("abc") for _ in range(2000))
    exact = lcs.lcs_length(a, b)
    monkeypatch.setattr(lcs, "WORK_LIMIT", 500_000)
    monkeypatch.setattr(lcs, "_SMALL_WORK", 0)
    assert 0 < lcs.lcs_length(a, b) < exact
    assert lcs.lcs_length(a[:200], b) == lcs.lcs_length(b, a[:200])  # 200 x 2000 fits: exact
