"""aef-zonal sql: Spark SQL with Sedona's functions over an aef-zonal output, as a view `fields`
(and its field-years without a valid pixel as the view `without_pixels`).

The view is read with Sedona's GeoParquet source over the whole folder, so `time` and `label`
are partition columns: `WHERE time = '2024-01-01'` reads only that year's files (EXPLAIN shows
it under PartitionFilters) and conditions on `bbox.xmin` etc. are pushed to the Parquet reader.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import uuid
from pathlib import Path

from aef_zonal import dataset, filesystem
from aef_zonal.dataset import OutputError


def data_files(out, settings: dict | None = None) -> tuple[object, dict[str, int]]:
    """The pyarrow filesystem of an aef-zonal output folder (local, or on any filesystem pyarrow
    reads: s3:// with the settings' spark.hadoop.fs.s3a.* keys) and its data files
    (time=YYYY-01-01/label=…/*.parquet), each with its year."""
    import pyarrow.fs as pafs

    fs, path = filesystem.arrow_fs(str(out), settings)
    try:
        if fs.get_file_info(path).type != pafs.FileType.Directory:
            raise OutputError(f"{out} is not a folder; pass the --out folder of `aef-zonal run`")
        files = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    except OSError as e:
        raise OutputError(f"cannot list {out}: {e}") from None
    years = {f.path: dataset.data_year(f.path[len(path) :].strip("/")) for f in files}
    found = {f: y for f, y in years.items() if y is not None}
    if not found:
        raise OutputError(
            f"{out} is not an aef-zonal output: it has no {dataset.PARTITIONS_TEXT} partitions"
        )
    return fs, found


def output_years(out, settings: dict | None = None) -> list[int]:
    """Years present in an aef-zonal output folder."""
    return sorted(set(data_files(out, settings)[1].values()))


def read(spark, out, settings: dict | None = None):
    """The output folder as a DataFrame (Sedona's GeoParquet source: `time` and `label` are
    partition columns), refused when it is not an aef-zonal output."""
    output_years(out, settings)
    return spark.read.format("geoparquet").load(str(out))


def register(spark, out, settings: dict | None = None) -> None:
    """Register the view `fields` over the output folder, and `without_pixels` over its
    dataset.WITHOUT_PIXELS table where it has one."""
    read(spark, out, settings).createOrReplaceTempView("fields")
    listed = filesystem.join(str(out), dataset.WITHOUT_PIXELS)
    if filesystem.Hadoop(spark).exists(listed):
        spark.read.parquet(listed).createOrReplaceTempView("without_pixels")


def query(spark, out, text: str, settings: dict | None = None):
    """The DataFrame of `text` run against the view `fields` over `out`."""
    register(spark, out, settings)
    return spark.sql(text)


def has_geometry(df) -> bool:
    from sedona.spark.sql.types import GeometryType

    return any(isinstance(f.dataType, GeometryType) for f in df.schema.fields)


def write_single_file(df, target: Path) -> None:
    """Write `df` as one Parquet file (GeoParquet 1.1.0 when it has a geometry column)."""
    from pyproj import CRS

    staging = target.parent / f".{target.name}.staging-{uuid.uuid4().hex[:8]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        writer = df.coalesce(1).write
        if has_geometry(df):
            writer = (
                writer.format("geoparquet")
                .option("geoparquet.version", "1.1.0")
                .option("geoparquet.crs", CRS.from_user_input("EPSG:4326").to_json())
            )
        else:
            writer = writer.format("parquet")
        writer.save(str(staging))
        (part,) = staging.glob("part-*.parquet")
        part.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def show(df, limit: int) -> None:
    """The answer's first `limit` rows as Spark prints a table, then how many rows it has (Spark's
    own "only showing top N rows" does not say); computed once, for both."""
    df = df.persist()
    try:
        total = df.count()
        df.limit(limit).show(limit, truncate=60)
        more = (
            f" ({limit} shown: --limit N for more, --to FILE.parquet for all)"
            if total > limit
            else ""
        )
        print(f"{total:,} row{'' if total == 1 else 's'}{more}")
    finally:
        df.unpersist()


def parse_args(argv):
    from aef_zonal import config

    p = argparse.ArgumentParser(
        prog="aef-zonal sql",
        description="Run Spark SQL (with Apache Sedona's ST_ functions) over an aef-zonal output, "
        "registered as the view `fields` (partition columns time, label); its field-years "
        f"without a valid pixel ({dataset.WITHOUT_PIXELS}/) are the view `without_pixels` "
        "(feature_id, time, label, reason).",
        epilog='example: aef-zonal sql out/result "SELECT label, COUNT(*) AS n FROM fields '
        "WHERE time = '2024-01-01' GROUP BY label ORDER BY label\"",
    )
    p.add_argument("out", help="output folder of `aef-zonal run` (a path or a URL: s3://, hdfs://)")
    p.add_argument("query", help="a Spark SQL query over the views `fields`, `without_pixels`")
    p.add_argument(
        "--to",
        metavar="FILE.parquet",
        help="write the result to one Parquet file (GeoParquet when it has a geometry) "
        "instead of printing it",
    )
    p.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="rows printed (default 20) or, with --to, rows written (default all)",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="print the physical plan (PartitionFilters, PushedFilters) instead of running",
    )
    p.add_argument("--master", help="Spark master (default: the settings' spark.master)")
    p.add_argument("-v", "--verbose", action="store_true", help="show Spark's own logging")
    return config.parse_with_settings(p, argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        output_years(args.out, args.settings)
    except OutputError as e:
        print(f"aef-zonal sql: error: {e}", file=sys.stderr)
        return 2
    import pyarrow.parquet as pq
    from pyspark.errors import PySparkException

    from aef_zonal.session import setting, spark_session

    spark, _ = spark_session(args.master, args.verbose, args.settings)
    if (
        not args.verbose
    ):  # PySpark logs a failed query's JVM stack as JSON; the message below says it
        try:
            from pyspark.logger import PySparkLogger
        except ImportError:  # Spark 3.5: no such logger (nor that log)
            pass
        else:
            PySparkLogger.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
    try:
        df = query(spark, args.out, args.query, args.settings)
        if args.explain:
            # the whole lists of pushed and partition filters, which Spark cuts at 100 characters
            with setting(spark, "spark.sql.maxMetadataStringLength", 10_000):
                df.explain()
        elif args.to:
            write_single_file(df if args.limit is None else df.limit(args.limit), Path(args.to))
            rows = pq.read_metadata(args.to).num_rows
            print(f"[aef-zonal] wrote {rows} rows to {args.to}")
        else:
            show(df, 20 if args.limit is None else args.limit)
    except PySparkException as e:  # a user's SQL: show Spark's message, not a traceback
        print(f"aef-zonal sql: error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    return 0
