"""Near-duplicate search between a validation set and a training set: exact, streaming, vectorised.

A prompt (already normalised: NFKC, case folded, single spaces) becomes the set of hashes of its
word 3-grams ("shingles"; a prompt of fewer than three words is one shingle). Hashes are 48-bit,
computed in numpy for a whole batch at once from a polynomial prefix hash over the UTF-8 bytes.

The validation rows are indexed once; training rows are then queried in batches. Candidate pairs
come from *prefix filtering* (Bayardo, Ma and Srikant, "Scaling up all pairs similarity search",
WWW 2007), the exact cousin of a bottom-k MinHash sketch: order every shingle by (frequency in the
validation set, hash) and keep the first `|A| - ceil(t * |A|) + 1` shingles of each set. Two sets
with Jaccard >= t always share one of their prefix shingles, so no pair is missed, and the
rare-first order keeps candidate lists short even on templated data. A shingle absent from the
validation set sorts first, so a training row is only looked at when at least `ceil(t * |A|)` of its
shingles occur in the validation set (a bitmap answers that for most shingles). Each candidate is
verified with the exact Jaccard similarity of the two shingle sets: no estimate, no false positive
(up to 48-bit hash collisions) and no false negative. Verification is vectorised over a batch's
pairs, after two exact filters: the sizes, and a sketch (each row's shingle counts in 64 hash
buckets: summing the smaller count of each bucket bounds |A & B| from above), which rules out most
candidates in 64 byte operations whatever the prompts' lengths.

On templated data (every prompt drawn from a few words) the prefix shingles are common and their
candidate lists long. A training row whose prefix points to more than `CANDIDATE_BUDGET` posting
entries is searched with MinHash-LSH instead (seeded hashes, banded for a recall of at least
`LSH_TARGET_RECALL` at the threshold); its candidates are still verified exactly, so it can miss a
near-duplicate but never report a false one. `search_stats()` counts exact and estimated rows.
The work per estimated row is bounded: at most `LSH_BUCKET_LIMIT` validation rows from one band's
bucket (the lowest ids) and at most `VERIFY_LIMIT` verified candidates (the largest sketch bounds).
A row cut at either limit is counted in `rows_capped`: the stated recall does not cover it (on
data where most prompts share most 3-grams, buckets hold thousands of rows; the old unbounded
search took 139 s, 16 times a `json.loads` pass, on such 1.1M rows).

Memory: the validation shingles live in int64 arrays (about 8 bytes a shingle, plus a bitmap of
4 bytes a shingle); training rows are never stored. numpy is imported lazily (`rft --help` stays fast).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

SHINGLE_WORDS = 3
MAX_BATCH = 1 << 15
_EPS = 1e-9  # t * |A| in floating point: 0.56 * 25 is 14.000000000000002, whose ceil would be 15
_BASE = 0x100000001B3  # odd, so invertible modulo 2**64
_MASK48 = (1 << 48) - 1
_POWERS: dict[str, Any] = {}
# Past this many prefix-filter candidates (posting entries) a training row is estimated with MinHash-LSH.
CANDIDATE_BUDGET = 64
LSH_HASHES = 64
LSH_TARGET_RECALL = 0.995
LSH_SEED = 14
LSH_BUCKET_LIMIT = 8  # validation rows taken from one band bucket
VERIFY_LIMIT = 16  # candidates verified per estimated row: those sharing the most bands
_VERIFY_CHUNK = 1 << 22  # validation shingles compared at once (bounds the temporary arrays)
# Each row also keeps how many of its shingles fall in each of SKETCH_BUCKETS hash buckets:
# sum over buckets of min(count in A, count in B) bounds |A & B| from above, for 64 operations a
# pair whatever the rows' lengths, so most candidates are ruled out exactly before verification.
SKETCH_BUCKETS = 64


def prefix_length(size: int, threshold: float) -> int:
    """How many of a set's first shingles (in the global order) a Jaccard >= threshold match must share."""
    # Why this is enough: Jaccard(A, B) >= t implies |A & B| >= t * |A|, so B holds at least
    # o = ceil(t * |A|) of A's shingles. If none of them were among A's first |A| - o + 1 shingles,
    # all o would have to fit in the last o - 1 places, which they cannot. The same holds for B's
    # prefix; with one global order both prefixes contain the first shared shingle, so indexing the
    # validation prefixes and probing with the training prefixes finds every pair.
    return size - math.ceil(threshold * size - _EPS) + 1


