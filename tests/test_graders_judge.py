"""score_model and label_model: a stub OpenAI-compatible server on 127.0.0.1 and a tiny local model."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rft_cli.errors import GraderError
from rft_cli.graders import build_grader
from rft_cli.graders.judge import parse_label, parse_score


class _Stub(BaseHTTPRequestHandler):
    replies: list = []
    requests: list = []

    def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        status, content = type(self).replies.pop(0)
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def stub_server():
    _Stub.replies, _Stub.requests = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", _Stub
    server.shutdown()
    server.server_close()


def score_spec(base_url: str, **extra) -> dict:
    return {
        "type": "score_model",
        "name": "judge",
        "model": "my-judge",
        "base_url": base_url,
        "api_key_env": "RFT_TEST_JUDGE_KEY",
        "input": [
            {"role": "system", "content": "Score the answer from 0 to 10."},
            {"role": "user", "content": [{"type": "input_text", "text": "Reference: {{ item.ref }}\nAnswer: {{ sample.output_text }}"}]},
        ],
        "range": [0, 10],
        "sampling_params": {"temperature": 0, "seed": 1},
        **extra,
    }


@pytest.mark.parametrize(
    "reply,reward,errors",
    [
        ("7", 0.7, {}),
        ('{"result": 10, "steps": []}', 1.0, {}),
        ("Score: 15", 1.0, {}),
        ("-3", 0.0, {}),
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
    assert sent["body"]["messages"][1] == {"role": "user", "content": "Reference: Paris\nAnswer: Paris"}


def test_server_error_is_counted(stub_server, monkeypatch):
    url, stub = stub_server
    monkeypatch.setenv("RFT_TEST_JUDGE_KEY", "k")
    stub.replies.append((500, "boom"))
    result = build_grader(score_spec(url)).grade("x", {"ref": "y"})
    assert result.reward == 0.0 and result.errors == {"model_grader_server_error": 1}


def test_unreachable_endpoint_is_counted(monkeypatch):
    monkeypatch.setenv("RFT_TEST_JUDGE_KEY", "k")
    result = build_grader(score_spec("http://127.0.0.1:9/v1", timeout=2)).grade("x", {"ref": "y"})
    assert result.errors == {"model_grader_server_error": 1}


def test_missing_api_key_variable_is_a_grader_error(monkeypatch):
    monkeypatch.delenv("RFT_TEST_JUDGE_KEY", raising=False)
    with pytest.raises(GraderError, match="api_key_env: the environment variable RFT_TEST_JUDGE_KEY is not set"):
        build_grader(score_spec("http://127.0.0.1:9/v1"))


@pytest.mark.parametrize(
    "reply,reward,answer",
    [("correct", 1.0, "correct"), ("Incorrect.", 0.0, "incorrect"), ('{"result": "correct"}', 1.0, "correct"),
     ("I'd say it is incorrect", 0.0, "incorrect")],
)
def test_label_model_over_http(stub_server, reply, reward, answer):
    url, stub = stub_server
    stub.replies.append((200, reply))
    grader = build_grader({
        "type": "label_model", "model": "m", "base_url": url,
        "input": [{"role": "user", "content": "Is {{ sample.output_text }} right?"}],
        "labels": ["correct", "incorrect"], "passing_labels": ["correct"],
    })
    result = grader.grade("4", {})
    assert result.reward == reward and result.answer == answer
    assert stub.requests[0]["auth"] is None


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"labels": ["a"], "passing_labels": ["b"]}, "passing_labels: ['b'] are not in labels"),
        ({"labels": [], "passing_labels": ["a"]}, "labels: List should have at least 1 item"),
    ],
)
def test_label_model_spec_errors(spec, message):
    base = {"type": "label_model", "model": "m", "base_url": "http://127.0.0.1:9", "input": [{"role": "user", "content": "x"}]}
    with pytest.raises(GraderError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_grader({**base, **spec})


def test_score_model_range_must_be_ordered():
    with pytest.raises(GraderError, match=r"range: \[1.0, 0.0\] must be \[low, high\]"):
        build_grader({**score_spec("http://127.0.0.1:9"), "api_key_env": None, "range": [1, 0]})


def test_hosted_model_name_without_base_url_is_a_grader_error():
    spec = {"type": "score_model", "model": "gpt-4o-2024-08-06", "input": [{"role": "user", "content": "x"}]}
    with pytest.raises(GraderError, match="model: 'gpt-4o-2024-08-06' is not a local model directory"):
        build_grader(spec)


def test_parsers():
    assert parse_score("8.5 out of 10") == 8.5
    assert parse_score('{"score": 0.25}') == 0.25
    assert parse_score("nan") is None
    assert parse_label("INCORRECT", ["correct", "incorrect"]) == "incorrect"
    assert parse_label("maybe", ["yes", "no"]) is None


# --- a local judge: the tiny model writes gibberish, so this checks the plumbing and the unparsable path


def test_local_score_model_plumbing(tiny_model_dir):
    grader = build_grader({
        "type": "score_model", "model": tiny_model_dir, "max_new_tokens": 8,
        "input": [{"role": "system", "content": "Score 0-10."}, {"role": "user", "content": "Answer: {{ sample.output_text }}"}],
    })
    reply = grader.judge.reply([{"role": "user", "content": "hello"}], 8)
    assert isinstance(reply, str)
    result = grader.grade("hello", {})
    assert 0.0 <= result.reward <= 1.0
    assert result.errors in ({}, {"model_grader_parse_error": 1})
    if result.errors:
        assert result.reward == 0.0 and "no score in the reply" in result.details["model_grader_parse_error"]


def test_local_label_model_unparsable_reply_scores_zero(tiny_model_dir):
    grader = build_grader({
        "type": "label_model", "model": tiny_model_dir, "max_new_tokens": 6,
        "input": [{"role": "user", "content": "Label {{ sample.output_text }}"}],
        "labels": ["qzxv_pass", "qzxv_fail"], "passing_labels": ["qzxv_pass"],
    })
    result = grader.grade("hello", {})
    assert result.reward == 0.0 and result.errors == {"model_grader_parse_error": 1}


def test_judge_graders_pickle(stub_server, tiny_model_dir):
    import pickle

    url, stub = stub_server
    stub.replies.append((200, "1"))
    http = build_grader({"type": "score_model", "model": "m", "base_url": url, "input": [{"role": "user", "content": "x"}]})
    assert pickle.loads(pickle.dumps(http)).grade("x", {}).reward == 1.0
    local = build_grader({"type": "score_model", "model": tiny_model_dir, "input": [{"role": "user", "content": "x"}]})
    local.grade("x", {})  # loads the model
    clone = pickle.loads(pickle.dumps(local))
    assert clone.judge._model is None and clone.judge.model_name == tiny_model_dir
