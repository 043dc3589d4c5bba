"""PPO over multi-turn episodes with tools (issue 26): the loss, advantages and KL live on the
policy's tokens only, GAE runs from turn to turn across the tool results, dropped episodes train
nothing, and the "sampling equals policy" guarantees hold for every turn on every architecture.

Random tiny models seldom write a tool call, so the episodes of the architecture tests read every
turn as a call (`CallEveryTurn`, a parser): the turns are still sampled by the model, and the
tool results and template tokens between them come from the real runner."""

from __future__ import annotations

import json

import pytest
import torch

from rft_cli.episodes import EpisodeLimits, ModelPolicy, run_episodes
from rft_cli.generation import recording_steps
from rft_cli.tiny import TINY_FAMILIES, build_char_tokenizer
from rft_cli.tool_calls import ParsedOutput
from rft_cli.training import ppo_math as pm
from rft_cli.training.episode_rollouts import episode_metrics, episode_rollout
from tests.tool_fakes import FakeToolBox, ScriptedPolicy

TEMPERATURE = 0.7
LIMITS = EpisodeLimits(max_episode_steps=2, max_tokens=60, max_new_tokens=8)
PROMPTS = [
    [{"role": "user", "content": text}] for text in ("ka+mo=?", "a longer one: mo+ka=?", "9")
]


class CallEveryTurn:
    """Reads every turn as a call `lookup(key=<its first two characters>)`: random models' turns
    become multi-turn episodes (the model samples each turn; the runner appends the results)."""

    def parse(self, text, tools=None):
        call = {"name": "lookup", "arguments": json.dumps({"key": text[:2]})}
        return ParsedOutput(text=text, tool_calls=[{"type": "function", "function": call}])


def _stopping_often(model, tokenizer):
    """A random model stops at 40 more ids, so that its turns end (and episodes go on)."""
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, *range(20, 60)]
    return model


