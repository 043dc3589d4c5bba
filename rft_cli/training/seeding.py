"""Seeds and the data order: what makes a run reproducible, and resumable without sampler state."""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CUDA too)."""
    import numpy as np  # numpy and torch inside the functions: `rft --help` starts without them
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    # torch.manual_seed() also queues a lazy CUDA seeding that records a stack trace: 0.5 s per
    # call deep in a training loop. Seed the CPU generator directly and CUDA only when present.
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def step_seed(seed: int, step: int) -> int:
    """A per-step seed, so step N samples the same tokens whether or not the run was resumed."""
    return (seed * 1_000_003 + step * 7919) % 2**31


@lru_cache(maxsize=4)
def _epoch_order(n_rows: int, seed: int, epoch: int) -> Any:
    import numpy as np

    return np.random.default_rng([seed, epoch]).permutation(n_rows)


def batch_indices(n_rows: int, seed: int, start: int, count: int) -> list[int]:
    """Rows `start .. start+count` of an endless sequence of seeded per-epoch permutations.

    The data position alone says where a run is, so resuming needs no sampler state.
    """
    out = []
    for position in range(start, start + count):
        epoch, offset = divmod(position, n_rows)
        out.append(int(_epoch_order(n_rows, seed, epoch)[offset]))
    return out
