"""A pool of persistent worker processes that run python graders' untrusted code.

The caller never runs user code and never crashes: every failure comes back as an error kind.
See `_sandbox_layers.py` for what each worker does to contain the code, and docs/graders.md
("The python grader sandbox") and docs/guarantees.md (guarantee 4) for what is and is not guaranteed.

Why persistent workers: a grade runs thousands of times per training step, and starting a sandboxed
interpreter costs tens of milliseconds (the pool is ~500x faster, docs/benchmarks.md). Why a
process at all: a grader that segfaults, calls os._exit, allocates without bound or loops must cost
one counted error, never the trainer, so its code never runs in the caller.

What the caller enforces itself, since the code can rewrite its worker: every byte that comes back
is untrusted (shape checked, sizes bounded, text made printable); each call has a wall-clock
deadline that covers writing the request as well as reading the reply; each call may use `timeout`
seconds of CPU time, counted from the end of the previous call (threads and idle time included) at
every reply and by a watchdog thread while the worker is busy or idle; a worker over either limit
is killed (SIGKILL, which also ends a stopped process) with every process it started.
"""

from __future__ import annotations

import functools
import json
import marshal
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
import warnings
import weakref
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from queue import SimpleQueue
from typing import Any

from rft_cli.errors import RftWarning
from rft_cli.graders.base import clamp_reward, printable

WORKER_SCRIPT = str(Path(__file__).with_name("_sandbox_worker.py"))
LAYERS_SCRIPT = str(Path(__file__).with_name("_sandbox_layers.py"))
TIMEOUT = "python_grader_timeout"
CRASH = "python_grader_crash"
STARTUP = "python_grader_startup_error"
INPUT = "python_grader_input_error"
OUT_OF_RANGE = "python_grader_out_of_range"
# The kinds a worker may report; anything else in a reply is a forgery and reads as a crash.
WORKER_KINDS = frozenset(
    {
        "python_grader_runtime_error",
        "python_grader_not_a_number",
        "python_grader_nan",
        "python_grader_memory_error",
        OUT_OF_RANGE,
    }
)
_HEADER = struct.Struct(">I")
_MAX_REPLY = 1024 * 1024
_MAX_DETAIL = 1000
_STARTUP_SECONDS = 20.0
_WATCH_SECONDS = 0.2
# Layers to leave out, by name (see _sandbox_layers.py): tests set it to see the sandbox on a
# machine without them. Not a setting: a user never needs a weaker sandbox.
DISABLED_LAYERS: frozenset[str] = frozenset()


class SandboxWarning(RftWarning):
    """This machine does not offer a containment layer the sandbox relies on."""


@dataclass
class Outcome:
    """One call's result: a value (a grade in [0, 1], a tool's output text), or an error kind with a detail."""

    value: float | str | None = None
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


# Control characters (but tab), the Unicode line and paragraph separators and the bidirectional
# overrides: escaped, so a detail is one line that prints as it reads and cannot drive a terminal.
_ESCAPES = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F)]
    + list(range(0x2066, 0x206A))
    if code != 0x09
}


def untrusted_text(value: Any, limit: int = _MAX_DETAIL) -> str:
    """Text from a worker, safe to record, print and write: a string, cut to `limit` characters,
    control characters escaped and lone surrogates escaped (anything else becomes "")."""
    if not isinstance(value, str):
        return ""
    return printable(value[:limit].translate(_ESCAPES))


# --- starting and killing processes -------------------------------------------------------------


