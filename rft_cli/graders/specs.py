"""One pydantic spec per grader type (OpenAI's grader JSON plus RFT-native types), told apart by `type`.

Specs are strict (`extra="forbid"`): a misspelt key is an error that names its path, never ignored.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

SIMILARITY_METRICS = (
    "fuzzy_match", "bleu", "gleu", "meteor",
    "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l", "cosine",
)  # fmt: skip


def _is_text(value: str) -> bool:
    """True when `value` can be written as UTF-8 (no lone surrogate, which a JSON `\\ud800` makes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class GraderSpec(BaseModel):
    """Fields every grader has: `type` (set by each subclass) and an optional `name`.

    Numbers must be finite (`allow_inf_nan=False`): `.inf` was accepted as a weight or a timeout
    and then failed, or scored a wrong answer 1.0, at every grade.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str | None = None

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str | None) -> str | None:
        if value is not None and not _is_text(value):
            raise ValueError("holds a lone surrogate (\\ud800-\\udfff), which is not text")
        return value


class StringCheckSpec(GraderSpec):
    type: Literal["string_check"]
    input: str
    reference: str
    operation: Literal["eq", "ne", "like", "ilike"]


class NumericSpec(GraderSpec):
    type: Literal["numeric"]
    input: str = "{{ sample.output_text }}"
    reference: str
    patterns: list[str] | None = None
    last_number: bool = True
    abs_tol: float = Field(1e-2, ge=0)
    rel_tol: float = Field(0.0, ge=0)
    partial_credit: float = Field(0.0, ge=0, le=1)


class TextSimilaritySpec(GraderSpec):
    type: Literal["text_similarity"]
    input: str
    reference: str
    evaluation_metric: Literal[SIMILARITY_METRICS]  # type: ignore[valid-type]
    pass_threshold: float | None = Field(None, ge=0, le=1)
    embedding_model: str | None = None


class PythonSpec(GraderSpec):
    type: Literal["python"]
    source: str
    image_tag: str | None = None
    pass_threshold: float | None = Field(None, ge=0, le=1)
    timeout: float = Field(10.0, gt=0, le=3600)
    memory_mb: int = Field(1024, ge=64, le=1 << 20)  # 1 TiB: more overflows the address-space limit
    workers: int = Field(2, ge=1, le=64)


class MathSpec(GraderSpec):
    type: Literal["math"]
    input: str = "{{ sample.output_text }}"
    reference: str
    timeout: float = Field(5.0, gt=0, le=3600)


class RegexSpec(GraderSpec):
    type: Literal["regex"]
    input: str = "{{ sample.output_text }}"
    pattern: str
    reference: str | None = None
    flags: list[Literal["ignorecase", "multiline", "dotall"]] = []
    occurrence: Literal["first", "last"] = "first"
    case_sensitive: bool = True


class JsonMatchSpec(GraderSpec):
    type: Literal["json_match"]
    input: str = "{{ sample.output_json }}"
    reference: str | dict[str, Any]
    fields: dict[str, float] | None = None
    case_sensitive: bool = True
    abs_tol: float = Field(1e-9, ge=0)

    @model_validator(mode="after")
    def _positive_weights(self) -> JsonMatchSpec:
        for field_name, weight in (self.fields or {}).items():
            if weight < 0:
                raise ValueError(f"fields.{field_name}: weight {weight} must be >= 0")
        return self


class MessageSpec(BaseModel):
    """One judge prompt message; `content` (a string, one part, or a list of parts) may hold templates."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | dict[str, Any] | list[str | dict[str, Any]]
    type: Literal["message"] | None = None


MAX_JUDGE_TOKENS = 1 << 20
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


class SamplingParamsSpec(BaseModel):
    """OpenAI's `sampling_params` for a model grader (mapped to the request fields the judge takes)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    max_completions_tokens: int | None = Field(None, ge=1, le=MAX_JUDGE_TOKENS)
    reasoning_effort: Literal[REASONING_EFFORTS] | None = None  # type: ignore[valid-type]


class _JudgeSpec(GraderSpec):
    input: list[MessageSpec] = Field(min_length=1)
    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    sampling_params: SamplingParamsSpec | None = None
    max_new_tokens: int | None = Field(None, ge=1, le=MAX_JUDGE_TOKENS)
    timeout: float = Field(60.0, gt=0, le=3600)


class ScoreModelSpec(_JudgeSpec):
    type: Literal["score_model"]
    range: tuple[float, float] = (0.0, 1.0)
    pass_threshold: float | None = None

    @model_validator(mode="after")
    def _ordered_range(self) -> ScoreModelSpec:
        if not self.range[0] < self.range[1]:
            raise ValueError(f"range: {list(self.range)} must be [low, high] with low < high")
        return self


class LabelModelSpec(_JudgeSpec):
    type: Literal["label_model"]
    labels: list[str] = Field(min_length=1)
    passing_labels: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _passing_subset(self) -> LabelModelSpec:
        unknown = [label for label in self.passing_labels if label not in self.labels]
        if unknown:
            raise ValueError(f"passing_labels: {unknown} are not in labels {self.labels}")
        return self


class MultiSpec(GraderSpec):
    type: Literal["multi"]
    graders: dict[str, dict[str, Any]]
    calculate_output: str

    @field_validator("graders")
    @classmethod
    def _printable_names(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in value:
            if not _is_text(name):
                raise ValueError(
                    f"the name {name.encode('utf-8', 'backslashreplace').decode()!r} holds a lone "
                    "surrogate, which is not text; rename it"
                )
        return value


def _where(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _problem(error: ErrorDetails, spec_cls: type[BaseModel]) -> str:
    kind, value = error["type"], error.get("input")
    if kind == "missing":
        return "missing (required field)"
    if kind == "extra_forbidden":
        if len(error["loc"]) != 1:
            return "unknown field"
        import difflib

        close = difflib.get_close_matches(str(error["loc"][0]), list(spec_cls.model_fields), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown field ({hint}allowed: {', '.join(spec_cls.model_fields)})"
    if kind == "literal_error":
        expected = error["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
        return f"{json.dumps(value, default=str)} is not one of {expected}"
    message = error["msg"]
    return message.removeprefix("Value error, ")


def describe_validation_error(exc: ValidationError, spec_cls: type[BaseModel], prefix: str) -> str:
    """The first problem as `<prefix>.<field path>: <problem>` (one sentence, no pydantic jargon)."""
    # An unknown key first: a misspelt required field also shows up as "missing", and the
    # unknown key's suggestion is the message that explains both.
    error = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    where = _where(error["loc"])
    path = ".".join(p for p in (prefix, where) if p)
    more = len(exc.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return (
        f"{path}: {_problem(error, spec_cls)}{tail}"
        if path
        else f"{_problem(error, spec_cls)}{tail}"
    )
