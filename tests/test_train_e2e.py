"""End to end on CPU with the tiny recipe: SFT then PPO (and GRPO), the run folder, resume, faults."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest

from rft_cli.config import load_run_config
from rft_cli.errors import TrainingError
from rft_cli.run_folder.metrics import read_metrics
from rft_cli.training.run import train
from tests.train_fakes import FailingGrader, NaNGrader, SevensGrader

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-test.yaml"
TIMING_KEYS = {"elapsed_s", "stage_elapsed_s", "eval_s", "tokens_per_second"}
PPO_METRICS = {
    "stage",
    "step",
    "train_reward_mean",
    "train_reward_std",
    "kl",
    "kl_logratio",
    "kl_sum",
    "policy_loss",
    "value_loss",
    "entropy",
    "clip_frac",
    "approx_kl",
    "response_length_mean",
    "learning_rate",
    "tokens_per_second",
    "elapsed_s",
}


def run(tmp_path: Path, *overrides: str, name: str = "run", grader=None, **kwargs):
    # A fake grader (sevens, NaN, failing) would fail the self-test on the recipe's demonstrations.
    checked = ["grader_check.enabled=false"] if grader is not None else []
    config = load_run_config(RECIPE, [*checked, *overrides])
    return train(config, output_dir=tmp_path / name, grader=grader, **kwargs)


def without_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def assert_loads(folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "1+2="}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=2, do_sample=False)
    assert out.shape[1] >= ids["input_ids"].shape[1]


def test_sft_then_ppo_writes_the_run_folder(tmp_path):
    result = run(tmp_path)
    root = result.run_dir
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "checkpoints/sft/model.safetensors",
        "checkpoints/step-3/value_head.pt",
        "checkpoints/step-3/optimizer.pt",
        "checkpoints/step-3/scheduler.pt",
        "checkpoints/step-3/rng_state.pt",
        "checkpoints/step-3/trainer_state.json",
        "checkpoints/step-3/rft_meta.json",
        "final/config.json",
    ):
        assert (root / name).is_file(), name
    assert not (
        root / "checkpoints" / "step-2"
    ).exists()  # keep_checkpoints: 1 keeps the best and the latest only
    records = read_metrics(root / "metrics.jsonl")
    sft = [r for r in records if r["stage"] == "sft"]
    rl = [r for r in records if r["stage"] == "rl"]
    assert [r["step"] for r in sft] == [1, 2, 3, 4] and [r["step"] for r in rl] == [1, 2, 3]
    assert all({"loss", "learning_rate"} <= set(r) for r in sft)
    assert "valid_reward_mean" in sft[-1] and not any("valid_reward_mean" in r for r in sft[:-1])
    for record in rl:
        assert PPO_METRICS <= set(record), PPO_METRICS - set(record)
        assert all(math.isfinite(v) for v in record.values() if isinstance(v, float))
    assert (
        "valid_reward_mean" in rl[1]
        and "valid_reward_mean" in rl[2]
        and "valid_reward_mean" not in rl[0]
    )
    summary = json.loads((root / "summary.json").read_text())
    assert set(summary["stages"]) == {"sft", "rl"} and summary["final"] == "final"
    assert set(summary["stages"]["rl"]) >= {"valid_reward_mean", "valid_accuracy", "elapsed_s"}
    assert_loads(root / "final")
    assert_loads(root / "checkpoints" / "step-3")


def test_grpo_uses_the_same_layout_and_metric_names_and_resumes(tmp_path):
    overrides = ("rl.algorithm=grpo", "rl.steps=3", "sft.max_steps=2", "save_interval=3")
    result = run(tmp_path, *overrides)
    root = result.run_dir
    rl = [r for r in read_metrics(root / "metrics.jsonl") if r["stage"] == "rl"]
    assert [r["step"] for r in rl] == [1, 2, 3]
    assert {
        "train_reward_mean",
        "train_reward_std",
        "kl",
        "entropy",
        "response_length_mean",
        "learning_rate",
        "tokens_per_second",
        "elapsed_s",
    } <= set(rl[0])
    assert rl[-1]["valid_reward_mean"] is not None
    assert (root / "checkpoints" / "step-3" / "rft_meta.json").is_file()
    assert_loads(root / "final")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, *overrides, name="cut", progress=_interrupt_at("rl", 2))
    assert (tmp_path / "cut" / "checkpoints" / "step-2" / "rft_meta.json").is_file()
    run(tmp_path, *overrides, name="cut", resume=True)
    got = without_timing(read_metrics(tmp_path / "cut" / "metrics.jsonl"))
    assert [(r["stage"], r["step"]) for r in got] == [
        (r["stage"], r["step"]) for r in read_metrics(root / "metrics.jsonl")
    ]


def _interrupt_at(stage: str, step: int):
    """A progress hook that presses Ctrl-C (SIGINT) once the given step's metrics line is written."""

    def hook(record):
        if record["stage"] == stage and record["step"] == step:
            os.kill(os.getpid(), signal.SIGINT)

    return hook