def _powers(n: int) -> tuple[Any, Any]:
    """BASE**i and BASE**-i modulo 2**64 for i < n (cached, grown in steps of 2**20)."""
    import numpy as np

    if len(_POWERS.get("up", ())) < n:
        size = -(-n // (1 << 20)) * (1 << 20)
        for name, base in (("up", _BASE), ("down", pow(_BASE, -1, 1 << 64))):
            steps = np.full(size, base, dtype=np.uint64)
            steps[0] = 1
            _POWERS[name] = np.multiply.accumulate(steps)
    return _POWERS["up"], _POWERS["down"]


def _mix(h: Any) -> Any:
    """A 64-bit finaliser (from MurmurHash3) so that every output bit depends on every input bit."""
    import numpy as np

    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def shingle_batch(keys: Sequence[str]) -> tuple[Any, Any]:
    """Shingle a batch of normalised prompts.

    Returns `(offsets, shingles)`: row i's distinct shingle hashes, sorted, are
    `shingles[offsets[i]:offsets[i + 1]]` (int64 values below 2**48).
    """
    import numpy as np

    if len(keys) > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} prompts a batch")
    if not keys:
        return np.zeros(1, np.int64), np.zeros(0, np.int64)
    # Normalised prompts hold single spaces and no newline, so "\n" separates rows.
    buf = np.frombuffer("\n".join(keys).encode("utf-8", "surrogatepass"), dtype=np.uint8)
    seps = np.flatnonzero((buf == 32) | (buf == 10))
    starts = np.concatenate(([0], seps + 1))
    ends = np.concatenate((seps, [len(buf)]))
    row_of_word = np.concatenate(([0], np.cumsum(buf[seps] == 10)))
    words = np.bincount(row_of_word, minlength=len(keys))
    first = np.cumsum(words) - words
    count = np.maximum(words - (SHINGLE_WORDS - 1), 1)
    row = np.repeat(np.arange(len(keys), dtype=np.uint64), count)
    j = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count - first, count)
    last = np.minimum(j + SHINGLE_WORDS - 1, (first + words - 1)[row])
    # A polynomial hash of any byte range [s, e) in O(1) from prefix sums, all rows at once:
    # prefix[e] - prefix[s] is sum_i (byte_i + 1) * BASE^i over the range, and multiplying by BASE^-s
    # (BASE is odd, so it has an inverse modulo 2**64) shifts it to start at BASE^0, making the hash
    # independent of where the shingle sits in the buffer. uint64 arithmetic wraps, i.e. is mod 2**64.
    up, down = _powers(len(buf) + 1)
    prefix = np.zeros(len(buf) + 1, dtype=np.uint64)
    np.cumsum((buf.astype(np.uint64) + np.uint64(1)) * up[: len(buf)], out=prefix[1:])
    seg_start, seg_end = starts[j], ends[last]
    hashes = _mix((prefix[seg_end] - prefix[seg_start]) * down[seg_start]) & np.uint64(_MASK48)
    keyed = np.sort((row << np.uint64(48)) | hashes)  # by (row, hash); np.unique is slower here
    keyed = keyed[np.concatenate(([True], keyed[1:] != keyed[:-1]))]
    offsets = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum(
        np.bincount((keyed >> np.uint64(48)).astype(np.int64), minlength=len(keys)), out=offsets[1:]
    )
    return offsets, (keyed & np.uint64(_MASK48)).astype(np.int64)