class _Spawner:
    """Starts workers from one thread that lives as long as rft: a worker's parent-death signal
    fires when the *thread* that started it ends, so a short-lived caller thread must not start one."""

    def __init__(self) -> None:
        self.jobs: SimpleQueue = SimpleQueue()
        threading.Thread(target=self._serve, name="rft-sandbox-spawner", daemon=True).start()

    def _serve(self) -> None:
        while True:
            future, call = self.jobs.get()
            try:
                future.set_result(call())
            except BaseException as exc:  # noqa: BLE001  handed back to the caller as it is
                future.set_exception(exc)

    def run(self, call: Any) -> Any:
        future: Future = Future()
        self.jobs.put((future, call))
        return future.result()


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def _popen(workdir: str, args: list[str]) -> subprocess.Popen:
    def start() -> subprocess.Popen:
        return subprocess.Popen(
            # -S: the worker runs `site` itself once it has forked into its PID namespace, so
            # that fork copies a small interpreter.
            [sys.executable, "-I", "-S", "-B", WORKER_SCRIPT, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=workdir,
            env=minimal_env(workdir),
            close_fds=True,
            # Its own process group, so a kill reaches whatever it managed to start as well.
            start_new_session=True,
        )

    if threading.current_thread() is threading.main_thread():
        return start()
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = _Spawner()
    return _spawner.run(start)


def _signal_kill(pid: int | None, pidfd: int | None) -> None:
    """SIGKILL the process running the code (in a PID namespace, everything it started dies too)."""
    try:
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        elif pid is not None:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _children(pid: int) -> list[int]:
    """The pids of `pid`'s children, from every thread's /proc list (empty where unreadable)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found = []
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/children") as f:
                found += [int(child) for child in f.read().split()]
        except (OSError, ValueError):
            pass
    return found


def _kill_descendants(pid: int) -> None:
    """SIGKILL every descendant of `pid`, which must be a subreaper: as a child dies its orphans
    become `pid`'s children, so the tree is walked again until it is empty."""
    for _ in range(10):
        stack, found = _children(pid), []
        while stack:
            child = stack.pop()
            found.append(child)
            stack += _children(child)
        if not found:
            return
        for child in found:
            try:
                os.kill(child, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)


def _kill(process: subprocess.Popen, workdir: str, target: dict[str, Any]) -> None:
    """Kill the worker, what it started, its supervisor and process group, and remove its folder."""
    if target.get("subreaper"):  # outside a PID namespace its descendants outlive it otherwise
        _kill_descendants(target["pid"])
    _signal_kill(target.get("pid"), target.get("pidfd"))
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
            if stream is not None:
                stream.close()
        except OSError:
            pass
    if target.get("pidfd") is not None:
        os.close(target.pop("pidfd"))
    shutil.rmtree(workdir, ignore_errors=True)


class _Watchdog:
    """One thread that kills any worker over its CPU budget, busy or idle, every _WATCH_SECONDS."""

    def __init__(self) -> None:
        self.workers: weakref.WeakSet[Worker] = weakref.WeakSet()
        self.lock = threading.Lock()
        self.running = False

    def watch(self, worker: Worker) -> None:
        with self.lock:
            self.workers.add(worker)
            if not self.running:
                self.running = True
                threading.Thread(
                    target=self._loop, name="rft-sandbox-watchdog", daemon=True
                ).start()

    def forget(self, worker: Worker) -> None:
        with self.lock:
            self.workers.discard(worker)

    def _loop(self) -> None:
        while True:
            time.sleep(_WATCH_SECONDS)
            # Under the lock: a worker being killed (`forget` first) is never signalled through a
            # pidfd its owner has closed, and whose number may already name another process.
            with self.lock:
                for worker in list(self.workers):
                    worker.check_cpu()

    def after_fork(self) -> None:
        self.workers, self.running = weakref.WeakSet(), False


_watchdog = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_watchdog.after_fork)


# --- one worker ---------------------------------------------------------------------------------