@pytest.mark.parametrize("extra", [(), ("model.lora.r=4", "sft.max_steps=2")], ids=["full", "lora"])
def test_ctrl_c_then_resume_writes_the_same_metrics_as_an_uninterrupted_run(tmp_path, extra):
    overrides = ("rl.steps=4", "save_interval=3", *extra)
    full = run(tmp_path, *overrides, name="full")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, *overrides, name="cut", progress=_interrupt_at("rl", 2))
    cut = tmp_path / "cut"
    assert (cut / "checkpoints" / "step-2" / "rft_meta.json").is_file()  # saved on Ctrl-C
    # Simulate a crash after the checkpoint: a later line and a torn line that resume must drop.
    with (cut / "metrics.jsonl").open("a") as handle:
        handle.write(
            json.dumps({"stage": "rl", "step": 3, "kl": 99.0}) + "\n" + '{"stage": "rl", "st'
        )
    run(tmp_path, *overrides, name="cut", resume=True)
    expected = without_timing(read_metrics(full.run_dir / "metrics.jsonl"))
    assert without_timing(read_metrics(cut / "metrics.jsonl")) == expected


def test_ctrl_c_during_sft_then_resume(tmp_path):
    overrides = ("sft.max_steps=4", "save_interval=2", "rl.steps=1")
    full = run(tmp_path, *overrides, name="full")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, *overrides, name="cut", progress=_interrupt_at("sft", 1))
    assert (tmp_path / "cut" / "checkpoints" / "sft-step-1" / "rft_meta.json").is_file()
    run(tmp_path, *overrides, name="cut", resume=True)
    got, want = (
        read_metrics(tmp_path / "cut" / "metrics.jsonl"),
        read_metrics(full.run_dir / "metrics.jsonl"),
    )
    assert [(r["stage"], r["step"]) for r in got] == [(r["stage"], r["step"]) for r in want]
    for a, b in zip(got, want, strict=True):
        for key in ("loss", "train_reward_mean", "kl"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (key, a, b)


@pytest.mark.guarantee
def test_nan_rewards_are_skipped_then_stop_the_run(tmp_path):
    with pytest.raises(TrainingError, match="stopped after 2 numerical faults"):
        run(tmp_path, "rl.max_numerical_faults=2", "sft.enabled=false", grader=NaNGrader())
    rl = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["stage"] == "rl"]
    assert [r.get("skipped") for r in rl] == ["non-finite reward or KL"] * 2
    assert "policy_loss" not in rl[0]  # nothing was trained on the faulty step


def test_too_many_grader_errors_stop_the_run(tmp_path):
    with pytest.raises(
        TrainingError,
        match="8 of 8 grades failed \\(python_exception: 8\\).*max_grader_error_share=0.5",
    ):
        run(tmp_path, "sft.enabled=false", grader=FailingGrader())
    last = read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]
    assert last["stopped"] == "grader_errors" and last["grader_errors/python_exception"] == 8


def test_an_existing_run_needs_resume(tmp_path):
    from rft_cli.errors import ConfigError

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        run(tmp_path)


