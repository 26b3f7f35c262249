"""The output stage: the published rows (the reduce stage's, and those udfs/rows.py builds from
sql/50_output.sql) written as GeoParquet partitions, the PCA model and the run report, then
committed. Every file operation on the output goes through jobs/writer.py, whose commit strategy
(jobs/commit.py) commits as --out's filesystem allows: a staging folder renamed into place
(local, HDFS), uploads completed at the commit (S3) or the scheme's committer (other stores)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from pyproj import CRS
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_type

from aef_zonal import dataset, filesystem, redaction, writer
from aef_zonal.commit import LEFTOVERS
from aef_zonal.errors import JobError
from aef_zonal.options import Options
from aef_zonal.report import versions
from aef_zonal.session import cancelled_on, sql
from aef_zonal.stages import fields
from aef_zonal.stages.reduce import Reduced, failure
from aef_zonal.udfs import parquet, pca_model, rows, statistics
from aef_zonal.udfs import spark as executor
from aef_zonal.udfs.store import StoreInfo
from aef_zonal.udfs.tasks import ROWS


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
    try:
        target = writer.Output(spark, out, mode, redaction.secret_values(o.settings), o.settings)
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


def layout(o: Options, store: StoreInfo, kept: list) -> rows.Layout:
    """What the run's rows are: jobs/dataset.py's columns with the kept input columns (`kept`,
    their Arrow fields), the store's grid."""
    return rows.Layout(
        dataset.schema(o.stats, kept, o.weighted), o.store, store.grid, tuple(o.stats)
    )


def kept_fields(fields_df) -> list:
    """The kept input columns as Arrow fields, as Spark hands them to the Python workers."""
    kept = fields_df.schema["kept"].dataType
    return [
        pa.field(f.name, to_arrow_type(f.dataType), f.nullable)
        for f in kept.fields
        if f.name != fields.NO_KEPT
    ]


SCRATCH = ("auto", "spark")
# a file's rows at most (where the driver cuts them into pieces), as adaptive execution's
# advisory partition size cuts a rebalanced (time, label) partition
PIECE_BYTES = 64 << 20


class Scratch:
    """The folder the run's finished rows wait in for the writer (udfs/rows.py: Spill), inside
    Spark's local dir, which Spark deletes when it stops; released (deleted) with the run's
    cached tables."""

    def __init__(self, spark):
        from pyspark import SparkFiles

        root = os.path.dirname(SparkFiles.getRootDirectory())
        self.path = os.path.join(root, f"aef-zonal-rows-{uuid.uuid4().hex}")
        os.makedirs(self.path)

    def unpersist(self):
        shutil.rmtree(self.path, ignore_errors=True)


def scratch_folder(spark, o: Options) -> Scratch | None:
    """The run's scratch folder: where the driver and the workers share this machine's disk
    (local mode), unless [job] scratch says "spark"."""
    how = o.settings["job"]["scratch"]
    if how not in SCRATCH:
        raise JobError(
            f"[job] scratch = {how!r}: choose among {list(SCRATCH)} (conf/defaults.toml)"
        )
    local = spark.sparkContext.master.startswith("local")
    return Scratch(spark) if how == "auto" and local else None


@dataclass(frozen=True)
class Packed:
    """The published rows, packed per (time, label) (udfs/rows.py: PACKED); `pieced`: one
    Spark partition per file to write (references to scratch files, cut by the driver), else
    rebalanced by the writer."""

    df: object
    pieced: bool


