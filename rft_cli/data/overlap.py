"""Near-duplicate search between a validation set and a training set: streaming, vectorised, bounded.

A prompt (already normalised: NFKC, case folded, single spaces) becomes the set of hashes of its
word 3-grams ("shingles"; a prompt of fewer than three words is one shingle). Hashes are 48-bit,
computed in numpy for a whole batch at once from a polynomial prefix hash over the UTF-8 bytes.

The validation rows are indexed once; training rows are then queried in batches, every step
vectorised over the batch. Each training row is searched one of two ways, and `search_stats()`
counts both:

- **Exact**, by *prefix filtering* (Bayardo, Ma and Srikant, "Scaling up all pairs similarity
  search", WWW 2007): order every shingle by (frequency in the validation set, hash) and keep the
  first `|A| - ceil(t * |A|) + 1` shingles of each set; two sets with Jaccard >= t always share one
  of those, so no pair is missed. Positional filtering (PPJoin: Xiao, Wang, Lin and Yu, WWW 2008)
  drops the posting entries that cannot reach t from where they sit, with one binary search per
  probe (see `_exact_candidates`). A training row whose probes point to at most `CANDIDATE_BUDGET`
  validation entries, and whose candidates left by two exact bounds (the sizes, and a sketch: the
  shingles counted in 64 hash buckets, the smaller count of each bucket summed bounds |A & B| from
  above) number at most `VERIFY_LIMIT`, has each candidate verified with the exact Jaccard of the
  two shingle sets, lowest validation row first: the answer is the lowest row at or above t, no
  estimate, no false positive (up to 48-bit hash collisions) and no false negative.
- **Estimated**, every other row (on templated data the prefix shingles are common words and their
  candidate lists long). It tries first the candidates of its rare prefix shingles (`_SEEDS`), then
  those MinHash-LSH proposes (`MinHashLSH`: one-permutation MinHash, Li, Owen and Zhang, NIPS 2012,
  densified by rotation, Shrivastava and Li, ICML 2014, for prompts of `SMALL_SET` shingles or more;
  independent MinHashes for smaller ones), banded for a derived recall of at least
  `LSH_TARGET_RECALL` at the threshold. A validation row is proposed when it shares a band and its
  size is compatible; proposals are tried in the order of bands shared, after the exact bounds, and
  verified exactly, so an estimated row can miss a near-duplicate but never reports a false one.

**The work per training row is bounded on any data**: at most `CANDIDATE_BUDGET` posting entries
and `PROBE_LIMIT` probes, `_CROWDED_TAKE` rows from a band's bucket of more than `LSH_BUCKET_LIMIT`,
`_CONSIDER` proposals bounded and `VERIFY_LIMIT` pairs verified (in rounds of 1, 1, 2 and 4, a row
leaving at its first match). An estimated row that was cut at one of these limits *and* found no
near-duplicate is counted in `rows_capped` (its mode in `last_modes` is CAPPED): the stated recall
does not cover it (a row that found one lost nothing). Signatures, band keys and bucket lookups
cost a fixed number of operations per shingle and per row, whatever the data repeats.

Memory: the validation shingles (an int64 hash and an int32 id each), per distinct shingle its
count, rank, posting start and 4 table slots, a 64-byte sketch per row, and once a row is
estimated 16 bytes per band per validation row; training rows are never stored. numpy is imported
lazily (`rft --help` stays fast).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

SHINGLE_WORDS = 3
EXACT, ESTIMATED, CAPPED = 0, 1, 2  # how a row was searched (`last_modes`)
MAX_BATCH = 1 << 15
BATCH_CHARS = 1 << 20  # characters shingled at once: bounds the temporary arrays for long prompts
_EPS = 1e-9  # t * |A| in floating point: 0.56 * 25 is 14.000000000000002, whose ceil would be 15
_BASE = 0x100000001B3  # odd, so invertible modulo 2**64
_MASK48 = (1 << 48) - 1
_POWERS: dict[str, Any] = {}
# Past this many prefix-filter candidates (posting entries) a training row is estimated with MinHash-LSH.
CANDIDATE_BUDGET = 64
PROBE_LIMIT = 32  # prefix shingles probed per row in the exact search (more: estimated)
VERIFY_LIMIT = 8  # pairs verified exactly per training row, exact or estimated
_CONSIDER = 2 * VERIFY_LIMIT  # LSH proposals per row bounded exactly (the most bands shared first)
_SEEDS = 16  # prefix candidates an estimated row still tries, from its rarest shingles
_ROUNDS = (1, 1, 2, 4)  # how many of each row's candidates each verification round tries
LSH_BINS = 64
SMALL_SET = 8  # a prompt of fewer shingles is estimated with independent MinHashes (see MinHashLSH)
LSH_TARGET_RECALL = 0.995
LSH_SEED = 14
LSH_BUCKET_LIMIT = 8  # a band's bucket with more validation rows is cut (the lowest ids kept)
_CROWDED_TAKE = 2  # rows kept from a cut bucket
_BIN_SHIFT = 42  # a 48-bit shingle hash: its top 6 bits pick the bin, the other 42 are the value
_BAND_BITS = 7  # an LSH table key: family and band in the top 7 bits, a 33-bit hash, the size
_SIZE_BITS = 24
_ROOM_SCALE = 256  # positional filter bounds in 1/256 shingles, packed below a shingle id
_ROOM_BIAS = (1 << 30) - 1
_ROOM_TOP = (1 << 31) - 1
_SLOT_SHIFT = 16  # hash table slots from a shingle hash's bits 16 and up
_SLICE = 1 << 21  # validation shingles indexed at once (bounds the temporary arrays)
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
    starts = np.empty(len(seps) + 1, dtype=np.int64)  # word w is buf[starts[w]:ends[w]]
    starts[0] = 0
    np.add(seps, 1, out=starts[1:])
    ends = np.append(seps, len(buf))
    first = np.empty(len(keys) + 1, dtype=np.int64)  # each row's first word, then all the words
    first[0], first[-1] = 0, len(ends)
    np.add(np.flatnonzero(buf[seps] == 10), 1, out=first[1:-1])
    words, last_word = np.diff(first), first[1:] - 1
    # A row's shingles start at each of its words but the last SHINGLE_WORDS - 1 and end
    # SHINGLE_WORDS - 1 words later; a row of fewer words is one shingle, first word to last.
    begins = np.ones(len(ends), dtype=bool)
    for back in range(SHINGLE_WORDS - 1):
        begins[(last_word - back)[words > back + 1]] = False
    j = np.flatnonzero(begins)
    count = np.maximum(words - (SHINGLE_WORDS - 1), 1)
    last = j + (SHINGLE_WORDS - 1)
    short = np.flatnonzero(words < SHINGLE_WORDS)
    last[(np.cumsum(count) - count)[short]] = last_word[short]
    # A polynomial hash of any byte range [s, e) in O(1) from prefix sums, all rows at once:
    # prefix[e] - prefix[s] is sum_i (byte_i + 1) * BASE^i over the range, and multiplying by BASE^-s
    # (BASE is odd, so it has an inverse modulo 2**64) shifts it to start at BASE^0, making the hash
    # independent of where the shingle sits in the buffer. uint64 arithmetic wraps, i.e. is mod 2**64.
    up, down = _powers(len(buf) + 1)
    prefix = np.empty(len(buf) + 1, dtype=np.uint64)
    prefix[0] = 0
    # UTF-8 has no byte 0xFF, so byte + 1 fits in a byte: no uint64 copy of the text
    np.multiply(buf + np.uint8(1), up[: len(buf)], out=prefix[1:])
    np.cumsum(prefix[1:], out=prefix[1:])
    seg_start = starts[j]
    hashes = prefix[ends[last]]
    hashes -= prefix[seg_start]
    hashes *= down[seg_start]
    hashes = _mix(hashes)
    hashes &= np.uint64(_MASK48)
    hashes = _sort_rows(hashes.view(np.int64), count)
    distinct = np.empty(len(hashes), dtype=bool)
    np.not_equal(hashes[1:], hashes[:-1], out=distinct[1:])
    distinct[np.cumsum(count) - count] = True  # each row's first
    offsets = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum(np.add.reduceat(distinct, np.cumsum(count) - count, dtype=np.int64), out=offsets[1:])
    return offsets, hashes[distinct]


def _sort_rows(values: Any, counts: Any) -> Any:
    """`values` (int64) in runs of `counts` (each at least 1), each run sorted.

    One padded 2-D sort per power-of-two width: numpy sorts the short rows of a 2-D array with
    SIMD, 8 times faster than one stable sort of all the values (which only had to sort within
    rows); padding at most doubles the array."""
    import numpy as np

    widths = np.ceil(np.log2(counts)).astype(np.int64)  # exact at powers of two
    first = np.cumsum(counts) - counts
    out = np.empty_like(values)
    classes = np.unique(widths).tolist()
    for width in classes:
        rows = np.flatnonzero(widths == width) if len(classes) > 1 else None  # None: all rows
        size = counts if rows is None else counts[rows]
        filled = np.arange(1 << width) < size[:, None]
        grid = np.full(filled.shape, np.iinfo(np.int64).max, dtype=np.int64)
        at = slice(None) if rows is None else _ragged(first[rows], size)
        grid[filled] = values[at]
        grid.sort(axis=1)
        out[at] = grid[filled]
    return out


def _chunks(keys: Sequence[str]) -> Iterator[tuple[int, Sequence[str]]]:
    """(first position, keys) slices of at most MAX_BATCH prompts and about BATCH_CHARS characters."""
    start, chars = 0, 0
    for i, key in enumerate(keys):
        if i > start and (i - start >= MAX_BATCH or chars + len(key) > BATCH_CHARS):
            yield start, keys[start:i]
            start, chars = i, 0
        chars += len(key)
    if start < len(keys):
        yield start, keys[start:]


class _Batch:
    """One shingled batch of training rows and what every search step reads from it."""

    def __init__(self, index: NearDuplicateIndex, offsets: Any, flat: Any) -> None:
        import numpy as np

        self.offsets, self.flat = offsets, flat
        self.sizes = np.diff(offsets)
        self.rows = len(self.sizes)
        known, self.uid = index._known(flat)
        self.row_of = np.repeat(np.arange(self.rows, dtype=np.int64), self.sizes)[known]
        self.known_count = np.bincount(self.row_of, minlength=self.rows)
        # row << 32 | shingle id, sorted: a row's ids ascend because its hashes do (see `_common`)
        self.known_keys = (self.row_of << 32) | self.uid
        self._sketch = np.zeros((self.rows, SKETCH_BUCKETS), dtype=np.uint8)
        self._sketched = np.zeros(self.rows, dtype=bool)
        self.mode = np.full(self.rows, EXACT, dtype=np.int8)  # how each row was searched

    def sketch(self, rows: Any) -> Any:
        """The sketches, filled in for `rows` (only the rows that have candidates need one)."""
        import numpy as np

        todo = np.zeros(self.rows, dtype=bool)
        todo[rows] = True
        todo &= ~self._sketched
        if todo.any():
            pick = todo[self.row_of]
            self._sketch[todo] = _sketch(self.row_of[pick], self.uid[pick], self.rows)[todo]
            self._sketched |= todo
        return self._sketch


class NearDuplicateIndex:
    """The validation rows' shingle sets, answering "which rows have Jaccard >= t with this prompt?".

    Usage: `add_batch()` the validation prompts, `freeze()` once, then `query_batch()` training
    prompts; after each query `last_modes` says how each prompt was searched (EXACT, ESTIMATED,
    or CAPPED: estimated, cut at a limit, and no near-duplicate found).
    """

    def __init__(self, threshold: float, candidate_budget: int | None = CANDIDATE_BUDGET) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"the near-duplicate threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.candidate_budget = candidate_budget  # None: always exact, every candidate verified
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
        for _, chunk in _chunks(keys):
            self._chunks.append(shingle_batch(chunk))
            self._rows += len(chunk)

    def freeze(self) -> None:
        """Count shingle frequencies, build the lookup table and the prefix index (once, after the last add)."""
        import numpy as np

        self._frozen = True
        chunks, self._chunks = self._chunks, []
        flat = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros(0, np.int64)
        sizes = np.concatenate([np.diff(c[0]) for c in chunks]) if chunks else np.zeros(0, np.int64)
        self._offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        self._flat, self._sizes = flat, sizes
        self._index_shingles(flat)
        counts = np.bincount(self._flat_uid, minlength=len(self._uniq))
        # Rarest first: a common shingle ("how many are") in a prefix would put most of the set on its
        # posting list; rare ones keep lists short. The hash breaks ties (`_uniq` is sorted by hash).
        self._rank = np.empty(len(counts), dtype=np.int64)
        self._rank[np.argsort(counts, kind="stable")] = np.arange(len(counts))
        self._sketch = np.zeros((len(sizes), SKETCH_BUCKETS), dtype=np.uint8)
        parts = [self._index_rows(start, end) for start, end in _row_slices(self._offsets)]
        rows, uid, room = (
            (np.concatenate(p) for p in zip(*parts, strict=True))
            if parts
            else [np.zeros(0, np.int64)] * 3
        )
        # Posting lists as one array ordered by shingle id, then by how much of the row can still
        # be shared from that shingle on (`_room`, most first), with each id's start.
        packed = (uid << 32) | (_ROOM_TOP - room)
        order = np.argsort(packed, kind="stable")
        self._post_keys, self._post_rows = packed[order], rows[order]
        self._post_start = np.zeros(len(self._uniq) + 1, dtype=np.int64)
        np.cumsum(np.bincount(uid, minlength=len(self._uniq)), out=self._post_start[1:])

    def _index_shingles(self, flat: Any) -> None:
        """The distinct shingles (`_uniq`, sorted), their lookup table, and each shingle's place
        among them; a slice at a time, so the temporary arrays stay small."""
        import numpy as np

        ordered = np.sort(flat)
        distinct = np.ones(len(ordered), dtype=bool)
        np.not_equal(ordered[1:], ordered[:-1], out=distinct[1:])
        self._uniq = ordered[distinct]
        del ordered, distinct
        self._build_table()
        self._flat_uid = np.empty(len(flat), dtype=np.int32)
        for start in range(0, len(flat), _SLICE):
            self._flat_uid[start : start + _SLICE] = self._known(flat[start : start + _SLICE])[1]

    def _index_rows(self, start: int, end: int) -> tuple[Any, Any, Any]:
        """Rows [start, end): their sketches, and their prefix entries (row, shingle, room)."""
        import numpy as np

        sizes = self._sizes[start:end]
        row_of = np.repeat(np.arange(end - start, dtype=np.int64), sizes)  # from `start`
        uid = self._flat_uid[self._offsets[start] : self._offsets[end]]
        self._sketch[start:end] = _sketch(row_of, uid, end - start)
        keep, place = _first_per_row(row_of, self._rank[uid], self._prefix_lengths(sizes))
        rows = row_of[keep]
        room = self._room(sizes[rows] - place, sizes[rows], np.ceil)
        return rows + start, uid[keep].astype(np.int64), room

    def _build_table(self) -> None:
        """An open-addressing hash table (linear probing, at most a quarter full) from shingle hash to
        its index in `_uniq`: a lookup reads one or two slots where a binary search over millions
        of shingles reads twenty scattered ones. An empty slot holds len(_uniq), which indexes
        the -1 appended to `_lookup` (no hash is negative)."""
        import numpy as np

        size = len(self._uniq)
        self._slots = np.int64((1 << max(10, (4 * size - 1).bit_length())) - 1)
        self._table = np.full(int(self._slots) + 1, size, dtype=np.int32)
        self._lookup = np.append(self._uniq, -1)
        pending = np.arange(size, dtype=np.int64)
        slot = (self._uniq >> _SLOT_SHIFT) & self._slots
        while len(pending):  # all unplaced shingles at once; a slot's last writer wins it
            free = pending[self._table[slot[pending]] == size]
            self._table[slot[free]] = free
            placed = np.zeros(size, dtype=bool)
            placed[free[self._table[slot[free]] == free]] = True
            pending = pending[~placed[pending]]
            slot[pending] = (slot[pending] + 1) & self._slots

    def _prefix_lengths(self, sizes: Any) -> Any:
        import numpy as np

        return sizes - np.ceil(self.threshold * sizes - _EPS).astype(np.int64) + 1

    def _room(self, left: Any, size: Any, rounding: Any) -> Any:
        """(left - t / (1 + t) * size) * 256, rounded (up for the index, down for a query, so the
        comparison never drops a pair), as int64 offset to stay positive below _ROOM_TOP."""
        import numpy as np

        share = self.threshold / (1 + self.threshold)
        scaled = rounding(
            (left - share * size) * _ROOM_SCALE + (_EPS if rounding is np.ceil else -_EPS)
        )
        return np.clip(scaled, -_ROOM_BIAS, _ROOM_BIAS).astype(np.int64) + _ROOM_BIAS

    def _known(self, flat: Any) -> tuple[Any, Any]:
        """Positions in `flat` of shingles that occur in the validation set, and their index in `_uniq`."""
        import numpy as np

        empty = len(self._uniq)
        slot = (flat >> _SLOT_SHIFT) & self._slots
        uid = self._table[slot]
        found = self._lookup[uid] == flat
        todo = np.flatnonzero(~found & (uid != empty))  # a collision: probe the next slots
        while len(todo):
            slot[todo] = (slot[todo] + 1) & self._slots
            uid[todo] = self._table[slot[todo]]
            hit = self._lookup[uid[todo]] == flat[todo]
            found[todo[hit]] = True
            todo = todo[~hit & (uid[todo] != empty)]
        known = np.flatnonzero(found)
        return known, uid[known].astype(np.int64)

    def query_batch(self, keys: Sequence[str]) -> list[tuple[int, int, float]]:
        """(position in `keys`, validation row id, Jaccard) for each prompt with a near-duplicate.

        One match per prompt: for an exact row the lowest validation row id with Jaccard >= the
        threshold, for an estimated row the first one verified. Stopping at the first match keeps
        the cost bounded when a low threshold matches thousands of rows.
        """
        import numpy as np

        if not self._frozen:
            raise RuntimeError("call freeze() before query_batch()")
        self.last_modes = np.full(len(keys), EXACT, dtype=np.int8)
        if not keys or not len(self._uniq):
            return []
        results: list[tuple[int, int, float]] = []
        modes = []
        for base, chunk in _chunks(keys):
            batch = _Batch(self, *shingle_batch(chunk))
            results += [(base + i, row, sim) for i, row, sim in self._search(batch)]
            modes.append(batch.mode)
        self.last_modes = np.concatenate(modes)
        return results

    def _search(self, batch: _Batch) -> list[tuple[int, int, float]]:
        """The exact search for the rows it can afford, the estimate for the others."""
        import numpy as np

        exact, query, candidate = self._exact_candidates(batch)
        query, candidate = self._possible(query, candidate, batch)[:2]
        query, candidate = _unique_pairs(query, candidate)
        if self.candidate_budget is not None:  # more candidates than can be verified: estimate
            exact &= np.bincount(query, minlength=batch.rows) <= VERIFY_LIMIT
        sure = exact[query]
        found = [self._verify_in_order(query[sure], candidate[sure], batch)]
        estimated = np.flatnonzero(~exact)
        batch.mode[estimated] = ESTIMATED
        self.counts["rows_searched"] += batch.rows
        self.counts["rows_estimated"] += len(estimated)
        if len(estimated):
            found.append(self._estimate(estimated, batch, query[~sure], candidate[~sure]))
        return sorted(match for part in found for match in part)

    def _exact_candidates(self, batch: _Batch) -> tuple[Any, Any, Any]:
        """(whether each row is searched exactly, (query row, validation row) candidate pairs).

        A row can only reach Jaccard t when at least ceil(t * |A|) of its shingles are known; it
        probes its `probes` rarest known shingles (by validation frequency, then hash), all rows at
        once. A row whose probes' posting lists hold more than the budget is left to the estimate.
        """
        import numpy as np

        need = np.ceil(self.threshold * batch.sizes - _EPS).astype(np.int64)
        probes = np.maximum(batch.known_count - need + 1, 0)
        budget = self.candidate_budget
        # A row with more probes than PROBE_LIMIT (a long prompt made of common shingles) would
        # cost a sort of all its shingles to find out that it is over the budget: estimate it.
        crowded = probes > PROBE_LIMIT if budget is not None else np.zeros(batch.rows, bool)
        searched = np.flatnonzero(((probes > 0) & ~crowded)[batch.row_of])
        keep, place = _first_per_row(
            batch.row_of[searched], self._rank[batch.uid[searched]], probes
        )
        keep = searched[keep]
        rows, uid = batch.row_of[keep], batch.uid[keep]
        # Positional filtering (PPJoin: Xiao, Wang, Lin and Yu, WWW 2008). If w is the first
        # shingle A and B share (in the global order), the shingles before it in either set are
        # not shared, so |A & B| <= |B| - (w's place in B). Jaccard >= t needs
        # |A & B| >= t / (1 + t) * (|A| + |B|), that is room(B) = that bound - t / (1 + t) * |B|
        # >= t / (1 + t) * |A|: each posting list is sorted by room, so the entries that can
        # still match are its first ones, found by one binary search. The first shared shingle of
        # every pair at or above t is in both prefixes and passes, so nothing is missed.
        least = self._room(np.zeros(len(rows)), -batch.sizes[rows], np.floor)
        lo = self._post_start[uid]
        hi = np.searchsorted(self._post_keys, (uid << 32) | (_ROOM_TOP - least), side="right")
        count = np.maximum(hi - lo, 0)
        work = np.bincount(rows, weights=count, minlength=batch.rows)
        exact = ~crowded & (work <= budget) if budget is not None else np.ones(batch.rows, bool)
        # A row over the budget still gets the candidates of its rare probes (at most _SEEDS
        # rows on their lists), up to _SEEDS of them: a near-duplicate that shares a rare
        # shingle (a name, a number, an id) is there.
        seeds = np.where(count <= _SEEDS, count, 0)
        before = np.cumsum(seeds) - seeds
        before -= before[np.searchsorted(rows, rows)]
        count = np.where(exact[rows], count, np.clip(_SEEDS - before, 0, seeds))
        self.counts["pairs_proposed"] += int(count.sum())
        query = np.repeat(rows, count)
        candidate = self._post_rows[_ragged(lo, count)]
        # The same bound from A's side: A's shingles before w are not shared either.
        left = np.repeat((batch.sizes - batch.known_count)[rows] + place, count)
        left = batch.sizes[query] - left
        share = self.threshold / (1 + self.threshold)
        fits = left >= share * (batch.sizes[query] + self._sizes[candidate]) - _EPS
        return exact, query[fits], candidate[fits]

    def _verify_in_order(
        self, query: Any, candidate: Any, batch: _Batch, limit: int | None = None
    ) -> list[tuple[int, int, float]]:
        """(query row, validation row, Jaccard) for each query row's first candidate, in the order
        given (pairs grouped by query row), whose exact Jaccard is >= the threshold.

        Candidates are tried in rounds (`_ROUNDS`, then doubling): a row leaves at its first match."""
        import numpy as np

        place = _places(query)
        matched = np.zeros(batch.rows, dtype=bool)
        found: list[tuple[Any, Any, Any]] = []
        start, rounds = 0, list(_ROUNDS)
        while len(query) and start < int(place.max()) + 1 and (limit is None or start < limit):
            width = rounds.pop(0) if rounds else start
            pick = np.flatnonzero((place >= start) & (place < start + width) & ~matched[query])
            start += width
            if not len(pick):
                continue
            similarity = self._similarity(query[pick], candidate[pick], batch)
            good = similarity >= self.threshold - _EPS
            q, v, sim = query[pick][good], candidate[pick][good], similarity[good]
            if not len(q):
                continue
            first = np.concatenate(([True], q[1:] != q[:-1]))
            found.append((q[first], v[first], sim[first]))
            matched[q[first]] = True
        if not found:
            return []
        q, v, sim = (np.concatenate(parts) for parts in zip(*found, strict=True))
        return list(zip(q.tolist(), v.tolist(), sim.tolist(), strict=True))

    def _similarity(self, query: Any, candidate: Any, batch: _Batch) -> Any:
        """The exact Jaccard of each pair, in slices that bound the temporary arrays."""
        import numpy as np

        self.counts["pairs_verified"] += len(query)
        size_a, size_b = batch.sizes[query], self._sizes[candidate]
        ends = np.cumsum(size_b)
        common = np.zeros(len(query), dtype=np.int64)
        start = 0
        while start < len(query):
            stop = max(
                start + 1, int(np.searchsorted(ends, ends[start] - size_b[start] + _VERIFY_CHUNK))
            )
            part = slice(start, stop)
            common[part] = self._common(query[part], candidate[part], size_b[part], batch)
            start = stop
        return common / (size_a + size_b - common)

    def _common(self, query: Any, candidate: Any, size_b: Any, batch: _Batch) -> Any:
        """|A & B| for each pair: B's shingles (as places in `_uniq`) found among A's known ones."""
        import numpy as np

        known_keys = batch.known_keys
        if not len(known_keys):
            return np.zeros(len(query), dtype=np.int64)
        places = self._flat_uid[_ragged(self._offsets[candidate], size_b)]
        keys = (np.repeat(query, size_b).astype(np.int64) << 32) | places
        at = np.minimum(np.searchsorted(known_keys, keys), len(known_keys) - 1)
        hits = (known_keys[at] == keys).astype(np.int64)
        return np.add.reduceat(hits, np.cumsum(size_b) - size_b) if len(hits) else hits

    def _estimate(
        self, rows: Any, batch: _Batch, seed_query: Any, seed_candidate: Any
    ) -> list[tuple[int, int, float]]:
        """Matches for the rows past the budget: first the seeds (candidates of the row's rarest
        prefix shingles), then the validation rows MinHash-LSH proposes.

        LSH proposals (at most LSH_BUCKET_LIMIT rows from one band's bucket, sizes compatible) are
        ordered by bands shared; the first _CONSIDER that the exact bounds leave follow the seeds,
        and at most VERIFY_LIMIT a row are verified. A row cut at a limit that found no match
        counts as `rows_capped`."""
        # Why estimate at all: on templated data a row's prefix shingles are common words, and the
        # exact search would verify thousands of candidates per row (35 s against 5 s at t = 0.5 on
        # 110,000 templated rows). The estimate can miss a pair (recall is lsh_recall at the
        # threshold) but, verified exactly, never reports a false one.
        import numpy as np

        local, candidate, shared, cut = self._lsh().propose(
            batch.offsets, batch.flat, batch.sizes, rows, self.threshold
        )
        self.counts["pairs_proposed"] += len(local)
        order = np.argsort((local << 8) | (LSH_BINS - shared), kind="stable")
        local, candidate = local[order], candidate[order]
        considered = _places(local) < _CONSIDER
        cut[local[~considered]] = True
        query, candidate = self._possible(rows[local[considered]], candidate[considered], batch)[:2]
        query, candidate = _first_pairs(
            np.concatenate((seed_query, query)), np.concatenate((seed_candidate, candidate))
        )
        crowded = np.zeros(batch.rows, dtype=bool)
        crowded[query[_places(query) >= VERIFY_LIMIT]] = True
        found = self._verify_in_order(query, candidate, batch, VERIFY_LIMIT)
        capped = np.zeros(batch.rows, dtype=bool)
        capped[rows[cut]] = True
        capped |= crowded
        capped[[q for q, _, _ in found]] = False
        batch.mode[capped] = CAPPED
        self.counts["rows_capped"] += int(capped.sum())
        return found

    def _possible(self, query: Any, candidate: Any, batch: _Batch, *extra: Any) -> tuple[Any, ...]:
        """The pairs that the sizes and the sketches do not rule out, their sketch bounds, and
        `extra` arrays filtered alike."""
        import numpy as np

        t = self.threshold
        size_a, size_b = batch.sizes[query], self._sizes[candidate]
        # Jaccard <= min(|A|, |B|) / max(|A|, |B|), so sizes too far apart cannot reach t.
        fits = np.flatnonzero((size_b >= t * size_a - _EPS) & (size_b * t <= size_a + _EPS))
        # Jaccard >= t needs |A & B| >= t / (1 + t) * (|A| + |B|); the sketch bounds |A & B|.
        needed = np.ceil(t / (1 + t) * (size_a[fits] + size_b[fits]) - _EPS)
        sketch = batch.sketch(query[fits])
        bound = _sketch_bound(sketch, query[fits], self._sketch, candidate[fits])
        keep = fits[bound >= needed]
        return (query[keep], candidate[keep], bound[bound >= needed]) + tuple(
            array[keep] for array in extra
        )

    def _lsh(self) -> MinHashLSH:
        """The validation rows' MinHash-LSH index, built on first use (random data never needs it)."""
        if self._lsh_index is None:
            self._lsh_index = MinHashLSH(self.threshold, self._offsets, self._flat, self._sizes)
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
            "lsh_bucket_limit": LSH_BUCKET_LIMIT,
            "estimate": "minhash_lsh",
            "lsh_bands": bands,
            "lsh_rows_per_band": rows,
            "estimate_recall_at_threshold": round(lsh_recall(self.threshold, bands, rows), 4),
            "estimate_recall_source": "derived: 1 - (1 - t**r)**b, the chance that a pair at exactly the threshold t shares one of b bands of r MinHash bins (higher above t); it holds for the estimated rows that were not capped",
        }


