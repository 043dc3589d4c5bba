"""The streaming validator and the near-duplicate index, as a library (no CLI)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rft_cli.data import overlap, scanning
from rft_cli.data.checks import fast_shape, slow_shape
from rft_cli.data.overlap import (
    CANDIDATE_BUDGET,
    LSH_TARGET_RECALL,
    NearDuplicateIndex,
    lsh_parameters,
    lsh_recall,
    prefix_length,
)
from rft_cli.data.records import check_row
from rft_cli.data.validation import validate_dataset
from rft_cli.errors import ConfigError, DataError

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "example"


def _row(prompt: str, **fields) -> dict:
    return {"messages": [{"role": "user", "content": prompt}], **fields}


def _write(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def test_example_data_is_valid_and_clean():
    report = validate_dataset(
        EXAMPLE / "train.jsonl",
        EXAMPLE / "valid.jsonl",
        overlap_fields=["reference_answer"],
        require_demonstrations=True,
    )
    assert report.ok, report.errors
    assert report.warnings == []
    assert report.stats["train"]["rows"] == 40 and report.stats["valid"]["rows"] == 10
    assert report.stats["train"]["demonstrations"] == 40
    assert report.stats["train"]["reference_fields"] == {"reference_answer": 40}


def test_stats_spreads_are_exact(tmp_path):
    rows = [_row("a" * n) for n in (3, 1, 10, 4)] + [
        {
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "ans"},
            ]
        }
    ]
    report = validate_dataset(_write(tmp_path / "t.jsonl", rows))
    stats = report.stats["train"]
    assert stats["messages_per_row"] == {"min": 1, "median": 1, "max": 3}
    # prompt characters: 3, 1, 10, 4 and 3 + 1 (system + user; the final assistant turn is the demonstration)
    assert stats["prompt_chars"] == {"min": 1, "median": 4, "max": 10}
    assert stats["demonstrations"] == 1


def test_even_count_median_is_the_mean_of_the_middle_pair(tmp_path):
    report = validate_dataset(_write(tmp_path / "t.jsonl", [_row("ab"), _row("abcde")]))
    assert report.stats["train"]["prompt_chars"]["median"] == 3.5


def test_max_errors_keeps_the_first_n_of_each_code_and_counts_all(tmp_path):
    path = _write(tmp_path / "t.jsonl", ["[1]"] * 30 + ["{"] * 5)
    report = validate_dataset(path, max_errors=3)
    assert report.error_counts == {"row_not_object": 30, "json_syntax": 5}
    assert [i.line for i in report.errors if i.code == "row_not_object"] == [1, 2, 3]
    assert len(report.errors) == 6


def test_raise_for_errors_names_the_first_error_and_the_rest(tmp_path):
    report = validate_dataset(_write(tmp_path / "t.jsonl", ["[1]", "[2]"]))
    with pytest.raises(
        DataError, match=r"t\.jsonl line 1: the row is a JSON list, not an object .*\(1 more error"
    ):
        report.raise_for_errors()
    validate_dataset(EXAMPLE / "train.jsonl").raise_for_errors()  # valid: no exception


def test_overlap_is_found_after_nfkc_casefold_and_whitespace(tmp_path):
    train = _write(
        tmp_path / "train.jsonl",
        [_row("unrelated prompt"), _row("What is  ２+２?\tAnswer BRIEFLY.")],
    )
    valid = _write(tmp_path / "valid.jsonl", [_row("what is 2+2? answer briefly.")])
    report = validate_dataset(train, valid)
    assert report.error_counts == {"overlap_prompt": 1}
    assert report.overlap == [
        {"kind": "exact", "train_line": 2, "valid_line": 1, "similarity": 1.0, "field": None}
    ]


def test_near_duplicates_are_warnings_and_errors_when_strict(tmp_path):
    words = " ".join(f"word{i}" for i in range(30))
    train = _write(tmp_path / "train.jsonl", [_row(words + " extra")])
    valid = _write(tmp_path / "valid.jsonl", [_row(words)])
    report = validate_dataset(train, valid)
    assert report.ok and report.warning_counts == {"near_duplicate": 1}
    (pair,) = report.overlap
    # "user: word0 ... word29" has 29 word 3-grams; one more word adds one: Jaccard 29/30.
    assert pair["kind"] == "near_duplicate" and pair["similarity"] == round(29 / 30, 4)
    assert not validate_dataset(train, valid, strict=True).ok
    assert validate_dataset(train, valid, near_duplicate_threshold=0.99).overlap == []


def test_overlap_fields_compare_normalised_values(tmp_path):
    train = _write(tmp_path / "train.jsonl", [_row("q1", answer=42), _row("q2", answer="7")])
    valid = _write(tmp_path / "valid.jsonl", [_row("q3", answer=" 42 "), _row("q4", answer="8")])
    report = validate_dataset(train, valid, overlap_fields=["answer"])
    assert report.error_counts == {"overlap_field": 1}
    assert report.overlap[0] == {
        "kind": "field",
        "train_line": 1,
        "valid_line": 1,
        "similarity": None,
        "field": "answer",
    }


def test_required_item_fields_and_demonstrations(tmp_path):
    train = _write(tmp_path / "train.jsonl", [_row("q", answer="1", solution="s"), _row("q2")])
    report = validate_dataset(train, required_item_fields={"answer"}, require_demonstrations=True)
    assert [(i.line, i.code) for i in report.errors] == [(2, "missing_item_field")]
    report = validate_dataset(train, require_demonstrations=True)
    assert [(i.line, i.code) for i in report.errors] == [(2, "missing_demonstration")]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"near_duplicate_threshold": 0.2}, "--near-duplicate-threshold 0.2"),
        ({"max_errors": 0}, "--max-errors 0"),
        ({"max_tokens": 5}, "--max-tokens needs --tokenizer"),
        ({"overlap_fields": ["a"]}, "--overlap-fields needs --valid"),
    ],
)
def test_bad_arguments_are_usage_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        validate_dataset(EXAMPLE / "train.jsonl", **kwargs)


def test_tokenizer_adds_token_stats_and_over_long_warnings(tiny_model_dir, tmp_path):
    train = _write(tmp_path / "t.jsonl", [_row("ab"), _row("abcdefghij")])
    report = validate_dataset(train, tokenizer=tiny_model_dir, max_tokens=6)
    tokens = report.stats["train"]["prompt_tokens"]
    # The char tokenizer: "<|user|>" + one token per char + "<|end|>" + "<|assistant|>".
    assert (tokens["min"], tokens["max"], tokens["rows_over_max"]) == (5, 13, 1)
    assert [(i.line, i.code) for i in report.warnings] == [(2, "too_many_tokens")]


def test_lone_surrogates_in_field_names_still_give_a_utf8_report(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"messages": [{"role": "user", "content": "q \\ud800"}], "\\udcff": 1}\n', encoding="utf-8"
    )
    report = validate_dataset(path)
    assert report.ok
    json.dumps(report.to_dict(), ensure_ascii=False).encode("utf-8")


def _shingles(text: str) -> set:
    words = text.split(" ")
    return {tuple(words)} if len(words) < 3 else set(zip(words, words[1:], words[2:], strict=False))


@pytest.mark.parametrize("seed", range(8))
def test_near_duplicate_index_matches_brute_force(seed):
    """Prefix filtering is exact: the same pairs as comparing every pair, on a tiny vocabulary."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(25)]
    valid = [" ".join(rng.choices(vocab, k=rng.randint(1, 12))) for _ in range(50)]
    train = [" ".join(rng.choices(vocab, k=rng.randint(1, 12))) for _ in range(50)]
    train += [v + " " + rng.choice(vocab) for v in valid[:15]] + valid[15:20]
    threshold = [0.5, 0.6, 0.75, 0.8, 0.9, 0.95, 1.0, 0.7][seed]
    index = NearDuplicateIndex(threshold)
    index.add_batch(valid[:20])
    index.add_batch(valid[20:])
    index.freeze()

    def jaccard(a: str, b: str) -> float:
        return len(_shingles(a) & _shingles(b)) / len(_shingles(a) | _shingles(b))

    got = {i: (row, similarity) for i, row, similarity in index.query_batch(train)}
    # Each training prompt with a near-duplicate gets one: the first validation row at or above t.
    expected = {
        i: min(r for r, b in enumerate(valid) if jaccard(a, b) >= threshold - 1e-9)
        for i, a in enumerate(train)
        if any(jaccard(a, b) >= threshold - 1e-9 for b in valid)
    }
    assert {i: row for i, (row, _) in got.items()} == expected
    assert all(
        abs(similarity - jaccard(train[i], valid[row])) < 1e-12
        for i, (row, similarity) in got.items()
    )
    assert (
        index.search_stats()["rows_estimated"] == 0
    )  # small data stays under the candidate budget: exact


