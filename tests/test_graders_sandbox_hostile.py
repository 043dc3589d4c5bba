"""Issue 24, the sandbox half: a grader author is the attacker, and each attack is a real python
grader file run through `rft grade` (or the trainer, or `load_grader`), on this machine's kernel
and on kernels simulated without a layer.

A simulated kernel: `rft grade` runs in a child process that first installs a seccomp filter of its
own, answering ENOSYS to Landlock's calls ("a kernel without Landlock") or EPERM to unshare ("a
container that forbids namespaces"); every process rft starts inherits it. Layers the kernel cannot
be made to lack (the seccomp filter itself, the audit hook) are left out through
`sandbox.DISABLED_LAYERS`, which only tests set. A process left behind is found by its HOME, the
worker's folder, under this test's own TMPDIR.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import nullcontext
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rft_cli.cli import app

pytestmark = [
    pytest.mark.guarantee,
    pytest.mark.skipif(sys.platform != "linux", reason="the sandbox's kernel layers are Linux's"),
]
ROOT = Path(__file__).resolve().parents[1]
X86 = os.uname().machine == "x86_64"
NO_LANDLOCK = "444:38,445:38,446:38"  # landlock_create_ruleset, _add_rule, _restrict_self: ENOSYS
NO_NAMESPACES = "272:1"  # unshare: EPERM

# Runs `rft ARGS...` after installing the simulated kernel's filter (x86-64 syscall numbers).
RUNNER = textwrap.dedent(
    """
    import ctypes, os, struct, sys
    deny, disabled, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if deny:
        rules = [tuple(int(x) for x in pair.split(":")) for pair in deny.split(",")]
        code = [(0x20, 0, 0, 4), (0x15, 1, 0, 0xC000003E), (0x06, 0, 0, 0x7FFF0000), (0x20, 0, 0, 0)]
        for number, errno in rules:
            code += [(0x15, 0, 1, number), (0x06, 0, 0, 0x00050000 | errno)]
        code.append((0x06, 0, 0, 0x7FFF0000))
        program = b"".join(struct.pack("HBBI", *op) for op in code)
        buffer = ctypes.create_string_buffer(program)
        fprog = struct.pack("HxxxxxxQ", len(code), ctypes.addressof(buffer))
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.prctl(38, 1, 0, 0, 0) == 0
        assert libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0) == 0, ctypes.get_errno()
    import rft_cli.graders.sandbox as sandbox
    sandbox.DISABLED_LAYERS = frozenset(x for x in disabled.split(",") if x)
    from rft_cli.cli import app
    sys.argv = ["rft", *args]
    app()
    """
)


def grader_file(tmp_path: Path, source: str, timeout: float = 2, **settings) -> Path:
    path = tmp_path / "grader.yaml"
    spec = {"type": "python", "name": "attack", "source": textwrap.dedent(source)}
    path.write_text(yaml.safe_dump({**spec, "timeout": timeout, "workers": 1, **settings}))
    return path


def rows_and_samples(tmp_path: Path, items: list[dict], text: str = "x") -> list[str]:
    data, samples = tmp_path / "rows.jsonl", tmp_path / "samples.jsonl"
    rows = [{"messages": [{"role": "user", "content": "q"}], **item} for item in items]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    samples.write_text("".join(json.dumps({"output_text": text}) + "\n" for _ in items))
    return ["--data", str(data), "--samples", str(samples)]


def environment(tmp_path: Path) -> dict[str, str]:
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(scratch), "PYTHONPATH": str(ROOT)}


def rft(tmp_path: Path, args: list[str], deny: str = "", disabled=(), timeout: float = 60):
    """`rft ARGS` on a simulated kernel; a hang past `timeout` fails the test (and is killed)."""
    if deny and not X86:
        pytest.skip("the simulated kernels use x86-64 system call numbers")
    command = [sys.executable, "-c", RUNNER, deny, ",".join(disabled), *args]
    process = subprocess.Popen(
        command,
        env=environment(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        kill_leftovers(tmp_path)
        pytest.fail(f"rft {' '.join(args[:2])} still ran after {timeout} s")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def leftovers(tmp_path: Path) -> list[int]:
    """Processes whose HOME (every worker's is its folder, and what it starts inherits it) is
    under this test's TMPDIR: its workers and anything they started."""
    marker = f"HOME={tmp_path / 'tmp'}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if any(v.startswith(marker) for v in f.read().split(b"\0")):
                        found.append(int(entry))
            except OSError:
                pass
    return found


def kill_leftovers(tmp_path: Path) -> None:
    for pid in leftovers(tmp_path):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def settle(tmp_path: Path, seconds: float = 3.0) -> list[int]:
    """The processes still left after up to `seconds` (a kill takes a moment to land)."""
    deadline = time.monotonic() + seconds
    while (found := leftovers(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    kill_leftovers(tmp_path)
    return found


# --- 1. every process a grader starts dies with its worker ------------------------------------

# A fork that raised no audit event at d6643b4: _posixsubprocess.fork_exec runs a Python callback
# in the child before its exec (which Landlock refused). The child leaves the worker's session,
# lifts its CPU limit and spins for 8 s.
FORK = """
import os, time
def grade(sample, item):
    import _posixsubprocess
    def child():
        try:
            os.setsid()
            import resource
            resource.setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY,) * 2)
        except Exception:
            pass
        end = time.time() + 8
        while time.time() < end:
            pass
        os._exit(0)
    read, write = os.pipe()
    _posixsubprocess.fork_exec(
        [b"/nonexistent"], [b"/nonexistent"], True, (write,), None, None, -1, -1, -1, -1, -1, -1,
        read, write, False, False, -1, None, None, None, -1, child, False)
    return 1.0
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "disabled",
    [(), ("audit",), ("audit", "seccomp"), ("audit", "seccomp", "pidns")],
    ids=["every layer", "kernel layers", "pidns alone", "subreaper alone"],
)
def test_a_process_a_grader_forks_does_not_outlive_the_call(tmp_path, disabled):
    """d6643b4: the forked child was still running after `rft grade` (timeout 2) had exited.
    Now the audit hook refuses the call; past it (left out here), seccomp refuses the fork; past
    that, the worker, init of a PID namespace, is killed at the end of the call with its child;
    without a PID namespace, the worker adopts orphans (a subreaper) and rft kills the tree."""
    grader = grader_file(tmp_path, FORK)
    args = ["grade", str(grader), *rows_and_samples(tmp_path, [{}, {}]), "--format", "json"]
    result = rft(tmp_path, args, disabled=disabled)
    assert result.returncode == 0, result.stderr
    forked = "seccomp" in disabled  # else the fork is refused: a counted runtime error
    expected = {} if forked else {"python_grader_runtime_error": 2}
    assert json.loads(result.stdout)["errors"] == expected
    assert settle(tmp_path, 1.0) == []
    if "pidns" in disabled and os.geteuid() == 0:  # nothing binds root's forks: said so
        assert "Warning: python graders: this machine offers no layer that stops" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("disabled", [("audit", "seccomp"), ("audit", "seccomp", "pidns")])
def test_a_forked_process_is_gone_when_its_call_returns(tmp_path, monkeypatch, disabled):
    """While rft goes on (a training run keeps its pool for hours), a process the grader started
    must not outlive the call: the worker that started it is killed as the reply comes back."""
    import tempfile

    from rft_cli.graders import load_grader, sandbox

    monkeypatch.setattr(sandbox, "DISABLED_LAYERS", frozenset(disabled), raising=False)
    monkeypatch.setattr(sandbox, "_warned", set(), raising=False)  # warned once per process
    monkeypatch.setattr(tempfile, "tempdir", str(environment(tmp_path)["TMPDIR"]))
    warned = getattr(sandbox, "SandboxWarning", UserWarning)
    with pytest.warns(warned) if "pidns" in disabled else nullcontext():
        grader = load_grader(grader_file(tmp_path, FORK))
        try:
            assert grader.grade("x", {}).reward == 1.0  # the fork happened
            assert settle(tmp_path, 1.0) == []
            assert grader.grade("x", {}).reward == 1.0  # and the next call has a fresh worker
        finally:
            grader.close()


SPIN_FOREVER = """
import os, signal
def grade(sample, item):
    if item.get("stop"):
        signal.raise_signal(signal.SIGSTOP)
    while True:
        pass
"""


@pytest.mark.slow
@pytest.mark.parametrize("stop", [False, True], ids=["spinning", "stopped"])
def test_a_worker_dies_with_rft(tmp_path, stop):
    """d6643b4: killed with SIGKILL, rft left its busy worker running (until its CPU limit) and its
    stopped worker behind for good. Now each process it starts gets SIGKILL when rft dies."""
    grader = grader_file(tmp_path, SPIN_FOREVER, timeout=60)
    args = ["grade", str(grader), *rows_and_samples(tmp_path, [{"stop": stop}])]
    disabled = ("seccomp", "pidns") if stop else ()  # else the stop signal is refused or ignored
    command = [sys.executable, "-c", RUNNER, "", ",".join(disabled), *args]
    process = subprocess.Popen(command, env=environment(tmp_path), start_new_session=True)
    deadline = time.monotonic() + 30
    while not leftovers(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into grade()
    process.kill()
    process.wait()
    assert settle(tmp_path) == []


# --- 2. a worker that stops itself, hangs or floods never blocks the caller -------------------

# Rewrites its worker to stop itself right after each reply; the next request (200 KB) no longer
# fits the pipe.
STOP_AFTER_REPLY = """
import signal, sys
worker = sys.modules["__main__"]
write_message = worker.write_message
def write_and_stop(fd, message):
    write_message(fd, message)
    if "value" in message:
        try:
            signal.raise_signal(signal.SIGSTOP)
        except OSError:
            pass
worker.write_message = write_and_stop
def grade(sample, item):
    return 1.0
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "disabled",
    [(), ("seccomp",), ("seccomp", "pidns")],
    ids=["every layer", "init of a PID namespace", "stoppable"],
)
def test_a_stopped_worker_cannot_block_rft_grade(tmp_path, disabled):
    """d6643b4: `rft grade` with timeout 2 was still blocked in its write after 40 s. Now the
    stop is refused (seccomp) or ignored (init of a PID namespace); where it happens, the request
    is written without blocking under the call's deadline, and the stopped worker is killed."""
    grader = grader_file(tmp_path, STOP_AFTER_REPLY)
    args = rows_and_samples(tmp_path, [{}] * 6, text="x" * 200_000)
    started = time.monotonic()
    result = rft(tmp_path, ["grade", str(grader), *args, "--format", "json"], disabled=disabled)
    assert result.returncode == 0, result.stderr
    errors = json.loads(result.stdout)["errors"]
    # Stopped after each reply: every other call finds it stopped, and times out after 2 s.
    assert errors == ({"python_grader_timeout": 3} if "pidns" in disabled else {})
    assert time.monotonic() - started < 30
    assert settle(tmp_path, 1.0) == []


FLOOD = """
import os, stat
def grade(sample, item):
    for fd in range(3, 12):
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                while True:
                    os.write(fd, b"\\xff" * 65536)
        except OSError:
            pass
    return 1.0
"""


@pytest.mark.slow
def test_a_worker_flooding_its_pipe_is_a_counted_crash(tmp_path):
    """A worker that floods its reply pipe with garbage is read up to the reply limit, counted as
    a crash and killed; rft grade finishes."""
    grader = grader_file(tmp_path, FLOOD)
    args = ["grade", str(grader), *rows_and_samples(tmp_path, [{}, {}]), "--format", "json"]
    result = rft(tmp_path, args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["errors"] == {"python_grader_crash": 2}
    assert settle(tmp_path, 1.0) == []


DISK_FILLER = """
def grade(sample, item):
    chunk = b"x" * (16 << 20)
    for i in range(25):  # 400 MiB, in files under RLIMIT_FSIZE's 64 MiB
        with open(f"f{i}", "wb") as f:
            f.write(chunk)
    return 1.0
"""


def test_a_grader_cannot_fill_the_disk(tmp_path, monkeypatch):
    """d6643b4: a file's size was bounded (64 MiB), not how many a grader wrote, on the disk that
    holds the temporary folder. Now (with a mount namespace) its folder is a tmpfs of memory_mb,
    gone with the worker."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", environment(tmp_path)["TMPDIR"])
    grader = grader_file(tmp_path, DISK_FILLER, timeout=10, memory_mb=256)
    result = CliRunner().invoke(app, ["grade", str(grader), "--sample", "x", "--item", "{}"])
    assert result.exit_code == 0, result.output
    assert "python_grader_runtime_error" in result.output and "No space left" in result.output
    assert list((tmp_path / "tmp").iterdir()) == []


# --- 3. every reply is untrusted data ----------------------------------------------------------

# The grader rewrites its worker as it loads: every reply names a made-up error kind holding a lone surrogate,
# with a detail full of Rich markup, terminal escapes and another surrogate.
FORGED_KIND = """
import sys
sys.modules["__main__"]._classify = lambda value: {
    "error": "python_grader_\\udc80[red]x",
    "detail": "\\udcff [link=https://evil.example]click[/link] [/x] \\x1b]52;c;cHduZWQ=\\x07\\x1b[2J",
}
def grade(sample, item):
    return 1.0
"""
# The same forgery written straight to the reply pipe, before the worker's own reply.
FORGED_PIPE = """
import json, os, stat, struct
def grade(sample, item):
    body = json.dumps({"error": "python_grader_\\udc80", "detail": "[/x]"}).encode()
    for fd in range(3, 12):
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.write(fd, struct.pack(">I", len(body)) + body)
        except OSError:
            pass
    return 1.0
"""


@pytest.mark.parametrize("source", [FORGED_KIND, FORGED_PIPE], ids=["rewritten worker", "raw pipe"])
@pytest.mark.parametrize("mode", ["one text", "one json", "file text", "file json", "file output"])
def test_a_forged_reply_is_a_counted_crash_in_every_output(tmp_path, source, mode):
    """d6643b4: an error kind holding a lone surrogate crashed `rft grade` in json, text and
    --output modes. Now a reply is read as untrusted: an unknown kind is a python_grader_crash,
    and what text is kept is cut, escaped and made encodable."""
    grader = grader_file(tmp_path, source)
    if mode.startswith("one"):
        args = ["grade", str(grader), "--sample", "x", "--item", "{}"]
    else:
        args = ["grade", str(grader), *rows_and_samples(tmp_path, [{}, {}])]
    if mode == "file output":
        args += ["--output", str(tmp_path / "out.jsonl")]
    if mode.endswith("json"):
        args += ["--format", "json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.exception is None and "Traceback" not in result.output
    assert "\udc80" not in result.output and "\x1b" not in result.output
    assert "python_grader_crash" in result.output
    if mode.endswith("json"):
        document = json.loads(result.output[result.output.index("{") :])
        assert set(document["errors"]) == {"python_grader_crash"}
    if mode == "file output":
        lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line)["errors"] for line in lines] == [{"python_grader_crash": 1}] * 2


def test_a_forged_detail_is_cut_and_escaped(tmp_path):
    """A known kind keeps its detail, but as one printable line of at most 1,000 characters."""
    source = """
    import sys
    sys.modules["__main__"]._classify = lambda value: {
        "error": "python_grader_runtime_error",
        "detail": "\\udcff[bold]x[/bold]\\x1b[2J\\nreward: 1\\u202e" + "y" * 50_000,
    }
    def grade(sample, item):
        return 1.0
    """
    from rft_cli.graders import load_grader

    with load_grader(grader_file(tmp_path, source)) as grader:
        result = grader.grade("x", {})
    detail = result.details["python_grader_runtime_error"]
    assert result.errors == {"python_grader_runtime_error": 1}
    assert len(detail) < 1100 and detail.isprintable()
    assert detail.startswith("\\udcff[bold]x[/bold]\\x1b[2J\\x0areward: 1\\u202e")
    detail.encode("utf-8")


@pytest.mark.parametrize(
    "reply",
    [
        '{"value": 1.0, "extra": 1}',
        '{"value": true}',
        '{"value": "1.0"}',
        '{"value": NaN}',
        '{"value": 1e999}',
        '{"value": ' + "9" * 4000 + "}",
        '{"error": "python_grader_timeout"}',
        '{"error": ["python_grader_runtime_error"]}',
        '{"error": "python_grader_nan", "detail": {"nested": 1}, "more": 2}',
        "[1.0]",
        "{" * 100_000,
    ],
)
def test_every_forged_reply_shape_is_scored_zero(tmp_path, reply):
    """Whatever a worker writes, rft scores a number in [0, 1] or a known error kind."""
    source = f"""
    import os, stat, struct, sys
    def grade(sample, item):
        body = {reply!r}.encode()
        for fd in range(3, 12):
            try:
                if stat.S_ISFIFO(os.fstat(fd).st_mode):
                    os.write(fd, struct.pack(">I", len(body)) + body)
            except OSError:
                pass
        while True:
            pass
    """
    from rft_cli.graders import load_grader

    with load_grader(grader_file(tmp_path, source, timeout=5)) as grader:
        result = grader.grade("x", {})
    assert result.reward == 0.0 and len(result.errors) == 1
    kind = next(iter(result.errors))
    assert kind in {"python_grader_crash", "python_grader_out_of_range", "python_grader_nan"}


@pytest.mark.slow
def test_a_forged_reply_cannot_crash_training(tmp_path):
    """d6643b4: `rft train` died with a traceback writing metrics.jsonl when a reply's error kind
    held a lone surrogate. Now each such grade is a counted python_grader_crash and the run ends."""
    from rft_cli.run_folder.metrics import read_metrics

    rows = [{"messages": [{"role": "user", "content": f"{i}+1="}], "answer": "0"} for i in range(4)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    grader = grader_file(tmp_path, FORGED_KIND)
    config = {
        "model": {"tiny": "llama-test"},
        "data": {"train": str(tmp_path / "train.jsonl")},
        "grader": str(grader),
        "sft": {"enabled": False},
        "rl": {
            "steps": 1,
            "prompts_per_step": 4,
            "samples_per_prompt": 1,
            "mini_batch_size": 4,
            "ppo_epochs": 1,
            "max_new_tokens": 3,
            "max_prompt_length": 16,
            "max_grader_error_share": 1.0,
        },
        "seed": 0,
        "grader_check": {"enabled": False},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["train", str(tmp_path / "run.yaml"), "--output-dir", str(out), "--quiet"]
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert result.exit_code == 0, result.output
    rl = [r for r in read_metrics(out / "metrics.jsonl") if r["stage"] == "rl"]
    assert rl and rl[0]["grader_errors/python_grader_crash"] == 4
    assert not any("\\udc80" in key or "\udc80" in key for record in rl for key in record)


# --- 4. CPU time is bounded per call, idle time included --------------------------------------

# Leaves a thread spinning that ignores SIGXCPU (the kernel's CPU-limit signal).
SPINNER = """
import signal, threading
def grade(sample, item):
    signal.signal(signal.SIGXCPU, signal.SIG_IGN)
    def spin():
        while True:
            pass
    threading.Thread(target=spin, daemon=True).start()
    return 1.0
"""


@pytest.mark.slow
def test_a_spinning_thread_in_an_idle_worker_is_killed(tmp_path):
    """d6643b4: the idle worker burned 13 s of CPU in 20 s with timeout 1, and nothing counted
    it. Now rft counts each worker's CPU time from the end of its previous call, a watchdog kills
    an idle worker over `timeout`, and the next call gets a fresh one."""
    from rft_cli.graders import load_grader

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with load_grader(grader_file(tmp_path, SPINNER, timeout=1)) as grader:
        assert grader.grade("x", {}).reward == 1.0
        worker = grader.pool.idle[0]
        deadline = time.monotonic() + 20  # CPU time comes slowly on a busy machine
        while worker.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.process.poll() is not None, "the idle worker kept spinning"
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        assert used < 1 + 0.2 + 0.8  # its budget, the watchdog's period, and starting up
        assert grader.grade("y", {}).reward == 1.0  # a fresh worker


# --- 5. where a layer is missing, what is left still holds -------------------------------------

# Each row names one attack; the grader returns 1.0 when the attack did what it wanted.
ATTACKS = """
import os, stat, time
def grade(sample, item):
    attack, outside = item["attack"], item["outside"]
    if attack == "dir_fd write":
        folder = os.open(outside, os.O_RDONLY | os.O_DIRECTORY)
        os.close(os.open("dirfd.txt", os.O_WRONLY | os.O_CREAT, dir_fd=folder))
    elif attack == "dir_fd past a deeper cwd":
        here = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        os.makedirs("a/b", exist_ok=True)
        os.chdir("a/b")
        os.close(os.open("../escaped.txt", os.O_WRONLY | os.O_CREAT, dir_fd=here))
    elif attack == "sqlite file":
        import sqlite3
        sqlite3.connect(os.path.join(outside, "db.sqlite")).execute("create table t (x)")
    elif attack == "sqlite attach":
        import sqlite3
        db = sqlite3.connect(":memory:")
        db.execute(f"attach database '{outside}/attached.sqlite' as a")
        db.execute("create table a.t (x)")
    elif attack == "environ of other processes":
        proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
        for pid in os.listdir("/proc"):
            try:
                fd = os.open(f"{pid}/environ", os.O_RDONLY, dir_fd=proc)
                if b"RFT_TEST_SECRET" in os.read(fd, 1 << 20):
                    return 1.0
            except OSError:
                pass
        return 0.0
    elif attack == "shell":
        import _posixsubprocess
        script = f"touch {outside}/shell.txt".encode()
        read, write = os.pipe()
        pid = _posixsubprocess.fork_exec(
            [b"/bin/sh", b"-c", script], [b"/bin/sh"], True, (write,), None, None, -1, -1, -1,
            -1, -1, -1, read, write, False, False, -1, None, None, None, -1, None, False)
        return float(os.waitpid(pid, 0)[1] == 0)  # the shell ran and touched its file
    elif attack == "setxattr":
        os.setxattr(outside, "user.rft", b"x")
    elif attack == "chmod through a read-only fd":
        os.chmod(os.open(os.path.join(outside, "kept.txt"), os.O_RDONLY), 0o777)
    return 1.0
"""
ATTACK_NAMES = [
    "dir_fd write",
    "dir_fd past a deeper cwd",
    "sqlite file",
    "sqlite attach",
    "environ of other processes",
    "shell",
    "setxattr",
    "chmod through a read-only fd",
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "deny,disabled",
    [
        ("", ()),
        ("", ("audit",)),
        (NO_LANDLOCK, ()),
        (NO_LANDLOCK, ("audit",)),
        (f"{NO_LANDLOCK},{NO_NAMESPACES}", ()),
        (f"{NO_LANDLOCK},{NO_NAMESPACES}", ("seccomp", "no-capabilities")),
    ],
    ids=[
        "every layer",
        "kernel layers",
        "no Landlock",
        "no Landlock, kernel layers",
        "no Landlock nor namespaces",
        "the audit hook alone",
    ],
)
def test_file_and_process_attacks_hold_where_a_layer_is_missing(tmp_path, deny, disabled):
    """d6643b4, where Landlock was missing: dir_fd and sqlite wrote outside the worker's folder,
    other processes' environments were read under /proc, and a shell ran; with every layer on,
    os.setxattr wrote outside. Now each is refused on every kernel simulated here: by a read-only
    view of the machine and a /proc of the worker's own, by seccomp, and at the last by the audit
    hook (which resolves fds and dir_fds, pins the working directory and refuses sqlite where no
    kernel layer confines files). "Kernel layers" leaves the hook out, as native code that gets
    around it would."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept.txt").write_text("x")
    (outside / "kept.txt").chmod(0o600)
    items = [{"attack": name, "outside": str(outside)} for name in ATTACK_NAMES]
    grader = grader_file(tmp_path, ATTACKS, timeout=5)
    results = tmp_path / "results.jsonl"
    args = ["grade", str(grader), *rows_and_samples(tmp_path, items), "--output", str(results)]
    env_secret = {"RFT_TEST_SECRET": "hunter2"}
    os.environ.update(env_secret)
    try:
        result = rft(tmp_path, args, deny=deny, disabled=disabled)
    finally:
        os.environ.pop("RFT_TEST_SECRET")
    assert result.returncode == 0, result.stderr
    rewards = [json.loads(line)["reward"] for line in results.read_text().splitlines()]
    assert dict(zip(ATTACK_NAMES, rewards, strict=True)) == dict.fromkeys(ATTACK_NAMES, 0.0)
    assert sorted(p.name for p in outside.iterdir()) == ["kept.txt"]
    assert not (tmp_path / "tmp" / "escaped.txt").exists()
    assert os.listxattr(outside) == [] and (outside / "kept.txt").stat().st_mode & 0o777 == 0o600
    assert settle(tmp_path, 1.0) == []
    # The simulated kernel took: files are confined by a kernel layer unless namespaces are gone.
    unconfined = "no kernel layer confines files" in result.stderr
    assert unconfined == (NO_NAMESPACES in deny), result.stderr
