"""The longest common subsequence of two texts (or token lists), in linear memory and bounded time.

`fuzzy_match` (characters) and `rouge_l` (words) are both a longest common subsequence (LCS).
The textbook table is quadratic in time and memory (rouge-score built it: 71 s and 1.76 GB for a
1 MB answer against a 5 KB reference). Here the LCS is bit-parallel (Allison and Dix 1986, Hyyrö
2004): one bit per unit of the shorter sequence, one pass of big-integer operations over the
longer one per block of `BLOCK` bits. Memory is linear; time is a pass over the longer sequence
plus work in proportion to `len(shorter) * len(longer)` (about 0.5 ns a pair here).

That product is capped at `WORK_LIMIT` pairs: past it the longer sequence is cut so that the
product fits, and when even the shorter one is longer than `sqrt(WORK_LIMIT)`, both are cut to
that. The LCS of the kept prefixes is at most the true LCS, so a score computed from it over the
full lengths is a lower bound (a policy cannot gain by writing more); below the cap it is exact.

>>> lcs_length("kitten", "sitting")
4
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

BLOCK = 1 << 14
WORK_LIMIT = 1 << 31
# Below this much work (units of the longer x 64-bit words of the shorter) rapidfuzz's C++ is faster.
_SMALL_WORK = 1 << 18


def lcs_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """The LCS length of `a` and `b` (strings, or lists of hashable tokens), of their prefixes
    when `len(a) * len(b)` is over WORK_LIMIT (see the module docstring)."""
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    if not short:
        return 0
    if len(long) * (len(short) // 64 + 1) <= _SMALL_WORK:
        from rapidfuzz.distance import LCSseq

        return int(LCSseq.similarity(short, long))
    if len(short) * len(long) > WORK_LIMIT:
        side = math.isqrt(WORK_LIMIT)
        if len(short) > side:
            short, long = short[:side], long[:side]
        else:
            long = long[: WORK_LIMIT // len(short)]
    return _bit_parallel(short, long)


def _bit_parallel(short: Sequence[Any], long: Sequence[Any]) -> int:
    """Hyyrö's LCS: V starts all ones; per unit of `long`, V = (V + (V & M)) | (V & ~M), where M
    marks where that unit occurs in `short`; the LCS is the number of zero bits left. Blocks of
    `short` run one after another, each taking the carries the block below produced."""
    total, carries = 0, None
    for start in range(0, len(short), BLOCK):
        block = short[start : start + BLOCK]
        last = start + BLOCK >= len(short)
        v, carries = _one_block(block, long, carries, keep_carries=not last)
        total += len(block) - v.bit_count()
    return total


def _one_block(
    block: Sequence[Any], long: Sequence[Any], carries: bytearray | None, keep_carries: bool
) -> tuple[int, bytearray | None]:
    masks: dict[Any, int] = {}
    for i, unit in enumerate(block):
        masks[unit] = masks.get(unit, 0) | (1 << i)
    top = 1 << len(block)
    out = bytearray(len(long)) if keep_carries else None
    v, get = top - 1, masks.get
    for j, unit in enumerate(long):
        m = get(unit, 0)
        carry = carries[j] if carries is not None else 0
        if not m and not carry:  # nothing matches and nothing carries in: V stays as it is
            continue
        u = v & m
        added = v + u + carry
        if added >= top:  # the carry out of this block goes into the next one
            added -= top
            if out is not None:
                out[j] = 1
        v = added | (v - u)
    return v, out
