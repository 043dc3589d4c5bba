"""OpenAI's published example graders (those that need no hosted model) load and grade as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from rft_cli.graders import load_grader

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
