"""The TrainingArguments that every TRL stage of `rft train` starts from, and what rl.* means under GRPO/RLOO."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from rft_cli.config import parse_run_config
from rft_cli.graders.base import Grader, GradeResult
from rft_cli.run_folder.metrics import NullLogger
from rft_cli.training.context import RunContext
from rft_cli.training.rl_trl import build_trl_config
from rft_cli.training.sft import sft_trainer_args

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-test.yaml"

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the CPU defaults (float32)"
)


def _ctx(tmp_path, algorithm: str = "grpo", rl: dict | None = None, **model) -> RunContext:
    train = tmp_path / "train.jsonl"
    train.write_text(
        '{"messages": [{"role": "user", "content": "1+1="}], "answer": "2"}\n', encoding="utf-8"
    )
    config = parse_run_config(
        {
            "model": {"tiny": "llama-test", **model},
            "data": {"train": str(train)},
            "grader": {
                "type": "string_check",
                "name": "exact",
                "input": "{{ sample.output_text }}",
                "reference": "{{ item.answer }}",
                "operation": "eq",
            },
            "rl": {"algorithm": algorithm, "samples_per_prompt": 2, **(rl or {})},
        }
    )
    return RunContext(config, tmp_path, [], [], None, NullLogger())


def _configs(ctx: RunContext) -> list:
    from trl import SFTConfig

    return [SFTConfig(**sft_trainer_args(ctx, 8)), build_trl_config(ctx, ctx.run_dir / "work")]


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_trl_stages_train_float32_without_checkpointing_unless_configured(tmp_path, algorithm):
    """TRL 1.16's SFTConfig and GRPOConfig default to bf16=True and gradient_checkpointing=True even
    on CPU; `common_trainer_args` used to pass checkpointing only when it was on, so every TRL stage
    of a float32 run recomputed its activations (slower, same numbers) although the config said no.
    Under transformers 5.25 the setting is `activation_checkpointing`: passing the old name printed
    a FutureWarning on every run (an error here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        configs = _configs(_ctx(tmp_path, algorithm))
    for args in configs:
        assert (args.bf16, args.fp16, args.gradient_checkpointing) == (False, False, False), type(
            args
        ).__name__
    for args in _configs(_ctx(tmp_path, algorithm, gradient_checkpointing=True)):
        assert args.gradient_checkpointing is True, type(args).__name__


# -- GRPO/RLOO: what rl.* means there ------------------------------------------------------------


@pytest.mark.parametrize(
    "patch,expected",
    [
        ({"gamma": 0.9}, "rl.gamma applies to rl.algorithm: ppo only"),
        ({"vf_coef": 1.0}, "rl.vf_coef applies to rl.algorithm: ppo only"),
        ({"critic": "separate"}, "rl.critic applies to rl.algorithm: ppo only"),
        ({"adaptive_kl": True}, "rl.adaptive_kl applies to rl.algorithm: ppo only"),
        ({"whiten_advantages": False}, "rl.whiten_advantages applies to rl.algorithm: ppo only"),
        (
            {"truncation_penalty": -1.0},
            "rl.truncation_penalty applies only with rl.truncated: penalize",
        ),
        ({"prompts_per_step": 3, "mini_batch_size": 4}, "must be a multiple of rl.mini_batch_size"),
    ],
)
def test_rl_keys_that_mean_nothing_for_grpo_are_refused(tmp_path, patch, expected):
    from rft_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="rl") as info:
        _ctx(tmp_path, rl=patch)
    assert expected in str(info.value) and info.value.exit_code == 2


def test_ppo_only_keys_at_their_defaults_still_load_so_a_resolved_config_yaml_loads_again(tmp_path):
    ctx = _ctx(
        tmp_path, rl={"gamma": 1.0, "lam": 0.95, "critic": "value_head", "truncation_penalty": 0.0}
    )
    assert ctx.config.rl.algorithm == "grpo"


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_one_rl_step_is_one_sampled_batch_of_minibatch_optimizer_steps(tmp_path, algorithm):
    """TRL used to get max_steps=rl.steps with num_iterations=ppo_epochs, so a 100-step GRPO run
    sampled 50 batches and made one optimizer step per pass where our PPO makes one per minibatch."""
    ctx = _ctx(
        tmp_path,
        algorithm,
        rl={
            "prompts_per_step": 4,
            "mini_batch_size": 4,
            "micro_batch_size": 2,
            "ppo_epochs": 3,
            "steps": 5,
        },
    )
    args = build_trl_config(ctx, tmp_path / "work")
    # batch 8 = 4 slices of micro 2; a minibatch of 4 = 2 accumulated slices; 2 minibatches x 3 passes
    assert (
        args.per_device_train_batch_size,
        args.gradient_accumulation_steps,
        args.steps_per_generation,
    ) == (2, 2, 4)
    assert (args.num_iterations, args.max_steps, args.logging_steps) == (3, 5 * 6, 6)
    assert (
        args.save_steps == ctx.config.save_interval * 6 and args.mask_truncated_completions is False
    )


