"""Pieces shared by the SFT, PPO and TRL stages: seeding, data order, rollouts, grading, Ctrl-C."""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from rft_cli.data.openai_rows import row_tools
from rft_cli.data.records import item_of, prompt_messages


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CUDA too)."""
    import random

    import numpy as np
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


@dataclass
class Rollout:
    """A batch of sampled answers: prompt (left-padded) and response (right-padded) token tensors."""

    prompt_ids: Any
    prompt_mask: Any
    response_ids: Any
    response_mask: Any
    truncated: Any
    texts: list[str]

    @property
    def input_ids(self) -> Any:
        import torch

        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> Any:
        import torch

        return torch.cat([self.prompt_mask, self.response_mask.to(self.prompt_mask.dtype)], dim=1)


def encode_prompts(tokenizer: Any, rows: Sequence[dict], max_prompt_length: int, device: Any) -> tuple[Any, Any]:
    """Chat-template the prompts as `rft eval` does, keep the last `max_prompt_length` tokens, left-pad."""
    import torch

    from rft_cli.generation import encode_prompt

    encoded = [encode_prompt(tokenizer, prompt_messages(row), row_tools(row))[-max_prompt_length:] for row in rows]
    width = max(len(ids) for ids in encoded)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded], device=device)
    mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=device)
    return input_ids, mask


def sample(model: Any, tokenizer: Any, rows: Sequence[dict], *, max_prompt_length: int, max_new_tokens: int,
           temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False, device: Any = None) -> Rollout:
    """Sample one answer per row with the KV cache (HF generate); stops at EOS.

    Tokens are drawn from exactly softmax(logits / temperature) (top-p only when top_p < 1), the
    distribution PPO's log-probs, KL and entropy assume: the generation setup is `rft eval`'s, and
    the model's own generation_config.json (top_k, repetition penalty...) takes no part.
    """
    import torch

    from rft_cli.generation import generate_tokens, sampling_config
    from rft_cli.training.ppo_math import response_mask

    device = device or next(model.parameters()).device
    prompt_ids, prompt_mask = encode_prompts(tokenizer, rows, max_prompt_length, device)
    config = sampling_config(model, tokenizer, max_new_tokens=max_new_tokens,
                             temperature=0.0 if greedy else temperature, top_p=top_p)
    with torch.no_grad():
        out = generate_tokens(model, prompt_ids, prompt_mask, config)
    response = out[:, prompt_ids.shape[1]:]
    if response.shape[1] == 0:  # nothing generated at all; keep one EOS so shapes stay valid
        response = torch.full((len(rows), 1), config.eos_token_id[0], device=device)
    mask, truncated = response_mask(response, config.eos_token_id)
    response = torch.where(mask.bool(), response, torch.full_like(response, config.pad_token_id))
    texts = tokenizer.batch_decode([r[m.bool()] for r, m in zip(response, mask)], skip_special_tokens=True)
    return Rollout(prompt_ids, prompt_mask, response, mask.to(device), truncated.to(device), texts)


@dataclass
class GradeStats:
    """Rewards of one batch and what went wrong while grading."""

    rewards: list[float]
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    sub_rewards: dict[str, float] = field(default_factory=dict)
    results: list[Any] = field(default_factory=list, repr=False)  # the GradeResults (samples on disk)

    @property
    def failed_share(self) -> float:
        """The share of grades with an error (`grader_error_share`; `rl.max_grader_error_share` bounds it)."""
        return self.failed / max(len(self.rewards), 1)

    def metrics(self, prefix: str = "") -> dict[str, Any]:
        """`grader_errors/<kind>` and `sub_rewards/<name>` entries for metrics.jsonl."""
        out: dict[str, Any] = {f"{prefix}grader_errors/{k}": v for k, v in sorted(self.errors.items())}
        out.update({f"{prefix}sub_rewards/{k}": v for k, v in sorted(self.sub_rewards.items())})
        return out


def stats_of(results: Sequence[Any]) -> GradeStats:
    """Rewards, failures (grades with any error), error counts and mean sub-rewards of GradeResults."""
    stats = GradeStats(rewards=[float(r.reward) for r in results], results=list(results))
    sub_totals: dict[str, list[float]] = {}
    for result in results:
        if result.errors and any(result.errors.values()):
            stats.failed += 1
        for kind, count in result.errors.items():
            stats.errors[kind] = stats.errors.get(kind, 0) + int(count)
        for name, value in result.sub_rewards.items():
            sub_totals.setdefault(name, []).append(float(value))
    stats.sub_rewards = {k: sum(v) / len(v) for k, v in sub_totals.items()}
    return stats


def merge_stats(parts: Sequence[GradeStats]) -> GradeStats:
    """One GradeStats from several processes' (sub-rewards averaged per process, weighted by size)."""
    merged = GradeStats(rewards=[r for p in parts for r in p.rewards], failed=sum(p.failed for p in parts))
    weights: dict[str, list[tuple[float, int]]] = {}
    for part in parts:
        for kind, count in part.errors.items():
            merged.errors[kind] = merged.errors.get(kind, 0) + count
        for name, value in part.sub_rewards.items():
            weights.setdefault(name, []).append((value, len(part.rewards)))
    merged.sub_rewards = {k: sum(v * n for v, n in vs) / max(sum(n for _, n in vs), 1) for k, vs in weights.items()}
    return merged