def test_cli_trains_and_prints_the_summary(tmp_path):
    from typer.testing import CliRunner

    from rft_cli.cli import app

    out = tmp_path / "cli-run"
    args = [
        "train",
        str(RECIPE),
        "--output-dir",
        str(out),
        "--set",
        "rl.steps=1",
        "--set",
        "sft.max_steps=1",
        "--quiet",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "final model:" in result.output and (out / "final" / "config.json").is_file()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "pass --resume" in again.output


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path):
    from typer.testing import CliRunner

    from rft_cli.cli import app

    out = tmp_path / "dry"
    result = CliRunner().invoke(app, ["train", str(RECIPE), "--output-dir", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert (
        plan["dry_run"] is True
        and plan["stages"]["sft"]["steps"] == 4
        and plan["stages"]["rl"]["samples"] == 24
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "extra,expected,code",
    [
        (
            '{"messages": [{"role": "user", "content": "1+8="}], "solution": "9"}\n',
            'missing field "answer"',
            1,
        ),
        ("not json\n", "line 49", 1),
    ],
)
def test_bad_data_is_caught_before_any_model_loads(tmp_path, extra, expected, code):
    from typer.testing import CliRunner

    from rft_cli.cli import app

    train = tmp_path / "train.jsonl"
    train.write_text((RECIPE.parent / "data" / "tiny-train.jsonl").read_text() + extra)
    result = CliRunner().invoke(
        app, ["train", str(RECIPE), "--set", f"data.train={train}", "--dry-run"]
    )
    assert result.exit_code == code, result.output
    assert expected in result.output and "Traceback" not in result.output


def test_train_valid_overlap_is_an_error(tmp_path):
    from typer.testing import CliRunner

    from rft_cli.cli import app

    valid = tmp_path / "valid.jsonl"
    valid.write_text(
        (RECIPE.parent / "data" / "tiny-train.jsonl").read_text().splitlines()[0] + "\n"
    )
    result = CliRunner().invoke(
        app, ["train", str(RECIPE), "--set", f"data.valid={valid}", "--dry-run"]
    )
    assert result.exit_code == 1 and "same prompt as" in result.output


def test_ppo_raises_the_reward_it_is_given(tmp_path):
    """A sign error in the advantages, the ratio or the KL placement makes this reward fall or stall."""
    records = []
    run(
        tmp_path,
        "sft.enabled=false",
        "rl.steps=30",
        "rl.learning_rate=0.01",
        "rl.prompts_per_step=8",
        "rl.samples_per_prompt=2",
        "rl.mini_batch_size=8",
        "rl.max_new_tokens=8",
        "eval.interval=1000",
        "save_interval=1000",
        grader=SevensGrader(),
        progress=records.append,
    )
    rewards = [r["train_reward_mean"] for r in records if r["stage"] == "rl"]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.05, rewards


def test_a_crashing_python_grader_is_counted_and_the_run_continues(tmp_path):
    """Issue 7: a failing sandboxed grader scores 0, its errors are counted by kind, training goes on."""
    source = "def grade(sample, item):\n    raise ValueError('boom')\n"
    config = load_run_config(
        RECIPE,
        [
            "sft.enabled=false",
            "rl.steps=2",
            "rl.max_grader_error_share=1.0",
            "eval.interval=100",
            "grader_check.enabled=false",
        ],
    )  # it fails every demonstration too
    config = config.model_copy(
        update={"grader": {"type": "python", "name": "py", "source": source, "timeout": 5}}
    )
    train(config, output_dir=tmp_path / "run")
    rl = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["stage"] == "rl"]
    assert [r["step"] for r in rl] == [1, 2]
    assert all(
        r["train_reward_mean"] == 0.0
        and sum(v for k, v in r.items() if k.startswith("grader_errors/")) == 8
        for r in rl
    )


def test_cli_ctrl_c_exits_130_with_the_resume_command(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import rft_cli.training.run as run_module
    from rft_cli.cli import app

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "train", interrupted)
    result = CliRunner().invoke(
        app, ["train", str(RECIPE), "--output-dir", str(tmp_path / "x"), "--quiet"]
    )
    assert result.exit_code == 130
    assert (
        "interrupted (Ctrl-C); a checkpoint was saved" in result.output
        and "--resume" in result.output
    )


def test_ppo_options_separate_critic_lora_adaptive_kl_truncation_penalty(tmp_path):
    result = run(
        tmp_path,
        "sft.max_steps=1",
        "rl.steps=2",
        "rl.critic=separate",
        "rl.adaptive_kl=true",
        "rl.truncated=penalize",
        "rl.truncation_penalty=-1",
        "model.lora.r=4",
        "rl.final=best",
    )
    step = result.run_dir / "checkpoints" / "step-2"
    assert (step / "critic.pt").is_file() and not (
        step / "adapter_config.json"
    ).exists()  # LoRA merged on save
    rl = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r["stage"] == "rl"]
    assert rl[0]["kl_coef"] == 0.05 and rl[1]["kl_coef"] != 0.05  # the adaptive controller moved it
    # Untrained, the tiny model rarely stops within 4 tokens: each truncated answer scores -1.
    assert any(r["truncated_share"] > 0 for r in rl)
    for r in rl:
        assert r["train_reward_mean"] <= -r["truncated_share"] + (1 - r["truncated_share"]) + 1e-6
    assert_loads(result.run_dir / "final")


