"""The output stage: the published rows (sql/50_output.sql) written as GeoParquet partitions
into a staging folder, then committed with the run report. Every file operation on the output
goes through jobs/output.py."""
from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

from pyproj import CRS
from pyspark.sql import functions as F

from jobs import output
from jobs.options import OPTIONAL_STATS, JobError, Options
from jobs.report import versions
from jobs.session import sql
from udfs import pca
from udfs import spark as executor
from udfs.store import StoreInfo

MODEL = "_pca_model.json"


def check(o: Options) -> Path | None:
    """Refuse an --out that would lose or mix data, before any work; for --mode add, the PCA
    model the existing partitions were coloured with."""
    out = Path(o.out)
    try:
        previous = output.check(out, o.mode, o.stats, o.pixels)
    except output.OutputError as e:
        raise JobError(str(e)) from e
    # a dataset written without a model (too few fields) has none to keep
    return None if previous is None or not (out / MODEL).exists() else out / MODEL


@contextlib.contextmanager
def staged(o: Options):
    """The staging folder of this run, removed unless committed."""
    staging = output.staging_for(Path(o.out))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write(spark, o: Options, store: StoreInfo, fields, field_years, stats, model: dict | None,
          staging: Path):
    spark.udf.register("pca_rgb", executor.pca_rgb(spark.sparkContext.broadcast(model)))
    spark.udf.register("hilbert_key", executor.hilbert_key())
    g = store.grid.sql_params()
    result = sql(spark, "50_output.sql", {"fields": fields, "field_years": field_years, "stats": stats},
                 store=o.store, **{k: g[k] for k in ("xmin", "ymax", "res", "shard", "width", "height",
                                                     "key_prefix", "key_sep")})
    for i, name in enumerate(o.quantiles):  # one list<double>(64) column per quantile
        result = result.withColumn(name, F.col("quantiles")[i])
    result = result.drop("quantiles", *[s for s in OPTIONAL_STATS if s not in o.stats])
    output.write(result, staging, CRS.from_user_input(store.grid.crs).to_json())
    if model is not None:
        pca.save(model, staging / MODEL)
    # what was written, read back: one small query over the partition columns and reason
    written = (spark.read.parquet(str(staging)).groupBy("time", "label", "reason")
               .agg(F.count("*").alias("rows")).collect())
    summary, reasons = {}, {}
    for r in sorted(written, key=lambda r: (r.time, r.label)):
        part = f"time={r.time}/label={r.label}"
        summary[part] = summary.get(part, 0) + r.rows
    for r in written:
        if r.reason is not None:
            reasons[r.reason] = reasons.get(r.reason, 0) + r.rows
    return staging, {"rows_per_partition": summary, "rows": sum(summary.values()),
                     "rows_count_zero": reasons}


def commit(o: Options, staging: Path, report: dict, seconds: dict, years: list[int]) -> dict:
    """_run.json beside the data, then the staged run in place; returns the report."""
    report = report | {
        "complete": not report["skipped_chunks"],
        "seconds": seconds,
        "command": " ".join(sys.argv),
        "store": o.store, "fields_path": o.fields, "years": years,
        "stats": o.stats, "pixels": o.pixels, "mode": o.mode,
        "versions": versions(),
    }
    output.save_report(report, staging)
    output.commit(staging, Path(o.out), o.mode)
    return report
