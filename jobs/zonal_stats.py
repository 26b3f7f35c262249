"""The aef-zonal Spark job: fields -> assign -> reduce -> aggregate -> pca -> write.

Run as `aef-zonal run ...` or `spark-submit jobs/zonal_stats.py ...` (same options).
Each stage is one SQL file in sql/ (named below); the reduce stage is the Arrow UDF in
udfs/tasks.py, which calls the numba kernels in udfs/pixels.py and udfs/reduce.py.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

if __name__ == "__main__" and __package__ is None:  # spark-submit runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402  (module-level: pandas_udf resolves the type hints here)

from jobs import config  # noqa: E402
from udfs import quantiles  # noqa: E402
from udfs import store as zstore  # noqa: E402
from udfs.pixels import RULES  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SQL = ROOT / "sql"
STATS = ("count", "mean", "std", "min", "max", "sum", "valid_fraction", "mean_normalized")
OPTIONAL_STATS = ("count", "std", "min", "max", "sum", "valid_fraction", "mean_normalized")
REQUIRED = ("feature_id", "geometry")
OPTIONAL = {"label": "STRING", "score_mean": "FLOAT", "score_std": "FLOAT"}


class JobError(Exception):
    """A problem with the inputs or options; the message says what and how to fix it."""


def parse_args(argv=None) -> argparse.Namespace:
    d = config.load()
    p = argparse.ArgumentParser(
        prog="aef-zonal run",
        description="Per-field statistics of an AEF embeddings Zarr store, written as "
                    "Hive-partitioned GeoParquet.",
        epilog="example: aef-zonal run --store out/sample/store.zarr "
               "--fields out/sample/fields.parquet --out out/result --years 2024")
    p.add_argument("--store", required=True, help="Zarr store URL or path")
    p.add_argument("--fields", required=True, help="GeoParquet of field polygons")
    p.add_argument("--out", required=True, help="output folder (must not exist unless --mode)")
    p.add_argument("--years", type=int, nargs="+", help="years to reduce (default: all in store)")
    p.add_argument("--master", default=d["spark"]["master"], help="Spark master (default %(default)s)")
    p.add_argument("--stats", default=d["job"]["stats"],
                   help=f"comma-separated statistics among {','.join(STATS)}, median and "
                        "quantiles pNN such as p05,p95 (default %(default)s)")
    p.add_argument("--pixels", choices=RULES, default=d["job"]["pixels"],
                   help="which pixels count: centre inside (center), every touched pixel "
                        "(all-touched), or touched pixels weighted by covered area (fraction); "
                        "default %(default)s")
    p.add_argument("--pca-model", help="reuse a saved PCA model (JSON) instead of fitting one")
    p.add_argument("--pca-sample", type=int, default=d["job"]["pca_sample"],
                   help="field means sampled to fit the PCA (default %(default)s)")
    p.add_argument("--seed", type=int, default=d["job"]["seed"], help="PCA sampling seed")
    p.add_argument("--year-column", metavar="NAME",
                   help="column giving each field's own year (default: 'time' or 'year' if present); "
                        "'none' reduces every field for every year")
    p.add_argument("--skip-missing-years", action="store_true",
                   help="drop (and count) fields whose year the store lacks instead of failing")
    p.add_argument("--mode", choices=("error", "overwrite"), default="error",
                   help="what to do when --out exists (default: refuse)")
    p.add_argument("-v", "--verbose", action="store_true", help="show Spark's own logging")
    args = p.parse_args(argv)
    args.stats = [s.strip() for s in args.stats.split(",") if s.strip()]
    args.quantiles = quantiles.parse(args.stats)
    unknown = sorted(set(args.stats) - set(STATS) - set(args.quantiles))
    if unknown:
        p.error(f"unknown statistic(s) {unknown}; choose among {list(STATS)}, median, pNN")
    if args.quantiles and args.pixels == "fraction":
        p.error(f"quantiles ({', '.join(args.quantiles)}) are not available with --pixels fraction: "
                "weighted quantiles are not implemented; use --pixels center or all-touched")
    return args


def sql(spark, name: str, **params):
    text = (SQL / name).read_text()
    return spark.sql(text, args=params)


def spark_session(master: str, verbose: bool):
    from sedona.spark import SedonaContext

    jars = config.sedona_jars()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    d = config.load()["spark"]
    builder = SedonaContext.builder().master(master).appName("aef-zonal")
    builder = builder.config("spark.jars", ",".join(str(j) for j in jars))
    for key, value in d.get("conf", {}).items():
        builder = builder.config(key, str(value))
    try:
        spark = SedonaContext.create(builder.getOrCreate())
    except TypeError as e:  # py4j's JavaPackage: the Sedona classes are not on the driver
        raise JobError("Sedona's jars are not on the driver's classpath; with spark-submit pass "
                       "them with --jars (see README: Running with spark-submit)") from e
    spark.sparkContext.setLogLevel("WARN" if verbose else "ERROR")
    return spark


def year_of(df, column: str, path: str):
    """Integer year of a `time`/`year` column: date, timestamp, 'YYYY-01-01' string or integer."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    typ = df.schema[column].dataType
    col = F.col(column)
    if isinstance(typ, (T.DateType, T.TimestampType, T.TimestampNTZType)):
        return F.year(col)
    if isinstance(typ, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)):
        return col.cast("int")
    if isinstance(typ, T.StringType):
        bad = df.where(col.isNotNull() & ~col.rlike(r"^\d{4}(-\d{2}-\d{2})?$")).select(column).limit(3).collect()
        if bad:
            raise JobError(f"{path}: column '{column}' holds values that are not years, e.g. "
                           f"{[r[0] for r in bad]}; use 'YYYY-01-01' strings, dates or integer years")
        return F.substring(col, 1, 4).cast("int")
    raise JobError(f"{path}: column '{column}' has type {typ.simpleString()}; a year column must be "
                   "a date, timestamp, 'YYYY-01-01' string or integer (or pass --year-column none)")