class RecordingPolicy(ModelPolicy):
    """The model's policy, keeping the log-probs each turn's tokens were drawn with, by the
    sequence the turn continues (read off the decoding loop, `recording_steps`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.drawn: dict[tuple[int, ...], list[float]] = {}

    def generate(self, sequences, max_new_tokens):
        steps = []
        with recording_steps(
            lambda rows, logits, hidden, tokens: steps.append((rows, logits, tokens))
        ):
            turns = super().generate(sequences, max_new_tokens)
        for i, (sequence, turn) in enumerate(zip(sequences, turns, strict=True)):
            logprobs = []
            for rows, logits, tokens in steps[: len(turn)]:
                at = (rows == i).nonzero()[0, 0]
                logp = torch.log_softmax(logits[at].float() / self.temperature, dim=-1)
                logprobs.append(logp[tokens[at]].item())
            self.drawn[tuple(sequence)] = logprobs
        return turns


def _sampled_episodes(model, tokenizer):
    policy = RecordingPolicy(_stopping_often(model, tokenizer), tokenizer, TEMPERATURE)
    torch.manual_seed(0)
    episodes = run_episodes(
        policy, tokenizer, PROMPTS, [{}] * 3, FakeToolBox(), limits=LIMITS, parser=CallEveryTurn()
    )
    return episodes, policy


def _drawn_logprobs(episode, policy, width):
    """The log-probs each policy token of `episode` was sampled with, at its column (0 elsewhere)."""
    out = torch.zeros(width)
    for start, end in episode.turn_spans():
        drawn = policy.drawn[tuple(episode.prompt_ids + episode.ids[:start])]
        out[start:end] = torch.tensor(drawn[: end - start])
    return out


def _load(folder):
    from rft_cli.config import ModelSettings
    from rft_cli.training.models import load_model, load_tokenizer

    settings = ModelSettings(name=folder, dtype="float32")
    tokenizer = load_tokenizer(settings)
    policy = load_model(settings, tokenizer, seed=0)
    reference = load_model(settings, tokenizer, seed=0, trainable=False)
    return tokenizer, policy, reference


@pytest.mark.slow
@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_kl_is_zero_at_step_one_and_old_logprobs_are_what_each_turn_was_sampled_from(
    family, family_dir
):
    """Multi-turn, on every architecture: the teacher-forced pass PPO takes its old log-probs from
    equals the model's plain forward and the distributions every turn was drawn from, on every
    policy token (tool results and template tokens between turns included in the context, masked
    out of the comparison), and the KL to the reference at step 1 is 0."""
    from rft_cli.training.ppo import ActorCritic

    tokenizer, policy, reference = _load(family_dir(family))
    episodes, sampler = _sampled_episodes(policy, tokenizer)
    assert any(len(e.turn_spans()) >= 2 for e in episodes)  # multi-turn: tool results in between
    rollout = episode_rollout(episodes, tokenizer.pad_token_id, torch.device("cpu"))
    ids, attn, mask = rollout.input_ids, rollout.attention_mask, rollout.response_mask
    width = mask.shape[1]
    assert (
        (rollout.response_attention - mask) > 0
    ).any()  # attended tokens the policy did not write
    ac = ActorCritic(policy, reference, "shared")
    with torch.no_grad():
        old, _, _ = ac.forward(ids, attn, width, TEMPERATURE)
        ref = ac.reference_logprobs(ids, attn, width, TEMPERATURE)
        positions = (attn.cumsum(dim=1) - 1).clamp(min=0)
        logits = policy(input_ids=ids, attention_mask=attn, position_ids=positions).logits
    plain = torch.log_softmax(logits[:, -width - 1 : -1].float() / TEMPERATURE, -1)
    plain = plain.gather(2, ids[:, -width:].unsqueeze(-1)).squeeze(-1)
    drawn = torch.stack([_drawn_logprobs(e, sampler, width) for e in episodes])
    assert ((old - ref) * mask).abs().max().item() <= 1e-6
    assert ((old - plain) * mask).abs().max().item() <= 1e-5
    assert ((old - drawn) * mask).abs().max().item() <= 1e-5, ((old - drawn) * mask).abs().max()


# -- GAE across turns -------------------------------------------------------------------------


def test_gae_runs_from_a_turn_to_the_next_across_the_tool_tokens():
    """The story: `compute_gae` zeroes the value of every position off the mask, so a turn's last
    token would bootstrap from V = 0 (the template token after it) as if the episode had ended
    there. Over an episode the next state is the next turn's first token."""
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 9.0, 9.0, 0.3, 0.2, 9.0]])
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]])
    advantages, returns = pm.compute_episode_gae(rewards, values, mask, 1.0, 1.0)
    # gamma = lambda = 1: every policy token's advantage is the final reward minus its own value
    expected = (1.0 - values) * mask
    assert torch.allclose(advantages, expected)
    assert torch.allclose(returns, mask)
    naive, _ = pm.compute_gae(rewards, values, mask, 1.0, 1.0)
    assert not torch.allclose(naive, expected)  # what the single-answer GAE computes here


def test_episode_gae_equals_gae_over_the_packed_policy_tokens():
    torch.manual_seed(0)
    mask = (torch.rand(4, 12) > 0.4).float()
    rewards, values = torch.randn(4, 12) * mask, torch.randn(4, 12)
    advantages, returns = pm.compute_episode_gae(rewards, values, mask, 0.9, 0.8)
    for row in range(4):
        keep = mask[row].bool()
        packed = pm.compute_gae(
            rewards[row][keep][None],
            values[row][keep][None],
            torch.ones(1, int(keep.sum())),
            0.9,
            0.8,
        )
        assert torch.allclose(advantages[row][keep], packed[0][0], atol=1e-6)
        assert torch.allclose(returns[row][keep], packed[1][0], atol=1e-6)
        assert (advantages[row][~keep] == 0).all() and (returns[row][~keep] == 0).all()


def test_episode_gae_of_single_answers_is_gae_bit_for_bit():
    torch.manual_seed(1)
    lengths = torch.tensor([5, 1, 7, 3])
    mask = (torch.arange(8)[None] < lengths[:, None]).float()
    rewards, values = torch.randn(4, 8) * mask, torch.randn(4, 8)
    for got, want in zip(
        pm.compute_episode_gae(rewards, values, mask, 1.0, 0.95),
        pm.compute_gae(rewards, values, mask, 1.0, 0.95),
        strict=True,
    ):
        assert torch.equal(got, want)


def test_a_dropped_episode_takes_no_share_of_the_answer_weights():
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
    weights = pm.loss_weights(mask, "answer")
    assert weights.sum().item() == pytest.approx(1.0)
    assert weights[1].sum() == 0 and weights[0].sum().item() == pytest.approx(0.5)


