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
        if previous is not None and mode == "add":
            kept = previous.get("rows_without_pixels", dataset.ROWS_WITHOUT_PIXELS_BEFORE)
            if kept != o.rows_without_pixels:
                raise dataset.OutputError(
                    f"--mode add: {target.shown} keeps its field-years without a valid pixel "
                    f"{kept} (--rows-without-pixels {kept}); add partitions the same way"
                )
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


def split(o: Options, rows):
    """The data rows (those with a valid pixel; every row with --rows-without-pixels inline) and
    the field-years without a valid pixel (dataset.WITHOUT_PIXELS' columns)."""
    without = rows.where("reason IS NOT NULL").select(*dataset.WITHOUT_PIXELS_COLUMNS)
    return (rows if o.rows_without_pixels == "inline" else rows.where("reason IS NULL")), without


def write(store: StoreInfo, result, without, model: dict | None, target: writer.Output):
    target.write(result, CRS.from_user_input(store.grid.crs).to_json())
    if model is not None:
        target.save_text(dataset.MODEL, pca_model.dumps(model))
    # what was written, read back: one small query over the partition columns (no row written:
    # every field-year without a valid pixel)
    written = target.written()
    written = (
        []
        if written is None
        else written.groupBy("time", "label").agg(F.count("*").alias("rows")).collect()
    )
    summary = {
        dataset.partition(r.time, r.label): r.rows
        for r in sorted(written, key=lambda r: (r.time, r.label))
    }
    listed = listing(without)
    reasons = {}
    for reason in listed["reason"].to_pylist():
        reasons[reason] = reasons.get(reason, 0) + 1
    # the partitions of the run's field-years: where it wrote rows, and where it listed some
    covered = {(r.time, r.label) for r in written} | set(
        zip(listed["time"].to_pylist(), listed["label"].to_pylist())
    )
    if target.mode == "add":
        old = target.read_bytes(dataset.WITHOUT_PIXELS_FILE)
        if old is not None:
            listed = dataset.merge_without_pixels(parquet_table(old), listed, covered)
    target.save_bytes(dataset.WITHOUT_PIXELS_FILE, parquet_bytes(listed))
    return covered, {
        "rows_per_partition": summary,
        "rows": sum(summary.values()),
        "rows_count_zero": reasons,
    }


def listing(without):
    """This run's field-years without a valid pixel, collected on the driver (a small share of
    a run) as an Arrow table in the order every run writes them."""
    import pyarrow as pa

    table = pa.Table.from_pandas(
        without.toPandas(), schema=dataset.without_pixels_schema(), preserve_index=False
    )
    return dataset.sort_without_pixels(table)


def parquet_bytes(table) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def parquet_table(data: bytes):
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(data))


def commit(
    o: Options,
    target: writer.Output,
    covered: set[tuple[str, str]],
    report: dict,
    seconds: dict,
    years: list[int],
    command: str,
) -> dict:
    """_run.json beside the data, then the run committed (with --mode add, the `covered`
    partitions replaced); returns the report. Settings and URLs are recorded with their secrets
    masked."""
    secrets = target.fs.secrets
    report = report | {
        "complete": not report["skipped_chunks"],
        "mode": target.mode,
        "rows_without_pixels": o.rows_without_pixels,
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
    target.commit(report, covered)
    return report
