"""OpenAI RFT rows with tools: validation, tools in every prompt, tool calls into `sample.output_tools`.

The fixtures are written to OpenAI's published schema: `data/openai-tools/` holds rows with `tools`
(Chat Completions function definitions), assistant `tool_calls` with JSON-string arguments, a
`tool` result, the tool-call `multi` grader of OpenAI's graders guide (`{{sample.output_tools[0].
function.name}}` and `.arguments` against the row) and a job body with every hyperparameter.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.data.records import (
    check_row,
    demonstration_sample,
    item_of,
    load_rows,
    prompt_messages,
)
from rft_cli.errors import ConfigError
from rft_cli.graders import load_grader, reward_function
from rft_cli.tool_calls import (
    TOOL_CALL_PARSE_ERROR,
    OutputParser,
    grade_answers,
    output_parser,
    template_tools,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "openai-tools"
runner = CliRunner()
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
USER = {"role": "user", "content": "Weather in Paris?"}


def _call(name: str = "get_weather", arguments: str = '{"city": "Paris"}', **extra) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}, **extra}


@pytest.fixture(scope="module")
def tools_tokenizer():
    from tests.hub_like import TOOLS_CHATML_TEMPLATE, build_bpe_tokenizer

    tokenizer = build_bpe_tokenizer()
    tokenizer.chat_template = TOOLS_CHATML_TEMPLATE
    return tokenizer


# -- validation ---------------------------------------------------------------------------------


def test_the_shipped_openai_rows_validate_and_the_grader_passes_every_demonstration():
    result = runner.invoke(
        app,
        [
            "validate",
            str(DATA / "train.jsonl"),
            "--valid",
            str(DATA / "valid.jsonl"),
            "--grader",
            str(DATA / "grader.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "gives full marks to 9 of 9 demonstrations" in result.output


@pytest.mark.parametrize(
    "row,expected",
    [
        (
            {"messages": [USER], "tools": {"get_weather": {}}},
            '"tools" must be a list of {"type": "function"',
        ),
        (
            {"messages": [USER], "tools": [{"type": "retrieval"}]},
            'tools[0].type is "retrieval"; use "function"',
        ),
        (
            {
                "messages": [USER],
                "tools": [{"type": "function", "function": {"name": "get weather"}}],
            },
            "tools[0].function.name is \"get weather\"; use 1 to 64 letters, digits, '_' or '-'",
        ),
        (
            {
                "messages": [USER],
                "tools": [{"type": "function", "function": {"name": "f", "paramters": {}}}],
            },
            'tools[0].function has an unknown key "paramters" (known: name, description, parameters, strict)',
        ),
        (
            {
                "messages": [USER],
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"type": "string"}},
                    }
                ],
            },
            'tools[0].function.parameters.type is "string"; a function\'s parameters are an "object" schema',
        ),
        (
            {
                "messages": [USER],
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {
                                "type": "object",
                                "properties": {"a": {}},
                                "required": ["b"],
                            },
                        },
                    }
                ],
            },
            'tools[0].function.parameters.required names "b", which "properties" does not define',
        ),
        (
            {"messages": [USER], "tools": TOOLS + TOOLS},
            'tools[1].function.name "get_weather" is defined twice',
        ),
        (
            {
                "messages": [
                    USER,
                    {"role": "assistant", "content": None, "tool_calls": [_call("get_wether")]},
                ],
                "tools": TOOLS,
            },
            'messages[1].tool_calls[0] calls "get_wether", which "tools" does not define (defined: get_weather)',
        ),
        (
            {
                "messages": [
                    USER,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [_call(arguments="{city: Paris}")],
                    },
                ]
            },
            "messages[1].tool_calls[0].function.arguments must be a JSON object written as a string",
        ),
        (
            {"messages": [USER, {"role": "assistant", "content": None, "tool_calls": []}]},
            "messages[1].tool_calls must be a non-empty list",
        ),
        (
            {"messages": [USER, {"role": "tool", "content": "sunny"}]},
            'messages[1] has no "tool_call_id"',
        ),
        (
            {
                "messages": [
                    USER,
                    {"role": "assistant", "content": None, "tool_calls": [_call(id="call_1")]},
                    {"role": "tool", "tool_call_id": "call_2", "content": "sunny"},
                ]
            },
            'messages[2].tool_call_id "call_2" answers no earlier tool call (ids: call_1)',
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is this?"},
                            {
                                "type": "image_url",
                                "image_url": {"url": "https://example.com/a.png"},
                            },
                        ],
                    }
                ]
            },
            'messages[0].content[1] is an image part ("type": "image_url"); rft trains text-only models',
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}
                        ],
                    }
                ]
            },
            'messages[0].content[0] is audio part ("type": "input_audio")',
        ),
    ],
)
def test_bad_openai_rows_get_one_sentence_naming_the_line_and_place(tmp_path, row, expected):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"messages": [USER]}) + "\n" + json.dumps(row) + "\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert f"line 2: {expected}" in " ".join(result.output.split()), result.output


@pytest.mark.parametrize(
    "row",
    [
        {"messages": [USER], "tools": TOOLS},
        {
            "messages": [
                USER,
                {"role": "assistant", "content": None, "tool_calls": [_call(id="c1")]},
                {
                    "role": "tool",
                    "tool_call_id": "c1",
                    "content": [{"type": "text", "text": "sunny"}],
                },
            ],
            "tools": TOOLS,
        },
        {
            "messages": [USER, {"role": "assistant", "tool_calls": [_call()]}],
            "tools": TOOLS,
        },  # content may be absent
        {
            "messages": [
                USER,
                {"role": "assistant", "content": "Hi.", "tool_calls": None, "refusal": None},
            ]
        },  # as exported
        {
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                USER,
            ],
            "tools": [],
        },
    ],
)
def test_openai_rows_as_they_are_pass(row):
    assert check_row(row) == []


def test_training_loads_the_first_problem_of_a_bad_row_as_a_data_error(tmp_path):
    from rft_cli.errors import DataError

    path = tmp_path / "rows.jsonl"
    path.write_text(
        json.dumps({"messages": [USER], "tools": [{"type": "function", "function": {"name": ""}}]})
        + "\n"
    )
    with pytest.raises(DataError, match=r"rows.jsonl line 1: tools\[0\].function.name is \"\""):
        load_rows(path)


# -- rows into chat-template messages -----------------------------------------------------------


def test_prompt_messages_keep_tool_calls_with_object_arguments_and_tool_results():
    multi = load_rows(DATA / "train.jsonl")[-1]
    messages = prompt_messages(multi)
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert messages[2]["tool_calls"] == [
        {
            "type": "function",
            "id": "call_0",
            "function": {"name": "get_weather", "arguments": {"city": "Toronto"}},
        }
    ]
    assert messages[2]["content"] == "" and messages[3]["tool_call_id"] == "call_0"
    assert prompt_messages({"messages": [USER]}) == [USER]  # a plain row is unchanged
    no_content = {
        "role": "assistant",
        "tool_calls": [_call()],
    }  # OpenAI allows leaving content out beside calls
    assert prompt_messages({"messages": [USER, no_content, USER]})[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    }


def test_a_tool_calling_demonstration_is_a_sample_with_output_tools():
    row = load_rows(DATA / "train.jsonl")[0]
    assert demonstration_sample(row) == {"output_text": "", "output_tools": [_call()]}
    assert (
        demonstration_sample({"messages": [USER], "solution": "42"}) == "42"
    )  # text: read like a model's answer
    assert demonstration_sample({"messages": [USER]}) is None


def test_the_grader_self_test_reads_calls_in_a_text_demonstration(tmp_path):
    from rft_cli.graders.selftest import self_test

    row = load_rows(DATA / "valid.jsonl")[0]  # the weather in Berlin
    path = tmp_path / "train.jsonl"
    path.write_text(
        json.dumps(
            {
                **row,
                "solution": '<tool_call>{"name": "get_weather", "arguments": {"city": "Berlin"}}</tool_call>',
            }
        )
        + "\n"
        + json.dumps({**row, "solution": "Berlin is sunny."})
        + "\n"
    )
    with load_grader(DATA / "grader.json") as grader:
        report = self_test(grader, [(path, "solution")])
    assert (report.graded, [f.line for f in report.failures]) == (2, [2])


def test_template_tools_refuses_a_chat_template_that_ignores_tools(tools_tokenizer):
    from rft_cli.tiny import build_char_tokenizer

    ignoring = build_char_tokenizer()
    ignoring.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert template_tools(tools_tokenizer, TOOLS) is TOOLS
    assert template_tools(build_char_tokenizer(), TOOLS) is TOOLS  # the tiny template lists tools
    assert template_tools(ignoring, None) is None  # a row without tools needs nothing
    with pytest.raises(ConfigError, match="the model's chat template ignores them"):
        template_tools(ignoring, TOOLS)


def test_the_prompt_the_model_sees_holds_the_rows_tools(tools_tokenizer):
    from rft_cli.generation import encode_prompt

    row = load_rows(DATA / "valid.jsonl")[0]
    with_tools = tools_tokenizer.decode(
        encode_prompt(tools_tokenizer, prompt_messages(row), row["tools"])
    )
    assert "<tools>" in with_tools and '"name": "convert_currency"' in with_tools
    assert with_tools.endswith("<|im_start|>assistant\n")
    assert "<tools>" not in tools_tokenizer.decode(
        encode_prompt(tools_tokenizer, prompt_messages(row))
    )


def test_ppo_rollout_prompts_carry_the_tools(tools_tokenizer):
    from rft_cli.training.rollouts import encode_prompts

    rows = load_rows(DATA / "valid.jsonl")[:2] + [{"messages": [USER]}]
    ids, mask = encode_prompts(tools_tokenizer, rows, 4096, "cpu")
    texts = [tools_tokenizer.decode(row[m.bool()]) for row, m in zip(ids, mask, strict=True)]
    assert ["<tools>" in t for t in texts] == [True, True, False]


def test_sft_trains_on_the_tool_call_the_template_renders(tools_tokenizer):
    from rft_cli.training.sft import SFTEncoder, sft_example, sft_rows

    rows = load_rows(DATA / "train.jsonl")
    assert sft_rows(rows, "solution") == list(
        range(len(rows))
    )  # tool-call-only demonstrations count
    example = sft_example(rows[0], "solution")
    assert (
        json.loads(example["tools"]) == rows[0]["tools"]
    )  # JSON text, as TRL reads a `tools` column
    encoded = SFTEncoder(rows, tools_tokenizer, "solution", 4096)(0)
    trained = tools_tokenizer.decode(
        [
            t
            for t, label in zip(encoded["input_ids"], encoded["labels"], strict=True)
            if label != -100
        ]
    )
    assert (
        trained
        == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
    )
    prompt = tools_tokenizer.decode(
        [
            t
            for t, label in zip(encoded["input_ids"], encoded["labels"], strict=True)
            if label == -100
        ]
    )
    assert "<tools>" in prompt


def test_grpo_and_rloo_render_each_rows_tools(tools_tokenizer):
    """TRL passes one `tools` list to every prompt; the trainer subclass renders each row's own."""
    from rft_cli.generation import encode_prompt
    from rft_cli.training.rl_trl import rl_examples, truncating_trainer_class

    class FakeTrainer:  # TRL 1.16's two hooks, with what GRPOTrainer does between them
        processing_class = tools_tokenizer

        def _tokenize_prompts(self, prompts):
            return [encode_prompt(self.processing_class, p) for p in prompts], None, {}

        def _generate_and_score_completions(self, inputs):
            return self._tokenize_prompts([x["prompt"] for x in inputs])

    rows = load_rows(DATA / "train.jsonl")[-1:] + [{"messages": [USER]}]
    examples = rl_examples(rows, "solution")
    assert examples[1]["rft_prompt"] == examples[1]["rft_tools"] == ""
    assert [m.keys() for m in examples[0]["prompt"]] == [
        {"role", "content"}
    ] * 6  # what Arrow stores for TRL
    ids, images, fields = truncating_trainer_class(
        FakeTrainer, 4096
    )()._generate_and_score_completions(examples)
    assert ids[0] == encode_prompt(tools_tokenizer, prompt_messages(rows[0]), rows[0]["tools"])
    assert ids[1] == encode_prompt(tools_tokenizer, [USER])
    assert (images, fields) == (None, {})
    short, _, _ = truncating_trainer_class(FakeTrainer, 5)()._generate_and_score_completions(
        examples
    )
    assert short == [ids[0][-5:], ids[1][-5:]]