# -- the rollout's tensors ----------------------------------------------------------------------

CALL = '<tool_call>{{"name": "{name}", "arguments": {{"key": "{key}"}}}}</tool_call>'


def _scripted_episodes():
    tokenizer = build_char_tokenizer()
    script = {
        "ka+mo=?": [
            CALL.format(name="lookup", key="ka"),
            CALL.format(name="lookup", key="mo"),
            "#### 59",
        ],
        "zz?": [CALL.format(name="fail", key="zz")],
        "cut?": ["no end" + ScriptedPolicy.NO_STOP],
    }
    episodes = run_episodes(
        ScriptedPolicy(tokenizer, script, "<|assistant|>"),
        tokenizer,
        [[{"role": "user", "content": k}] for k in script],
        [{}] * 3,
        FakeToolBox(),
        limits=EpisodeLimits(max_new_tokens=80),
    )
    return tokenizer, episodes


def test_an_episode_rollout_attends_to_everything_and_trains_only_the_policy_s_tokens():
    tokenizer, episodes = _scripted_episodes()
    answered, dropped, cut = episodes
    assert (answered.end, dropped.end, cut.end) == ("answer", "dropped", "truncated")
    rollout = episode_rollout(episodes, tokenizer.pad_token_id, torch.device("cpu"))
    for row, e in enumerate(episodes):
        real = rollout.attention_mask[row].bool()
        assert rollout.input_ids[row][real].tolist() == e.prompt_ids + e.ids
        assert rollout.response_attention[row].sum().item() == len(e.ids)
    assert rollout.response_mask[0, : len(answered.ids)].tolist() == answered.policy_mask
    assert 0 in answered.policy_mask  # tool results and template tokens between the turns
    assert rollout.response_mask[1].sum() == 0  # dropped: nothing to train on
    assert rollout.graded.tolist() == [True, False, True]
    assert rollout.truncated.tolist() == [False, False, True]
    assert rollout.texts[0] == "#### 59"


def test_episode_metrics_count_calls_errors_tokens_and_drops():
    _, episodes = _scripted_episodes()
    metrics = episode_metrics(episodes)
    assert metrics["tool_calls_per_episode"] == pytest.approx(3 / 3)  # two lookups, one failed call
    assert metrics["episodes_dropped"] == 1.0
    assert metrics["tokens_per_episode"] == pytest.approx(sum(len(e.ids) for e in episodes) / 3)
    assert metrics["policy_tokens_per_episode"] == pytest.approx(
        sum(sum(e.policy_mask) for e in episodes) / 3
    )


# -- a PPO step over episodes -------------------------------------------------------------------

ROWS = [
    {"messages": [{"role": "user", "content": "ka+mo=?"}], "answer": "#### 59"},
    {"messages": [{"role": "user", "content": "zz?"}], "answer": "#### 0"},
    {"messages": [{"role": "user", "content": "mo+ka=?"}], "answer": "#### 59"},
]
SCRIPT = {
    "ka+mo=?": [
        CALL.format(name="lookup", key="ka"),
        CALL.format(name="lookup", key="mo"),
        "#### 59",
    ],
    "zz?": [CALL.format(name="fail", key="zz")],
    "mo+ka=?": [CALL.format(name="lookup", key="mo"), "#### 42"],
}


def _episode_trainer(tmp_path, monkeypatch, rows=ROWS, script=SCRIPT):
    """A PPOTrainer on the tiny llama whose episodes are scripted (calls, results, a dropped one)."""
    from pathlib import Path

    from rft_cli import episodes as episodes_module
    from rft_cli.config import load_run_config
    from rft_cli.graders.build import build_from_dict
    from rft_cli.run_folder.metrics import NullLogger
    from rft_cli.training.context import RunContext
    from rft_cli.training.episode_rollouts import ToolSetup
    from rft_cli.training.models import load_model, load_tokenizer
    from rft_cli.training.ppo import PPOTrainer

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny-test.yaml"
    config = load_run_config(
        recipe,
        [
            "sft.enabled=false",
            "rl.prompts_per_step=3",
            "rl.samples_per_prompt=1",
            "rl.mini_batch_size=3",
            "rl.max_new_tokens=80",
        ],
    )
    tokenizer = load_tokenizer(config.model)
    monkeypatch.setattr(
        episodes_module,
        "ModelPolicy",
        lambda model, tok, *a, **k: ScriptedPolicy(tok, script, "<|assistant|>"),
    )
    grader = build_from_dict(
        {
            "type": "string_check",
            "input": "{{ sample.output_text }}",
            "reference": "{{ item.answer }}",
            "operation": "eq",
        }
    )
    setup = ToolSetup(FakeToolBox(), EpisodeLimits(4, 400, 80))
    ctx = RunContext(config, tmp_path, list(rows), [], grader, NullLogger(), tools=setup)
    policy = load_model(config.model, tokenizer)
    reference = load_model(config.model, tokenizer, trainable=False)
    return PPOTrainer(ctx, policy, reference, tokenizer)


