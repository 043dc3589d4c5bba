"""The multi-turn warm-up (issue 26): with tools, a demonstration is an episode, tokenized as the
episode runner builds one, with the loss on every assistant turn and none on tool results or
template tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rft_cli.data.records import _template_message, episode_prompt_messages, episode_turns
from rft_cli.episodes import EpisodeLimits, demonstration_ids, run_episodes
from rft_cli.tiny import build_char_tokenizer
from rft_cli.training.sft import EpisodeSFTEncoder, SFTEncoder
from tests.tool_fakes import FakeToolBox, ScriptedPolicy

LOOKUP = Path(__file__).resolve().parents[1] / "data" / "lookup"
LOOKUP_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"key": {"type": "string"}}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "total",
            "parameters": {
                "type": "object",
                "properties": {"keys": {"type": "array", "items": {"type": "string"}}},
            },
        },
    },
]


def _lookup_rows(n=6):
    with (LOOKUP / "train.jsonl").open() as handle:
        return [json.loads(next(handle)) for _ in range(n)]


def test_the_warm_up_trains_every_assistant_turn_of_a_demonstrated_episode():
    """The tiny template marks assistant turns with {% generation %}: the warm-up's labels are the
    demonstration's tokens exactly where that mask is 1 (each call turn and the answer, with their
    stop tokens), and -100 on the prompt, the tool results and the template tokens."""
    tokenizer = build_char_tokenizer()
    rows = _lookup_rows()
    encode = EpisodeSFTEncoder(rows, tokenizer, "solution", 4096, LOOKUP_TOOLS)
    for index, row in enumerate(rows):
        conversation = [_template_message(m) for m in row["messages"]]
        want = tokenizer.apply_chat_template(
            conversation, tools=LOOKUP_TOOLS, return_dict=True, return_assistant_tokens_mask=True
        )
        got = encode(index)
        assert got["input_ids"] == want["input_ids"]
        assert got["labels"] == [
            t if m else -100
            for t, m in zip(want["input_ids"], want["assistant_masks"], strict=True)
        ]
        turns = sum(1 for m in row["messages"] if m["role"] == "assistant")
        trained = tokenizer.decode([t for t in got["labels"] if t != -100])
        assert trained.count("<|end|>") == turns >= 2  # a call per key (or one `total`), the answer


def test_the_single_answer_warm_up_trained_the_last_turn_only():
    """The story: before, a demonstrated episode was a prompt (the calls and results in it) and its
    last assistant message: the calls, the behaviour RL starts from, carried no loss."""
    tokenizer = build_char_tokenizer()
    rows = _lookup_rows(1)
    old = SFTEncoder(rows, tokenizer, "solution", 4096)(0)
    new = EpisodeSFTEncoder(rows, tokenizer, "solution", 4096, LOOKUP_TOOLS)(0)
    trained = [tokenizer.decode([t for t in e["labels"] if t != -100]) for e in (old, new)]
    assert "<tool_call>" not in trained[0] and trained[1].count("<tool_call>") >= 2


def test_a_demonstration_is_the_episode_that_replays_it_under_chatml():
    """ChatML has no {% generation %} markers and puts a newline after each <|im_end|> that the
    model never writes: the demonstration's tokens and mask equal those of the runner's episode
    that replays its turns (the newline is template, not policy)."""
    from tests.hub_like import TOOLS_CHATML_TEMPLATE, build_bpe_tokenizer

    tokenizer = build_bpe_tokenizer()
    tokenizer.chat_template = TOOLS_CHATML_TEMPLATE
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"key": "ka"}'},
    }
    row = {
        "messages": [
            {"role": "user", "content": "ka?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "17"},
            {"role": "assistant", "content": "It is 17."},
        ]
    }
    prompt, turns = episode_prompt_messages(row), episode_turns(row)
    box = FakeToolBox()
    tools = box.tool_definitions()
    stop = {tokenizer.eos_token_id}
    ids, mask = demonstration_ids(tokenizer, prompt, turns, tools, stop)
    # the scripted policy writes each assistant turn as the template renders it
    rendered = tokenizer.decode(ids)
    opening = "<|im_start|>assistant\n"
    script = {"ka?": [t.split("<|im_end|>")[0] for t in rendered.split(opening)[1:]]}
    (episode,) = run_episodes(
        ScriptedPolicy(tokenizer, script, "<|im_start|>assistant"),
        tokenizer,
        [prompt],
        [{}],
        box,
        limits=EpisodeLimits(max_new_tokens=200),
    )
    assert episode.end == "answer"
    assert episode.prompt_ids + episode.ids == ids
    assert [0] * len(episode.prompt_ids) + episode.policy_mask == mask
    assert (
        "\n"
        not in tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m]).split(
            "<|im_end|>"
        )[-1]
    )


def test_a_template_that_rewrites_earlier_turns_cannot_make_a_demonstration():
    from rft_cli.errors import ConfigError

    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] + ':' + (m['content'] if loop.last else 'x') }}{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    with pytest.raises(ConfigError, match="renders earlier turns differently"):
        demonstration_ids(
            tokenizer,
            [{"role": "user", "content": "q"}],
            [{"role": "assistant", "content": "a"}],
            None,
            {tokenizer.eos_token_id},
        )
