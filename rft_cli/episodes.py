"""Multi-turn episodes with tools: the policy writes a turn, calls tools, reads their results, goes on.

    policy = ModelPolicy(model, tokenizer, temperature=1.0)
    episodes = run_episodes(policy, tokenizer, prompts, items, toolbox, limits=EpisodeLimits())
    episodes[0].final_text, episodes[0].calls, episodes[0].facts()

An episode starts from the prompt's tokens (the chat template with the assistant turn's opening).
Each step, every live episode gets its next assistant turn in one batched generation; the turn's
tool calls are read with the parsers of `rft_cli.tool_calls`, run (`rft_cli.tools`, all calls of
the step together), and their results appended as `tool` messages through the chat template, up to
the next assistant turn's opening. An episode ends:

    answer      on a turn with no tool call (its text is the final answer)
    max_steps   on a turn that calls a tool after `max_episode_steps` calls (not run)
    max_tokens  where its next turn or the tools' results would pass `max_tokens`
    truncated   on a turn cut at `max_new_tokens` before its stop token
    dropped     when a tool failed past its retries (not graded for training; counted)

Tokens, as training needs them: `prompt_ids`, then `ids`, everything after the prompt, and
`policy_mask`, 1 where the policy sampled the token (each turn, its stop token included) and 0
where the chat template or a tool put it. Sampled tokens are kept as they were drawn, never
decoded and re-tokenized; what comes between two turns is the text the template adds when the
tool messages are appended (rendered with and without them), after the end of the turn the
policy wrote, tokenized on its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rft_cli import threads
from rft_cli.data.openai_rows import arguments_object
from rft_cli.errors import ConfigError
from rft_cli.tool_calls import OutputParser, output_parser
from rft_cli.tools.base import ToolRequest, ToolResult
from rft_cli.tools.toolbox import unknown_tool

ENDS = ("answer", "max_steps", "max_tokens", "truncated", "dropped")
NOT_RUN = "error: not run: this episode may make {limit} tool calls (max_episode_steps)"


@dataclass
class EpisodeLimits:
    """When an episode ends: tool calls (`max_episode_steps`), tokens after the prompt
    (`max_tokens`), and tokens of one assistant turn (`max_new_tokens`)."""

    max_episode_steps: int = 10
    max_tokens: int = 2048
    max_new_tokens: int = 512


class Policy(Protocol):
    """What samples the turns: `generate(sequences, max_new_tokens)` gives the tokens after each
    sequence, each cut after its first token of `stop` (kept)."""

    stop: set[int]

    def generate(self, sequences: list[list[int]], max_new_tokens: int) -> list[list[int]]: ...


class ModelPolicy:
    """A Hugging Face model sampled as `rft eval` and PPO rollouts sample (`rft_cli.generation`)."""

    def __init__(
        self, model: Any, tokenizer: Any, temperature: float = 0.0, top_p: float = 1.0
    ) -> None:
        from rft_cli.generation import stop_token_ids

        self.model, self.tokenizer, self.temperature, self.top_p = (
            model,
            tokenizer,
            temperature,
            top_p,
        )
        self.stop = set(stop_token_ids(model, tokenizer))

    def generate(self, sequences: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        import torch

        from rft_cli.generation import generate_token_ids, sampling_config

        config = sampling_config(
            self.model,
            self.tokenizer,
            max_new_tokens=max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
        )
        self.model.eval()
        with torch.inference_mode():
            return generate_token_ids(self.model, sequences, config)


@dataclass
class Episode:
    """One episode: its prompt, every token after it with the mask of the policy's, the turns as
    messages, the calls made and the facts a grader reads (`facts()`, `sample()`)."""

    prompt: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    item: dict[str, Any]
    prompt_ids: list[int]
    trace_id: str = ""
    ids: list[int] = field(default_factory=list)
    policy_mask: list[int] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    final_text: str = ""
    steps: int = 0
    tool_calls: int = 0
    tool_errors: dict[str, int] = field(default_factory=dict)
    parse_errors: int = 0
    parse_detail: str = ""
    end: str | None = None
    drop_reason: str = ""
    tool_seconds: float = 0.0
    waiting: list[dict[str, Any]] = field(default_factory=list, repr=False)
    stopped_by: int | None = field(default=None, repr=False)

    @property
    def dropped(self) -> bool:
        return self.end == "dropped"

    @property
    def policy_tokens(self) -> int:
        return sum(self.policy_mask)

    def turn_spans(self) -> list[tuple[int, int]]:
        """(start, end) in `ids` of each run of policy tokens: the assistant turns."""
        spans, start = [], None
        for i, bit in enumerate([*self.policy_mask, 0]):
            if bit and start is None:
                start = i
            elif not bit and start is not None:
                spans.append((start, i))
                start = None
        return spans

    def facts(self) -> dict[str, Any]:
        """`sample.episode` for graders."""
        return {
            "tool_calls": self.tool_calls,
            "steps": self.steps,
            "tool_errors": sum(self.tool_errors.values()),
            "tool_error_kinds": dict(sorted(self.tool_errors.items())),
            "tokens": len(self.ids),
            "policy_tokens": self.policy_tokens,
            "end": self.end,
            "dropped": self.dropped,
        }

    def sample(self) -> dict[str, Any]:
        """The grader's `sample`: the final answer, every call run, and the episode's facts."""
        return {
            "output_text": self.final_text,
            "output_tools": [dict(c) for c in self.calls],
            "episode": self.facts(),
        }

    def transcript(self) -> list[dict[str, Any]]:
        """The prompt and every turn after it, as chat messages."""
        return [*self.prompt, *self.messages]


def run_episodes(
    policy: Policy,
    tokenizer: Any,
    prompts: Sequence[list[dict[str, Any]]],
    items: Sequence[dict[str, Any]],
    toolbox: Any,
    *,
    tools: Sequence[list[dict[str, Any]] | None] | None = None,
    limits: EpisodeLimits | None = None,
    batch_size: int = 32,
    parser: OutputParser | None = None,
    seed: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_prompt_tokens: int | None = None,
) -> list[Episode]:
    """Run one episode per prompt to its end; returns them in the prompts' order.

    Args:
        policy: samples the turns (`ModelPolicy`, or a scripted one in tests).
        prompts: chat messages ending where the assistant's first turn starts.
        items: each episode's row (sent to endpoint tools as `item`).
        toolbox: runs the calls (`rft_cli.tools.ToolBox`); `tools[i]`, the definitions episode i
            offers (default: every tool the toolbox defines).
        limits: when an episode ends (`EpisodeLimits`).
        max_prompt_tokens: keep only the last this many tokens of each prompt (PPO's
            `rl.max_prompt_length`); the turns after it are rendered from the messages as ever.
    """
    import torch

    limits = limits or EpisodeLimits()
    if min(limits.max_tokens, limits.max_new_tokens) < 1 or limits.max_episode_steps < 0:
        raise ConfigError(f"episode limits must allow a turn: {limits}")
    parser = parser or output_parser(tokenizer)
    if seed is not None:
        torch.manual_seed(seed)
    offered = list(tools) if tools is not None else [None] * len(prompts)
    episodes = [
        _start(tokenizer, list(p), item, row_tools or toolbox.tool_definitions() or None)
        for p, item, row_tools in zip(prompts, items, offered, strict=True)
    ]
    if max_prompt_tokens is not None:
        for e in episodes:
            e.prompt_ids = e.prompt_ids[-max_prompt_tokens:]
    live = list(episodes)
    while live:
        _sample_turns(live, policy, tokenizer, parser, limits, batch_size)
        waiting = [e for e in live if e.end is None]
        if waiting:
            _run_calls(waiting, toolbox, tokenizer, limits)
        live = [e for e in live if e.end is None]
        if progress is not None:
            progress(len(episodes) - len(live), len(episodes))
    return episodes


def _start(tokenizer: Any, prompt: list[dict], item: dict, tools: list[dict] | None) -> Episode:
    from rft_cli.generation import encode_prompt

    return Episode(
        prompt=prompt,
        tools=tools,
        item=item,
        prompt_ids=encode_prompt(tokenizer, prompt, tools),
        trace_id=f"trace_{uuid.uuid4().hex}",
    )


# -- the policy's turns ----------------------------------------------------------------------------


def _sample_turns(
    live: list[Episode],
    policy: Policy,
    tokenizer: Any,
    parser: OutputParser,
    limits: EpisodeLimits,
    batch_size: int,
) -> None:
    """One assistant turn for every live episode, longest sequences batched together."""
    ordered = sorted(live, key=lambda e: -(len(e.prompt_ids) + len(e.ids)))
    for start in range(0, len(ordered), batch_size):
        batch = ordered[start : start + batch_size]
        room = max(limits.max_tokens - len(e.ids) for e in batch)
        turns = policy.generate(
            [e.prompt_ids + e.ids for e in batch], min(limits.max_new_tokens, room)
        )
        for episode, tokens in zip(batch, turns, strict=True):
            _take_turn(episode, list(tokens), policy.stop, tokenizer, parser, limits)
        threads.tick()


def _take_turn(
    e: Episode,
    tokens: list[int],
    stop: set[int],
    tokenizer: Any,
    parser: OutputParser,
    limits: EpisodeLimits,
) -> None:
    """Record a sampled turn (cut to the episode's budget) and what it asks for."""
    room = limits.max_tokens - len(e.ids)
    over = len(tokens) > room
    tokens = tokens[:room]
    stopped = bool(tokens) and tokens[-1] in stop
    e.ids += tokens
    e.policy_mask += [1] * len(tokens)
    e.steps += 1
    e.stopped_by = tokens[-1] if stopped else None
    text = tokenizer.decode(tokens[:-1] if stopped else tokens, skip_special_tokens=True)
    parsed = parser.parse(text, e.tools)
    if parsed.errors:
        e.parse_errors += parsed.errors
        e.parse_detail = parsed.detail
    numbered = sum(len(m.get("tool_calls") or []) for m in e.messages)
    calls = [_with_id(call, numbered + i + 1) for i, call in enumerate(parsed.tool_calls)]
    message: dict[str, Any] = {"role": "assistant", "content": parsed.text}
    if calls:
        message["tool_calls"] = [_template_call(c) for c in calls]
    e.messages.append(message)
    e.final_text = parsed.text
    if not stopped:
        e.end = "max_tokens" if over or len(e.ids) >= limits.max_tokens else "truncated"
    elif not calls:
        e.end = "answer"
    elif e.tool_calls >= limits.max_episode_steps:
        e.end = "max_steps"
    else:
        e.waiting = calls


def _with_id(call: dict[str, Any], number: int) -> dict[str, Any]:
    """A parsed call with its id: nine letters and digits (Mistral's templates require exactly that)."""
    return {"id": f"call{number:05d}", **call}


def _template_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call["function"]
    return {
        "id": call["id"],
        "type": "function",
        "function": {
            "name": function["name"],
            "arguments": arguments_object(function["arguments"]) or {},
        },
    }


# -- the tools' turn -------------------------------------------------------------------------------


def _run_calls(waiting: list[Episode], toolbox: Any, tokenizer: Any, limits: EpisodeLimits) -> None:
    """Run the calls every waiting episode made, together, then append their results."""
    plan: list[tuple[Episode, list[dict], list[dict]]] = []
    requests: list[ToolRequest] = []
    for e in waiting:
        allowance = limits.max_episode_steps - e.tool_calls
        run, skipped = e.waiting[:allowance], e.waiting[allowance:]
        plan.append((e, run, skipped))
        requests += [_request(e, call) for call in run if _offered(e, call)]
        e.waiting = []
    results = iter(toolbox.run(requests) if requests else [])
    for e, run, skipped in plan:
        outcomes = [
            next(results) if _offered(e, c) else unknown_tool(_name(c), _names(e)) for c in run
        ]
        _finish_step(e, run, skipped, outcomes, tokenizer, limits)


def _request(e: Episode, call: dict[str, Any]) -> ToolRequest:
    function = call["function"]
    return ToolRequest(function["name"], function["arguments"], call["id"], e.item, e.trace_id)


def _name(call: dict[str, Any]) -> str:
    return call["function"]["name"]


def _names(e: Episode) -> list[str]:
    return [t["function"]["name"] for t in e.tools or [] if isinstance(t.get("function"), dict)]


def _offered(e: Episode, call: dict[str, Any]) -> bool:
    return _name(call) in _names(e)


def _finish_step(
    e: Episode,
    run: list[dict],
    skipped: list[dict],
    outcomes: list[ToolResult],
    tokenizer: Any,
    limits: EpisodeLimits,
) -> None:
    """Count the calls, drop the episode on a failure, else append the tool messages."""
    e.tool_calls += len(run)
    e.calls += [{"type": "function", "function": dict(c["function"])} for c in run]
    for outcome in outcomes:
        e.tool_seconds += outcome.seconds
        if outcome.error is not None:
            e.tool_errors[outcome.error] = e.tool_errors.get(outcome.error, 0) + 1
    failure = next((o for o in outcomes if o.drop), None)
    if failure is not None:
        e.end, e.drop_reason = "dropped", f"{failure.error}: {failure.detail}"
        return
    replies = [_tool_message(c, o.output) for c, o in zip(run, outcomes, strict=True)]
    replies += [_tool_message(c, NOT_RUN.format(limit=limits.max_episode_steps)) for c in skipped]
    continuation = continuation_ids(
        tokenizer, e.prompt + e.messages, replies, e.tools, e.stopped_by
    )
    if len(e.ids) + len(continuation) >= limits.max_tokens:  # no room left for a turn
        e.end = "max_tokens"
        return
    e.ids += continuation
    e.policy_mask += [0] * len(continuation)
    e.messages += replies


def _tool_message(call: dict[str, Any], output: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call["id"], "name": _name(call), "content": output}


def continuation_ids(
    tokenizer: Any,
    conversation: list[dict[str, Any]],
    replies: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    stopped_by: int | None,
) -> list[int]:
    """The tokens that follow a sampled assistant turn (ending at its stop token `stopped_by`)
    when `replies` are appended: what the chat template renders after the turn's end, through the
    next assistant turn's opening. Raises ConfigError for a template that rewrites earlier turns."""
    before = _render(tokenizer, conversation, tools, False)
    after = _render(tokenizer, conversation + replies, tools, True)
    if not after.startswith(before):
        raise ConfigError(
            "the model's chat template renders earlier turns differently once tool results follow them, so an "
            "episode's tokens cannot grow turn by turn; use a model whose template appends each message as it is"
        )
    end = tokenizer.decode([stopped_by]) if stopped_by is not None else ""
    at = before.rfind(end) if end else -1
    bridge = before[at + len(end) :] if at >= 0 else ""  # ChatML's "\n" after <|im_end|>
    return list(tokenizer(bridge + after[len(before) :], add_special_tokens=False)["input_ids"])


def demonstration_ids(
    tokenizer: Any,
    prompt: list[dict[str, Any]],
    turns: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    stop: set[int],
) -> tuple[list[int], list[int]]:
    """(ids, policy mask) of a demonstrated episode, built as the runner builds a sampled one.

    The prompt's ids (`encode_prompt`); then each assistant turn's own tokens, the text the
    template adds for it after the previous messages (with the generation prompt), tokenized alone
    and cut after its first `stop` token, as a sampled turn ends: 1 in the mask; then the tool
    messages that answer it, through `continuation_ids`: 0. So the warm-up trains on exactly the
    tokens and turns an episode of the same conversation holds, for any chat template the runner
    accepts (no `{% generation %}` markers needed).
    """
    from rft_cli.generation import encode_prompt

    ids = encode_prompt(tokenizer, prompt, tools)
    mask, conversation, i = [0] * len(ids), list(prompt), 0
    while i < len(turns):
        message = turns[i]
        tokens = _turn_ids(tokenizer, conversation, message, tools, stop)
        ids, mask = ids + tokens, mask + [1] * len(tokens)
        conversation.append(message)
        replies = []
        for reply in turns[i + 1 :]:
            if reply.get("role") == "assistant":
                break
            replies.append(reply)
        i += 1 + len(replies)
        if i < len(turns) or replies:
            stopped_by = tokens[-1] if tokens and tokens[-1] in stop else None
            continuation = continuation_ids(tokenizer, conversation, replies, tools, stopped_by)
            ids, mask = ids + continuation, mask + [0] * len(continuation)
            conversation += replies
    return ids, mask


def _turn_ids(
    tokenizer: Any,
    conversation: list[dict],
    message: dict,
    tools: list[dict] | None,
    stop: set[int],
) -> list[int]:
    """The tokens the template renders for assistant `message` after `conversation`, through its
    first stop token."""
    before = _render(tokenizer, conversation, tools, True)
    after = _render(tokenizer, [*conversation, message], tools, False)
    if not after.startswith(before):
        raise ConfigError(
            "the model's chat template renders earlier turns differently once an assistant turn follows "
            "them, so a demonstration's tokens cannot be built turn by turn; use a model whose template "
            "appends each message as it is"
        )
    tokens = list(tokenizer(after[len(before) :], add_special_tokens=False)["input_ids"])
    ends = [n for n, t in enumerate(tokens) if t in stop]
    return tokens[: ends[0] + 1] if ends else tokens


def _render(tokenizer: Any, messages: list[dict], tools: list[dict] | None, opening: bool) -> str:
    with_tools = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(
        messages, add_generation_prompt=opening, tokenize=False, **with_tools
    )


# -- grading ---------------------------------------------------------------------------------------

EPISODE_DROPPED = "episode_dropped"


def grade_episodes(grader: Any, episodes: Sequence[Episode]) -> list[Any | None]:
    """Each episode's grade (None for a dropped one, which is not graded): the grader's `sample` is
    `Episode.sample()` and its `item` the episode's row; an unreadable call adds
    `tool_call_parse_error` to the grade's errors, as for a single answer."""
    from rft_cli.tool_calls import TOOL_CALL_PARSE_ERROR

    graded = [e for e in episodes if not e.dropped]
    results = (
        grader.grade_batch([e.sample() for e in graded], [e.item for e in graded]) if graded else []
    )
    by_id = {id(e): r for e, r in zip(graded, results, strict=True)}
    for e, result in zip(graded, results, strict=True):
        if e.parse_errors:
            result.errors = {
                **result.errors,
                TOOL_CALL_PARSE_ERROR: result.errors.get(TOOL_CALL_PARSE_ERROR, 0) + e.parse_errors,
            }
            result.details = {**result.details, TOOL_CALL_PARSE_ERROR: e.parse_detail}
    return [by_id.get(id(e)) for e in episodes]