def lsh_recall(similarity: float, bands: int, rows: int) -> float:
    """The chance that MinHash-LSH proposes a pair of this Jaccard similarity."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def lsh_parameters(threshold: float) -> tuple[int, int]:
    """(bands, rows per band) within LSH_BINS MinHash bins: the most rows per band (fewest false
    candidates) that keep the recall at the threshold >= LSH_TARGET_RECALL."""
    # Two sets share one MinHash with probability equal to their Jaccard s, so all r of a band with
    # s**r and at least one of b bands with 1 - (1 - s**r)**b: an S-curve whose steepness r sets.
    # More rows per band reject more dissimilar pairs; the loop takes the most that keeps the recall.
    for rows in range(LSH_BINS, 0, -1):
        bands = LSH_BINS // rows
        if lsh_recall(threshold, bands, rows) >= LSH_TARGET_RECALL:
            return bands, rows
    return LSH_BINS, 1


class MinHashLSH:
    """Banded MinHash signatures of the validation rows in one sorted table: each entry is (family,
    band, a hash of the band's bins, the row's size), so that a bucket's rows of compatible sizes
    are one range of it.

    A prompt of SMALL_SET shingles or more gets a one-permutation MinHash (one hash a shingle); a
    smaller one gets LSH_BINS independent MinHashes (one hash function each): with a few shingles
    one permutation's bins borrow from the same few values and its bands fail together (pairs of 1
    to 3 shingles at t = 0.5 were found 97% to 99.6% of the time, against 99.99% derived). A
    near-duplicate's size is within [t * |A|, |A| / t], so a query uses one family, and the
    validation rows of sizes that can meet both are indexed in both."""

    def __init__(self, threshold: float, offsets: Any, flat: Any, sizes: Any) -> None:
        import numpy as np

        self.bands, self.rows = lsh_parameters(threshold)
        rng = np.random.default_rng(LSH_SEED)
        self._salt = rng.integers(
            0, 1 << 63, size=(self.bands, self.rows), dtype=np.uint64
        ) | np.uint64(1)
        self._mul = rng.integers(1, 1 << 63, size=LSH_BINS, dtype=np.uint64) | np.uint64(1)
        self._add = rng.integers(0, 1 << 63, size=LSH_BINS, dtype=np.uint64)
        keys, ids = [np.zeros(0, np.uint64)], [np.zeros(0, np.int64)]
        for small, rows in (
            (True, np.flatnonzero(sizes < SMALL_SET / threshold)),
            (False, np.flatnonzero(sizes >= SMALL_SET * threshold)),
        ):
            for start in range(0, len(rows), 1 << 14):
                chunk = rows[start : start + (1 << 14)]
                keys.append(self.band_keys(offsets, flat, sizes, chunk, small).ravel())
                ids.append(np.repeat(chunk, self.bands))
        keys_all = np.concatenate(keys)
        order = np.argsort(keys_all, kind="stable")  # equal keys keep ascending row ids
        self._keys, self._rows = keys_all[order], np.concatenate(ids)[order]

    def band_keys(self, offsets: Any, flat: Any, sizes: Any, rows: Any, small: bool) -> Any:
        """(len(rows), bands) table keys: the family, the band, a hash of its bins, the size."""
        import numpy as np

        if small:
            signature = self._independent_minhash(offsets, flat, rows)
        else:
            signature = _one_permutation_minhash(offsets, flat, rows).astype(np.uint64)
        signature = signature[:, : self.bands * self.rows].reshape(len(rows), self.bands, self.rows)
        # A random odd multiplier per bin, summed (mod 2**64) and mixed: different bins hash apart.
        key = _mix((signature * self._salt).sum(axis=2, dtype=np.uint64))
        band = np.arange(self.bands, dtype=np.uint64) + np.uint64(64 if small else 0)
        size = np.minimum(sizes[rows], (1 << _SIZE_BITS) - 1).astype(np.uint64)
        return (
            (band << np.uint64(64 - _BAND_BITS))
            | (key >> np.uint64(_BAND_BITS + _SIZE_BITS) << np.uint64(_SIZE_BITS))
            | size[:, None]
        )

    def _independent_minhash(self, offsets: Any, flat: Any, rows: Any) -> Any:
        """(len(rows), LSH_BINS) MinHashes of the given rows under LSH_BINS seeded hash functions."""
        import numpy as np

        sizes = offsets[rows + 1] - offsets[rows]
        hashes = flat[_ragged(offsets[rows], sizes)].astype(np.uint64)
        values = _mix(hashes[:, None] * self._mul + self._add)  # mixed: min-wise independent
        return np.minimum.reduceat(values, np.cumsum(sizes) - sizes, axis=0)

    def propose(
        self, offsets: Any, flat: Any, sizes: Any, rows: Any, threshold: float
    ) -> tuple[Any, Any, Any, Any]:
        """(index into rows, validation row, bands shared) for each distinct pair proposed, sorted,
        and whether each of `rows` had a bucket cut at LSH_BUCKET_LIMIT."""
        import numpy as np

        small = sizes[rows] < SMALL_SET
        keys: Any = np.empty((len(rows), self.bands), dtype=np.uint64)
        for family in (True, False):
            pick = small == family
            if pick.any():
                keys[pick] = self.band_keys(offsets, flat, sizes, rows[pick], family)
        keys = keys.ravel()  # row by row
        head = keys >> np.uint64(_SIZE_BITS) << np.uint64(_SIZE_BITS)
        size = np.repeat(sizes[rows], self.bands)
        low = np.ceil(threshold * size - _EPS).astype(np.uint64)
        high = np.minimum(np.floor(size / threshold + _EPS), (1 << _SIZE_BITS) - 1)
        # sorted needles: numpy's binary search starts from the previous answer, and repetitive
        # data asks for the same few buckets again and again
        order = np.argsort(head)
        lo, hi = np.empty(len(keys), dtype=np.int64), np.empty(len(keys), dtype=np.int64)
        lo[order] = np.searchsorted(self._keys, (head | low)[order])
        hi[order] = np.searchsorted(self._keys, (head | high.astype(np.uint64))[order], "right")
        # A bucket of more than LSH_BUCKET_LIMIT rows (on repetitive data most of them) gives only
        # its first _CROWDED_TAKE: the same few rows for every query, kept for data where they
        # match everything (rows that repeat two words); smaller buckets are taken whole.
        crowded = hi - lo > LSH_BUCKET_LIMIT
        cut = crowded.reshape(len(rows), self.bands).any(axis=1)
        count = np.where(crowded, _CROWDED_TAKE, hi - lo)
        # From a crowded bucket, rows at a place that the query's next band picks: each band
        # and each query looks at other rows, not the same first ones every time.
        pick = _mix(np.roll(keys.reshape(len(rows), self.bands), -1, axis=1).ravel())
        places = np.maximum(hi - lo - _CROWDED_TAKE + 1, 1).astype(np.uint64)
        lo = lo + np.where(crowded, (pick % places).astype(np.int64), 0)
        candidate = self._rows[_ragged(lo, count)]
        local = np.repeat(np.arange(len(keys), dtype=np.int64) // self.bands, count)
        packed = np.sort((local << 32) | candidate, kind="stable")
        first = np.concatenate(([True], packed[1:] != packed[:-1])) if len(packed) else packed
        starts = np.flatnonzero(first)
        shared = np.diff(np.concatenate((starts, [len(packed)])))
        packed = packed[starts]
        return packed >> 32, packed & ((1 << 32) - 1), shared, cut


def _one_permutation_minhash(offsets: Any, flat: Any, rows: Any) -> Any:
    """(len(rows), LSH_BINS) one-permutation MinHash of the given rows, densified by rotation: an
    empty bin takes the value of the next full bin to its right (wrapping around) plus
    `distance << 42`, so that a borrowed value never equals a bin's own (Shrivastava and Li, ICML 2014)."""
    import numpy as np

    sizes = offsets[rows + 1] - offsets[rows]
    hashes = flat[_ragged(offsets[rows], sizes)]
    # A row's hashes are sorted and a hash's bin is its top bits, so the first hash of each
    # (row, bin) run is that bin's minimum: no min-reduction needed.
    local = np.repeat(np.arange(len(rows), dtype=np.int64), sizes)
    cell = local * LSH_BINS + (hashes >> _BIN_SHIFT)
    first = np.flatnonzero(np.concatenate(([True], cell[1:] != cell[:-1]))) if len(cell) else cell
    full_row, full_bin = local[first], cell[first] - local[first] * LSH_BINS
    value = hashes[first] & ((1 << _BIN_SHIFT) - 1)
    # Full bins p0 < p1 < ... of a row: bins (p[i-1], p[i]] borrow from p[i], and the bins after the
    # last one wrap around to p0 + LSH_BINS. Laid out as runs (each row's full bins, then its wrap
    # entry), one `repeat` gives every row's donors in bin order.
    row_start = np.concatenate(([True], full_row[1:] != full_row[:-1]))
    head, last = np.flatnonzero(row_start), np.flatnonzero(np.append(row_start[1:], True))
    at_full = np.arange(len(first)) + full_row
    at_wrap = at_full[last] + 1
    runs = np.empty(len(first) + len(rows), dtype=np.int64)
    runs[at_full] = full_bin - np.where(row_start, -1, np.append(0, full_bin[:-1]))
    runs[at_wrap] = LSH_BINS - 1 - full_bin[last]
    source = np.empty_like(runs)
    source[at_full], source[at_wrap] = np.arange(len(first)), head
    source_bin = np.empty_like(runs)
    source_bin[at_full], source_bin[at_wrap] = full_bin, full_bin[head] + LSH_BINS
    donor, donor_bin = np.repeat(source, runs), np.repeat(source_bin, runs)
    distance = donor_bin - np.tile(np.arange(LSH_BINS), len(rows))
    return (value[donor] + (distance << _BIN_SHIFT)).reshape(len(rows), LSH_BINS)