class NearDuplicateIndex:
    """The validation rows' shingle sets, answering "which rows have Jaccard >= t with this prompt?".

    Usage: `add_batch()` the validation prompts, `freeze()` once, then `query_batch()` training prompts.
    """

    def __init__(self, threshold: float, candidate_budget: int | None = CANDIDATE_BUDGET) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"the near-duplicate threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.candidate_budget = candidate_budget  # None: always exact
        self.counts: Counter[str] = Counter()
        self._lsh_index: MinHashLSH | None = None
        self._chunks: list[tuple[Any, Any]] = []
        self._rows = 0
        self._frozen = False

    def __len__(self) -> int:
        return self._rows

    def add_batch(self, keys: Sequence[str]) -> None:
        """Add validation prompts (normalised); their row ids continue from the last batch."""
        if self._frozen:
            raise RuntimeError("the index is frozen")
        for i in range(0, len(keys), MAX_BATCH):
            chunk = keys[i : i + MAX_BATCH]
            self._chunks.append(shingle_batch(chunk))
            self._rows += len(chunk)

    def freeze(self) -> None:
        """Count shingle frequencies, build the bitmap and the prefix index (once, after the last add)."""
        import numpy as np

        self._frozen = True
        flat = (
            np.concatenate([c[1] for c in self._chunks]) if self._chunks else np.zeros(0, np.int64)
        )
        sizes = (
            np.concatenate([np.diff(c[0]) for c in self._chunks])
            if self._chunks
            else np.zeros(0, np.int64)
        )
        self._chunks = []
        offsets = np.concatenate(([0], np.cumsum(sizes)))
        row_of = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
        self._uniq, inverse, self._counts = np.unique(flat, return_inverse=True, return_counts=True)
        # Rarest first: a common shingle ("how many are") in a prefix would put most of the set on its
        # posting list; rare ones keep lists short. The hash breaks ties, so the order is global.
        order = np.lexsort(
            (flat, self._counts[inverse], row_of)
        )  # by row, then rarest first, then hash
        rank = np.arange(len(flat), dtype=np.int64) - offsets[:-1][row_of]
        keep = order[rank < self._prefix_lengths(sizes)[row_of]]
        by_shingle = np.argsort(flat[keep], kind="stable")
        self._prefix_keys, self._prefix_rows = flat[keep][by_shingle], row_of[keep][by_shingle]
        self._flat, self._offsets, self._sizes = flat, offsets, sizes
        self._flat_uid = inverse.astype(np.int64)  # each shingle's place in `_uniq`
        self._sketch = _sketch(row_of, flat, len(sizes))
        self._build_bitmap()

    def _build_bitmap(self) -> None:
        # A bit per hash value (folded into ~32 bits per distinct shingle) answers "is this shingle in
        # the validation set at all?" without a binary search for the many training shingles that are
        # not; the few bitmap hits are confirmed by searchsorted in `_known`.
        import numpy as np

        words = 1 << max(10, min(24, (max(len(self._uniq), 1) * 32 - 1).bit_length() - 6))
        self._bitmap_mask = np.int64(words - 1)
        self._bitmap = np.zeros(words, dtype=np.uint64)
        np.bitwise_or.at(
            self._bitmap,
            (self._uniq >> 6) & self._bitmap_mask,
            np.uint64(1) << (self._uniq & 63).astype(np.uint64),
        )

    def _prefix_lengths(self, sizes: Any) -> Any:
        import numpy as np

        return sizes - np.ceil(self.threshold * sizes - _EPS).astype(np.int64) + 1

    def _known(self, flat: Any) -> tuple[Any, Any]:
        """Positions in `flat` of shingles that occur in the validation set, and their index in `_uniq`."""
        import numpy as np

        bits = self._bitmap[(flat >> 6) & self._bitmap_mask] >> (flat & 63).astype(np.uint64)
        maybe = np.flatnonzero(bits & np.uint64(1))
        pos = np.minimum(np.searchsorted(self._uniq, flat[maybe]), len(self._uniq) - 1)
        hit = self._uniq[pos] == flat[maybe]
        return maybe[hit], pos[hit]

    def query_batch(self, keys: Sequence[str]) -> list[tuple[int, int, float]]:
        """(position in `keys`, validation row id, Jaccard) for each prompt with a near-duplicate.

        One match per prompt: the lowest validation row id with Jaccard >= the threshold (for an
        estimated row: the lowest among the rows MinHash-LSH proposes). Stopping at the first match
        keeps the cost bounded when a low threshold matches thousands of rows.
        """
        if not self._frozen:
            raise RuntimeError("call freeze() before query_batch()")
        if not keys or not len(self._uniq):
            return []
        results: list[tuple[int, int, float]] = []
        for base in range(0, len(keys), MAX_BATCH):
            offsets, flat = shingle_batch(keys[base : base + MAX_BATCH])
            results += [(base + i, row, sim) for i, row, sim in self._query_shingled(offsets, flat)]
        return results

    def _query_shingled(self, offsets: Any, flat: Any) -> list[tuple[int, int, float]]:
        """The exact search for rows whose prefix candidates fit the budget, MinHash-LSH for the
        others; every candidate pair of the batch is verified at once (`_verify`)."""
        import numpy as np

        sizes = np.diff(offsets)
        known, pos = self._known(flat)
        row_of = np.searchsorted(offsets, known, side="right") - 1
        probes, prefix_rows, lo, hi = self._prefix_candidates(sizes, flat, known, pos, row_of)
        work = np.bincount(prefix_rows, weights=hi - lo, minlength=len(sizes))
        budget = self.candidate_budget
        over = (
            (probes > 0) & (work > budget)
            if budget is not None
            else np.zeros(len(sizes), dtype=bool)
        )
        self.counts["rows_searched"] += len(sizes)
        self.counts["rows_estimated"] += int(over.sum())
        take = ((probes > 0) & ~over)[prefix_rows]
        counts = (hi - lo)[take]
        query = np.repeat(prefix_rows[take], counts)
        candidate = self._prefix_rows[_ragged(lo[take], counts)]
        pairs = [_unique_pairs(query, candidate)]
        known_keys = (row_of.astype(np.int64) << 32) | pos
        sketch = _sketch(row_of, flat[known], len(sizes))
        if over.any():
            pairs.append(self._estimate(offsets, flat, np.flatnonzero(over), sketch))
        return sorted(
            match for q, v in pairs for match in self._verify(q, v, sizes, known_keys, sketch)
        )

    def _prefix_candidates(
        self, sizes: Any, flat: Any, known: Any, pos: Any, row_of: Any
    ) -> tuple[Any, Any, Any, Any]:
        """Per row: how many known shingles to probe, and (row, lo, hi) posting ranges of those probes.

        A row can only reach Jaccard t when at least ceil(t * |A|) of its shingles are known; it
        probes its `probes` rarest known shingles (by validation frequency, then hash), all rows at once.
        """
        import numpy as np

        k = np.bincount(row_of, minlength=len(sizes))
        probes = k + 1 - np.ceil(self.threshold * sizes - _EPS).astype(np.int64)
        order = np.lexsort((flat[known], self._counts[pos], row_of))
        rank = np.arange(len(order)) - (np.cumsum(k) - k)[row_of[order]]
        keep = order[rank < probes[row_of[order]]]
        prefix = flat[known[keep]]
        lo = np.searchsorted(self._prefix_keys, prefix, side="left")
        hi = np.searchsorted(self._prefix_keys, prefix, side="right")
        return probes, row_of[keep], lo, hi

    def _verify(
        self, query: Any, candidate: Any, sizes: Any, known_keys: Any, sketch: Any
    ) -> list[tuple[int, int, float]]:
        """(query row, validation row, Jaccard) for each query row's first candidate (pairs come
        sorted by query, then validation row) whose exact Jaccard is >= the threshold.

        Vectorised over all pairs: each validation shingle of a pair is looked up among the query
        row's known shingles (`known_keys`: row << 32 | place in `_uniq`, sorted)."""
        import numpy as np

        t = self.threshold
        self.counts["pairs_proposed"] += len(query)
        query, candidate, _ = self._possible(query, candidate, sizes, sketch)
        self.counts["pairs_verified"] += len(query)
        size_a, size_b = sizes[query], self._sizes[candidate]
        found: list[tuple[Any, Any, Any]] = []
        ends = np.cumsum(size_b)
        start = 0
        while start < len(query) and len(known_keys):
            stop = max(
                start + 1, int(np.searchsorted(ends, ends[start] - size_b[start] + _VERIFY_CHUNK))
            )
            part = slice(start, stop)
            common = self._common(query[part], candidate[part], size_b[part], known_keys)
            similarity = common / (size_a[part] + size_b[part] - common)
            good = similarity >= t - _EPS
            found.append((query[part][good], candidate[part][good], similarity[good]))
            start = stop
        if not found:
            return []
        q, v, sim = (np.concatenate(parts) for parts in zip(*found, strict=True))
        first = np.unique(q, return_index=True)[1]
        return list(zip(q[first].tolist(), v[first].tolist(), sim[first].tolist(), strict=True))

    def _common(self, query: Any, candidate: Any, size_b: Any, known_keys: Any) -> Any:
        """|A & B| for each pair: B's shingles (as places in `_uniq`) found among A's known ones."""
        import numpy as np

        places = self._flat_uid[_ragged(self._offsets[candidate], size_b)]
        keys = (np.repeat(query, size_b).astype(np.int64) << 32) | places
        at = np.minimum(np.searchsorted(known_keys, keys), len(known_keys) - 1)
        hits = (known_keys[at] == keys).astype(np.int64)
        return np.add.reduceat(hits, np.cumsum(size_b) - size_b) if len(hits) else hits

    def _estimate(self, offsets: Any, flat: Any, rows: Any, sketch: Any) -> tuple[Any, Any]:
        """(query row, validation row) pairs to verify for the rows over the budget: those
        MinHash-LSH proposes (at most LSH_BUCKET_LIMIT rows from one band's bucket) that the size
        and sketch bounds leave, at most VERIFY_LIMIT per row (the largest sketch bounds first). A
        row whose proposals were cut at either limit counts as `rows_capped`."""
        # Why estimate at all: on templated data a row's prefix shingles are common words, and the
        # exact search would verify thousands of candidates per row (35 s against 5 s at t = 0.5 on
        # 110,000 templated rows). The estimate can miss a pair (recall is lsh_recall at the
        # threshold) but, verified exactly, never reports a false one.
        import numpy as np

        chosen = np.zeros(len(offsets) - 1, dtype=bool)
        chosen[rows] = True
        sizes = np.diff(offsets)
        sub = flat[np.repeat(chosen, sizes)]
        query, row, capped = self._lsh().candidates(
            np.concatenate(([0], np.cumsum(sizes[rows]))), sub, LSH_BUCKET_LIMIT
        )
        query = rows[query]
        query, row, bound = self._possible(query, row, sizes, sketch)
        order = np.lexsort((row, -bound, query))
        rank = np.arange(len(order)) - np.searchsorted(query[order], query[order], side="left")
        over = np.unique(query[order][rank >= VERIFY_LIMIT])
        capped[np.searchsorted(rows, over)] = True
        self.counts["rows_capped"] += int(capped.sum())
        keep = order[rank < VERIFY_LIMIT]
        return _unique_pairs(query[keep], row[keep])

    def _possible(
        self, query: Any, candidate: Any, sizes: Any, sketch: Any
    ) -> tuple[Any, Any, Any]:
        """The pairs that the sizes and the sketches do not rule out, with their sketch bounds."""
        import numpy as np

        t = self.threshold
        size_a, size_b = sizes[query], self._sizes[candidate]
        # Jaccard <= min(|A|, |B|) / max(|A|, |B|), so sizes too far apart cannot reach t.
        fits = (size_b >= t * size_a - _EPS) & (size_b * t <= size_a + _EPS)
        query, candidate, size_a, size_b = query[fits], candidate[fits], size_a[fits], size_b[fits]
        # Jaccard >= t needs |A & B| >= t / (1 + t) * (|A| + |B|); the sketch bounds |A & B|.
        needed = np.ceil(t / (1 + t) * (size_a + size_b) - _EPS)
        bound = _sketch_bound(sketch, query, self._sketch, candidate)
        fits = bound >= needed
        return query[fits], candidate[fits], bound[fits]

    def _lsh(self) -> MinHashLSH:
        """The validation rows' MinHash-LSH index, built on first use (random data never needs it)."""
        if self._lsh_index is None:
            self._lsh_index = MinHashLSH(self.threshold, self._offsets, self._flat)
        return self._lsh_index

    def search_stats(self) -> dict[str, Any]:
        """How the training rows were searched: exactly, or estimated (MinHash-LSH) past the budget."""
        bands, rows = lsh_parameters(self.threshold)
        return {
            "rows_searched": self.counts["rows_searched"],
            "rows_exact": self.counts["rows_searched"] - self.counts["rows_estimated"],
            "rows_estimated": self.counts["rows_estimated"],
            "rows_capped": self.counts["rows_capped"],
            "pairs_proposed": self.counts["pairs_proposed"],
            "pairs_verified": self.counts["pairs_verified"],
            "candidate_budget": self.candidate_budget,
            "verify_limit": VERIFY_LIMIT,
            "estimate": "minhash_lsh",
            "lsh_bands": bands,
            "lsh_rows_per_band": rows,
            "estimate_recall_at_threshold": round(lsh_recall(self.threshold, bands, rows), 4),
            "estimate_recall_source": "derived: 1 - (1 - t**r)**b, the chance that a pair at exactly the threshold t shares one of b bands of r MinHashes (higher above t); it holds for the estimated rows that were not capped",
        }


