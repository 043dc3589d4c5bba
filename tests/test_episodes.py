"""The episode runner: turns, tool calls, tool results through the chat template, and the ends.

Protocol tests run a scripted policy (`tests/tool_fakes.ScriptedPolicy`, exact texts as tokens)
over the tiny character tokenizer, whose tokenization is unique, so "the tokens are the rendered
conversation" can be checked exactly, and over the hub-like ChatML tokenizer (byte-level BPE, a
"\\n" after each <|im_end|>). One slow test samples with a real tiny model."""

from __future__ import annotations

import pytest

from rft_cli.episodes import ENDS, EpisodeLimits, continuation_ids, run_episodes
from rft_cli.tiny import build_char_tokenizer
from tests.tool_fakes import FakeToolBox, ScriptedPolicy

CALL = '<tool_call>{{"name": "{name}", "arguments": {{"key": "{key}"}}}}</tool_call>'


def call(key, name="lookup"):
    return CALL.format(name=name, key=key)


def user(text):
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def char_tokenizer():
    return build_char_tokenizer()


def run(tokenizer, script, limits=None, toolbox=None, opening="<|assistant|>", **kwargs):
    policy = ScriptedPolicy(tokenizer, script, opening)
    box = toolbox or FakeToolBox()
    prompts = [user(key) for key in script]
    items = [{"n": i} for i in range(len(prompts))]
    episodes = run_episodes(
        policy, tokenizer, prompts, items, box, limits=limits or EpisodeLimits(), **kwargs
    )
    return episodes, policy, box


def test_an_episode_s_tokens_are_the_rendered_conversation_and_the_mask_marks_the_policy_s(
    char_tokenizer,
):
    turns = [call("ka"), call("mo"), "17+42=59. #### 59"]
    (episode,), policy, box = run(char_tokenizer, {"ka+mo=?": turns})
    assert (episode.end, episode.final_text, episode.steps, episode.tool_calls) == (
        "answer",
        "17+42=59. #### 59",
        3,
        2,
    )
    rendered = char_tokenizer.apply_chat_template(
        episode.transcript(), tools=episode.tools, tokenize=False
    )
    assert char_tokenizer.decode(episode.prompt_ids + episode.ids) == rendered
    # The policy's tokens are exactly the turns it wrote (each with its stop token), in order.
    sampled = [t for _, _, answered in policy.calls for turn in answered for t in turn]
    assert [t for t, m in zip(episode.ids, episode.policy_mask, strict=True) if m] == sampled
    spans = [char_tokenizer.decode(episode.ids[a:b]) for a, b in episode.turn_spans()]
    assert spans == [f"{t}<|end|>" for t in turns]
    # Between the turns: the tool's result as a tool turn, and the next assistant opening.
    gaps = char_tokenizer.decode(
        [t for t, m in zip(episode.ids, episode.policy_mask, strict=True) if not m]
    )
    assert gaps == "<|tool|>17<|end|><|assistant|><|tool|>42<|end|><|assistant|>"
    # Each turn was generated from exactly the tokens recorded before it.
    assert [seqs[0] for seqs, _, _ in policy.calls] == [
        episode.prompt_ids + episode.ids[:start] for start, _ in episode.turn_spans()
    ]


def test_the_grader_s_sample_holds_the_answer_the_calls_and_the_facts(char_tokenizer):
    (episode,), _, box = run(char_tokenizer, {"Q?": [call("ka") + call("zz"), "done"]})
    assert episode.sample() == {
        "output_text": "done",
        "output_tools": [
            {"type": "function", "function": {"name": "lookup", "arguments": '{"key": "ka"}'}},
            {"type": "function", "function": {"name": "lookup", "arguments": '{"key": "zz"}'}},
        ],
        "episode": {
            "tool_calls": 2,
            "steps": 2,
            "tool_errors": 1,
            "tool_error_kinds": {"tool_exception": 1},
            "tokens": len(episode.ids),
            "policy_tokens": episode.policy_tokens,
            "end": "answer",
            "dropped": False,
        },
    }
    assert [m["content"] for m in episode.messages if m["role"] == "tool"] == [
        "17",
        "error: KeyError: 'zz'",
    ]
    assert [(r.call_id, r.item, r.trace_id) for r in box.requests] == [
        ("call00001", {"n": 0}, episode.trace_id),
        ("call00002", {"n": 0}, episode.trace_id),
    ]