def test_prefix_length_is_robust_to_float_rounding():
    # 0.9 * 10 is 9.000000000000002 in floating point; ceil() would give 10 and miss matches.
    assert prefix_length(10, 0.9) == 2
    assert prefix_length(1, 0.9) == 1


_text = st.one_of(st.just(""), st.just("  "), st.text(max_size=5))
_content = st.one_of(
    _text,
    st.integers(),
    st.none(),
    st.lists(
        st.one_of(
            st.fixed_dictionaries({"type": st.sampled_from(["text", "image"]), "text": _text}),
            _text,
        ),
        max_size=2,
    ),
)
_message = st.one_of(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "developer", "user", "assistant", "bot", 3]),
            "content": _content,
        }
    ),
    st.dictionaries(st.sampled_from(["role", "content"]), _content),
    _text,
)
_rows = st.one_of(
    st.none(),
    st.integers(),
    st.lists(_message, max_size=1),
    st.fixed_dictionaries(
        {"messages": st.one_of(st.lists(_message, max_size=4), _text, st.none())},
        optional={"solution": _content, "answer": _content},
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_rows)
def test_fast_path_agrees_with_the_contract(row):
    """The fast path never accepts a row that check_row rejects, and computes the same shape."""
    shape = fast_shape(row, "solution")
    if shape is not None:
        assert check_row(row, "solution") == []
        assert shape == slow_shape(row, "solution")


def test_two_processes_give_the_same_report_as_one(tmp_path, monkeypatch):
    """The training file split in two halves (the second in a forked child) changes nothing."""
    rng = random.Random(3)
    prompts = [" ".join(rng.choices([f"w{i}" for i in range(40)], k=12)) for _ in range(300)]
    lines = [json.dumps(_row(p, answer=str(i % 50))) for i, p in enumerate(prompts)]
    lines[10], lines[250], lines[260] = "[1]", "{bad", ""
    lines[200] = lines[5]  # a duplicate across the two halves
    lines[280] = lines[220]  # a duplicate inside the second half
    train = _write(tmp_path / "train.jsonl", lines)
    valid = _write(
        tmp_path / "valid.jsonl",
        [_row(prompts[7]), _row(prompts[290] + " w1", answer="49")]
        + [_row(f"v{i} " + prompts[i]) for i in range(100, 130)],
    )
    monkeypatch.setattr(scanning, "PARALLEL_MIN_BYTES", 0)
    kwargs = {"overlap_fields": ["answer"], "max_errors": 4, "near_duplicate_threshold": 0.6}
    serial = validate_dataset(train, valid, workers=1, **kwargs).to_dict()
    parallel = validate_dataset(train, valid, workers=2, **kwargs).to_dict()
    assert parallel == serial
    assert serial["warning_counts"]["duplicate_prompt"] == 2
    assert (
        serial["error_counts"]["overlap_prompt"] == 1
        and serial["stats"]["overlap"]["near_duplicate"] >= 1
    )


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(max_codepoint=127))
    | st.text(max_size=20)
    | st.text(alphabet=" \t\n\x0b\x1c\x85\xa0\u2028\u3000\ufdfaaBé", max_size=12)
)
def test_normalize_text_ascii_shortcut_equals_nfkc_casefold(text):
    """Also the already-collapsed shortcut: a printable string with no double, leading or
    trailing space is returned as it is, which must be what split and join would give."""
    import unicodedata

    from rft_cli.data.records import normalize_text

    assert normalize_text(text) == " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet="aZ09_ -\x00\x7fßİ٣", max_size=8)
    | st.text(alphabet=st.characters(max_codepoint=127))
    | st.integers()
)
def test_value_key_shortcut_equals_normalize_text(value):
    """value_key returns lower() for ASCII letters and digits without normalising: that must be
    what normalize_text gives (also for digits and letters outside ASCII, which take the long way)."""
    from rft_cli.data.checks import value_key
    from rft_cli.data.records import normalize_text

    expected = normalize_text(value if isinstance(value, str) else json.dumps(value))
    assert value_key(value) == expected