class Worker:
    """One contained worker process, spoken to with length-prefixed JSON over its stdin/stdout.

    Generic: it knows how to start, feed, read, time and kill a worker, not what the code does.
    Both pipes are non-blocking, so a worker that stops reading (or stops itself) cannot block the
    caller: a request waits in `outbox` and goes out as the pipe drains, under the call's deadline.
    """

    def __init__(self, init: dict[str, Any]) -> None:
        self.workdir = tempfile.mkdtemp(prefix="rft-grader-")
        self.target: dict[str, Any] = {}  # the process running the code: pid, pidfd, CPU clock
        try:
            self.process = _popen(
                self.workdir, [str(os.getpid()), ",".join(sorted(DISABLED_LAYERS))]
            )
        except BaseException:
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        self.fd = self.process.stdout.fileno()  # type: ignore[union-attr]
        self.in_fd = self.process.stdin.fileno()  # type: ignore[union-attr]
        os.set_blocking(self.fd, False)
        os.set_blocking(self.in_fd, False)
        self.buffer = bytearray()
        self.outbox = bytearray()
        self.layers: list[str] = []
        self.may_fork = True
        self.cpu_mark, self.cpu_budget, self.overrun = 0.0, float("inf"), False
        self._finalizer = weakref.finalize(self, _kill, self.process, self.workdir, self.target)
        self.queue(_layers_code())
        self.queue(encode(init))

    def start(self, seconds: float, budget: float) -> bool | None:
        """Read the worker's pid and layers (sent before any user code runs, so trusted), then its
        ready message: True, None if it hung, False if it died or said something else."""
        deadline = time.monotonic() + seconds
        announced = self.wait_message(seconds)
        if not isinstance(announced, dict) or not self._adopt(announced.get("pid"), seconds):
            return _not_started(announced)
        layers = self.wait_message(deadline - time.monotonic())
        if not isinstance(layers, dict) or not isinstance(layers.get("layers"), list):
            return _not_started(layers)
        self.layers = [untrusted_text(x, 40) for x in layers["layers"][:32] if isinstance(x, str)]
        # Can the code start a process? Then rft looks for one after each call (it must not
        # outlive the call), and kills the tree itself where no PID namespace does it.
        self.may_fork = not {"seccomp", "RLIMIT_NPROC"} & set(self.layers)
        self.target["subreaper"] = "subreaper" in self.layers
        ready = self.wait_message(deadline - time.monotonic())
        if not isinstance(ready, dict) or ready.get("ready") is not True:
            return _not_started(ready)
        self.cpu_mark, self.cpu_budget = self.cpu_seconds() or 0.0, budget
        return True

    def _adopt(self, pid: Any, budget: float) -> bool:
        """Watch the process that runs the code: this one, or its child in a PID namespace."""
        if type(pid) is not int or pid <= 0:
            return False
        self.target["pid"] = pid
        if hasattr(os, "pidfd_open"):
            try:  # a pidfd names this process for good: no kill can reach a recycled pid
                self.target["pidfd"] = os.pidfd_open(pid)
            except OSError:
                pass
        if sys.platform == "linux":  # its CPU-time clock (all threads), readable without /proc
            self.target["clock"] = ((~pid) << 3) | 2
        self.cpu_budget = budget
        _watchdog.watch(self)
        return True

    def cpu_seconds(self) -> float | None:
        clock = self.target.get("clock")
        if clock is None:
            return None
        try:
            return time.clock_gettime(clock)
        except OSError:
            return None

    def charge(self, budget: float) -> float | None:
        """At a reply: the CPU seconds used since the previous one if over `budget`, else None."""
        now = self.cpu_seconds()
        if now is None:
            return None
        used = now - self.cpu_mark
        if used > budget or self.overrun:
            return used
        self.cpu_mark, self.cpu_budget = now, budget
        return None

    def check_cpu(self) -> None:
        """The watchdog's check (its own thread): kill the worker once over its budget."""
        now = self.cpu_seconds()
        if now is not None and now - self.cpu_mark > self.cpu_budget and not self.overrun:
            self.overrun = True
            _signal_kill(self.target.get("pid"), self.target.get("pidfd"))

    def queue(self, body: bytes) -> bool:
        self.outbox += _HEADER.pack(len(body)) + body
        return self.flush()

    def flush(self) -> bool:
        """Write what the pipe takes now; False when the worker is gone (EPIPE)."""
        while self.outbox:
            try:
                written = os.write(self.in_fd, self.outbox)
            except BlockingIOError:
                return True
            except OSError:
                return False
            del self.outbox[:written]
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
        except (ValueError, RecursionError):
            return False
        return message if isinstance(message, dict) else False

    def wait_message(self, seconds: float) -> dict[str, Any] | None | bool:
        """Block up to `seconds` for one message (sending the outbox meanwhile): the message,
        None on timeout, False if dead."""
        deadline = time.monotonic() + seconds
        while True:
            message = self.take_message()
            if message is not None:
                return message
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            writing = [self.in_fd] if self.outbox else []
            readable, writable, _ = select.select([self.fd], writing, [], left)
            if writable and not self.flush():
                return False
            if readable and not self.read_available():
                return self.take_message() or False

    def death_kind(self) -> str:
        """Why a worker died: over its CPU budget or limit (SIGXCPU) is a timeout, else a crash."""
        if self.overrun:
            return TIMEOUT
        try:
            code = self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return CRASH
        # In a PID namespace the supervisor exits with 128 + the signal that ended the worker.
        return TIMEOUT if code in (-signal.SIGXCPU, 128 + signal.SIGXCPU) else CRASH

    def kill(self) -> None:
        _watchdog.forget(self)
        self._finalizer()


