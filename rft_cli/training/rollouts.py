"""PPO's rollouts: sample one answer per prompt, as token tensors PPO's log-probs and masks line up with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rft_cli.data.openai_rows import row_tools
from rft_cli.data.records import prompt_messages
from rft_cli.generation import encode_prompt, generate_tokens, sampling_config
from rft_cli.training.ppo_math import response_mask


@dataclass
class Rollout:
    """A batch of sampled answers: prompt (left-padded) and response (right-padded) token tensors."""

    prompt_ids: Any
    prompt_mask: Any
    response_ids: Any
    response_mask: Any
    truncated: Any
    texts: list[str]

    @property
    def input_ids(self) -> Any:
        import torch

        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> Any:
        import torch

        return torch.cat([self.prompt_mask, self.response_mask.to(self.prompt_mask.dtype)], dim=1)

    @property
    def graded(self) -> Any:
        """Which answers were graded: all of them (an episode may be dropped, `EpisodeRollout`)."""
        import torch

        return torch.ones(
            self.response_ids.shape[0], dtype=torch.bool, device=self.response_ids.device
        )


def encode_prompts(
    tokenizer: Any, rows: Sequence[dict], max_prompt_length: int, device: Any
) -> tuple[Any, Any]:
    """Chat-template the prompts as `rft eval` does, keep the last `max_prompt_length` tokens, left-pad."""
    import torch

    encoded = [
        encode_prompt(tokenizer, prompt_messages(row), row_tools(row))[-max_prompt_length:]
        for row in rows
    ]
    width = max(len(ids) for ids in encoded)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded], device=device)
    mask = torch.tensor(
        [[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=device
    )
    return input_ids, mask


def sample(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict],
    *,
    max_prompt_length: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    greedy: bool = False,
    device: Any = None,
) -> Rollout:
    """Sample one answer per row with the KV cache (HF generate); stops at EOS.

    Tokens are drawn from exactly softmax(logits / temperature) (top-p only when top_p < 1), the
    distribution PPO's log-probs, KL and entropy assume: the generation setup is `rft eval`'s, and
    the model's own generation_config.json (top_k, repetition penalty...) takes no part.
    """
    import torch

    device = device or next(model.parameters()).device
    prompt_ids, prompt_mask = encode_prompts(tokenizer, rows, max_prompt_length, device)
    config = sampling_config(
        model,
        tokenizer,
        max_new_tokens=max_new_tokens,
        temperature=0.0 if greedy else temperature,
        top_p=top_p,
    )
    with torch.no_grad():
        out = generate_tokens(model, prompt_ids, prompt_mask, config)
    response = out[:, prompt_ids.shape[1] :]
    if response.shape[1] == 0:  # nothing generated at all; keep one EOS so shapes stay valid
        response = torch.full((len(rows), 1), config.eos_token_id[0], device=device)
    mask, truncated = response_mask(response, config.eos_token_id)
    response = torch.where(mask.bool(), response, torch.full_like(response, config.pad_token_id))
    texts = tokenizer.batch_decode(
        [r[m.bool()] for r, m in zip(response, mask, strict=True)], skip_special_tokens=True
    )
    return Rollout(prompt_ids, prompt_mask, response, mask.to(device), truncated.to(device), texts)
