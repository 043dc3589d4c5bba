"""Thread count on a busy machine: a training step and a decode step with 1 thread, all cores, and
rft's choice (`rft_cli.threads`), on a quiet machine and while another process keeps cores busy.

Each cell runs in its own subprocess (torch fixes its thread pool per process), after one warm-up
step, and reports the median seconds of `--steps` steps. The load is `--busy N` processes spinning
in pure Python, as a browser or a compile would. The ratios to compare sit side by side in one run:
"2 threads, loaded" against "1 thread, loaded" is the collapse; "rft" should sit near the best of
the two in each row.

Example:
    python bench/threads.py --model ~/.cache/rft/models/smollm2-135m-instruct/...gguf --busy 1
    python bench/threads.py                  # the tiny llama-1m, built from its config
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _spin() -> None:
    while True:
        pass


def worker(model_name: str, mode: str, steps: int, batch: int, length: int) -> dict:
    """Median seconds of a forward+backward (train) and of a batched one-token decode step."""
    import torch

    from rft_cli import threads

    if mode == "rft":
        threads.govern()
        threads._governor.every_s = 0.0  # decide before every step in this short run
    else:
        torch.set_num_threads(int(mode))
    model, vocab = _load(model_name)
    ids = torch.randint(3, vocab, (batch, length))
    times: dict[str, list[float]] = {"train": [], "decode": []}
    chosen = []
    for i in range(steps + 1):
        threads.tick()
        chosen.append(torch.get_num_threads())
        started = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)
        train_s = time.perf_counter() - started
        with torch.no_grad():
            cache = model(input_ids=ids, use_cache=True).cache
            started = time.perf_counter()
            for _ in range(8):
                cache = model(input_ids=ids[:, :1], cache=cache, use_cache=True)
                cache = cache.cache
            decode_s = (time.perf_counter() - started) / 8
        if i:  # the first step warms the allocator and the thread pool up
            times["train"].append(train_s)
            times["decode"].append(decode_s)
    return {
        **{k: statistics.median(v) for k, v in times.items()},
        "threads": sorted(set(chosen[1:])),
    }


def _load(name: str):
    from rft_cli.config import ModelSettings
    from rft_cli.training.models import load_model, load_tokenizer

    settings = ModelSettings(tiny=name) if not Path(name).exists() else ModelSettings(name=name)
    tokenizer = load_tokenizer(settings)
    model = load_model(settings, tokenizer)
    return model, len(tokenizer)


def run_cell(args: argparse.Namespace, mode: str, busy: int) -> dict:
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(busy)]
    for p in spinners:
        p.start()
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if mode != "rft":
        env["OMP_NUM_THREADS"] = mode
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--worker", mode, "--model", args.model]
            + [
                "--steps",
                str(args.steps),
                "--batch",
                str(args.batch),
                "--length",
                str(args.length),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        for p in spinners:
            p.terminate()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="llama-1m", help="a tiny model name or a model path")
    parser.add_argument("--busy", type=int, default=1, help="spinning processes in the loaded rows")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=96)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.model, args.worker, args.steps, args.batch, args.length)))
        return
    cores = len(os.sched_getaffinity(0))
    modes = ["1", str(cores), "rft"]
    print(f"{cores} cores; loaded = {args.busy} spinning process(es); median s/step")
    print(f"{'load':8s} {'threads':8s} {'train s':>9s} {'decode s':>9s}  rft chose")
    for busy in (0, args.busy):
        for mode in modes:
            cell = run_cell(args, mode, busy)
            chose = ",".join(map(str, cell["threads"])) if mode == "rft" else ""
            print(
                f"{'loaded' if busy else 'quiet':8s} {mode:8s} {cell['train']:9.3f} {cell['decode']:9.4f}  {chose}",
                flush=True,
            )


if __name__ == "__main__":
    main()
