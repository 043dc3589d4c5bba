"""Tools: the endpoint path against a server on loopback (127.0.0.1 only), python tools in the
sandbox, the schema read from a function's source, and the recipe's `tools` settings."""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from rft_cli.config import ToolSettings, parse_run_config
from rft_cli.errors import ConfigError
from rft_cli.tools import ToolRequest, endpoint, load_toolbox
from rft_cli.tools.base import MAX_REPLY_BYTES
from tests.tool_fakes import ToolServer


@pytest.fixture
def servers(monkeypatch):
    """The tool server, and a second one on another port (another origin) for redirects."""
    monkeypatch.setattr(endpoint, "RETRY_BACKOFF_SECONDS", 0.0)
    other = ToolServer()
    main = ToolServer(other_origin=other.url("").rstrip("/"))
    yield main, other
    main.close()
    other.close()


def call(server, path, timeout=5.0, retries=3, headers=None, arguments='{"key": "ka"}'):
    tool = ToolSettings(
        name="lookup",
        server_url=server.url(path),
        headers=headers or {},
        timeout=timeout,
        retries=retries,
    )
    with load_toolbox([tool]) as box:
        request = ToolRequest(
            "lookup", arguments, call_id="call_7", item={"answer": 3}, trace_id="trace_1"
        )
        return box.run([request])[0]


def test_an_endpoint_gets_openai_s_function_call_and_its_output_reaches_the_model(servers):
    server, _ = servers
    result = call(server, "/ok")
    assert (result.output, result.error, result.drop) == ("value of ka", None, False)
    body = server.requests[0]["body"]
    assert body == {
        "type": "function_call",
        "id": "fc_7",
        "call_id": "call_7",
        "name": "lookup",
        "arguments": '{"key": "ka"}',
        "item": {"answer": 3},
        "trace_id": "trace_1",
    }


def test_an_output_that_is_not_a_string_is_shown_as_json_and_bad_text_is_made_safe(servers):
    server, _ = servers
    assert call(server, "/json-output").output == '{"values": [1, 2]}'
    text = call(server, "/surrogate").output
    assert (
        text == "a\ufffdb\x00c\nd"
    )  # newlines kept; a lone surrogate, which a tokenizer refuses, replaced
    text.encode("utf-8")


@pytest.mark.parametrize(
    "path,output",
    [
        ("/not-found", 'HTTP 404: {"error": "no such key"}'),
        ("/refused-with-output", "key must be two letters"),
    ],
)
def test_a_4xx_is_shown_to_the_model_and_counted(servers, path, output):
    server, _ = servers
    result = call(server, path)
    assert (result.output, result.error, result.drop, result.attempts) == (
        output,
        "tool_client_error",
        False,
        1,
    )


def test_a_5xx_is_retried_then_answers(servers):
    server, _ = servers
    result = call(server, "/flaky")
    assert (result.output, result.error, result.attempts) == ("third time", None, 3)


def test_a_5xx_past_the_retries_drops_the_episode(servers):
    server, _ = servers
    result = call(server, "/down", retries=2)
    assert result.drop and result.error == "tool_server_error" and result.attempts == 3
    assert server.counts["/down"] == 3 and "after 3 attempts" in result.detail


def test_a_slow_endpoint_times_out_and_is_retried_within_its_deadline(servers):
    server, _ = servers
    started = time.monotonic()
    result = call(server, "/slow", timeout=0.3, retries=1)
    assert result.drop and result.error == "tool_timeout" and result.attempts == 2
    assert time.monotonic() - started < 2.0


def test_a_dripping_reply_is_cut_at_the_deadline(servers):
    """A socket timeout bounds each read, not the whole: 1,000 bytes at 0.05 s each would hold a
    call 50 s. The deadline ends the call at its timeout."""
    server, _ = servers
    started = time.monotonic()
    result = call(server, "/drip", timeout=0.5, retries=0)
    assert result.drop and result.error == "tool_timeout"
    assert time.monotonic() - started < 2.0


