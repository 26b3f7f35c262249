"""The writer's floor: the rows a job run wrote, read back, written again by the job's own writer
(udfs/parquet.py, what each Python worker runs: unpack, sort by Hilbert key, colour, encode with
pyarrow; each file's rows packed as the reduce packs them, on as many processes as workers, the
writing alone timed in CPU time) and by Sedona's writer alone (no shuffle, no sort; wall time on
`--workers` cores). What is left of a run's time beyond these is the job's own per-row cost.
Sedona's session compiles as a job run of the largest output's size would (jobs/config.jit_options:
C1 alone below [spark] c2_from_field_years rows, C1 and C2 from there).

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


def floor(spark, folder: str, scratch: Path, workers: int) -> dict:
    rows = spark.read.format("geoparquet").option("basePath", folder).load(folder).persist()
    n = rows.count()
    crs = output_crs(folder)
    result = {"output": folder, "rows": n}
    result["job_writer_core_s"] = job_write(folder, crs, str(scratch / "job"), workers)
    shutil.rmtree(scratch / "job", ignore_errors=True)
    target = scratch / "sedona"
    t0 = time.perf_counter()
    sedona_write(rows, crs, str(target))
    result["sedona_alone_s"] = round(time.perf_counter() - t0, 2)
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


def job_write(folder: str, crs: str, target: str, workers: int) -> float:
    """The output's files written again by udfs/parquet.py, a share on each of `workers`
    processes; the CPU seconds of the writing, summed."""
    import multiprocessing as mp

    files = sorted(str(f) for f in Path(folder).glob("time=*/label=*/*.parquet"))
    shares = [(files[i::workers], folder, crs, target) for i in range(workers)]
    with mp.get_context("spawn").Pool(workers) as pool:
        return round(sum(pool.starmap(write_share, shares)), 2)


def write_share(files: list[str], folder: str, crs: str, target: str) -> float:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from aef_zonal import dataset
    from aef_zonal.udfs import parquet, pca_model, rows

    model_file = Path(folder) / dataset.MODEL
    model = pca_model.loads(model_file.read_text(), model_file) if model_file.exists() else None
    packed, spent = [], 0.0
    for f in files:
        table = pq.read_table(f)
        meta = pq.read_schema(f).metadata
        time_, label = dataset.partition_values(str(Path(f).parent.relative_to(folder)))
        schema = table.schema.append(pa.field("time", pa.string())).append(
            pa.field("label", pa.string())
        )
        layout = rows.Layout(schema, "", None, ())
        batch = table.select(layout.packed.names).combine_chunks().to_batches()[0]
        year = pa.array([int(time_[:4])] * batch.num_rows, pa.int32())
        packed.append((layout, meta, rows.pack(batch, year, pa.array([label] * batch.num_rows))))
    for task, (layout, meta, batch) in enumerate(packed):
        files_ = parquet.Files(
            layout,
            json.loads(crs),
            model,
            meta[b"org.apache.spark.sql.parquet.row.metadata"].decode(),
            dataset.folder,
            target=parquet.LocalTarget(target),
        )
        t0 = time.process_time()
        list(parquet.write_partition([batch], files_, task))
        spent += time.process_time() - t0
    return spent


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
            print(
                json.dumps(floor(spark, str(Path(folder).resolve()), Path(scratch), a.workers)),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