def test_crash_between_the_last_sft_step_and_its_checkpoint(tmp_path, monkeypatch):
    """The warm-up's last line (with its evaluation) is written just before checkpoints/sft; a crash
    in between must not leave that line twice after --resume."""
    from rft_cli.run_folder import checkpoints

    real_commit = checkpoints.commit_checkpoint

    def crash(tmp, folder, meta):
        if Path(folder).name == "sft":
            raise RuntimeError("simulated crash")
        return real_commit(tmp, folder, meta)

    monkeypatch.setattr(checkpoints, "commit_checkpoint", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path, "rl.steps=1", "save_interval=4")
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3, 4]
    monkeypatch.setattr(checkpoints, "commit_checkpoint", real_commit)
    run(tmp_path, "rl.steps=1", "save_interval=4", resume=True)
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [(r["stage"], r["step"]) for r in records] == [
        ("sft", 1),
        ("sft", 2),
        ("sft", 3),
        ("sft", 4),
        ("rl", 1),
    ]
    assert "loss" in records[3] and "valid_reward_mean" in records[3]


def test_a_saved_model_folder_trains_like_a_hub_model(tmp_path, tiny_model_dir):
    result = run(
        tmp_path,
        f"model={{name: {tiny_model_dir}}}",
        "sft.max_steps=1",
        "rl.steps=1",
        "rl.final=last",
    )
    assert (
        result.summary["final_source"] == "step-1"
        and result.summary["final_checkpoint"] == "checkpoints/step-1"
    )
    assert_loads(result.run_dir / "final")


def test_grpo_with_lora_gets_a_merged_final_model(tmp_path):
    """TRL saves LoRA checkpoints as adapters only; final/ must still load as a plain model."""
    result = run(tmp_path, "rl.algorithm=grpo", "model.lora.r=4", "sft.max_steps=1", "rl.steps=1")
    assert (result.run_dir / "checkpoints" / "step-1" / "adapter_config.json").is_file()
    assert not (result.run_dir / "final" / "adapter_config.json").exists()
    assert_loads(result.run_dir / "final")


def test_micro_batches_give_the_same_training_as_whole_minibatches(tmp_path):
    """Gradient accumulation weights each micro-batch by its token share: same updates, less memory."""
    whole = run(tmp_path, "sft.enabled=false", "rl.steps=3", name="whole")
    micro = run(tmp_path, "sft.enabled=false", "rl.steps=3", "rl.micro_batch_size=1", name="micro")
    a, b = (without_timing(read_metrics(r.run_dir / "metrics.jsonl")) for r in (whole, micro))
    for x, y in zip(a, b, strict=True):
        for key, value in x.items():
            if isinstance(value, float):  # clip fractions count ties, which float noise can flip
                tolerance = 0.05 if key.endswith("clip_frac") else 1e-5
                assert y[key] == pytest.approx(value, rel=1e-3, abs=tolerance), key


def test_summary_table_shows_what_rl_added_over_the_warm_up():
    """The default recipe's last table must show accuracy after warm-up, after RL, and the difference."""
    from rft_cli.cli.train import _rl_gain

    stages = {
        "sft": {"valid_reward_mean": 0.5, "valid_accuracy": 0.25},
        "rl": {"valid_reward_mean": 0.75, "valid_accuracy": 0.5},
    }
    assert _rl_gain(stages) == (0.25, 0.25)
    assert _rl_gain({"sft": stages["sft"]}) is None
    assert _rl_gain({"sft": {"valid_reward_mean": 0.5}, "rl": {"valid_reward_mean": 0.25}}) == (
        -0.25,
        None,
    )


