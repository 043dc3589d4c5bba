"""OpenAI's RFT rows as they are: tool definitions, tool calls, tool results and content parts.

A row of OpenAI's reinforcement fine-tuning format has two reserved keys, `messages` (Chat
Completions messages: system, developer, user, assistant, tool) and `tools` (Chat Completions
function definitions); every other key is `item.<key>` for the grader. This module checks the
parts of that format the plain prompt/answer contract does not have, each problem a one-sentence
fix naming the place (`tools[1].function.parameters: ...`), and turns messages and tools into the
shape chat templates read (`apply_chat_template(messages, tools=...)`: tool-call arguments as
objects, as Hugging Face templates expect, where OpenAI writes them as JSON strings).

Image, audio and file parts get one error naming the part: rft trains text-only models.
"""

from __future__ import annotations

import json
import re
from typing import Any

TOOL_ROLE = "tool"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
_FUNCTION_KEYS = ("name", "description", "parameters", "strict")
_TOOL_KEYS = ("type", "function")
_CALL_KEYS = ("id", "type", "function")
# Content parts that carry something other than text, by the names OpenAI's formats give them.
_MEDIA_PARTS = {
    "image_url": "an image",
    "input_image": "an image",
    "image": "an image",
    "input_audio": "audio",
    "audio": "audio",
    "file": "a file",
    "input_file": "a file",
}


def media_part_problem(where: str, content: Any) -> str | None:
    """The error for a content list that holds an image, audio or file part, else None."""
    if not isinstance(content, list):
        return None
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _MEDIA_PARTS:
            return (
                f'{where}.content[{j}] is {_MEDIA_PARTS[kind]} part ("type": "{kind}"); rft trains text-only '
                "models, so remove it or describe it in text"
            )
    return None


def check_tool_message(
    where: str, message: dict, text: str | None, call_ids: set[str]
) -> list[str]:
    """Problems of a `tool` message: its result text and the `tool_call_id` it answers."""
    problems = []
    if text is None:
        problems.append(
            f'{where}.content must be the tool\'s result as a string or a list of {{"type": "text", "text": ...}} parts'
        )
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        problems.append(
            f'{where} has no "tool_call_id" (give the id of the assistant tool call this result answers)'
        )
    elif call_ids and call_id not in call_ids:
        problems.append(
            f'{where}.tool_call_id "{call_id}" answers no earlier tool call (ids: {", ".join(sorted(call_ids))})'
        )
    return problems


def check_tool_calls(
    where: str,
    calls: Any,
    tool_names: set[str] | None,
    definitions: dict[str, dict] | None = None,
    source: str = '"tools"',
) -> list[str]:
    """Problems of an assistant message's `tool_calls` (OpenAI's shape: type function, name, JSON
    arguments): a name `tool_names` lacks, and arguments that do not fit the `parameters` of the
    function's definition in `definitions` (name -> its `function` object). `source` names where
    the tools are defined, for the messages."""
    if not isinstance(calls, list) or not calls:
        return [
            f'{where}.tool_calls must be a non-empty list of {{"type": "function", "function": {{"name", "arguments"}}}} objects'
        ]
    problems = []
    for k, call in enumerate(calls):
        here = f"{where}.tool_calls[{k}]"
        if not isinstance(call, dict):
            problems.append(
                f'{here} must be an object {{"type": "function", "function": {{"name", "arguments"}}}}'
            )
            continue
        problems += _unknown_keys(here, call, _CALL_KEYS)
        if call.get("type", "function") != "function":
            problems.append(
                f'{here}.type is {json.dumps(call.get("type"))}; only "function" tool calls exist in chat data'
            )
        if "id" in call and not isinstance(call["id"], str):
            problems.append(f"{here}.id must be a string")
        function = call.get("function")
        if not isinstance(function, dict):
            problems.append(f'{here}.function must be an object with "name" and "arguments"')
            continue
        problems += _unknown_keys(f"{here}.function", function, ("name", "arguments"))
        name = function.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{here}.function.name must be the called function's name")
        elif tool_names is not None and name not in tool_names:
            problems.append(
                f'{here} calls "{name}", which {source} does not define (defined: {", ".join(sorted(tool_names)) or "none"})'
            )
        arguments = arguments_object(function.get("arguments"))
        if arguments is None:
            problems.append(
                f'{here}.function.arguments must be a JSON object written as a string, such as "{{\\"city\\": \\"Paris\\"}}"'
            )
        elif isinstance(name, str) and definitions and isinstance(definitions.get(name), dict):
            problems += _argument_problems(here, name, arguments, definitions[name])
    return problems


def _argument_problems(where: str, name: str, arguments: dict, function: dict) -> list[str]:
    """Where a call's arguments do not fit its function's `parameters` schema."""
    from rft_cli.tools.schema import argument_problems

    found = argument_problems(arguments, function.get("parameters"), "arguments")
    return [
        f"{where}: the arguments do not fit {name}'s parameters: {problem}" for problem in found
    ]


def function_definitions(tools: Any) -> dict[str, dict]:
    """name -> `function` object of each well-formed definition of a `tools` list."""
    if not isinstance(tools, list):
        return {}
    return {
        t["function"]["name"]: t["function"]
        for t in tools
        if isinstance(t, dict)
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
    }


