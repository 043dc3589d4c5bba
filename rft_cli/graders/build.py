"""The grader registry, and building graders from a dict (inline in a recipe) or a YAML/JSON file."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from rft_cli.errors import GraderError
from rft_cli.graders import specs
from rft_cli.graders.base import Grader


@dataclass(frozen=True)
class GraderType:
    """A registered grader type: its spec model and a factory `(spec, where) -> Grader`."""

    spec: type[BaseModel]
    factory: Callable[[Any, str], Grader]


GRADERS: dict[str, GraderType] = {}


def register(type_name: str, spec: type[BaseModel], factory: Callable[[Any, str], Grader]) -> None:
    """Add (or replace) a grader type; tests register fakes the same way."""
    GRADERS[type_name] = GraderType(spec, factory)


def _lazy(module: str, class_name: str) -> Callable[[Any, str], Grader]:
    """A factory that imports its module on first use (keeps `rft --help` fast)."""

    def factory(spec: Any, where: str) -> Grader:
        import importlib

        return getattr(importlib.import_module(module), class_name)(spec, where)

    factory.__qualname__ = f"{module}.{class_name}"
    return factory


def _build_multi(spec: specs.MultiSpec, where: str) -> Grader:
    """A multi grader gets its sub-graders built here, so `graders.multi` never imports this module."""
    from rft_cli.graders.multi import MultiGrader  # imported on first use: keeps `rft --help` fast

    graders = {}
    for key, sub_spec in spec.graders.items():
        sub_where = f"{where}.graders.{key}" if where else f"graders.{key}"
        if isinstance(sub_spec, dict) and sub_spec.get("type") == "multi":
            raise GraderError(
                f"{sub_where}.type: a multi grader cannot contain another multi grader (flatten them into one formula)"
            )
        graders[key] = build_from_dict(sub_spec, sub_where)
    return MultiGrader(spec, graders, where)


def _register_builtins() -> None:
    register(
        "string_check", specs.StringCheckSpec, _lazy("rft_cli.graders.builtin", "StringCheckGrader")
    )
    register("numeric", specs.NumericSpec, _lazy("rft_cli.graders.builtin", "NumericGrader"))
    register("regex", specs.RegexSpec, _lazy("rft_cli.graders.builtin", "RegexGrader"))
    register("json_match", specs.JsonMatchSpec, _lazy("rft_cli.graders.builtin", "JsonMatchGrader"))
    register("multi", specs.MultiSpec, _build_multi)
    register("python", specs.PythonSpec, _lazy("rft_cli.graders.python_grader", "PythonGrader"))
    register(
        "text_similarity",
        specs.TextSimilaritySpec,
        _lazy("rft_cli.graders.similarity", "TextSimilarityGrader"),
    )
    register("math", specs.MathSpec, _lazy("rft_cli.graders.math_grader", "MathGrader"))
    register(
        "score_model", specs.ScoreModelSpec, _lazy("rft_cli.graders.judge", "ScoreModelGrader")
    )
    register(
        "label_model", specs.LabelModelSpec, _lazy("rft_cli.graders.judge", "LabelModelGrader")
    )


_register_builtins()


def _field(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def build_from_dict(spec: Any, where: str = "") -> Grader:
    """Validate `spec` against its type's model and build the grader; errors name the field path."""
    if not isinstance(spec, dict):
        kind = type(spec).__name__ if spec is not None else "null"
        raise GraderError(
            f'{where or "grader"}: is a {kind}; a grader is an object with a "type" field'
        )
    type_name = spec.get("type")
    known = ", ".join(GRADERS)
    if type_name is None:
        raise GraderError(
            f'{_field(where, "type")}: missing (every grader needs a "type": one of {known})'
        )
    if (
        not isinstance(type_name, str) or type_name not in GRADERS
    ):  # a list or a mapping is unhashable
        import difflib

        close = difflib.get_close_matches(str(type_name), list(GRADERS), n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        raise GraderError(
            f"{_field(where, 'type')}: {json.dumps(type_name)} is not one of {known}{hint}"
        )
    if type_name == "multi" and isinstance(spec.get("graders"), list):
        raise GraderError(
            f"{_field(where, 'graders')}: is a list; write a named map (name: grader) so that "
            "calculate_output can refer to each grader by its name"
        )
    grader_type = GRADERS[type_name]
    try:
        model = grader_type.spec.model_validate(spec)
    except ValidationError as exc:
        raise GraderError(specs.describe_validation_error(exc, grader_type.spec, where)) from None
    return grader_type.factory(model, where)


def build_grader(spec: dict[str, Any], source: str | None = None) -> Grader:
    """Build a grader from a dict in OpenAI's grader schema (for example one inline in a recipe).

    Args:
        spec: the grader object, `type` at the top.
        source: where it came from (a file name, or "recipe.yaml: grader"), prefixed to errors.

    Returns:
        The grader. Raises `GraderError` (exit code 2) naming the bad field.

    Example:
        >>> build_grader({"type": "string_check", "input": "{{ sample.output_text }}",
        ...               "reference": "{{ item.answer }}", "operation": "eq"}).grade("4", {"answer": "4"}).reward
        1.0
    """
    try:
        return build_from_dict(spec)
    except GraderError as exc:
        if source:
            raise GraderError(f"{source}: {exc}") from None
        raise


def read_grader_file(path: str | Path) -> dict[str, Any]:
    """Read one grader object from a YAML or JSON file (JSON by the .json suffix)."""
    from rft_cli import files

    if Path(path).suffix.lower() == ".json":
        data = files.read_json(path, "the grader file", GraderError)
    else:
        data = files.read_yaml(path, "the grader file", GraderError)
    if not isinstance(data, dict):
        raise GraderError(
            f'{path}: holds no grader object (write one object with a "type" field at the top)'
        )
    return data


def load_grader(path: str | Path) -> Grader:
    """Load one grader from a YAML or JSON file in OpenAI's grader schema.

    Example:
        >>> grader = load_grader("graders/exact.yaml")  # doctest: +SKIP
        >>> grader.grade("#### 42", {"answer": "42"}).reward  # doctest: +SKIP
        1.0
    """
    return build_grader(read_grader_file(path), source=str(path))


# What the API's functions take as a grader: a built `Grader`, or the path of a grader file.
GraderArg = Grader | str | Path


@contextmanager
def opened_grader(grader: GraderArg) -> Iterator[Grader]:
    """`grader` itself (its owner closes it), or the grader file at that path, loaded for the
    block and closed after it."""
    if not isinstance(grader, (str, PathLike)):
        yield grader
        return
    built = load_grader(grader)
    try:
        yield built
    finally:
        built.close()
