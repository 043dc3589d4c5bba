"""Rollouts on disk: sampled RL answers and greedy evaluation answers under `RUN/samples/`.

One JSONL file per kept step, written atomically (temp file, fsync, rename), so a crash leaves a
step's file whole or absent and a resumed run that writes the step again replaces it: each step
has exactly one copy. The folder is capped at `samples.max_mb`: the oldest RL-step files go
first; evaluation files are small (`samples.eval_rows` lines) and kept.

A line: stage ("rl" or "eval"), step, after ("sft" or "rl": the stage an evaluation followed),
row (index into the training or validation file), prompt, output_text, reward, sub_rewards,
errors, num_tokens, truncated, and kl for PPO answers. A write error (a full disk) skips the
file and is reported once: losing samples must never stop training.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rft_cli.errors import ConfigError
from rft_cli.jsonl import read_records

SAMPLES_DIR = "samples"
_NAME = re.compile(r"^(rl|eval-sft|eval-rl)-step-(\d+)\.jsonl$")


def _file_name(stage: str, step: int, after: str | None) -> str:
    prefix = "rl" if stage == "rl" else f"eval-{after or 'rl'}"
    return f"{prefix}-step-{step:07d}.jsonl"


def _cut(text: Any, limit: int) -> Any:
    if isinstance(text, str) and len(text) > limit:
        return text[:limit] + f"... [{len(text) - limit} more characters]"
    return text


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


class SampleWriter:
    """Writes the kept answers of a step to `RUN/samples/<stage>-step-<N>.jsonl`."""

    def __init__(self, run_dir: str | Path, settings: Any):
        self.folder = Path(run_dir) / SAMPLES_DIR
        self.settings = settings
        self.problem: str | None = None  # the first write error, reported once
        self._reported = False
        self._sizes: dict[Path, int] | None = (
            None  # the folder's files and sizes, read from disk once
        )

    def wants(self, stage: str, step: int, last_step: int | None = None) -> bool:
        """Whether this step's answers are kept (the first and last RL step always are)."""
        s = self.settings
        if not s.enabled or self.problem is not None:
            return False
        if stage == "eval":
            return s.eval_rows > 0
        return step == 1 or step == last_step or step % s.interval == 0

    def write(
        self, stage: str, step: int, lines: list[dict[str, Any]], after: str | None = None
    ) -> None:
        """Write one step's file atomically (replacing an earlier copy of the same step)."""
        if not lines or self.problem is not None:
            return
        limit = self.settings.max_chars
        path = self.folder / _file_name(stage, step, after)
        tmp = path.with_name(path.name + ".tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tmp.open("w", encoding="utf-8") as handle:
                for line in lines:
                    line = {
                        "stage": stage,
                        "step": step,
                        **({"after": after} if after else {}),
                        **line,
                    }
                    line["prompt"], line["output_text"] = (
                        _cut(line.get("prompt"), limit),
                        _cut(line.get("output_text"), limit),
                    )
                    handle.write(
                        json.dumps({k: _finite(v) for k, v in line.items()}, ensure_ascii=False)
                        + "\n"
                    )
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            self._rotate(path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self.problem = (
                f"{self.folder}: stopped keeping samples ({exc.strerror or exc}); training goes on"
            )

    def take_problem(self) -> str | None:
        """The write error, the first time it is asked for (it goes on one metrics line)."""
        if self.problem is None or self._reported:
            return None
        self._reported = True
        return self.problem

    def _rotate(self, written: Path) -> None:
        """Delete the oldest RL-step files while the folder is over `samples.max_mb`.

        Sizes are tallied in memory (the folder is listed once per run), so a long run does not
        stat thousands of files at every step.
        """
        if self._sizes is None:
            self._sizes = {f: f.stat().st_size for f in self.folder.glob("*.jsonl")}
        self._sizes[written] = written.stat().st_size
        total, budget = sum(self._sizes.values()), self.settings.max_mb * 1024 * 1024
        files = sorted(f for f in self._sizes if f.name.startswith("rl-step-"))
        for f in files[:-1]:  # the newest file always stays
            if total <= budget:
                break
            f.unlink(missing_ok=True)
            total -= self._sizes.pop(f)

    def keep(self, n: int, group: int) -> int:
        """How many of a step's `n` answers to keep: `per_step`, rounded down to whole prompt groups."""
        per = min(self.settings.per_step, n)
        return max(per - per % group, min(group, n)) if group > 1 else per


def reconcile_samples(
    run_dir: str | Path, stage: str | None, step: int, keep_step: bool = True
) -> int:
    """Delete sample files written after the checkpoint a resumed run continues from.

    Mirrors `reconcile_metrics`: `stage=None` drops every file; RL files (and RL evaluations)
    after `step` go when resuming the RL stage; a resumed warm-up drops everything after it.
    """
    folder = Path(run_dir) / SAMPLES_DIR
    if not folder.is_dir():
        return 0
    dropped = 0
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)
            continue
        if match is None:
            continue
        kind, n = match.group(1), int(match.group(2))
        rl_file = kind in ("rl", "eval-rl")
        late = (
            stage is None
            or (stage == "sft" and (rl_file or n > step or (n == step and not keep_step)))
            or (stage == "rl" and rl_file and n > step)
        )
        if late:
            path.unlink(missing_ok=True)
            dropped += 1
    return dropped


# -- building lines -----------------------------------------------------------------------------


def result_fields(result: Any) -> dict[str, Any]:
    return {
        "reward": float(result.reward),
        "sub_rewards": dict(result.sub_rewards),
        "errors": {k: v for k, v in result.errors.items() if v},
    }


def text_of(completion: Any) -> str:
    """A TRL completion's text (conversational completions are a list of one assistant message)."""
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def render_prompt(tokenizer: Any, messages: list[dict], tools: list[dict] | None = None) -> str:
    """The prompt as the model saw it (chat template with the row's tools, generation prompt added)."""
    with_tools = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, **with_tools
    )