def load_fields(spark, path: str, year_column: str | None) -> str | None:
    """Read the GeoParquet, fill optional columns, register `fields_input`.

    Returns the column giving each field's own year, or None (every field, every year).
    """
    from pyspark.sql import functions as F

    if not Path(path).exists() and "://" not in path:
        raise JobError(f"fields file {path} does not exist")
    try:
        df = spark.read.format("geoparquet").load(path)
    except Exception as e:
        raise JobError(f"cannot read {path} as GeoParquet ({type(e).__name__}: {str(e)[:300]}); "
                       "write it with geopandas.GeoDataFrame.to_parquet or Sedona") from e
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise JobError(f"{path}: required column(s) {missing} missing (found {df.columns}); "
                       "the fields need an int64 'feature_id' and a polygon 'geometry'")
    for name, typ in OPTIONAL.items():
        if name not in df.columns:
            df = df.withColumn(name, F.lit(None).cast(typ))
    if year_column is None:
        year_column = next((c for c in ("time", "year") if c in df.columns), None)
    elif year_column == "none":
        year_column = None
    elif year_column not in df.columns:
        raise JobError(f"{path}: no column '{year_column}' (found {df.columns}) for --year-column")
    year = year_of(df, year_column, path) if year_column else F.lit(None)
    df = df.withColumn("layer_year", year.cast("int"))
    df.select("feature_id", "geometry", *OPTIONAL, "layer_year").createOrReplaceTempView("fields_input")
    return year_column


def select_years(fields, path: str, year_column: str | None, years: list[int],
                 store_years: tuple[int, ...], skip_missing: bool, report: dict):
    """Fields with their own year: refuse (or drop and count) years the store lacks, keep --years."""
    report["year_column"] = year_column
    if year_column is None:
        return fields
    per_year = {r.layer_year: r["count"] for r in fields.groupBy("layer_year").count().collect()}
    if None in per_year:
        raise JobError(f"{path}: {per_year[None]} field(s) have no value in year column '{year_column}'")
    missing = {y: n for y, n in sorted(per_year.items()) if y not in store_years}
    if missing and not skip_missing:
        raise JobError(f"{path}: fields of year(s) absent from the store: "
                       + ", ".join(f"{y} ({n} fields)" for y, n in missing.items())
                       + f"; the store has {list(store_years)}. Pass --skip-missing-years to drop them")
    report["fields_skipped_missing_year"] = sum(missing.values())
    report["fields_outside_years"] = sum(n for y, n in per_year.items() if y not in years and y not in missing)
    return fields.where(fields.layer_year.isin(years))