@functools.cache
def _layers_code() -> bytes:
    """_sandbox_layers.py compiled once per rft process, for every worker (marshal: the worker
    runs this same interpreter, so the bytecode fits)."""
    with open(LAYERS_SCRIPT, "rb") as f:
        return marshal.dumps(compile(f.read(), LAYERS_SCRIPT, "exec"))


def encode(message: dict[str, Any]) -> bytes:
    """A message as JSON bytes. ASCII escapes keep lone surrogates ("\\ud800", valid JSON) intact
    on the way to the worker, where `json.loads` gives the user's code the same string back."""
    return json.dumps(message, ensure_ascii=True, default=str).encode("ascii")


def missing_layer_warnings(layers: list[str]) -> list[str]:
    """What a user must know about this machine's sandbox, from the layers a worker reported."""
    held = set(layers)
    notes = []
    if not held & {"seccomp", "pidns", "RLIMIT_NPROC"}:
        notes.append(
            "python graders: this machine offers no layer that stops a grader's processes from "
            "outliving it (no seccomp filter, no PID namespace, and RLIMIT_NPROC does not bind "
            "root); run only python graders you trust here, or run rft as a normal user"
        )
    if not any(layer.startswith("landlock") or layer == "readonly-fs" for layer in held):
        notes.append(
            "python graders: no kernel layer confines files on this machine (no Landlock, no "
            "mount namespace); only a Python-level audit hook stands between a grader and your "
            "files, so run only python graders you trust here (docs/guarantees.md, guarantee 4)"
        )
    return notes


_warned: set[str] = set()


def _not_started(reply: object) -> bool | None:
    """`Worker.start`'s answer for a reply that is not the one expected: None when the worker
    hung (no reply), False when it died or said something else."""
    return None if reply is None else False


def _warn_missing_layers(layers: list[str]) -> None:
    for note in missing_layer_warnings(layers):
        if note not in _warned:
            _warned.add(note)
            warnings.warn(note, SandboxWarning, stacklevel=2)


# --- the grading pool ---------------------------------------------------------------------------