def test_the_token_budget_ends_an_episode_before_a_result_that_would_pass_it(char_tokenizer):
    script = {"Q?": [call("ka"), "17. #### 17"]}
    (full,), _, _ = run(char_tokenizer, script)
    first_turn = full.turn_spans()[0][1]
    # Room for the first turn, not for the tool's result after it.
    (episode,), _, box = run(char_tokenizer, script, EpisodeLimits(max_tokens=first_turn + 3))
    assert episode.end == "max_tokens" and len(episode.ids) == first_turn
    assert (
        episode.tool_calls == 1 and len(box.requests) == 1
    )  # the call ran; its result did not fit
    # Room for the result but not for one more token: the episode ends there too (a turn needs one).
    second_turn = full.turn_spans()[1][0]
    (episode,), policy, _ = run(char_tokenizer, script, EpisodeLimits(max_tokens=second_turn))
    assert episode.end == "max_tokens" and len(episode.ids) == first_turn and len(policy.calls) == 1
    # A budget inside the first turn cuts the turn itself: never more tokens than the budget.
    (episode,), policy, _ = run(char_tokenizer, script, EpisodeLimits(max_tokens=20))
    assert episode.end == "max_tokens" and len(episode.ids) == 20 and policy.calls[0][1] == 20
    assert episode.tool_calls == 0


def test_a_turn_cut_at_max_new_tokens_is_truncated(char_tokenizer):
    (episode,), _, _ = run(
        char_tokenizer, {"Q?": ["a long answer"]}, EpisodeLimits(max_new_tokens=5)
    )
    assert episode.end == "truncated" and episode.ids == char_tokenizer.encode(
        "a lon", add_special_tokens=False
    )


def test_max_episode_steps_caps_the_calls_run(char_tokenizer):
    script = {"Q?": [call("ka") + call("mo") + call("ka"), call("mo"), "late answer"]}
    (episode,), _, box = run(char_tokenizer, script, EpisodeLimits(max_episode_steps=2))
    # Two calls run; the third of the same turn is answered "not run"; the next call ends the episode.
    assert [r.arguments for r in box.requests] == ['{"key": "ka"}', '{"key": "mo"}']
    tool_texts = [m["content"] for m in episode.messages if m["role"] == "tool"]
    assert tool_texts == [
        "17",
        "42",
        "error: not run: this episode may make 2 tool calls (max_episode_steps)",
    ]
    assert (episode.end, episode.tool_calls, episode.steps, episode.final_text) == (
        "max_steps",
        2,
        2,
        "",
    )


def test_a_failing_tool_drops_the_episode_and_an_unoffered_one_is_shown_as_unknown(char_tokenizer):
    script = {"first?": [call("ka", "fail"), "never"], "second?": [call("ka", "search"), "ok"]}
    (failed, unknown), _, box = run(char_tokenizer, script)
    assert (
        failed.end == "dropped"
        and failed.dropped
        and failed.drop_reason == "tool_server_error: HTTP 503 (after 4 attempts)"
    )
    assert failed.sample()["episode"]["dropped"] is True
    assert unknown.end == "answer" and unknown.tool_errors == {"tool_unknown": 1}
    assert "there is no tool named 'search' (tools: lookup, fail)" in unknown.messages[1]["content"]
    assert [r.name for r in box.requests] == ["fail"]  # an unoffered tool is never called