def test_field_names_are_counted_over_rows_of_different_field_sets(tmp_path, monkeypatch):
    """Field names are counted per set of names a row has (then per name): rows with other,
    fewer or reordered fields count as they would one name at a time, in both processes."""
    rows = [_row(f"prompt number {i}", answer=str(i)) for i in range(60)]
    for i in range(1, 60, 7):
        rows[i] = {"answer": rows[i]["answer"], "messages": rows[i]["messages"]}
    for i in range(0, 60, 3):
        rows[i]["extra"] = i
    train = _write(tmp_path / "train.jsonl", [json.dumps(row) for row in rows])
    monkeypatch.setattr(scanning, "PARALLEL_MIN_BYTES", 0)
    for workers in (1, 2):
        stats = validate_dataset(train, workers=workers).stats["train"]
        assert stats["reference_fields"] == {"answer": 60, "extra": 20}


def test_a_missing_or_special_file_is_a_usage_error(tmp_path):
    with pytest.raises(
        ConfigError, match=r"nope\.jsonl: no such file \(give the path of a JSONL file\)"
    ):
        validate_dataset(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match="is not a regular file"):
        validate_dataset(EXAMPLE / "train.jsonl", tmp_path)


_TEMPLATE_WORDS = (
    "how many apples does the farmer have after selling some of them each day to market".split()
)


