"""score_model and label_model: a fake OpenAI-compatible endpoint on 127.0.0.1 and a tiny local model."""

from __future__ import annotations

import json

import pytest

from rft_cli.errors import GraderError
from rft_cli.graders import build_grader
from rft_cli.graders.judge import parse_label, parse_score
from tests.judge_fakes import fake_judge


@pytest.fixture
def stub_server():
    with fake_judge() as fake:
        yield fake.url, fake


def score_spec(base_url: str, **extra) -> dict:
    return {
        "type": "score_model",
        "name": "judge",
        "model": "my-judge",
        "base_url": base_url,
        "api_key_env": "RFT_TEST_JUDGE_KEY",
        "input": [
            {"role": "system", "content": "Score the answer from 0 to 10."},
            {
                "role": "user",
                "content": [
                    {
                        "type": "input_text",
                        "text": "Reference: {{ item.ref }}\nAnswer: {{ sample.output_text }}",
                    }
                ],
            },
        ],
        "range": [0, 10],
        "sampling_params": {"temperature": 0, "seed": 1},
        **extra,
    }


def _structured(result) -> str:
    return json.dumps(
        {"steps": [{"description": "compare", "conclusion": "close"}], "result": result}
    )


@pytest.mark.parametrize(
    "reply,reward,errors",
    [
        (_structured(7), 7.0, {}),
        (_structured(10), 10.0, {}),
        (_structured(15), 10.0, {}),  # clamped to range, as OpenAI does
        (_structured(-3), 0.0, {}),
        ("7", 7.0, {}),  # a reply that is one number and nothing else
        ("```json\n" + _structured(4) + "\n```", 4.0, {}),
        ("excellent work", 0.0, {"model_grader_parse_error": 1}),
    ],
)
def test_score_model_over_http(stub_server, monkeypatch, reply, reward, errors):
    url, stub = stub_server
    monkeypatch.setenv("RFT_TEST_JUDGE_KEY", "sk-test-key")
    stub.replies.append((200, reply))
    result = build_grader(score_spec(url)).grade("Paris", {"ref": "Paris"})
    assert result.reward == pytest.approx(reward) and result.errors == errors
    sent = stub.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["auth"] == "Bearer sk-test-key"
    assert sent["body"]["model"] == "my-judge" and sent["body"]["seed"] == 1
    assert sent["body"]["messages"][1] == {
        "role": "user",
        "content": "Reference: Paris\nAnswer: Paris",
    }


@pytest.mark.parametrize(
    "reply",
    [
        "Step 1: compare. Final score: 0.2",
        "7/10",
        "Infinity",
        "1e999",
        "NaN",
        '{"result": NaN}',
        '{"result": 1e999, "steps": []}',
        '{"result": true, "steps": []}',
        '{"result": "0.9"}',
        "[0.9]",
        "",
    ],
)
def test_score_model_replies_that_are_no_score_are_counted(stub_server, reply):
    """Regression: the first number in the reply used to be the score ("Step 1: ... 0.2" -> 1.0,
    "7/10" -> 1.0, "1e999" -> 1.0, NaN -> 0 with no error). Now only the structured result counts."""
    url, stub = stub_server
    stub.replies.append((200, reply))
    spec = {**score_spec(url), "api_key_env": None, "range": [0, 1]}
    result = build_grader(spec).grade("x", {"ref": "y"})
    assert result.reward == 0.0 and result.errors == {"model_grader_parse_error": 1}


