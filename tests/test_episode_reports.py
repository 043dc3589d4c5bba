"""Training over episodes, seen afterwards (issue 26): the two tool alarms over the metrics
stream, and `rft report --samples` showing kept episodes as transcripts."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.config import AlarmSettings, SamplesSettings
from rft_cli.run_folder.alarms import AlarmMonitor
from rft_cli.run_folder.samples import SampleWriter, transcript


def _alarms(key, values, **settings):
    monitor = AlarmMonitor(AlarmSettings(**settings))
    raised = []
    for step, value in enumerate(values, 1):
        raised += monitor.check({"stage": "rl", "step": step, key: value})
    return [(a.name, a.step) for a in raised]


@pytest.mark.parametrize(
    "values,expected",
    [
        ([2.0] * 5 + [2.5] * 5, []),  # a little more: fine
        ([2.0] * 5 + [4.5] * 5, [("tool_call_growth", 10)]),  # more than twice the start
        ([0.2] * 5 + [1.8] * 5, []),  # from few calls to about one per fact: under 2 x one call
        ([0.2] * 5 + [2.4] * 5, [("tool_call_growth", 10)]),
        ([2.0] * 9, []),  # not two windows yet
    ],
)
def test_tool_call_growth(values, expected):
    assert _alarms("tool_calls_per_episode", values) == expected


def test_tool_errors_rise():
    rising = [0.1] * 5 + [0.1, 0.2, 0.5, 0.6, 0.7]
    assert _alarms("tool_error_share", rising) == [("tool_errors", 10)]
    assert _alarms("tool_error_share", [0.1] * 5 + [0.3] * 5) == []
    assert _alarms("tool_error_share", [0.5] * 9) == []  # high from the start: no rise
    assert _alarms("tool_error_share", rising, tool_error_rise=0.4) == []


def test_runs_without_tools_raise_no_tool_alarm():
    assert _alarms("train_reward_mean", [0.1] * 20) == []


EPISODE = {
    "row": 3,
    "prompt": "<|system|>tools: lookup(key)<|end|><|user|>ka+mo=?<|end|><|assistant|>",
    "output_text": "17+42=59. #### 59",
    "reward": 1.0,
    "sub_rewards": {},
    "errors": {},
    "num_tokens": 130,
    "truncated": False,
    "episode": {"tool_calls": 2, "steps": 3},
    "turns": [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call00001",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": {"key": "ka"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call00001", "name": "lookup", "content": "17"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call00002",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": {"key": "mo"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call00002", "name": "lookup", "content": "42"},
        {"role": "assistant", "content": "17+42=59. #### 59"},
    ],
}
TRANSCRIPT = 'lookup {"key": "ka"} -> 17 | lookup {"key": "mo"} -> 42 | 17+42=59. #### 59'


def test_an_episode_s_transcript_shows_its_calls_results_and_answer():
    assert transcript(EPISODE) == TRANSCRIPT
    assert transcript({"output_text": "12"}) == "12"  # a single answer


def test_rft_report_samples_shows_kept_episodes_as_transcripts(tmp_path):
    SampleWriter(tmp_path, SamplesSettings()).write("rl", 1, [EPISODE])
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--samples"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert TRANSCRIPT in result.output
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--samples", "--format", "json"])
    assert json.loads(result.output)["best"][0]["turns"] == EPISODE["turns"]
