"""The warm-up's lazy tokenization against TRL's own dataset preparation, on the character tokenizer."""

from __future__ import annotations

import json

import pytest

from rft_cli.config import parse_run_config
from rft_cli.errors import ConfigError
from rft_cli.run_folder.metrics import NullLogger
from rft_cli.tiny import build_char_tokenizer, build_tiny_model
from rft_cli.training import sft as sft_stage
from rft_cli.training.context import RunContext
from rft_cli.training.run import train as run_train
from rft_cli.training.sft import (
    SFTCollator,
    SFTEncoder,
    build_sft_trainer,
    check_demonstrations_fit,
    sft_examples,
    sft_rows,
    sft_trainer_args,
)
from tests.train_fakes import ROWS_50K, load_test_config, write_rows

MAX_LENGTH = 48
ROWS = [
    {"messages": [{"role": "user", "content": "2+3="}], "solution": "5", "answer": "5"},
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "7 times 6?"},
            {"role": "assistant", "content": "42"},
        ],
        "answer": "42",
    },
    {"messages": [{"role": "user", "content": "a row without a demonstration"}], "answer": "x"},
    {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Count to nine"},
        ],
        "solution": "1 2 3 4 5 6 7 8 9, done",
        "answer": "9",
    },
    {
        "messages": [
            {"role": "developer", "content": "Answer in digits."},
            {"role": "user", "content": [{"type": "text", "text": "Ten minus four?"}]},
        ],
        "solution": "10-4=6. #### 6 and a tail that max_length cuts",
        "answer": "6",
    },
    {"messages": [{"role": "user", "content": "1+1="}], "solution": "2", "answer": "2"},
    {
        "messages": [{"role": "user", "content": "9-9="}, {"role": "assistant", "content": "0"}],
        "answer": "0",
    },
]


def _ctx(tmp_path, rows=ROWS, **sft) -> RunContext:
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    config = parse_run_config(
        {
            "model": {"tiny": "llama-test"},
            "data": {"train": str(train)},
            "grader": {
                "type": "string_check",
                "name": "exact",
                "input": "{{ sample.output_text }}",
                "reference": "{{ item.answer }}",
                "operation": "eq",
            },
            "sft": {"max_steps": 2, "batch_size": 2, "max_length": MAX_LENGTH, **sft},
            "seed": 3,
        }
    )
    return RunContext(config, tmp_path, rows, [], None, NullLogger())


def _trl_prepared_trainer(ctx: RunContext, tokenizer):
    """The slow path this module replaces: prompt/completion pairs that TRL tokenizes up front."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    examples = sft_examples(ctx.train_rows, "solution")
    args = SFTConfig(**sft_trainer_args(ctx, len(examples)))
    return SFTTrainer(
        model=build_tiny_model(tokenizer, "llama-test"),
        args=args,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
    )


def test_rows_without_a_demonstration_are_not_examples():
    assert sft_rows(ROWS, "solution") == [0, 1, 3, 4, 5, 6]
    assert len(sft_examples(ROWS, "solution")) == 6


@pytest.mark.slow
def test_lazy_examples_and_batches_equal_trls_preparation(tmp_path):
    """Same token ids, same completion-only labels (truncated to max_length), same batches in the
    same order for the seed: the fast path trains exactly like TRL's preparation would."""
    ctx, tokenizer = _ctx(tmp_path), build_char_tokenizer()
    reference = _trl_prepared_trainer(ctx, tokenizer)
    rows = sft_rows(ROWS, "solution")
    encode = SFTEncoder(ROWS, tokenizer, "solution", MAX_LENGTH)
    ours = build_sft_trainer(
        ctx, build_tiny_model(tokenizer, "llama-test"), tokenizer, rows, encode
    )

    assert len(reference.train_dataset) == len(ours.train_dataset) == len(rows)
    for position, index in enumerate(rows):
        expected, got = reference.train_dataset[position], encode(index)
        assert got["input_ids"] == expected["input_ids"] and got["labels"] == expected["labels"], (
            index
        )
    lengths = [len(encode(i)["input_ids"]) for i in rows]
    assert (
        max(lengths) == MAX_LENGTH and min(lengths) < MAX_LENGTH
    )  # truncation is exercised, padding too
    assert all(-100 in encode(i)["labels"] and encode(i)["labels"][-1] != -100 for i in rows[:2])

    expected_batches, batches = (
        list(reference.get_train_dataloader()),
        list(ours.get_train_dataloader()),
    )
    assert len(batches) == len(expected_batches) == 3
    for expected, got in zip(expected_batches, batches, strict=True):
        assert set(got) == set(expected)
        for key in expected:
            assert got[key].tolist() == expected[key].tolist(), key


