"""Log-probs and entropy from logits: the same numbers as log_softmax, without its full-vocabulary copies."""

from __future__ import annotations

import pytest
import torch

from rft_cli.training import ppo_math as pm


def _naive(logits, tokens, temperature):
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return torch.gather(logp, 2, tokens.unsqueeze(-1)).squeeze(-1), -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_logprobs_and_entropy_equal_log_softmax(dtype, temperature):
    torch.manual_seed(0)
    logits = (torch.randn(3, 5, 50) * 8).to(dtype)  # large logits: logsumexp must stay stable
    tokens = torch.randint(0, 50, (3, 5))
    want_logprobs, want_entropy = _naive(logits, tokens, temperature)
    got = pm.logprobs_from_logits(logits, tokens, temperature)
    assert got.dtype == torch.float32 and torch.allclose(got, want_logprobs, atol=1e-5)
    assert torch.allclose(pm.entropy_from_logits(logits, temperature), want_entropy, atol=1e-5)


def test_logprob_gradients_equal_log_softmax_and_entropy_has_none():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 30, requires_grad=True)
    tokens = torch.randint(0, 30, (2, 4))
    pm.logprobs_from_logits(logits, tokens, 0.8).sum().backward()
    ours, logits.grad = logits.grad, None
    _naive(logits, tokens, 0.8)[0].sum().backward()
    assert torch.allclose(ours, logits.grad, atol=1e-6)
    entropy = pm.entropy_from_logits(logits, 0.8)
    assert not entropy.requires_grad and entropy.grad_fn is None
