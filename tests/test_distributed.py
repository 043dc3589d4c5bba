"""Distributed modes for PPO: refused before any model loads, or following accelerate's DeepSpeed contract.

DDP on CPU (gloo, two processes) is tested in tests/test_train_crash.py. accelerate 1.15 runs FSDP
on GPUs only (on a CPU an FSDP config silently becomes plain DDP), so PPO refuses it. DeepSpeed
ZeRO-2 runs on this CPU machine with one process (DeepSpeed's CPU accelerator, gloo); the test
that needs it skips where `deepspeed` is not installed (`pip install rft[deepspeed]`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from rft_cli.config import RLSettings, load_run_config
from rft_cli.errors import ConfigError
from rft_cli.training.launch import check_launch, configure_deepspeed

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "tiny-test.yaml"


def _launched(monkeypatch, **env: str) -> None:
    for key in (
        "ACCELERATE_USE_FSDP",
        "ACCELERATE_USE_DEEPSPEED",
        "ACCELERATE_DEEPSPEED_ZERO_STAGE",
        "WORLD_SIZE",
    ):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize(
    "env,expected",
    [
        ({"ACCELERATE_USE_FSDP": "true"}, "rl.algorithm ppo does not run under FSDP"),
        (
            {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"},
            "DeepSpeed ZeRO-3 (rollouts need whole parameters",
        ),
        (
            {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "0"},
            "DeepSpeed ZeRO-0",
        ),
    ],
)
def test_modes_ppo_cannot_run_are_refused_by_the_dry_run_before_any_model_loads(
    monkeypatch, env, expected
):
    from typer.testing import CliRunner

    from rft_cli.cli import app

    _launched(monkeypatch, **env)
    result = CliRunner().invoke(app, ["train", str(RECIPE), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert expected in result.output


@pytest.mark.parametrize(
    "algorithm,env",
    [
        ("ppo", {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}),
        ("ppo", {}),
        ("grpo", {"ACCELERATE_USE_FSDP": "true"}),  # TRL's Trainer runs FSDP and ZeRO-3 itself
        ("grpo", {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}),
    ],
)
def test_supported_modes_pass(monkeypatch, algorithm, env):
    _launched(monkeypatch, **env)
    check_launch(load_run_config(RECIPE, [f"rl.algorithm={algorithm}"]))


@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
def test_alarms_stop_on_is_refused_with_several_processes(monkeypatch, algorithm):
    """Only the main process watches the metrics: its alarm stop would leave the others waiting."""
    _launched(monkeypatch, WORLD_SIZE="2")
    with pytest.raises(ConfigError, match="alarms.stop_on"):
        check_launch(
            load_run_config(RECIPE, [f"rl.algorithm={algorithm}", "alarms.stop_on=[kl_high]"])
        )
    check_launch(
        load_run_config(RECIPE, [f"rl.algorithm={algorithm}"])
    )  # alarms without stop_on are fine
    _launched(monkeypatch, WORLD_SIZE="1")
    check_launch(load_run_config(RECIPE, [f"rl.algorithm={algorithm}", "alarms.stop_on=[kl_high]"]))


def test_the_deepspeed_config_takes_ppos_minibatch_and_clipping_over_the_accelerate_file():
    """The engine config's `gradient_clipping` (1.0 in our recipes) used to override rl.max_grad_norm,
    and with gradient_accumulation_steps 1 every micro-batch took its own engine step."""
    rl = RLSettings(prompts_per_step=8, mini_batch_size=4, micro_batch_size=2, max_grad_norm=0.3)
    ds = {
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "train_batch_size": "auto",
        "zero_optimization": {"stage": 2},
    }
    configure_deepspeed(ds, rl, world_size=4)
    assert ds == {
        "gradient_accumulation_steps": 2,
        "gradient_clipping": 0.3,
        "train_batch_size": 2 * 2 * 4,
        "train_micro_batch_size_per_gpu": 2,
        "zero_optimization": {"stage": 2},
    }


class _FakeEngine:
    """Records the calls a DeepSpeed engine gets; `step` applies unless the accumulated loss was not finite."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.pending_finite = True
        self.applied = True
        self.fp16 = False

    def set_gradient_accumulation_boundary(self, is_boundary):
        self.calls.append(("boundary", is_boundary))

    def backward(self, loss, scale_wrt_gas=True):
        self.calls.append(("backward", scale_wrt_gas))
        self.pending_finite = self.pending_finite and bool(torch.isfinite(loss))

    def step(self):
        self.calls.append(("step",))
        self.applied, self.pending_finite = self.pending_finite, True

    def was_step_applied(self):
        return self.applied

    def fp16_enabled(self):
        return self.fp16

    def get_global_grad_norm(self):
        return 0.5 if self.applied else float("inf")