def test_a_huge_reply_is_read_to_the_cap_and_shown_as_a_413(servers):
    server, _ = servers
    result = call(server, "/huge")
    assert result.error == "tool_reply_too_large" and not result.drop
    assert (
        result.output.startswith("error: HTTP 413") and str(f"{MAX_REPLY_BYTES:,}") in result.output
    )


@pytest.mark.parametrize("path", ["/malformed", "/no-output"])
def test_a_malformed_reply_is_a_server_error(servers, path):
    server, _ = servers
    result = call(server, path, retries=1)
    assert result.drop and result.error == "tool_server_error" and result.attempts == 2


def test_nothing_listening_is_a_server_error(servers):
    server, _ = servers
    dead = ToolServer()
    url = dead.url("/ok")
    dead.close()
    tool = ToolSettings(name="lookup", server_url=url, retries=0)
    with load_toolbox([tool]) as box:
        result = box.run([ToolRequest("lookup", "{}")])[0]
    assert result.drop and result.error == "tool_server_error"


@pytest.mark.parametrize("path", ["/redirect", "/redirect-same"])
def test_a_redirect_is_never_followed_so_the_secret_stays_with_its_origin(
    servers, monkeypatch, path
):
    server, other = servers
    monkeypatch.setenv("RFT_TEST_TOOL_KEY", "s3cret-value")
    result = call(server, path, headers={"Authorization": "Bearer ${RFT_TEST_TOOL_KEY}"})
    assert result.drop and result.error == "tool_redirect" and result.attempts == 1
    assert "set server_url to the address that answers" in result.detail
    assert server.requests[0]["headers"]["Authorization"] == "Bearer s3cret-value"
    assert other.requests == []  # the other origin never heard from us
    assert len(server.requests) == 1  # nor did the same origin's target


def test_a_header_secret_is_read_at_each_call_and_never_stored(servers, monkeypatch, tmp_path):
    server, _ = servers
    monkeypatch.setenv("RFT_TEST_TOOL_KEY", "s3cret-value")
    tool = ToolSettings(
        name="lookup", server_url=server.url("/ok"), headers={"X-Api-Key": "${RFT_TEST_TOOL_KEY}"}
    )
    with load_toolbox([tool]) as box:
        box.run([ToolRequest("lookup", "{}")])
        assert "s3cret-value" not in repr(box.endpoints["lookup"].__dict__)
    assert server.requests[0]["headers"]["X-Api-Key"] == "s3cret-value"
    assert (
        "s3cret-value" not in tool.model_dump_json()
        and "${RFT_TEST_TOOL_KEY}" in tool.model_dump_json()
    )


def test_an_unset_secret_variable_is_a_config_error():
    tool = ToolSettings(
        name="lookup",
        server_url="http://127.0.0.1:9/x",
        headers={"Authorization": "Bearer ${RFT_TEST_UNSET_VAR}"},
    )
    with pytest.raises(
        ConfigError,
        match="tools\\[0\\].headers: the environment variable RFT_TEST_UNSET_VAR is not set",
    ):
        load_toolbox([tool])


@pytest.mark.parametrize(
    "tool,message",
    [
        ({"name": "x"}, "give exactly one of python"),
        ({"name": "x", "server_url": "file:///etc/passwd"}, "use an http:// or https:// URL"),
        (
            {"name": "x", "server_url": "http://a", "headers": {"Authorization": "Bearer abc"}},
            "write the secret as ${ENV_VAR}",
        ),
        ({"name": "x", "server_url": "http://a", "headers": {"X-A": "a\r\nHost: b"}}, "line break"),
        (
            {"name": "x", "server_url": "http://a", "memory_mb": 64},
            "memory_mb applies to python tools only",
        ),
        ({"name": "no spaces", "server_url": "http://a"}, "use 1 to 64 letters"),
    ],
)
def test_a_bad_tool_setting_is_a_config_error(tmp_path, tool, message):
    (tmp_path / "t.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    data = {
        "model": {"tiny": "llama-test"},
        "data": {"train": str(tmp_path / "t.jsonl")},
        "grader": {"type": "string_check", "input": "x", "reference": "x", "operation": "eq"},
        "tools": [tool],
    }
    with pytest.raises(ConfigError, match="tools.0") as info:
        parse_run_config(data)
    assert message in str(info.value)


