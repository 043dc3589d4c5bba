"""The kernel layers of the python-grader sandbox on their own, without the audit hook.

Each check runs in a fresh `python -I` process that applies only rlimits, the network namespace and
Landlock, then tries what a hostile grader would. Checks skip (saying why) where the kernel or the
container does not offer that layer; the audit-hook layer is covered in test_graders_python.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from rft_cli.graders.sandbox import WORKER_SCRIPT, minimal_env

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="netns and Landlock are Linux features")

PROBE = textwrap.dedent(
    """
    import json, os, socket, subprocess, sys
    sys.path.insert(0, os.path.dirname(sys.argv[1]))
    import _sandbox_worker as w
    outside, port = sys.argv[2], int(sys.argv[3])
    layers = w._apply_rlimits(512) + [x for x in (w._unshare_network(), w._landlock(os.getcwd())) if x]
    def attempt(fn):
        try:
            fn()
            return "allowed"
        except OSError as exc:
            return type(exc).__name__
    report = {
        "layers": layers,
        "write_outside": attempt(lambda: open(outside, "w").write("x")),
        "write_inside": attempt(lambda: open("inside.txt", "w").write("x")),
        "parent_environ": attempt(lambda: open(f"/proc/{os.getppid()}/environ", "rb").read()),
        "tcp_connect": attempt(lambda: socket.create_connection(("127.0.0.1", port), timeout=1)),
        "exec": attempt(lambda: subprocess.run(["/bin/true"], check=True)),
        "numpy": attempt(lambda: __import__("numpy")),
    }
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    import socket

    workdir = tmp_path_factory.mktemp("worker")
    outside = tmp_path_factory.mktemp("outside") / "pwned.txt"
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    script = workdir / "probe.py"
    script.write_text(PROBE)
    proc = subprocess.run(
        [sys.executable, "-I", str(script), WORKER_SCRIPT, str(outside), str(server.getsockname()[1])],
        cwd=workdir, env={**minimal_env(str(workdir)), "RFT_TEST_FAKE_SECRET": "x"}, capture_output=True, text=True, timeout=60,
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
    return result


def _need(report: dict, prefix: str) -> None:
    if not any(layer.startswith(prefix) for layer in report["layers"]):
        pytest.skip(f"this kernel/container does not offer the {prefix} layer (layers: {report['layers']})")


def test_landlock_confines_writes_exec_and_proc(report):
    _need(report, "landlock")
    assert report["write_outside"] != "allowed" and not report["outside_exists"]
    assert report["write_inside"] == "allowed"
    assert report["exec"] != "allowed"
    assert report["parent_environ"] != "allowed"
    assert report["numpy"] == "allowed"


def test_network_is_cut_by_a_kernel_layer(report):
    tcp_landlock = [x for x in report["layers"] if x.startswith("landlock(abi ") and int(x[12:-1]) >= 4]
    if not tcp_landlock and not any(layer.startswith("netns") for layer in report["layers"]):
        pytest.skip(f"no kernel network layer here (layers: {report['layers']})")
    assert report["tcp_connect"] != "allowed" and not report["connected"]


def test_rlimits_apply(report):
    assert "RLIMIT_AS" in report["layers"]
    if os.geteuid() != 0:
        assert "RLIMIT_NPROC" in report["layers"]
