"""An offline stand-in for a hub instruct model folder (Qwen2.5-Instruct's shape, tiny sizes).

What a user's `model.name: ./Qwen2.5-0.5B-Instruct` folder holds and the character tokenizer of
`rft_cli.tiny` does not: a byte-level BPE tokenizer (trained here, in a second, on a small corpus),
a ChatML chat template, `<|im_end|>` as EOS distinct from the pad token `<|endoftext|>`, and a
generation_config.json with two EOS ids and instruct-style sampling defaults. The tests and
`bench/gpu_check.py` build it instead of downloading anything (test scaffolding: it does not ship
in the package):

    from tests.hub_like import save_hub_like
    save_hub_like("/tmp/qwen-like")          # then `model.name: /tmp/qwen-like` in a recipe
"""

from __future__ import annotations

from typing import Any

from rft_cli.tiny import random_causal_lm

PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, "<|im_start|>", EOS_TOKEN]

# Qwen2.5-Instruct's template without its default system prompt: every turn is
# "<|im_start|>role\ncontent<|im_end|>\n"; the generation prompt opens the assistant turn.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# The same turns, plus tools the Qwen2.5/Hermes way (written for rft, not copied): `tools` listed as
# JSON in the system turn, an assistant's tool calls as <tool_call>{"name", "arguments"}</tool_call>,
# tool results as <tool_response> in a user turn. `save_hub_like(..., chat_template=TOOLS_CHATML_TEMPLATE)`.
TOOLS_CHATML_TEMPLATE = (
    "{% set system = messages[0]['content'] if messages and messages[0]['role'] == 'system' else none %}"
    "{% if tools %}"
    "{{ '<|im_start|>system\n' }}{% if system %}{{ system + '\n\n' }}{% endif %}"
    "{{ '# Tools\n\nYou may call functions. Their signatures are within <tools></tools>:\n<tools>' }}"
    "{% for tool in tools %}{{ '\n' + (tool | tojson) }}{% endfor %}"
    '{{ \'\n</tools>\n\nTo call one, write <tool_call>{"name": <name>, "arguments": <object>}</tool_call><|im_end|>\n\' }}'
    "{% elif system %}{{ '<|im_start|>system\n' + system + '<|im_end|>\n' }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and loop.first %}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' + (message['content'] or '') }}"
    "{% for call in message.get('tool_calls') or [] %}"
    "{% if message['content'] or not loop.first %}{{ '\n' }}{% endif %}"
    "{{ '<tool_call>\n{\"name\": ' + (call['function']['name'] | tojson) + ', \"arguments\": ' + (call['function']['arguments'] | tojson) + '}\n</tool_call>' }}"
    "{% endfor %}{{ '<|im_end|>\n' }}"
    "{% elif message['role'] == 'tool' %}"
    "{{ '<|im_start|>user\n<tool_response>\n' + message['content'] + '\n</tool_response><|im_end|>\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# What Qwen2.5-Instruct's generation_config.json ships (repetition_penalty 1.05 at 0.5B, 1.1 at 7B).
HUB_GENERATION_DEFAULTS: dict[str, Any] = {
    "do_sample": True,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
    "repetition_penalty": 1.05,
}

# Qwen2 sizes (hidden, layers, heads, kv heads, mlp): "tiny" trains on two CPU cores; "qwen2.5-0.5b"
# is Qwen2.5-0.5B's config.json except the vocabulary, which is the fixture tokenizer's.
QWEN2_SIZES: dict[str, dict[str, int]] = {
    "tiny": {
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "intermediate_size": 32,
    },
    "small": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
    },
    "qwen2.5-0.5b": {
        "hidden_size": 896,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "intermediate_size": 4864,
    },
}

# Enough text for a few hundred merges: chat words, digits and arithmetic as in the shipped tasks.
_CORPUS = [
    "You are a helpful assistant. Answer the question and give the final number.",
    "What is two plus two? The answer is 4.",
    "Mary has 5 apples and buys 3 more. How many apples does she have now? 5 + 3 = 8. The answer is 8.",
    "A train travels 60 miles in 2 hours. What is its speed? 60 / 2 = 30 miles per hour.",
    "Tom had 12 marbles. He gave 4 to his friend. How many marbles does Tom have left? 12 - 4 = 8.",
    "There are 7 birds on a tree and 2 fly away. 7 - 2 = 5 birds are left on the tree.",
    "The system says: think step by step, then write the answer after 'The answer is'.",
    "question answer number total each more less left how many what is the",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 25 30 40 50 60 70 80 90 100",
    "Name a colour. Red, green, blue and yellow are colours. Be brief, please.",
]


def build_bpe_tokenizer(vocab_size: int = 384, model_max_length: int = 2048) -> Any:
    """A byte-level BPE PreTrainedTokenizerFast trained on a small corpus, with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=model_max_length,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def hub_generation_config(tokenizer: Any, defaults: dict[str, Any] | None = None) -> Any:
    """A GenerationConfig like an instruct model's: EOS ids [<|im_end|>, <|endoftext|>] and sampling defaults."""
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id],
        pad_token_id=tokenizer.pad_token_id,
        **(HUB_GENERATION_DEFAULTS if defaults is None else defaults),
    )


def build_qwen2_model(
    tokenizer: Any,
    sizes: str | dict[str, int] = "tiny",
    seed: int = 0,
    max_position_embeddings: int = 2048,
) -> Any:
    """A randomly initialised Qwen2ForCausalLM over `tokenizer`'s vocabulary (BOS is <|endoftext|>, as Qwen's)."""
    return random_causal_lm(
        "qwen2",
        tokenizer,
        seed=seed,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.pad_token_id,
        **(QWEN2_SIZES[sizes] if isinstance(sizes, str) else dict(sizes)),
    )


def save_hub_like(
    path: str,
    sizes: str | dict[str, int] = "tiny",
    seed: int = 0,
    generation_defaults: dict[str, Any] | None = None,
    chat_template: str | None = None,
) -> str:
    """Save a hub-like model folder (model, BPE tokenizer, generation_config.json) to `path`;
    `chat_template` replaces the plain ChatML one (TOOLS_CHATML_TEMPLATE renders tools)."""
    tokenizer = build_bpe_tokenizer()
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    model = build_qwen2_model(tokenizer, sizes, seed=seed)
    model.generation_config = hub_generation_config(tokenizer, generation_defaults)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
