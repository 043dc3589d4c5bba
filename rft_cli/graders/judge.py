"""OpenAI's model graders, `score_model` and `label_model`, on a judge you run yourself.

The judge is an OpenAI-compatible chat endpoint (`base_url` in the grader, else `OPENAI_BASE_URL`;
the key from the variable named by `api_key_env`, else `OPENAI_API_KEY`) or a local Hugging Face
model (a directory, a `.gguf` file, or an id already in the local cache). Nothing is downloaded.

Like OpenAI's graders, the judge is asked for a structured answer, `{"steps": [...], "result": ...}`
(a JSON schema in `response_format`; an endpoint that refuses it, and a local model, get the format
as an instruction instead). A reply that is not that object, or a bare number or label filling the
whole reply, is a counted `model_grader_parse_error` with reward 0: no number is fished out of prose.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

from rft_cli.errors import ConfigError, GraderError
from rft_cli.files import is_dir
from rft_cli.gguf_load import is_gguf_file
from rft_cli.graders.base import GradeResult, TemplatedGrader
from rft_cli.graders.specs import LabelModelSpec, ScoreModelSpec
from rft_cli.graders.templates import GradeContext, Template

PARSE_ERROR = "model_grader_parse_error"
SERVER_ERROR = "model_grader_server_error"
BASE_URL_ENV, API_KEY_ENV = "OPENAI_BASE_URL", "OPENAI_API_KEY"
LOCAL_MAX_NEW_TOKENS = 512
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_STEPS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"description": {"type": "string"}, "conclusion": {"type": "string"}},
        "required": ["description", "conclusion"],
        "additionalProperties": False,
    },
}


class JudgeFailure(Exception):
    """The judge could not answer (endpoint down, HTTP error, generation failed)."""


def score_schema() -> dict[str, Any]:
    """The structured answer a score judge gives (OpenAI's score_model format)."""
    return {
        "type": "object",
        "properties": {"steps": _STEPS, "result": {"type": "number"}},
        "required": ["steps", "result"],
        "additionalProperties": False,
    }


def label_schema(labels: list[str]) -> dict[str, Any]:
    """The structured answer a label judge gives: reasoning steps, then one of `labels`."""
    return {
        "type": "object",
        "properties": {"steps": _STEPS, "result": {"type": "string", "enum": list(labels)}},
        "required": ["steps", "result"],
        "additionalProperties": False,
    }


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _decode(reply: str) -> Any:
    """The reply as strict JSON (a ```json fence around it is allowed); raises ValueError."""
    text = reply.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse_score(reply: str) -> tuple[float | None, str]:
    """The judge's score and, when there is none, why: `{"result": x, ...}` or a reply that is one number.

    >>> parse_score('{"result": 0.8, "steps": []}'), parse_score("0.5"), parse_score("Score: 7/10")[0]
    ((0.8, ''), (0.5, ''), None)
    """
    try:
        data = _decode(reply)
    except ValueError:
        return (
            None,
            f'the reply is not the JSON object {{"steps": [...], "result": <number>}}: {reply[:200]!r}',
        )
    value = data.get("result") if isinstance(data, dict) else data
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f'"result" is not a number in the reply {reply[:200]!r}'
    if not math.isfinite(float(value)):
        return None, f"the score {value} is not finite"
    return float(value), ""


def parse_label(reply: str, labels: list[str]) -> str | None:
    """The label a judge gave: `{"result": label, ...}`, or a reply that is one label (case-insensitive).

    A label merely mentioned in prose ("not positive, it is negative") is no answer.

    >>> parse_label('{"result": "correct", "steps": []}', ["correct", "incorrect"]), parse_label("Incorrect.", ["correct", "incorrect"])
    ('correct', 'incorrect')
    """
    try:
        data = _decode(reply)
    except ValueError:
        data = reply
    if isinstance(data, dict):
        data = data.get("result")
    if not isinstance(data, str):
        return None
    folded = {label.casefold(): label for label in labels}
    return folded.get(data.strip().strip(".!\"'`*").strip().casefold())


def _format_hint(schema: dict[str, Any]) -> str:
    result = schema["properties"]["result"]
    what = f"one of {json.dumps(result['enum'])}" if "enum" in result else "a number"
    return (
        '\n\nAnswer with one JSON object only: {"steps": [{"description": "...", "conclusion": "..."}], '
        f'"result": {what}}}'
    )


def with_format_hint(
    messages: list[dict[str, str]], schema: dict[str, Any]
) -> list[dict[str, str]]:
    """The messages with the answer format appended to the last one (for judges without structured output)."""
    last = dict(messages[-1], content=messages[-1]["content"] + _format_hint(schema))
    return [*messages[:-1], last]


def request_params(spec: ScoreModelSpec | LabelModelSpec) -> dict[str, Any]:
    """OpenAI's documented `sampling_params` as chat-completions request fields.

    `max_completions_tokens` (the grader schema's spelling) becomes `max_completion_tokens`, which
    reasoning models require (they reject `max_tokens`); unset parameters are left to the endpoint.
    """
    params = spec.sampling_params.model_dump(exclude_none=True) if spec.sampling_params else {}
    limit = params.pop("max_completions_tokens", None) or spec.max_new_tokens
    if limit is not None:
        params["max_completion_tokens"] = limit
    return params


class HTTPJudge:
    """An OpenAI-compatible `POST {base_url}/chat/completions` client (standard library only)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None,
        params: dict[str, Any],
        timeout: float,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env, self.params, self.timeout = (
            model,
            api_key_env,
            params,
            timeout,
        )
        self.structured = True  # until the endpoint refuses response_format once

    def reply(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> str:
        if self.structured:
            try:
                return self._post(
                    messages,
                    {
                        "type": "json_schema",
                        "json_schema": {"name": "grader_result", "strict": True, "schema": schema},
                    },
                )
            except _Refused:
                self.structured = (
                    False  # the endpoint has no structured outputs: say the format in the prompt
                )
        try:
            return self._post(with_format_hint(messages, schema), None)
        except _Refused as exc:
            raise JudgeFailure(str(exc)) from None

    def _post(self, messages: list[dict[str, str]], response_format: dict[str, Any] | None) -> str:
        from rft_cli import http_post

        body = {"model": self.model, "messages": messages, **self.params}
        if response_format is not None:
            body["response_format"] = response_format
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:  # sent to base_url's origin only: redirects are never followed
            headers["Authorization"] = f"Bearer {key}"
        try:
            reply = http_post.post(
                self.url,
                json.dumps(body).encode(),
                headers,
                self.timeout,
                MAX_REPLY_BYTES,
                proxies_from_environment=True,
            )
        except http_post.HttpFailure as exc:
            if exc.timed_out:
                raise JudgeFailure(
                    f"{self.url}: no complete reply within the {self.timeout:g} s timeout"
                ) from None
            raise JudgeFailure(f"{self.url}: {exc}") from None
        return _content(_read_reply(reply, self.url, response_format is not None))


# A chat completion is a few kilobytes; a reply past this is read no further.
MAX_REPLY_BYTES = 8 << 20


def _read_reply(reply: Any, url: str, structured: bool) -> Any:
    """The reply's JSON (read up to MAX_REPLY_BYTES: a 300 MB reply was read whole), or the
    failure its status says."""
    if 300 <= reply.status < 400:
        raise JudgeFailure(_redirected(url, reply.status, reply.location))
    if reply.status in (400, 422) and structured:
        raise _Refused(f"{url}: HTTP {reply.status}")
    if not 200 <= reply.status < 300:
        text = reply.body[:500].decode("utf-8", "replace")
        raise JudgeFailure(f"{url}: HTTP {reply.status} {text}")
    if reply.too_large:
        raise JudgeFailure(f"{url}: the reply is over {MAX_REPLY_BYTES:,} bytes; read no further")
    try:
        return json.loads(reply.body)
    except RecursionError:
        raise JudgeFailure(f"{url}: the reply is nested too deeply") from None
    except ValueError as exc:
        raise JudgeFailure(f"{url}: {exc}") from None


def _content(data: Any) -> str:
    try:
        return str(data["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError):
        raise JudgeFailure(
            f"the reply is not a chat completion (no choices[0].message.content): {str(data)[:200]}"
        ) from None


def _redirected(url: str, status: int, location: str) -> str:
    return (
        f"{url}: HTTP {status}, a redirect to {location[:200] or '?'}; rft does not follow "
        "redirects (the API key would go with them): set base_url to the address that answers"
    )


class _Refused(Exception):
    """The endpoint answered 400/422 to a request with `response_format`."""


class LocalJudge:
    """A local causal LM; the prompt is formatted with the tokenizer's chat template."""

    def __init__(self, model: str, params: dict[str, Any]) -> None:
        self.model_name, self.params = model, params
        self._model: Any = None

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_name)
        self._model = AutoModelForCausalLM.from_pretrained(self.model_name).eval()

    def reply(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> str:
        import torch

        if self._model is None:
            self._load()
        encoded: Any = self._tokenizer.apply_chat_template(
            with_format_hint(messages, schema),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )
        temperature = float(self.params.get("temperature") or 0.0)
        limit = int(self.params.get("max_completion_tokens") or LOCAL_MAX_NEW_TOKENS)
        options: dict[str, Any] = {"do_sample": temperature > 0, "max_new_tokens": limit}
        if temperature > 0:
            options.update(temperature=temperature, top_p=float(self.params.get("top_p") or 1.0))
        if self.params.get("seed") is not None:
            torch.manual_seed(int(self.params["seed"]))
        pad = (
            self._tokenizer.pad_token_id
            if self._tokenizer.pad_token_id is not None
            else self._tokenizer.eos_token_id
        )
        with torch.no_grad():
            output = self._model.generate(**encoded, pad_token_id=pad, **options)
        new_tokens = output[0, encoded["input_ids"].shape[1] :]
        return str(self._tokenizer.decode(new_tokens, skip_special_tokens=True))

    def __getstate__(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "params": self.params, "_model": None}


class MissingJudge:
    """No endpoint and no local model: the grader builds, and grading says once what to set."""

    def __init__(self, message: str) -> None:
        self.message = message

    def reply(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> str:
        raise GraderError(self.message)


def _local_model_exists(model: str) -> bool:
    if is_dir(model):
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except (ImportError, ValueError):
        return False


def build_judge(
    spec: ScoreModelSpec | LabelModelSpec, where: str
) -> HTTPJudge | LocalJudge | MissingJudge:
    """The judge for a spec: its `base_url`, else a local model, else `$OPENAI_BASE_URL`, else none (an error when grading)."""
    params = request_params(spec)
    if spec.api_key_env and spec.api_key_env not in os.environ:
        raise GraderError(
            f"{_at(where, 'api_key_env')}: the environment variable {spec.api_key_env} is not set "
            "(export it with the endpoint's API key)"
        )
    if spec.base_url:
        return HTTPJudge(spec.base_url, spec.model, spec.api_key_env, params, spec.timeout)
    if is_gguf_file(spec.model):
        return LocalJudge(_converted(spec.model, where), params)
    if _local_model_exists(spec.model):
        return LocalJudge(spec.model, params)
    if os.environ.get(BASE_URL_ENV):
        return HTTPJudge(
            os.environ[BASE_URL_ENV],
            spec.model,
            spec.api_key_env or API_KEY_ENV,
            params,
            spec.timeout,
        )
    name = f" {spec.name!r}" if spec.name else ""
    return MissingJudge(
        f"{spec.type}{name}: no judge for model {spec.model!r}: it is not a local model directory or a cached "
        f"Hugging Face model, and neither the grader's base_url nor {BASE_URL_ENV} is set; export "
        f"{BASE_URL_ENV}=https://api.openai.com/v1 (and {API_KEY_ENV}) or the URL of an OpenAI-compatible server"
    )


def _converted(model: str, where: str) -> str:
    """The Hugging Face folder of a GGUF judge (converted once, into the cache)."""
    from rft_cli.gguf_load import hf_folder

    try:
        return str(hf_folder(model))
    except ConfigError as exc:
        raise GraderError(f"{_at(where, 'model')}: {exc}") from None


def _at(where: str, field: str) -> str:
    return f"{where}.{field}" if where else field


def _content_template(content: Any, where: str) -> Template:
    """A message's content (a string, one part, or a list of parts) as one text template."""
    parts = content if isinstance(content, list) else [content]
    texts = []
    for i, part in enumerate(parts):
        text = (
            part if isinstance(part, str) else part.get("text") if isinstance(part, dict) else None
        )
        if not isinstance(text, str):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            place = f"{where}[{i}]" if isinstance(content, list) else where
            raise GraderError(
                f"{place}: a {kind!s} part is not supported; judges read text only "
                '({"type": "input_text", "text": ...})'
            )
        texts.append(text)
    return Template("".join(texts), where)


class _JudgeGrader(TemplatedGrader):
    def __init__(self, spec: Any, where: str) -> None:
        self.spec = spec
        self.name = spec.name or spec.type
        self.roles = [message.role for message in spec.input]
        self.contents = [
            _content_template(m.content, _at(where, f"input[{i}].content"))
            for i, m in enumerate(spec.input)
        ]
        self.templates = tuple(self.contents)
        self.judge = build_judge(spec, where)
        if getattr(spec, "range", None) is not None:  # score_model: OpenAI's range, not rescaled
            self.reward_range = (float(spec.range[0]), float(spec.range[1]))

    def _schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def _score(self, ctx: GradeContext) -> GradeResult:
        messages = [
            {"role": role, "content": t.render(ctx)}
            for role, t in zip(self.roles, self.contents, strict=True)
        ]
        try:
            reply = self.judge.reply(messages, self._schema())
        except JudgeFailure as exc:
            return GradeResult(
                0.0, errors={SERVER_ERROR: 1}, details={SERVER_ERROR: str(exc)[:500]}
            )
        return self._from_reply(reply)

    def _from_reply(self, reply: str) -> GradeResult:
        raise NotImplementedError


class ScoreModelGrader(_JudgeGrader):
    """Ask a judge for a score; the reward is the score clamped to `range` (OpenAI's rule). Unparsable: 0, counted.

    With the default `range: [0, 1]` the reward is the judge's score in [0, 1]; a wider range gives
    rewards on that scale (not rescaled), so `range: [0, 10]` rewards up to 10.
    """

    def _schema(self) -> dict[str, Any]:
        return score_schema()

    def _from_reply(self, reply: str) -> GradeResult:
        score, why = parse_score(reply)
        if score is None:
            return GradeResult(0.0, errors={PARSE_ERROR: 1}, details={PARSE_ERROR: why})
        low, high = self.spec.range
        return GradeResult(min(high, max(low, score)), answer=f"{score:g}")


class LabelModelGrader(_JudgeGrader):
    """Ask a judge for one of `labels`; 1 when it is in `passing_labels`. Any other reply: 0, counted."""

    def _schema(self) -> dict[str, Any]:
        return label_schema(self.spec.labels)

    def _from_reply(self, reply: str) -> GradeResult:
        label = parse_label(reply, self.spec.labels)
        if label is None:
            return GradeResult(
                0.0,
                errors={PARSE_ERROR: 1},
                details={
                    PARSE_ERROR: f"the reply is not one of the labels {self.spec.labels}: {reply[:200]!r}"
                },
            )
        return GradeResult(1.0 if label in self.spec.passing_labels else 0.0, answer=label)
