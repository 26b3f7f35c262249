"""The output stage: the published rows (sql/50_output.sql) written as GeoParquet partitions,
the PCA model and the run report, then committed. Every file operation on the output goes
through jobs/output.py, whose storage layer (jobs/storage.py) commits as --out's filesystem
allows: a staging folder renamed into place (local, HDFS) or S3A's magic committer (S3)."""
from __future__ import annotations

import contextlib
import sys

from pyproj import CRS
from pyspark.sql import functions as F

from jobs import output, storage
from jobs.options import OPTIONAL_STATS, JobError, Options
from jobs.report import versions
from jobs.session import sql
from udfs import pca
from udfs import spark as executor
from udfs.store import StoreInfo

MODEL = "_pca_model.json"


def check(spark, o: Options) -> tuple[output.Output, dict | None]:
    """Refuse an --out that would lose or mix data, before any stage runs; for --mode add, the
    PCA model the existing partitions were coloured with."""
    target = output.Output(spark, o.out, o.mode, storage.secret_values(o.settings))
    try:
        previous = target.check(o.stats, o.pixels)
        # a dataset written without a model (too few fields) has none to keep
        if previous is None or not target.fs.exists(storage.join(o.out, MODEL)):
            return target, None
        return target, pca.loads(target.read_text(MODEL), o.out)
    except (output.OutputError, storage.StorageError, ValueError) as e:
        raise JobError(str(e)) from e


@contextlib.contextmanager
def staged(target: output.Output):
    """The run's output, taken back (staging folder, or files of the run) unless committed."""
    try:
        yield target
    except storage.StorageError as e:
        target.abort()
        raise JobError(str(e)) from e
    except BaseException:
        target.abort()
        raise


def write(spark, o: Options, store: StoreInfo, field_years, stats, model: dict | None,
          target: output.Output):
    spark.udf.register("pca_rgb", executor.pca_rgb(spark.sparkContext.broadcast(model)))
    spark.udf.register("hilbert_key", executor.hilbert_key())
    g = store.grid.sql_params()
    result = sql(spark, "50_output.sql", {"field_years": field_years, "stats": stats},
                 store=o.store, **{k: g[k] for k in ("xmin", "ymax", "res", "shard", "width", "height",
                                                     "key_prefix", "key_sep")})
    for i, name in enumerate(o.quantiles):  # one list<double>(64) column per quantile
        result = result.withColumn(name, F.col("quantiles")[i])
    result = result.drop("quantiles", *[s for s in OPTIONAL_STATS if s not in o.stats],
                         *(["change_from"] if "change" not in o.stats else []))
    target.write(result, CRS.from_user_input(store.grid.crs).to_json())
    if model is not None:
        target.save_text(MODEL, pca.dumps(model))
    # what was written, read back: one small query over the partition columns and reason
    written = (target.written().groupBy("time", "label", "reason")
               .agg(F.count("*").alias("rows")).collect())
    summary, reasons = {}, {}
    for r in sorted(written, key=lambda r: (r.time, r.label)):
        part = f"time={r.time}/label={r.label}"
        summary[part] = summary.get(part, 0) + r.rows
    for r in written:
        if r.reason is not None:
            reasons[r.reason] = reasons.get(r.reason, 0) + r.rows
    return target, {"rows_per_partition": summary, "rows": sum(summary.values()),
                     "rows_count_zero": reasons}


def commit(o: Options, target: output.Output, report: dict, seconds: dict,
           years: list[int]) -> dict:
    """_run.json beside the data, then the run committed; returns the report. Settings and URLs
    are recorded with their secrets masked."""
    secrets = target.fs.secrets
    report = report | {
        "complete": not report["skipped_chunks"],
        "seconds": seconds,
        "command": storage.redact(" ".join(sys.argv), secrets),
        "store": storage.redact(o.store, secrets), "fields_path": storage.redact(o.fields, secrets),
        "years": years,
        "stats": o.stats, "pixels": o.pixels, "min_coverage": o.min_coverage, "mode": o.mode,
        "versions": versions(),
    }
    target.commit(report)
    return report