def test_two_tools_with_one_name_are_refused(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    tool = {"name": "x", "server_url": "http://a"}
    data = {
        "model": {"tiny": "llama-test"},
        "data": {"train": str(tmp_path / "t.jsonl")},
        "grader": {"type": "string_check", "input": "x", "reference": "x", "operation": "eq"},
        "tools": [tool, tool],
    }
    with pytest.raises(ConfigError, match="two tools are named 'x'"):
        parse_run_config(data)


# --- the schema of a python tool, read from its source ------------------------------------------

SOURCE = '''
from typing import Literal, Optional

def lookup(key: str, unit: Literal["cm", "in"] = "cm", limit: Optional[int] = None, *, tags: list[str] = ()) -> str:
    """The value stored under a key.

    Args:
        key: two lowercase letters,
            such as "ka".
        unit (str): the unit.

    Returns:
        The value.
    """
    raise SystemExit("never run")
'''


def test_a_python_tool_s_schema_comes_from_its_signature_and_docstring(tmp_path):
    (tmp_path / "t.py").write_text(SOURCE)
    box = load_toolbox([ToolSettings(name="lookup", python=tmp_path / "t.py")])
    assert box.tool_definitions() == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "The value stored under a key.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "key": {
                            "type": "string",
                            "description": 'two lowercase letters, such as "ka".',
                        },
                        "unit": {
                            "type": "string",
                            "enum": ["cm", "in"],
                            "description": "the unit.",
                        },
                        "limit": {"type": "integer"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["key"],
                },
            },
        }
    ]
    box.close()


@pytest.mark.parametrize(
    "source,message",
    [
        ("def other(x): pass", "defines no top-level function lookup()"),
        ("def lookup(*keys): pass", "a tool is called with named arguments only"),
        ("def lookup(x:\n", "syntax error at line"),
        ("import not_a_module_rft_knows\ndef lookup(x): pass", "imports not_a_module_rft_knows"),
    ],
)
def test_a_python_tool_file_that_cannot_serve_is_refused_before_any_call(tmp_path, source, message):
    (tmp_path / "t.py").write_text(source)
    with pytest.raises(ConfigError, match=message):
        load_toolbox([ToolSettings(name="lookup", python=tmp_path / "t.py")])


def test_arguments_are_checked_against_a_schema():
    from rft_cli.tools.schema import argument_problems

    schema = {
        "type": "object",
        "properties": {
            "key": {"type": "string"},
            "n": {"type": "integer"},
            "unit": {"enum": ["cm", "in"]},
        },
        "required": ["key"],
        "additionalProperties": False,
    }
    assert argument_problems({"key": "ka", "n": 2.0, "unit": "cm"}, schema) == []
    assert argument_problems({"n": True, "unit": "ft", "extra": 1}, schema) == [
        'arguments lacks "key", which the tool requires',
        "arguments.n is true, not an integer",
        'arguments.unit is "ft", not one of ["cm", "in"]',
        'arguments has "extra", which the tool does not take (it takes: key, n, unit)',
    ]


# --- python tools in the sandbox ------------------------------------------------------------------


def python_box(tmp_path, source, **settings):
    (tmp_path / "tool.py").write_text(textwrap.dedent(source))
    names = settings.pop("names", ["lookup"])
    return load_toolbox(
        [ToolSettings(name=n, python=tmp_path / "tool.py", **settings) for n in names]
    )