def lsh_recall(similarity: float, bands: int, rows: int) -> float:
    """The chance that MinHash-LSH proposes a pair of this Jaccard similarity."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def lsh_parameters(threshold: float) -> tuple[int, int]:
    """(bands, rows per band) within LSH_HASHES MinHashes: the most rows per band (fewest false
    candidates) that keep the recall at the threshold >= LSH_TARGET_RECALL."""
    # Two sets share one MinHash with probability equal to their Jaccard s, so all r of a band with
    # s**r and at least one of b bands with 1 - (1 - s**r)**b: an S-curve whose steepness r sets.
    # More rows per band reject more dissimilar pairs; the loop takes the most that keeps the recall.
    for rows in range(LSH_HASHES, 0, -1):
        bands = LSH_HASHES // rows
        if lsh_recall(threshold, bands, rows) >= LSH_TARGET_RECALL:
            return bands, rows
    return LSH_HASHES, 1


class MinHashLSH:
    """Banded MinHash signatures of the validation rows (seeded, so every run proposes the same pairs)."""

    def __init__(self, threshold: float, offsets: Any, flat: Any) -> None:
        import numpy as np

        self.bands, self.rows = lsh_parameters(threshold)
        rng = np.random.default_rng(LSH_SEED)
        self._mul = rng.integers(
            1, 1 << 63, size=self.bands * self.rows, dtype=np.uint64
        ) | np.uint64(1)
        self._add = rng.integers(0, 1 << 63, size=self.bands * self.rows, dtype=np.uint64)
        keys = self._band_keys(offsets, flat)  # (bands, rows)
        self._order = np.argsort(keys, axis=1, kind="stable")
        self._keys = np.take_along_axis(keys, self._order, axis=1)

    def _band_keys(self, offsets: Any, flat: Any) -> Any:
        """One 64-bit key per (band, row): a hash of the row's `rows` MinHashes in that band."""
        import numpy as np

        keys = np.zeros((self.bands, len(offsets) - 1), dtype=np.uint64)
        n = len(offsets) - 1
        for start in range(0, n, 1 << 14):  # row chunks bound the (shingles x hashes) matrix
            end = min(start + (1 << 14), n)
            chunk = flat[offsets[start] : offsets[end]].astype(np.uint64)
            starts = offsets[start:end] - offsets[start]
            for band in range(self.bands):
                cut = slice(band * self.rows, (band + 1) * self.rows)
                hashed = chunk[:, None] * self._mul[cut] + self._add[cut]
                mins = np.minimum.reduceat(hashed, starts, axis=0)
                key = np.zeros(len(starts), dtype=np.uint64)
                for j in range(self.rows):
                    key = _mix(key ^ mins[:, j])
                keys[band, start : start + len(starts)] = key
        return keys

    def candidates(self, offsets: Any, flat: Any, bucket_limit: int) -> tuple[Any, Any, Any]:
        """(query row, validation row) pairs sharing a band, sorted, and a flag per query row that
        says whether a bucket of one of its bands had more than `bucket_limit` rows (the lowest
        ids are taken)."""
        import numpy as np

        keys = self._band_keys(offsets, flat)
        capped = np.zeros(len(offsets) - 1, dtype=bool)
        found_q, found_v = [], []
        for band in range(self.bands):
            lo = np.searchsorted(self._keys[band], keys[band], side="left")
            hi = np.searchsorted(self._keys[band], keys[band], side="right")
            capped |= hi - lo > bucket_limit
            n = np.minimum(hi - lo, bucket_limit)
            found_q.append(np.repeat(np.arange(len(n)), n))
            found_v.append(self._order[band][_ragged(lo, n)])
        query, row = _unique_pairs(np.concatenate(found_q), np.concatenate(found_v))
        return query, row, capped


