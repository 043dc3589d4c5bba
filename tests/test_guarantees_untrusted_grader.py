"""Guarantee 4 inside a training run: a python grader that loops, allocates without bound, kills its
own worker or reads the trainer's environment on some rows. The PPO run continues, each failure is
scored 0 and counted under its kind in metrics.jsonl, and past rl.max_grader_error_share the run
stops with exit code 1. (The sandbox itself, row by row, is tested in tests/test_graders_python.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.metrics import read_metrics

pytestmark = pytest.mark.slow

HOSTILE = '''
import os

def grade(sample, item):
    kind = item["kind"]
    if kind == "loop":
        while True:
            pass
    if kind == "bomb":
        hoard = []
        while True:
            hoard.append(bytearray(10**7))
    if kind == "exit":
        os._exit(3)
    if kind == "env":
        leaked = "RFT_TEST_SECRET" in os.environ
        try:
            leaked = leaked or b"RFT_TEST_SECRET" in open(f"/proc/{os.getppid()}/environ", "rb").read()
        except OSError:
            pass
        if leaked:
            raise RuntimeError("the trainer's environment leaked into the grader")
    return 1.0 if sample["output_text"].strip() == item["answer"] else 0.0
'''


def write_run(tmp_path: Path, kinds: list[str]) -> Path:
    """A config whose 8 training rows carry a `kind`; one RL step grades each row once."""
    train = tmp_path / "train.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"{i}+1="}], "solution": str(i + 1), "answer": str(i + 1), "kind": kind}
            for i, kind in enumerate(kinds)]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    grader = tmp_path / "grader.yaml"
    grader.write_text(yaml.safe_dump({"type": "python", "name": "hostile", "source": HOSTILE, "timeout": 1.0,
                                      "memory_mb": 256, "workers": 2}), encoding="utf-8")
    config = {"model": {"tiny": "llama-test"}, "data": {"train": str(train)}, "grader": str(grader),
              "sft": {"enabled": False},
              "rl": {"steps": 2, "prompts_per_step": 8, "samples_per_prompt": 1, "mini_batch_size": 4, "ppo_epochs": 1,
                     "learning_rate": 0.001, "max_new_tokens": 3, "max_prompt_length": 16},
              "seed": 0, "save_interval": 1,
              "grader_check": {"enabled": False}}  # the hostile rows would stop the run in its self-test
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_hostile_rows_are_counted_by_kind_and_the_run_continues(tmp_path, monkeypatch):
    monkeypatch.setenv("RFT_TEST_SECRET", "hunter2")
    config = write_run(tmp_path, ["loop", "bomb", "exit", "env", "ok", "ok", "ok", "ok"])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["train", str(config), "--output-dir", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    rl = [r for r in read_metrics(out / "metrics.jsonl") if r["stage"] == "rl"]
    assert [r["step"] for r in rl] == [1, 2]
    for record in rl:  # every row is graded once per step: one of each failure, none from the env row
        errors = {k: v for k, v in record.items() if k.startswith("grader_errors/")}
        assert errors == {"grader_errors/python_grader_timeout": 1, "grader_errors/python_grader_memory_error": 1,
                          "grader_errors/python_grader_crash": 1}, record
        assert "policy_loss" in record and "skipped" not in record
    assert (out / "final" / "config.json").is_file()


def test_too_many_failing_grades_stop_the_run_with_exit_1(tmp_path):
    config = write_run(tmp_path, ["exit"] * 5 + ["ok"] * 3)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["train", str(config), "--output-dir", str(out), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "rl step 1: 5 of 8 grades failed (python_grader_crash: 5)" in result.output
    assert "max_grader_error_share=0.5" in result.output
    last = read_metrics(out / "metrics.jsonl")[-1]
    assert last["stopped"] == "grader_errors" and last["grader_errors/python_grader_crash"] == 5
    assert "policy_loss" not in last  # nothing was trained on that step
    # A higher share lets the same run go on.
    again = CliRunner().invoke(app, ["train", str(config), "--output-dir", str(tmp_path / "tolerant"), "--quiet",
                                     "--set", "rl.max_grader_error_share=0.7", "--set", "rl.steps=1"])
    assert again.exit_code == 0, again.output
