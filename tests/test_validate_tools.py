"""`rft validate` on multi-turn demonstrations with tools: every row against its own `tools`, and
with `--tools` against the tools of a recipe (file:line for each problem)."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from rft_cli.cli import app

runner = CliRunner()
USER = {"role": "user", "content": "ka+mo=?"}
WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
]


def assistant_calls(*calls, start=1):
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{start + i}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for i, (name, args) in enumerate(calls)
        ],
    }


def tool(text, call_id="call_1"):
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def episode(*middle, answer="17+42=59. #### 59"):
    return {"messages": [USER, *middle, {"role": "assistant", "content": answer}], "answer": "59"}


GOOD = episode(
    assistant_calls(("lookup", {"key": "ka"})),
    tool("17"),
    assistant_calls(("lookup", {"key": "mo"}), start=2),
    tool("42", "call_2"),
)


def validate(tmp_path, rows, *args):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return runner.invoke(app, ["validate", str(path), "--format", "json", *args])


def problems(result):
    """(line, code, message without its "FILE line N: " head) of each error."""
    document = json.loads(result.stdout)
    return [
        (issue["line"], issue["code"], issue["message"].split(f"line {issue['line']}: ", 1)[1])
        for issue in document["errors"]
    ]


@pytest.mark.parametrize(
    "messages,message",
    [
        (
            [USER, tool("17"), {"role": "assistant", "content": "x"}],
            "messages[1] is a tool result, but it answers no call",
        ),
        (
            [
                USER,
                assistant_calls(("get_weather", {"city": "Paris"})),
                tool("sunny"),
                tool("rainy"),
                {"role": "assistant", "content": "x"},
            ],
            "messages[3] is a tool result, but it answers no call",
        ),
    ],
)
def test_a_tool_message_without_a_call_is_an_error(tmp_path, messages, message):
    """Before: a tool result with no call before it (or one more result than calls) passed, and
    reached the chat template as a result of nothing."""
    result = validate(tmp_path, [{"messages": messages, "tools": WEATHER}])
    assert result.exit_code == 1
    assert [(line, code) for line, code, _ in problems(result)] == [(1, "tool_without_call")]
    assert message in problems(result)[0][2]


def test_arguments_that_do_not_fit_the_row_s_schema_are_an_error(tmp_path):
    """Before: any JSON object passed as arguments, whatever the function's parameters said."""
    row = {
        "messages": [USER, assistant_calls(("get_weather", {"town": "Paris"}))],
        "tools": WEATHER,
    }
    result = validate(tmp_path, [row])
    assert result.exit_code == 1
    fit = "messages[1].tool_calls[0]: the arguments do not fit get_weather's parameters: "
    assert problems(result) == [
        (1, "bad_tool_calls", fit + 'arguments lacks "city", which the tool requires'),
        (
            1,
            "bad_tool_calls",
            fit + 'arguments has "town", which the tool does not take (it takes: city)',
        ),
    ]


@pytest.fixture
def tools_file(tmp_path):
    (tmp_path / "lookup.py").write_text(
        'def lookup(key: str) -> str:\n    """A value."""\n    return "1"\n'
    )
    spec = {
        "tools": [
            {"name": "lookup", "python": "lookup.py"},
            {
                "name": "remote",
                "server_url": "http://127.0.0.1:9/x",
                "headers": {"Authorization": "Bearer ${RFT_TEST_UNSET_SECRET}"},
            },
        ]
    }
    path = tmp_path / "tools.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_multi_turn_demonstrations_validate_against_a_tools_file(tmp_path, tools_file):
    """No secret is needed to validate: the endpoint's header variable is unset."""
    result = validate(tmp_path, [GOOD], "--tools", tools_file)
    assert result.exit_code == 0, result.output


def test_calls_in_rows_without_tools_must_name_a_tool_of_the_file_and_fit_it(tmp_path, tools_file):
    rows = [
        GOOD,
        episode(assistant_calls(("search", {"key": "ka"})), tool("17")),
        episode(assistant_calls(("lookup", {"key": 3})), tool("17")),
        {
            **episode(assistant_calls(("get_weather", {"city": "Oslo"})), tool("cold")),
            "tools": WEATHER,
        },
    ]
    result = validate(tmp_path, rows, "--tools", tools_file)
    assert result.exit_code == 1
    assert problems(result) == [
        (
            2,
            "bad_tool_calls",
            'messages[1].tool_calls[0] calls "search", which the tools file does not define (defined: lookup, remote)',
        ),
        (
            3,
            "bad_tool_calls",
            "messages[1].tool_calls[0]: the arguments do not fit lookup's parameters: arguments.key is 3, not a string",
        ),
        (
            4,
            "tool_not_run",
            '"tools" defines "get_weather", which the tools file does not run (it runs: lookup, remote); add a tool named get_weather',
        ),
    ]


def test_without_tools_the_same_rows_pass(tmp_path):
    """Rows without `tools` cannot be checked against tools nobody named: only --tools finds these."""
    rows = [episode(assistant_calls(("search", {"key": "ka"})), tool("17"))]
    assert validate(tmp_path, rows).exit_code == 0


def test_the_grader_self_test_grades_demonstrated_episodes_whole(tmp_path, tools_file):
    grader = tmp_path / "grader.yaml"
    grader.write_text(
        yaml.safe_dump(
            {
                "type": "multi",
                "graders": {
                    "right": {
                        "type": "string_check",
                        "input": "{{ sample.output_text }}",
                        "reference": "17+42=59. #### {{ item.answer }}",
                        "operation": "eq",
                    },
                    "calls": {
                        "type": "string_check",
                        "input": "{{ sample.episode.tool_calls }}",
                        "reference": "2",
                        "operation": "eq",
                    },
                    "second": {
                        "type": "string_check",
                        "input": "{{ sample.output_tools[1].function.arguments }}",
                        "reference": '{"key": "mo"}',
                        "operation": "eq",
                    },
                },
                "calculate_output": "(right + calls + second) / 3",
            }
        )
    )
    result = validate(tmp_path, [GOOD, GOOD], "--tools", tools_file, "--grader", str(grader))
    assert result.exit_code == 0, result.output
    check = json.loads(result.stdout)["grader_check"]
    assert (check["graded"], check["passed"]) == (2, 2)
    # Without --tools the demonstration is its last turn: no calls, and the grader says so.
    result = validate(tmp_path, [GOOD], "--grader", str(grader))
    assert json.loads(result.stdout)["grader_check"]["passed"] == 0
