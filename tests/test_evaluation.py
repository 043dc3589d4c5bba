"""Evaluation metrics: pass@k (Chen et al. 2021), maj@k, grading of given outputs, samples files."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rft_cli.errors import DataError
from rft_cli.evaluation import (
    evaluate,
    grade_outputs,
    load_samples_file,
    majority_answer,
    pass_at_k,
    write_results,
)
from tests.eval_fakes import FakeLengthGrader, FakeNumericGrader, rows_with_answers


@pytest.mark.parametrize(
    "n,c,k,expected",
    [
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (4, 1, 2, 1 - 3 / 6),  # 1 - C(3,2)/C(4,2)
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (10, 3, 1, 0.3),  # pass@1 is the pass rate
        (5, 0, 3, 0.0),
        (5, 5, 1, 1.0),
        (3, 2, 2, 1.0),  # fewer than k failures: some k-subset always passes
        (1, 1, 1, 1.0),
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


@given(
    st.integers(1, 60).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))
    )
)
def test_pass_at_k_matches_the_binomial_formula(nck):
    n, c, k = nck
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-9)


@pytest.mark.parametrize("n,c,k", [(3, 4, 1), (3, 1, 0), (3, 1, 4), (0, 0, 1)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


@pytest.mark.parametrize(
    "answers,expected",
    [
        (["4", "4", "5"], "4"),
        (["1", "2", "2", "1"], "1"),  # tie: the answer seen first
        ([None, "9", None], "9"),  # no answer does not vote
        ([None, None], None),
    ],
)
def test_majority_answer(answers, expected):
    assert majority_answer(answers) == expected


def test_constructed_outputs_give_hand_computed_metrics():
    rows = rows_with_answers([4, 7, 3, 9])
    outputs = [
        ["4", "4", "5"],  # majority 4: right; 2 of 3 pass
        ["7", "8", "8"],  # majority 8: wrong; 1 of 3 pass
        ["1", "2", "3"],  # a three-way tie goes to "1": wrong; 1 of 3 pass
        ["no idea", "hmm", "it is 9"],  # only "9" is an answer: right; 1 of 3 pass
    ]
    report = grade_outputs("m", rows, outputs, FakeNumericGrader())
    assert (report.rows, report.samples) == (4, 3)
    assert report.mean_reward == pytest.approx(5 / 12)
    assert report.pass_at[1] == pytest.approx(5 / 12)
    assert report.pass_at[3] == pytest.approx(1.0)
    assert report.maj_at_k == pytest.approx(0.5)
    assert report.errors == {"no_number": 2}
    assert report.sub_rewards == {"format": pytest.approx(10 / 12)}
    assert report.tokens_per_second is None


def test_pass_at_k_per_row_then_averaged():
    rows = rows_with_answers([1, 2])
    outputs = [["1", "0", "0", "0"], ["0", "0", "0", "0"]]
    report = grade_outputs("m", rows, outputs, FakeNumericGrader())
    assert set(report.pass_at) == {1, 4}
    assert report.pass_at[1] == pytest.approx((1 / 4 + 0) / 2)
    assert report.pass_at[4] == pytest.approx((1 + 0) / 2)


def test_threshold_decides_what_passes():
    rows = rows_with_answers([0, 0])
    outputs = [["12345"], ["1234567890"]]  # rewards 0.5 and 1.0
    assert grade_outputs("m", rows, outputs, FakeLengthGrader()).pass_at[1] == 0.5
    report = grade_outputs("m", rows, outputs, FakeLengthGrader(), threshold=0.5)
    assert report.pass_at[1] == 1.0
    assert report.mean_reward == pytest.approx(0.75)


def test_no_maj_at_k_without_extracted_answers():
    report = grade_outputs("m", rows_with_answers([1]), [["a", "b"]], FakeLengthGrader())
    assert report.maj_at_k is None


def test_uneven_sample_counts_are_rejected():
    with pytest.raises(DataError, match="same number of samples"):
        grade_outputs("m", rows_with_answers([1, 2]), [["1"], ["1", "2"]], FakeNumericGrader())


def test_report_to_dict_is_json():
    report = grade_outputs("m", rows_with_answers([1]), [["1", "2"]], FakeNumericGrader())
    data = json.loads(json.dumps(report.to_dict()))
    assert data["pass_at"] == {"1": 0.5, "2": 1.0}
    assert "results" not in data


def _write_lines(path, objs):
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


def test_samples_file_in_row_order(tmp_path):
    path = _write_lines(tmp_path / "s.jsonl", [{"output_text": "4"}, {"output_text": "8"}])
    assert load_samples_file(path, 2) == {"s.jsonl": [["4"], ["8"]]}


def test_samples_file_grouped_by_row_and_model(tmp_path):
    lines = [
        {"model": "a", "row": 1, "output_text": "x"},
        {"model": "a", "row": 0, "output_text": "y"},
        {"model": "b", "row": 0, "output_text": "z"},
        {"model": "b", "row": 1, "output_text": "w"},
        {"model": "a", "row": 1, "output_text": "v"},
        {"model": "a", "row": 0, "output_text": "u"},
    ]
    got = load_samples_file(_write_lines(tmp_path / "s.jsonl", lines), 2)
    assert got == {"a": [["y", "u"], ["x", "v"]], "b": [["z"], ["w"]]}


def test_samples_file_ignores_rows_past_the_limit(tmp_path):
    path = _write_lines(tmp_path / "s.jsonl", [{"output_text": str(i)} for i in range(5)])
    assert load_samples_file(path, 2) == {"s.jsonl": [["0"], ["1"]]}


@pytest.mark.parametrize(
    "lines,message",
    [
        ([{"output_text": "1"}], "no output for row 1"),
        ([{"row": 0, "output_text": "1"}, {"output_text": "2"}], 'some lines have a "row"'),
        ([{"row": -1, "output_text": "1"}], 'line 1: "row" must be a row index'),
        ([{"output_text": "1"}, {"text": "2"}], 'line 2: a sample must be {"output_text": "..."}'),
    ],
)
def test_bad_samples_files(tmp_path, lines, message):
    with pytest.raises(DataError, match=message):
        load_samples_file(_write_lines(tmp_path / "s.jsonl", lines), 2)


def test_samples_file_reads_the_old_bare_string_lines_with_a_note(tmp_path):
    """The old `rft grade --samples` form (a JSON string per line) is still read, with a note."""
    path = tmp_path / "s.jsonl"
    path.write_text('"4"\n{"output_text": "8"}\n')
    notes: list[str] = []
    assert load_samples_file(path, 2, notes) == {"s.jsonl": [["4"], ["8"]]}
    assert len(notes) == 1 and "line 1" in notes[0] and "old samples format" in notes[0]


def test_samples_file_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"output_text": "1"}\n{"output_text": \n')
    with pytest.raises(DataError, match="s.jsonl line 2: invalid JSON"):
        load_samples_file(path, 2)


def test_results_file_grades_again_as_a_samples_file(tmp_path):
    rows = rows_with_answers([4, 7])
    report = grade_outputs("model-a", rows, [["4", "5"], ["7", "7"]], FakeNumericGrader())
    write_results(tmp_path / "out.jsonl", [report], rows)
    first = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    assert first["prompt"] == [{"role": "user", "content": "question 0"}]
    assert (first["output_text"], first["reward"], first["passed"], first["answer"]) == (
        "4",
        1.0,
        True,
        "4",
    )
    again = load_samples_file(tmp_path / "out.jsonl", 2)
    assert again == {"model-a": [["4", "5"], ["7", "7"]]}


def test_evaluate_a_tiny_model_end_to_end(tiny_model_dir):
    rows = rows_with_answers([1, 2, 3])
    calls = []
    report = evaluate(
        tiny_model_dir,
        rows,
        FakeLengthGrader(),
        samples=2,
        temperature=1.0,
        max_new_tokens=8,
        batch_size=4,
        seed=0,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert (report.rows, report.samples, len(report.results)) == (3, 2, 6)
    assert calls[-1] == (6, 6)
    assert all(1 <= r.num_tokens <= 8 for r in report.results)
    assert report.generated_tokens == sum(r.num_tokens for r in report.results)
    assert report.tokens_per_second > 0
    # Rewards are computed from the text the model actually generated.
    assert report.mean_reward == pytest.approx(
        sum(min(1, len(r.output_text) / 10) for r in report.results) / 6
    )


def test_greedy_samples_count_generated_tokens_once(tiny_model_dir):
    """Greedy samples are copies of one generation; tokens/s must not count them K times."""
    rows = rows_with_answers([1, 2])
    report = evaluate(tiny_model_dir, rows, FakeLengthGrader(), samples=3, max_new_tokens=5)
    per_row = [report.results[i * 3].num_tokens for i in range(2)]
    assert report.generated_tokens == sum(per_row)
    assert len({r.output_text for r in report.results[:3]}) == 1


def test_evaluate_models_grades_a_samples_file_and_gates_on_the_first_model(tmp_path):
    """`rft eval` as one library call: rows, grader file and samples file in, reports and gate out."""
    from rft_cli.evaluation import evaluate_models

    data = _write_lines(tmp_path / "rows.jsonl", rows_with_answers([4, 7]))
    grader = tmp_path / "grader.yaml"
    grader.write_text('type: numeric\nname: answer\ninput: "{{ sample.output_text }}"\nreference: "{{ item.answer }}"\n')
    samples = _write_lines(tmp_path / "s.jsonl", [{"model": "a", "output_text": "4"}, {"model": "a", "output_text": "1"},
                                                  {"model": "b", "row": 0, "output_text": "4"}])
    with pytest.raises(DataError, match='some lines have a "row" field'):
        evaluate_models(data, grader, samples_file=samples)
    _write_lines(samples, [{"model": "a", "row": 0, "output_text": "4"}, {"model": "a", "row": 1, "output_text": "1"}])
    run = evaluate_models(data, grader, samples_file=samples, limit=2, min_score=0.6)
    assert [r.model for r in run.reports] == ["a"] and run.reports[0].mean_reward == 0.5
    assert run.gate == "failed" and run.temperature is None
    assert run.to_dict()["gate"] == "failed"


def test_evaluate_models_with_nothing_to_evaluate_is_a_config_error(tmp_path):
    from rft_cli.errors import ConfigError
    from rft_cli.evaluation import evaluate_models

    with pytest.raises(ConfigError, match="nothing to evaluate"):
        evaluate_models(tmp_path / "rows.jsonl", tmp_path / "grader.yaml")