def _trainer_with_engine(losses: list[float] | None = None):
    """A PPOTrainer whose model pieces are fakes: only `_update`'s optimizer-step logic is real."""
    from rft_cli.training.ppo import PPOTrainer
    from rft_cli.training.ppo_optim import EngineUpdates

    trainer = object.__new__(PPOTrainer)
    trainer.cfg = RLSettings(
        prompts_per_step=8, mini_batch_size=4, micro_batch_size=2, ppo_epochs=2
    )
    trainer.ctx = SimpleNamespace(config=SimpleNamespace(seed=0))
    trainer._shares_prompts = False  # as under any DeepSpeed engine
    trainer.accelerator = SimpleNamespace(
        num_processes=1, scaler=None
    )  # DeepSpeed does its own loss scaling
    trainer.updates = EngineUpdates(
        trainer.accelerator, None, SimpleNamespace(step=lambda: None), _FakeEngine()
    )
    trainer.ac = SimpleNamespace(core=torch.nn.Linear(1, 1))
    trainer._pass_tokens = lambda: None  # no model config to estimate a pass's memory from
    values = iter(losses or [])
    trainer._micro_losses = lambda mb, *share: (
        torch.tensor(next(values, 1.0)),
        {"policy_loss": 0.0},
    )
    batch = {
        "input_ids": torch.zeros(8, 3, dtype=torch.long),
        "attention_mask": torch.ones(8, 3, dtype=torch.long),
        "mask": torch.ones(8, 2),
    }
    return trainer, batch


def test_under_deepspeed_each_minibatch_takes_one_engine_step_after_its_micro_batches():
    """accelerate's `backward` steps the engine after every call and divides the loss by the
    engine's accumulation steps; PPO's micro-batch losses already sum to the minibatch's."""
    trainer, batch = _trainer_with_engine()
    stats = trainer._update(batch, step=1)
    one_minibatch = [
        ("boundary", False),
        ("backward", False),
        ("boundary", True),
        ("backward", False),
        ("step",),
    ]
    assert trainer.updates.engine.calls == one_minibatch * (2 * 2)  # 2 minibatches x 2 epochs
    assert (
        stats["grad_norm"] == 0.5
    )  # read from the engine, a float (accelerate's clip_grad_norm_ returns no tensor)


def test_under_deepspeed_a_non_finite_loss_is_sent_through_the_engines_skipped_step():
    """The accumulated gradients live in the engine; its skip of a non-finite step is the clean reset."""
    trainer, batch = _trainer_with_engine(losses=[1.0, float("nan")])
    assert trainer._update(batch, step=1) == "non-finite loss"
    assert trainer.updates.engine.calls == [
        ("boundary", False),
        ("backward", False),
        ("boundary", True),
        ("backward", False),
        ("step",),
    ]
    assert trainer.updates.engine.applied is False


def test_under_deepspeed_a_step_the_engine_skipped_is_a_fault():
    trainer, batch = _trainer_with_engine()
    trainer.updates.engine.pending_finite = (
        False  # the engine found a non-finite gradient norm before its update
    )
    assert trainer._update(batch, step=1) == "non-finite gradient norm"


