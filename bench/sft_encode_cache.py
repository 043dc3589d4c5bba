"""What the warm-up's token cache saves: a batch's rows through the chat template (the first epoch)
against the same batch from the collator's cache (every later epoch), on a recipe's training rows.

Usage:
    python bench/sft_encode_cache.py                         # recipes/lookup-cpu.yaml
    python bench/sft_encode_cache.py --recipe recipes/arith-cpu.yaml --epochs 3

Both are timed in one process, one after the other, so the ratio holds on a busy machine even where
the milliseconds do not. The collator's padding is left out (it is the same either way); the model,
the forward and the backward are not involved. `cache MiB` is what the cached ids and labels hold.

Measured 2026-12-07, 2-core VM, nothing else running (bench/notes/2026-12-07-lookup-80-steps.md):
lookup-cpu (2,000 demonstrated episodes, batch 8) 11.70 ms per batch through the template, 0.02 ms
from the cache, 3.2 MiB cached; arith-cpu (batch 32) 5.42 and 0.03 ms. On the tool task that is
about 26 s of a 2,500-step warm-up.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rft_cli.config import load_run_config  # noqa: E402
from rft_cli.tiny import build_char_tokenizer  # noqa: E402
from rft_cli.training.run import preflight  # noqa: E402
from rft_cli.training.sft import SFTCollator, SFTEncoder, build_encoder, sft_rows  # noqa: E402


def encoder(recipe: Path) -> tuple[SFTEncoder, list[int], int]:
    """The encoder `rft train`'s warm-up builds for the recipe (whole episodes when it has tools),
    its demonstrated rows, its batch size."""
    config = load_run_config(recipe)
    if config.model.tiny is None:
        raise SystemExit(f"{recipe}: this bench builds the tiny char tokenizer; use a tiny recipe")
    pre = preflight(config)  # the checked rows and tools, as `rft train` reads them
    ctx = SimpleNamespace(config=config, train_rows=pre.train_rows, tools=pre.tools)
    rows = sft_rows(pre.train_rows, config.data.demonstration_field)
    return build_encoder(ctx, build_char_tokenizer()), rows, config.sft.batch_size


def timed_epoch(collate: SFTCollator, rows: list[int], batch: int) -> float:
    """Seconds to collate every batch of one epoch."""
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        collate([{"row": i} for i in rows[start : start + batch]])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "lookup-cpu.yaml")
    parser.add_argument("--epochs", type=int, default=3, help="epochs from the cache (default 3)")
    args = parser.parse_args()
    encode, rows, batch = encoder(args.recipe)
    collate = SFTCollator(encode, lambda examples: examples)
    cold = timed_epoch(collate, rows, batch)
    warm = [timed_epoch(collate, rows, batch) for _ in range(args.epochs)]
    batches = -(-len(rows) // batch)
    cached = SFTCollator.CACHE_TOKENS - collate.cache_left
    print(f"{args.recipe.name}: {len(rows)} demonstrations, batch {batch}, {batches} batches")
    print(f"  template (epoch 1)   {1000 * cold / batches:8.2f} ms/batch")
    for n, seconds in enumerate(warm, 2):
        print(f"  cache (epoch {n})      {1000 * seconds / batches:8.2f} ms/batch")
    print(f"  ratio                {cold / min(warm):8.1f}x")
    print(f"  cache                {cached:,} tokens, {cached * 8 / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
