"""A tool served over HTTP, in OpenAI's Agent RFT shape: `name`, `server_url`, `headers`.

Each call is a POST of the Responses API's function call, with the row and the episode's trace id:

    {"type": "function_call", "id": "fc_...", "call_id": "call_...", "name": "lookup",
     "arguments": "{\\"key\\": \\"ka\\"}", "item": {...the row...}, "trace_id": "trace_..."}

and the endpoint answers a function call output, `{"type": "function_call_output", "call_id": ...,
"output": "..."}` (only `output` is read; a JSON value other than a string is shown as JSON).

What happens to a reply (OpenAI's published rules, where it has them):

    2xx with "output"        the model reads it
    4xx                      the model reads its "output" if it has one, else "HTTP 404: <body>"
    over 1 MiB               the model reads "HTTP 413: ..." (OpenAI shows such a reply as a 413)
    5xx, malformed 2xx,      tried again up to `retries` more times (after 0.5 s, 1 s, 2 s...),
    no reply, timeout        then the episode is dropped and counted
    3xx                      never followed (the secrets would go with it): the episode is dropped
                             with a message to fix `server_url`

Header values may name environment variables, `Bearer ${SEARCH_KEY}`: they are read when a call
is sent and never stored, so the run folder, `config.yaml`, logs and samples hold only the names.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

from rft_cli import http_post
from rft_cli.errors import ConfigError
from rft_cli.tools.base import (
    MAX_REPLY_BYTES,
    TOOL_CLIENT_ERROR,
    TOOL_INPUT,
    TOOL_REDIRECT,
    TOOL_SERVER_ERROR,
    TOOL_TIMEOUT,
    TOOL_TOO_LARGE,
    ToolRequest,
    ToolResult,
    dropped,
    shown_error,
    tool_text,
)

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
RETRY_BACKOFF_SECONDS = 0.5  # the first wait between attempts; it doubles each time
MAX_REQUEST_BYTES = 1024 * 1024  # OpenAI's cap on a tool call's payload
_ERROR_BODY_CHARS = 2000


def env_names(value: str) -> list[str]:
    """The environment variables a header value reads, `${NAME}`."""
    return ENV_REFERENCE.findall(value)


def expand_header(value: str) -> str:
    """A header value with each `${NAME}` replaced by the variable's value (unset: empty)."""
    return ENV_REFERENCE.sub(lambda m: os.environ.get(m.group(1), ""), value)


class EndpointTool:
    """Calls `server_url` for each call of the tool `name`; never raises on a call."""

    def __init__(
        self,
        name: str,
        server_url: str,
        headers: dict[str, str],
        timeout: float,
        retries: int,
        where: str = "",
    ) -> None:
        self.name, self.server_url, self.timeout, self.retries = name, server_url, timeout, retries
        self.header_templates = dict(headers)  # `${NAME}` kept: values are read at each call
        missing = [n for v in headers.values() for n in env_names(v) if n not in os.environ]
        if missing:
            raise ConfigError(
                f"{where or name}.headers: the environment variable {missing[0]} is not set "
                f"(export it with the endpoint's secret before running)"
            )

    def call(self, request: ToolRequest) -> ToolResult:
        started = time.monotonic()
        body = _request_body(request)
        if len(body) > MAX_REQUEST_BYTES:
            result = shown_error(
                TOOL_INPUT, f"the call is {len(body):,} bytes, over the 1 MiB a tool call may send"
            )
        else:
            result = self._call_with_retries(body)
        result.seconds = time.monotonic() - started
        return result

    def _call_with_retries(self, body: bytes) -> ToolResult:
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(RETRY_BACKOFF_SECONDS * 2 ** (attempt - 1))
            result = self._attempt(body)
            result.attempts = attempt + 1
            if not (result.drop and result.error in (TOOL_SERVER_ERROR, TOOL_TIMEOUT)):
                return result
        result.detail = f"{result.detail} (after {self.retries + 1} attempts)"
        return result

    def _attempt(self, body: bytes) -> ToolResult:
        headers = {k: expand_header(v) for k, v in self.header_templates.items()}
        headers.setdefault("Content-Type", "application/json")
        try:
            reply = http_post.post(self.server_url, body, headers, self.timeout, MAX_REPLY_BYTES)
        except http_post.HttpFailure as exc:
            kind = TOOL_TIMEOUT if exc.timed_out else TOOL_SERVER_ERROR
            return dropped(kind, f"{self.server_url}: {exc}")
        return self._read(reply)

    def _read(self, reply: http_post.HttpReply) -> ToolResult:
        status = reply.status
        if 300 <= status < 400:
            return dropped(
                TOOL_REDIRECT,
                f"{self.server_url}: HTTP {status}, a redirect to {reply.location or '?'}; rft does not "
                "follow redirects (the headers' secrets would go with them): set server_url to the address that answers",
            )
        if reply.too_large:
            return shown_error(
                TOOL_TOO_LARGE, f"HTTP 413: the tool's reply is over {MAX_REPLY_BYTES:,} bytes"
            )
        if 200 <= status < 300:
            output = _output_of(reply.body)
            if output is None:
                return dropped(
                    TOOL_SERVER_ERROR,
                    f'{self.server_url}: HTTP {status} but the reply is not a JSON object with "output": {_body_text(reply.body)[:200]!r}',
                )
            return ToolResult(output=output)
        if 400 <= status < 500:
            output = _output_of(reply.body)
            text = output if output is not None else f"HTTP {status}: {_body_text(reply.body)}"
            return ToolResult(output=text, error=TOOL_CLIENT_ERROR, detail=f"HTTP {status}")
        return dropped(
            TOOL_SERVER_ERROR, f"{self.server_url}: HTTP {status} {_body_text(reply.body)[:200]}"
        )

    def close(self) -> None:
        """Nothing to stop (a connection lives for one call)."""


def _request_body(request: ToolRequest) -> bytes:
    message: dict[str, Any] = {
        "type": "function_call",
        "id": f"fc_{request.call_id.removeprefix('call_')}",
        "call_id": request.call_id,
        "name": request.name,
        "arguments": request.arguments,
        "item": request.item or {},
        "trace_id": request.trace_id,
    }
    try:  # ASCII escapes keep lone surrogates valid JSON
        return json.dumps(message, ensure_ascii=True, default=str).encode("ascii")
    except (ValueError, RecursionError):
        message["item"] = {}
        return json.dumps(message, ensure_ascii=True, default=str).encode("ascii")


def _output_of(body: bytes) -> str | None:
    """The reply's `output` as text (a non-string JSON value written as JSON), else None."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or "output" not in data:
        return None
    output = data["output"]
    if not isinstance(output, str):
        try:
            output = json.dumps(output, ensure_ascii=False)
        except (ValueError, RecursionError):
            return None
    return tool_text(output)


def _body_text(body: bytes) -> str:
    return tool_text(body.decode("utf-8", "replace"), _ERROR_BODY_CHARS)
