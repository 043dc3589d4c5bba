"""The PPO pieces as pure tensor functions (ReFT's recipe), unit-tested against hand-computed values.

Shapes: B sequences, T token positions. `mask` is 1 on response tokens (either padding side).

How one PPO step uses them (rft_cli/training/ppo.py runs it):

1. `response_mask` marks each sampled answer up to and including its EOS.
2. `token_rewards` turns the grader's score into per-token rewards: the score on the answer's last
   token and a KL penalty to the frozen reference model on every token.
3. `compute_gae` turns rewards and the critic's values into advantages (how much better each token
   did than the critic expected) and returns (the critic's regression targets).
4. `normalise_advantages` puts the advantages on a common scale across steps.
5. For `ppo_epochs` passes over minibatches, `policy_loss` and `value_loss` (weighted by
   `loss_weights`) update the policy and the critic, each clipped so that one batch of samples
   cannot move them far from the policy that drew it.
"""

from __future__ import annotations

import math
from typing import Any

from rft_cli.run_folder.alarms import rewards_differ


def masked_mean(x: Any, mask: Any) -> Any:
    """Mean of `x` over positions where `mask` is 1."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: Any, mask: Any) -> Any:
    """Unbiased variance of `x` over masked positions (as TRL and ReFT whiten)."""
    mean = masked_mean(x, mask)
    centered = (x - mean) * mask  # masked-out positions must add nothing to the sum of squares
    count = mask.sum()
    return (centered**2).sum() / (count - 1).clamp(min=1)


def whiten(x: Any, mask: Any, shift_mean: bool = True) -> Any:
    """(x - mean) / std over masked positions; masked-out positions become 0."""
    import torch

    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)  # the epsilon keeps a constant batch finite
    if not shift_mean:
        # Scale only, keeping the mean (TRL's PPO whitens rewards this way, so their sign survives).
        out = out + mean
    return out * mask


def normalise_advantages(advantages: Any, mask: Any, scores: Any) -> tuple[Any, bool]:
    """(advantages, scaled): whitened when the batch's grader scores differ, else only centred.

    When every answer scored the same, the advantages hold nothing but the KL penalty and the
    critic's errors; scaling them to unit variance would take full-size policy steps on that noise
    (seen as KL spikes of 3-5 nats on an all-correct task), so such a batch is centred, not scaled.
    "The same" is the `no_signal` alarm's rule (`rft_cli.run_folder.alarms.rewards_differ`).
    """
    scores = scores.float()
    if scores.numel() > 1 and rewards_differ(reward_std(scores), scores.mean().item()):
        return whiten(advantages, mask), True
    return (advantages - masked_mean(advantages, mask)) * mask, False


def reward_std(scores: Any) -> float:
    """The standard deviation of a step's rewards with Bessel's correction (n - 1), as TRL logs
    `reward_std`, so `train_reward_std` means the same under every algorithm; 0 for one reward."""
    return scores.float().std(unbiased=True).item() if scores.numel() > 1 else 0.0


def last_token_index(mask: Any) -> Any:
    """Index of the last 1 in each row of `mask` (works for left and right padding)."""
    import torch

    length = mask.shape[1]
    # argmax returns the first maximum, so on the reversed row it finds the last 1.
    flipped_first = torch.argmax(mask.flip(dims=[1]).to(torch.int64), dim=1)
    return length - 1 - flipped_first


def response_mask(tokens: Any, eos_token_id: int | list[int]) -> tuple[Any, Any]:
    """(mask, truncated): 1 up to and including the first EOS of each row; rows without EOS are truncated."""
    import torch

    eos_ids = eos_token_id if isinstance(eos_token_id, list) else [eos_token_id]
    is_eos = torch.zeros_like(tokens, dtype=torch.bool)
    for eos in eos_ids:
        is_eos |= tokens == eos
    # How many EOS tokens come strictly before each position: 0 up to and including the first EOS.
    # The EOS itself stays in the mask, because stopping is an action the policy must be trained on;
    # whatever `generate` wrote after it (padding, or more tokens in a batch) is not the answer.
    seen_before = torch.cumsum(is_eos.to(torch.int64), dim=1) - is_eos.to(torch.int64)
    mask = (seen_before == 0).to(torch.float32)
    truncated = ~is_eos.any(dim=1)
    return mask, truncated


def kl_penalty(logprobs: Any, ref_logprobs: Any) -> Any:
    """Per-token KL estimate log pi(a|s) - log pi_ref(a|s) (k1, as ReFT and TRL's PPO)."""
    # On tokens sampled from pi, the expectation of this log-ratio is KL(pi || pi_ref). One token's
    # value can be negative; that is fine for a penalty paid through the reward, where only its
    # expected sum over an answer matters (GRPO's k3 in TRL is non-negative because it is a loss term).
    return logprobs - ref_logprobs


def kl_sums(logprobs: Any, ref_logprobs: Any, mask: Any) -> Any:
    """Per answer [summed k3, summed log-ratio, tokens] (float64): the sums behind the logged KL.

    k3 = exp(d) - d - 1 with d = log pi_ref - log pi is Schulman's estimator of the same per-token
    KL as the log-ratio, never negative and less noisy; TRL's GRPO logs its mean as `kl`, so PPO
    logs it under that name too, and its penalty's log-ratio apart (`kl_logratio`, `kl_sum`). It is
    computed as expm1(d) - d in float64: in float32, exp(d) - d - 1 of a small d is rounding noise
    (6e-8 a token, where the KL itself is d**2 / 2) and can come out negative.
    """
    import torch

    delta = ((ref_logprobs - logprobs) * mask).double()
    k3 = (torch.expm1(delta) - delta) * mask
    return torch.stack([k3.sum(dim=1), -delta.sum(dim=1), mask.sum(dim=1).double()], dim=1)


def token_rewards(
    scores: Any, logprobs: Any, ref_logprobs: Any, mask: Any, kl_coef: float
) -> tuple[Any, Any]:
    """(rewards, kl): -kl_coef * KL on every response token, plus the grader score on the last one."""
    import torch

    kl = kl_penalty(logprobs, ref_logprobs) * mask
    # The penalty is paid where it is incurred, token by token, so the critic learns it and GAE
    # credits it to the tokens that drifted; with gamma = 1 a token's return is the final score
    # minus kl_coef times the log-ratio summed over the rest of the answer.
    rewards = -kl_coef * kl
    # The grader judges the whole answer, so its score is a single terminal reward (ReFT's choice).
    last = last_token_index(mask)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards * mask, kl


def compute_gae(rewards: Any, values: Any, mask: Any, gamma: float, lam: float) -> tuple[Any, Any]:
    """(advantages, returns) by generalised advantage estimation, with no Python loop over tokens.

    delta_t = r_t + gamma * V_{t+1} - V_t (V is 0 after the last response token), and
    A_t = sum_k (gamma * lam)^k delta_{t+k}, computed as one matrix product with a discount matrix.
    """
    import torch

    # Values off the response are zeroed, so V after the last response token is 0: the answer ended
    # and no more reward can come (the episode is terminal, not cut short).
    values = values * mask
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    deltas = (rewards + gamma * next_values - values) * mask
    # The usual backward loop A_t = delta_t + gamma*lam*A_{t+1} is, unrolled, a fixed linear map:
    # A = deltas @ D with D[k, t] = (gamma*lam)^(k - t) for k >= t and 0 above the diagonal. One
    # T x T product replaces T Python iterations; it is computed in float64 and matches the loop
    # (tests/test_ppo_math.py).
    length = rewards.shape[1]
    idx = torch.arange(length, device=rewards.device, dtype=torch.float64)
    exponent = idx[:, None] - idx[None, :]  # row k (later position), column t
    discount = torch.where(
        exponent >= 0,
        torch.pow(torch.tensor(gamma * lam, dtype=torch.float64), exponent.clamp(min=0)),
        torch.zeros((), dtype=torch.float64),
    )
    advantages = (deltas.to(torch.float64) @ discount).to(rewards.dtype) * mask
    # The lambda-return: what the critic is regressed towards.
    returns = (advantages + values) * mask
    return advantages, returns


def compute_episode_gae(
    rewards: Any, values: Any, mask: Any, gamma: float, lam: float
) -> tuple[Any, Any]:
    """`compute_gae` over the policy's tokens of multi-turn episodes, skipping the tokens between them.

    An episode's `mask` has holes: the tool results and template tokens between two turns are 0.
    The policy's next decision after a turn is the next turn's first token, so GAE runs over each
    row's masked positions packed together (a stable sort puts them first, in order), then the
    results go back to their columns. A row whose mask is one run from column 0 (a single answer)
    packs to itself, so this is `compute_gae` there.
    """
    import torch

    order = torch.sort((mask <= 0).to(torch.int8), dim=1, stable=True).indices
    packed = [torch.gather(t, 1, order) for t in (rewards, values, mask)]
    advantages, returns = compute_gae(packed[0], packed[1], packed[2], gamma, lam)
    unpacked = [torch.zeros_like(advantages).scatter(1, order, t) for t in (advantages, returns)]
    return unpacked[0], unpacked[1]


def loss_weights(mask: Any, aggregation: str = "token") -> Any:
    """Per-token loss weights that sum to 1 over a minibatch (0 off the response).

    `token`: every response token of the minibatch weighs the same (a token mean, as TRL's PPO).
    `answer`: every answer weighs the same, split evenly over its tokens (a per-answer token mean,
    then the mean over answers, as ReFT's train_rl_reft.py), so a long answer's tokens count less.
    A row without a token (a dropped episode) is not an answer: it takes no share.
    """
    if aggregation == "token":
        return mask / mask.sum().clamp(min=1)
    lengths = mask.sum(dim=1, keepdim=True)
    answers = (lengths > 0).sum().clamp(min=1)
    return mask / lengths.clamp(min=1) / answers


def length_pieces(
    prompt_lengths: list[int],
    answer_lengths: list[int],
    max_rows: int,
    piece_cost: int | None = None,
    groups: list[int] | None = None,
    share_cost: int = 0,
    max_tokens: int | None = None,
) -> list[list[int]]:
    """Rows grouped into pieces for forward passes, each to be cut to its own longest prompt and answer.

    Rows are taken longest answer first, so a piece holds answers of similar length. With
    `piece_cost` (what one more forward pass costs, counted in padded tokens) consecutive rows are
    grouped to minimise padded tokens plus `piece_cost` per piece, at most `max_rows` a piece;
    without it, every `max_rows` rows make a piece (a fixed number of pieces, as processes that
    sync gradients after every backward need). Each row is in exactly one piece.

    `max_tokens` (with `piece_cost`) bounds a piece's padded tokens, rows x (longest prompt + longest
    answer), where that takes more than one row: the memory its backward holds (`pass_token_budget`).

    `groups` (each row's prompt, for passes that compute a prompt once for the rows that share it,
    `piece_cost` given) counts a piece's prompt tokens once per distinct prompt when that saves more
    than `share_cost` (the second pass, `shares_prompts`), and, when some piece could, tries a second
    order, prompt by prompt, which keeps the rows of a prompt together; the cheaper split wins.

    >>> length_pieces([3, 3, 3, 3], [9, 2, 8, 1], max_rows=4, piece_cost=4)
    [[0, 2], [1, 3]]
    >>> length_pieces([30, 30, 30, 30], [9, 2, 8, 1], 4, 4, groups=[0, 1, 0, 1], share_cost=8)
    [[0, 2], [1, 3]]
    """
    order = sorted(
        range(len(answer_lengths)), key=lambda i: (-answer_lengths[i], -prompt_lengths[i], i)
    )
    if piece_cost is None:
        return [order[s : s + max_rows] for s in range(0, len(order), max_rows)]
    distinct = len(set(groups)) if groups is not None else len(order)
    if not shares_prompts(len(order), distinct, max(prompt_lengths, default=0), share_cost):
        # no piece could save enough: the plain split (and no second order to try)
        return _cheapest_split(
            order, prompt_lengths, answer_lengths, max_rows, piece_cost, max_tokens=max_tokens
        )[1]
    assert groups is not None
    longest: dict[int, int] = {}
    for answer, group in zip(answer_lengths, groups, strict=True):
        longest[group] = max(longest.get(group, 0), answer)
    by_prompt = sorted(
        range(len(answer_lengths)),
        key=lambda i: (-longest[groups[i]], groups[i], -answer_lengths[i], i),
    )
    return min(
        _cheapest_split(
            o, prompt_lengths, answer_lengths, max_rows, piece_cost, groups, share_cost, max_tokens
        )
        for o in (order, by_prompt)
    )[1]


def pass_token_budget(model_config: Any, memory_mb: int) -> int:
    """The padded tokens one forward/backward pass may hold for `memory_mb` of activations.

    Per token, in float32: what each decoder layer keeps for its backward (about 8 hidden-size and
    4 intermediate-size vectors: norms, projections, attention output, the MLP's gate, up and
    product) and the logits with their float32 copy and gradient (3 vocabulary-size vectors),
    counted for every token although only answer positions have logits. For SmolLM2-135M that is
    1.9 MB a token; a PPO update over 16 rows of ~124 tokens grew the process by 4.0 GB in one pass
    (2.0 MB a token), and by 0.82 GB in passes of at most 512 MB estimated.

    >>> from types import SimpleNamespace as C
    >>> smol = C(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, vocab_size=49152)
    >>> pass_token_budget(C(get_text_config=lambda: smol), 1024)
    571
    """
    text = model_config.get_text_config()
    hidden = text.hidden_size
    intermediate = getattr(text, "intermediate_size", None) or 4 * hidden
    per_token = 4 * (text.num_hidden_layers * (8 * hidden + 4 * intermediate) + 3 * text.vocab_size)
    return max(memory_mb * 2**20 // per_token, 1)


def shares_prompts(rows: int, distinct: int, widest_prompt: int, share_cost: int) -> bool:
    """Whether a piece computes each distinct prompt once (two passes, see `length_pieces`): the
    prompt tokens it saves outweigh the second pass (`share_cost`, in tokens)."""
    return (rows - distinct) * widest_prompt > share_cost


def _cheapest_split(
    order: list[int],
    prompt_lengths: list[int],
    answer_lengths: list[int],
    max_rows: int,
    piece_cost: int,
    groups: list[int] | None = None,
    share_cost: int = 0,
    max_tokens: int | None = None,
) -> tuple[float, list[list[int]]]:
    """(cost, pieces): the cheapest split of `order` into runs of consecutive rows (dynamic programming)."""
    # best[i]: the cheapest split of order[:i]; cut[i]: where its last piece starts
    prompts = [prompt_lengths[i] for i in order]
    answers = [answer_lengths[i] for i in order]
    kinds = [groups[i] for i in order] if groups is not None else None
    best, cut = [0.0] + [math.inf] * len(order), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        widest_prompt = longest_answer = 0
        seen: set[int] = set()
        for start in range(end - 1, max(end - max_rows, 0) - 1, -1):
            widest_prompt = max(widest_prompt, prompts[start])
            longest_answer = max(longest_answer, answers[start])
            rows = end - start
            if (
                max_tokens is not None
                and rows > 1
                and rows * (widest_prompt + longest_answer) > max_tokens
            ):
                break  # longer pieces ending here only hold more tokens
            cost = rows * (widest_prompt + longest_answer) + piece_cost
            if kinds is not None:
                seen.add(kinds[start])
                saved = (rows - len(seen)) * widest_prompt  # `shares_prompts`, inlined
                if saved > share_cost:
                    cost += share_cost - saved
            if best[start] + cost < best[end]:
                best[end], cut[end] = best[start] + cost, start
    pieces, end = [], len(order)
    while end > 0:
        pieces.append(order[cut[end] : end])
        end = cut[end]
    return best[-1], pieces[::-1]


def policy_loss(
    logprobs: Any, old_logprobs: Any, advantages: Any, weights: Any, clip_range: float
) -> tuple[Any, Any, Any]:
    """(loss, clip_frac, approx_kl): PPO's clipped surrogate, summed over tokens with `loss_weights`."""
    import torch

    mask = (weights > 0).to(logprobs.dtype)
    # pi / pi_old: the answers were sampled by pi_old, so this reweights them for the current policy.
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    # Losses are negated objectives, so the max of the two is the min of the surrogates: the
    # pessimistic bound. Once the ratio leaves [1 - clip, 1 + clip] in the direction the advantage
    # favours, the clipped term wins and its gradient is 0, so a minibatch cannot push the policy far
    # from the one that drew the samples; a move in the unfavourable direction is never clipped.
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = (torch.maximum(unclipped, clipped) * weights).sum()
    clip_frac = ((clipped > unclipped).to(logprobs.dtype) * weights).sum()
    # k2 = 0.5 * log_ratio^2, an estimate of KL(pi_old || pi) that is never negative: logged only.
    approx_kl = 0.5 * (log_ratio**2 * weights).sum()
    return loss, clip_frac, approx_kl


def value_loss(
    values: Any, old_values: Any, returns: Any, weights: Any, clip_range_value: float
) -> tuple[Any, Any]:
    """(loss, clip_frac): 0.5 * max of the squared errors of the raw and the clipped value prediction,
    summed over tokens with `loss_weights`."""
    import torch

    # The same trust region for the critic (as OpenAI's PPO2 and ReFT): a prediction may move at most
    # clip_range_value from the one the returns were computed with, and the max keeps the worse error,
    # so a clipped prediction gives no gradient towards moving further. Clamped around old_values
    # rather than old + clamp(values - old): inside the range that is `values` itself, bit for bit,
    # so the two errors tie exactly and clip_frac counts real clipping, not float rounding (the old
    # values come from the sampling pass and the update's forward differs from it by ~1e-7).
    clipped_values = torch.clamp(
        values, old_values - clip_range_value, old_values + clip_range_value
    )
    error = (values - returns) ** 2
    error_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * (torch.maximum(error, error_clipped) * weights).sum()
    clip_frac = ((error_clipped > error).to(values.dtype) * weights).sum()
    return loss, clip_frac


def logprobs_from_logits(logits: Any, tokens: Any, temperature: float = 1.0) -> Any:
    """log softmax(logits / temperature)[token] at every position, in float32.

    Computed as logit[token] - logsumexp(logits), a few sequences at a time (`_row_chunks`): the
    full-vocabulary log-softmax is never materialised, and a chunk's float32 copy is the only one
    autograd keeps.
    """
    import torch

    out = []
    for rows, row_tokens in zip(*(_row_chunks(t, logits) for t in (logits, tokens)), strict=True):
        rows = _scaled(rows, temperature)
        picked = torch.gather(rows, -1, row_tokens.unsqueeze(-1)).squeeze(-1)
        out.append(picked - torch.logsumexp(rows, dim=-1))
    return torch.cat(out)


def entropy_from_logits(logits: Any, temperature: float = 1.0) -> Any:
    """Per-position entropy of softmax(logits / temperature), without a graph (it is only logged)."""
    import torch

    with torch.no_grad():
        out = []
        for rows in _row_chunks(logits.detach(), logits):
            rows = _scaled(rows, temperature)
            logp = rows - torch.logsumexp(rows, dim=-1, keepdim=True)
            out.append(-(logp.exp() * logp).sum(dim=-1))
        return torch.cat(out)


# Float32 logits elements converted at a time (64 MiB): a whole batch of a small vocabulary at once,
# one sequence at a time for a 150k-token vocabulary, as before this budget existed.
_CHUNK_ELEMENTS = 2**24


def _row_chunks(tensor: Any, logits: Any) -> Any:
    """`tensor` split along its first dimension into chunks of rows whose `logits` fit the budget."""
    per_row = max(logits[0].numel(), 1) if logits.shape[0] else 1
    return tensor.split(max(_CHUNK_ELEMENTS // per_row, 1))


def _scaled(logits: Any, temperature: float) -> Any:
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


class AdaptiveKLController:
    """Ziegler et al. (2019): move kl_coef so the observed KL tracks `target` over `horizon` samples."""

    def __init__(self, kl_coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = kl_coef, target, horizon

    def update(self, current_kl: float, n_samples: int) -> None:
        """Scale the coefficient by 1 + clip(kl/target - 1, +-0.2) * n / horizon."""
        # A proportional controller: the clip bounds how far one noisy batch can move the coefficient,
        # and n / horizon makes the speed depend on samples seen, not on how they are batched.
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_samples / self.horizon
