"""Rollouts on disk: the samples writer (atomic per step, rotated, full disk survived), resume
reconciliation, and `rft report --samples`."""

from __future__ import annotations

import errno
import json

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.config import SamplesSettings
from rft_cli.errors import ConfigError
from rft_cli.run_folder.samples import (
    SampleWriter,
    follow_row,
    list_sample_files,
    read_samples,
    reconcile_samples,
    step_samples,
)

runner = CliRunner()


def answer(row: int, text: str, reward: float) -> dict:
    return {
        "row": row,
        "prompt": f"q{row}",
        "output_text": text,
        "reward": reward,
        "sub_rewards": {},
        "errors": {},
        "num_tokens": len(text),
        "truncated": False,
    }


def test_each_step_is_one_file_and_rewriting_a_step_replaces_it(tmp_path):
    writer = SampleWriter(tmp_path, SamplesSettings())
    writer.write("rl", 3, [answer(0, "a", 0.0), answer(0, "b", 1.0)])
    writer.write("rl", 3, [answer(0, "c", 0.5)])  # a resumed run writes step 3 again
    writer.write("eval", 3, [answer(0, "g", 1.0)], after="rl")
    files = list_sample_files(tmp_path)
    assert [(f.kind, f.step) for f in files] == [("rl", 3), ("eval-rl", 3)]
    assert [line["output_text"] for line in read_samples(files[0].path)] == ["c"]
    assert read_samples(files[1].path)[0] | {} == {
        "stage": "eval",
        "step": 3,
        "after": "rl",
        **answer(0, "g", 1.0),
    }
    assert not list((tmp_path / "samples").glob("*.tmp"))


def test_which_steps_are_kept_and_how_many_answers():
    writer = SampleWriter("unused", SamplesSettings(interval=10, per_step=5, eval_rows=0))
    assert [s for s in range(1, 26) if writer.wants("rl", s, last_step=25)] == [1, 10, 20, 25]
    assert not writer.wants("eval", 10)
    assert writer.keep(64, group=2) == 4  # whole prompt groups: 5 rounded down to 2 groups of 2
    assert writer.keep(64, group=8) == 8  # at least one whole group
    assert writer.keep(3, group=1) == 3
    assert not SampleWriter("unused", SamplesSettings(enabled=False)).wants("rl", 1)


def test_long_texts_are_cut(tmp_path):
    writer = SampleWriter(tmp_path, SamplesSettings(max_chars=100))
    writer.write("rl", 1, [answer(0, "x" * 250, 0.0)])
    text = read_samples(list_sample_files(tmp_path)[0].path)[0]["output_text"]
    assert text.startswith("x" * 100) and text.endswith("[150 more characters]")


def test_the_folder_is_capped_by_deleting_the_oldest_rl_steps(tmp_path):
    writer = SampleWriter(tmp_path, SamplesSettings(max_mb=0.01))  # ~10 KB
    writer.write("eval", 1, [answer(0, "e", 1.0)], after="sft")
    for step in range(1, 21):
        writer.write("rl", step, [answer(i, "y" * 100, 0.0) for i in range(4)])  # ~0.9 KB each
    kept = list_sample_files(tmp_path)
    rl_steps = [f.step for f in kept if f.kind == "rl"]
    assert rl_steps == list(range(rl_steps[0], 21)) and rl_steps[0] > 1  # oldest gone, newest kept
    assert ("eval-sft", 1) in [(f.kind, f.step) for f in kept]  # evaluations are kept
    assert sum(f.path.stat().st_size for f in kept) <= 0.01 * 1024 * 1024


def test_a_full_disk_skips_samples_and_says_so_once(tmp_path, monkeypatch):
    import rft_cli.run_folder.samples as samples

    writer = SampleWriter(tmp_path, SamplesSettings())
    writer.write("rl", 1, [answer(0, "a", 1.0)])

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(samples.os, "replace", full)
    writer.write("rl", 2, [answer(0, "b", 1.0)])  # no exception: training goes on
    assert "No space left on device" in writer.take_problem() and writer.take_problem() is None
    assert not writer.wants("rl", 3)
    assert [f.step for f in list_sample_files(tmp_path)] == [1]
    assert not list((tmp_path / "samples").glob("*.tmp"))


@pytest.mark.parametrize(
    "stage,step,keep_step,left",
    [
        ("rl", 2, True, ["eval-sft-4", "rl-1", "rl-2", "eval-rl-2"]),
        ("sft", 4, True, ["eval-sft-4"]),
        ("sft", 4, False, []),
        (None, 0, True, []),
    ],
)
def test_resume_keeps_exactly_the_files_up_to_the_checkpoint(
    tmp_path, stage, step, keep_step, left
):
    writer = SampleWriter(tmp_path, SamplesSettings())
    writer.write("eval", 4, [answer(0, "e", 0.0)], after="sft")
    for s in (1, 2, 3):
        writer.write("rl", s, [answer(0, "a", 0.0)])
    writer.write("eval", 2, [answer(0, "e", 0.0)], after="rl")
    writer.write("eval", 3, [answer(0, "e", 0.0)], after="rl")
    (tmp_path / "samples" / "rl-step-0000004.jsonl.tmp").write_text("torn")
    reconcile_samples(tmp_path, stage, step, keep_step=keep_step)
    names = [f"{f.kind}-{f.step}" for f in list_sample_files(tmp_path)]
    assert sorted(names) == sorted(left)
    assert not list((tmp_path / "samples").glob("*.tmp"))


