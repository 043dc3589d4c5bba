"""The python-grader worker: runs untrusted `grade(sample, item)` code in a contained process.

Started by `rft_cli.graders.sandbox` as `python -I -B _sandbox_worker.py` with an empty temporary
working directory and a minimal environment. Standard library only; it never imports `rft_cli`.

Protocol (4-byte big-endian length + UTF-8 JSON, on private copies of stdin/stdout; the user's
stdin/stdout/stderr are /dev/null):
    parent -> {"source", "memory_mb", "timeout"}      worker -> {"ready": true, "layers": [...]}
    parent -> {"sample", "item"}                      worker -> {"value": x} or {"error": kind, "detail": ...}

Containment, applied before the user's code runs (each layer is best effort and reported in `layers`):
    rlimits     address space (memory_mb), CPU seconds per call, file size, open files, no core
                dumps, no new processes (RLIMIT_NPROC=0; the kernel does not apply it to root)
    netns       a new, empty network namespace (unshare; needs root or unprivileged user namespaces)
    landlock    Linux >= 5.13: writes only inside the working directory, reads only of the Python
                installation and system libraries, no execve, no TCP bind/connect (ABI >= 4),
                no signals to or abstract sockets of outside processes (ABI >= 6), no ptrace or
                /proc/<pid>/environ of outside processes
    audit       a PEP 578 audit hook that refuses process creation, sockets, ctypes, signals,
                writes outside the working directory and other processes' /proc entries

Why four layers: none is enough alone or available everywhere. rlimits hold everywhere but say
nothing about files or the network; netns and Landlock are kernel-enforced but need Linux and a
permissive container; the audit hook always applies but is a Python-level guard that native code
can get around. The parent reads `layers` (`grader.sandbox_layers()`), so a user can tell which
held on their machine. The parent adds two things no layer here could: a wall-clock timeout per
call (it kills the worker's process group) and a clean environment (`sandbox.minimal_env`).
"""

import json
import math
import numbers
import os
import resource
import signal
import struct
import sys

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


# --- layers ----------------------------------------------------------------------------------


def _private_pipes():
    """Move the protocol to private fds and point the user's stdio at /dev/null."""
    # A print() in the user's grade() would otherwise write into the reply stream and garble it.
    requests, replies = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    return requests, replies


def _apply_rlimits(memory_mb):
    applied = []
    # RLIMIT_AS (address space), not RLIMIT_RSS: Linux does not enforce the resident-set limit.
    # Address space counts reserved as well as touched memory, hence the generous memory_mb default.
    # RLIMIT_NPROC=0 is safe to set here because this process already exists; it only stops new ones.
    limits = [
        ("RLIMIT_AS", memory_mb * 1024 * 1024),
        ("RLIMIT_CORE", 0),
        ("RLIMIT_FSIZE", 64 * 1024 * 1024),
        ("RLIMIT_NOFILE", 256),
        ("RLIMIT_NPROC", 0),
    ]
    for name, value in limits:
        limit = getattr(resource, name, None)
        if limit is None:
            continue
        try:
            resource.setrlimit(limit, (value, value))
            applied.append(name)
        except (ValueError, OSError):
            pass
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails with EFBIG instead
    return applied


def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _unshare_network():
    """A fresh network namespace: no interfaces but a loopback that is down."""
    try:
        ctypes, libc = _libc()
    except OSError:
        return None
    clone_newnet, clone_newuser = 0x40000000, 0x10000000
    if libc.unshare(clone_newnet) == 0:
        return "netns"
    if libc.unshare(clone_newuser | clone_newnet) == 0:
        return "netns(user)"
    return None


def _readable_roots():
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, "/usr", "/lib", "/lib64", "/lib32",
             "/etc/ld.so.cache", "/etc/localtime", "/proc/self", "/proc/cpuinfo", "/proc/meminfo",
             "/proc/stat", "/sys/devices/system/cpu", "/dev/urandom", "/dev/random"}
    roots.update(p for p in sys.path if p)
    return sorted(r for r in roots if os.path.exists(r))