def test_settings_given_on_resume_apply_from_the_next_step(tmp_path):
    """Regression (issue 18): `--resume --set rl.kl_coef=0.5` logged kl_coef 0.05 on the resumed
    steps while config.yaml said 0.5: the checkpoint's KL coefficient (and its optimizer's learning
    rate) silently won over the settings the user gave."""
    run(tmp_path)
    resumed = run(tmp_path, "rl.steps=5", "rl.kl_coef=0.5", "rl.learning_rate=0.002", resume=True)
    rl = [r for r in read_metrics(resumed.run_dir / "metrics.jsonl") if r["stage"] == "rl"]
    assert [r["step"] for r in rl] == [1, 2, 3, 4, 5]
    before = load_run_config(RECIPE).rl
    assert all(
        r["kl_coef"] == before.kl_coef and r["learning_rate"] == before.learning_rate
        for r in rl[:3]
    )
    assert all(r["kl_coef"] == 0.5 and r["learning_rate"] == 0.002 for r in rl[3:])
    assert rl[3]["config_changed"] == {
        "kl_coef": [before.kl_coef, 0.5],
        "learning_rate": [before.learning_rate, 0.002],
    }
    assert "config_changed" not in rl[4]


def test_resume_refuses_what_the_checkpoint_holds_and_lists_what_it_applies(tmp_path):
    """`--resume --set seed=3` would change the order the saved data position counts in: exit 2,
    naming the key. A sampling setting applies from the next step and its metrics line says so."""
    from typer.testing import CliRunner

    from rft_cli.cli import app

    run(tmp_path)
    refused = CliRunner().invoke(
        app,
        ["train", str(RECIPE), "-o", str(tmp_path / "run"), "--resume", "--set", "seed=3", "-q"],
    )
    assert refused.exit_code == 2
    assert (
        "--set seed=3: cannot change on --resume" in refused.output
        and "Traceback" not in refused.output
    )
    resumed = run(tmp_path, "rl.steps=4", "rl.temperature=0.7", resume=True)
    rl = [r for r in read_metrics(resumed.run_dir / "metrics.jsonl") if r["stage"] == "rl"]
    assert [r["step"] for r in rl] == [1, 2, 3, 4]
    assert rl[3]["config_changed"] == {"rl.temperature": [1.0, 0.7]}
    assert not any("config_changed" in r for r in rl[:3])


def test_every_algorithm_logs_the_per_token_kl_under_its_own_name(tmp_path):
    """Regression (issue 27): PPO logged the mean summed log-ratio per answer as `kl` (negative at
    times), GRPO TRL's per-token k3 and RLOO TRL's per-token log-ratio, all as `kl` on one plot
    axis. Now `kl` is the per-token k3 (PPO, GRPO), `kl_logratio` the per-token log-ratio (PPO,
    RLOO) and `kl_sum` PPO's per-answer sum. The sevens grader gives a random model's answers
    different rewards, so the policy moves whatever it samples (the recipe's exact-match grader
    scored every answer 0 on one CPU, and nothing moved)."""
    quick = ("sft.enabled=false", "rl.steps=4", "rl.learning_rate=0.01", "eval.interval=10")
    for algorithm in ("ppo", "grpo", "rloo"):
        run(tmp_path, *quick, f"rl.algorithm={algorithm}", name=algorithm, grader=SevensGrader())
        rl = [r for r in read_metrics(tmp_path / algorithm / "metrics.jsonl") if r["stage"] == "rl"]
        assert len(rl) == 4
        names = {"ppo": {"kl", "kl_logratio", "kl_sum"}, "grpo": {"kl"}, "rloo": {"kl_logratio"}}
        for record in rl:
            assert {k for k in record if k.startswith("kl") and k != "kl_coef"} == names[algorithm]
            assert record.get("kl", 0.0) >= 0.0
        if algorithm == "ppo":  # the same log-ratios, summed per answer or averaged per token
            for r in rl:
                assert r["kl_sum"] == pytest.approx(
                    r["kl_logratio"] * r["response_length_mean"], rel=1e-4, abs=1e-9
                )
            assert any(r["kl"] > 0 for r in rl)