def test_an_unreadable_call_is_counted_and_ends_the_turn_as_an_answer(char_tokenizer):
    (episode,), _, box = run(char_tokenizer, {"Q?": ['<tool_call>{"name": lookup}</tool_call>']})
    assert (episode.end, episode.parse_errors, episode.tool_calls, box.requests) == (
        "answer",
        1,
        0,
        [],
    )


def test_live_episodes_are_generated_together_and_come_back_in_order(char_tokenizer):
    script = {"Q1?": ["1"], "Q2?": [call("ka"), "2"], "Q3?": [call("ka"), call("mo"), "3"]}
    episodes, policy, _ = run(char_tokenizer, script)
    assert [e.final_text for e in episodes] == ["1", "2", "3"]
    assert [len(seqs) for seqs, _, _ in policy.calls] == [
        3,
        2,
        1,
    ]  # one batch per step, ended ones leave
    episodes, policy, _ = run(char_tokenizer, script, batch_size=2)
    assert [len(seqs) for seqs, _, _ in policy.calls] == [2, 1, 2, 1]


def test_rows_tools_win_over_the_toolbox_s(char_tokenizer):
    only = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"key": {"type": "string"}}},
            },
        }
    ]
    (episode,), _, box = run(char_tokenizer, {"Q?": [call("ka", "fail"), "x"]}, tools=[only])
    assert episode.tool_errors == {"tool_unknown": 1} and box.requests == []
    assert char_tokenizer.decode(episode.prompt_ids).startswith(
        "<|system|>tools: lookup(key)<|end|>"
    )


def test_chatml_s_newline_after_the_turn_is_template_not_policy():
    """ChatML ends a turn with <|im_end|> and a newline the model never writes: the newline is a
    template token between the policy's stop token and the tool's turn."""
    from tests.hub_like import TOOLS_CHATML_TEMPLATE, build_bpe_tokenizer

    tokenizer = build_bpe_tokenizer()
    tokenizer.chat_template = TOOLS_CHATML_TEMPLATE
    (episode,), policy, _ = run(
        tokenizer, {"ka?": [call("ka"), "It is 17."]}, opening="<|im_start|>assistant"
    )
    assert episode.end == "answer" and episode.final_text == "It is 17."
    first, second = episode.turn_spans()
    gap = tokenizer.decode(episode.ids[first[1] : second[0]])
    assert (
        gap
        == "\n<|im_start|>user\n<tool_response>\n17\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.decode(episode.ids[first[0] : first[1]]).endswith("</tool_call><|im_end|>")


def test_a_template_that_rewrites_earlier_turns_is_a_config_error(char_tokenizer):
    from rft_cli.errors import ConfigError

    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] + ':' + (m['content'] if loop.last else 'x') }}{% endfor %}"
    conversation = [*user("q"), {"role": "assistant", "content": "a"}]
    with pytest.raises(ConfigError, match="renders earlier turns differently"):
        continuation_ids(
            tokenizer,
            conversation,
            [{"role": "tool", "content": "r"}],
            None,
            tokenizer.eos_token_id,
        )


# --- the tiny model's template: tools added, nothing else changed ---------------------------------

OLD_TINY_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>' }}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def test_the_tiny_template_renders_every_shipped_row_without_tools_as_before(char_tokenizer):
    from pathlib import Path

    from rft_cli.data.records import iter_rows, prompt_messages

    old = build_char_tokenizer()
    old.chat_template = OLD_TINY_TEMPLATE
    files = sorted(Path("data").rglob("*.jsonl"))
    checked = 0
    for path in files:
        for _, row in list(iter_rows(path))[:50]:
            if "tools" in row or any(
                "tool_calls" in m or m["role"] == "tool" for m in row["messages"]
            ):
                continue  # rows with tools, calls or results: the old template could not render them
            for messages, opening in ((prompt_messages(row), True), (row["messages"], False)):
                if any(not isinstance(m.get("content"), str) for m in messages):
                    continue
                new_ids = char_tokenizer.apply_chat_template(
                    messages, add_generation_prompt=opening
                )
                assert new_ids == old.apply_chat_template(messages, add_generation_prompt=opening)
                checked += 1
    assert checked > 100