_LANDLOCK_CREATE, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT = 444, 445, 446  # same on x86-64 and arm64
_WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 1, 1 << 2, 1 << 3
_PR_SET_NO_NEW_PRIVS = 38


def _landlock(workdir):
    """Restrict the filesystem, TCP and signals with Landlock (Linux >= 5.13); None if unavailable."""
    try:
        ctypes, libc = _libc()
    except OSError:
        return None
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    abi = syscall(_LANDLOCK_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return None
    # Landlock denies what the ruleset "handles" and no rule allows, so the ruleset handles every
    # filesystem right this kernel's ABI knows: anything the rules below do not grant is refused.
    handled_fs = (1 << {1: 13, 2: 14, 3: 15, 4: 15}.get(abi, 16)) - 1  # every access right this ABI knows
    ruleset = _landlock_ruleset(ctypes, syscall, abi, handled_fs)
    if ruleset < 0:
        return None
    file_rights = 0b111 | ((1 << 14) if abi >= 3 else 0) | ((1 << 15) if abi >= 5 else 0)
    rules = [(root, _READ_FILE | _READ_DIR) for root in _readable_roots()]
    rules += [(workdir, handled_fs & ~1), (os.devnull, _WRITE_FILE | _READ_FILE)]  # ~1: no execute
    for path, allowed in rules:
        _landlock_allow(ctypes, syscall, ruleset, path, allowed if os.path.isdir(path) else allowed & file_rights)
    # The kernel lets an unprivileged process restrict itself only once it can no longer gain
    # privileges (a setuid binary could otherwise run with the restrictions it does not expect).
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    ok = syscall(_LANDLOCK_RESTRICT, ctypes.c_int(ruleset), ctypes.c_uint32(0)) == 0
    os.close(ruleset)
    return f"landlock(abi {abi})" if ok else None


def _landlock_ruleset(ctypes, syscall, abi, handled_fs):
    """A ruleset handling every filesystem right, TCP bind/connect (ABI 4) and signal/socket scoping (ABI 6)."""

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    attr = RulesetAttr(handled_fs, 0b11 if abi >= 4 else 0, 0b11 if abi >= 6 else 0)
    size = 24 if abi >= 6 else (16 if abi >= 4 else 8)
    return syscall(_LANDLOCK_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))


def _landlock_allow(ctypes, syscall, ruleset, path, allowed):
    """Allow `allowed` beneath `path` (a missing path is skipped)."""

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]

    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    rule = PathBeneath(allowed, fd)
    syscall(_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0))
    os.close(fd)


