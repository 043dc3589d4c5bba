"""The built-in tool task (data/lookup, `rft data make-lookup`): answers only a tool knows."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.data.lookup_task import LookupSpec, generate_lookup, keys_of
from rft_cli.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data" / "lookup"
FILES = ("train.jsonl", "valid.jsonl", "lookup.py", "tools.yaml", "grader.yaml")
runner = CliRunner()


def shipped_rows(name):
    return [json.loads(line) for line in (SHIPPED / name).read_text().splitlines()]


def shipped_table():
    tree = ast.parse((SHIPPED / "lookup.py").read_text())
    (assign,) = [n for n in tree.body if isinstance(n, ast.Assign)]
    return ast.literal_eval(assign.value)


def test_make_lookup_regenerates_the_shipped_files(tmp_path):
    result = runner.invoke(app, ["data", "make-lookup", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes(), name


def test_no_validation_question_asks_what_a_training_question_asks():
    train = shipped_rows("train.jsonl")
    valid = shipped_rows("valid.jsonl")
    asked = {frozenset(keys_of(row)) for row in train}
    assert not asked & {frozenset(keys_of(row)) for row in valid}  # "A+B" and "B+A" are one
    assert {k for row in valid for k in keys_of(row)} <= {k for row in train for k in keys_of(row)}


def _calls(row):
    return [
        (
            m["tool_calls"][0]["function"]["name"],
            json.loads(m["tool_calls"][0]["function"]["arguments"]),
        )
        for m in row["messages"]
        if m.get("tool_calls")
    ]


def test_each_demonstration_reads_the_table_and_answers_the_sum():
    table = shipped_table()
    rows = shipped_rows("train.jsonl") + shipped_rows("valid.jsonl")
    with_total = extra = 0
    for row in rows:
        keys, messages = keys_of(row), row["messages"]
        calls = _calls(row)
        results = [m["content"] for m in messages if m["role"] == "tool"]
        total = sum(table[k] for k in keys)
        if calls[0][0] == "total":  # one call with every key, then its result
            assert calls == [("total", {"keys": keys})] and results == [str(total)]
            assert messages[-1]["content"] == f"#### {total}"
            with_total += 1
        else:  # a call per key (one of them perhaps twice), then the values and their sum
            looked_up = [args["key"] for name, args in calls if name == "lookup"]
            assert len(looked_up) == len(calls) and set(looked_up) == set(keys)
            assert results == [str(table[k]) for k in looked_up]
            values = "+".join(str(table[k]) for k in keys)
            assert messages[-1]["content"] == f"{values}={total}. #### {total}"
            extra += len(calls) > len(keys)
        assert row["reference_answer"] == str(total)
    assert 0.3 < with_total / len(rows) < 0.37  # total_share 1/3
    assert 0.2 < extra / (len(rows) - with_total) < 0.3  # extra_call_share 0.25


def test_the_shipped_tools_answer_from_the_table():
    namespace: dict = {}
    exec((SHIPPED / "lookup.py").read_text(), namespace)  # the repository's own file
    table = shipped_table()
    first, second = sorted(table)[:2]
    assert namespace["lookup"](first) == str(table[first])
    assert namespace["total"]([first, second]) == str(table[first] + table[second])
    for call in (lambda: namespace["lookup"]("ZZ"), lambda: namespace["total"]([first, "ZZ"])):
        with pytest.raises(KeyError, match="no value is stored under 'ZZ'"):
            call()


def test_the_shipped_task_validates_against_its_tool_with_full_marks():
    args = ["validate", str(SHIPPED / "train.jsonl"), "--valid", str(SHIPPED / "valid.jsonl")]
    args += [
        "--tools",
        str(SHIPPED / "tools.yaml"),
        "--grader",
        str(SHIPPED / "grader.yaml"),
        "--format",
        "json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    check = json.loads(result.stdout)["grader_check"]
    assert check["graded"] == check["passed"] == 2200


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"keys": 1}, "keys is 1"),
        ({"valid_keys": 100, "shared_keys": False}, "valid_keys is 100"),
        ({"terms": 7}, "terms is 7"),
        ({"extra_call_share": 2.0}, "extra_call_share"),
        ({"total_share": -0.1}, "total_share is -0.1"),
    ],
)
def test_a_bad_spec_is_a_usage_error(spec, message):
    with pytest.raises(ConfigError, match=message):
        LookupSpec(**spec)


def test_too_many_questions_for_the_keys_is_a_usage_error():
    with pytest.raises(ConfigError, match="could not draw 50 distinct questions"):
        generate_lookup(10, 50, spec=LookupSpec(keys=12, valid_keys=4, shared_keys=False))


def test_shared_keys_share_every_key_and_no_question():
    spec = LookupSpec(keys=30, terms=2, max_value=19, shared_keys=True)
    table, train, valid = generate_lookup(300, 60, seed=3, spec=spec)
    train_keys = {k for row in train for k in keys_of(row)}
    valid_keys = {k for row in valid for k in keys_of(row)}
    assert valid_keys <= train_keys == set(table)  # every key is written in training
    asked = {frozenset(keys_of(row)) for row in train}
    assert not asked & {
        frozenset(keys_of(row)) for row in valid
    }  # "a+b" and "b+a" are one question
    assert set(table.values()) <= set(range(1, 20))


def test_make_lookup_passes_its_options_on(tmp_path):
    args = ["data", "make-lookup", str(tmp_path), "--train", "50", "--valid", "10"]
    result = runner.invoke(app, [*args, "--keys", "12", "--max-value", "5", "--shared-keys"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    valid = [json.loads(line) for line in (tmp_path / "valid.jsonl").read_text().splitlines()]
    assert len({k for row in rows + valid for k in keys_of(row)}) == 12
    assert {k for row in valid for k in keys_of(row)} <= {k for row in rows for k in keys_of(row)}
    assert max(int(row["reference_answer"]) for row in rows) <= 10
    out = tmp_path / "separate"
    separate = ["data", "make-lookup", str(out), "--train", "20", "--valid", "4", "--keys", "12"]
    result = runner.invoke(app, [*separate, "--separate-keys"])  # a quarter: 3 validation keys
    assert result.exit_code == 0, result.output
    valid = [json.loads(line) for line in (out / "valid.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    valid_keys = {k for row in valid for k in keys_of(row)}
    assert len(valid_keys) <= 3 and not valid_keys & {k for row in rows for k in keys_of(row)}
    lookup_only = tmp_path / "lookup-only"
    result = runner.invoke(
        app,
        ["data", "make-lookup", str(lookup_only), "--train", "40", "--valid", "5"]
        + ["--total-share", "0", "--extra-call-share", "1"],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (lookup_only / "train.jsonl").read_text().splitlines()]
    assert all([name for name, _ in _calls(row)] == ["lookup"] * 3 for row in rows)
    assert "def total" not in (lookup_only / "lookup.py").read_text()
    assert "total" not in (lookup_only / "tools.yaml").read_text()


@pytest.mark.slow
def test_an_episode_that_replays_a_demonstration_is_the_warm_up_s_tokens():
    """The warm-up trains on demonstrations rendered by the chat template; RL samples episodes the
    runner builds turn by turn. Replaying a demonstration's turns through the runner, with the real
    tool in the sandbox, gives exactly the tokens of the rendered demonstration, and the policy's
    tokens are exactly its assistant turns: the two stages see one format."""
    from rft_cli.data.records import _template_message, episode_prompt_messages
    from rft_cli.episodes import EpisodeLimits, run_episodes
    from rft_cli.tiny import build_char_tokenizer
    from rft_cli.tools import load_toolbox, read_tools_file
    from tests.tool_fakes import ScriptedPolicy

    tokenizer = build_char_tokenizer()
    rows = shipped_rows("valid.jsonl")[:4]
    assert {_calls(row)[0][0] for row in rows} == {"lookup", "total"}  # both kinds of episode
    settings, episode = read_tools_file(SHIPPED / "tools.yaml")
    with load_toolbox(settings) as box:
        tools = box.tool_definitions()
        script = {}
        for row in rows:
            turns = [_template_message(m) for m in row["messages"][1:]]
            rendered = tokenizer.apply_chat_template(turns, tokenize=False)
            script[row["messages"][0]["content"]] = [
                t.split("<|end|>")[0] for t in rendered.split("<|assistant|>")[1:]
            ]
        policy = ScriptedPolicy(tokenizer, script, "<|assistant|>")
        limits = EpisodeLimits(episode.max_episode_steps, episode.max_tokens)
        episodes = run_episodes(
            policy, tokenizer, [episode_prompt_messages(r) for r in rows], rows, box, limits=limits
        )
    for row, ep in zip(rows, episodes, strict=True):
        demonstration = [_template_message(m) for m in row["messages"]]
        rendered = tokenizer.apply_chat_template(demonstration, tools=tools, tokenize=False)
        assert ep.end == "answer" and tokenizer.decode(ep.prompt_ids + ep.ids) == rendered
        masked = tokenizer.apply_chat_template(
            demonstration, tools=tools, return_dict=True, return_assistant_tokens_mask=True
        )
        assert ep.prompt_ids + ep.ids == masked["input_ids"]
        assert [0] * len(ep.prompt_ids) + ep.policy_mask == masked["assistant_masks"]
        assert len(ep.ids) <= episode.max_tokens