# --- a real model ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_tiny_model_runs_episodes_with_a_python_tool(tmp_path, char_tokenizer):
    """Sampling (not scripted): the invariants hold for whatever a random tiny model writes, and
    greedy episodes are reproducible."""
    from rft_cli.config import ToolSettings
    from rft_cli.episodes import ModelPolicy
    from rft_cli.tiny import build_tiny_model
    from rft_cli.tools import load_toolbox

    (tmp_path / "t.py").write_text('def lookup(key: str) -> str:\n    return "17"\n')
    model = build_tiny_model(char_tokenizer, "llama-test", seed=3)
    prompts = [user(f"k{i}+mo=?") for i in range(3)]
    limits = EpisodeLimits(max_tokens=60, max_new_tokens=25)
    with load_toolbox([ToolSettings(name="lookup", python=tmp_path / "t.py")]) as box:
        runs = [
            run_episodes(
                ModelPolicy(model, char_tokenizer),
                char_tokenizer,
                prompts,
                [{}] * 3,
                box,
                limits=limits,
            )
            for _ in range(2)
        ]
        sampled = run_episodes(
            ModelPolicy(model, char_tokenizer, temperature=1.0),
            char_tokenizer,
            prompts,
            [{}] * 3,
            box,
            limits=limits,
            seed=1,
        )
    assert [e.ids for e in runs[0]] == [e.ids for e in runs[1]]
    for episode in runs[0] + sampled:
        assert episode.end in ENDS and episode.end != "dropped"
        assert len(episode.ids) == len(episode.policy_mask) <= 60
        assert all(b - a <= 25 for a, b in episode.turn_spans())


# --- grading the episode --------------------------------------------------------------------------


def test_graders_read_the_episode_s_answer_calls_and_facts(char_tokenizer):
    from rft_cli.episodes import grade_episodes
    from rft_cli.graders import build_grader

    script = {
        "Q1?": [call("ka"), call("mo"), "#### 59"],
        "Q2?": [call("ka") + call("mo"), "#### 59"],
        "Q3?": [call("ka", "fail"), "x"],
        "Q4?": ['<tool_call>{"name": lookup}</tool_call>#### 59'],
    }
    episodes, _, _ = run(char_tokenizer, script)
    for e in episodes:
        e.item = {"answer": "59"}
    economy = """
def grade(sample, item):
    facts = sample["episode"]
    right = sample["output_text"].endswith(item["answer"])
    return float(right) * (1.0 if facts["tool_calls"] <= 2 and facts["steps"] <= 2 else 0.5)
"""
    spec = {
        "type": "multi",
        "graders": {
            "answer": {
                "type": "string_check",
                "input": "{{ sample.output_text }}",
                "reference": "#### {{ item.answer }}",
                "operation": "eq",
            },
            "calls": {
                "type": "string_check",
                "input": "{{ sample.episode.tool_calls }}",
                "reference": "2",
                "operation": "eq",
            },
            "first": {
                "type": "string_check",
                "input": "{{ sample.output_tools[0].function.arguments }}",
                "reference": '{"key": "ka"}',
                "operation": "eq",
            },
            "economy": {"type": "python", "source": economy},
        },
        "calculate_output": "(answer + calls + first + economy) / 4",
    }
    with build_grader(spec) as grader:
        graded = grade_episodes(grader, episodes)
    assert graded[2] is None  # dropped: not graded
    one_by_one, together, _, parse = graded
    assert one_by_one.sub_rewards == {"answer": 1.0, "calls": 1.0, "first": 1.0, "economy": 0.5}
    assert together.sub_rewards == {"answer": 1.0, "calls": 1.0, "first": 1.0, "economy": 1.0}
    assert parse.errors.get("tool_call_parse_error") == 1