def rollout_lines(
    tokenizer: Any, rows: list[int], rollout: Any, results: list[Any], count: int, kl: Any = None
) -> list[dict[str, Any]]:
    """Lines for the first `count` answers of a sampled batch (`rows[i]` indexes the training file)."""
    lengths = rollout.response_mask.sum(dim=1).tolist()
    out = []
    for i in range(min(count, len(results))):
        prompt_ids = rollout.prompt_ids[i][rollout.prompt_mask[i].bool()]
        line = {
            "row": rows[i],
            "prompt": tokenizer.decode(prompt_ids, skip_special_tokens=False),
            "output_text": rollout.texts[i],
            **result_fields(results[i]),
            "num_tokens": int(lengths[i]),
            "truncated": bool(rollout.truncated[i]),
        }
        if kl is not None:
            line["kl"] = float(kl[i])
        out.append(line)
    return out


def eval_lines(
    tokenizer: Any,
    prompts: list[list[dict]],
    completions: list[Any],
    results: list[Any],
    count: int,
    tools: list[Any] | None = None,
) -> list[dict[str, Any]]:
    """Lines for the first `count` greedy evaluation answers (row i is line i of the validation file)."""
    tools = tools or [None] * len(prompts)
    return [
        {
            "row": i,
            "prompt": render_prompt(tokenizer, prompts[i], tools[i]),
            "output_text": completions[i].text,
            **result_fields(results[i]),
            "num_tokens": completions[i].num_tokens,
            "truncated": completions[i].truncated,
        }
        for i in range(min(count, len(results)))
    ]


