"""Plain progress lines for logs: where stderr is no terminal (a CI job, `nohup`), Rich's spinner
and bars show nothing, so a long run would stay silent for minutes.

    ticker = Ticker(progress_interval())
    ticker.start("loading the model")
    ticker.update("rl step 3/10  41.2 s/step  reward 0.5")   # printed when `interval` has passed
    ticker.stop()

Each line is `[elapsed] status`; while nothing new happens (a long step, a model loading) the
last status is printed again every `interval` seconds, marked `(still running)`. An interval of
0 prints every update and repeats nothing.
"""

from __future__ import annotations

import os
import threading
import time

from rft_cli.cli import render
from rft_cli.errors import ConfigError

INTERVAL_ENV = "RFT_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0


def progress_interval() -> float:
    """Seconds between plain progress lines: $RFT_PROGRESS_INTERVAL, else 30."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise ConfigError(
            f"{INTERVAL_ENV}={raw!r}: not a number of seconds; set it to e.g. 30, or unset it"
        )
    return value


def format_seconds(seconds: float) -> str:
    """`42s`, `3m05s`, `1h02m`."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Ticker:
    """Prints a status line on stderr at most every `interval` seconds, and repeats the last one
    every `interval` seconds while no update comes."""

    def __init__(self, interval: float):
        self.interval = interval
        self.started = self.last_line = time.monotonic()
        self.text = ""
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, text: str) -> None:
        """Print `text` now and start repeating it while nothing new happens."""
        self.update(text, now=True)
        if self.interval <= 0:
            return
        self._thread = threading.Thread(target=self._beat, name="rft-progress", daemon=True)
        self._thread.start()

    def update(self, text: str, now: bool = False) -> None:
        """Make `text` the status; print it when `now` or when `interval` has passed since the last line."""
        with self._lock:
            self.text = text
            if now or time.monotonic() - self.last_line >= self.interval:
                self._print("")

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        while not self._stopped.wait(self.interval):
            with self._lock:
                if time.monotonic() - self.last_line >= self.interval:
                    self._print(" (still running)")

    def _print(self, suffix: str) -> None:
        now = time.monotonic()
        self.last_line = now
        line = f"[{format_seconds(now - self.started)}] {self.text}{suffix}"
        render.stderr.print(line, markup=False, highlight=False)
