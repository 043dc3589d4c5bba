"""The sampler is the policy: PPO rollouts and `rft eval` draw tokens from exactly softmax(logits / T)
(top-p only when asked), whatever the model folder's generation_config.json says.

The story: `_sampling_config` passed `top_k=None`, which transformers 5 reads as "unset" and fills
from the model's generation config (Qwen2.5-Instruct: top_k 20, top_p 0.8, temperature 0.7,
repetition_penalty 1.05), else from its global default top_k=50. PPO then sampled from a truncated,
penalised, temperature-shifted distribution while its log-probs, KL and entropy assumed the softmax;
on a near-uniform model 2,000 draws took 20 distinct first tokens (total variation 0.95).
"""

from __future__ import annotations

import math

import pytest
import torch

from rft_cli.generation import encode_prompt, generate_completions
from rft_cli.training.rollouts import sample
from tests.hub_like import build_bpe_tokenizer, build_qwen2_model, hub_generation_config

PROMPT = [{"role": "user", "content": "What is 5 + 3?"}]
DRAWS = 3000

# generation_config.json files as hub folders ship them (the first is Qwen2.5-Instruct's).
HUB_DEFAULTS = {
    "qwen-instruct": {
        "do_sample": True,
        "top_k": 20,
        "top_p": 0.8,
        "temperature": 0.7,
        "repetition_penalty": 1.05,
    },
    "peaked": {"do_sample": True, "top_k": 3, "temperature": 0.3, "repetition_penalty": 1.1},
    "filters": {
        "do_sample": True,
        "temperature": 1.0,
        "min_p": 0.2,
        "typical_p": 0.5,
        "no_repeat_ngram_size": 1,
        "suppress_tokens": [5, 6, 7],
        "bad_words_ids": [[8], [9]],
    },
}


def _hub_folder(tmp_path_factory, name: str, logit_scale: float) -> str:
    """A tiny Qwen2 over the BPE tokenizer; `logit_scale` spreads its first-step logits (1: near uniform)."""
    tokenizer = build_bpe_tokenizer()
    model = build_qwen2_model(tokenizer, "tiny", seed=1)
    with torch.no_grad():
        model.model.norm.weight.mul_(logit_scale)  # tied embeddings: scales every logit
    model.generation_config = hub_generation_config(tokenizer, HUB_DEFAULTS[name])
    path = str(tmp_path_factory.mktemp(name) / "model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(
    scope="module",
    params=[("qwen-instruct", 1.0), ("peaked", 15.0), ("filters", 15.0)],
    ids=lambda p: p[0],
)
def hub_model(request, tmp_path_factory):
    from rft_cli.generation import load_model_for_inference

    return load_model_for_inference(_hub_folder(tmp_path_factory, *request.param))


def _first_step_probs(model, tokenizer, temperature: float) -> torch.Tensor:
    ids = encode_prompt(tokenizer, PROMPT)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].float()
    return torch.softmax(logits / temperature, dim=-1)


def _empirical(tokens: list[int], vocab: int) -> torch.Tensor:
    return torch.bincount(torch.tensor(tokens), minlength=vocab).double() / len(tokens)


def _noise_bound(probs: torch.Tensor, draws: int) -> float:
    """0.5 * sum sqrt(p(1-p)/N): by Jensen an upper bound on the expected TV of N exact draws (about
    1.25x the expectation), which the TV's own spread (about 0.3/sqrt(N)) stays well below."""
    p = probs.double()
    return 0.5 * float(torch.sqrt(p * (1 - p) / draws).sum())


def _tv(a: torch.Tensor, b: torch.Tensor) -> float:
    return 0.5 * float((a.double() - b.double()).abs().sum())


def _ppo_first_tokens(model, tokenizer, temperature: float, top_p: float = 1.0) -> list[int]:
    torch.manual_seed(0)
    rows = [{"messages": PROMPT}] * DRAWS
    rollout = sample(
        model,
        tokenizer,
        rows,
        max_prompt_length=64,
        max_new_tokens=1,
        temperature=temperature,
        top_p=top_p,
    )
    return rollout.response_ids[:, 0].tolist()


def _eval_first_tokens(model, tokenizer, temperature: float, top_p: float = 1.0) -> list[int]:
    """`rft eval`'s generation path; the token ids are read from what `generate` returns."""
    outputs = []
    original = model.generate

    def spy(**kwargs):
        out = original(**kwargs)
        outputs.append(out[:, kwargs["input_ids"].shape[1]])
        return out

    model.generate = spy
    try:
        generate_completions(
            model,
            tokenizer,
            [PROMPT],
            max_new_tokens=1,
            num_samples=DRAWS,
            temperature=temperature,
            top_p=top_p,
            batch_size=1000,
            seed=0,
        )
    finally:
        del model.generate
    return torch.cat(outputs).tolist()


