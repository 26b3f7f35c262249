"""The run report (_run.json) as the stages fill it, their timing, and the console summary."""

from __future__ import annotations

import contextlib
import sys
import time

from aef_zonal import dataset
from aef_zonal.progress import Progress


class Chain:
    """Runs the stages of a job in order: times each one, merges its part of the report, keeps
    the tables it cached so that they are released when the run ends.

    A stage is a function returning (result, report part); `chain(name, stage, *args)` returns
    the result: a DataFrame, or a record of the stage's table and the values later stages take
    from it, whose `cached` lists the tables it cached. `meter` (see jobs/progress.py) measures
    the stage's work for its progress line.
    """

    def __init__(self):
        self.sc = None  # set once Spark runs: from then on each stage shows its progress
        self.report: dict = {}
        self.seconds: dict[str, float] = {}
        self._cached = []
        self._t0 = time.perf_counter()

    def __call__(self, name: str, stage, *args, meter=None, **kwargs):
        with Progress(self.sc, name, meter) if self.sc else contextlib.nullcontext():
            result, part = stage(*args, **kwargs)
        self.report.update(part)
        self._cached.extend(getattr(result, "cached", ()))
        if getattr(result, "is_cached", False):
            self._cached.append(result)
        self.seconds[name] = round(time.perf_counter() - self._t0, 2)
        print(f"[aef-zonal] {name}: {self.seconds[name]} s", flush=True)
        self._t0 = time.perf_counter()
        return result

    def hold(self, kept):
        """`kept` (a table, or what else has `unpersist`; None: nothing) released with the run's
        tables."""
        if kept is not None:
            self._cached.append(kept)
        return kept

    def release(self):
        """Unpersist this run's tables: a long-lived session (notebooks, tests) keeps running."""
        for df in self._cached:
            df.unpersist()


def versions() -> dict:
    from importlib.metadata import version

    return {
        name: version(name)
        for name in ("aef-zonal", "pyspark", "apache-sedona", "zarr", "numpy", "numba", "obstore")
    } | {"python": sys.version.split()[0]}


def summary(report: dict, out: str) -> None:
    """What the run did, on the console."""
    print(
        f"[aef-zonal] wrote {report['rows']} rows to {out} in "
        f"{sum(report['seconds'].values()):.0f} s (report: {out}/{dataset.REPORT})"
    )
    print(
        f"  fields: {report['fields']} ({report['null_geometries']} null, "
        f"{report['empty_geometries']} empty, {report['repaired_geometries']} repaired geometries; "
        f"CRS {report['fields_crs']})"
    )
    print(
        f"  read: {report['chunk_reads']} chunks, {report['bytes_read'] / 1e6:,.0f} MB, "
        f"{report['requests']} requests"
    )
    for part, n in report["rows_per_partition"].items():
        print(f"  {part}: {n}")
    zero = report["rows_count_zero"]
    if zero:
        reasons = ", ".join(f"{n} ({why})" for why, n in sorted(zero.items()))
        if report["rows_without_pixels"] == "inline":
            print(f"  rows with count = 0: {reasons}")
        else:
            print(
                f"  {sum(zero.values())} field-years without a valid pixel, listed in "
                f"{out}/{dataset.WITHOUT_PIXELS}/: {reasons}"
            )
    if "pca" in report:
        print(f"  PCA {report['pca']}")
    if report["skipped_chunks"]:
        print(
            f"  INCOMPLETE: {len(report['skipped_chunks'])} undecodable chunk(s) skipped; "
            f"see {out}/{dataset.REPORT}",
            file=sys.stderr,
        )