def test_a_python_tool_answers_and_its_exception_is_shown_to_the_model(tmp_path):
    source = """
    TABLE = {"ka": 17}
    def lookup(key: str) -> str:
        return str(TABLE[key])
    def double(x: int) -> dict:
        return {"twice": 2 * x}
    """
    with python_box(tmp_path, source, names=["lookup", "double"]) as box:
        results = box.run(
            [
                ToolRequest("lookup", '{"key": "ka"}'),
                ToolRequest("lookup", '{"key": "zz"}'),
                ToolRequest("double", '{"x": 4}'),
                ToolRequest("lookup", '{"nope": 1}'),
                ToolRequest("missing", "{}"),
            ]
        )
    assert [(r.output, r.error) for r in results] == [
        ("17", None),
        ("error: KeyError: 'zz'", "tool_exception"),
        ('{"twice": 8}', None),
        ("error: TypeError: lookup() got an unexpected keyword argument 'nope'", "tool_exception"),
        ("error: there is no tool named 'missing' (tools: lookup, double)", "tool_unknown"),
    ]


@pytest.mark.slow
def test_a_python_tool_that_spins_is_timed_out_retried_then_drops_the_episode(tmp_path):
    source = """
    def lookup(key: str) -> str:
        while True:
            pass
    """
    started = time.monotonic()
    with python_box(tmp_path, source, timeout=0.5, retries=1) as box:
        result = box.run([ToolRequest("lookup", '{"key": "a"}')])[0]
    assert result.drop and result.error == "tool_timeout" and result.attempts == 2
    assert time.monotonic() - started < 8


def test_a_python_tool_that_forks_gets_an_error_not_a_process(tmp_path):
    source = """
    import os
    def lookup(key: str) -> str:
        return str(os.fork())
    """
    with python_box(tmp_path, source) as box:
        result = box.run([ToolRequest("lookup", '{"key": "a"}')])[0]
    assert result.error == "tool_exception" and "not allowed" in result.output


def test_a_python_tool_that_floods_is_shown_a_413_and_one_that_exits_drops(tmp_path):
    source = """
    import os
    def lookup(key: str) -> str:
        if key == "exit":
            os._exit(3)
        return "x" * (2 << 20)
    """
    with python_box(tmp_path, source, retries=0) as box:
        flood, exited = box.run(
            [ToolRequest("lookup", '{"key": "a"}'), ToolRequest("lookup", '{"key": "exit"}')]
        )
    assert flood.error == "tool_reply_too_large" and flood.output.startswith("error: HTTP 413")
    assert exited.drop and exited.error == "tool_crash"


@pytest.mark.parametrize(
    "reply",
    [
        '{"output": 5}',
        '{"output": "x", "extra": 1}',
        '{"error": "tool_\\udc80[red]x", "detail": "[/x]"}',
        '{"error": "python_grader_runtime_error"}',
        '{"value": 1.0}',
        "[1]",
        "{" * 100_000,
    ],
    ids=["number", "extra key", "made-up kind", "grader kind", "grade", "list", "deep"],
)
def test_a_python_tool_that_forges_its_reply_is_a_crash_never_an_output(tmp_path, reply):
    """Whatever a tool writes to its reply pipe, rft reads a string output, a known error kind, or
    a crash: a forged shape never reaches the model, and after the retries the episode is dropped."""
    source = f"""
    import os, stat, struct
    def lookup(key: str) -> str:
        body = {reply!r}.encode()
        for fd in range(3, 12):
            try:
                if stat.S_ISFIFO(os.fstat(fd).st_mode):
                    os.write(fd, struct.pack(">I", len(body)) + body)
            except OSError:
                pass
        while True:
            pass
    """
    with python_box(tmp_path, source, timeout=2, retries=0) as box:
        result = box.run([ToolRequest("lookup", '{"key": "a"}')])[0]
    assert result.drop and result.error == "tool_crash" and result.output == ""


