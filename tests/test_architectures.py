"""The architecture matrix: for every family users fine-tune, PPO's log-probs are the model's own.

Each family is a tiny model built from its transformers config with its quirk switched on (Gemma's
final-logit softcapping, Granite's logits_scaling and multipliers, Cohere's logit_scale, sliding
windows) and saved with the character tokenizer, like a hub model folder. Issue 11: PPO applied
the LM head to the decoder's output itself, skipping those quirks, so with identical policy and
reference the KL at step 1 was 0.098 on Gemma 2 and -7.6 on Granite instead of 0.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rft_cli.config import LoraSettings, ModelSettings
from rft_cli.tiny import TINY_FAMILIES
from rft_cli.training.architectures import TESTED_FAMILIES
from rft_cli.training.models import apply_lora, load_model, load_tokenizer
from rft_cli.training.ppo import ActorCritic
from rft_cli.training.rollouts import sample

FAMILIES = list(TINY_FAMILIES)
PROMPTS = [
    {"messages": [{"role": "user", "content": text}]}
    for text in ("1+2=", "a much longer prompt: 3+4=", "9")
]
TEMPERATURE = 0.7
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-test.yaml"


def _load(folder: str, lora: bool = False):
    settings = ModelSettings(
        name=folder, dtype="float32", lora=LoraSettings(r=4, dropout=0.0) if lora else None
    )
    tokenizer = load_tokenizer(settings)
    policy = load_model(settings, tokenizer, seed=0)
    reference = load_model(settings, tokenizer, seed=0, trainable=False)
    return tokenizer, (apply_lora(policy, settings) if lora else policy), reference


def _rollout(policy, tokenizer):
    """Left-padded prompts of different lengths and sampled answers, as PPO's first step sees them."""
    torch.manual_seed(0)
    policy.eval()
    rollout = sample(
        policy, tokenizer, PROMPTS, max_prompt_length=32, max_new_tokens=6, temperature=TEMPERATURE
    )
    return (
        rollout.input_ids,
        rollout.attention_mask,
        rollout.response_ids.shape[1],
        rollout.response_mask,
    )


def _plain_forward_logprobs(model, input_ids, attention_mask, response_len):
    """log softmax(logits / T) of the response tokens from an ordinary full-sequence forward."""
    positions = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=positions
    ).logits
    logp = torch.log_softmax(logits[:, -response_len - 1 : -1].float() / TEMPERATURE, dim=-1)
    return torch.gather(logp, 2, input_ids[:, -response_len:].unsqueeze(-1)).squeeze(-1)


def test_the_matrix_covers_the_tested_families():
    assert set(FAMILIES) == set(TESTED_FAMILIES)
    assert {
        "llama",
        "qwen2",
        "qwen3",
        "mistral",
        "gemma2",
        "gemma3_text",
        "phi3",
        "granite",
        "olmo2",
        "cohere",
        "falcon_h1",
    } <= set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_family_quirks_are_switched_on(family, family_dir):
    """The matrix only proves something if each model's own head differs from lm_head(decoder(x))."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(family_dir(family)).eval()
    config = model.config
    expected = {
        "gemma2": ("final_logit_softcapping", 0.5),
        "gemma3_text": ("final_logit_softcapping", 0.5),
        "granite": ("logits_scaling", 0.25),
        "cohere": ("logit_scale", 4.0),
        "falcon_h1": ("lm_head_multiplier", 0.5),
    }
    if family in expected:
        key, value = expected[family]
        assert getattr(config, key) == value
        ids = torch.arange(8, 28).unsqueeze(0)
        with torch.no_grad():
            own = model(input_ids=ids).logits
            bare = model.get_output_embeddings()(
                model.get_decoder()(input_ids=ids).last_hidden_state
            )
        assert (own - bare).abs().max() > 1e-2
    assert config.tie_word_embeddings is True
    if family in ("qwen2", "mistral", "gemma2", "gemma3_text", "phi3"):
        assert config.sliding_window == 8


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("family", FAMILIES)
def test_kl_is_zero_at_step_one_and_logprobs_are_the_models(family, lora, family_dir):
    tokenizer, policy, reference = _load(family_dir(family), lora)
    input_ids, attn, resp_len, mask = _rollout(policy, tokenizer)
    assert attn[:, 0].min() == 0  # left padding is in play
    ac = ActorCritic(policy, reference, "shared")
    with torch.no_grad():
        logprobs, values, _ = ac.forward(input_ids, attn, resp_len, TEMPERATURE)
        ref = ac.reference_logprobs(input_ids, attn, resp_len, TEMPERATURE)
        plain = _plain_forward_logprobs(reference, input_ids, attn, resp_len)
    kl = (logprobs - ref) * mask
    assert kl.abs().max().item() <= 1e-6, kl
    assert ((logprobs - plain) * mask).abs().max().item() <= 1e-5
    assert values.shape == logprobs.shape == (len(PROMPTS), resp_len)


@pytest.mark.parametrize("family", FAMILIES)
def test_logprobs_match_what_generate_sampled_from(family, family_dir):
    """PPO's log-probs (one full forward, left padding, past the sliding window) equal the
    distributions `generate` sampled from with its KV cache, token by token."""
    from rft_cli.training.rollouts import encode_prompts

    tokenizer, policy, reference = _load(family_dir(family))
    policy.eval()
    ids, mask = encode_prompts(tokenizer, PROMPTS, 32, torch.device("cpu"))
    torch.manual_seed(0)
    out = policy.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=12,
        min_new_tokens=12,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    resp_len = out.sequences.shape[1] - ids.shape[1]
    response = out.sequences[:, -resp_len:]
    sampled_from = (
        torch.stack(out.logits, 1)
        .float()
        .log_softmax(-1)
        .gather(2, response.unsqueeze(-1))
        .squeeze(-1)
    )
    with torch.no_grad():
        logprobs, _, _ = ActorCritic(policy, reference, "shared").forward(
            out.sequences, torch.cat([mask, torch.ones_like(response)], 1), resp_len, 1.0
        )
    assert ids.shape[1] + resp_len > 16  # longer than the sliding windows (8)
    assert (logprobs - sampled_from).abs().max().item() <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_the_value_head_reads_the_final_normed_hidden_states(family, family_dir):
    """The value head sees what the LM head sees: the decoder's last (post-norm) hidden state."""
    tokenizer, policy, reference = _load(family_dir(family))
    input_ids, attn, resp_len, _ = _rollout(policy, tokenizer)
    ac = ActorCritic(policy, reference, "shared")
    torch.nn.init.normal_(ac.value_head.weight)
    positions = (attn.cumsum(dim=1) - 1).clamp(min=0)
    with torch.no_grad():
        _, values, _ = ac.forward(input_ids, attn, resp_len, TEMPERATURE)
        hidden = policy.get_decoder()(
            input_ids=input_ids, attention_mask=attn, position_ids=positions
        ).last_hidden_state
        expected = ac.value_head(hidden[:, -resp_len - 1 : -1]).squeeze(-1)
    assert torch.allclose(values, expected, atol=1e-6)