def validate_fields(spark, path: str) -> dict:
    """Refuse fields the job cannot reduce, naming examples; return counts for the report."""
    row = spark.sql("""
        SELECT COUNT(*) AS n,
               COUNT_IF(feature_id IS NULL) AS null_ids,
               COUNT_IF(geometry IS NOT NULL AND geom_type NOT IN ('ST_Polygon', 'ST_MultiPolygon')) AS bad_types,
               COUNT_IF(geometry IS NULL OR ST_IsEmpty(geometry)) AS empty
        FROM fields""").first()
    if row.null_ids:
        raise JobError(f"{path}: {row.null_ids} field(s) have a null feature_id; give every field an id")
    if row.bad_types:
        ex = spark.sql("""SELECT feature_id, geom_type FROM fields
                          WHERE geom_type NOT IN ('ST_Polygon', 'ST_MultiPolygon') LIMIT 5""").collect()
        raise JobError(f"{path}: {row.bad_types} geometr(y/ies) are not polygons, e.g. "
                       + ", ".join(f"feature_id {r.feature_id}: {r.geom_type}" for r in ex)
                       + "; zonal statistics need Polygon or MultiPolygon fields")
    dups = spark.sql("""SELECT feature_id, COUNT(*) AS k FROM fields
                        GROUP BY feature_id, layer_year HAVING COUNT(*) > 1 LIMIT 5""").collect()
    if dups:
        raise JobError(f"{path}: feature_id is not unique, e.g. "
                       + ", ".join(f"{r.feature_id} ({r.k} rows)" for r in dups)
                       + "; ids must identify one field each (one per year when fields carry a year)")
    return {"fields": row.n, "empty_geometries": row.empty}


def fit_pca(stats, sample: int, seed: int) -> dict:
    from udfs import pca

    total = stats.where("count > 0").count()
    if total == 0:
        raise JobError("no field has a valid pixel in the store: nothing to fit a PCA on")
    frac = min(1.0, 1.2 * sample / total)
    rows = stats.where("count > 0").sample(fraction=frac, seed=seed).select("mean").limit(sample).collect()
    return pca.fit([r.mean for r in rows], seed)


def hilbert_udf():
    from pyspark.sql.functions import pandas_udf

    from udfs.grid import hilbert_key

    @pandas_udf("long")
    def hilbert(x: pd.Series, y: pd.Series) -> pd.Series:
        return pd.Series(hilbert_key(x.to_numpy(), y.to_numpy()))

    return hilbert


def quantiles_udf(qs: list[float], table, bands: int):
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("array<array<double>>")
    def quantiles_of(keys: pd.Series, counts: pd.Series) -> pd.Series:
        return pd.Series([quantiles.from_histogram(quantiles.dense(k, c, bands), qs, table).tolist()
                          for k, c in zip(keys, counts)])

    return quantiles_of


def write_output(df, staging: Path, crs_projjson: str):
    (df.repartition("time", "label")
       .sortWithinPartitions("time", "label", "hilbert_key")
       .write.format("geoparquet")
       .option("geoparquet.version", "1.1.0")
       .option("geoparquet.covering.geometry", "bbox")
       .option("geoparquet.crs", crs_projjson)
       .partitionBy("time", "label")
       .save(str(staging)))