# -- tool calls in the answer -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,calls,rest,errors",
    [
        (
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
            [_call()],
            "",
            0,
        ),
        (
            (
                'Checking.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
                '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}</tool_call>'
            ),
            [_call(), _call(arguments='{"city": "Rome"}')],
            "Checking.",
            0,
        ),
        ('<tool_call>{"name": "get_weather", arguments: {}}</tool_call>', [], "", 1),
        ('<tool_call>{"arguments": {"city": "Paris"}}</tool_call>', [], "", 1),
        ('Sure <tool_call>{"name": "get_weather", "argum', [], "Sure", 1),
        (
            '{"name": "get_weather", "parameters": {"city": "Paris"}}',
            [_call()],
            "",
            0,
        ),  # Llama 3.1/3.2 JSON
        (
            '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
            [_call()],
            "",
            0,
        ),
        (
            '[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_weather", "arguments": {"city": "Rome"}}]',
            [_call(), _call(arguments='{"city": "Rome"}')],
            "",
            0,
        ),  # Mistral, after its special [TOOL_CALLS]
        ('{"name": "get_weather", "parameters": ["Paris"]}', [], "", 1),
        (
            '{"name": "Paris", "country": "France"}',
            [],
            '{"name": "Paris", "country": "France"}',
            0,
        ),  # JSON, not a call
        ('[{"name": "Paris"}]', [], '[{"name": "Paris"}]', 0),
        ("It is sunny in Paris.", [], "It is sunny in Paris.", 0),
    ],
)
def test_family_parsers(text, calls, rest, errors):
    parsed = OutputParser().parse(text)
    assert (parsed.tool_calls, parsed.text, parsed.errors) == (calls, rest, errors)