def _row_slices(offsets: Any) -> Iterator[tuple[int, int]]:
    """[start, end) row ranges of about _SLICE shingles each (at least one row)."""
    import numpy as np

    start = 0
    while start < len(offsets) - 1:
        end = int(np.searchsorted(offsets, offsets[start] + _SLICE, side="right")) - 1
        end = min(max(end, start + 1), len(offsets) - 1)
        yield start, end
        start = end


def _first_per_row(row_of: Any, rank: Any, keep: Any) -> Any:
    """Positions (into row_of, grouped by row) of each row's `keep[row]` entries of lowest rank,
    and their places in that order; a row's ranks are distinct (its shingles are)."""
    import numpy as np

    if not len(row_of):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], row_of[1:] != row_of[:-1])))
    counts = np.diff(np.append(starts, len(row_of)))
    first = np.repeat(starts, counts)
    place = np.arange(len(row_of)) - first
    # rank (below 2**31) above the entry's place in its row: sorting a row sorts its ranks
    order = first + (_sort_rows((rank << 32) | place, counts) & 0xFFFFFFFF)
    chosen = place < keep[row_of]
    return order[chosen], place[chosen]


def _places(groups: Any) -> Any:
    """Each entry's place within its run of equal values (0, 1, 2, ...); `groups` is sorted."""
    import numpy as np

    if not len(groups):
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], groups[1:] != groups[:-1])))
    runs = np.diff(np.concatenate((starts, [len(groups)])))
    return np.arange(len(groups)) - np.repeat(starts, runs)


def _sketch(row_of: Any, shingles: Any, rows: int) -> Any:
    """(rows, SKETCH_BUCKETS) counts of each row's shingles per bucket, saturated at 255."""
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


def _first_pairs(query: Any, candidate: Any) -> tuple[Any, Any]:
    """The pairs grouped by query (stably: each row's candidates keep their order), each distinct
    pair at its first place."""
    import numpy as np

    order = np.argsort(query, kind="stable")
    query, candidate = query[order], candidate[order]
    packed = (query << 32) | candidate
    by_pair = np.argsort(packed, kind="stable")
    first = np.ones(len(packed), dtype=bool)
    first[by_pair[1:]] = packed[by_pair[1:]] != packed[by_pair[:-1]]
    return query[first], candidate[first]


def _unique_pairs(query: Any, candidate: Any) -> tuple[Any, Any]:
    """The distinct (query, candidate) pairs, sorted by query then candidate; query ascends."""
    import numpy as np

    packed = np.sort((np.asarray(query, np.int64) << 32) | candidate, kind="stable")
    if len(packed):
        packed = packed[np.concatenate(([True], packed[1:] != packed[:-1]))]
    return packed >> 32, packed & ((1 << 32) - 1)
