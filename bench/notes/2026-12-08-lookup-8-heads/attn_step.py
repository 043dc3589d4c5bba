"""One forward and backward of llama-1m's sizes with 4 or 8 heads, sdpa or eager attention, side by side.

A batch of 8 x 256 tokens, 200 of them real in 7 rows; best of 5 interleaved rounds of 10 steps.
Run from the repository root: OMP_NUM_THREADS=2 python bench/notes/2026-12-08-lookup-8-heads/attn_step.py
"""

import time

import torch

from rft_cli.tiny import TINY_ARCHITECTURES, build_char_tokenizer, build_tiny_model

CONFIGS = [(heads, impl) for heads in (4, 8) for impl in ("sdpa", "eager")]


def model(tokenizer, heads: int, impl: str):
    sizes = {**TINY_ARCHITECTURES["llama-1m"], "num_attention_heads": heads}
    built = build_tiny_model(tokenizer, sizes)
    built.set_attn_implementation(impl)
    return built


def step(m, ids, mask) -> None:
    m(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
    m.zero_grad()


def main() -> None:
    torch.manual_seed(0)
    tokenizer = build_char_tokenizer()
    ids = torch.randint(10, 90, (8, 256))
    mask = torch.ones_like(ids)
    mask[:, 200:] = 0
    mask[0, :] = 1
    for heads, impl in CONFIGS:  # warm every kernel once
        m = model(tokenizer, heads, impl)
        for _ in range(3):
            step(m, ids, mask)
    times: dict[tuple[int, str], list[float]] = {c: [] for c in CONFIGS}
    for _ in range(5):
        for heads, impl in CONFIGS:
            m = model(tokenizer, heads, impl)
            for _ in range(2):
                step(m, ids, mask)
            start = time.perf_counter()
            for _ in range(10):
                step(m, ids, mask)
            times[(heads, impl)].append((time.perf_counter() - start) / 10)
    base = min(times[(4, "sdpa")])
    for (heads, impl), runs in times.items():
        best = min(runs)
        print(
            f"{heads} heads {impl:5s}: {best * 1000:.1f} ms/step (best of 5), {best / base:.2f}x 4-head sdpa"
        )


if __name__ == "__main__":
    main()