@pytest.mark.parametrize(
    "path", [_ppo_first_tokens, _eval_first_tokens], ids=["ppo-rollout", "rft-eval"]
)
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_first_tokens_follow_the_softmax(hub_model, path, temperature):
    model, tokenizer = hub_model
    probs = _first_step_probs(model, tokenizer, temperature)
    tokens = path(model, tokenizer, temperature)
    tv = _tv(_empirical(tokens, probs.numel()), probs)
    assert tv <= _noise_bound(probs, DRAWS), (
        f"TV {tv:.3f} from softmax(logits/T), {len(set(tokens))} distinct"
    )


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """softmax restricted to the most likely tokens whose mass first reaches top_p, renormalised."""
    order = torch.argsort(probs, descending=True)
    before = torch.cumsum(probs[order], 0) - probs[order]
    keep = order[before < top_p]
    out = torch.zeros_like(probs)
    out[keep] = probs[keep] / probs[keep].sum()
    return out


@pytest.mark.parametrize(
    "path", [_ppo_first_tokens, _eval_first_tokens], ids=["ppo-rollout", "rft-eval"]
)
def test_top_p_truncates_as_asked(hub_model, path):
    model, tokenizer = hub_model
    probs = _first_step_probs(model, tokenizer, 1.0)
    nucleus = _nucleus(probs, 0.5)
    tokens = path(model, tokenizer, 1.0, top_p=0.5)
    assert all(nucleus[t] > 0 for t in tokens), "a token outside the top-p nucleus was drawn"
    assert _tv(_empirical(tokens, probs.numel()), nucleus) <= _noise_bound(nucleus, DRAWS)
    assert math.isclose(float(nucleus.sum()), 1.0, rel_tol=1e-6)


@pytest.fixture(scope="module")
def qwen_like(tmp_path_factory):
    from rft_cli.generation import load_model_for_inference

    return load_model_for_inference(_hub_folder(tmp_path_factory, "qwen-instruct", 1.0))


def test_generate_runs_without_the_model_defaults_and_restores_them(qwen_like):
    """transformers 4.5x overwrote any of our values equal to a global default with the model's
    (temperature 1.0 -> 0.7); with a default config in the model's place there is nothing to copy.
    Afterwards the model holds its own config again, so a saved checkpoint keeps the user's file."""
    from transformers import GenerationConfig

    model, tokenizer = qwen_like
    during = []
    original = model.generate

    def spy(**kwargs):
        during.append(model.generation_config.to_dict())
        return original(**kwargs)

    model.generate = spy
    try:
        sample(model, tokenizer, [{"messages": PROMPT}], max_prompt_length=64, max_new_tokens=2)
        generate_completions(model, tokenizer, [PROMPT], max_new_tokens=2, temperature=1.0)
    finally:
        del model.generate
    assert during == [GenerationConfig().to_dict()] * 2
    assert (model.generation_config.top_k, model.generation_config.temperature) == (20, 0.7)
    assert model.generation_config.eos_token_id == [tokenizer.eos_token_id, tokenizer.pad_token_id]


def test_a_lora_policy_samples_the_softmax(qwen_like):
    """PeftModel.generate copies its base model's generation config: that one must be neutral too."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = qwen_like
    probs = _first_step_probs(model, tokenizer, 1.0)
    lora = get_peft_model(
        model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    try:
        tokens = _ppo_first_tokens(
            lora, tokenizer, 1.0
        )  # a fresh adapter leaves the logits unchanged
    finally:
        lora.unload()
    assert _tv(_empirical(tokens, probs.numel()), probs) <= _noise_bound(probs, DRAWS)


def test_greedy_is_the_argmax_whatever_the_model_defaults(hub_model):
    """Greedy eval and validation take the argmax at every step: the folder's repetition penalty,
    no_repeat_ngram_size or suppressed tokens must not steer it."""
    model, tokenizer = hub_model
    ids = encode_prompt(tokenizer, PROMPT)
    stop = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    with torch.no_grad():
        for _ in range(8):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
            if ids[-1] in stop:
                break
    (completion,) = generate_completions(model, tokenizer, [PROMPT], max_new_tokens=8)[0]
    expected = ids[-completion.num_tokens :]
    assert completion.text == tokenizer.decode(expected, skip_special_tokens=True)
