"""The python grader's sandbox: results, every failure kind, and hostile code contained and scored 0."""

from __future__ import annotations

import os
import pickle
import socket
import time

import pytest

from rft_cli.errors import GraderError
from rft_cli.graders import build_grader


def python_grader(body: str, header: str = "", **settings):
    source = f"{header}\ndef grade(sample, item):\n" + "".join(
        f"    {line}\n" for line in body.splitlines()
    )
    return build_grader({"type": "python", "source": source, "timeout": 2, **settings})


@pytest.fixture
def grader_factory():
    made = []

    def make(body: str, header: str = "", **settings):
        grader = python_grader(body, header, **settings)
        made.append(grader)
        return grader

    yield make
    for grader in made:
        grader.close()


def test_python_grader_sees_sample_and_item(grader_factory):
    grader = grader_factory(
        "return 1.0 if sample['output_text'].strip() == item['answer'] else 0.25"
    )
    assert grader.grade(" 42 ", {"answer": "42"}).reward == 1.0
    assert grader.grade("41", {"answer": "42"}).reward == 0.25


def test_python_grader_gets_output_json(grader_factory):
    grader = grader_factory("return 1.0 if (sample['output_json'] or {}).get('ok') else 0.0")
    assert grader.grade('{"ok": true}', {}).reward == 1.0
    assert grader.grade("not json", {}).reward == 0.0


def test_batch_keeps_order_across_workers(grader_factory):
    grader = grader_factory("return int(sample['output_text']) / 100", workers=3)
    samples = [str(i) for i in range(40)]
    results = grader.grade_batch(samples, [{}] * 40)
    assert [r.reward for r in results] == [i / 100 for i in range(40)]


@pytest.mark.parametrize(
    "body,kind",
    [
        ("return 1 / 0", "python_grader_runtime_error"),
        ("raise SystemExit(0)", "python_grader_runtime_error"),
        ("return 'high'", "python_grader_not_a_number"),
        ("return None", "python_grader_not_a_number"),
        ("return True", "python_grader_not_a_number"),
        ("return float('nan')", "python_grader_nan"),
        ("return 1.5", "python_grader_out_of_range"),
        ("return -0.1", "python_grader_out_of_range"),
        ("import os\nos._exit(3)", "python_grader_crash"),
        ("import faulthandler\nfaulthandler._read_null()", "python_grader_crash"),
    ],
)
def test_each_failure_kind_scores_zero_and_is_counted(grader_factory, body, kind):
    result = grader_factory(body).grade("x", {})
    assert result.reward == 0.0
    assert result.errors == {kind: 1}
    assert result.details[kind]


def test_numpy_numbers_are_numbers(grader_factory):
    grader = grader_factory("return np.float32(0.5)", header="import numpy as np")
    assert grader.grade("x", {}).reward == 0.5


def test_a_dead_worker_is_replaced(grader_factory):
    grader = grader_factory(
        "if item.get('die'):\n    os._exit(1)\nreturn 1.0", header="import os", workers=1
    )
    rewards = [
        r.reward
        for r in grader.grade_batch(["a", "b", "c", "d"], [{}, {"die": True}, {}, {"die": True}])
    ]
    assert rewards == [1.0, 0.0, 1.0, 0.0]
    assert grader.grade("e", {}).reward == 1.0


def test_error_while_loading_is_reported_per_call(grader_factory):
    grader = grader_factory("return 1.0", header="raise RuntimeError('bad import')")
    result = grader.grade("x", {})
    assert result.errors == {"python_grader_runtime_error": 1}
    assert "bad import" in result.details["python_grader_runtime_error"]