def rows_packed(
    spark,
    o: Options,
    lay: rows.Layout,
    reduced: Reduced,
    field_years,
    stats,
    scratch: Scratch | None,
) -> tuple[Packed, dict]:
    """The published rows, packed per (time, label): those the reduce stage finished, and the
    others built from sql/50_output.sql's rows; in the `scratch` folder, those too."""
    finished = [s.name for s in statistics.finished(o.statistics)]
    rest = sql(
        spark,
        "50_output.sql",
        {"field_years": field_years, "stats": stats},
        {
            "statistics": "".join(f"s.`{n}`, " for n in finished),
            "clustered": "DISTRIBUTE BY f.feature_id SORT BY f.feature_id, f.year"
            if lay.change
            else "",
        },
    )
    schema = from_arrow_schema(rows.PACKED)
    sc = spark.sparkContext
    errors = sc.accumulator([], executor.Messages())
    folder = scratch.path if scratch else None
    built = rest.mapInArrow(executor.rest_partitions(lay, folder, errors), schema)
    union = reduced.of(ROWS, rows.PACKED.names).unionByName(built)
    if scratch is None:
        return Packed(union, False), {}
    with cancelled_on(sc, lambda: errors.value):
        try:
            ref = [tuple(r) for r in union.collect()]
        except Exception:
            if not errors.value:
                raise
    if errors.value:
        raise JobError(failure(errors.value))
    cut = pieces(ref, os.path.getsize)
    df = spark.createDataFrame(sc.parallelize(cut, max(len(cut), 1)).flatMap(lambda p: p), schema)
    return Packed(df, True), {"files_cut": len(cut)}


def pieces(refs: list[tuple], size, most: int = PIECE_BYTES) -> list[list[tuple]]:
    """Packed rows naming scratch files (time, label, ..., path) cut into the writer's pieces:
    each of one (time, label), its files' `size` together at most `most` (or one file)."""
    out = []
    refs = sorted(refs, key=lambda r: (r[0], r[1] is None, r[1] or "", r[-1]))
    for _, group in itertools.groupby(refs, key=lambda r: (r[0], r[1])):
        piece, held = [], 0
        for r in group:
            n = size(r[-1])
            if piece and held + n > most:
                out.append(piece)
                piece, held = [], 0
            piece.append(r)
            held += n
        out.append(piece)
    return out


def frame(spark, packed: Packed, files) -> object:
    """The published rows as a DataFrame (`ZonalStats.df`): unpacked, coloured, the geometry a
    Sedona geometry."""
    unpacked = packed.df.mapInArrow(
        executor.unpack_partitions(files), from_arrow_schema(files.layout.schema)
    )
    return unpacked.withColumn("geometry", F.expr("ST_GeomFromWKB(geometry)"))


def files(spark, store: StoreInfo, lay: rows.Layout, model: dict | None) -> parquet.Files:
    """How the run's files are written (where: the commit strategy says); their Spark schema
    as Spark itself states it."""
    crs = json.loads(CRS.from_user_input(store.grid.crs).to_json())
    schema = pa.schema([f for f in lay.schema if f.name not in rows.PARTITIONS])
    types = spark._jvm.org.apache.spark.sql.types.DataType
    spark_schema = types.fromJson(from_arrow_schema(schema).json()).json()
    return parquet.Files(lay, crs, model, spark_schema, dataset.folder)


def split(o: Options, rows):
    """The data rows (those with a valid pixel; every row with --rows-without-pixels inline) and
    the field-years without a valid pixel (dataset.WITHOUT_PIXELS' columns)."""
    without = rows.where("reason IS NOT NULL").select(*dataset.WITHOUT_PIXELS_COLUMNS)
    return (rows if o.rows_without_pixels == "inline" else rows.where("reason IS NULL")), without


def write(o: Options, target: writer.Output, packed: Packed, files, rows_frame):
    """The rows written (`rows_frame`: the DataFrame Sedona's writer takes where the Python
    workers cannot write), the PCA model saved, the field-years without a valid pixel listed;
    returns the (time, label) partitions of the run's field-years and the report's counts."""
    written, listed = target.write(
        packed.df, packed.pieced, files, rows_frame, o.rows_without_pixels == "inline"
    )
    if files.model is not None:
        target.save_text(dataset.MODEL, pca_model.dumps(files.model))
    summary = {dataset.partition(t, lab): n for (t, lab), n in sorted(written.items()) if n}
    listed = dataset.sort_without_pixels(listed)
    reasons = {}
    for reason in listed["reason"].to_pylist():
        reasons[reason] = reasons.get(reason, 0) + 1
    # the partitions of the run's field-years: where it wrote rows, and where it listed some
    covered = {k for k, n in written.items() if n} | set(
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


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def parquet_table(data: bytes) -> pa.Table:
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