def _sketch(row_of: Any, shingles: Any, rows: int) -> Any:
    """(rows, SKETCH_BUCKETS) counts of each row's shingles per hash bucket, saturated at 255."""
    import numpy as np

    cells = row_of.astype(np.int64) * SKETCH_BUCKETS + (shingles & (SKETCH_BUCKETS - 1))
    counts = np.bincount(cells, minlength=rows * SKETCH_BUCKETS)
    return np.minimum(counts, 255).astype(np.uint8).reshape(rows, SKETCH_BUCKETS)


def _sketch_bound(sketch_a: Any, rows_a: Any, sketch_b: Any, rows_b: Any) -> Any:
    """An upper bound on |A & B| for each pair: a shared shingle falls in the same bucket of both."""
    import numpy as np

    bound = np.zeros(len(rows_a), dtype=np.int64)
    for start in range(0, len(rows_a), 1 << 16):  # in slices: (pairs, buckets) temporaries
        part = slice(start, start + (1 << 16))
        both = np.minimum(sketch_a[rows_a[part]], sketch_b[rows_b[part]])
        bound[part] = both.sum(axis=1, dtype=np.int64)
    return bound


def _ragged(starts: Any, counts: Any) -> Any:
    """starts[i], starts[i] + 1, ..., starts[i] + counts[i] - 1 for every i, one after another."""
    import numpy as np

    counts = np.asarray(counts, dtype=np.int64)
    return (
        np.arange(int(counts.sum()), dtype=np.int64)
        - np.repeat(np.cumsum(counts) - counts, counts)
        + np.repeat(np.asarray(starts, dtype=np.int64), counts)
    )


def _unique_pairs(query: Any, candidate: Any) -> tuple[Any, Any]:
    """The distinct (query, candidate) pairs, sorted by query then candidate."""
    import numpy as np

    packed = np.unique((np.asarray(query, np.int64) << 32) | np.asarray(candidate, np.int64))
    return packed >> 32, packed & ((1 << 32) - 1)
