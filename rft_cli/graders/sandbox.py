"""A pool of persistent worker processes that run python graders' untrusted code.

The caller never runs user code and never crashes: every failure comes back as an error kind.
See `_sandbox_worker.py` for what each worker does to contain the code, and docs/graders.md
("The python grader sandbox") and docs/guarantees.md (guarantee 4) for what is and is not guaranteed.

Why persistent workers: a grade runs thousands of times per training step, and starting a sandboxed
interpreter costs tens of milliseconds (the pool is ~500x faster, docs/benchmarks.md). Why a
process at all: a grader that segfaults, calls os._exit, allocates without bound or loops must cost
one counted error, never the trainer, so its code never runs in the caller.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rft_cli.graders.base import clamp_reward

WORKER_SCRIPT = str(Path(__file__).with_name("_sandbox_worker.py"))
TIMEOUT = "python_grader_timeout"
CRASH = "python_grader_crash"
STARTUP = "python_grader_startup_error"
INPUT = "python_grader_input_error"
OUT_OF_RANGE = "python_grader_out_of_range"
_HEADER = struct.Struct(">I")
_MAX_REPLY = 1024 * 1024
_STARTUP_SECONDS = 20.0


@dataclass
class Outcome:
    """One call's result: a value in [0, 1], or an error kind with a detail."""

    value: float | None = None
    error: str | None = None
    detail: str = ""


def minimal_env(workdir: str) -> dict[str, str]:
    """The worker's whole environment: nothing inherited from the parent (no secrets)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _kill(process: subprocess.Popen, workdir: str) -> None:
    """Kill the worker's whole process group and remove its working directory."""
    if process.poll() is None:  # not yet reaped, so its pid (= its process group) is still ours
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        process.kill()
        process.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        pass
    for stream in (process.stdin, process.stdout):
        try:
            stream.close()
        except (OSError, AttributeError):
            pass
    shutil.rmtree(workdir, ignore_errors=True)


class Worker:
    """One worker process, spoken to with length-prefixed JSON over its stdin/stdout pipes."""

    def __init__(self, init: dict[str, Any]) -> None:
        self.workdir = tempfile.mkdtemp(prefix="rft-grader-")
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-B", WORKER_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self.workdir,
            env=minimal_env(self.workdir),
            close_fds=True,
            # Its own process group, so a timeout kills whatever it managed to start as well.
            start_new_session=True,
        )
        self.fd = self.process.stdout.fileno()  # type: ignore[union-attr]
        # Non-blocking, so a worker that writes half a reply and hangs cannot block the caller:
        # select() plus the per-call deadline decide when to give up.
        os.set_blocking(self.fd, False)
        self.buffer = bytearray()
        self.layers: list[str] = []
        self._finalizer = weakref.finalize(self, _kill, self.process, self.workdir)
        self.send(encode(init))

    def send(self, body: bytes) -> bool:
        try:
            self.process.stdin.write(_HEADER.pack(len(body)) + body)  # type: ignore[union-attr]
            self.process.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError, ValueError):
            return False
        return True

    def read_available(self) -> bool:
        """Read what the pipe holds; False when the worker has exited (EOF) or overflowed."""
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not chunk:
            return False
        self.buffer += chunk
        return len(self.buffer) <= _MAX_REPLY + _HEADER.size

    def take_message(self) -> dict[str, Any] | None | bool:
        """A complete message, None if incomplete, False if garbled."""
        if len(self.buffer) < _HEADER.size:
            return None
        (length,) = _HEADER.unpack_from(self.buffer)
        if length > _MAX_REPLY:
            return False
        if len(self.buffer) < _HEADER.size + length:
            return None
        body = bytes(self.buffer[_HEADER.size : _HEADER.size + length])
        del self.buffer[: _HEADER.size + length]
        try:
            message = json.loads(body)
        except ValueError:
            return False
        return message if isinstance(message, dict) else False

    def wait_message(self, seconds: float) -> dict[str, Any] | None | bool:
        """Block up to `seconds` for one message: the message, None on timeout, False if dead."""
        deadline = time.monotonic() + seconds
        while True:
            message = self.take_message()
            if message is not None:
                return message
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready and not self.read_available():
                return self.take_message() or False

    def death_kind(self) -> str:
        """Why a worker died: SIGXCPU (its CPU limit) reads as a timeout, anything else as a crash."""
        try:
            code = self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return CRASH
        return TIMEOUT if code == -signal.SIGXCPU else CRASH

    def kill(self) -> None:
        self._finalizer()


def encode(message: dict[str, Any]) -> bytes:
    """A message as JSON bytes. ASCII escapes keep lone surrogates ("\\ud800", valid JSON) intact
    on the way to the worker, where `json.loads` gives the user's code the same string back."""
    return json.dumps(message, ensure_ascii=True, default=str).encode("ascii")