def transcript(line: dict[str, Any]) -> str:
    """A kept answer as one line of text: an episode's turns (`turns`) as calls, their results
    and the final answer, `lookup {"key": "ka"} -> 17 | lookup {"key": "mo"} -> 42 | 17+42=59`;
    a single answer's text."""
    turns = line.get("turns")
    if not isinstance(turns, list):
        return str(line.get("output_text") or "")
    parts: list[str] = []
    for turn in turns:
        if not isinstance(turn, dict):
            continue
        if turn.get("role") == "tool":
            result = f"-> {turn.get('content', '')}"
            parts[-1:] = [f"{parts[-1]} {result}" if parts else result]
            continue
        calls = [
            f"{c['function'].get('name')} {json.dumps(c['function'].get('arguments'))}"
            for c in turn.get("tool_calls") or []
            if isinstance(c, dict) and isinstance(c.get("function"), dict)
        ]
        parts += [p for p in (str(turn.get("content") or ""), *calls) if p]
    return " | ".join(parts)


# -- reading ------------------------------------------------------------------------------------


@dataclass
class SampleFile:
    """One step's kept answers."""

    kind: str
    step: int
    path: Path


def list_sample_files(run_dir: str | Path) -> list[SampleFile]:
    """Every samples file of a run, in step order (warm-up evaluation first)."""
    folder = Path(run_dir) / SAMPLES_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append(SampleFile(match.group(1), int(match.group(2)), path))
    phase, rank = {"eval-sft": 0, "rl": 1, "eval-rl": 1}, {"rl": 0, "eval-rl": 1, "eval-sft": 1}
    return sorted(
        found, key=lambda f: (phase[f.kind], f.step, rank[f.kind])
    )  # a step's answers, then its evaluation


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """The complete lines of one samples file (read like metrics.jsonl: a torn line is skipped)."""
    return read_records(path)


def _answer_rows(lines: list[dict[str, Any]], top: int) -> dict[str, list[dict[str, Any]]]:
    scored = [line for line in lines if isinstance(line.get("reward"), (int, float))]
    ranked = sorted(scored, key=lambda line: line["reward"])
    counts = Counter((line.get("output_text") or "").strip() for line in lines)
    common = []
    for text, count in counts.most_common(top):
        rewards = [
            line["reward"] for line in scored if (line.get("output_text") or "").strip() == text
        ]
        common.append(
            {
                "output_text": text,
                "count": count,
                "reward": sum(rewards) / len(rewards) if rewards else None,
            }
        )
    return {"best": ranked[::-1][:top], "worst": ranked[:top], "most_common": common}


def step_samples(
    run_dir: str | Path, step: int | None = None, stage: str = "rl", top: int = 5
) -> dict[str, Any]:
    """Best, worst and most common answers of one kept step (default: the last one)."""
    kinds = ("rl",) if stage == "rl" else ("eval-sft", "eval-rl")
    files = [f for f in list_sample_files(run_dir) if f.kind in kinds]
    if not files:
        raise ConfigError(
            f"{Path(run_dir) / SAMPLES_DIR}: no {stage} samples kept (runs before samples existed, "
            "or samples.enabled: false)"
        )
    chosen = (
        files[-1] if step is None else next((f for f in reversed(files) if f.step == step), None)
    )
    if chosen is None:
        kept = ", ".join(str(f.step) for f in files[-10:])
        raise ConfigError(
            f"--step {step}: no {stage} samples kept for that step (kept steps end with {kept})"
        )
    lines = read_samples(chosen.path)
    rewards = [line["reward"] for line in lines if isinstance(line.get("reward"), (int, float))]
    return {
        "stage": stage,
        "step": chosen.step,
        "file": str(chosen.path),
        "answers": len(lines),
        "reward_mean": sum(rewards) / len(rewards) if rewards else None,
        **_answer_rows(lines, top),
    }


def follow_row(run_dir: str | Path, row: int) -> list[dict[str, Any]]:
    """One validation row's greedy answer at every kept evaluation, in order."""
    out = []
    for f in list_sample_files(run_dir):
        if f.kind == "rl":
            continue
        for line in read_samples(f.path):
            if line.get("row") == row:
                out.append(line)
    return out
