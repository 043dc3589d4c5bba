"""Tool definitions from a Python function's signature and docstring, and arguments checked
against a definition's JSON schema.

The source is read with `ast`, never run: a tool's code runs only in the sandbox. So annotations
are read as written (`str`, `int`, `float`, `bool`, `list[str]`, `dict`, `Literal["a", "b"]`,
`X | None`, `Optional[X]`), not evaluated; a parameter with a default is optional.

    def lookup(key: str) -> str:
        \"\"\"The value stored under a key.

        Args:
            key: two lowercase letters, such as "ka".
        \"\"\"

becomes `{"type": "function", "function": {"name": "lookup", "description": "The value stored
under a key.", "parameters": {"type": "object", "properties": {"key": {"type": "string",
"description": "two lowercase letters, such as \\"ka\\"."}}, "required": ["key"]}}}`.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from rft_cli.errors import ConfigError

_SCALARS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_CONTAINERS = {
    "list": "array",
    "List": "array",
    "tuple": "array",
    "dict": "object",
    "Dict": "object",
}
_ARG_LINE = re.compile(r"^\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_PARAM_LINE = re.compile(r"^\s*:param\s+(?:\w+\s+)?(\w+)\s*:\s*(.*)$")


def function_definitions(source: str, names: list[str], where: str) -> dict[str, dict[str, Any]]:
    """{name: OpenAI function definition} for each top-level function `names` in `source`."""
    try:
        tree = ast.parse(source, where)
    except SyntaxError as exc:
        raise ConfigError(f"{where}: syntax error at line {exc.lineno}: {exc.msg}") from None
    found = {
        node.name: node
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    definitions = {}
    for name in names:
        node = found.get(name)
        if node is None:
            raise ConfigError(
                f"{where}: defines no top-level function {name}() (the tool's name is the function's name)"
            )
        if isinstance(node, ast.AsyncFunctionDef):
            raise ConfigError(f"{where}: line {node.lineno}: {name}() is async; write a plain def")
        definitions[name] = _definition(node, where)
    return definitions


def _definition(node: ast.FunctionDef, where: str) -> dict[str, Any]:
    args = node.args
    if args.vararg or args.kwarg or args.posonlyargs:
        raise ConfigError(
            f"{where}: line {node.lineno}: {node.name}() takes *args, **kwargs or positional-only "
            "parameters; a tool is called with named arguments only, so list each one"
        )
    described = _docstring_params(ast.get_docstring(node) or "")
    positional = args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    properties, required = {}, []
    for arg, default in [
        *zip(positional, defaults, strict=True),
        *zip(args.kwonlyargs, args.kw_defaults, strict=True),
    ]:
        schema = annotation_schema(arg.annotation)
        if arg.arg in described:
            schema["description"] = described[arg.arg]
        properties[arg.arg] = schema
        if default is None:
            required.append(arg.arg)
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    function: dict[str, Any] = {"name": node.name}
    summary = _summary(ast.get_docstring(node) or "")
    if summary:
        function["description"] = summary
    function["parameters"] = parameters
    return {"type": "function", "function": function}


def annotation_schema(annotation: ast.expr | None) -> dict[str, Any]:
    """The JSON schema of a parameter annotation read from source ({} when unannotated or unknown)."""
    if annotation is None:
        return {}
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:  # a string annotation, "list[str]"
            return annotation_schema(ast.parse(annotation.value, mode="eval").body)
        except SyntaxError:
            return {}
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        return _union([annotation.left, annotation.right])
    name = _name(annotation.value if isinstance(annotation, ast.Subscript) else annotation)
    if name in _SCALARS and not isinstance(annotation, ast.Subscript):
        return {"type": _SCALARS[name]}
    if name in _CONTAINERS:
        schema: dict[str, Any] = {"type": _CONTAINERS[name]}
        if isinstance(annotation, ast.Subscript) and schema["type"] == "array":
            item = annotation.slice
            if not isinstance(item, ast.Tuple):
                schema["items"] = annotation_schema(item)
        return schema
    if isinstance(annotation, ast.Subscript) and name in ("Optional", "Union"):
        parts = (
            annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else [annotation.slice]
        )
        return _union(parts)
    if isinstance(annotation, ast.Subscript) and name == "Literal":
        return _literal(annotation.slice)
    return {}


def _union(parts: list[ast.expr]) -> dict[str, Any]:
    kept = [
        p
        for p in parts
        if not (isinstance(p, ast.Constant) and p.value is None) and _name(p) != "None"
    ]
    return annotation_schema(kept[0]) if len(kept) == 1 else {}


def _literal(node: ast.expr) -> dict[str, Any]:
    values = [
        e.value
        for e in (node.elts if isinstance(node, ast.Tuple) else [node])
        if isinstance(e, ast.Constant)
    ]
    kinds = {type(v) for v in values}
    schema: dict[str, Any] = {"enum": values}
    if len(kinds) == 1 and (kind := kinds.pop().__name__) in _SCALARS:
        schema = {"type": _SCALARS[kind], "enum": values}
    return schema


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr  # typing.Optional, t.List
    return ""


def _summary(docstring: str) -> str:
    """The docstring's first paragraph, on one line (reST `:param x:` lines left out)."""
    lines = docstring.strip().split("\n\n")[0].splitlines()
    return " ".join(" ".join(line.split()) for line in lines if not line.strip().startswith(":"))


