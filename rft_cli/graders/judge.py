"""OpenAI's model graders, `score_model` and `label_model`, on a judge you run yourself.

The judge is either a local Hugging Face model (a directory, or an id already in the local cache;
its chat template formats the prompt) or an OpenAI-compatible chat endpoint (`base_url`, with the
API key read from the environment variable named by `api_key_env`). Nothing is downloaded.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from rft_cli.errors import GraderError
from rft_cli.graders.base import GradeResult, TemplatedGrader
from rft_cli.graders.specs import LabelModelSpec, ScoreModelSpec
from rft_cli.graders.templates import GradeContext, Template

PARSE_ERROR = "model_grader_parse_error"
SERVER_ERROR = "model_grader_server_error"
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")


class JudgeFailure(Exception):
    """The judge could not answer (endpoint down, HTTP error, generation failed)."""


def parse_score(reply: str) -> float | None:
    """A score from a judge's reply: JSON {"result"|"score": x}, else the first number in the text.

    >>> parse_score('{"result": 0.8, "steps": []}'), parse_score("Score: 7/10"), parse_score("great")
    (0.8, 7.0, None)
    """
    try:
        data = json.loads(reply)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("result", "score", "reward"):
            if isinstance(data.get(key), (int, float)) and not isinstance(data.get(key), bool):
                return float(data[key])
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return float(data)
    match = _NUMBER.search(reply)
    if match is None:
        return None
    value = float(match.group(0))
    return value if math.isfinite(value) else None


def parse_label(reply: str, labels: list[str]) -> str | None:
    """The label a judge chose: JSON {"result": label}, the whole reply, else the first label named.

    >>> parse_label("Verdict: correct.", ["correct", "incorrect"])
    'correct'
    """
    try:
        data = json.loads(reply)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("result"), str):
        reply = data["result"]
    folded = {label.casefold(): label for label in labels}
    text = reply.strip().strip(".!\"'`").casefold()
    if text in folded:
        return folded[text]
    found = []
    for label in sorted(labels, key=len, reverse=True):  # "incorrect" before "correct"
        match = re.search(rf"(?<!\w){re.escape(label.casefold())}(?!\w)", reply.casefold())
        if match is not None:
            found.append((match.start(), label))
    return min(found)[1] if found else None


class HTTPJudge:
    """An OpenAI-compatible `POST {base_url}/chat/completions` client (standard library only)."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None, params: dict[str, Any], timeout: float) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env, self.params, self.timeout = model, api_key_env, params, timeout

    def reply(self, messages: list[dict[str, str]], max_new_tokens: int) -> str:
        import urllib.error
        import urllib.request

        body = {"model": self.model, "messages": messages, "max_tokens": max_new_tokens, **self.params}
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ.get(self.api_key_env, '')}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310  user-chosen URL
                data = json.loads(response.read())
            return str(data["choices"][0]["message"]["content"] or "")
        except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise JudgeFailure(f"{self.url}: {exc}") from None


class LocalJudge:
    """A local causal LM; the prompt is formatted with the tokenizer's chat template."""

    def __init__(self, model: str, params: dict[str, Any]) -> None:
        self.model_name, self.params = model, params
        self._model: Any = None

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_name)
        self._model = AutoModelForCausalLM.from_pretrained(self.model_name).eval()

    def reply(self, messages: list[dict[str, str]], max_new_tokens: int) -> str:
        import torch

        if self._model is None:
            self._load()
        encoded = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        temperature = float(self.params.get("temperature", 0.0) or 0.0)
        options: dict[str, Any] = {"do_sample": temperature > 0, "max_new_tokens": max_new_tokens}
        if temperature > 0:
            options.update(temperature=temperature, top_p=float(self.params.get("top_p", 1.0)))
        if "seed" in self.params:
            torch.manual_seed(int(self.params["seed"]))
        pad = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else self._tokenizer.eos_token_id
        with torch.no_grad():
            output = self._model.generate(**encoded, pad_token_id=pad, **options)
        new_tokens = output[0, encoded["input_ids"].shape[1] :]
        return self._tokenizer.decode(new_tokens, skip_special_tokens=True)

    def __getstate__(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "params": self.params, "_model": None}