def test_under_deepspeed_float16_a_skipped_step_is_a_routine_overflow():
    trainer, batch = _trainer_with_engine(losses=[1.0, float("inf")] + [1.0] * 6)
    trainer.updates.engine.fp16 = (
        True  # the engine's loss scaling: an overflow skips the update and lowers the scale
    )
    trainer._any_process = lambda flag: (
        False
    )  # the scaled loss is finite; only the minibatch's gradients overflow
    stats = trainer._update(batch, step=1)
    assert stats["fp16_overflow_steps"] == 1.0 and stats["grad_norm"] == 0.5


# -- real DeepSpeed on CPU -------------------------------------------------------------------------

SETTINGS = [
    "sft.enabled=false",
    "data.valid=null",
    "rl.micro_batch_size=2",
    "rl.ppo_epochs=2",
    "rl.max_new_tokens=6",
    "rl.max_grad_norm=0.05",
    "grader={type: text_similarity, name: sim, input: '{{ sample.output_text }}', "
    "reference: '{{ item.answer }}', evaluation_metric: fuzzy_match}",
]


def _ds_launch(tmp_path: Path, out: Path, *sets: str, resume: bool = False) -> None:
    config = yaml.safe_load((ROOT / "recipes" / "accelerate" / "deepspeed-zero2.yaml").read_text())
    config.update(
        num_processes=1, mixed_precision="no"
    )  # gradient_clipping stays 1.0: rl.max_grad_norm must win
    path = tmp_path / "ds.yaml"
    path.write_text(yaml.safe_dump(config))
    args = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(path),
        "-m",
        "rft_cli",
        "train",
        str(RECIPE),
        "--output-dir",
        str(out),
        "--quiet",
        *[a for s in sets for a in ("--set", s)],
        *(["--resume"] if resume else []),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "DS_ACCELERATOR": "cpu"}
    done = subprocess.run(
        args, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _rl_lines(run_dir: Path) -> list[dict]:
    keys = ("train_reward_mean", "kl", "policy_loss", "value_loss", "grad_norm", "approx_kl")
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: r[k] for k in keys} for r in lines if r["stage"] == "rl"]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="deepspeed is not installed (pip install rft[deepspeed])",
)
def test_ppo_under_deepspeed_zero2_trains_and_resumes_as_the_plain_loop(tmp_path):
    """ZeRO-2 on CPU, one process: the same metrics as a run without DeepSpeed (one engine step per
    minibatch of 2 accumulated micro-batches, clipped at rl.max_grad_norm 0.05 although the
    accelerate file says 1.0), and a resume from the engine's own checkpoint continues exactly."""
    from rft_cli.training.run import train

    plain = train(load_run_config(RECIPE, [*SETTINGS, "rl.steps=3"]), output_dir=tmp_path / "plain")
    out = tmp_path / "ds"
    _ds_launch(tmp_path, out, *SETTINGS, "rl.steps=2")
    engine = out / "checkpoints" / "step-2" / "deepspeed" / "engine"
    assert (engine / "zero_pp_rank_0_mp_rank_00_optim_states.pt").is_file()
    assert not (out / "checkpoints" / "step-2" / "optimizer.pt").exists()
    _ds_launch(tmp_path, out, *SETTINGS, "rl.steps=3", resume=True)
    expected, got = _rl_lines(plain.run_dir), _rl_lines(out)
    assert len(got) == 3 and all(r["grad_norm"] > 0.05 for r in expected)  # clipping was active
    for want, have in zip(expected, got, strict=True):
        assert have == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_deepspeed_with_processes_accelerate_does_not_see_is_refused(monkeypatch):
    """On a CPU, accelerate 1.15 sets DeepSpeed up without its process group (seen with two
    processes: each had num_processes 1 and process_index 0), so each would write the run folder."""
    from rft_cli.training.ppo_optim import check_deepspeed_world

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="accelerate sees 1 process"):
        check_deepspeed_world(1)
    check_deepspeed_world(2)