def _capture_update(trainer, monkeypatch):
    seen = {}
    update = trainer._update

    def capture(batch, step):
        seen.update(batch)
        with torch.no_grad():  # the policy's own forward, before the update moves it
            seen["forward"], _, _ = trainer.ac.forward(
                batch["input_ids"],
                batch["attention_mask"],
                batch["mask"].shape[1],
                trainer.cfg.temperature,
            )
        return update(batch, step)

    monkeypatch.setattr(trainer, "_update", capture)
    return seen


@pytest.mark.slow
def test_a_ppo_step_trains_the_policy_s_tokens_of_the_graded_episodes_only(tmp_path, monkeypatch):
    trainer = _episode_trainer(tmp_path, monkeypatch)
    batch = _capture_update(trainer, monkeypatch)
    record = trainer.step(1)
    mask = batch["mask"]
    policy_rows = mask.sum(dim=1)
    assert sorted(policy_rows.gt(0).tolist()) == [
        False,
        True,
        True,
    ]  # the dropped episode: no token
    attended = batch["attention_mask"][:, -mask.shape[1] :]
    assert ((attended - mask) > 0).any()  # tool results are attended to, not trained
    for key in ("advantages", "returns", "old_logprobs", "old_values"):
        assert (batch[key][mask == 0] == 0).all(), key
    # old log-probs: the policy's own forward over the episode, on its tokens (the ratio starts at 1)
    assert torch.allclose(batch["old_logprobs"], batch["forward"] * mask, atol=1e-6)
    assert (
        abs(record["kl"]) <= 1e-6 and abs(record["kl_sum"]) <= 1e-6
    )  # reference = policy at step 1
    assert record["episodes_dropped"] == 1.0
    assert record["tool_calls_per_episode"] == pytest.approx((2 + 1 + 1) / 3)
    assert record["train_reward_mean"] == pytest.approx(
        0.5
    )  # one of the two graded episodes is right
    assert record["truncated_share"] == 0.0 and "policy_loss" in record


@pytest.mark.slow
def test_a_step_whose_episodes_were_all_dropped_stops_the_run(tmp_path, monkeypatch):
    from rft_cli.errors import TrainingError

    rows = [{"messages": [{"role": "user", "content": f"zz{i}?"}], "answer": "x"} for i in range(3)]
    script = {f"zz{i}?": [CALL.format(name="fail", key="zz")] for i in range(3)}
    trainer = _episode_trainer(tmp_path, monkeypatch, rows, script)
    with pytest.raises(TrainingError, match="every episode was dropped .*HTTP 503"):
        trainer.step(1)


@pytest.mark.slow
def test_unreadable_calls_the_policy_writes_are_counted_and_do_not_stop_the_run(
    tmp_path, monkeypatch
):
    """Tool calls the policy writes that cannot be read are the policy's doing, not the grader
    failing: they are counted (`grader_errors/tool_call_parse_error`), the step trains, and
    `rl.max_grader_error_share` does not stop the run. (The lookup recipe, 10 warm-up epochs, seed
    3, stopped at step 35 with "fix the grader" when 39 of 64 episodes wrote one; its step-30 model
    was right on 99% of the validation rows.)"""
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}?"}], "answer": "#### 1"} for i in range(3)
    ]
    unclosed = '<tool_call>{"name": "lookup", "arguments": {"key": "ka"'
    script = {f"q{i}?": [unclosed, "#### 1"] for i in range(3)}
    trainer = _episode_trainer(tmp_path, monkeypatch, rows, script)
    record = trainer.step(1)
    assert record["grader_errors/tool_call_parse_error"] == 3
    assert record["grader_error_share"] == 0.0 and "policy_loss" in record
