"""The python-grader worker: runs untrusted `grade(sample, item)` code in a contained process
(or, for a python tool, the tool functions a file defines).

Started by `rft_cli.graders.sandbox` as `python -I -S -B _sandbox_worker.py PARENT DISABLED`
(rft's pid; layers to leave out, for tests) with an empty temporary working directory and a
minimal environment. Standard library only; it never imports `rft_cli`.

Protocol (frames of a 4-byte big-endian length and a body, on private copies of stdin/stdout; the
user's stdin/stdout/stderr are /dev/null). The first frame is the bytecode of
`_sandbox_layers.py` (rft compiles it once; compiling it here would cost each worker 9 ms); every
other body is UTF-8 JSON:
    parent -> layers bytecode, {"source", "memory_mb"}
                                   worker -> {"pid": n}  (the process that runs the code)
                                   worker -> {"layers": [...]}  (both before any user code runs)
                                   worker -> {"ready": true}
    parent -> {"sample", "item"}   worker -> {"value": x} or {"error": kind, "detail": ...}

A tool worker (`rft_cli.tools.python_tool`) gets {"source", "memory_mb", "tools": [names]} and then
    parent -> {"function", "arguments"}   worker -> {"output": text} or {"error": kind, "detail": ...}

Containment (`_sandbox_layers.py`, shared with any other untrusted code rft runs) is in place
before the user's source is compiled, so its module-level code is contained as much as grade()
is. The parent treats every reply as untrusted (the code can rewrite this script's functions or
write to the pipe itself), and adds what no layer here can: a wall-clock timeout per call, a
CPU-time budget per call that it counts itself, a kill of the worker on either, and a clean
environment (`sandbox.minimal_env`).

Only `os` and `sys` are imported before the fork into a PID namespace (see `main`): the less the
interpreter holds then, the less the fork copies and the supervisor keeps.
"""

import os
import sys

# mypy reads _TYPE_CHECKING as True (pyproject's `always_true`): at run time the worker imports
# nothing before the fork, not even typing.
_TYPE_CHECKING = False
if _TYPE_CHECKING:
    import json
    import math
    import numbers
else:
    json = math = numbers = None  # imported by main() after the fork
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


def read_frame(fd):
    header = _read_exact(fd, 4)
    if header is None:
        return None
    length = int.from_bytes(header, "big")
    return None if length > _MAX_MESSAGE else _read_exact(fd, length)


def write_frame(fd, body):
    data = len(body).to_bytes(4, "big") + body
    while data:
        written = os.write(fd, data)
        data = data[written:]


def read_message(fd):
    body = read_frame(fd)
    return None if body is None else json.loads(body)


def write_message(fd, obj):
    write_frame(fd, json.dumps(obj, default=repr).encode("utf-8"))


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


def _load(source, tools=None):
    # Not "__main__": a grader file's `if __name__ == "__main__":` test block must not run here.
    name = "grader" if tools is None else "tool"
    namespace = {"__name__": name, "__builtins__": __builtins__}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    if tools is not None:
        missing = [t for t in tools if not callable(namespace.get(t))]
        if missing:
            raise TypeError(f"the source defines no function {missing[0]}()")
        return {t: namespace[t] for t in tools}
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


# A tool's output is text: a string as it is, any other JSON value written as JSON. Past this size
# (a reply frame holds 1 MiB) the model is told the output is too large, as OpenAI shows a 413.
_MAX_OUTPUT = 1024 * 1024 - 4096


def _call_tool(functions, request):
    try:
        value = functions[request["function"]](**request["arguments"])
        output = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    except MemoryError:
        return {
            "error": "tool_memory_error",
            "detail": "MemoryError: the tool ran out of its memory limit",
        }
    except BaseException as exc:  # noqa: BLE001  user code may raise anything, SystemExit included
        return {"error": "tool_exception", "detail": f"{type(exc).__name__}: {exc}"[:1000]}
    if len(output) > _MAX_OUTPUT // 6:  # a character is at most 6 bytes of escaped JSON
        encoded = len(json.dumps(output))
        if encoded > _MAX_OUTPUT:
            return {
                "error": "tool_output_too_large",
                "detail": f"the output is {encoded:,} bytes of JSON, over {_MAX_OUTPUT:,}",
            }
    return {"output": output}


def _load_layers(bytecode):
    """`_sandbox_layers.py` from the bytecode rft sent (this same interpreter compiled it), else
    from its source beside this file (`-I` keeps this folder off sys.path, so not by name)."""
    import marshal

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_layers.py")
    try:
        code = marshal.loads(bytecode)
    except (ValueError, EOFError, TypeError):
        with open(path, "rb") as f:
            code = compile(f.read(), path, "exec")
    module = type(sys)("_sandbox_layers")
    module.__file__ = path
    exec(code, module.__dict__)
    return module


def main():
    requests, replies = _private_pipes()
    bytecode = read_frame(requests)
    if bytecode is None:
        return
    layers = _load_layers(bytecode)
    settings = {"parent": int(sys.argv[1]), "disabled": sys.argv[2].split(",")}
    # In a PID namespace this forks: the supervisor stays in enter() until the worker exits.
    namespaces = layers.enter(
        settings, lambda pid: write_frame(replies, b'{"pid": %d}' % pid), (requests, replies)
    )
    global json, math, numbers
    import json
    import math
    import numbers
    import site  # started with -S (see sandbox._popen): the site-packages, for the user's imports

    site.main()
    init = read_message(requests)
    if init is None:
        return
    workdir = os.getcwd()
    # Sent before the user's code runs, so rft can trust it (the code could forge later messages).
    held = layers.contain(workdir, {**init, **settings}, namespaces)
    write_message(replies, {"layers": held})
    tools = init.get("tools")
    try:
        grade = _load(init["source"], tools)
    except BaseException as exc:  # noqa: BLE001  report the user's load error, then serve it per call
        grade, load_error = None, f"{type(exc).__name__}: {exc}"[:1000]
    write_message(replies, {"ready": True})
    while True:
        request = read_message(requests)
        if request is None:
            return
        if grade is None:
            reply = {
                "error": "python_grader_runtime_error" if tools is None else "tool_load_error",
                "detail": f"loading the {'grader' if tools is None else 'tool'} failed: {load_error}",
            }
        elif tools is not None:
            reply = _call_tool(grade, request)
        else:
            reply = _grade_one(grade, request)
        write_message(replies, reply)


if __name__ == "__main__":
    main()