def run(args) -> dict:
    from pyproj import CRS
    from pyspark.sql import functions as F

    from udfs import pca, tasks

    out = Path(args.out)
    if out.exists() and args.mode == "error":
        raise JobError(f"output {out} already exists; choose another --out or pass --mode overwrite")
    timings, t0 = {}, time.perf_counter()

    def lap(stage):
        nonlocal t0
        timings[stage] = round(time.perf_counter() - t0, 2)
        print(f"[aef-zonal] {stage}: {timings[stage]} s", flush=True)
        t0 = time.perf_counter()

    try:
        info = zstore.describe(args.store)
    except zstore.StoreError as e:
        raise JobError(str(e)) from e
    years = args.years or list(info.years)
    absent = sorted(set(years) - set(info.years))
    if absent:
        raise JobError(f"year(s) {absent} not in store {args.store}; it has {list(info.years)}")
    g, q = info.grid, info.quant
    spark = spark_session(args.master, args.verbose)
    lap("start spark")

    year_column = load_fields(spark, args.fields, args.year_column)
    sql(spark, "10_fields.sql").createOrReplaceTempView("fields")
    report = validate_fields(spark, args.fields)
    fields = select_years(spark.table("fields"), args.fields, year_column, years,
                          info.years, args.skip_missing_years, report).persist()
    fields.createOrReplaceTempView("fields")
    lap("fields")

    chunk_deg = g.chunk * g.res
    sql(spark, "20_assign.sql", xmin=g.xmin, ymax=g.ymax, chunk_deg=chunk_deg,
        chunk_rows=g.chunk_rows, chunk_cols=g.chunk_cols).createOrReplaceTempView("field_chunks")
    chunk_tasks = sql(spark, "30_chunk_tasks.sql", years=F.array(*[F.lit(y) for y in years]))
    chunk_tasks = chunk_tasks.persist()
    n_tasks = chunk_tasks.count()
    report["chunk_tasks"] = n_tasks
    lap("assign")

    url = args.store
    red = tasks.Reduction(g, q, info.years, info.bands, rule=args.pixels,
                          extremes=bool({"min", "max"} & set(args.stats)),
                          histograms=bool(args.quantiles))

    def reduce_udf(batches):
        def read(t, window):
            try:
                return zstore.read_chunk(url, t, window)
            except Exception as e:
                raise RuntimeError(f"reading store {url}, time index {t}, pixel window "
                                   f"{window}: {type(e).__name__}: {e}") from e
        return tasks.reduce_batches(batches, red, read)

    parallelism = spark.sparkContext.defaultParallelism
    partitions = max(1, min(n_tasks, max(4 * parallelism, n_tasks // 32)))
    partials = (chunk_tasks.repartitionByRange(partitions, "cy", "cx")
                .mapInArrow(reduce_udf, red.schema()))
    partials.createOrReplaceTempView("partials")
    spark.udf.register("quantiles", quantiles_udf(list(args.quantiles.values()), q.table(), info.bands))
    # n * S2 and S1^2 are integers below 2^53 (exact as doubles) while n * umax^2 < 2^26.5
    umax = 127 ** 2 if q.square else 128
    stats = sql(spark, "40_aggregate.sql", a=q.a, b=q.b, weighted=red.weighted,
                double_exact_count=int(2 ** 26.5 / umax),
                quantiles=bool(args.quantiles)).persist()
    stats.createOrReplaceTempView("stats")
    report["field_years_with_pixels"] = stats.where("count > 0").count()
    lap("reduce + aggregate")

    model = pca.load(args.pca_model) if args.pca_model else fit_pca(stats, args.pca_sample, args.seed)
    pca.to_spark(spark, model).createOrReplaceTempView("pca_model")
    lap("pca")

    field_years = spark.createDataFrame([(y, info.time_index(y)) for y in years], "year int, t int")
    (fields.select("feature_id", "layer_year").crossJoin(field_years)
        .where("layer_year IS NULL OR layer_year = year")
        .createOrReplaceTempView("field_years"))
    spark.udf.register("hilbert_key", hilbert_udf())
    result = sql(spark, "50_output.sql", store=args.store, xmin=g.xmin, ymax=g.ymax, res=g.res,
                 shard=g.shard, width=g.width, height=g.height)
    for i, name in enumerate(args.quantiles):  # one list<double>(64) column per quantile
        result = result.withColumn(name, F.col("quantiles")[i])
    # mean is part of the published schema: always written
    result = result.drop("quantiles", *[s for s in OPTIONAL_STATS if s not in args.stats])

    staging = out.parent / f".{out.name}.staging-{uuid.uuid4().hex[:8]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_output(result, staging, CRS.from_user_input("EPSG:4326").to_json())
        pca.save(model, staging / "_pca_model.json")
        per_partition = (spark.read.parquet(str(staging)).groupBy("time", "label").count()
                         .orderBy("time", "label").collect())
        lap("write")
        report.update({
            "rows_per_partition": {f"time={r.time}/label={r.label}": r["count"] for r in per_partition},
            "rows": sum(r["count"] for r in per_partition),
            "seconds": timings,
            "command": " ".join(sys.argv),
            "store": args.store, "fields_path": args.fields, "years": years, "stats": args.stats,
            "pixels": args.pixels,
        })
        (staging / "_run.json").write_text(json.dumps(report, indent=2))
        if out.exists():  # --mode overwrite: swap, then drop the old copy
            trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            out.rename(trash)
            staging.rename(out)
            shutil.rmtree(trash)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:  # a long-lived session (notebooks, tests) should not keep this run's tables
        for df in (fields, chunk_tasks, stats):
            df.unpersist()
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except JobError as e:
        print(f"aef-zonal: error: {e}", file=sys.stderr)
        return 2
    print(f"[aef-zonal] wrote {report['rows']} rows to {args.out}")
    for part, n in report["rows_per_partition"].items():
        print(f"  {part}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
