"""`rft train` over episodes with tools, end to end on the tiny model and the built-in lookup task
(its python tool in the sandbox): the run folder, the episodes' metrics and samples, and a run
stopped mid-way and resumed that writes what an uninterrupted run writes (issue 26).

A random tiny model seldom writes a tool call or ends a turn, so every turn is read as a call
(`CallEveryTurn`) and the model stops at 40 more ids: episodes of several sampled turns, each
answered by the real tool (mostly with its KeyError, shown to the model as an error)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rft_cli.config import load_run_config
from rft_cli.graders.base import Grader, GradeResult
from rft_cli.run_folder.metrics import read_metrics
from rft_cli.tool_calls import ParsedOutput
from rft_cli.training.run import train
from tests.test_ppo_episodes import CallEveryTurn
from tests.test_train_e2e import _interrupt_at, without_timing

pytestmark = pytest.mark.slow

LOOKUP = Path(__file__).resolve().parents[1] / "data" / "lookup"
EPISODE_METRICS = {
    "tool_calls_per_episode",
    "tool_errors_per_episode",
    "tool_error_share",
    "tokens_per_episode",
    "policy_tokens_per_episode",
    "episodes_dropped",
}


def _recipe(tmp_path: Path) -> Path:
    for name in ("lookup.py", "grader.yaml"):
        shutil.copy(LOOKUP / name, tmp_path / name)
    for name, n in (("train.jsonl", 24), ("valid.jsonl", 4)):
        lines = (LOOKUP / name).read_text().splitlines()[:n]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    recipe = {
        "model": {"tiny": "llama-test"},
        "data": {"train": "train.jsonl", "valid": "valid.jsonl"},
        "grader": "grader.yaml",
        "tools": [
            {"name": "lookup", "python": "lookup.py"},
            {"name": "total", "python": "lookup.py"},
        ],
        "episode": {"max_episode_steps": 2, "max_tokens": 60},
        "sft": {"max_steps": 2, "batch_size": 4, "learning_rate": 0.003, "max_length": 160},
        "rl": {
            "steps": 4,
            "prompts_per_step": 2,
            "samples_per_prompt": 2,
            "mini_batch_size": 2,
            "ppo_epochs": 1,
            "learning_rate": 0.001,
            "max_new_tokens": 8,
            "max_prompt_length": 64,
        },
        "eval": {"interval": 2, "samples": 2},
        "samples": {"interval": 1},
        "save_interval": 3,
        "seed": 0,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    return path


@pytest.fixture
def multi_turn(monkeypatch):
    """Every turn a call, and turns that end: episodes of several sampled turns."""
    from rft_cli import generation
    from rft_cli.training import episode_rollouts

    stops = generation.stop_token_ids
    monkeypatch.setattr(episode_rollouts, "output_parser", lambda tokenizer: CallEveryTurn())
    monkeypatch.setattr(
        generation, "stop_token_ids", lambda model, tok: [*stops(model, tok), *range(20, 60)]
    )


def _run(tmp_path: Path, name: str, **kwargs):
    config = load_run_config(_recipe(tmp_path))
    return train(config, output_dir=tmp_path / name, **kwargs)


def test_a_run_over_episodes_logs_tools_and_keeps_whole_episodes(tmp_path, multi_turn):
    result = _run(tmp_path, "run")
    records = read_metrics(result.run_dir / "metrics.jsonl")
    rl = [r for r in records if r["stage"] == "rl"]
    assert [r["step"] for r in rl] == [1, 2, 3, 4]
    for record in rl:
        assert EPISODE_METRICS <= set(record), EPISODE_METRICS - set(record)
    assert all(r["tool_calls_per_episode"] > 0 for r in rl)  # the tool ran in every step
    assert all(r["tool_errors_per_episode"] > 0 for r in rl)  # the KeyErrors the model read
    assert "valid_tool_calls_per_episode" in rl[1]
    kept = [
        json.loads(line) for line in (result.run_dir / "samples" / "rl-step-0000001.jsonl").open()
    ]
    line = max(kept, key=lambda k: k["episode"]["tool_calls"])
    turns = line["turns"]
    assert [t["role"] for t in turns[:2]] == ["assistant", "tool"]
    assert turns[1]["content"].startswith("error: KeyError")
    assert line["episode"]["tool_calls"] >= sum(t["role"] == "tool" for t in turns) >= 1


def test_ctrl_c_then_resume_writes_what_an_uninterrupted_run_writes(tmp_path, multi_turn):
    """Tools are deterministic here (python), and the trace id an endpoint receives is random but
    reaches nothing that trains; a resumed run samples the same episodes from step 3 on."""
    full = _run(tmp_path, "full")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "cut", progress=_interrupt_at("rl", 2))
    cut = tmp_path / "cut"
    assert (cut / "checkpoints" / "step-2" / "rft_meta.json").is_file()
    _run(tmp_path, "cut", resume=True)
    expected = without_timing(read_metrics(full.run_dir / "metrics.jsonl"))
    assert without_timing(read_metrics(cut / "metrics.jsonl")) == expected
    assert any(r.get("tool_calls_per_episode", 0) > 0 for r in expected if r.get("step", 0) > 2)
    for name in ("rl-step-0000003.jsonl", "rl-step-0000004.jsonl"):
        assert (cut / "samples" / name).read_text() == (full.run_dir / "samples" / name).read_text()


class WholeTurnCalls:
    """Reads every turn as a call `lookup(key=<the whole turn>)`."""

    def parse(self, text, tools=None):
        call = {"name": "lookup", "arguments": json.dumps({"key": text})}
        return ParsedOutput(text=text, tool_calls=[{"type": "function", "function": call}])


class KsAfterAToolResult(Grader):
    """Reward = the share of "k" in every turn but the first (each read as a call): tokens the
    policy samples after a tool's result and the template's tokens, so advantages, masks or GAE
    that put the credit anywhere else leave the reward flat."""

    name = "ks_after_a_result"

    def grade(self, sample, item):
        keys = ""
        for call in sample["output_tools"][1:]:
            arguments = call["function"]["arguments"]
            if isinstance(arguments, str):
                arguments = json.loads(arguments)
            keys += str(arguments.get("key", ""))
        return GradeResult(reward=keys.count("k") / len(keys) if keys else 0.0)


def test_ppo_over_episodes_raises_the_reward_it_is_given(tmp_path, multi_turn, monkeypatch):
    """The episode counterpart of test_train_e2e's single-answer test: a reward only the second
    and later turns of an episode can earn rises."""
    from rft_cli.training import episode_rollouts

    monkeypatch.setattr(episode_rollouts, "output_parser", lambda tokenizer: WholeTurnCalls())
    overrides = [
        "sft.enabled=false",
        "grader_check.enabled=false",
        "episode.max_episode_steps=3",
        "episode.max_tokens=240",
        "rl.steps=40",
        "rl.learning_rate=0.02",
        "rl.prompts_per_step=8",
        "rl.samples_per_prompt=4",
        "rl.mini_batch_size=16",
        "eval.interval=1000",
        "save_interval=1000",
    ]
    config = load_run_config(_recipe(tmp_path), overrides)
    records = []
    train(
        config,
        output_dir=tmp_path / "run",
        grader=KsAfterAToolResult(),  # "k": not one of the ids multi_turn makes stop a turn
        progress=records.append,
    )
    rl = [r for r in records if r["stage"] == "rl"]
    assert min(r["tool_calls_per_episode"] for r in rl) > 1  # every step had second calls
    rewards = [r["train_reward_mean"] for r in rl]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.05, rewards
