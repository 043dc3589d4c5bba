"""Training over episodes with tools: the rollouts, their tensors, metrics, samples and evaluation.

A recipe with `tools` trains on whole episodes (`rft_cli.episodes`): each sampled prompt becomes
an episode, the grader scores the episode, and the token tensors hold the prompt (left-padded) and
everything after it (right-padded). Attention covers every token of the episode; the loss mask is
the episode's `policy_mask` (the tokens the policy sampled, each turn's stop token included), so
tool results and chat-template tokens carry no loss, advantage or KL. A dropped episode (a tool
failed past its retries) is not graded: its mask is all 0 and it is counted, not trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from rft_cli.data.openai_rows import row_tools
from rft_cli.data.records import episode_prompt_messages, item_of
from rft_cli.episodes import EPISODE_DROPPED, EpisodeLimits, grade_episodes, run_episodes
from rft_cli.run_folder.samples import render_prompt, result_fields
from rft_cli.tool_calls import output_parser
from rft_cli.training.rewards import GradeStats, stats_of

TRUNCATED_ENDS = ("truncated", "max_tokens")  # cut short: `rl.truncated: penalize` applies


@dataclass
class ToolSetup:
    """A run's tools (`rft_cli.tools.ToolBox`) and the limits of its episodes (`episode:`)."""

    toolbox: Any
    limits: EpisodeLimits

    def close(self) -> None:
        self.toolbox.close()


def load_tool_setup(config: Any) -> ToolSetup | None:
    """The ToolSetup of a recipe with `tools` (None without); nothing starts before the first call."""
    if not config.tools:
        return None
    from rft_cli.tools import load_toolbox

    episode = config.episode
    limits = EpisodeLimits(episode.max_episode_steps, episode.max_tokens, config.rl.max_new_tokens)
    return ToolSetup(load_toolbox(config.tools), limits)


def sample_episodes(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict],
    setup: ToolSetup,
    demonstration_field: str,
    *,
    temperature: float,
    top_p: float = 1.0,
    max_new_tokens: int | None = None,
    max_prompt_tokens: int | None = None,
    batch_size: int | None = None,
    progress: Any = None,
) -> list[Any]:
    """One episode per row, from the row's episode prompt (`episode_prompt_messages`), its grader
    item as the tools' `item`, and its own `tools` (else the recipe's); greedy at temperature 0."""
    from rft_cli.episodes import ModelPolicy

    limits = setup.limits
    if max_new_tokens is not None:
        limits = replace(limits, max_new_tokens=max_new_tokens)
    return run_episodes(
        ModelPolicy(model, tokenizer, temperature, top_p),
        tokenizer,
        [episode_prompt_messages(row) for row in rows],
        [item_of(row, demonstration_field) for row in rows],
        setup.toolbox,
        tools=[row_tools(row) for row in rows],
        limits=limits,
        batch_size=batch_size or max(len(rows), 1),
        parser=output_parser(tokenizer),
        progress=progress,
        max_prompt_tokens=max_prompt_tokens,
    )


@dataclass
class EpisodeRollout:
    """A batch of episodes as PPO's tensors (the shapes of `rollouts.Rollout`): `response_mask` is
    the loss mask (the policy's tokens; all 0 for a dropped episode), `response_attention` every
    token of the episode."""

    episodes: list[Any]
    prompt_ids: Any
    prompt_mask: Any
    response_ids: Any
    response_attention: Any
    response_mask: Any
    truncated: Any
    graded: Any  # False for a dropped episode

    @property
    def input_ids(self) -> Any:
        import torch

        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> Any:
        import torch

        return torch.cat([self.prompt_mask, self.response_attention], dim=1)

    @property
    def texts(self) -> list[str]:
        return [e.final_text for e in self.episodes]


def episode_rollout(episodes: Sequence[Any], pad_id: int, device: Any) -> EpisodeRollout:
    """The token tensors of `episodes`: prompts left-padded, episodes right-padded."""
    import torch

    prompt_width = max(len(e.prompt_ids) for e in episodes)
    width = max(max(len(e.ids) for e in episodes), 1)

    def tensor(rows: list[Any], dtype: Any = torch.long) -> Any:
        return torch.tensor(rows, dtype=dtype, device=device)

    def left(ids: list[int], fill: int) -> list[int]:
        return [fill] * (prompt_width - len(ids)) + ids

    def right(ids: list[int], fill: int) -> list[int]:
        return ids + [fill] * (width - len(ids))

    graded = [not e.dropped for e in episodes]
    return EpisodeRollout(
        episodes=list(episodes),
        prompt_ids=tensor([left(e.prompt_ids, pad_id) for e in episodes]),
        prompt_mask=tensor([left([1] * len(e.prompt_ids), 0) for e in episodes]),
        response_ids=tensor([right(e.ids, pad_id) for e in episodes]),
        response_attention=tensor([right([1] * len(e.ids), 0) for e in episodes]),
        response_mask=tensor(
            [
                right(e.policy_mask if ok else [0] * len(e.ids), 0)
                for e, ok in zip(episodes, graded, strict=True)
            ],
            torch.float32,
        ),
        truncated=tensor(
            [ok and e.end in TRUNCATED_ENDS for e, ok in zip(episodes, graded, strict=True)],
            torch.bool,
        ),
        graded=tensor(graded, torch.bool),
    )


