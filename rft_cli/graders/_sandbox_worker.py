"""The python-grader worker: runs untrusted `grade(sample, item)` code in a contained process.

Started by `rft_cli.graders.sandbox` as `python -I -S -B _sandbox_worker.py` with an empty temporary
working directory and a minimal environment. Standard library only; it never imports `rft_cli`.

Protocol (4-byte big-endian length + UTF-8 JSON, on private copies of stdin/stdout; the user's
stdin/stdout/stderr are /dev/null):
    parent -> {"source", "memory_mb", "parent", "disabled"}
                                   worker -> {"pid": n}  (the process that runs the code)
                                   worker -> {"layers": [...]}  (both before any user code runs)
                                   worker -> {"ready": true}
    parent -> {"sample", "item"}   worker -> {"value": x} or {"error": kind, "detail": ...}

Containment (`_sandbox_layers.py`, shared with any other untrusted code rft runs) is in place
before the user's source is compiled, so its module-level code is contained as much as grade()
is. The parent treats every reply as untrusted (the code can rewrite this script's functions or
write to the pipe itself), and adds what no layer here can: a wall-clock timeout per call, a
CPU-time budget per call that it counts itself, a kill of the worker on either, and a clean
environment (`sandbox.minimal_env`).
"""

import json
import math
import numbers
import os
import struct

_HEADER = struct.Struct(">I")
_MAX_MESSAGE = 64 * 1024 * 1024


def _read_exact(fd, n):
    chunks, size = [], 0
    while size < n:
        chunk = os.read(fd, n - size)
        if not chunk:
            return None
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def read_message(fd):
    header = _read_exact(fd, _HEADER.size)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    if length > _MAX_MESSAGE:
        return None
    body = _read_exact(fd, length)
    return None if body is None else json.loads(body)


def write_message(fd, obj):
    body = json.dumps(obj, default=repr).encode("utf-8")
    data = _HEADER.pack(len(body)) + body
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _private_pipes():
    """Move the protocol to private fds and point the user's stdio at /dev/null."""
    # A print() in the user's grade() would otherwise write into the reply stream and garble it.
    requests, replies = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    return requests, replies


# --- grading ---------------------------------------------------------------------------------


def _load(source):
    # Not "__main__": a grader file's `if __name__ == "__main__":` test block must not run here.
    namespace = {"__name__": "grader", "__builtins__": __builtins__}
    exec(compile(source, "<grader>", "exec"), namespace)
    grade = namespace.get("grade")
    if not callable(grade):
        raise TypeError("the source defines no grade(sample, item) function")
    return grade


def _classify(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return {
            "error": "python_grader_not_a_number",
            "detail": f"grade() returned {type(value).__name__}, not a number",
        }
    value = float(value)
    if math.isnan(value):
        return {"error": "python_grader_nan", "detail": "grade() returned NaN"}
    if math.isinf(value):
        return {
            "error": "python_grader_out_of_range",
            "detail": f"grade() returned {value}, outside [0, 1]",
        }
    return {"value": value}  # the parent decides what is outside [0, 1] (one rule for every grader)


def _grade_one(grade, request):
    try:
        return _classify(grade(request["sample"], request["item"]))
    except MemoryError:
        return {
            "error": "python_grader_memory_error",
            "detail": "MemoryError: the grader ran out of its memory limit",
        }
    except BaseException as exc:  # noqa: BLE001  user code may raise anything, SystemExit included
        return {
            "error": "python_grader_runtime_error",
            "detail": f"{type(exc).__name__}: {exc}"[:1000],
        }


def _load_layers():
    """`_sandbox_layers.py` beside this file, loaded by path: `-I` keeps this folder off sys.path."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_layers.py")
    spec = importlib.util.spec_from_file_location("_sandbox_layers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    requests, replies = _private_pipes()
    init = read_message(requests)
    if init is None:
        return
    workdir = os.getcwd()
    layers = _load_layers()
    # In a PID namespace this forks: the supervisor stays in enter() until the worker exits.
    namespaces = layers.enter(
        init, lambda pid: write_message(replies, {"pid": pid}), (requests, replies)
    )
    import site  # started with -S (see sandbox._popen): the site-packages, for the user's imports

    site.main()
    # Sent before the user's code runs, so rft can trust it (the code could forge later messages).
    write_message(replies, {"layers": layers.contain(workdir, init, namespaces)})
    try:
        grade = _load(init["source"])
    except BaseException as exc:  # noqa: BLE001  report the user's load error, then serve it per call
        grade, load_error = None, f"{type(exc).__name__}: {exc}"[:1000]
    write_message(replies, {"ready": True})
    while True:
        request = read_message(requests)
        if request is None:
            return
        if grade is None:
            reply = {
                "error": "python_grader_runtime_error",
                "detail": f"loading the grader failed: {load_error}",
            }
        else:
            reply = _grade_one(grade, request)
        write_message(replies, reply)


if __name__ == "__main__":
    main()