def test_a_rewritten_worker_s_detail_is_cut_and_escaped(tmp_path):
    source = """
    import sys
    sys.modules["__main__"]._call_tool = lambda functions, request: {
        "error": "tool_exception", "detail": "\\udcff[bold]x\\x1b[2J\\n" + "y" * 50_000,
    }
    def lookup(key: str) -> str:
        return "never"
    """
    with python_box(tmp_path, source) as box:
        result = box.run([ToolRequest("lookup", '{"key": "a"}')])[0]
    assert result.error == "tool_exception" and len(result.output) < 1100
    assert result.detail.isprintable() and result.detail.startswith("\\udcff[bold]x\\x1b[2J\\x0a")


def test_a_python_tool_cannot_read_the_callers_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("RFT_TEST_TOOL_KEY", "s3cret-value")
    source = """
    import os
    def lookup(key: str) -> str:
        return json_env()
    def json_env():
        import json
        return json.dumps(dict(os.environ))
    """
    with python_box(tmp_path, source) as box:
        result = box.run([ToolRequest("lookup", '{"key": "a"}')])[0]
    assert result.error is None and "s3cret-value" not in result.output
    assert "RFT_TEST_TOOL_KEY" not in json.loads(result.output)


def _tools_recipe(tmp_path, **extra):
    (tmp_path / "t.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "hi"}], "solution": "x"}\n'
    )
    (tmp_path / "tool.py").write_text("def lookup(key: str) -> str:\n    return key\n")
    recipe = {
        "model": {"tiny": "llama-test"},
        "data": {"train": "t.jsonl"},
        "grader": {"type": "string_check", "input": "x", "reference": "x", "operation": "eq"},
        "tools": [{"name": "lookup", "python": "tool.py"}],
        **extra,
    }
    (tmp_path / "r.yaml").write_text(json.dumps(recipe))
    return tmp_path / "r.yaml"


def test_rft_train_plans_a_recipe_with_tools(tmp_path):
    from typer.testing import CliRunner

    from rft_cli.cli import app

    result = CliRunner().invoke(app, ["train", str(_tools_recipe(tmp_path)), "--dry-run"])
    assert result.exit_code == 0, result.output


def test_the_training_self_test_grades_demonstrations_as_episodes(tmp_path):
    """The story: `rft train`'s grader self-test graded each demonstration as a single answer, so a
    grader reading `sample.episode` (an economy reward) failed on every row and the recipe could not
    train; with tools it grades each as the whole episode, as `rft validate --tools` does."""
    from typer.testing import CliRunner

    from rft_cli.cli import app

    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"key": "a"}'},
    }
    row = {
        "messages": [
            {"role": "user", "content": "a?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "a"},
            {"role": "assistant", "content": "a"},
        ]
    }
    economy = {
        "type": "string_check",
        "input": "{{ sample.episode.tool_calls }}",
        "reference": "1",
        "operation": "eq",
    }
    recipe = _tools_recipe(tmp_path, grader=economy)
    (tmp_path / "t.jsonl").write_text(json.dumps(row) + "\n")
    result = CliRunner().invoke(app, ["train", str(recipe), "--dry-run"])
    assert result.exit_code == 0, result.output


def test_rloo_over_episodes_is_refused_with_its_reason(tmp_path):
    """TRL's RLOOTrainer (1.16) has no rollout hook and no mask for tokens the policy did not write:
    training it over episodes would put loss on the tool results, so the recipe is refused."""
    from typer.testing import CliRunner

    from rft_cli.cli import app

    recipe = _tools_recipe(
        tmp_path, rl={"algorithm": "rloo", "samples_per_prompt": 2, "mini_batch_size": 2}
    )
    result = CliRunner().invoke(app, ["train", str(recipe), "--dry-run"])
    assert result.exit_code == 2
    assert "rl.algorithm: rloo cannot train over episodes with tools" in result.output
    assert "Traceback" not in result.output
    warm_up_only = CliRunner().invoke(app, ["train", str(recipe), "--dry-run", "--stage", "sft"])
    assert warm_up_only.exit_code == 0, warm_up_only.output
