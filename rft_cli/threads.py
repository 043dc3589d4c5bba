"""How many threads torch computes with on a CPU: the cores nobody else is using, not all of them.

torch starts one thread per core. On a laptop where another program keeps a core busy, two
threads that must meet at every matrix product wait on the one that was descheduled: a decode
step of SmolLM2-135M took 3.25 s with 2 threads against 0.57 s with 1 on 2 cores already loaded
(bench/threads.py measures it). So `ThreadGovernor` watches, between steps, how many cores other
processes kept busy (from /proc/stat, less this process's own CPU time) and sets torch's thread
count to the cores left, at least one; when the load goes away it takes the cores back.

It stays out of the way where the user chose (`OMP_NUM_THREADS` set), where a GPU computes, and
without /proc/stat (not Linux). Under `accelerate launch` each process counts its share.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# How often the thread count may change: often enough to follow a program that starts, rarely
# enough that one busy second (a grader, a save) does not flip it back and forth.
DECIDE_EVERY_S = 20.0
_STAT = Path("/proc/stat")


def usable_cores() -> int:
    """The cores this process may run on, divided among the processes of one launch on a machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(cores // max(local, 1), 1)


def _busy_cpu_seconds() -> float | None:
    """CPU-seconds every core has spent busy at normal priority since boot (user, system, irq,
    softirq, steal). Niced time is left out: a process under `nice` yields its core to ours, so it
    takes no thread away (a background build or test run under `nice -n 19` leaves rft both cores)."""
    try:
        fields = _STAT.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest time is already in user and nice)
    ticks = [int(x) for x in fields[1:9]] + [0] * (9 - len(fields))
    busy = ticks[0] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
    return busy / os.sysconf("SC_CLK_TCK")


def threads_for(cores: int, others_busy: float) -> int:
    """The thread count for `cores` usable cores while other processes keep `others_busy` of them
    busy: the cores left, rounding a core that is mostly busy (over 60%) as busy, at least one.

    >>> threads_for(2, 0.05), threads_for(2, 0.9), threads_for(2, 3.5), threads_for(8, 2.4)
    (2, 1, 1, 6)
    """
    taken = int(others_busy + 0.4)
    return min(max(cores - taken, 1), cores)


class ThreadGovernor:
    """Sets torch's thread count from the load other processes put on the machine; `tick()` between steps."""

    def __init__(self, cores: int | None = None, every_s: float = DECIDE_EVERY_S):
        self.cores = cores or usable_cores()
        self.every_s = every_s
        self.threads: int | None = None
        # (cores others kept busy, threads chosen), for tests and logs
        self.decisions: list[tuple[float, int]] = []
        self._mark = self._read()

    @staticmethod
    def wanted() -> bool:
        """Whether rft should choose the thread count (the user did not, and no GPU computes)."""
        if os.environ.get("OMP_NUM_THREADS"):
            return False
        import torch

        return not torch.cuda.is_available() and _busy_cpu_seconds() is not None

    def _read(self) -> tuple[float, float | None, float]:
        return time.monotonic(), _busy_cpu_seconds(), time.process_time()

    def start(self, sample_s: float = 0.3) -> int:
        """Measure the load for `sample_s` while idle, then set the first thread count."""
        self._mark = self._read()
        time.sleep(sample_s)
        return self.tick(force=True) or self.cores

    def tick(self, force: bool = False) -> int | None:
        """Decide again when `every_s` has passed since the last decision; returns the count set."""
        if not force and time.monotonic() - self._mark[0] < self.every_s:
            return None
        now = self._read()
        elapsed = now[0] - self._mark[0]
        if elapsed <= 0:
            return None
        if now[1] is None or self._mark[1] is None:
            return None
        others = max((now[1] - self._mark[1]) - (now[2] - self._mark[2]), 0.0) / elapsed
        self._mark = now
        threads = threads_for(self.cores, others)
        self.decisions.append((round(others, 2), threads))
        if threads != self.threads:
            _set_torch_threads(threads)
            self.threads = threads
        return threads


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


_governor: ThreadGovernor | None = None


def govern() -> ThreadGovernor | None:
    """Start choosing torch's thread count for this process (once; `rft train` and `rft eval` call it)."""
    global _governor
    if _governor is None and ThreadGovernor.wanted():
        _governor = ThreadGovernor()
        _governor.start()
    return _governor


def tick() -> None:
    """Between steps and batches: let the governor decide again (nothing where none was started)."""
    if _governor is not None:
        _governor.tick()