@pytest.mark.parametrize(
    "source,message",
    [
        ("def grade(sample, item)\n    return 1", "source: syntax error at line 1"),
        ("def score(sample, item):\n    return 1", "defines no top-level function grade"),
        ("def grade(sample):\n    return 1", "grade() must take exactly two arguments"),
        (
            "def grade(sample, item, extra):\n    return 1",
            "grade() must take exactly two arguments",
        ),
    ],
)
def test_bad_source_is_a_grader_error(source, message):
    with pytest.raises(GraderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_grader({"type": "python", "source": source})


def test_python_grader_pickles_without_its_workers(grader_factory):
    grader = grader_factory("return 0.75")
    assert grader.grade("x", {}).reward == 0.75
    clone = pickle.loads(pickle.dumps(grader))
    try:
        assert clone.grade("x", {}).reward == 0.75
    finally:
        clone.close()


# --- hostile code: each contained, scored 0 with the right kind, and the caller unharmed ----------


def test_infinite_loop_times_out(grader_factory):
    grader = grader_factory(
        "while True:\n    pass", timeout=0.3
    )  # the call's limit; start has its own
    started = time.monotonic()
    result = grader.grade("x", {})
    assert time.monotonic() - started < 5
    assert result.reward == 0.0 and result.errors == {"python_grader_timeout": 1}


def test_sleeping_grader_times_out(grader_factory):
    grader = grader_factory("time.sleep(30)\nreturn 1.0", header="import time", timeout=0.3)
    assert grader.grade("x", {}).errors == {"python_grader_timeout": 1}


def test_memory_bomb_is_contained(grader_factory):
    grader = grader_factory(
        "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))", memory_mb=256
    )
    result = grader.grade("x", {})
    assert result.reward == 0.0
    assert (
        set(result.errors) <= {"python_grader_memory_error", "python_grader_crash"}
        and result.errors
    )


def test_os_system_is_refused(grader_factory, tmp_path):
    marker = tmp_path / "pwned"
    grader = grader_factory(f"return float(os.system('touch {marker}') == 0)", header="import os")
    result = grader.grade("x", {})
    assert result.reward == 0.0 and result.errors == {"python_grader_runtime_error": 1}
    assert not marker.exists()


def test_subprocess_and_fork_are_refused(grader_factory):
    grader = grader_factory("import subprocess\nsubprocess.run(['true'])\nreturn 1.0")
    assert grader.grade("x", {}).errors == {"python_grader_runtime_error": 1}
    forker = grader_factory("import os\nos.fork()\nreturn 1.0")
    assert forker.grade("x", {}).errors == {"python_grader_runtime_error": 1}


def test_socket_connection_is_refused(grader_factory):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    grader = grader_factory(
        f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nreturn 1.0"
    )
    result = grader.grade("x", {})
    server.setblocking(False)
    with pytest.raises(BlockingIOError):  # nothing is waiting in the listen backlog
        server.accept()
    server.close()
    assert result.reward == 0.0 and result.errors == {"python_grader_runtime_error": 1}


def test_writing_outside_its_folder_is_refused(grader_factory, tmp_path):
    target = tmp_path / "outside.txt"
    grader = grader_factory(f"open({str(target)!r}, 'w').write('x')\nreturn 1.0")
    result = grader.grade("x", {})
    assert result.reward == 0.0 and result.errors == {"python_grader_runtime_error": 1}
    assert not target.exists()


def test_writing_inside_its_folder_works(grader_factory):
    grader = grader_factory(
        "open('scratch.txt', 'w').write('ok')\nreturn 1.0 if open('scratch.txt').read() == 'ok' else 0.0"
    )
    assert grader.grade("x", {}).reward == 1.0


def test_environment_secrets_are_not_inherited(grader_factory, monkeypatch):
    monkeypatch.setenv("RFT_TEST_FAKE_SECRET", "sk-fake-0123456789")
    grader = grader_factory(
        "return 1.0 if 'RFT_TEST_FAKE_SECRET' in os.environ or 'sk-fake' in repr(os.environ) else 0.5",
        header="import os",
    )
    assert grader.grade("x", {}).reward == 0.5


def test_parent_environment_cannot_be_read_through_proc(grader_factory, monkeypatch):
    monkeypatch.setenv("RFT_TEST_FAKE_SECRET", "sk-fake-0123456789")
    grader = grader_factory(
        "data = open(f'/proc/{os.getppid()}/environ', 'rb').read()\nreturn 1.0 if b'sk-fake' in data else 0.5",
        header="import os",
    )
    result = grader.grade("x", {})
    assert result.reward == 0.0 and result.errors == {"python_grader_runtime_error": 1}


def test_killing_its_own_worker_is_contained(grader_factory):
    grader = grader_factory("os.kill(os.getpid(), signal.SIGKILL)", header="import os, signal")
    result = grader.grade("x", {})
    assert result.reward == 0.0
    assert (
        set(result.errors) <= {"python_grader_runtime_error", "python_grader_crash"}
        and result.errors
    )


def test_killing_the_parent_is_refused(grader_factory):
    grader = grader_factory(
        "os.kill(os.getppid(), signal.SIGTERM)\nreturn 1.0", header="import os, signal"
    )
    assert grader.grade("x", {}).errors == {"python_grader_runtime_error": 1}
    assert os.getpid()  # still here


def test_sandbox_reports_its_layers(grader_factory):
    grader = grader_factory("return 1.0")
    grader.grade("x", {})
    layers = grader.sandbox_layers()
    assert "audit" in layers and "RLIMIT_AS" in layers


def test_item_fields_are_read_from_the_source():
    source = "def grade(s, it):\n    a = it['answer']\n    b = it.get('hint')\n    c = it.get('opt', 0)\n    return 1.0"
    assert build_grader({"type": "python", "source": source}).item_fields() == {"answer"}


def test_dying_while_loading_fails_fast_afterwards(grader_factory):
    grader = grader_factory("return 1.0", header="import os\nos._exit(1)")
    first = grader.grade("x", {})
    assert first.reward == 0.0 and first.errors == {"python_grader_crash": 1}
    started = time.monotonic()
    assert [r.errors for r in grader.grade_batch(["a", "b"], [{}, {}])] == [
        {"python_grader_crash": 1}
    ] * 2
    assert time.monotonic() - started < 0.5


def test_a_slow_sample_does_not_hold_up_the_batch(grader_factory):
    grader = grader_factory(
        "if item.get('slow'):\n    time.sleep(30)\nreturn 1.0",
        header="import time",
        timeout=1,
        workers=2,
    )
    grader.grade("warm", {})
    started = time.monotonic()
    results = grader.grade_batch(["a", "b", "c", "d"], [{"slow": True}, {}, {}, {}])
    assert [r.reward for r in results] == [0.0, 1.0, 1.0, 1.0]
    assert results[0].errors == {"python_grader_timeout": 1}
    assert time.monotonic() - started < 3


def test_module_level_import_of_a_missing_package_is_a_build_error_with_the_install_line():
    from rft_cli.errors import GraderError
    from rft_cli.graders import build_grader
    from rft_cli.graders.python_grader import install_hint

    source = "import numpy\nfrom rft_no_such_pkg_xyz.metrics import f1_score\n\ndef grade(sample, item):\n    return 1.0\n"
    with pytest.raises(
        GraderError,
        match=r"source: line 2 imports rft_no_such_pkg_xyz, but the package rft_no_such_pkg_xyz "
        r"\(import rft_no_such_pkg_xyz\) is not installed.*-m pip install rft_no_such_pkg_xyz",
    ):
        build_grader({"type": "python", "source": source})
    assert install_hint("sklearn.metrics").endswith("-m pip install scikit-learn`")


def test_import_inside_grade_that_fails_names_the_package():
    from rft_cli.graders import build_grader

    source = "def grade(sample, item):\n    import rft_no_such_pkg_xyz\n    return 1.0\n"
    with build_grader({"type": "python", "source": source}) as grader:
        result = grader.grade("x", {})
    detail = result.details["python_grader_runtime_error"]
    assert result.reward == 0.0 and "No module named 'rft_no_such_pkg_xyz'" in detail
    assert "pip install rft_no_such_pkg_xyz" in detail


def test_optional_import_in_a_try_block_still_builds():
    from rft_cli.graders import build_grader

    source = "try:\n    import rft_no_such_pkg_xyz\nexcept ImportError:\n    pass\n\ndef grade(sample, item):\n    return 1.0\n"
    with build_grader({"type": "python", "source": source}) as grader:
        assert grader.grade("x", {}).reward == 1.0


def test_a_worker_started_by_a_short_lived_thread_outlives_it(grader_factory):
    """Workers die with the thread that started them (their parent-death signal is per thread), so
    rft starts them from one long-lived thread: a grade from a thread that has ended still finds
    its worker alive (as a TRL reward function or a thread pool may call it)."""
    import threading

    grader = grader_factory("return 1.0", workers=1)
    results = []
    thread = threading.Thread(target=lambda: results.append(grader.grade("x", {}).reward))
    thread.start()
    thread.join()
    worker = grader.pool.idle[0]
    time.sleep(0.2)
    assert results == [1.0] and worker.process.poll() is None
    assert grader.grade("y", {}).reward == 1.0 and grader.pool.idle == [worker]