def test_score_model_asks_for_openai_structured_format(stub_server):
    url, stub = stub_server
    stub.replies.append((200, _structured(0.5)))
    build_grader({**score_spec(url), "api_key_env": None, "range": [0, 1]}).grade("x", {"ref": "y"})
    fmt = stub.requests[0]["body"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["required"] == ["steps", "result"] and schema["properties"]["result"] == {
        "type": "number"
    }


def test_endpoint_without_structured_outputs_gets_the_format_in_the_prompt(stub_server):
    url, stub = stub_server
    stub.refuse_response_format = True
    stub.replies.extend([(200, _structured(0.25)), (200, _structured(0.75))])
    grader = build_grader({**score_spec(url), "api_key_env": None, "range": [0, 1]})
    assert grader.grade("x", {"ref": "y"}).reward == 0.25
    assert grader.grade("x", {"ref": "y"}).reward == 0.75
    bodies = [r["body"] for r in stub.requests]
    assert ["response_format" in b for b in bodies] == [
        True,
        False,
        False,
    ]  # asked once, then remembered
    assert bodies[1]["messages"][-1]["content"].endswith('"result": a number}')


@pytest.mark.parametrize(
    "params,expected",
    [
        (
            {
                "temperature": 1,
                "top_p": 1,
                "seed": 42,
                "max_completions_tokens": 32768,
                "reasoning_effort": "medium",
            },
            {
                "temperature": 1,
                "top_p": 1,
                "seed": 42,
                "max_completion_tokens": 32768,
                "reasoning_effort": "medium",
            },
        ),
        ({}, {}),
    ],
)
def test_sampling_params_become_the_request_fields_reasoning_models_take(
    stub_server, params, expected
):
    """Regression: `max_tokens: 64` was always sent and sampling_params went verbatim, so a
    reasoning model rejected the request (it takes `max_completion_tokens`)."""
    url, stub = stub_server
    stub.replies.append((200, _structured(1)))
    spec = {**score_spec(url), "api_key_env": None, "range": [0, 1], "sampling_params": params}
    build_grader(spec).grade("x", {"ref": "y"})
    body = stub.requests[0]["body"]
    sent = {k: v for k, v in body.items() if k not in ("model", "messages", "response_format")}
    assert sent == expected and "max_tokens" not in body


def test_unknown_sampling_param_is_a_build_error():
    with pytest.raises(GraderError, match="sampling_params.max_tokens: unknown field"):
        build_grader(
            {
                **score_spec("http://127.0.0.1:9"),
                "api_key_env": None,
                "sampling_params": {"max_tokens": 5},
            }
        )


def test_range_other_than_unit_is_clamped_not_rescaled(stub_server):
    """Regression: range [-1, 1] used to map a judge's 0 to 0.5; OpenAI clamps the score to the range."""
    url, stub = stub_server
    stub.replies.extend([(200, _structured(0)), (200, _structured(-4))])
    grader = build_grader({**score_spec(url), "api_key_env": None, "range": [-1, 1]})
    assert grader.grade("x", {"ref": "y"}).reward == 0.0
    assert grader.grade("x", {"ref": "y"}).reward == -1.0


def test_server_error_is_counted(stub_server, monkeypatch):
    url, stub = stub_server
    monkeypatch.setenv("RFT_TEST_JUDGE_KEY", "k")
    stub.replies.append((500, "boom"))
    result = build_grader(score_spec(url)).grade("x", {"ref": "y"})
    assert result.reward == 0.0 and result.errors == {"model_grader_server_error": 1}
    assert "HTTP 500" in result.details["model_grader_server_error"]


def test_unreachable_endpoint_is_counted(monkeypatch):
    monkeypatch.setenv("RFT_TEST_JUDGE_KEY", "k")
    result = build_grader(score_spec("http://127.0.0.1:9/v1", timeout=2)).grade("x", {"ref": "y"})
    assert result.errors == {"model_grader_server_error": 1}


def test_missing_api_key_variable_is_a_grader_error(monkeypatch):
    monkeypatch.delenv("RFT_TEST_JUDGE_KEY", raising=False)
    with pytest.raises(
        GraderError, match="api_key_env: the environment variable RFT_TEST_JUDGE_KEY is not set"
    ):
        build_grader(score_spec("http://127.0.0.1:9/v1"))


LABELS = {"labels": ["correct", "incorrect"], "passing_labels": ["correct"]}


@pytest.mark.parametrize(
    "reply,reward,answer",
    [
        ("correct", 1.0, "correct"),
        ("Incorrect.", 0.0, "incorrect"),
        ('{"result": "correct", "steps": []}', 1.0, "correct"),
        ('{"steps": [], "result": "Incorrect"}', 0.0, "incorrect"),
    ],
)
def test_label_model_over_http(stub_server, reply, reward, answer):
    url, stub = stub_server
    stub.replies.append((200, reply))
    grader = build_grader(
        {
            "type": "label_model",
            "model": "m",
            "base_url": url,
            "input": [{"role": "user", "content": "Is {{ sample.output_text }} right?"}],
            **LABELS,
        }
    )
    result = grader.grade("4", {})
    assert result.reward == reward and result.answer == answer and result.errors == {}
    assert stub.requests[0]["auth"] is None
    schema = stub.requests[0]["body"]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["result"] == {"type": "string", "enum": ["correct", "incorrect"]}


@pytest.mark.parametrize(
    "reply",
    [
        "not correct, it is incorrect",
        "I'd say it is incorrect",
        "correct or incorrect",
        '{"result": "maybe"}',
        '{"label": "correct"}',
    ],
)
def test_label_named_in_prose_is_no_answer(stub_server, reply):
    """Regression: the first label anywhere in the reply was taken ("not positive, it is negative" -> positive)."""
    url, stub = stub_server
    stub.replies.append((200, reply))
    grader = build_grader(
        {
            "type": "label_model",
            "model": "m",
            "base_url": url,
            "input": [{"role": "user", "content": "x"}],
            **LABELS,
        }
    )
    result = grader.grade("4", {})
    assert (
        result.reward == 0.0
        and result.errors == {"model_grader_parse_error": 1}
        and result.answer is None
    )


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"labels": ["a"], "passing_labels": ["b"]}, "passing_labels: ['b'] are not in labels"),
        ({"labels": [], "passing_labels": ["a"]}, "labels: List should have at least 1 item"),
    ],
)
def test_label_model_spec_errors(spec, message):
    base = {
        "type": "label_model",
        "model": "m",
        "base_url": "http://127.0.0.1:9",
        "input": [{"role": "user", "content": "x"}],
    }
    with pytest.raises(GraderError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_grader({**base, **spec})


def test_score_model_range_must_be_ordered():
    with pytest.raises(GraderError, match=r"range: \[1.0, 0.0\] must be \[low, high\]"):
        build_grader({**score_spec("http://127.0.0.1:9"), "api_key_env": None, "range": [1, 0]})


@pytest.mark.parametrize(
    "content",
    [
        "Is {{ sample.output_text }} right?",
        {"type": "input_text", "text": "Is {{ sample.output_text }} right?"},
        [{"type": "input_text", "text": "Is {{ sample.output_text }}"}, " right?"],
    ],
)
def test_content_may_be_a_string_one_part_or_a_list(stub_server, content):
    url, stub = stub_server
    stub.replies.append((200, "correct"))
    grader = build_grader(
        {
            "type": "label_model",
            "model": "m",
            "base_url": url,
            "input": [{"type": "message", "role": "user", "content": content}],
            **LABELS,
        }
    )
    grader.grade("4", {})
    assert stub.requests[0]["body"]["messages"] == [{"role": "user", "content": "Is 4 right?"}]


def test_image_part_is_a_build_error_that_names_it():
    spec = {
        **score_spec("http://127.0.0.1:9"),
        "api_key_env": None,
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "x"},
                    {"type": "input_image", "image_url": "https://example.com/a.png"},
                ],
            }
        ],
    }
    with pytest.raises(
        GraderError, match=r"input\[0\].content\[1\]: a input_image part is not supported"
    ):
        build_grader(spec)


