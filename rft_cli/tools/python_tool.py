"""Tools written as Python functions, run in the python grader's sandbox.

A file holds one or more tool functions (`def lookup(key: str) -> str`); each call runs
`lookup(**arguments)` in a worker process contained exactly as a python grader's is (the same
worker and layers: `rft_cli.graders.sandbox`, docs/guarantees.md guarantee 4), with the tool's
`timeout` (wall clock and CPU time per call) and `memory_mb`. The trainer never runs the code and
never waits past the timeout; every reply is untrusted (shape checked, 1 MiB at most, made
encodable). The function returns text; any other JSON value is shown to the model as JSON.

What the model reads: the output; for an exception, `error: ValueError: ...` (OpenAI shows a
tool's error to the model). A timeout or a crash of the worker is retried `retries` more times,
then drops the episode; a file that fails to load drops it at once.
"""

from __future__ import annotations

import time
from typing import Any

from rft_cli.graders import sandbox
from rft_cli.tools.base import (
    MAX_REPLY_BYTES,
    TOOL_CRASH,
    TOOL_EXCEPTION,
    TOOL_INPUT,
    TOOL_LOAD_ERROR,
    TOOL_MEMORY,
    TOOL_TIMEOUT,
    TOOL_TOO_LARGE,
    ToolRequest,
    ToolResult,
    dropped,
    shown_error,
    tool_text,
)

# The kinds a tool worker may report; anything else in a reply is a forgery and reads as a crash.
_WORKER_KINDS = frozenset({TOOL_EXCEPTION, TOOL_MEMORY, TOOL_LOAD_ERROR, "tool_output_too_large"})
# The sandbox's kinds for what went wrong around the call, as tool kinds.
_SANDBOX_KINDS = {
    sandbox.TIMEOUT: TOOL_TIMEOUT,
    sandbox.CRASH: TOOL_CRASH,
    sandbox.STARTUP: TOOL_LOAD_ERROR,
    sandbox.INPUT: TOOL_INPUT,
}


class ToolPool(sandbox.SandboxPool):
    """Sandbox workers that load a tool file and run its functions by name."""

    call_name = "the tool"

    def __init__(
        self, source: str, functions: list[str], timeout: float, memory_mb: int, workers: int
    ) -> None:
        super().__init__(source, timeout, memory_mb, workers)
        self.init["tools"] = list(functions)

    def read_reply(self, message: dict[str, Any]) -> sandbox.Outcome:
        keys = message.keys()
        if keys == {"output"} and isinstance(message["output"], str):
            return sandbox.Outcome(value=tool_text(message["output"]))
        kind = message.get("error")
        if keys <= {"error", "detail"} and isinstance(kind, str) and kind in _WORKER_KINDS:
            return sandbox.Outcome(
                error=kind, detail=sandbox.untrusted_text(message.get("detail", ""))
            )
        return sandbox.Outcome(error=sandbox.CRASH, detail="the worker sent an unreadable reply")


class PythonToolFile:
    """The tools of one Python file, sharing one pool of workers (started on the first call)."""

    def __init__(
        self,
        source: str,
        functions: list[str],
        timeout: float,
        memory_mb: int,
        retries: int,
        workers: int = 2,
    ) -> None:
        self.source, self.functions = source, list(functions)
        self.timeout, self.memory_mb, self.retries, self.workers = (
            timeout,
            memory_mb,
            retries,
            workers,
        )
        self._pool: ToolPool | None = None

    @property
    def pool(self) -> ToolPool:
        if self._pool is None:
            self._pool = ToolPool(
                self.source, self.functions, self.timeout, self.memory_mb, self.workers
            )
        return self._pool

    def run(self, requests: list[ToolRequest]) -> list[ToolResult]:
        """One result per request, in order; failures that may pass are tried again (`retries`)."""
        started = time.monotonic()
        results: list[ToolResult | None] = [None] * len(requests)
        pending = list(range(len(requests)))
        payloads = [_payload(r) for r in requests]
        for attempt in range(self.retries + 1):
            outcomes = self.pool.run([payloads[i] for i in pending])
            retry = []
            for index, outcome in zip(pending, outcomes, strict=True):
                result = results[index] = _result(outcome, attempt + 1, self.retries)
                if result.drop and result.error in (TOOL_TIMEOUT, TOOL_CRASH):
                    retry.append(index)
            pending = retry
            if not pending:
                break
        finished = [result for result in results if result is not None]  # each ran once at least
        for result in finished:
            result.seconds = time.monotonic() - started  # the batch's time
        return finished

    def layers(self) -> list[str]:
        return list(self._pool.layers) if self._pool is not None else []

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


def _payload(request: ToolRequest) -> dict[str, Any]:
    import json

    try:
        arguments = json.loads(request.arguments)
    except (ValueError, RecursionError):
        arguments = None
    return {"function": request.name, "arguments": arguments if isinstance(arguments, dict) else {}}


def _result(outcome: sandbox.Outcome, attempts: int, retries: int) -> ToolResult:
    if outcome.error is None:
        return ToolResult(output=str(outcome.value), attempts=attempts)
    kind = _SANDBOX_KINDS.get(outcome.error, outcome.error)
    if kind == "tool_output_too_large":
        result = shown_error(
            TOOL_TOO_LARGE, f"HTTP 413: the tool's output is over {MAX_REPLY_BYTES:,} bytes"
        )
    elif kind in (TOOL_EXCEPTION, TOOL_MEMORY, TOOL_INPUT):
        result = shown_error(kind, outcome.detail)
    else:
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        result = dropped(kind, f"{outcome.detail}{tries}")
    result.attempts = attempts
    return result