def _templated(rng: random.Random, tag: str) -> str:
    """A prompt of the templated shape (16-word vocabulary, a small number, a unique tag), as `bench/validate.py` writes it."""
    return (
        " ".join(rng.choices(_TEMPLATE_WORDS, k=rng.randint(8, 30)))
        + f" {rng.randint(0, 99)} ({tag})"
    )


def _templated_sets(seed: int) -> tuple[list[str], list[str], set[int]]:
    """(valid, train, positions of the planted near-duplicates in train): each planted one is a valid
    prompt of 12+ words with one word appended (3-gram Jaccard >= 12/13 > 0.9)."""
    rng = random.Random(seed)
    valid = [_templated(rng, f"v{i}") for i in range(3000)]
    train = [_templated(rng, f"t{i}") for i in range(2000)]
    long_valid = [v for v in valid if v.count(" ") >= 12]
    planted = set(range(0, 2000, 50))
    for i in planted:
        train[i] = rng.choice(long_valid) + " " + rng.choice(_TEMPLATE_WORDS)
    return valid, train, planted


def _search(
    valid: list[str], train: list[str], budget: int | None
) -> tuple[dict[int, tuple[int, float]], dict]:
    index = NearDuplicateIndex(0.9, candidate_budget=budget)
    index.add_batch(valid)
    index.freeze()
    found = {i: (row, similarity) for i, row, similarity in index.query_batch(train)}
    return found, index.search_stats()