def test_the_tokenizers_own_response_parser_is_used_when_it_has_one():
    template = {
        "start_anchor": "<|im_start|>assistant\n",
        "fields": {
            "tool_calls": {
                "open": "<tool_call>",
                "close_pattern": r"</tool_call>\s*",
                "repeats": True,
                "content": "json",
                "transform": {"type": "function", "function": "{content}"},
            },
            "content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text"},
        },
    }

    class Tokenizer:
        response_template = template

    parser = output_parser(Tokenizer())
    assert parser.response_template is template
    parsed = parser.parse(
        'Sure.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>', TOOLS
    )
    assert (parsed.text, parsed.tool_calls, parsed.errors) == ("Sure.", [_call()], 0)
    assert parser.parse("<tool_call>{bad</tool_call>").errors == 1
    # Markers that are special tokens are gone from the decoded answer: the calls' JSON is still read.
    assert parser.parse('{"name": "get_weather", "arguments": {"city": "Paris"}}').tool_calls == [
        _call()
    ]
    Tokenizer.response_template = {"fields": "not a template"}
    assert (
        output_parser(Tokenizer()).response_template is None
    )  # unreadable: the family parsers instead


def test_the_openai_tool_call_grader_sees_a_parsed_call():
    """OpenAI's tool-call multi grader on model text: a correct call gets full marks (it got two
    invalid_variable_errors before `output_tools` was filled)."""
    row = load_rows(DATA / "valid.jsonl")[1]  # convert 60 EUR to CHF
    item = item_of(row, "solution")
    good = '<tool_call>\n{"name": "convert_currency", "arguments": {"amount": 60, "from": "EUR", "to": "CHF"}}\n</tool_call>'
    wrong = '<tool_call>\n{"name": "convert_currency", "arguments": {"amount": 6, "from": "EUR", "to": "CHF"}}\n</tool_call>'
    broken = '<tool_call>\n{"name": "convert_currency", "arguments": {"amount": 60,}}\n</tool_call>'
    with load_grader(DATA / "grader.json") as grader:
        results = grade_answers(
            grader, [good, wrong, broken, "60 EUR is about 56 CHF."], [item] * 4
        )
    assert [r.reward for r in results] == [1.0, 0.5, 0.0, 0.0]
    assert (
        results[0].sub_rewards == {"function_name": 1.0, "arguments": 1.0}
        and results[0].errors == {}
    )
    assert results[2].errors == {"invalid_variable_error": 2, TOOL_CALL_PARSE_ERROR: 1}
    assert "unreadable tool call" in results[2].details[TOOL_CALL_PARSE_ERROR]
    assert results[3].errors == {"invalid_variable_error": 2}  # no call at all: not a parse error


