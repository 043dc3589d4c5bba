"""Tools in the prompt and tool calls in the answer, as OpenAI's RFT has them.

Prompt side: a row's `tools` reach the model through the chat template's `tools=` argument
(`template_tools`, the one gate every stage passes: SFT, PPO rollouts, GRPO/RLOO, eval). A chat
template that ignores `tools` is refused, since the model would never see the definitions.

Answer side: the grader's `sample` is built here for every stage (`grade_answers`):
`output_text` (the answer's text, tool-call markup removed when calls were read), `output_tools`
in OpenAI's shape `[{"type": "function", "function": {"name": ..., "arguments": "<JSON text>"}}]`,
and `output_json` left to the grader, which parses `output_text` as JSON on demand (OpenAI's rule).

Tool calls are read from the model's text only for rows that have `tools`:

- with the tokenizer's own response parser when it has one (a `response_template`, which
  transformers' `parse_response` reads; some hub tokenizers ship one); when it finds no call, the
  family parsers below still look (answers are decoded without special tokens, so markers that are
  special tokens are gone and the calls' JSON is what is left);
- else the Qwen/Hermes format, `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (Qwen2.5,
  Qwen3, Hermes, and templates modelled on them), any number of calls;
- else the Llama 3.1/3.2 JSON format, the whole answer `{"name": ..., "parameters": {...}}`
  (optionally after `<|python_tag|>`), or Mistral's list of calls `[{"name": ..., "arguments":
  {...}}]` (its `[TOOL_CALLS]` marker is a special token, gone from the decoded text).

Arguments are written back as `json.dumps` text (`openai_rows.arguments_text`). A call that cannot
be read (bad JSON, no name, an unclosed `<tool_call>`) is counted as a `tool_call_parse_error` on
that sample's grade, never raised.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rft_cli.data.openai_rows import arguments_text
from rft_cli.data.records import message_text
from rft_cli.errors import ConfigError

if TYPE_CHECKING:
    from rft_cli.graders.base import GradeResult

TOOL_CALL_PARSE_ERROR = "tool_call_parse_error"
_HERMES = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_PROBE_NAME = "rft_probe_tool"
_PROBE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": _PROBE_NAME,
            "description": "probe",
            "parameters": {"type": "object", "properties": {}},
        },
    }
]
_renders_tools_cache: dict[str, bool] = {}


def template_tools(tokenizer: Any, tools: list[dict] | None) -> list[dict] | None:
    """`tools` for `apply_chat_template(tools=...)`: None for a row without tools; ConfigError when
    the tokenizer's chat template ignores tools (checked once per template)."""
    if not tools:
        return None
    template = str(getattr(tokenizer, "chat_template", None))
    if template not in _renders_tools_cache:
        _renders_tools_cache[template] = _PROBE_NAME in _render_probe(tokenizer)
    if not _renders_tools_cache[template]:
        raise ConfigError(
            'the rows have "tools" but the model\'s chat template ignores them, so the model would never '
            "see the tool definitions; use a model (or, in a recipe, a model.tokenizer) whose chat template "
            "renders tools, such as Qwen2.5-Instruct or Llama 3.1 Instruct"
        )
    return tools


def _render_probe(tokenizer: Any) -> str:
    """A one-turn prompt with one tool, rendered by the tokenizer's chat template."""
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}],
            tools=_PROBE_TOOLS,
            add_generation_prompt=True,
            tokenize=False,
        )
    except (TemplateError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"the model's chat template fails on a tool definition ({str(exc)[:200]}); the rows have "
            '"tools", so use a model (or, in a recipe, a model.tokenizer) whose chat template renders tools'
        ) from None


@dataclass
class ParsedOutput:
    """An answer read for tool calls: its text without the call markup, the calls, and unreadable calls."""

    text: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    errors: int = 0
    detail: str = ""


