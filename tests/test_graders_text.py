"""text_similarity (every metric) and math graders."""

from __future__ import annotations

import pickle

import pytest

from rft_cli.errors import GraderError
from rft_cli.graders import build_grader
from rft_cli.graders.similarity import WORDNET_HELP, wordnet_available

METRICS = [
    "fuzzy_match",
    "bleu",
    "gleu",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
]
REF = "the quick brown fox jumps over the lazy dog"


def similarity(metric: str, **extra):
    spec = {
        "type": "text_similarity",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.ref }}",
        "evaluation_metric": metric,
    }
    return build_grader({**spec, **extra})


@pytest.mark.parametrize("metric", METRICS)
def test_similarity_metric_orders_candidates(metric):
    grader = similarity(metric)
    same = grader.grade(REF, {"ref": REF}).reward
    close = grader.grade("the quick brown fox jumps over the lazy cat", {"ref": REF}).reward
    far = grader.grade("completely unrelated words here", {"ref": REF}).reward
    assert same == pytest.approx(1.0)
    assert 0.0 <= far < close < same
    assert pickle.loads(pickle.dumps(grader)).grade(REF, {"ref": REF}).reward == pytest.approx(1.0)


def test_fuzzy_match_is_rapidfuzz_ratio():
    assert similarity("fuzzy_match").grade("sitting", {"ref": "kitten"}).reward == pytest.approx(
        8 / 13
    )


def test_rouge_l_uses_longest_common_subsequence():
    grader = similarity("rouge_l")
    reward = grader.grade("the fox over the dog", {"ref": REF}).reward
    # LCS = 5 words; precision 5/5, recall 5/9 -> F1 = 2 * 1 * 5/9 / (1 + 5/9)
    assert reward == pytest.approx(2 * (5 / 9) / (1 + 5 / 9))


def test_pass_threshold_is_accepted():
    assert similarity("bleu", pass_threshold=0.5).pass_threshold == 0.5


def test_meteor_without_wordnet_says_what_is_missing():
    if wordnet_available():
        grader = similarity("meteor")
        assert grader.grade(REF, {"ref": REF}).reward > 0.9
        return
    with pytest.raises(GraderError) as info:
        similarity("meteor")
    assert "evaluation_metric: meteor needs NLTK's WordNet data" in str(info.value)
    assert "nltk.downloader wordnet" in WORDNET_HELP


def test_cosine_needs_a_local_embedding_model(tmp_path):
    with pytest.raises(GraderError, match="cosine needs a local embedding model"):
        similarity("cosine")
    with pytest.raises(GraderError, match="is not a local directory"):
        similarity("cosine", embedding_model=str(tmp_path / "absent"))


def test_cosine_with_a_local_model(tiny_model_dir):
    grader = similarity("cosine", embedding_model=tiny_model_dir)
    same = grader.grade("abc def", {"ref": "abc def"}).reward
    assert same == pytest.approx(1.0, abs=1e-5)
    other = grader.grade("zzzz!!", {"ref": "abc def"}).reward
    assert 0.0 <= other <= 1.0


def test_unknown_metric_is_named():
    with pytest.raises(
        GraderError, match='evaluation_metric: "jaccard" is not one of fuzzy_match, bleu'
    ):
        similarity("jaccard")


# --- math -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "output,reference,expected",
    [
        ("so the answer is \\boxed{\\frac{1}{2}}", "0.5", 1.0),
        ("\\boxed{0.5}", "$\\frac{1}{2}$", 1.0),
        ("the answer is $x^2+2x+1$", "(x+1)^2", 1.0),
        ("\\boxed{\\sqrt{8}}", "2\\sqrt{2}", 1.0),
        ("\\boxed{3}", "4", 0.0),
        ("\\boxed{x+1}", "x-1", 0.0),
    ],
)
def test_math_symbolic_equivalence(output, reference, expected):
    grader = build_grader({"type": "math", "reference": "{{ item.answer }}"})
    assert grader.grade(output, {"answer": reference}).reward == expected


def test_math_no_answer_scores_zero_and_gives_answer_for_votes():
    grader = build_grader({"type": "math", "reference": "4"})
    assert grader.grade("I cannot tell", {}).reward == 0.0
    assert grader.grade("\\boxed{4}", {}).answer == "4"


def test_math_grader_pickles():
    grader = build_grader({"type": "math", "reference": "{{ item.answer }}"})
    clone = pickle.loads(pickle.dumps(grader))
    assert clone.grade("\\boxed{2}", {"answer": "2"}).reward == 1.0
