"""The writer's floor: the rows a job run wrote, read back and cached, written again by the job's
own writer (jobs/writer.py: shuffle by partition, sort by Hilbert key, Sedona's GeoParquet) and
by Sedona's writer alone (no shuffle, no sort). What is left of a run's time beyond these is the
job's own per-row cost. The session compiles as a job run of the largest output's size would
(jobs/config.jit_options: C1 alone below [spark] c2_from_field_years rows, C1 and C2 from there).

    python bench/writer.py OUTPUT... [--workers N]   one JSON line per output folder
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def floor(spark, folder: str, scratch: Path) -> dict:
    rows = spark.read.format("geoparquet").option("basePath", folder).load(folder).persist()
    n = rows.count()
    crs = output_crs(folder)
    result = {"output": folder, "rows": n}
    for name, write in (
        ("job_writer_s", lambda target: job_write(spark, rows, crs, target)),
        ("sedona_alone_s", lambda target: sedona_write(rows, crs, target)),
    ):
        target = scratch / name
        t0 = time.perf_counter()
        write(str(target))
        result[name] = round(time.perf_counter() - t0, 2)
        shutil.rmtree(target, ignore_errors=True)
    rows.unpersist()
    return result


def output_crs(folder: str) -> str:
    """The PROJJSON CRS the output's GeoParquet metadata states."""
    import pyarrow.parquet as pq

    geo = json.loads(
        pq.read_schema(next(Path(folder).glob("time=*/label=*/*.parquet"))).metadata[b"geo"]
    )
    return json.dumps(geo["columns"][geo["primary_column"]]["crs"])


def job_write(spark, rows, crs: str, target: str):
    from aef_zonal import writer

    out = writer.Output(spark, target, "overwrite")
    out.write(rows, crs)
    out.commit({})


def sedona_write(rows, crs: str, target: str):
    from aef_zonal import writer

    writer.geoparquet(rows.write, crs).mode("overwrite").save(target)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("outputs", nargs="+")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    a = p.parse_args()

    from aef_zonal import filesystem, session

    rows = max(filesystem.local_rows(folder) or 0 for folder in a.outputs)
    spark, _ = session.spark_session(f"local[{a.workers}]", False, None, rows)
    # partition values as written (strings), not inferred dates
    spark.conf.set("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
    with tempfile.TemporaryDirectory(dir=ROOT / "out") as scratch:
        for folder in a.outputs:
            print(json.dumps(floor(spark, str(Path(folder).resolve()), Path(scratch))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
