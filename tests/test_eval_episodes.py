"""`rft eval --tools`: each answer is an episode with tools, graded whole, and the report adds
tool calls, tool errors, tokens per episode and episodes dropped.

The model's turns are scripted (`tests/tool_fakes.ScriptedPolicy` stands in for the sampled policy,
whose runner `tests/test_episodes.py` tests) so that the tools really are called: a python tool in
the sandbox and an endpoint on loopback behind a secret header."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from rft_cli import episodes as episodes_module
from rft_cli.cli import app
from rft_cli.tools import endpoint
from tests.tool_fakes import ScriptedPolicy, ToolServer

runner = CliRunner()
SECRET = "s3cret-value-never-written"
CALL = '<tool_call>{{"name": "{name}", "arguments": {{"key": "{key}"}}}}</tool_call>'
GRADER = {
    "type": "multi",
    "graders": {
        "right": {
            "type": "string_check",
            "input": "{{ sample.output_text }}",
            "reference": "#### {{ item.answer }}",
            "operation": "eq",
        },
        "two_calls": {
            "type": "string_check",
            "input": "{{ sample.episode.tool_calls }}",
            "reference": "2",
            "operation": "eq",
        },
    },
    "calculate_output": "0.8 * right + 0.2 * two_calls",
}


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("RFT_TEST_TOOL_KEY", SECRET)
    monkeypatch.setattr(endpoint, "RETRY_BACKOFF_SECONDS", 0.0)
    server = ToolServer()
    (tmp_path / "lookup.py").write_text(
        'TABLE = {"ka": "17", "mo": "42"}\n\n\ndef lookup(key: str) -> str:\n    """The value of a key."""\n    return TABLE[key]\n'
    )
    tools = {
        "tools": [
            {"name": "lookup", "python": "lookup.py"},
            {
                "name": "remote",
                "server_url": server.url("/ok"),
                "headers": {"Authorization": "Bearer ${RFT_TEST_TOOL_KEY}"},
                "parameters": {"type": "object", "properties": {"key": {"type": "string"}}},
            },
            {
                "name": "broken",
                "server_url": server.url("/down"),
                "retries": 1,
                "parameters": {"type": "object", "properties": {}},
            },
        ],
        "episode": {"max_episode_steps": 4, "max_tokens": 400},
    }
    (tmp_path / "tools.yaml").write_text(yaml.safe_dump(tools))
    rows = [
        {"messages": [{"role": "user", "content": "Q1: ka+mo=?"}], "answer": "59"},
        {"messages": [{"role": "user", "content": "Q2: ka+ka=?"}], "answer": "34"},
        {"messages": [{"role": "user", "content": "Q3: remote?"}], "answer": "1"},
        {"messages": [{"role": "user", "content": "Q4: broken?"}], "answer": "1"},
    ]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "grader.json").write_text(json.dumps(GRADER))
    script = {
        "Q1:": [
            CALL.format(name="lookup", key="ka"),
            CALL.format(name="lookup", key="mo"),
            "#### 59",
        ],
        "Q2:": [CALL.format(name="lookup", key="ka"), "#### 34"],  # right, one call
        "Q3:": [
            CALL.format(name="remote", key="ka") + CALL.format(name="lookup", key="zz"),
            "#### 2",
        ],
        "Q4:": [CALL.format(name="broken", key="x"), "never"],
    }
    monkeypatch.setattr(
        episodes_module,
        "ModelPolicy",
        lambda model, tokenizer, *a, **k: ScriptedPolicy(tokenizer, script, "<|assistant|>"),
    )
    yield tmp_path, server
    server.close()


def eval_args(tmp_path, model, *more):
    return [
        "eval",
        "--model",
        model,
        "--data",
        str(tmp_path / "rows.jsonl"),
        "--grader",
        str(tmp_path / "grader.json"),
        "--tools",
        str(tmp_path / "tools.yaml"),
        *more,
    ]


def test_eval_runs_and_grades_whole_episodes(project, tiny_model_dir):
    tmp_path, server = project
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        app, eval_args(tmp_path, tiny_model_dir, "--format", "json", "--output", str(out))
    )
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)["models"]
    assert report["mean_reward"] == pytest.approx((1.0 + 0.8 + 0.2 + 0.0) / 4)
    assert report["errors"] == {"episode_dropped": 1}
    summary = report["episodes"]
    assert summary["episodes"] == 4 and summary["dropped"] == 1
    assert summary["tool_calls_per_episode"] == (2 + 1 + 2 + 1) / 4
    assert summary["tool_errors_by_kind"] == {"tool_exception": 1, "tool_server_error": 1}
    assert summary["ends"] == {"answer": 3, "dropped": 1}
    assert (
        summary["drop_reason"].startswith("tool_server_error:")
        and "after 2 attempts" in summary["drop_reason"]
    )
    assert "episode(s) dropped" in result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["episode"]["tool_calls"] for line in lines] == [2, 1, 2, 1]
    assert [m["role"] for m in lines[0]["turns"]] == [
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    assert (
        lines[2]["turns"][1]["content"] == "value of ka"
    )  # the endpoint's answer reached the model
    # The endpoint saw the secret; nothing rft wrote or printed holds it.
    (remote,) = [r for r in server.requests if r["path"] == "/ok"]
    assert remote["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert remote["body"]["item"]["answer"] == "1"
    assert [r["path"] for r in server.requests].count("/down") == 2  # retried once, then dropped
    assert SECRET not in out.read_text() and SECRET not in result.output


def test_the_table_shows_the_episode_columns(project, tiny_model_dir):
    tmp_path, _ = project
    result = runner.invoke(app, eval_args(tmp_path, tiny_model_dir))
    assert result.exit_code == 0, result.output
    for column in ("tool calls/ep", "tool errors", "tokens/ep", "dropped", "1 of 4"):
        assert column in result.stdout


def test_a_row_offering_a_tool_the_file_does_not_run_is_refused_before_any_model_loads(project):
    tmp_path, _ = project
    row = {
        "messages": [{"role": "user", "content": "hi"}],
        "answer": "1",
        "tools": [{"type": "function", "function": {"name": "search"}}],
    }
    (tmp_path / "rows.jsonl").write_text(json.dumps(row) + "\n")
    result = runner.invoke(app, eval_args(tmp_path, "no/such-model"))
    assert result.exit_code == 1
    assert (
        'rows.jsonl line 1: the row offers the tool "search", which the tools file does not run'
        in result.output
    )


def test_tools_with_a_samples_file_is_a_usage_error(project):
    tmp_path, _ = project
    (tmp_path / "s.jsonl").write_text('{"output_text": "x"}\n' * 4)
    args = [
        "eval",
        "--data",
        str(tmp_path / "rows.jsonl"),
        "--grader",
        str(tmp_path / "grader.json"),
        "--tools",
        str(tmp_path / "tools.yaml"),
        "--samples-file",
        str(tmp_path / "s.jsonl"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "a --samples-file holds finished answers" in result.output


@pytest.mark.parametrize(
    "text,message",
    [
        ("tools: []\n", "defines no tools"),
        ("tools:\n  - {name: x, python: missing.py}\n", "file not found: missing.py"),
        (
            "tools:\n  - {name: x, server_url: 'http://127.0.0.1:9/x'}\nepisodes: {}\n",
            "episodes: unknown key",
        ),
    ],
)
def test_a_bad_tools_file_is_a_usage_error(project, text, message):
    tmp_path, _ = project
    (tmp_path / "tools.yaml").write_text(text)
    result = runner.invoke(app, eval_args(tmp_path, "no/such-model"))
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.mark.slow
def test_a_real_tiny_model_runs_episodes_in_eval(tmp_path, tiny_model_dir, monkeypatch):
    """No script: whatever the random model writes is an episode, graded and reported."""
    (tmp_path / "lookup.py").write_text('def lookup(key: str) -> str:\n    return "17"\n')
    (tmp_path / "tools.yaml").write_text(
        "tools:\n  - {name: lookup, python: lookup.py}\nepisode: {max_tokens: 40}\n"
    )
    rows = [{"messages": [{"role": "user", "content": f"k{i}?"}], "answer": "17"} for i in range(3)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "grader.json").write_text(json.dumps(GRADER))
    result = runner.invoke(
        app,
        [
            *eval_args(
                tmp_path,
                tiny_model_dir,
                "--format",
                "json",
                "--samples",
                "2",
                "--max-new-tokens",
                "16",
            )
        ],
    )
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)["models"]
    assert report["episodes"]["episodes"] == 6 and report["episodes"]["tokens_per_episode"] <= 40


@pytest.mark.slow
def test_an_imported_agent_rft_job_runs_against_the_same_endpoint(
    tmp_path, tiny_model_dir, monkeypatch
):
    """`rft import openai` on an Agent RFT job, then `rft eval --tools` on the recipe it wrote: the
    calls reach the job's endpoint with the job's header, read from the variable the import named."""
    monkeypatch.setattr(endpoint, "RETRY_BACKOFF_SECONDS", 0.0)
    server = ToolServer()
    search = {
        "type": "function",
        "function": {
            "name": "search",
            "parameters": {"type": "object", "properties": {"key": {"type": "string"}}},
        },
    }
    row = {"messages": [{"role": "user", "content": "Q1: ka?"}], "tools": [search], "answer": "x"}
    (tmp_path / "train.jsonl").write_text(json.dumps(row) + "\n")
    grader = {
        "type": "string_check",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.answer }}",
        "operation": "eq",
    }
    job = {
        "model": "o4-mini",
        "training_file": "file-1",
        "method": {
            "type": "reinforcement",
            "reinforcement": {
                "grader": grader,
                "tools": [
                    {
                        "name": "search",
                        "server_url": server.url("/ok"),
                        "headers": {"X-Functions-Key": "job-key"},
                    }
                ],
                "max_episode_steps": 3,
            },
        },
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    recipe = tmp_path / "recipe.yaml"
    args = [
        "import",
        "openai",
        str(tmp_path / "job.json"),
        "--model",
        tiny_model_dir,
        "-o",
        str(recipe),
        "--training-file",
        str(tmp_path / "train.jsonl"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "run: rft train" in result.stdout
    monkeypatch.setenv("RFT_TOOL_SEARCH_X_FUNCTIONS_KEY", "job-key")
    script = {"Q1:": [CALL.format(name="search", key="ka"), "x"]}
    monkeypatch.setattr(
        episodes_module,
        "ModelPolicy",
        lambda model, tokenizer, *a, **k: ScriptedPolicy(tokenizer, script, "<|assistant|>"),
    )
    args = [
        "eval",
        "--model",
        tiny_model_dir,
        "--data",
        str(tmp_path / "train.jsonl"),
        "--grader",
        str(tmp_path / "recipe.grader.json"),
        "--tools",
        str(recipe),
        "--format",
        "json",
    ]
    result = runner.invoke(app, args)
    server.close()
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)["models"]
    assert report["mean_reward"] == 1.0 and report["episodes"]["tool_calls_per_episode"] == 1
    (request,) = server.requests
    assert (
        request["headers"]["X-Functions-Key"] == "job-key" and request["body"]["name"] == "search"
    )
