"""The thread governor: torch computes with the cores other processes leave free (rft_cli/threads.py)."""

from __future__ import annotations

import pytest

from rft_cli import threads


class FakeMachine:
    """/proc/stat and this process's CPU clock, advanced by hand."""

    def __init__(self, tmp_path, monkeypatch):
        self.stat = tmp_path / "stat"
        self.busy_ticks = 0
        self.nice_ticks = 0
        self.clock = 100.0
        self.own_cpu = 0.0
        self.set_to: list[int] = []
        monkeypatch.setattr(threads, "_STAT", self.stat)
        monkeypatch.setattr(threads.os, "sysconf", lambda name: 100)
        monkeypatch.setattr(threads.time, "monotonic", lambda: self.clock)
        monkeypatch.setattr(threads.time, "process_time", lambda: self.own_cpu)
        monkeypatch.setattr(threads, "_set_torch_threads", self.set_to.append)
        self.write()

    def write(self) -> None:
        # user nice system idle iowait irq softirq steal guest guest_nice
        self.stat.write_text(
            f"cpu  {self.busy_ticks} {self.nice_ticks} 0 5000 7 0 0 0 0 0\ncpu0 1 2 3\n"
        )

    def run(
        self, seconds: float, others_cores: float, own_cores: float, niced_cores: float = 0.0
    ) -> None:
        self.clock += seconds
        self.own_cpu += own_cores * seconds
        self.busy_ticks += round((others_cores + own_cores) * seconds * 100)
        self.nice_ticks += round(niced_cores * seconds * 100)
        self.write()


@pytest.mark.parametrize(
    "cores,others,expected",
    [(2, 0.0, 2), (2, 0.5, 2), (2, 0.7, 1), (2, 1.0, 1), (2, 6.0, 1), (8, 2.4, 6), (1, 0.0, 1)],
)
def test_threads_are_the_cores_others_leave(cores, others, expected):
    assert threads.threads_for(cores, others) == expected


def test_a_busy_core_takes_a_thread_away_and_gives_it_back(tmp_path, monkeypatch):
    machine = FakeMachine(tmp_path, monkeypatch)
    governor = threads.ThreadGovernor(cores=2, every_s=20)
    machine.run(20, others_cores=1.0, own_cores=1.0)  # another program keeps one core busy
    assert governor.tick() == 1
    machine.run(5, others_cores=0.0, own_cores=1.0)
    assert governor.tick() is None  # too soon to decide again
    machine.run(20, others_cores=0.0, own_cores=2.0)  # it stopped: our own two threads are no load
    assert governor.tick() == 2
    assert machine.set_to == [1, 2]
    assert [threads for _, threads in governor.decisions] == [1, 2]


def test_a_niced_process_takes_no_thread_away(tmp_path, monkeypatch):
    """`nice -n 19 make` yields its core to rft's threads: only normal-priority load counts."""
    machine = FakeMachine(tmp_path, monkeypatch)
    governor = threads.ThreadGovernor(cores=2, every_s=1)
    machine.run(10, others_cores=0.0, own_cores=1.0, niced_cores=1.0)
    assert governor.tick() == 2
    machine.run(10, others_cores=1.0, own_cores=1.0, niced_cores=1.0)
    assert governor.tick() == 1


def test_own_cpu_time_is_not_counted_as_load(tmp_path, monkeypatch):
    machine = FakeMachine(tmp_path, monkeypatch)
    governor = threads.ThreadGovernor(cores=2, every_s=1)
    machine.run(10, others_cores=0.0, own_cores=2.0)
    assert governor.tick() == 2
    assert machine.set_to == [2]


def test_the_user_choice_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert not threads.ThreadGovernor.wanted()


def test_no_proc_stat_means_no_governor(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_STAT", tmp_path / "missing")
    assert not threads.ThreadGovernor.wanted()


def test_each_launched_process_counts_its_share(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert threads.usable_cores() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert threads.usable_cores() == 1
