"""The near-duplicate search on data chosen to be hard for it (issue 24 item 14).

The bound must hold on any data, not on the data it was tuned on: the work per training row is
counted (pairs proposed and verified), exact rows must give the exact answer, and what the report
says about the rest (estimated, capped) must be true when compared with the exact search.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from rft_cli.data import overlap
from rft_cli.data.overlap import (
    CANDIDATE_BUDGET,
    CAPPED,
    ESTIMATED,
    EXACT,
    LSH_BUCKET_LIMIT,
    VERIFY_LIMIT,
    NearDuplicateIndex,
    lsh_parameters,
    lsh_recall,
)
from rft_cli.data.records import normalize_text

_BODY = [f"rule{k}" for k in range(60)]
_SENTENCE = [f"word{k}" for k in range(40)]


def _prompt(shape: str, rng: random.Random, tag: str) -> str:
    """One prompt of a shape that makes many prompts share most of their word 3-grams."""
    if shape == "three_words_and_a_tag":
        return " ".join(rng.choices(["red", "blue", "green"], k=rng.randint(10, 40))) + f" id{tag}"
    if shape == "two_words":  # every long prompt holds the same 8 shingles
        return " ".join(rng.choices(["yes", "no"], k=rng.randint(30, 80)))
    if shape == "shared_body":  # a unique question, then 60 words every prompt repeats
        return " ".join([f"q{rng.randrange(5000)}" for _ in range(rng.randint(5, 10))] + _BODY)
    if shape == "one_word_changed":  # the same place changed: Jaccard 35/41, other places less
        words = list(_SENTENCE)
        words[rng.randrange(len(words))] = str(rng.randrange(1000))
        return " ".join(words)
    if shape == "numbers":
        return " ".join(str(rng.randrange(50)) for _ in range(rng.randint(10, 30)))
    raise ValueError(shape)


SHAPES = ["three_words_and_a_tag", "two_words", "shared_body", "one_word_changed", "numbers"]


def _sets(shape: str, seed: int = 0, valid: int = 2000, train: int = 1500) -> tuple[list, list]:
    """(validation prompts, training prompts), normalised; every 50th training prompt is a
    validation prompt with one word appended (a planted near-duplicate)."""
    rng = random.Random(seed)
    valid_prompts = [_prompt(shape, rng, f"v{i}") for i in range(valid)]
    train_prompts = [_prompt(shape, rng, f"t{i}") for i in range(train)]
    for i in range(0, train, 50):
        train_prompts[i] = rng.choice(valid_prompts) + " and"
    return [normalize_text(p) for p in valid_prompts], [normalize_text(p) for p in train_prompts]


def _query(valid: list[str], train: list[str], budget: int | None, threshold: float = 0.9):
    index = NearDuplicateIndex(threshold, candidate_budget=budget)
    index.add_batch(valid)
    index.freeze()
    found = {i: (row, similarity) for i, row, similarity in index.query_batch(train)}
    return found, index


@pytest.mark.parametrize("shape", SHAPES)
def test_the_work_per_row_is_bounded_on_repetitive_shapes(shape):
    """Each training row verifies at most VERIFY_LIMIT pairs and is proposed a bounded number
    of candidates, whatever the data repeats. Before, an exact row verified every candidate its
    prefix gave (up to 64) and an estimated row up to 16, all at once; 1.1M such rows took 139 s,
    16 times a json.loads pass."""
    valid, train = _sets(shape)
    _, index = _query(valid, train, CANDIDATE_BUDGET)
    stats = index.search_stats()
    bands, _ = lsh_parameters(0.9)
    assert VERIFY_LIMIT == 8  # the bound docs/data.md states
    assert stats["pairs_verified"] <= VERIFY_LIMIT * len(train)
    proposals = CANDIDATE_BUDGET + overlap._SEEDS + bands * LSH_BUCKET_LIMIT
    assert stats["pairs_proposed"] <= proposals * len(train)


def test_a_row_whose_first_candidate_matches_verifies_one_pair():
    """On prompts that all hold the same shingles every candidate matches: a row stops at its
    first match instead of verifying all its candidates (before: 8 to 16 pairs a row)."""
    valid, train = _sets("two_words")
    found, index = _query(valid, train, CANDIDATE_BUDGET)
    stats = index.search_stats()
    assert len(found) >= 0.95 * len(train)
    assert stats["pairs_verified"] <= 1.05 * len(train)


def test_rows_sharing_a_long_body_are_searched_exactly():
    """A unique question before a long shared body: every prefix reaches the body's shingles,
    which every validation row holds, so all rows went to the estimate and most planted
    near-duplicates were missed (20 of 83 on the bench's shape). Positional filtering rules the
    body out from each posting list's own order: the search stays exact and complete."""
    valid, train = _sets("shared_body")
    exact, _ = _query(valid, train, None)
    found, index = _query(valid, train, CANDIDATE_BUDGET)
    assert index.search_stats()["rows_estimated"] == 0
    assert found == exact and len(found) >= len(train) // 50


@pytest.mark.parametrize("shape", SHAPES)
def test_the_report_says_truthfully_how_each_row_was_searched(shape):
    """Compared with the exact search (no budget): an exact row gets the exact answer (the
    lowest validation row at or above t); nothing reported is false; a row that misses a
    near-duplicate was estimated or capped, never called exact; a capped row found nothing, and
    `rows_capped` counts exactly those rows (before, it also counted rows that had found a
    near-duplicate)."""
    valid, train = _sets(shape, seed=1)
    truth, _ = _query(valid, train, None)
    found, index = _query(valid, train, CANDIDATE_BUDGET)
    stats = index.search_stats()
    assert stats["rows_capped"] <= len(train) - len(found)
    modes = index.last_modes
    assert all(truth[i] == found[i] for i in range(len(train)) if modes[i] == EXACT and i in truth)
    assert all(i in truth for i in found if modes[i] == EXACT) and set(found) <= set(truth)
    assert all(similarity >= 0.9 - 1e-9 for _, similarity in found.values())
    assert all(modes[i] != EXACT for i in set(truth) - set(found))
    assert not any(modes[i] == CAPPED for i in found)
    assert stats["rows_capped"] == int((modes == CAPPED).sum())
    assert stats["rows_estimated"] == int((modes != EXACT).sum())
    # The stated recall covers the estimated rows that were not capped.
    covered = [i for i in truth if modes[i] == ESTIMATED]
    missed = sum(i not in found for i in covered)
    assert missed <= (1 - stats["estimate_recall_at_threshold"]) * len(covered) + 2


def test_a_planted_near_duplicate_sharing_an_id_is_found_among_thousands_alike():
    """Three words and a unique tag: every prompt shares most 3-grams, so every LSH bucket holds
    thousands of rows and a bounded search cuts them; the planted near-duplicate (the same tag)
    must not be cut (a version that kept 2 rows of a crowded bucket and nothing else found 5 of
    10 on the bench's shape). An estimated row tries the candidates of its rare shingles first."""
    valid, train = _sets("three_words_and_a_tag", seed=2, valid=10_000, train=1000)
    found, _ = _query(valid, train, CANDIDATE_BUDGET)
    planted = {i for i in range(0, len(train), 50) if _jaccard(train[i], train[i][:-4]) >= 0.9}
    assert len(planted) >= 15 and planted <= set(found)


def _jaccard(a: str, b: str) -> float:
    def shingles(text: str) -> set[str]:
        words = text.split()
        return {" ".join(words[i : i + 3]) for i in range(max(len(words) - 2, 1))}

    return len(shingles(a) & shingles(b)) / len(shingles(a) | shingles(b))


@pytest.mark.parametrize(
    ("words_a", "words_b", "threshold"),
    [(3, 4, 0.5), (4, 6, 0.5), (5, 5, 0.5), (5, 6, 0.75), (12, 13, 0.9)],
)
def test_small_prompts_keep_the_stated_recall(monkeypatch, words_a, words_b, threshold):
    """Pairs of 1 to 11 shingles at their own Jaccard, found by MinHash-LSH alone (no prefix
    candidates): the share found must match the recall derived from the bands. One permutation's
    bins borrow from the same few values on small prompts and fail together (96.9% found for
    one shingle against two at t = 0.5, 99.99% derived); small prompts use independent MinHashes."""
    monkeypatch.setattr(overlap, "_SEEDS", 0)
    rng = random.Random(words_a * 100 + words_b)
    pairs = 4000
    valid, train = [], []
    for i in range(pairs):
        words = [f"w{rng.randrange(10**6)}x{i}" for _ in range(max(words_a, words_b) + 1)]
        if words_b > words_a:  # A inside B
            train.append(" ".join(words[:words_a]))
            valid.append(" ".join(words[:words_b]))
        else:  # the same length, the last word different
            train.append(" ".join(words[:words_a]))
            valid.append(" ".join(words[: words_a - 1] + [words[-1]]))
    shingles_a, shingles_b = max(words_a - 2, 1), max(words_b - 2, 1)
    shared = shingles_a if words_b > words_a else shingles_a - 1
    jaccard = shared / (shingles_a + shingles_b - shared)
    assert jaccard >= threshold - 1e-9
    found, index = _query(valid, train, 0, threshold)
    bands, rows = lsh_parameters(threshold)
    expected_misses = pairs * (1 - lsh_recall(jaccard, bands, rows))
    misses = pairs - sum(found.get(i, (None,))[0] == i for i in range(pairs))
    assert misses <= expected_misses + 4 * expected_misses**0.5 + 3, (misses, expected_misses)
    assert index.search_stats()["rows_capped"] == 0


def test_one_permutation_minhash_matches_a_slow_reference():
    rng = np.random.default_rng(1)
    rows = [np.sort(rng.choice(1 << 48, n, replace=False)) for n in (1, 2, 3, 5, 40, 64, 300)]
    offsets = np.concatenate(([0], np.cumsum([len(r) for r in rows])))
    flat = np.concatenate(rows).astype(np.int64)
    picked = np.array([0, 2, 3, 5, 6])
    signature = overlap._one_permutation_minhash(offsets, flat, picked)
    for got, row in zip(signature, [rows[i] for i in picked], strict=True):
        bins: dict[int, int] = {}
        for h in row.tolist():
            bins[h >> 42] = min(bins.get(h >> 42, 1 << 62), h & ((1 << 42) - 1))
        # an empty bin takes the next full bin to its right (wrapping), plus distance << 42
        want = [
            next(bins[(j + d) % 64] + (d << 42) for d in range(64) if (j + d) % 64 in bins)
            for j in range(64)
        ]
        assert got.tolist() == want


def test_the_shingle_table_finds_every_known_shingle_through_long_collision_chains():
    """Hashes that agree in the table's slot bits all land on one slot: each is still found
    (linear probing), and a hash that is not there is not."""
    index = NearDuplicateIndex(0.9)
    crowded = [(7 << 30) | i for i in range(300)]  # the same bits 16 and up
    index.add_batch([f"p{i}" for i in range(5)])
    index.freeze()
    index._uniq = np.array(sorted(crowded + [12345, 1 << 47]), dtype=np.int64)
    index._build_table()
    queries = np.array(crowded + [1 << 47, (7 << 30) | 999, 5, (1 << 47) + 1], dtype=np.int64)
    known, uid = index._known(queries)
    assert known.tolist() == list(range(301))
    assert (index._uniq[uid] == queries[known]).all()


@pytest.mark.parametrize("strict", [False, True])
def test_near_duplicates_past_the_limit_are_counted_and_the_kept_ones_have_messages(
    tmp_path, strict
):
    """A million near-duplicates build a message only for the ones the report keeps."""
    import json

    from rft_cli.data.validation import validate_dataset

    valid = [f"the same long question about apples number {i} today" for i in range(30)]
    rows = [{"messages": [{"role": "user", "content": v + " please"}]} for v in valid]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "valid.jsonl").write_text(
        "".join(json.dumps({"messages": [{"role": "user", "content": v}]}) + "\n" for v in valid)
    )
    report = validate_dataset(
        tmp_path / "train.jsonl",
        tmp_path / "valid.jsonl",
        near_duplicate_threshold=0.8,
        max_errors=3,
        strict=strict,
    ).to_dict()
    counts, kept = (
        (report["error_counts"], report["errors"])
        if strict
        else (report["warning_counts"], report["warnings"])
    )
    assert counts["near_duplicate"] == 30
    messages = [issue["message"] for issue in kept if issue["code"] == "near_duplicate"]
    assert len(messages) == 3 and all("near-duplicate of" in m for m in messages)


