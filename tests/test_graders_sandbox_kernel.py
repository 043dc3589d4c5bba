"""The kernel layers of the python-grader sandbox on their own, without the audit hook.

Each check runs in a fresh `python -I` process that applies only rlimits, the network and mount
namespaces, a read-only view of the machine, Landlock, the capability drop and the seccomp filter
(each can be left out), then tries what a hostile grader would. Checks skip (saying why) where the
kernel or the container does not offer that layer; the audit-hook layer is covered in
test_graders_python.py, and whole attacks through `rft grade` in test_graders_sandbox_hostile.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from rft_cli.graders.sandbox import minimal_env

LAYERS_SCRIPT = str(
    Path(__file__).resolve().parents[1] / "rft_cli" / "graders" / "_sandbox_layers.py"
)

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="netns and Landlock are Linux features"
)

PROBE = textwrap.dedent(
    """
    import importlib.util, json, os, socket, subprocess, sys
    spec = importlib.util.spec_from_file_location("layers", sys.argv[1])
    L = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(L)
    outside, port, skip = sys.argv[2], int(sys.argv[3]), set(sys.argv[4].split(","))
    namespaces = L._unshare(skip | {"pidns"})
    layers = [n for n in namespaces if n != "mountns"] + L._apply_rlimits(512)
    if "mountns" in namespaces:
        layers += L._confine_mounts(os.getcwd(), False, skip)
    for name, apply in (("landlock", lambda: L._landlock(os.getcwd())),
                        ("no-capabilities", L._drop_capabilities), ("seccomp", L._seccomp)):
        if name not in skip:
            layers += [x for x in [apply()] if x]
    def attempt(fn):
        try:
            fn()
            return "allowed"
        except (OSError, ImportError) as exc:  # ImportError: a system Python without numpy
            return type(exc).__name__
    def fork():
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    report = {
        "layers": layers,
        "write_outside": attempt(lambda: open(outside, "w").write("x")),
        "write_inside": attempt(lambda: open("inside.txt", "w").write("x")),
        "parent_environ": attempt(lambda: open(f"/proc/{os.getppid()}/environ", "rb").read()),
        "tcp_connect": attempt(lambda: socket.create_connection(("127.0.0.1", port), timeout=1)),
        "exec": attempt(lambda: subprocess.run(["/bin/true"], check=True)),
        "fork": attempt(fork),
        "setxattr": attempt(lambda: os.setxattr(os.path.dirname(outside), "user.rft", b"x")),
        "signal_parent": attempt(lambda: os.kill(os.getppid(), 0)),
        "numpy": attempt(lambda: __import__("numpy")),
    }
    print(json.dumps(report))
    """
)


def run_probe(tmp_path_factory, skip: str = "none", user: int | None = None) -> dict:
    """Apply the layers not in `skip` (comma-separated) in a fresh process and try each attack;
    as `user` (not root), with the system's Python (see `_unprivileged_python`)."""
    if user is None:
        workdir = tmp_path_factory.mktemp("worker")
        outside = tmp_path_factory.mktemp("outside") / "pwned.txt"
        return _probe(sys.executable, LAYERS_SCRIPT, workdir, outside, skip, None)
    # pytest's folders are 0700 and root's: the user gets a folder it can reach, holding the two
    # scripts (readable), its own working folder, and one it could write to but for the sandbox.
    base = Path(tempfile.mkdtemp(prefix="rft-unprivileged-"))
    try:
        base.chmod(0o755)
        layers = base / "_sandbox_layers.py"
        shutil.copyfile(LAYERS_SCRIPT, layers)
        layers.chmod(0o644)
        workdir, outside = base / "worker", base / "outside" / "pwned.txt"
        for folder in (workdir, outside.parent):
            folder.mkdir()
            os.chown(folder, user, user)
        return _probe(_unprivileged_python(user), str(layers), workdir, outside, skip, user)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _probe(
    python: str, layers: str, workdir: Path, outside: Path, skip: str, user: int | None
) -> dict:
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    script = workdir / "probe.py"
    script.write_text(PROBE)
    script.chmod(0o644)
    proc = subprocess.run(
        [python, "-I", str(script), layers, str(outside), str(server.getsockname()[1]), skip],
        cwd=workdir,
        env={**minimal_env(str(workdir)), "RFT_TEST_FAKE_SECRET": "x"},
        capture_output=True,
        text=True,
        timeout=60,
        user=user,
        group=user,
        extra_groups=[] if user is not None else None,
    )
    server.setblocking(False)
    try:
        server.accept()
        connected = True
    except BlockingIOError:
        connected = False
    server.close()
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["connected"], result["outside_exists"] = connected, outside.exists()
    result["xattrs"] = os.listxattr(outside.parent)
    return result


SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3")


def _unprivileged_python(user: int) -> str:
    """A Python the user can run: the layers script and the probe need only the standard library,
    so the system's Python serves where rft's own lives under a folder the user cannot enter
    (a virtual environment under /root). Skips only where there is no such user or no Python
    3.10+ it may run."""
    import pwd

    try:
        pwd.getpwuid(user)
    except KeyError:
        pytest.skip(f"no user {user} on this machine")
    for python in (sys.executable, *SYSTEM_PYTHONS):
        try:
            check = subprocess.run(
                [python, "-I", "-c", "import sys; sys.exit(sys.version_info < (3, 10))"],
                user=user,
                group=user,
                extra_groups=[],
                capture_output=True,
                cwd="/",
                timeout=30,
            )
        except OSError:  # missing, or the user may not run it (rft's own, under /root)
            continue
        if check.returncode == 0:
            return python
    pytest.skip(f"no Python 3.10+ that user {user} can run ({', '.join(SYSTEM_PYTHONS)})")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return run_probe(tmp_path_factory)


def _need(report: dict, prefix: str) -> None:
    if not any(layer.startswith(prefix) for layer in report["layers"]):
        pytest.skip(
            f"this kernel/container does not offer the {prefix} layer (layers: {report['layers']})"
        )


def test_landlock_confines_writes_exec_and_proc(report):
    _need(report, "landlock")
    assert report["write_outside"] != "allowed" and not report["outside_exists"]
    assert report["write_inside"] == "allowed"
    assert report["exec"] != "allowed"
    assert report["parent_environ"] != "allowed"
    assert report["numpy"] == "allowed"


def test_network_is_cut_by_a_kernel_layer(report):
    tcp_landlock = [
        x for x in report["layers"] if x.startswith("landlock(abi ") and int(x[12:-1]) >= 4
    ]
    if not tcp_landlock and not any(layer.startswith("netns") for layer in report["layers"]):
        pytest.skip(f"no kernel network layer here (layers: {report['layers']})")
    assert report["tcp_connect"] != "allowed" and not report["connected"]


def test_rlimits_apply(report):
    assert "RLIMIT_AS" in report["layers"]
    if os.geteuid() != 0:
        assert "RLIMIT_NPROC" in report["layers"]


def test_seccomp_alone_refuses_processes_signals_and_xattrs(tmp_path_factory):
    """Where only the seccomp filter holds: no fork (by any route), no exec, no signal to another
    process, no extended attribute written outside (Landlock does not cover xattrs)."""
    report = run_probe(tmp_path_factory, "landlock,readonly-fs,no-capabilities,mountns,netns")
    _need(report, "seccomp")
    for attack in ("fork", "exec", "setxattr", "signal_parent"):
        assert report[attack] == "PermissionError", (attack, report)
    assert report["xattrs"] == []
    assert report["write_inside"] == "allowed" and report["numpy"] == "allowed"


@pytest.mark.parametrize("how", ["mount_setattr", "remount"])
def test_a_read_only_view_confines_files_without_landlock(tmp_path_factory, how):
    """Where Landlock is missing but a mount namespace is not: every mount is read-only except the
    worker's folder, by mount_setattr (Linux >= 5.12) or one remount per mount point (older)."""
    skip = "landlock,seccomp,no-capabilities" + (",mount_setattr" if how == "remount" else "")
    report = run_probe(tmp_path_factory, skip)
    _need(report, "readonly-fs")
    assert report["write_outside"] == "OSError" and not report["outside_exists"]  # EROFS
    assert report["setxattr"] == "OSError" and report["xattrs"] == []
    assert report["write_inside"] == "allowed" and report["numpy"] == "allowed"


@pytest.mark.skipif(os.geteuid() != 0, reason="the default probe already runs unprivileged")
def test_an_unprivileged_user_gets_the_kernel_layers(tmp_path_factory):
    """A user's laptop: not root. RLIMIT_NPROC binds, seccomp and Landlock need no privilege, and
    user namespaces (where the distribution allows them) give the network and mount layers.

    It skipped everywhere it ran as root: user 65534 could not run the virtual environment's
    Python (under /root, mode 700) nor enter pytest's folders (0700). It now runs the system's
    Python in a folder the user can reach."""
    report = run_probe(tmp_path_factory, user=65534)
    assert "RLIMIT_NPROC" in report["layers"]
    assert report["fork"] != "allowed" and report["exec"] != "allowed"
    assert report["write_inside"] == "allowed" and not report["outside_exists"]
    assert report["xattrs"] == []