class OutputParser:
    """Reads tool calls from answers; picklable (GRPO/RLOO reward functions travel to TRL).

    `response_template` is a tokenizer's own response parser (transformers `parse_response`); None
    means the family parsers (Qwen/Hermes tags, then Llama 3 / Mistral JSON).

    >>> OutputParser().parse('<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>').tool_calls
    [{'type': 'function', 'function': {'name': 'f', 'arguments': '{"x": 1}'}}]
    """

    def __init__(self, response_template: dict | None = None) -> None:
        self.response_template = response_template

    def parse(self, text: str, tools: list[dict] | None = None) -> ParsedOutput:
        if self.response_template is not None:
            parsed = _parse_with_template(text, self.response_template, tools)
            # Answers are decoded without special tokens: a template whose call markers are special
            # tokens finds nothing, and the calls' JSON left behind is read by the family parsers.
            if parsed.tool_calls or parsed.errors:
                return parsed
        if "<tool_call>" in text:
            return _parse_hermes(text)
        return _parse_json_calls(text)


def output_parser(tokenizer: Any = None) -> OutputParser:
    """The parser for a model's answers: its tokenizer's `response_template` if it has a usable one."""
    template = getattr(tokenizer, "response_template", None)
    if isinstance(template, dict):
        try:
            from transformers.utils.chat_parsing.response_templates import load_response_template

            load_response_template(template)
        except (ImportError, ValueError):  # an older transformers, or a template it cannot read
            template = None
    return OutputParser(template if isinstance(template, dict) else None)


def _call(name: Any, arguments: Any) -> dict[str, Any] | None:
    """One call in OpenAI's shape, or None when the name or the arguments are not usable."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            return None
    if arguments is None:
        arguments = {}
    if not isinstance(name, str) or not name or not isinstance(arguments, dict):
        return None
    try:
        text = arguments_text(arguments)
    except (ValueError, RecursionError):
        return None
    return {"type": "function", "function": {"name": name, "arguments": text}}


def _parse_hermes(text: str) -> ParsedOutput:
    parsed = ParsedOutput(text="")
    for body in _HERMES.findall(text):
        try:
            value = json.loads(body)
        except (ValueError, RecursionError):
            value = None
        call = (
            _call(value.get("name"), value.get("arguments", value.get("parameters")))
            if isinstance(value, dict)
            else None
        )
        if call is None:
            parsed.errors += 1
            parsed.detail = f"unreadable tool call: {body.strip()[:200]}"
        else:
            parsed.tool_calls.append(call)
    rest = _HERMES.sub("", text)
    if "<tool_call>" in rest:  # opened and never closed (cut off at max_new_tokens, or malformed)
        parsed.errors += 1
        parsed.detail = "a <tool_call> is never closed by </tool_call>"
        rest = rest[: rest.index("<tool_call>")]
    parsed.text = rest.strip()
    return parsed


def _parse_json_calls(text: str) -> ParsedOutput:
    """Llama 3's `{"name", "parameters"}` answer or Mistral's `[{"name", "arguments"}, ...]`; any other
    text (JSON too) is an answer, not a call."""
    body = text.strip().removeprefix("<|python_tag|>").strip()
    if not (body[:1] in "{[" and body and '"name"' in body):
        return ParsedOutput(text=text)
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return ParsedOutput(text=text)  # JSON-like prose
    objects = value if isinstance(value, list) and value else [value]
    if not all(
        isinstance(v, dict) and "name" in v and ("parameters" in v or "arguments" in v)
        for v in objects
    ):
        return ParsedOutput(text=text)
    parsed = ParsedOutput(text="")
    for obj in objects:
        call = _call(obj["name"], obj.get("parameters", obj.get("arguments")))
        if call is None:
            parsed.errors += 1
            parsed.detail = f"unreadable tool call: {json.dumps(obj)[:200]}"
        else:
            parsed.tool_calls.append(call)
    return parsed


def _parse_with_template(text: str, template: dict, tools: list[dict] | None) -> ParsedOutput:
    from transformers.utils.chat_parsing import parse_response

    offered: list[dict | Callable[..., Any]] | None = list(tools) if tools is not None else None
    try:
        message = parse_response(text, template, prefix="", tools=offered)
    except (ValueError, TypeError, KeyError) as exc:
        return ParsedOutput(
            text=text,
            errors=1,
            detail=f"the tokenizer's response parser failed: {str(exc).splitlines()[0]}",
        )
    return _from_message(message if isinstance(message, dict) else {"content": text})


def _from_message(message: dict) -> ParsedOutput:
    """A parsed assistant message ({"content", "tool_calls"}) as a ParsedOutput."""
    content = message.get("content")
    parsed = ParsedOutput(text=content if isinstance(content, str) else "")
    for raw in message.get("tool_calls") or []:
        function = raw.get("function") if isinstance(raw, dict) else None
        call = (
            _call(function.get("name"), function.get("arguments"))
            if isinstance(function, dict)
            else None
        )
        if call is None:
            parsed.errors += 1
            parsed.detail = f"unreadable tool call: {str(raw)[:200]}"
        else:
            parsed.tool_calls.append(call)
    return parsed


def completion_text(completion: Any) -> str:
    """A completion as text: a string as is; a conversational list -> its assistant content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return message_text(completion.get("content")) or ""
    if isinstance(completion, (list, tuple)):
        messages = [
            m
            for m in completion
            if isinstance(m, dict) and m.get("role", "assistant") == "assistant"
        ]
        return "".join(message_text(m.get("content")) or "" for m in messages)
    return str(completion)