def test_entropy_is_logged_without_a_graph(family_dir):
    tokenizer, policy, reference = _load(family_dir("gemma2"))
    input_ids, attn, resp_len, _ = _rollout(policy, tokenizer)
    ac = ActorCritic(policy, reference, "shared")
    policy.train()
    logprobs, values, entropy = ac.forward(input_ids, attn, resp_len, TEMPERATURE, entropy=True)
    assert logprobs.requires_grad and values.requires_grad and not entropy.requires_grad
    with torch.no_grad():
        positions = (attn.cumsum(dim=1) - 1).clamp(min=0)
        logits = policy(input_ids=input_ids, attention_mask=attn, position_ids=positions).logits
        logp = torch.log_softmax(logits[:, -resp_len - 1 : -1] / TEMPERATURE, dim=-1)
    assert torch.allclose(entropy, -(logp.exp() * logp).sum(-1), atol=1e-5)


def _dry_run(model_folder):
    from typer.testing import CliRunner

    from rft_cli.cli import app

    return CliRunner().invoke(
        app, ["train", str(RECIPE), "--set", f"model={{name: {model_folder}}}", "--dry-run"]
    )


@pytest.mark.parametrize(
    "model_type,extra,message",
    [
        (
            "t5",
            {"architectures": ["T5ForConditionalGeneration"]},
            "T5ForConditionalGeneration is an encoder-decoder model",
        ),
        (
            "bart",
            {"architectures": ["BartForConditionalGeneration"]},
            "BartForConditionalGeneration is an encoder-decoder",
        ),
        (
            "qwen2_vl",
            {"architectures": ["Qwen2VLForConditionalGeneration"]},
            "Qwen2VLForConditionalGeneration (model_type 'qwen2_vl') has no causal-LM class",
        ),
        (
            "llama",
            {"architectures": ["LlamaForSequenceClassification"]},
            "LlamaForSequenceClassification is a checkpoint without a language-model head",
        ),
        (
            "mistral",
            {"architectures": ["MistralModel"]},
            "MistralModel is a checkpoint without a language-model head",
        ),
    ],
)
def test_an_architecture_that_cannot_train_is_refused_before_the_model_loads(
    tmp_path, model_type, extra, message
):
    """Only config.json is there: a refusal that needed the weights would fail differently."""
    from transformers import AutoConfig

    folder = tmp_path / model_type
    AutoConfig.for_model(model_type, **extra).save_pretrained(folder)
    result = _dry_run(folder)
    assert result.exit_code == 2, result.output
    assert f"model.name: {folder}: {message}" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_a_model_type_transformers_does_not_know_is_refused(tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(
        '{"model_type": "my-own-arch", "architectures": ["MyOwnForCausalLM"]}'
    )
    result = _dry_run(folder)
    assert result.exit_code == 2 and "model.name: cannot read the config of" in " ".join(
        result.output.split()
    )


@pytest.mark.parametrize("family", ["gemma2", "granite"])
def test_a_tested_family_passes_the_architecture_check(family, family_dir):
    result = _dry_run(family_dir(family))
    assert result.exit_code == 0, result.output
