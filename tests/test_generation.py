"""Generation: model paths, chat-templated batched generation, EOS and truncation."""

from __future__ import annotations

import pytest

from rft_cli.errors import ConfigError
from rft_cli.generation import (
    Completion,
    _completion,
    encode_prompt,
    generate_completions,
    load_model_for_inference,
    resolve_model_path,
    stop_token_ids,
)

PROMPTS = [
    [{"role": "user", "content": "hi"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is two plus two, please?"},
    ],
    [{"role": "user", "content": "Name a colour."}],
]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model_for_inference(tiny_model_dir)


def test_resolve_model_folder_is_itself(tiny_model_dir):
    assert resolve_model_path(tiny_model_dir) == tiny_model_dir


def test_resolve_run_folder_means_final(tmp_path):
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "config.json").write_text("{}")
    (tmp_path / "metrics.jsonl").write_text("")
    assert resolve_model_path(tmp_path) == str(tmp_path / "final")


def test_resolve_checkpoint_folder_is_itself(tmp_path):
    step = tmp_path / "checkpoints" / "step-4"
    step.mkdir(parents=True)
    (step / "config.json").write_text("{}")
    assert resolve_model_path(step) == str(step)


def test_resolve_unfinished_run_suggests_a_checkpoint(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ConfigError, match="no final/ model.*checkpoints"):
        resolve_model_path(tmp_path)


def test_resolve_folder_without_model(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_model_path(tmp_path)


@pytest.mark.parametrize(
    "missing", ["./no/such/model", "/definitely/not/here", "runs/a/final", "bad id!"]
)
def test_resolve_missing_local_path(missing):
    with pytest.raises(ConfigError, match="no such model folder"):
        resolve_model_path(missing)


@pytest.mark.parametrize("hub_id", ["Qwen/Qwen2.5-0.5B-Instruct", "gpt2"])
def test_resolve_hub_id(hub_id):
    assert resolve_model_path(hub_id) == hub_id


def test_load_unreachable_hub_id_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="cannot load"):
        load_model_for_inference("rft-test-org/no-such-model-xyz")


def test_loaded_for_inference(loaded):
    model, tokenizer = loaded
    assert not model.training
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id is not None


def test_one_list_of_num_samples_per_prompt(loaded):
    model, tokenizer = loaded
    out = generate_completions(
        model, tokenizer, PROMPTS, max_new_tokens=5, num_samples=3, temperature=1.0
    )
    assert [len(samples) for samples in out] == [3, 3, 3]
    assert all(isinstance(c, Completion) and 1 <= c.num_tokens <= 5 for s in out for c in s)


def test_greedy_does_not_depend_on_batching(loaded):
    """Left padding and the attention mask must make a padded prompt generate what it does alone."""
    model, tokenizer = loaded
    alone = generate_completions(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=1)
    batched = generate_completions(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=8)
    assert alone == batched


def test_greedy_samples_are_identical_and_independent_objects(loaded):
    model, tokenizer = loaded
    out = generate_completions(model, tokenizer, PROMPTS[:1], max_new_tokens=6, num_samples=2)
    assert out[0][0] == out[0][1] and out[0][0] is not out[0][1]


def test_sampling_with_a_seed_is_reproducible(loaded):
    model, tokenizer = loaded
    kwargs = dict(max_new_tokens=10, num_samples=4, temperature=1.0, seed=7)
    first = generate_completions(model, tokenizer, PROMPTS, **kwargs)
    assert first == generate_completions(model, tokenizer, PROMPTS, **kwargs)
    assert (
        len({c.text for c in first[1]}) > 1
    )  # a random 2-layer model at T=1 does not repeat itself


def test_truncated_when_max_new_tokens_is_hit(loaded):
    model, tokenizer = loaded
    out = generate_completions(model, tokenizer, PROMPTS, max_new_tokens=3)
    # If a prompt stopped early, it ended on EOS and is not truncated; otherwise it used all 3 tokens.
    for (c,) in out:
        assert (c.truncated and c.num_tokens == 3) or (not c.truncated and c.num_tokens <= 3)


def test_generation_stops_at_eos(loaded):
    """Make the model's first greedy token an EOS id: generation must stop there, untruncated."""
    model, tokenizer = loaded
    first = encode_prompt(tokenizer, PROMPTS[0])
    import torch

    with torch.no_grad():
        next_id = int(model(torch.tensor([first])).logits[0, -1].argmax())
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, next_id]
    try:
        (c,) = generate_completions(model, tokenizer, PROMPTS[:1], max_new_tokens=20)[0]
    finally:
        model.generation_config.eos_token_id = saved
    assert c == Completion(text="", num_tokens=1, truncated=False)