def call_ids_of(message: dict) -> set[str]:
    """The ids of an assistant message's tool calls (those that have one)."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return set()
    return {
        call["id"] for call in calls if isinstance(call, dict) and isinstance(call.get("id"), str)
    }


def check_tools(tools: Any) -> list[str]:
    """Problems of a row's `tools`: a list of Chat Completions function definitions with unique names."""
    if not isinstance(tools, list):
        return [
            '"tools" must be a list of {"type": "function", "function": {"name", "description", "parameters"}} objects'
        ]
    problems: list[str] = []
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            problems.append(
                f'{where} must be an object {{"type": "function", "function": {{...}}}}'
            )
            continue
        problems += _unknown_keys(where, tool, _TOOL_KEYS)
        if tool.get("type") != "function":
            problems.append(
                f'{where}.type is {json.dumps(tool.get("type"))}; use "function" (the only tool type of chat data)'
            )
        function = tool.get("function")
        if not isinstance(function, dict):
            problems.append(
                f'{where}.function must be an object with "name" (and "description", "parameters")'
            )
            continue
        problems += _check_function(f"{where}.function", function)
        name = function.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append(
                    f'{where}.function.name "{name}" is defined twice; give each tool its own name'
                )
            seen.add(name)
    return problems


def _check_function(where: str, function: dict) -> list[str]:
    problems = _unknown_keys(where, function, _FUNCTION_KEYS)
    name = function.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(
            f"{where}.name is {json.dumps(name)}; use 1 to 64 letters, digits, '_' or '-'"
        )
    if "description" in function and not isinstance(function["description"], str):
        problems.append(f"{where}.description must be a string")
    if (
        "strict" in function
        and not isinstance(function["strict"], bool)
        and function["strict"] is not None
    ):
        problems.append(f"{where}.strict must be true or false")
    if "parameters" in function:
        problems += _check_parameters(f"{where}.parameters", function["parameters"])
    return problems


def _check_parameters(where: str, schema: Any) -> list[str]:
    """The top of a parameters JSON schema: an object schema whose `required` names its properties."""
    if not isinstance(schema, dict):
        return [
            f'{where} must be a JSON schema object, such as {{"type": "object", "properties": {{...}}}}'
        ]
    problems = []
    if schema.get("type", "object") != "object":
        problems.append(
            f'{where}.type is {json.dumps(schema.get("type"))}; a function\'s parameters are an "object" schema'
        )
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        problems.append(
            f"{where}.properties must be an object mapping each parameter to its schema"
        )
        properties = {}
    for name, sub in properties.items():
        if not isinstance(sub, (dict, bool)):
            problems.append(f'{where}.properties["{name}"] must be a JSON schema (an object)')
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        problems.append(f"{where}.required must be a list of parameter names")
    else:
        missing = [r for r in required if r not in properties]
        if missing:
            problems.append(
                f'{where}.required names {", ".join(json.dumps(m) for m in missing)}, which "properties" does not define'
            )
    return problems


def _unknown_keys(where: str, obj: dict, known: tuple[str, ...]) -> list[str]:
    return [
        f"{where} has an unknown key {json.dumps(key)} (known: {', '.join(known)})"
        for key in obj
        if key not in known
    ]


def tool_names(tools: Any) -> set[str] | None:
    """The function names a valid `tools` list defines (None when the row has no tools)."""
    if not isinstance(tools, list) or not tools:
        return None
    return {
        t["function"]["name"]
        for t in tools
        if isinstance(t, dict)
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
    }


def arguments_object(arguments: Any) -> dict | None:
    """Tool-call arguments as an object: a JSON string that holds one (OpenAI), or an object; else None."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str):
        return None
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def template_message(message: dict, text: str) -> dict[str, Any]:
    """A checked message in the shape chat templates read: text content, tool calls with object arguments."""
    out: dict[str, Any] = {"role": message["role"], "content": text}
    if message.get("tool_calls"):
        out["tool_calls"] = [_template_call(call) for call in message["tool_calls"]]
    if message["role"] == TOOL_ROLE:
        out["tool_call_id"] = message["tool_call_id"]
    if isinstance(message.get("name"), str):
        out["name"] = message["name"]
    return out


def _template_call(call: dict) -> dict[str, Any]:
    function = call["function"]
    out: dict[str, Any] = {
        "type": "function",
        "function": {
            "name": function["name"],
            "arguments": arguments_object(function["arguments"]),
        },
    }
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def openai_tool_calls(message: dict) -> list[dict[str, Any]]:
    """An assistant message's tool calls as a grader's `sample.output_tools` (arguments as JSON text)."""
    return [
        {
            "type": "function",
            "function": {
                "name": call["function"]["name"],
                "arguments": arguments_text(arguments_object(call["function"]["arguments"])),
            },
        }
        for call in message.get("tool_calls") or []
    ]


def arguments_text(arguments: dict | None) -> str:
    """The one way rft writes tool-call arguments as text: `json.dumps` with its default separators,
    which is also what chat templates' `tojson` renders, so a call the model learnt from a template
    and the same call in a dataset's demonstration compare equal as strings."""
    return json.dumps(arguments, ensure_ascii=False)


def row_tools(row: dict) -> list[dict] | None:
    """The row's tool definitions for `apply_chat_template(tools=...)`, or None when it has none."""
    tools = row.get("tools")
    return tools if isinstance(tools, list) and tools else None