def test_an_index_built_in_small_slices_answers_the_same(monkeypatch):
    """The validation shingles are indexed a slice of rows at a time (a 1.1M-row set with a
    150-word preamble peaked at 1.3 GiB indexed whole): slices change nothing."""
    valid, train = _sets("shared_body", seed=3, valid=600, train=300)
    whole, index = _query(valid, train, CANDIDATE_BUDGET)
    monkeypatch.setattr(overlap, "_SLICE", 97)  # rows straddle the slices' ends
    sliced, other = _query(valid, train, CANDIDATE_BUDGET)
    assert sliced == whole and other.search_stats() == index.search_stats()
    assert (other._sketch == index._sketch).all() and (other._post_keys == index._post_keys).all()


# -- the faster shingling and row sorts answer exactly as the plain versions did ------------------


def _plain_shingle_batch(keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Shingles by their definition, one Python loop a shingle: the polynomial hash of the UTF-8
    bytes (each + 1, times BASE^i, mod 2**64), mixed, cut to 48 bits; each row's distinct, sorted."""
    mask = (1 << 64) - 1

    def mixed(h: int) -> int:
        for multiplier in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
            h = ((h ^ (h >> 33)) * multiplier) & mask
        return h ^ (h >> 33)

    offsets, flat = [0], []
    for key in keys:
        words = key.encode("utf-8", "surrogatepass").split(b" ")
        spans = [words[i : i + 3] for i in range(max(len(words) - 2, 1))]
        row = set()
        for span in spans:
            h = sum((b + 1) * pow(overlap._BASE, i, 1 << 64) for i, b in enumerate(b" ".join(span)))
            row.add(mixed(h & mask) & overlap._MASK48)
        flat += sorted(row)
        offsets.append(len(flat))
    return np.array(offsets), np.array(flat, dtype=np.int64)


def _plain_first_per_row(row_of, rank, keep):
    """The stable argsort `_first_per_row` used before rows were sorted apart."""
    order = np.argsort((row_of << 32) | rank, kind="stable")
    rows = row_of[order]
    place = overlap._places(rows)
    chosen = place < keep[rows]
    return order[chosen], place[chosen]


def _hostile_keys(rng: random.Random, count: int) -> list[str]:
    """Empty and one-word keys, repeated words, Unicode, a lone surrogate, control characters."""
    words = ["a", "bb", "é", "数学", "\udc80", "\x00", "x\x7fy", "yes", "no", "😀"]
    keys = []
    for _ in range(count):
        size = rng.choice([0, 1, 2, 3, 4, rng.randint(5, 40), rng.randint(100, 300)])
        keys.append(" ".join(rng.choices(words[: rng.randint(1, len(words))], k=size)))
    return keys


@pytest.mark.parametrize("seed", range(4))
def test_shingles_are_those_of_their_definition(seed):
    """`shingle_batch` computes the byte hash from prefix sums and sorts each row apart from the
    others (a padded 2-D sort): the sets are those of the definition, on hostile keys too."""
    rng = random.Random(seed)
    keys = _hostile_keys(rng, 300)
    offsets, flat = overlap.shingle_batch(keys)
    want_offsets, want_flat = _plain_shingle_batch(keys)
    assert offsets.tolist() == want_offsets.tolist()
    assert flat.dtype == np.int64 and flat.tolist() == want_flat.tolist()


def test_rows_are_sorted_apart_at_every_width():
    rng = np.random.default_rng(5)
    counts = np.array([1, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 300, 1, 64, 65, 1000])
    values = rng.integers(-(1 << 62), 1 << 62, int(counts.sum()))
    values[:40] = 7  # ties
    got = overlap._sort_rows(values, counts)
    at = np.concatenate(([0], np.cumsum(counts)))
    want = np.concatenate([np.sort(values[a:b]) for a, b in zip(at[:-1], at[1:], strict=True)])
    assert got.tolist() == want.tolist()


def test_first_entries_per_row_are_those_of_a_stable_sort():
    rng = np.random.default_rng(6)
    sizes = rng.integers(1, 200, 300)
    row_of = np.repeat(np.arange(300) * 3, sizes)  # rows with gaps between them
    rank = np.concatenate([rng.permutation(10_000)[:n] for n in sizes]).astype(np.int64)
    keep = rng.integers(0, 40, 900)
    got, want = overlap._first_per_row(row_of, rank, keep), _plain_first_per_row(row_of, rank, keep)
    assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()


@pytest.mark.parametrize("shape", [*SHAPES, "hostile"])
def test_the_search_finds_the_same_pairs_as_with_the_plain_shingling(monkeypatch, shape):
    """The whole search, with the shingling and the per-row sorts swapped for the plain versions:
    the same pairs, the same modes (exact, estimated, capped) and the same counts, on every
    repetitive shape and on hostile keys."""
    if shape == "hostile":
        rng = random.Random(9)
        valid, train = _hostile_keys(rng, 1500), _hostile_keys(rng, 1200)
        train[::40] = [v + " and" for v in valid[: len(train[::40])]]
    else:
        valid, train = _sets(shape, seed=4, valid=1200, train=900)
    runs = []
    for plain in (False, True):
        if plain:
            monkeypatch.setattr(overlap, "shingle_batch", _plain_shingle_batch)
            monkeypatch.setattr(overlap, "_first_per_row", _plain_first_per_row)
        found, index = _query(valid, train, CANDIDATE_BUDGET, threshold=0.7)
        runs.append((found, index.last_modes.tolist(), index.search_stats()))
    assert runs[0] == runs[1]