def test_rows_without_tools_are_graded_on_the_text_as_before():
    from rft_cli.graders import build_grader

    grader = build_grader(
        {
            "type": "string_check",
            "input": "{{ sample.output_text }}",
            "reference": "{{ item.a }}",
            "operation": "eq",
        }
    )
    text = '<tool_call>{"name": "f"}</tool_call>'
    assert grade_answers(grader, [text], [{"a": text}])[0].reward == 1.0


def test_output_json_follows_openais_rule_beside_tool_calls():
    from rft_cli.graders import build_grader

    grader = build_grader(
        {
            "type": "string_check",
            "input": "{{ sample.output_json.answer }}",
            "reference": "ok",
            "operation": "eq",
        }
    )
    item = {"tools": TOOLS}
    answers = [
        '{"answer": "ok"}',
        'Calling.<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>',
    ]
    ok, not_json = grade_answers(grader, answers, [item, item])
    assert ok.reward == 1.0 and not_json.errors == {"sample_parse_error": 1}


def test_grpo_reward_reads_calls_trl_already_parsed_and_calls_in_text():
    """TRL parses a completion with the tokenizer's response template into a message with tool_calls
    (arguments as objects); without one it hands the text."""
    with load_grader(DATA / "grader.json") as grader:
        reward = reward_function(grader, OutputParser())
        parsed = [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Berlin"}},
                    }
                ],
            }
        ]
        text = [
            {
                "role": "assistant",
                "content": '<tool_call>{"name": "get_weather", "arguments": {"city": "Bonn"}}</tool_call>',
            }
        ]
        row = load_rows(DATA / "valid.jsonl")[0]  # the weather in Berlin
        rewards = reward(
            prompts=[[USER]] * 2,
            completions=[parsed, text],
            **{k: [row[k]] * 2 for k in ("tools", "name", "arguments")},
        )
    assert rewards == [1.0, 0.5]