@pytest.mark.parametrize("seed", [0, 1])
def test_templated_data_switches_to_minhash_lsh_and_still_finds_planted_near_duplicates(seed):
    """Issue 14: on templated prompts every row shares common 3-grams, so the prefix filter's
    candidates explode; past the budget a row is searched with MinHash-LSH, which must still find
    the planted near-duplicates and never report a pair below the threshold."""
    valid, train, planted = _templated_sets(seed)
    exact, exact_stats = _search(valid, train, None)
    estimated, stats = _search(valid, train, 0)  # small data: every row with a candidate estimated
    assert exact_stats["rows_estimated"] == 0 and exact_stats["rows_exact"] == len(train)
    assert stats["rows_estimated"] > len(train) // 10  # the switch really happens on this shape
    assert stats["rows_exact"] + stats["rows_estimated"] == stats["rows_searched"] == len(train)
    assert planted <= set(exact) and planted <= set(estimated)
    assert set(estimated) <= set(
        exact
    )  # every reported pair is verified exactly: no false positive
    assert all(similarity >= 0.9 - 1e-9 for _, similarity in estimated.values())
    assert len(estimated) / len(exact) >= 0.95  # measured recall against the exact search
    assert stats["estimate_recall_at_threshold"] >= 0.99


def test_rows_under_the_budget_give_the_exact_result_on_templated_data():
    """A budget only moves rows past it to the estimate: rows under it keep the exact answer."""
    valid, train, _ = _templated_sets(2)
    exact, _ = _search(valid, train, None)
    estimated, stats = _search(valid, train, 3)
    assert 0 < stats["rows_estimated"] < len(train)
    assert all(exact[i] == match for i, match in estimated.items() if i in exact)


def test_random_data_stays_exact_and_unchanged_with_the_default_budget():
    rng = random.Random(5)
    vocab = [f"w{i}" for i in range(2000)]
    valid = [" ".join(rng.choices(vocab, k=rng.randint(12, 30))) for _ in range(3000)]
    train = [" ".join(rng.choices(vocab, k=rng.randint(10, 30))) for _ in range(2000)] + [
        v + " w1" for v in valid[:30]
    ]
    default, stats = _search(valid, train, CANDIDATE_BUDGET)
    unbounded, _ = _search(valid, train, None)
    assert stats["rows_estimated"] == 0 and stats["rows_exact"] == len(train)
    assert default == unbounded and len(default) >= 30


@pytest.mark.parametrize(("threshold", "bands", "rows"), [(0.9, 9, 7), (0.5, 32, 2)])
def test_lsh_parameters_keep_the_stated_recall(threshold, bands, rows):
    assert lsh_parameters(threshold) == (bands, rows)
    assert lsh_recall(threshold, bands, rows) >= LSH_TARGET_RECALL
    # one more row per band (fewer false candidates) would miss the target recall
    assert lsh_recall(threshold, 64 // (rows + 1), rows + 1) < LSH_TARGET_RECALL


def test_validate_reports_the_estimate_in_stats_and_is_deterministic(tmp_path, monkeypatch):
    """`rft validate` gives the same report twice and across worker counts, estimate included."""
    valid_prompts, train_prompts, planted = _templated_sets(3)
    train = _write(tmp_path / "train.jsonl", [_row(p) for p in train_prompts])
    valid = _write(tmp_path / "valid.jsonl", [_row(p) for p in valid_prompts])
    monkeypatch.setattr(overlap, "CANDIDATE_BUDGET", 2)
    monkeypatch.setattr(scanning, "PARALLEL_MIN_BYTES", 0)
    first = validate_dataset(train, valid, workers=1).to_dict()
    assert validate_dataset(train, valid, workers=1).to_dict() == first
    assert validate_dataset(train, valid, workers=2).to_dict() == first
    search = first["stats"]["overlap"]["near_duplicate_search"]
    assert (
        search["rows_estimated"] > 0
        and search["rows_exact"] + search["rows_estimated"] == search["rows_searched"]
    )
    assert search["candidate_budget"] == 2 and search["estimate"] == "minhash_lsh"
    assert (search["lsh_bands"], search["lsh_rows_per_band"]) == (9, 7)
    assert first["warning_counts"]["near_duplicate"] >= len(planted)