def _encode_payload(payload: dict[str, Any]) -> bytes | Outcome:
    try:
        return encode(payload)
    except RecursionError:
        return Outcome(error=INPUT, detail="the sample or item is nested too deeply to send to the grader")
    except (TypeError, ValueError) as exc:
        return Outcome(error=INPUT, detail=f"the sample or item cannot be sent to the grader ({exc})")


def _outcome(message: dict[str, Any]) -> Outcome:
    if "value" in message and isinstance(message["value"], (int, float)) and not isinstance(message["value"], bool):
        value = clamp_reward(message["value"])
        if value is not None:
            return Outcome(value)
        return Outcome(error=OUT_OF_RANGE, detail=f"grade() returned {message['value']}, outside [0, 1]")
    error = message.get("error")
    if isinstance(error, str) and error.startswith("python_grader_"):
        return Outcome(error=error, detail=str(message.get("detail", ""))[:1000])
    return Outcome(error=CRASH, detail="the worker sent an unreadable reply")


class SandboxPool:
    """Persistent workers for one grader's source; `run(payloads)` grades them in parallel.

    A worker that times out, crashes or garbles its reply is killed and replaced on next use.
    Thread-safe (one batch at a time). Not picklable by design: graders drop it when pickled.
    """

    def __init__(self, source: str, timeout: float = 10.0, memory_mb: int = 1024, workers: int = 2) -> None:
        self.init = {"source": source, "timeout": timeout, "memory_mb": memory_mb}
        self.timeout = timeout
        self.size = workers
        self.idle: list[Worker] = []
        self.lock = threading.Lock()
        self.layers: list[str] = []
        self.broken: Outcome | None = None

    def _spawn(self) -> Worker | Outcome:
        # A source that hung or died while loading will again: after one startup wait every later
        # call fails at once with the same error instead of paying the wait per sample.
        if self.broken is not None:
            return self.broken
        try:
            worker = Worker(self.init)
        except OSError as exc:
            return Outcome(error=STARTUP, detail=f"cannot start a worker process ({exc})")
        ready = worker.wait_message(_STARTUP_SECONDS + self.timeout)
        if not isinstance(ready, dict) or not ready.get("ready"):
            kind = STARTUP if ready is None else worker.death_kind()
            worker.kill()
            self.broken = Outcome(error=kind, detail="the worker did not start (the grader hung or died while loading)")
            return self.broken
        self.layers = [str(layer) for layer in ready.get("layers", [])]
        return worker

    def run(self, payloads: list[dict[str, Any]]) -> list[Outcome]:
        """Grade each payload ({"sample", "item"}); one Outcome per payload, in order."""
        with self.lock:
            return self._run(payloads)

    def _run(self, payloads: list[dict[str, Any]]) -> list[Outcome]:
        results: list[Outcome | None] = [None] * len(payloads)
        queue = deque(range(len(payloads)))
        busy: dict[int, tuple[Worker, int, float]] = {}
        while queue or busy:
            self._dispatch(queue, busy, payloads, results)
            if busy:
                self._collect(busy, results)
        return results  # type: ignore[return-value]

    def _dispatch(self, queue: deque, busy: dict, payloads: list, results: list) -> None:
        while queue and (self.idle or len(busy) < self.size):
            index = queue.popleft()
            body = _encode_payload(payloads[index])
            if isinstance(body, Outcome):
                results[index] = body
                continue
            worker = self.idle.pop() if self.idle else self._spawn()
            if isinstance(worker, Outcome):
                results[index] = worker
                continue
            if not worker.send(body):
                results[index] = Outcome(error=worker.death_kind(), detail="the worker died before the call")
                worker.kill()
                continue
            busy[worker.fd] = (worker, index, time.monotonic() + self.timeout)

    def _collect(self, busy: dict, results: list) -> None:
        deadline = min(entry[2] for entry in busy.values())
        ready, _, _ = select.select(list(busy), [], [], max(0.0, deadline - time.monotonic()))
        for fd in ready:
            worker, index, _ = busy[fd]
            alive = worker.read_available()
            message = worker.take_message()
            if isinstance(message, dict):
                results[index] = _outcome(message)
                del busy[fd]
                self.idle.append(worker)
            elif message is False or not alive:
                results[index] = Outcome(error=worker.death_kind(), detail="the worker process died (crash, signal or os._exit)")
                del busy[fd]
                worker.kill()
        now = time.monotonic()
        for fd, (worker, index, until) in list(busy.items()):
            if now >= until:
                results[index] = Outcome(error=TIMEOUT, detail=f"grade() ran past its {self.timeout:g} s timeout")
                del busy[fd]
                worker.kill()

    def close(self) -> None:
        """Stop every worker; safe to call twice."""
        with self.lock:
            while self.idle:
                self.idle.pop().kill()
