"""The TrainingArguments that every TRL stage of `rft train` starts from."""

from __future__ import annotations

import pytest
import torch

from rft_cli.config import parse_run_config
from rft_cli.metrics import NullLogger
from rft_cli.training.common import RunContext
from rft_cli.training.rl_trl import _trl_config
from rft_cli.training.sft import sft_trainer_args

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU defaults (float32)")


def _ctx(tmp_path, algorithm: str = "grpo", **model) -> RunContext:
    train = tmp_path / "train.jsonl"
    train.write_text('{"messages": [{"role": "user", "content": "1+1="}], "answer": "2"}\n', encoding="utf-8")
    config = parse_run_config({
        "model": {"tiny": "llama-test", **model}, "data": {"train": str(train)},
        "grader": {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
                   "reference": "{{ item.answer }}", "operation": "eq"},
        "rl": {"algorithm": algorithm, "samples_per_prompt": 2},
    })
    return RunContext(config, tmp_path, [], [], None, NullLogger())


def _configs(ctx: RunContext) -> list:
    from trl import SFTConfig

    return [SFTConfig(**sft_trainer_args(ctx, 8)), _trl_config(ctx, ctx.run_dir / "work")]


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_trl_stages_train_float32_without_checkpointing_unless_configured(tmp_path, algorithm):
    """TRL 1.16's SFTConfig and GRPOConfig default to bf16=True and gradient_checkpointing=True even
    on CPU; `common_trainer_args` used to pass checkpointing only when it was on, so every TRL stage
    of a float32 run recomputed its activations (slower, same numbers) although the config said no."""
    for args in _configs(_ctx(tmp_path, algorithm)):
        assert (args.bf16, args.fp16, args.gradient_checkpointing) == (False, False, False), type(args).__name__
    for args in _configs(_ctx(tmp_path, algorithm, gradient_checkpointing=True)):
        assert args.gradient_checkpointing is True, type(args).__name__