def _docstring_params(docstring: str) -> dict[str, str]:
    """Parameter descriptions from a Google-style `Args:` section or reST `:param x:` lines."""
    found: dict[str, str] = {}
    in_args, indent_of_names, current = False, None, None
    for line in docstring.splitlines():
        stripped, indent = line.strip(), len(line) - len(line.lstrip())
        param = _PARAM_LINE.match(line)
        if param:
            current, found[param.group(1)] = param.group(1), param.group(2).strip()
        elif stripped in ("Args:", "Arguments:", "Parameters:"):
            in_args, indent_of_names, current = True, None, None
        elif not in_args or not stripped:
            current = current if stripped else None
        elif indent == 0:
            in_args = False  # the next section (Returns:) starts at the margin
        else:
            indent_of_names = indent if indent_of_names is None else indent_of_names
            match = _ARG_LINE.match(line)
            if indent == indent_of_names and match:
                current, found[match.group(1)] = match.group(1), match.group(2).strip()
            elif current is not None and indent > indent_of_names:
                found[current] = f"{found[current]} {stripped}".strip()
    return found


# -- arguments against a schema (the subset function definitions use) --------------------------

_JSON_TYPES = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def argument_problems(arguments: Any, schema: Any, where: str = "arguments") -> list[str]:
    """Where `arguments` do not fit `schema`: `type`, `enum`, `const`, `properties`, `required`,
    `additionalProperties: false` and `items` are checked; other keywords are not (a subset of
    JSON Schema, enough for function parameters).

    >>> argument_problems({"key": 3}, {"type": "object", "properties": {"key": {"type": "string"}}})
    ['arguments.key is 3, not a string']
    """
    if not isinstance(schema, dict):
        return []
    problems = _type_problem(arguments, schema, where)
    if problems:
        return problems
    if "enum" in schema and isinstance(schema["enum"], list) and arguments not in schema["enum"]:
        return [f"{where} is {_short(arguments)}, not one of {_short(schema['enum'])}"]
    if "const" in schema and arguments != schema["const"]:
        return [f"{where} is {_short(arguments)}, not {_short(schema['const'])}"]
    if isinstance(arguments, dict):
        return _object_problems(arguments, schema, where)
    if isinstance(arguments, list) and isinstance(schema.get("items"), dict):
        return [
            p
            for i, v in enumerate(arguments)
            for p in argument_problems(v, schema["items"], f"{where}[{i}]")
        ]
    return []


def _type_problem(value: Any, schema: dict, where: str) -> list[str]:
    wanted = schema.get("type")
    names = wanted if isinstance(wanted, list) else [wanted] if isinstance(wanted, str) else []
    kinds = [_JSON_TYPES[n] for n in names if n in _JSON_TYPES]
    if not kinds:
        return []
    fits = any(
        isinstance(value, k) and not (isinstance(value, bool) and bool not in k) for k in kinds
    )
    if isinstance(value, float) and "integer" in names and value.is_integer():
        fits = True
    return [] if fits else [f"{where} is {_short(value)}, not {_article(' or '.join(names))}"]


def _object_problems(arguments: dict, schema: dict, where: str) -> list[str]:
    found = schema.get("properties")
    properties: dict = found if isinstance(found, dict) else {}
    problems = [
        f'{where} lacks "{name}", which the tool requires'
        for name in schema.get("required") or []
        if isinstance(name, str) and name not in arguments
    ]
    for key, value in arguments.items():
        if key in properties:
            problems += argument_problems(value, properties[key], f"{where}.{key}")
        elif schema.get("additionalProperties") is False:
            known = ", ".join(properties) or "none"
            problems.append(
                f'{where} has "{key}", which the tool does not take (it takes: {known})'
            )
    return problems


def _article(name: str) -> str:
    return f"an {name}" if name[:1] in "aeiou" else f"a {name}"


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