def _run_with_samples(tmp_path):
    writer = SampleWriter(tmp_path, SamplesSettings())
    writer.write(
        "rl",
        1,
        [answer(0, "7", 0.0), answer(0, "12", 1.0), answer(1, "7", 0.0), answer(1, "9", 1.0)],
    )
    writer.write("rl", 2, [answer(2, "12", 1.0), answer(2, "12", 1.0), answer(3, "4", 0.0)])
    writer.write("eval", 4, [answer(0, "11", 0.0), answer(1, "3", 0.0)], after="sft")
    writer.write("eval", 2, [answer(0, "12", 1.0), answer(1, "3", 0.0)], after="rl")
    return tmp_path


def test_best_worst_and_most_common_answers_of_a_step(tmp_path):
    run = _run_with_samples(tmp_path)
    last = step_samples(run)
    assert last["step"] == 2 and last["answers"] == 3
    assert last["reward_mean"] == pytest.approx(2 / 3)
    assert [a["output_text"] for a in last["worst"]][:1] == ["4"]
    assert last["most_common"][0] == {"output_text": "12", "count": 2, "reward": 1.0}
    first = step_samples(run, step=1, top=1)
    assert [a["output_text"] for a in first["best"]] == ["9"] and first["worst"][0]["reward"] == 0.0
    with pytest.raises(ConfigError, match="--step 7: no rl samples kept for that step"):
        step_samples(run, step=7)


def test_follow_one_row_across_evaluations(tmp_path):
    answers = follow_row(_run_with_samples(tmp_path), 0)
    assert [(a["after"], a["step"], a["output_text"], a["reward"]) for a in answers] == [
        ("sft", 4, "11", 0.0),
        ("rl", 2, "12", 1.0),
    ]


def test_rft_report_samples_text_and_json(tmp_path):
    run = _run_with_samples(tmp_path / "run")
    result = runner.invoke(app, ["report", str(run), "--samples"])
    assert result.exit_code == 0, result.output
    assert "rl step 2: 3 answers kept, mean reward 0.6667" in result.output
    assert "most common answers" in result.output
    result = runner.invoke(app, ["report", str(run), "--samples", "--row", "0", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert [a["output_text"] for a in json.loads(result.output)["answers"]] == ["11", "12"]
    result = runner.invoke(
        app, ["report", str(run), "--samples", "--eval", "--step", "4", "--format", "json"]
    )
    assert json.loads(result.output)["best"][0]["after"] == "sft"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--samples", "--row", "9"], "--row 9: no evaluation kept an answer for validation row 9"),
        (["--samples", "--step", "5"], "--step 5: no rl samples kept for that step"),
        (["--row", "1"], "--step, --row and --eval go with --samples"),
    ],
)
def test_rft_report_samples_usage_errors(tmp_path, args, message):
    run = _run_with_samples(tmp_path / "run")
    result = runner.invoke(app, ["report", str(run), *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_a_run_without_samples_says_why(tmp_path):
    (tmp_path / "run").mkdir()
    result = runner.invoke(app, ["report", str(tmp_path / "run"), "--samples"])
    assert result.exit_code == 2 and "no rl samples kept" in " ".join(result.output.split())


class _ChatTokenizer:
    eos_token_id = 0

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


def test_the_grpo_reward_function_keeps_the_steps_answers(tmp_path):
    """GRPO/RLOO answers reach RUN/samples/ through the TRL reward function (TRL passes the
    trainer state, the completion ids and the dataset's rft_row column)."""
    from types import SimpleNamespace

    from rft_cli.graders.build import build_from_dict
    from rft_cli.run_folder.metrics import NullLogger
    from rft_cli.training.context import RunContext
    from rft_cli.training.trl_bridge import GraderReward, TrlSampleKeeper

    grader = build_from_dict(
        {
            "type": "string_check",
            "name": "exact",
            "input": "{{ sample.output_text }}",
            "reference": "{{ item.answer }}",
            "operation": "eq",
        },
        where="grader",
    )
    # two optimizer steps per sampled batch (two minibatches), so TRL's global_step 8 is our step 5
    config = SimpleNamespace(
        rl=SimpleNamespace(
            steps=10,
            prompts_per_step=2,
            samples_per_prompt=2,
            mini_batch_size=2,
            ppo_epochs=1,
            max_new_tokens=3,
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
    reward = GraderReward(grader, 0.5, keeper=TrlSampleKeeper(ctx, _ChatTokenizer()))
    reward.eos_token_ids = {0}  # set from the trainer's end-of-answer ids by run_trl_rl
    prompt = [{"role": "user", "content": "1+1="}]
    rewards = reward(
        prompts=[prompt, prompt],
        completions=[
            [{"role": "assistant", "content": "2"}],
            [{"role": "assistant", "content": "333"}],
        ],
        rft_item=[json.dumps({"answer": "2"})] * 2,
        completion_ids=[[5, 0], [6, 7, 8]],
        trainer_state=SimpleNamespace(global_step=8),
        rft_row=[7, 7],
    )
    assert rewards == [1.0, 0.0]
    lines = read_samples(tmp_path / "samples" / "rl-step-0000005.jsonl")
    assert [
        (x["row"], x["prompt"], x["output_text"], x["reward"], x["num_tokens"], x["truncated"])
        for x in lines
    ] == [
        (7, "<user>1+1=<assistant>", "2", 1.0, 2, False),
        (7, "<user>1+1=<assistant>", "333", 0.0, 3, True),
    ]
    assert reward.drain_metrics()["grader_error_share"] == 0.0