def test_without_base_url_the_endpoint_comes_from_the_environment(stub_server, monkeypatch):
    url, stub = stub_server
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    stub.replies.append((200, _structured(1)))
    spec = {
        "type": "score_model",
        "name": "j",
        "model": "gpt-4o-2024-08-06",
        "input": [{"role": "user", "content": "x"}],
    }
    assert build_grader(spec).grade("x", {}).reward == 1.0
    assert (
        stub.requests[0]["auth"] == "Bearer sk-env"
        and stub.requests[0]["body"]["model"] == "gpt-4o-2024-08-06"
    )


def test_without_any_endpoint_the_grader_builds_and_grading_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    spec = {
        "type": "score_model",
        "name": "j",
        "model": "gpt-4o-2024-08-06",
        "input": [{"role": "user", "content": "x"}],
    }
    grader = build_grader(spec)
    with pytest.raises(
        GraderError,
        match="score_model 'j': no judge for model 'gpt-4o-2024-08-06'.*OPENAI_BASE_URL",
    ):
        grader.grade("x", {})


def test_parsers():
    assert parse_score('{"result": 0.25, "steps": []}') == (0.25, "")
    assert parse_score("nan")[0] is None
    assert parse_score("8.5 out of 10")[0] is None
    assert parse_label("INCORRECT", ["correct", "incorrect"]) == "incorrect"
    assert parse_label("maybe", ["yes", "no"]) is None


# --- a local judge: the tiny model writes gibberish, so this checks the plumbing and the unparsable path


def test_local_score_model_plumbing(tiny_model_dir):
    grader = build_grader(
        {
            "type": "score_model",
            "model": tiny_model_dir,
            "max_new_tokens": 8,
            "input": [
                {"role": "system", "content": "Score 0-10."},
                {"role": "user", "content": "Answer: {{ sample.output_text }}"},
            ],
        }
    )
    result = grader.grade("hello", {})
    assert 0.0 <= result.reward <= 1.0
    assert result.errors in ({}, {"model_grader_parse_error": 1})
    if result.errors:
        assert (
            result.reward == 0.0
            and "not the JSON object" in result.details["model_grader_parse_error"]
        )


def test_local_label_model_unparsable_reply_scores_zero(tiny_model_dir):
    grader = build_grader(
        {
            "type": "label_model",
            "model": tiny_model_dir,
            "max_new_tokens": 6,
            "input": [{"role": "user", "content": "Label {{ sample.output_text }}"}],
            "labels": ["qzxv_pass", "qzxv_fail"],
            "passing_labels": ["qzxv_pass"],
        }
    )
    result = grader.grade("hello", {})
    assert result.reward == 0.0 and result.errors == {"model_grader_parse_error": 1}


def test_judge_graders_pickle(stub_server, tiny_model_dir):
    import pickle

    url, stub = stub_server
    stub.replies.append((200, "1"))
    http = build_grader(
        {
            "type": "score_model",
            "model": "m",
            "base_url": url,
            "input": [{"role": "user", "content": "x"}],
        }
    )
    assert pickle.loads(pickle.dumps(http)).grade("x", {}).reward == 1.0
    local = build_grader(
        {
            "type": "score_model",
            "model": tiny_model_dir,
            "max_new_tokens": 4,
            "input": [{"role": "user", "content": "x"}],
        }
    )
    local.grade("x", {})  # loads the model
    clone = pickle.loads(pickle.dumps(local))
    assert clone.judge._model is None and clone.judge.model_name == tiny_model_dir