def grade_rollout(grader: Any, episodes: Sequence[Any]) -> tuple[GradeStats, list[Any]]:
    """(stats over the graded episodes, each episode's grade or None when dropped)."""
    grades = grade_episodes(grader, episodes)
    return stats_of([g for g in grades if g is not None]), grades


def episode_metrics(episodes: Sequence[Any], prefix: str = "") -> dict[str, float]:
    """What a metrics line adds for episodes: tool calls, tool errors (per episode, and per call as
    `tool_error_share`), tokens and the policy's tokens per episode, and episodes dropped."""
    n = max(len(episodes), 1)
    calls = sum(e.tool_calls for e in episodes)
    errors = sum(sum(e.tool_errors.values()) for e in episodes)
    return {
        f"{prefix}tool_calls_per_episode": calls / n,
        f"{prefix}tool_errors_per_episode": errors / n,
        f"{prefix}tool_error_share": errors / calls if calls else 0.0,
        f"{prefix}steps_per_episode": sum(e.steps for e in episodes) / n,
        f"{prefix}tokens_per_episode": sum(len(e.ids) for e in episodes) / n,
        f"{prefix}policy_tokens_per_episode": sum(e.policy_tokens for e in episodes) / n,
        f"{prefix}episodes_dropped": float(sum(e.dropped for e in episodes)),
    }


def episode_lines(
    tokenizer: Any,
    rows: Sequence[int],
    episodes: Sequence[Any],
    grades: Sequence[Any],
    count: int,
    kl: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    """RUN/samples/ lines for the first `count` episodes: the prompt as the model saw it, the final
    answer and its grade, the episode's facts and every turn after the prompt (`turns`)."""
    out = []
    for i in range(min(count, len(episodes))):
        e, grade = episodes[i], grades[i]
        line: dict[str, Any] = {
            "row": rows[i],
            "prompt": render_prompt(tokenizer, e.prompt, e.tools),
            "output_text": e.final_text,
            **(
                result_fields(grade)
                if grade is not None
                else {"reward": None, "sub_rewards": {}, "errors": {EPISODE_DROPPED: 1}}
            ),
            "num_tokens": e.policy_tokens,
            "truncated": e.end in TRUNCATED_ENDS,
            "episode": {**e.facts(), **({"drop_reason": e.drop_reason} if e.dropped else {})},
            "turns": [dict(m) for m in e.messages],
        }
        if kl is not None:
            line["kl"] = float(kl[i])
        out.append(line)
    return out


def evaluate_episodes_greedy(
    model: Any,
    tokenizer: Any,
    grader: Any,
    rows: Sequence[dict],
    setup: ToolSetup,
    *,
    demonstration_field: str,
    max_new_tokens: int,
    batch_size: int,
    answers: list | None = None,
    progress: Any = None,
) -> dict[str, float]:
    """Greedy episodes on the validation rows, graded whole: valid_reward_mean and valid_accuracy
    (a dropped episode scores 0, as in `rft eval --tools`), and the episodes' metrics (`valid_`)."""
    was_training = model.training
    episodes = sample_episodes(
        model,
        tokenizer,
        rows,
        setup,
        demonstration_field,
        temperature=0.0,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
    )
    model.train(was_training)
    grades = grade_episodes(grader, episodes)
    rewards = [float(g.reward) if g is not None else 0.0 for g in grades]
    finite = [r for r in rewards if math.isfinite(r)]
    if answers is not None:
        answers.extend(episode_lines(tokenizer, range(len(rows)), episodes, grades, len(rows)))
    return {
        "valid_reward_mean": sum(finite) / len(finite) if finite else float("nan"),
        "valid_accuracy": sum(r >= 1.0 for r in finite) / max(len(rewards), 1),
        **episode_metrics(episodes, prefix="valid_"),
    }