def _tool_message(answer: Any) -> dict | None:
    """The assistant message of a TRL completion whose tool calls TRL already parsed, else None."""
    if (
        isinstance(answer, (list, tuple))
        and answer
        and isinstance(answer[-1], dict)
        and answer[-1].get("tool_calls")
    ):
        return answer[-1]
    return None


def grader_sample(
    answer: Any, item: dict[str, Any], parser: OutputParser | None = None
) -> tuple[dict[str, Any], ParsedOutput | None]:
    """The grader's `sample` for one answer (text, or a TRL completion) to the row `item`, and the
    tool-call reading (None for a row without tools)."""
    tools = item.get("tools") if isinstance(item, dict) else None
    if isinstance(answer, dict) and "output_text" in answer:  # a sample object (`rft grade`)
        if "output_tools" in answer or not (isinstance(tools, list) and tools):
            return answer, None  # given whole
        parsed = (parser or OutputParser()).parse(str(answer["output_text"]), tools)
        return {**answer, "output_text": parsed.text, "output_tools": parsed.tool_calls}, parsed
    if not (isinstance(tools, list) and tools):
        return {"output_text": completion_text(answer), "output_tools": []}, None
    message = _tool_message(answer)
    if message is not None:
        parsed = _from_message(message)
    else:
        parsed = (parser or OutputParser()).parse(completion_text(answer), tools)
    return {"output_text": parsed.text, "output_tools": parsed.tool_calls}, parsed


def grade_answers(
    grader: Any,
    answers: Sequence[Any],
    items: Sequence[dict[str, Any]],
    parser: OutputParser | None = None,
) -> list[GradeResult]:
    """Grade answers with their rows' tool calls read into `sample.output_tools`; a call that could
    not be read adds `tool_call_parse_error` to that grade's errors (a counted error, not a crash)."""
    built = [
        grader_sample(answer, item, parser) for answer, item in zip(answers, items, strict=True)
    ]
    results = grader.grade_batch([sample for sample, _ in built], list(items))
    for result, (_, parsed) in zip(results, built, strict=True):
        if parsed is not None and parsed.errors:
            result.errors = {
                **result.errors,
                TOOL_CALL_PARSE_ERROR: result.errors.get(TOOL_CALL_PARSE_ERROR, 0) + parsed.errors,
            }
            result.details = {**result.details, TOOL_CALL_PARSE_ERROR: parsed.detail}
    return results