def test_prompts_keep_their_last_max_prompt_length_tokens_as_in_ppo(tiny_model_dir):
    """TRL 1.16 has no prompt-length limit: rl.max_prompt_length was silently ignored by GRPO/RLOO."""
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    from rft_cli.training.rl_trl import truncating_trainer_class

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = object.__new__(truncating_trainer_class(GRPOTrainer, 3))
    # the attributes GRPOTrainer._tokenize_prompts reads for a text-only conversational batch
    trainer.__dict__.update(
        _is_vlm=False,
        environment_factories=None,
        processing_class=tokenizer,
        tools=None,
        chat_template=None,
        chat_template_kwargs={},
    )
    prompts = [[{"role": "user", "content": "12+34="}], [{"role": "user", "content": "5="}]]
    ids, _, _ = trainer._tokenize_prompts(prompts)
    full = [
        tokenizer.apply_chat_template(
            p, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        for p in prompts
    ]
    assert all(len(f) > 3 for f in full)
    assert ids == [list(f)[-3:] for f in full]


class _RecordingGrader(Grader):
    """Reward 1.0 for every answer; remembers each graded text (a grade is one call)."""

    name = "recording"

    def __init__(self):
        self.texts: list[str] = []

    def grade(self, sample, item):
        self.texts.append(sample["output_text"] if isinstance(sample, dict) else sample)
        return GradeResult(reward=1.0)


def _train_rl(tmp_path, *overrides: str):
    from rft_cli.config import load_run_config
    from rft_cli.run_folder.metrics import read_metrics
    from rft_cli.training.run import train

    grader = _RecordingGrader()
    lean = (
        "sft.enabled=false",
        "data.valid=null",
        "rl.steps=2",
        "rl.prompts_per_step=4",
        "rl.samples_per_prompt=2",
        "rl.mini_batch_size=4",
        "rl.ppo_epochs=2",
        "save_interval=1",
        "grader_check.enabled=false",
    )  # the preflight self-test would grade the demonstrations too
    result = train(
        load_run_config(RECIPE, [*lean, *overrides]), output_dir=tmp_path / "run", grader=grader
    )
    return (
        result.run_dir,
        grader,
        [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r["stage"] == "rl"],
    )


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_two_rl_steps_grade_exactly_two_sampled_batches(tmp_path, algorithm):
    """`rl.steps: 2` with ppo_epochs 2 used to sample one batch under GRPO/RLOO (TRL's max_steps
    counted optimizer steps and num_iterations reused each batch): ppo and grpo counted differently."""
    run_dir, grader, rl = _train_rl(tmp_path, f"rl.algorithm={algorithm}", "rl.micro_batch_size=2")
    assert len(grader.texts) == 2 * 4 * 2
    assert [r["step"] for r in rl] == [1, 2]
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step-*")) == [
        "step-2"
    ]  # keep_checkpoints: 1
    state = json.loads((run_dir / "checkpoints" / "step-2" / "trainer_state.json").read_text())
    assert (
        state["global_step"] == 2 * 2 * 2
    )  # 2 batches x 2 minibatches x 2 passes, one optimizer step each


@pytest.mark.slow
def test_grpo_truncated_answers_get_the_truncation_penalty_as_in_ppo(tmp_path):
    """`truncated: penalize` used to become TRL's mask_truncated_completions (truncated answers left
    out of the loss) and rl.truncation_penalty was ignored. With one new token, an answer is
    truncated unless that token is the end of the answer (it then decodes to an empty text)."""
    _, grader, rl = _train_rl(
        tmp_path,
        "rl.algorithm=grpo",
        "rl.max_new_tokens=1",
        "rl.truncated=penalize",
        "rl.truncation_penalty=-3",
    )
    rewards = [1.0 if text == "" else -3.0 for text in grader.texts]
    assert -3.0 in rewards
    for step, record in enumerate(rl):
        batch = rewards[step * 8 : (step + 1) * 8]
        assert record["train_reward_mean"] == pytest.approx(sum(batch) / len(batch))


def test_grpo_samples_without_the_model_folders_distribution_filters(tmp_path):
    """Regression: TRL sets top_k/top_p/temperature/repetition_penalty itself but left min_p,
    typical_p, no_repeat_ngram_size and suppress_tokens to the model folder's generation_config.json
    (a min_p/typical_p folder put the GRPO sampler 0.60 away from the softmax in total variation)."""
    from trl import GRPOTrainer

    from tests.hub_like import build_bpe_tokenizer, build_qwen2_model, hub_generation_config

    tokenizer = build_bpe_tokenizer()
    model = build_qwen2_model(tokenizer, "tiny", seed=1)
    model.generation_config = hub_generation_config(
        tokenizer,
        {
            "do_sample": True,
            "min_p": 0.2,
            "typical_p": 0.5,
            "no_repeat_ngram_size": 1,
            "suppress_tokens": [5, 6],
        },
    )
    folder = str(tmp_path / "model")  # TRL reloads the reference model by name (rl.kl_coef > 0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ctx = _ctx(tmp_path)
    trainer = GRPOTrainer(
        model=folder,
        processing_class=tokenizer,
        reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
        args=build_trl_config(ctx, tmp_path / "work"),
        train_dataset=_prompts_dataset(),
    )
    effective, _ = trainer.model._prepare_generation_config(trainer.generation_config)
    assert effective.top_k == 0 and effective.repetition_penalty == 1.0
    assert effective.min_p in (None, 0.0) and effective.typical_p == 1.0
    assert effective.no_repeat_ngram_size == 0 and not effective.suppress_tokens


def _prompts_dataset():
    from datasets import Dataset

    return Dataset.from_list([{"prompt": [{"role": "user", "content": "1+1="}]}] * 4)


def test_ppo_logs_train_reward_std_as_trl_does():
    """Regression (issue 27): PPO logged the population std (n) and TRL the sample std (n - 1),
    so `train_reward_std`, and the `no_signal` alarm reading it, meant two things."""
    from trl.trainer.utils import nanstd

    from rft_cli.training.ppo_math import reward_std

    generator = torch.Generator().manual_seed(0)
    for rewards in (
        torch.full((16,), 0.1),
        torch.rand(16, generator=generator),
        torch.tensor([0.0, 1.0]),
    ):
        assert reward_std(rewards) == pytest.approx(nanstd(rewards).item(), rel=1e-6)
