"""OpenAI's published example graders load unchanged and grade as documented.

The files in tests/data/graders/openai are copied from OpenAI's graders guide and API reference
(JSON as published; Python-only syntax of the reference page such as `("a" "b")` joined into one
string). The model graders run against a fake OpenAI-compatible endpoint named by OPENAI_BASE_URL,
as a file without `base_url` does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rft_cli.errors import GraderError
from rft_cli.graders import build_grader, load_grader
from tests.judge_fakes import fake_judge, last_user_text

EXAMPLES = Path(__file__).parent / "data" / "graders" / "openai"
ITEM = {"reference_answer": "fuzzy wuzzy was a bear"}


def test_string_check_example():
    grader = load_grader(EXAMPLES / "string_check.json")
    assert grader.name == "Example string check grader"
    assert grader.grade("fuzzy wuzzy was a bear", ITEM).reward == 1.0
    assert grader.grade("fuzzy wuzzy had no hair", ITEM).reward == 0.0


def test_text_similarity_example():
    grader = load_grader(EXAMPLES / "text_similarity.json")
    assert grader.grade("fuzzy wuzzy was a bear", ITEM).reward == 1.0
    assert 0.5 < grader.grade("fuzzy wuzzy was a hare", ITEM).reward < 1.0


def test_python_example_with_rapidfuzz_in_the_sandbox():
    with load_grader(EXAMPLES / "python.json") as grader:
        assert grader.grade("fuzzy wuzzy was a bear", ITEM).reward == 1.0
        partial = grader.grade("Fuzzy Wuzzy was a bear!", ITEM)
        assert partial.errors == {} and partial.reward == 1.0  # default_process lower-cases and strips punctuation
        assert 0.0 < grader.grade("a bear", ITEM).reward < 1.0


def _tool_sample(name: str, arguments: str) -> dict:
    return {"output_text": "", "output_tools": [{"function": {"name": name, "arguments": arguments}}]}


def test_multi_tool_call_example():
    grader = load_grader(EXAMPLES / "multi_tools.json")
    item = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    good = grader.grade(_tool_sample("get_weather", '{"city": "Paris"}'), item)
    assert good.reward == 1.0 and good.sub_rewards == {"name": 1.0, "args": 1.0}
    wrong_args = grader.grade(_tool_sample("get_weather", '{"city": "Rome"}'), item)
    assert wrong_args.reward == 0.0 and wrong_args.sub_rewards == {"name": 1.0, "args": 0.0}
    no_tools = grader.grade("plain text", item)
    assert no_tools.reward == 0.0 and no_tools.errors == {"invalid_variable_error": 2}
    assert grader.item_fields() == {"name", "arguments"}


def test_weighted_multi_yaml_example():
    grader = load_grader(EXAMPLES / "multi_weighted.yaml")
    result = grader.grade("FUZZY WUZZY WAS A BEAR", ITEM)
    assert result.sub_rewards["exact"] == 1.0
    assert result.reward == pytest.approx(0.7 + 0.3 * result.sub_rewards["similar"])


def test_python_reference_example():
    with load_grader(EXAMPLES / "python_reference.json") as grader:
        assert grader.grade("Paris", {"label": "Paris"}).reward == 1.0
        assert grader.grade("Rome", {"label": "Paris"}).reward == 0.0


@pytest.fixture
def judge(monkeypatch):
    with fake_judge() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        yield fake


def test_score_model_example_without_base_url(judge):
    judge.answer = lambda body: json.dumps(
        {"steps": [{"description": "compare", "conclusion": "same"}],
         "result": 1.0 if last_user_text(body).endswith("Model answer: fuzzy wuzzy was a bear") else 0.1})
    grader = load_grader(EXAMPLES / "score_model.json")
    assert grader.name == "Example score model grader"
    assert grader.grade("fuzzy wuzzy was a bear", ITEM).reward == 1.0
    assert grader.grade("a bear", ITEM).reward == pytest.approx(0.1)
    body = judge.requests[0]["body"]
    assert body["model"] == "gpt-5-mini" and body["max_completion_tokens"] == 32768 and body["reasoning_effort"] == "medium"
    assert judge.requests[0]["auth"] == "Bearer sk-test"


@pytest.mark.parametrize("name,field", [("label_model.json", "response"), ("label_model_evals.json", "input")])
def test_label_model_examples_without_base_url(judge, name, field):
    """Regression: content as one {"type": "input_text"} object failed to load (`content.str: Input should be a valid string`)."""
    judge.answer = lambda body: json.dumps(
        {"steps": [], "result": "positive" if "love" in last_user_text(body) else "negative"})
    grader = load_grader(EXAMPLES / name)
    assert grader.grade("", {field: "I love it"}).reward == 1.0
    assert grader.grade("", {field: "I hate it"}).reward == 0.0
    assert grader.item_fields() == {field}
    messages = judge.requests[0]["body"]["messages"]
    assert messages[0]["content"].startswith("Classify the sentiment") and messages[1]["content"] == "Statement: I love it"


def test_api_reference_multi_with_a_list_of_graders_is_refused_with_a_fix():
    """The API reference shows `graders` as a list (and an unbalanced formula); the guide's named map is what loads."""
    spec = {"type": "multi", "name": "example multi grader",
            "graders": [{"type": "string_check", "name": "s", "input": "{{sample.output_text}}",
                         "reference": "{{item.label}}", "operation": "eq"}],
            "calculate_output": "0.5 * text_similarity_score +  0.5 * string_check_score)"}
    with pytest.raises(GraderError, match="graders: is a list; write a named map"):
        build_grader(spec)