_BLOCKED_EVENTS = (
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
    "os.killpg", "os.startfile", "subprocess.Popen", "pty.spawn", "signal.pthread_kill",
    "socket.", "ctypes.", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    "sys._current_frames", "sys.setprofile", "sys.settrace", "resource.prlimit",
    "winreg.", "_winapi.",
)  # fmt: skip
_PATH_EVENTS = {
    "os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.chmod": 1, "os.chown": 1, "os.truncate": 1,
    "os.utime": 1, "os.rename": 2, "os.link": 2, "os.symlink": 2, "shutil.rmtree": 1,
    "os.mkfifo": 1, "os.mknod": 1, "os.chflags": 1, "os.lchflags": 1,
}  # fmt: skip
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _install_audit_hook(workdir):
    """Refuse dangerous operations at the Python level (PEP 578); the hook cannot be removed."""
    workdir = os.path.realpath(workdir)
    own_proc = f"/proc/{os.getpid()}"
    # Bound now, as locals of the hook's closure: user code that replaces os.path.realpath later
    # cannot change what the hook sees (and replacing a function's __code__ is refused below).
    realpath, fsdecode, startswith = os.path.realpath, os.fsdecode, str.startswith

    def inside(path):
        if isinstance(path, int):
            return True
        real = realpath(fsdecode(path))
        return real == workdir or startswith(real, workdir + os.sep)

    def other_process(path):
        if isinstance(path, int):
            return False
        real = realpath(fsdecode(path))
        if not startswith(real, "/proc/"):
            return False
        head = real[6:].split("/", 1)[0]
        return head.isdigit() and real != own_proc and not startswith(real, own_proc + "/")

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (mode is not None and any(c in mode for c in "wax+")) or (mode is None and flags & _WRITE_FLAGS)
            if writing and not inside(path):
                raise PermissionError(f"sandbox: writing outside the working directory is not allowed ({path})")
            if other_process(path):
                raise PermissionError(f"sandbox: reading another process's /proc entry is not allowed ({path})")
            return
        if event in _PATH_EVENTS:
            for path in args[: _PATH_EVENTS[event]]:
                if path is not None and not inside(path):
                    raise PermissionError(f"sandbox: {event} outside the working directory is not allowed")
            return
        if event.startswith(_BLOCKED_EVENTS):
            raise PermissionError(f"sandbox: {event} is not allowed in a python grader")
        if event == "object.__setattr__" and len(args) > 1 and args[1] == "__code__":
            raise PermissionError("sandbox: replacing a function's code is not allowed")

    sys.addaudithook(hook)
    return "audit"


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
        return {"error": "python_grader_not_a_number", "detail": f"grade() returned {type(value).__name__}, not a number"}
    value = float(value)
    if math.isnan(value):
        return {"error": "python_grader_nan", "detail": "grade() returned NaN"}
    if math.isinf(value):
        return {"error": "python_grader_out_of_range", "detail": f"grade() returned {value}, outside [0, 1]"}
    return {"value": value}  # the parent decides what is outside [0, 1] (one rule for every grader)


def _set_cpu_limit(timeout):
    # A kernel-enforced bound beside the parent's wall-clock timer: a busy loop ends with SIGXCPU
    # even if the parent never gets to kill it. The worker lives for many calls, so the soft limit
    # is set relative to the CPU used so far, and the hard limit stays unlimited because an
    # unprivileged process can lower it but never raise it again for the next call.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    soft = int(used + timeout) + 2
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        pass


def _grade_one(grade, request, timeout):
    _set_cpu_limit(timeout)
    try:
        return _classify(grade(request["sample"], request["item"]))
    except MemoryError:
        return {"error": "python_grader_memory_error", "detail": "MemoryError: the grader ran out of its memory limit"}
    except BaseException as exc:  # noqa: BLE001  user code may raise anything, SystemExit included
        return {"error": "python_grader_runtime_error", "detail": f"{type(exc).__name__}: {exc}"[:1000]}


def main():
    requests, replies = _private_pipes()
    init = read_message(requests)
    if init is None:
        return
    workdir = os.getcwd()
    # Every layer is in place before the user's source is compiled, so its module-level code is
    # contained as much as grade() is. The audit hook goes last: it refuses ctypes, which the
    # network namespace and Landlock need for their system calls.
    layers = _apply_rlimits(int(init["memory_mb"]))
    if sys.platform == "linux":  # the syscall numbers below are Linux's
        layers += [layer for layer in (_unshare_network(), _landlock(workdir)) if layer]
    layers.append(_install_audit_hook(workdir))
    try:
        grade = _load(init["source"])
    except BaseException as exc:  # noqa: BLE001  report the user's load error, then serve it per call
        grade, load_error = None, f"{type(exc).__name__}: {exc}"[:1000]
    write_message(replies, {"ready": True, "layers": layers})
    while True:
        request = read_message(requests)
        if request is None:
            return
        if grade is None:
            reply = {"error": "python_grader_runtime_error", "detail": f"loading the grader failed: {load_error}"}
        else:
            reply = _grade_one(grade, request, float(init["timeout"]))
        write_message(replies, reply)


if __name__ == "__main__":
    main()
