"""A long stage's progress on the console: work done of its total, the rate, the time left.

Every stage of the chain gets a line (jobs/report.py); Spark's task counts of its running stages
measure its work. A stage with a `Meter` (the reduce stage: chunk reads, field-years and bytes
from accumulators the workers add to, which reach the driver as each Spark task ends) shows that
instead and takes the time left from it. On a terminal the line is redrawn in place; otherwise a
log line is printed every `log_every` seconds, so a stage shorter than that prints nothing.
"""

from __future__ import annotations

import sys
import threading
import time


class Progress:
    def __init__(
        self, sc, stage: str, meter=None, stream=None, every: float = 2.0, log_every: float = 30.0
    ):
        # sys.stderr when the line is drawn, not when this module was imported (a test's
        # captured stream is closed by then)
        self.sc, self.stage, self.meter, self.stream = sc, stage, meter, stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every if self.tty else log_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._shown = False
        self.t0 = time.perf_counter()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        if self.meter is not None:  # its final count; a stage without one ends with its time
            self._show(final=True)
        elif self._shown and self.tty:
            self.stream.write("\r\033[K")

    def tasks(self) -> tuple[int, int]:
        """Spark tasks done and in all, over the stages running now."""
        tracker = self.sc.statusTracker()
        done = total = 0
        for sid in tracker.getActiveStageIds():
            info = tracker.getStageInfo(sid)
            if info:
                done, total = done + info.numCompletedTasks, total + info.numTasks
        return done, total

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        done, total = self.tasks()
        spark = f"Spark tasks {done}/{total}" if total else ""
        if self.meter is not None:
            text, fraction = self.meter.text(elapsed), self.meter.fraction()
            spark = f" [{spark}]" if spark else ""
        else:
            text, fraction = spark or "planning", (done / total if total else 0.0)
            spark = ""
        left = f", ~{elapsed * (1 - fraction) / fraction:.0f} s left" if 0 < fraction < 1 else ""
        return f"[aef-zonal] {self.stage}: {text}, {elapsed:.0f} s{left}{spark}"

    def _show(self, final: bool = False):
        text = self.line()
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._shown = True

    def _loop(self):
        while not self._stop.wait(self.every):
            self._show()