def test_prompts_use_the_chat_template(loaded):
    """The prompt the model sees is the chat template's, ending with the assistant opening."""
    model, tokenizer = loaded
    seen = _input_ids_seen(
        model, lambda: generate_completions(model, tokenizer, PROMPTS[:1], max_new_tokens=2)
    )
    assert tokenizer.decode(seen[0][0]) == "<|user|>hi<|end|><|assistant|>"


def _input_ids_seen(model, run) -> list[list[list[int]]]:
    """The input_ids of every `model.generate` call `run()` makes."""
    seen = []
    original = model.generate

    def spy(**kwargs):
        seen.append(kwargs["input_ids"].tolist())
        return original(**kwargs)

    model.generate = spy
    try:
        run()
    finally:
        del model.generate
    return seen


def test_progress_reports_sequences(loaded):
    model, tokenizer = loaded
    calls = []
    generate_completions(
        model,
        tokenizer,
        PROMPTS,
        max_new_tokens=2,
        num_samples=2,
        temperature=0.7,
        batch_size=4,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(4, 6), (6, 6)]


def test_completion_cuts_at_first_eos(loaded):
    _, tokenizer = loaded
    ids = tokenizer("ok")["input_ids"]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    assert _completion(tokenizer, ids + [eos, pad, pad], {eos}) == Completion(
        "ok", len(ids) + 1, False
    )
    assert _completion(tokenizer, ids, {eos}) == Completion("ok", len(ids), True)


def test_no_chat_template_is_a_usage_error(loaded):
    model, tokenizer = loaded
    template = tokenizer.chat_template
    tokenizer.chat_template = None
    try:
        with pytest.raises(ConfigError, match="no chat template"):
            generate_completions(model, tokenizer, PROMPTS, max_new_tokens=2)
    finally:
        tokenizer.chat_template = template


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 4, "num_samples": 0}, "samples"),
        ({"max_new_tokens": 4, "temperature": -1.0}, "temperature"),
        ({"max_new_tokens": 4, "top_p": 0.0}, "top_p"),
        ({"max_new_tokens": 4, "batch_size": 0}, "batch size"),
    ],
)
def test_bad_arguments(loaded, kwargs, message):
    model, tokenizer = loaded
    with pytest.raises(ConfigError, match=message):
        generate_completions(model, tokenizer, PROMPTS, **kwargs)


# A hub instruct folder in miniature (tests.hub_like): byte-level BPE, ChatML, <|im_end|> EOS,
# <|endoftext|> pad, generation_config.json with two EOS ids and top_k 20 / temperature 0.7.


@pytest.fixture(scope="module")
def hub_loaded(hub_like_model_dir):
    return load_model_for_inference(hub_like_model_dir)


def test_hub_like_folder_loads_with_its_own_pad_and_eos(hub_loaded):
    model, tokenizer = hub_loaded
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert stop_token_ids(model, tokenizer) == [tokenizer.eos_token_id, tokenizer.pad_token_id]


def test_hub_like_prompt_is_chatml(hub_loaded):
    model, tokenizer = hub_loaded
    seen = _input_ids_seen(
        model, lambda: generate_completions(model, tokenizer, PROMPTS[:2], max_new_tokens=2)
    )
    texts = [tokenizer.decode(ids) for ids in seen[0]]
    # Longest prompt first; the shorter one is left-padded with <|endoftext|>, not with the EOS.
    assert texts[0] == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is two plus two, please?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    padding, prompt = texts[1].split("<|im_start|>", 1)
    assert padding and set(padding.split("<|endoftext|>")) == {""}
    assert prompt == "user\nhi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("token", ["<|im_end|>", "<|endoftext|>"])
def test_hub_like_generation_stops_at_either_eos_id(hub_loaded, token):
    """Qwen2.5-Instruct lists two EOS ids; a completion ends at whichever comes first."""
    import torch

    model, tokenizer = hub_loaded
    token_id = tokenizer.convert_tokens_to_ids(token)
    after = [tokenizer.convert_tokens_to_ids("4")]

    def force(module, inputs, logits):
        # First step: emit "4"; then the stop token (the model's own choice is random).
        bias = torch.zeros_like(logits[:, -1])
        bias[:, after[0] if after else token_id] = 1e4
        after.clear()
        return logits + bias[:, None, :]

    handle = model.lm_head.register_forward_hook(force)
    try:
        (c,) = generate_completions(
            model, tokenizer, PROMPTS[:1], max_new_tokens=6, temperature=1.0
        )[0]
    finally:
        handle.remove()
    assert c == Completion(text="4", num_tokens=2, truncated=False)
