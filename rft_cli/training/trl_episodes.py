"""`rl.algorithm: grpo` over episodes with tools, through TRL's maintained `rollout_func` hook.

TRL 1.16's GRPOTrainer can call tools itself (`tools=`), but not as an episode needs: its tools
are Python callables run in the trainer process (ours run in the sandbox or at an endpoint), a
failure is shown to the model but can never drop the rollout, tool results are rendered against a
dummy conversation rather than the episode's own, and `max_tool_calling_iterations` counts turns,
not calls. Its `rollout_func` hook fits instead: it hands a step's prompts to our episode runner
(`rft_cli.episodes`, the same as PPO's and `rft eval --tools`') and takes back each episode's
prompt and completion ids (never re-tokenized) with `env_mask`, which TRL multiplies into its
loss mask: only the policy's tokens carry the loss, the KL term and the logged entropy. The
episodes reach the reward function as an extra column (`rft_episode`), where the grader scores
each whole; a dropped episode's reward is None, which TRL leaves out of its group's baseline and
gives advantage 0 (and its mask is all 0). RLOOTrainer (1.16) has no such hook, so RLOO is
refused with tools (`preflight`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

from rft_cli.training.context import RunContext
from rft_cli.training.episode_rollouts import (
    TRUNCATED_ENDS,
    episode_lines,
    episode_metrics,
    grade_rollout,
    sample_episodes,
)
from rft_cli.training.trl_bridge import GraderReward, optimizer_steps_per_batch


def episode_trainer_class(trainer_class: type) -> type:
    """`trainer_class` (GRPOTrainer) keeping each batch's rows for `EpisodeRollout`."""

    class EpisodeTrainer(trainer_class):
        def _generate_and_score_completions(self, inputs: list) -> Any:
            self._rft_inputs = inputs
            return super()._generate_and_score_completions(inputs)

    EpisodeTrainer.__name__ = trainer_class.__name__
    return EpisodeTrainer


class EpisodeRollout:
    """TRL's `rollout_func`: one episode per prompt of the batch (its rows kept by the trainer,
    `episode_trainer_class`), sampled from the policy as TRL samples (`rl.temperature`, `rl.top_p`)."""

    def __init__(self, ctx: RunContext, tokenizer: Any):
        self.ctx, self.tokenizer = ctx, tokenizer

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        rl = self.ctx.config.rl
        rows = [self.ctx.train_rows[int(x["rft_row"])] for x in trainer._rft_inputs]
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        with trainer.accelerator.autocast():
            episodes = sample_episodes(
                model,
                self.tokenizer,
                rows,
                self.ctx.tools,
                self.ctx.config.data.demonstration_field,
                temperature=rl.temperature,
                top_p=rl.top_p,
                max_prompt_tokens=rl.max_prompt_length,
            )
        model.train(was_training)
        return {
            "prompt_ids": [e.prompt_ids for e in episodes],
            "completion_ids": [e.ids for e in episodes],
            "logprobs": None,  # only read for vLLM's importance sampling
            "env_mask": [[0] * len(e.ids) if e.dropped else e.policy_mask for e in episodes],
            "rft_episode": episodes,
        }


class EpisodeReward(GraderReward):
    """The grader on whole episodes (the `rft_episode` column `EpisodeRollout` adds): None for a
    dropped one (TRL: unscorable, advantage 0), the truncation penalty under `rl.truncated:
    penalize` for an episode cut short; the episodes' metrics go on the step's metrics line."""

    def __init__(self, grader: Any, max_error_share: float, keeper: Any = None, **kwargs: Any):
        super().__init__(grader, max_error_share, **kwargs)
        self.grader, self.episode_keeper = grader, keeper
        self._episodes: list[Any] = []

    # TRL's reward functions may return None for a completion they cannot score, which the text
    # grader's reward never does: the narrower signature is the base class's, not TRL's.
    def __call__(  # type: ignore[override]
        self, prompts: list[Any], completions: list[Any], rft_episode: list[Any], **kwargs: Any
    ) -> list[float | None]:
        stats, grades = grade_rollout(self.grader, rft_episode)
        rewards: list[float | None] = [
            None if g is None else self._penalized(float(g.reward), e)
            for e, g in zip(rft_episode, grades, strict=True)
        ]
        self._stats.append(stats)
        self._episodes += rft_episode
        if self.episode_keeper is not None:
            self.episode_keeper(rft_episode, grades, **kwargs)
        self.check_failures(stats)
        return rewards

    def _penalized(self, reward: float, episode: Any) -> float:
        if self.truncation_penalty is not None and episode.end in TRUNCATED_ENDS:
            return self.truncation_penalty
        return reward

    def drain_metrics(self) -> dict[str, Any]:
        metrics = {**super().drain_metrics(), **episode_metrics(self._episodes)}
        self._episodes = []
        return metrics


class EpisodeSampleKeeper:
    """Writes a GRPO step's episodes to RUN/samples/ as transcripts (`episode_lines`)."""

    def __init__(self, ctx: RunContext, tokenizer: Any):
        self.ctx, self.tokenizer = ctx, tokenizer

    def __call__(self, episodes: list[Any], grades: list[Any], **kwargs: Any) -> None:
        state, rl = kwargs.get("trainer_state"), self.ctx.config.rl
        step = int(getattr(state, "global_step", 0)) // optimizer_steps_per_batch(rl) + 1
        if not self.ctx.wants_samples("rl", step):
            return
        rows = [int(r) for r in kwargs.get("rft_row") or []]
        keep = self.ctx.samples.keep(len(episodes), rl.samples_per_prompt)
        self.ctx.keep_samples(
            "rl", step, episode_lines(self.tokenizer, rows, episodes, grades, keep)
        )


@contextlib.contextmanager
def quiet_rollout_hook() -> Iterator[None]:
    """TRL warns that `rollout_func` is experimental on every trainer it builds; rft pins TRL 1.16,
    whose hook this module is tested against."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You are using 'rollout_func'")
        yield
