"""Progress of the reduce stage on the console, from accumulators the workers add to.

Workers report when a Spark task (a range of chunk tasks) finishes; between those reports the
line shows Spark's own task counts. On a terminal the line is redrawn in place; otherwise a log
line is printed every `log_every` seconds.
"""
from __future__ import annotations

import sys
import threading
import time


class Progress:
    def __init__(self, sc, reads_total: int, field_years_total: int, counters: dict,
                 stream=None, every: float = 2.0, log_every: float = 30.0):
        # sys.stderr when the line is drawn, not when this module was imported (a test's
        # captured stream is closed by then)
        self.sc, self.counters, self.stream = sc, counters, stream or sys.stderr
        self.reads_total, self.fy_total = reads_total, field_years_total
        self.tty = self.stream.isatty()
        self.every = every if self.tty else log_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.t0 = time.perf_counter()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._show(final=True)

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        reads = self.counters["chunk_reads"].value
        mb = self.counters["bytes"].value / 1e6
        fy = self.counters["field_years"].value
        tracker = self.sc.statusTracker()
        done = total = 0
        for sid in tracker.getActiveStageIds():
            info = tracker.getStageInfo(sid)
            if info:
                done, total = done + info.numCompletedTasks, total + info.numTasks
        left = ""
        if 0 < reads < self.reads_total:
            left = f", ~{elapsed * (self.reads_total - reads) / reads:.0f} s left"
        spark = f" [Spark tasks {done}/{total}]" if total else ""
        return (f"[aef-zonal] reduce: {reads}/{self.reads_total} chunk reads, "
                f"{min(fy, self.fy_total):,.0f}/{self.fy_total:,} field-years, {mb:,.0f} MB "
                f"({mb / max(elapsed, 1e-9):.1f} MB/s), {elapsed:.0f} s{left}{spark}")

    def _show(self, final: bool = False):
        text = self.line()
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _loop(self):
        while not self._stop.wait(self.every):
            self._show()