# -- jobs ---------------------------------------------------------------------------------------


def test_the_shipped_job_imports_every_hyperparameter(tmp_path):
    import yaml

    recipe = tmp_path / "recipe.yaml"
    result = runner.invoke(
        app,
        [
            "import",
            "openai",
            str(DATA / "job.json"),
            "--training-file",
            str(DATA / "train.jsonl"),
            "--validation-file",
            str(DATA / "valid.jsonl"),
            "--model",
            "Qwen/Qwen2.5-0.5B-Instruct",
            "-o",
            str(recipe),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    job = json.loads((DATA / "job.json").read_text())
    assert [row["openai"] for row in report["mapping"]] == list(
        job["method"]["reinforcement"]["hyperparameters"]
    )
    assert (
        report["unknown"] == [] and len(report["unsupported"]) == 2
    )  # compute_multiplier, reasoning_effort
    written = yaml.safe_load(recipe.read_text())
    assert (
        written["rl"]["max_grader_error_share"] == 1.0
    )  # a tool-call grader: no call yet is no grader fault
    assert (
        written["rl"]["prompts_per_step"] == 4
        and written["seed"] == 42
        and written["eval"] == {"interval": 2, "samples": 4}
    )
    assert json.loads((tmp_path / "recipe.grader.json").read_text()) == json.loads(
        (DATA / "grader.json").read_text()
    )


def test_a_python_grader_sees_output_tools_and_compares_arguments_as_objects():
    from rft_cli.graders import build_grader

    source = (
        "import json\n\ndef grade(sample, item):\n    calls = sample['output_tools']\n"
        "    if not calls or calls[0]['function']['name'] != item['name']:\n        return 0.0\n"
        "    return 1.0 if json.loads(calls[0]['function']['arguments']) == json.loads(item['arguments']) else 0.5\n"
    )
    item = {
        "tools": TOOLS,
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }  # compact: unequal as text
    answers = [
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>',
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>',
        "Paris is sunny.",
    ]
    with build_grader({"type": "python", "source": source}) as grader:
        assert [r.reward for r in grade_answers(grader, answers, [item] * 3)] == [1.0, 0.5, 0.0]


def test_rft_grade_reads_the_call_from_the_answer_text_for_a_row_with_tools(tmp_path):
    row = load_rows(DATA / "valid.jsonl")[0]  # the weather in Berlin
    answer = '<tool_call>{"name": "get_weather", "arguments": {"city": "Berlin"}}</tool_call>'
    one = runner.invoke(
        app,
        [
            "grade",
            str(DATA / "grader.json"),
            "--item",
            json.dumps(row),
            "--sample",
            answer,
            "--format",
            "json",
        ],
    )
    assert one.exit_code == 0, one.output
    assert json.loads(one.stdout) == {
        "reward": 1.0,
        "sub_rewards": {"function_name": 1.0, "arguments": 1.0},
        "errors": {},
    }
    samples = tmp_path / "samples.jsonl"
    samples.write_text(
        json.dumps({"output_text": answer})
        + "\n"
        + json.dumps(answer.replace("Berlin", "Bern"))
        + "\n"
    )
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    both = runner.invoke(
        app,
        [
            "grade",
            str(DATA / "grader.json"),
            "--data",
            str(rows),
            "--samples",
            str(samples),
            "--format",
            "json",
        ],
    )
    assert both.exit_code == 0, both.output
    assert json.loads(both.stdout)["mean_reward"] == 0.75


def test_grpo_samples_show_each_rows_prompt_as_the_model_saw_it(tmp_path, tools_tokenizer):
    """Regression: a batch mixing rows with and without tools (`rft_prompt` "" for a plain row) broke
    the sample keeper with a JSONDecodeError."""
    from types import SimpleNamespace

    from rft_cli.config import SamplesSettings
    from rft_cli.run_folder.metrics import NullLogger
    from rft_cli.run_folder.samples import SampleWriter, read_samples
    from rft_cli.training.context import RunContext
    from rft_cli.training.rl_trl import rl_examples
    from rft_cli.training.trl_bridge import GraderReward, TrlSampleKeeper

    with load_grader(DATA / "grader.json") as grader:
        config = SimpleNamespace(
            rl=SimpleNamespace(
                steps=2, prompts_per_step=2, samples_per_prompt=1, mini_batch_size=2, ppo_epochs=1
            ),
            samples=SamplesSettings(),
        )
        ctx = RunContext(
            config,
            tmp_path,
            [],
            [],
            grader,
            NullLogger(),
            samples=SampleWriter(tmp_path, SamplesSettings()),
        )
        reward = GraderReward(
            grader, 1.0, keeper=TrlSampleKeeper(ctx, tools_tokenizer), parser=OutputParser()
        )
        rows = load_rows(DATA / "valid.jsonl")[:1] + [
            {"messages": [USER], "name": "x", "arguments": "{}"}
        ]
        examples = rl_examples(rows, "solution")
        columns = {
            key: [e[key] for e in examples]
            for key in ("rft_item", "rft_row", "rft_prompt", "rft_tools")
        }
        call = '<tool_call>{"name": "get_weather", "arguments": {"city": "Berlin"}}</tool_call>'
        rewards = reward(
            prompts=[e["prompt"] for e in examples],
            completions=[[{"role": "assistant", "content": call}]] * 2,
            trainer_state=SimpleNamespace(global_step=0),
            **columns,
        )
    assert rewards == [1.0, 0.0]
    first, second = read_samples(tmp_path / "samples" / "rl-step-0000001.jsonl")
    assert "<tools>" in first["prompt"] and "<tools>" not in second["prompt"]
    assert second["errors"] == {
        "invalid_variable_error": 2
    }  # no tools: the text is not read for calls


def test_a_chat_template_that_fails_on_tools_is_a_config_error():
    from tests.hub_like import build_bpe_tokenizer

    broken = build_bpe_tokenizer()
    broken.chat_template = "{% if tools %}{{ raise_exception('tools are not supported') }}{% endif %}{{ messages[0]['content'] }}"
    with pytest.raises(ConfigError, match="fails on a tool definition .*tools are not supported"):
        template_tools(broken, TOOLS)
