"""The output stage: the published rows (sql/50_output.sql) written as GeoParquet partitions,
the PCA model and the run report, then committed. Every file operation on the output goes
through jobs/writer.py, whose commit strategy (jobs/commit.py) commits as --out's filesystem
allows: a staging folder renamed into place (local, HDFS) or S3A's magic committer (S3)."""

from __future__ import annotations

import contextlib
import os

from pyproj import CRS
from pyspark.sql import functions as F

from aef_zonal import dataset, filesystem, redaction, writer
from aef_zonal.commit import LEFTOVERS
from aef_zonal.errors import JobError
from aef_zonal.options import Options
from aef_zonal.report import versions
from aef_zonal.session import sql
from aef_zonal.stages import fields
from aef_zonal.udfs import pca_model
from aef_zonal.udfs import spark as executor
from aef_zonal.udfs.store import StoreInfo


def check_local(o: Options) -> None:
    """An existing local --out refused (--mode error) before Spark starts, which takes seconds;
    an output on another filesystem is checked once the session is up (`check`)."""
    path = filesystem.local_path(o.out)
    if o.mode != "error" or path is None or not os.path.exists(path):
        return
    if os.path.isdir(path) and all(n.startswith(LEFTOVERS) for n in os.listdir(path)):
        return
    raise JobError(
        str(dataset.exists(redaction.redact(o.out, redaction.secret_values(o.settings))))
    )


def check(spark, o: Options, out: str, mode: str) -> tuple[writer.Output, dict | None]:
    """Refuse an output that would lose or mix data, before anything is written; for mode add,
    the PCA model the existing partitions were coloured with."""
    if mode not in writer.MODES:
        raise JobError(f"mode '{mode}': choose among {list(writer.MODES)}")
    target = writer.Output(spark, out, mode, redaction.secret_values(o.settings))
    try:
        previous = target.check(o.stats, o.pixels)
        # a dataset written without a model (too few fields) has none to keep
        if previous is None or not target.fs.exists(filesystem.join(out, dataset.MODEL)):
            return target, None
        return target, pca_model.loads(target.read_text(dataset.MODEL), out)
    except (dataset.OutputError, filesystem.StorageError, ValueError) as e:
        raise JobError(str(e)) from e


@contextlib.contextmanager
def staged(target: writer.Output):
    """The run's output, taken back (staging folder, or files of the run) unless committed."""
    try:
        yield target
    except filesystem.StorageError as e:
        target.abort()
        raise JobError(str(e)) from e
    except BaseException:
        target.abort()
        raise


def rows(spark, o: Options, store: StoreInfo, field_years, stats, model: dict | None):
    """The published rows (sql/50_output.sql): one per field-year, the columns the files hold."""
    spark.udf.register("pca_rgb", executor.pca_rgb(spark.sparkContext.broadcast(model)))
    spark.udf.register("hilbert_key", executor.hilbert_key())
    g = store.grid.sql_params()
    written = [s for s in o.statistics if not s.always]
    columns = {
        "statistics": "".join(f"{s.sql},\n  " for s in written if s.level is None),
        "quantiles": "".join(f", {s.sql}" for s in written if s.level is not None),
    }
    result = sql(
        spark,
        "50_output.sql",
        {"field_years": field_years, "stats": stats},
        columns,
        store=o.store,
        **{
            k: g[k]
            for k in ("xmin", "ymax", "res", "shard", "width", "height", "key_prefix", "key_sep")
        },
    )
    return result.drop(fields.NO_KEPT)


def write(store: StoreInfo, result, model: dict | None, target: writer.Output):
    target.write(result, CRS.from_user_input(store.grid.crs).to_json())
    if model is not None:
        target.save_text(dataset.MODEL, pca_model.dumps(model))
    # what was written, read back: one small query over the partition columns and reason
    written = (
        target.written()
        .groupBy("time", "label", "reason")
        .agg(F.count("*").alias("rows"))
        .collect()
    )
    summary, reasons = {}, {}
    for r in sorted(written, key=lambda r: (r.time, r.label)):
        part = dataset.partition(r.time, r.label)
        summary[part] = summary.get(part, 0) + r.rows
    for r in written:
        if r.reason is not None:
            reasons[r.reason] = reasons.get(r.reason, 0) + r.rows
    return target, {
        "rows_per_partition": summary,
        "rows": sum(summary.values()),
        "rows_count_zero": reasons,
    }


def commit(
    o: Options, target: writer.Output, report: dict, seconds: dict, years: list[int], command: str
) -> dict:
    """_run.json beside the data, then the run committed; returns the report. Settings and URLs
    are recorded with their secrets masked."""
    secrets = target.fs.secrets
    report = report | {
        "complete": not report["skipped_chunks"],
        "mode": target.mode,
        "seconds": seconds,
        "command": redaction.redact(command, secrets),
        "store": redaction.redact(o.store, secrets),
        "fields_path": redaction.redact(
            o.fields if isinstance(o.fields, str) else fields.FRAME, secrets
        ),
        "years": years,
        "stats": o.stats,
        "pixels": o.pixels,
        "min_coverage": o.min_coverage,
        "versions": versions(),
    }
    target.commit(report)
    return report