def gather_object(objects: list[Any]) -> list[Any]:
    """accelerate's gather_object (every process gets every process's objects)."""
    from accelerate.utils import gather_object as _gather

    return _gather(objects)


def grade(grader: Any, texts: Sequence[str], items: Sequence[dict], parser: Any = None) -> GradeStats:
    """Grade answers (tool calls read by `parser`, see `rft_cli.tool_calls`); a grade with any error
    counts as failed (its reward is what the grader gave, usually 0)."""
    from rft_cli.tool_calls import grade_answers

    return stats_of(grade_answers(grader, texts, list(items), parser))


def evaluate_greedy(model: Any, tokenizer: Any, grader: Any, rows: Sequence[dict], *, demonstration_field: str,
                    max_new_tokens: int, batch_size: int, answers: list | None = None) -> dict[str, float]:
    """valid_reward_mean and valid_accuracy (share of rows with reward 1.0) of greedy answers.

    `answers`, when given, receives one samples line per row (`rft_cli.samples.eval_lines`).

    Generation is `rft_cli.generation.generate_completions`, the same as `rft eval`, so the
    validation score during training matches what `rft eval` reports for the checkpoint.
    """
    from rft_cli.generation import generate_completions
    from rft_cli.tool_calls import output_parser

    was_training = model.training
    prompts = [prompt_messages(row) for row in rows]
    tools = [row_tools(row) for row in rows]
    outs = generate_completions(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=0.0,
                                batch_size=batch_size, tools=tools)
    model.train(was_training)
    stats = grade(grader, [o[0].text for o in outs], [item_of(r, demonstration_field) for r in rows],
                  parser=output_parser(tokenizer))
    if answers is not None:
        from rft_cli.samples import eval_lines

        answers.extend(eval_lines(tokenizer, prompts, [o[0] for o in outs], stats.results, len(rows), tools=tools))
    finite = [r for r in stats.rewards if math.isfinite(r)]
    mean = sum(finite) / len(finite) if finite else float("nan")
    return {"valid_reward_mean": mean, "valid_accuracy": sum(r >= 1.0 for r in finite) / max(len(stats.rewards), 1)}


class InterruptFlag:
    """Set by the first Ctrl-C; the loop saves a checkpoint at the next step boundary and stops."""

    def __init__(self) -> None:
        self.requested = False


@contextmanager
def graceful_interrupt() -> Iterator[InterruptFlag]:
    """First SIGINT sets a flag (finish the step, save, exit 130); a second one interrupts at once."""
    flag = InterruptFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def disable_dropout(model: Any) -> None:
    """PPO's ratios assume the same network computes old and new log-probs: no dropout (as ReFT).

    The old pass runs in eval mode and the update in train mode, so every dropout must go, not
    only `nn.Dropout` modules: attention layers keep their rate as a float (`attention_dropout`,
    read only in train mode) and pass it to the attention kernel.
    """
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if "dropout" in name and isinstance(value, float):
                setattr(module, name, 0.0)


@dataclass
class RunContext:
    """Everything a stage needs: the config, the run folder, data, grader, logger and progress hook."""

    config: Any
    run_dir: Any
    train_rows: list[dict]
    valid_rows: list[dict]
    grader: Any
    logger: Any
    progress: Any = None
    interrupt: InterruptFlag = field(default_factory=InterruptFlag)
    elapsed_before: float = 0.0
    samples: Any = None  # a rft_cli.samples.SampleWriter (None: keep no answers)
    early_stop: dict[str, Any] | None = None  # set when RL ended early (rft_cli.training.early_stop)

    @property
    def checkpoints_dir(self) -> Any:
        return self.run_dir / "checkpoints"

    def report(self, record: dict[str, Any]) -> None:
        """Log a metrics line and show it on the progress display."""
        self.logger.log(record)
        if self.progress is not None:
            self.progress(record)
        stop = getattr(self.logger, "raise_pending_stop", None)  # alarms.stop_on (rft_cli.alarms.WatchingLogger)
        if stop is not None:
            stop()

    def keep_samples(self, stage: str, step: int, lines: list[dict], after: str | None = None) -> None:
        """Write a step's answers to RUN/samples/ (nothing when samples are off)."""
        if self.samples is not None:
            self.samples.write(stage, step, lines, after)

    def wants_samples(self, stage: str, step: int) -> bool:
        return self.samples is not None and self.samples.wants(stage, step, self.config.rl.steps)

    def eval_rows(self) -> list[dict]:
        """The validation rows evaluated during training (the first `eval.samples`)."""
        return self.valid_rows[: self.config.eval.samples]

    def evaluate(self, model: Any, tokenizer: Any, step: int, after: str) -> dict[str, float]:
        """Greedy validation of `model` at `step` of stage `after` (sft/rl), its answers kept in RUN/samples/."""
        cfg, ev = self.config, self.config.eval
        answers: list | None = [] if self.wants_samples("eval", step) else None
        valid = evaluate_greedy(model, tokenizer, self.grader, self.eval_rows(),
                                demonstration_field=cfg.data.demonstration_field,
                                max_new_tokens=ev.max_new_tokens or cfg.rl.max_new_tokens, batch_size=ev.batch_size,
                                answers=answers)
        self.keep_samples("eval", step, (answers or [])[:cfg.samples.eval_rows], after=after)
        return valid