def test_each_row_is_tokenized_once_while_the_cache_has_room():
    """Later epochs take a row's tokens from the collator's cache, equal to a fresh encoding; once
    the token budget is spent, further rows are tokenized every time they are drawn."""
    tokenizer = build_char_tokenizer()
    encode = SFTEncoder(ROWS, tokenizer, "solution", MAX_LENGTH)
    calls: list[int] = []

    def counting(index: int) -> dict[str, list[int]]:
        calls.append(index)
        return encode(index)

    rows = sft_rows(ROWS, "solution")
    sizes = {i: len(encode(i)["input_ids"]) for i in rows}
    budget = sizes[rows[0]] + sizes[rows[1]]  # room for the first two rows only
    collate = SFTCollator(counting, lambda examples: examples, cache_tokens=budget)
    first = collate([{"row": i} for i in rows])
    first[0]["input_ids"].append(-1)  # what a caller does to a batch does not reach the cache
    second = collate([{"row": i} for i in rows])

    assert calls == rows + rows[2:]
    assert second == [encode(i) for i in rows]
    assert collate.cache_left == 0


def test_a_demonstration_cut_off_entirely_adds_nothing_to_the_loss():
    """TRL drops such a row; the lazy path keeps its place in the order with every label masked."""
    tokenizer = build_char_tokenizer()
    rows = [
        {
            "messages": [{"role": "user", "content": "x" * 40}],
            "solution": "long prompt",
            "answer": "1",
        }
    ] + ROWS[:1]
    encode = SFTEncoder(rows, tokenizer, "solution", 16)
    cut = encode(0)
    assert len(cut["input_ids"]) == 16 and set(cut["labels"]) == {-100}
    check_demonstrations_fit(encode, [0, 1])  # the second row fits, so the run goes on


def test_no_demonstration_that_fits_is_a_config_error():
    tokenizer = build_char_tokenizer()
    rows = [
        {"messages": [{"role": "user", "content": "x" * 40}], "solution": "5", "answer": "5"}
    ] * 3
    with pytest.raises(
        ConfigError, match=r"sft: none of the 3 demonstrations fits in sft.max_length=16 "
    ):
        check_demonstrations_fit(SFTEncoder(rows, tokenizer, "solution", 16), [0, 1, 2])


@pytest.mark.slow
def test_a_warm_up_whose_batches_are_all_cut_off_still_trains(tmp_path):
    """With five of six prompts filling sft.max_length, most batches carry no loss token: TRL's loss
    is then a finite zero, so the run must finish with finite metrics rather than count faults."""
    from rft_cli.run_folder.metrics import read_metrics
    from rft_cli.training.run import train

    long_row = {"messages": [{"role": "user", "content": "y" * 40}], "solution": "7", "answer": "7"}
    rows = [long_row] * 5 + [ROWS[0]]
    ctx = _ctx(tmp_path, rows=rows, max_length=16, max_steps=6)
    train(ctx.config, output_dir=tmp_path / "run", stage="sft")
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(r["loss"] is not None and r["loss"] >= 0 for r in records)
    assert any(r["loss"] == 0 for r in records) and any(r["loss"] > 0 for r in records)


@pytest.mark.slow
@pytest.mark.guarantee
def test_the_warm_up_tokenizes_only_the_rows_it_trains_on(tmp_path, monkeypatch):
    """Found by bench/train_50k_start.py: TRL's SFTTrainer prepared all 50,000 demonstrations (chat
    template twice per row, then several Arrow copies) before its first step: 110 s and +473 MiB.
    A one-step warm-up on 50,000 rows must now template a few batches' worth of rows, not every
    row, and hand the Trainer a dataset of row numbers rather than another copy of the rows."""
    monkeypatch.setenv("RFT_VALIDATE_WORKERS", "1")
    sft_settings = {"max_steps": 1, "batch_size": 8, "max_length": 512}
    config = load_test_config(write_rows(tmp_path / "train.jsonl", ROWS_50K), sft=sft_settings)
    tokenizer_class, templated = type(build_char_tokenizer()), []
    real_template, real_build = tokenizer_class.apply_chat_template, sft_stage.build_sft_trainer

    def counting_template(self, conversation, *args, **kwargs):
        templated.append(len(conversation))
        return real_template(self, conversation, *args, **kwargs)

    trainers = []
    monkeypatch.setattr(tokenizer_class, "apply_chat_template", counting_template)
    monkeypatch.setattr(
        sft_stage,
        "build_sft_trainer",
        lambda *a, **k: trainers.append(real_build(*a, **k)) or trainers[-1],
    )
    run_train(config, output_dir=tmp_path / "run", stage="sft")

    assert (tmp_path / "run" / "checkpoints" / "sft").is_dir()
    dataset = trainers[0].train_dataset
    assert len(dataset) == ROWS_50K and dataset.column_names == ["row"]
    assert (
        dataset.data.nbytes <= 8 * ROWS_50K
    )  # one int64 per row; the rows themselves are 15 MiB of JSON
    # Two templates per row: the fit check's first row, then the step's batch of 8 (and at most two
    # batches the data loader draws ahead). Preparing every row up front would be 100,000 calls.
    assert 2 * (1 + 8) <= len(templated) <= 2 * (1 + 3 * 8), len(templated)
