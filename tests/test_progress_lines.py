"""Progress where stderr is no terminal (a CI log, `nohup`): plain lines, at most every
$RFT_PROGRESS_INTERVAL seconds, and again while a step or a model load runs long."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.cli.ticker import Ticker, format_seconds, progress_interval
from rft_cli.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "tiny-test.yaml"


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("RFT_PROGRESS_INTERVAL", raising=False)
    assert progress_interval() == 30.0
    monkeypatch.setenv("RFT_PROGRESS_INTERVAL", "2.5")
    assert progress_interval() == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("RFT_PROGRESS_INTERVAL", bad)
        with pytest.raises(ConfigError, match="RFT_PROGRESS_INTERVAL"):
            progress_interval()
    assert [format_seconds(s) for s in (5, 185, 3725)] == ["5s", "3m05s", "1h02m"]


def test_the_ticker_repeats_the_status_while_nothing_new_happens(capsys):
    ticker = Ticker(0.05)
    ticker.start("loading the model")
    time.sleep(0.3)
    ticker.update("rl step 1/3", now=True)
    time.sleep(0.3)
    ticker.stop()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "[0s] loading the model"
    assert "[0s] loading the model (still running)" in lines
    assert lines.index("[0s] rl step 1/3") < lines.index("[0s] rl step 1/3 (still running)")


def test_the_ticker_prints_at_most_once_per_interval(capsys):
    ticker = Ticker(3600)
    ticker.start("starting")
    for step in range(1, 4):
        ticker.update(f"rl step {step}/3")
    ticker.update("rl step 3/3 done", now=True)
    ticker.stop()
    assert capsys.readouterr().err.splitlines() == ["[0s] starting", "[0s] rl step 3/3 done"]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
def test_rft_train_prints_plain_progress_lines_into_a_log(algorithm, tmp_path, monkeypatch):
    """Regression (issue 27): with stderr not a terminal, the only display was a Rich spinner,
    which prints nothing there: a CI job or a `nohup` run showed no progress for minutes."""
    monkeypatch.setenv("RFT_PROGRESS_INTERVAL", "0")  # a line per step
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["train", str(RECIPE), "-o", str(out), "--set", f"rl.algorithm={algorithm}"]
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if re.match(r"\[\d+s\] ", line)]
    text = "\n".join(lines)
    assert "[0s] starting: checking the config, data and grader" in text
    assert "checks passed; loading the model" in text
    for step in range(1, 5):
        assert re.search(rf"\] sft step {step}/4 .*loss ", text), text
    assert re.search(r"\] sft step 4/4  [\d.]+ s/step  ~0s left .*tok/s", text), text
    for step in range(1, 4):
        assert re.search(rf"\] rl step {step}/3 .*reward [\d.]+", text), text
    assert "rl step 2: evaluating 4 validation rows" in text
    assert "rl step 2: evaluating, 4/4 validation answers" in text


@pytest.mark.slow
def test_rft_eval_prints_plain_progress_lines_into_a_pipe(tiny_model_dir, tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": f"{i}+1="}], "answer": str(i + 1)})
            + "\n"
            for i in range(6)
        )
    )
    grader = tmp_path / "grader.yaml"
    grader.write_text(
        'type: string_check\nname: exact\ninput: "{{ sample.output_text }}"\n'
        'reference: "{{ item.answer }}"\noperation: eq\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "rft_cli", "eval", "--model", tiny_model_dir, "--data", str(data)]
        + ["--grader", str(grader), "--max-new-tokens", "2", "--batch-size", "2"],
        capture_output=True,
        text=True,
        env={**os.environ, "RFT_PROGRESS_INTERVAL": "0", "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"] {tiny_model_dir}: loading the model" in done.stderr
    for count in (2, 4, 6):
        assert f"] {tiny_model_dir}: {count}/6 answers generated" in done.stderr, done.stderr
    assert re.search(r"6/6 answers generated, [\d.e+]+ answers/s", done.stderr)