def _encode_payload(payload: dict[str, Any]) -> bytes | Outcome:
    try:
        return encode(payload)
    except RecursionError:
        return Outcome(
            error=INPUT, detail="the sample or item is nested too deeply to send to the grader"
        )
    except (TypeError, ValueError) as exc:
        return Outcome(
            error=INPUT, detail=f"the sample or item cannot be sent to the grader ({exc})"
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def _outcome(message: dict[str, Any]) -> Outcome:
    """A reply, read as untrusted data: {"value": number} or {"error": kind, "detail": text}."""
    keys = message.keys()
    if keys == {"value"} and type(message["value"]) in (int, float):
        value = clamp_reward(message["value"])
        if value is not None:
            return Outcome(value)
        return Outcome(
            error=OUT_OF_RANGE,
            detail=f"grade() returned {_short(message['value'])}, outside [0, 1]",
        )
    kind = message.get("error")
    if keys <= {"error", "detail"} and isinstance(kind, str) and kind in WORKER_KINDS:
        return Outcome(error=message["error"], detail=untrusted_text(message.get("detail", "")))
    return Outcome(error=CRASH, detail="the worker sent an unreadable reply")


class SandboxPool:
    """Persistent workers for one grader's source; `run(payloads)` grades them in parallel.

    A worker that times out, overruns its CPU budget, crashes or garbles its reply is killed and
    replaced on next use. Thread-safe (one batch at a time). Not picklable by design: graders drop
    it when pickled. A subclass runs other code in the same workers (`rft_cli.tools.python_tool`):
    it adds to `init` what the worker loads and reads replies with its own `read_reply`.
    """

    call_name = "grade()"  # what a timeout's detail says ran too long

    def __init__(
        self, source: str, timeout: float = 10.0, memory_mb: int = 1024, workers: int = 2
    ) -> None:
        self.init = {"source": source, "memory_mb": memory_mb}
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
        started = worker.start(_STARTUP_SECONDS + self.timeout, self.timeout)
        if not started:
            kind = STARTUP if started is None else worker.death_kind()
            worker.kill()
            self.broken = Outcome(
                error=kind,
                detail="the worker did not start (the grader hung or died while loading)",
            )
            return self.broken
        self.layers = worker.layers
        _warn_missing_layers(worker.layers)
        return worker

    def _take_worker(self) -> Worker | Outcome:
        """An idle worker still alive and within its budget, else a new one."""
        while self.idle:
            worker = self.idle.pop()
            if not worker.overrun and worker.process.poll() is None:
                return worker
            worker.kill()
        return self._spawn()

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
            worker = self._take_worker()
            if isinstance(worker, Outcome):
                results[index] = worker
                continue
            # The deadline starts now: it covers writing the request as well as the reply.
            if not worker.queue(body):
                results[index] = Outcome(
                    error=worker.death_kind(), detail="the worker died before the call"
                )
                worker.kill()
                continue
            busy[worker.fd] = (worker, index, time.monotonic() + self.timeout)

    def _collect(self, busy: dict, results: list) -> None:
        deadline = min(entry[2] for entry in busy.values())
        writers = {w.in_fd: fd for fd, (w, _, _) in busy.items() if w.outbox}
        readable, writable, _ = select.select(
            list(busy), list(writers), [], max(0.0, deadline - time.monotonic())
        )
        for in_fd in writable:
            worker, index, _ = busy[writers[in_fd]]
            if not worker.flush():
                self._fail(busy, writers[in_fd], results, worker.death_kind(), "the worker died")
        for fd in readable:
            if fd in busy:
                self._receive(busy, fd, results)
        now = time.monotonic()
        for fd, (_, _, until) in list(busy.items()):
            if now >= until:
                self._fail(
                    busy,
                    fd,
                    results,
                    TIMEOUT,
                    f"{self.call_name} ran past its {self.timeout:g} s timeout",
                )

    def _receive(self, busy: dict, fd: int, results: list) -> None:
        worker, index, _ = busy[fd]
        alive = worker.read_available()
        message = worker.take_message()
        if isinstance(message, dict) and not worker.buffer and not worker.outbox:
            used = worker.charge(self.timeout)
            if used is not None:
                self._fail(busy, fd, results, TIMEOUT, self._cpu_detail(used))
                return
            results[index] = outcome = self.read_reply(message)
            del busy[fd]
            # Out of protocol (a forged reply may be followed by the real one), or a process it
            # started that must not outlive the call: the worker goes.
            if outcome.error == CRASH or worker.may_fork and _children(worker.target["pid"]):
                worker.kill()
            else:
                self.idle.append(worker)
        elif message is not None or not alive:
            # A reply before the whole request was read, or more than one reply, is forged.
            # A live worker that wrote what is no reply is out of protocol: a crash, with no wait
            # for it to die; a dead one's exit status says whether it ran out of time.
            forged = isinstance(message, dict) or (message is not None and alive)
            kind = CRASH if forged else worker.death_kind()
            detail = (
                "the worker sent an unreadable reply"
                if message is not None
                else "the worker process died (crash, signal or os._exit)"
            )
            if kind == TIMEOUT and worker.overrun:
                detail = self._cpu_detail(None)
            self._fail(busy, fd, results, kind, detail)

    def read_reply(self, message: dict[str, Any]) -> Outcome:
        """A worker's reply (untrusted) as an Outcome; anything out of shape reads as a crash."""
        return _outcome(message)

    def _fail(self, busy: dict, fd: int, results: list, kind: str, detail: str) -> None:
        worker, index, _ = busy.pop(fd)
        results[index] = Outcome(error=kind, detail=detail)
        worker.kill()

    def _cpu_detail(self, used: float | None) -> str:
        amount = f"{used:.1f} s" if used is not None else "more"
        return (
            f"the worker used {amount} of CPU time since its previous call, over the {self.timeout:g} s "
            "timeout (threads and time between calls count)"
        )

    def close(self) -> None:
        """Stop every worker; safe to call twice."""
        with self.lock:
            while self.idle:
                self.idle.pop().kill()