def _local_model_exists(model: str) -> bool:
    if Path(model).is_dir():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except (ImportError, ValueError):
        return False


def build_judge(spec: ScoreModelSpec | LabelModelSpec, where: str) -> HTTPJudge | LocalJudge:
    """The judge backend for a spec; checks the model and key now, so errors come at build time."""
    params = dict(spec.sampling_params or {})
    if spec.base_url:
        if spec.api_key_env and spec.api_key_env not in os.environ:
            raise GraderError(
                f"{_at(where, 'api_key_env')}: the environment variable {spec.api_key_env} is not set "
                "(export it with the endpoint's API key)"
            )
        return HTTPJudge(spec.base_url, spec.model, spec.api_key_env, params, spec.timeout)
    if not _local_model_exists(spec.model):
        raise GraderError(
            f"{_at(where, 'model')}: {spec.model!r} is not a local model directory or a cached Hugging Face model; "
            "give a local path, or set base_url (and api_key_env) for an OpenAI-compatible endpoint"
        )
    return LocalJudge(spec.model, params)


def _at(where: str, field: str) -> str:
    return f"{where}.{field}" if where else field


def _content_template(content: str | list[dict[str, Any]], where: str) -> Template:
    if isinstance(content, str):
        return Template(content, where)
    texts = []
    for i, part in enumerate(content):
        text = part.get("text") if isinstance(part, dict) else None
        if not isinstance(text, str):
            raise GraderError(f"{where}[{i}]: only text parts are supported ({{\"type\": \"input_text\", \"text\": ...}})")
        texts.append(text)
    return Template("".join(texts), where)


class _JudgeGrader(TemplatedGrader):
    def __init__(self, spec: Any, where: str) -> None:
        self.spec = spec
        self.name = spec.name or spec.type
        self.roles = [message.role for message in spec.input]
        self.contents = [_content_template(m.content, _at(where, f"input[{i}].content")) for i, m in enumerate(spec.input)]
        self.templates = tuple(self.contents)
        self.judge = build_judge(spec, where)

    def _reply(self, ctx: GradeContext) -> str:
        messages = [{"role": role, "content": t.render(ctx)} for role, t in zip(self.roles, self.contents)]
        return self.judge.reply(messages, self.spec.max_new_tokens)

    def _score(self, ctx: GradeContext) -> GradeResult:
        try:
            reply = self._reply(ctx)
        except JudgeFailure as exc:
            return GradeResult(0.0, errors={SERVER_ERROR: 1}, details={SERVER_ERROR: str(exc)[:500]})
        return self._from_reply(reply)

    def _from_reply(self, reply: str) -> GradeResult:
        raise NotImplementedError


class ScoreModelGrader(_JudgeGrader):
    """Ask a judge for a score; clamp it to `range` and normalise to [0, 1]. Unparsable: 0, counted."""

    def _from_reply(self, reply: str) -> GradeResult:
        score = parse_score(reply)
        if score is None:
            return GradeResult(0.0, errors={PARSE_ERROR: 1}, details={PARSE_ERROR: f"no score in the reply {reply[:200]!r}"})
        low, high = self.spec.range
        clamped = min(high, max(low, score))
        return GradeResult((clamped - low) / (high - low), answer=f"{score:g}")


class LabelModelGrader(_JudgeGrader):
    """Ask a judge for one of `labels`; 1 when it is in `passing_labels`. Unparsable: 0, counted."""

    def _from_reply(self, reply: str) -> GradeResult:
        label = parse_label(reply, self.spec.labels)
        if label is None:
            return GradeResult(0.0, errors={PARSE_ERROR: 1}, details={PARSE_ERROR: f"no label in the reply {reply[:200]!r}"})
        return GradeResult(1.0 if label in self.spec.passing_labels else 0.0, answer=label)
