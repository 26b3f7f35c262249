"""The aef-zonal Spark job: fields -> assign -> reduce -> aggregate -> pca -> write.

Run as `aef-zonal run ...` or `spark-submit jobs/zonal_stats.py ...` (same options).
Each stage is one SQL file in sql/ (named below); the reduce stage is the Arrow UDF in
udfs/tasks.py, which calls the numba kernels in udfs/pixels.py and udfs/reduce.py.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

if __name__ == "__main__" and __package__ is None:  # spark-submit runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402  (module-level: pandas_udf resolves the type hints here)

from jobs import config, output, storage  # noqa: E402
from udfs import quantiles  # noqa: E402
from udfs import store as zstore  # noqa: E402
from udfs.pixels import RULES  # noqa: E402

SQL = config.ROOT / "sql"
STATS = ("count", "mean", "std", "min", "max", "sum", "valid_fraction", "mean_normalized")
OPTIONAL_STATS = ("count", "std", "min", "max", "sum", "valid_fraction", "mean_normalized")


class JobError(Exception):
    """A problem with the inputs or options; the message says what and how to fix it."""


EXAMPLES = """examples:
  aef-zonal run --store out/sample/store.zarr --fields out/sample/fields.parquet --out out/result
  aef-zonal run --store s3://bucket/aef/v1.zarr --s3-region us-west-2 --fields fields.parquet \\
      --out out/iowa --years 2023 2024 2025 --stats count,mean,std,p50
  aef-zonal run --conf my.toml --out out/more --mode add     # settings from a file (see conf/)
"""


def parse_args(argv=None) -> argparse.Namespace:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--conf")
    try:
        d = config.load(pre.parse_known_args(argv)[0].conf)
    except ValueError as e:
        pre.error(str(e))
    job, st = d["job"], d["store"]
    p = argparse.ArgumentParser(
        prog="aef-zonal run",
        description="Per-field statistics of an AEF embeddings Zarr store, written as "
                    "Hive-partitioned GeoParquet. Defaults come from conf/defaults.toml.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conf", metavar="FILE",
                   help="TOML file over conf/defaults.toml (same layout); options here win")
    p.add_argument("--store", default=job["store"] or None,
                   help="Zarr store: path, s3://bucket/prefix or https://host/path")
    p.add_argument("--fields", default=job["fields"] or None, help="GeoParquet of field polygons")
    p.add_argument("--out", default=job["out"] or None,
                   help="output folder (must not exist unless --mode)")
    p.add_argument("--years", type=int, nargs="+", default=job["years"] or None,
                   help="years to reduce (default: all in store)")
    p.add_argument("--master", help="Spark master (default: spark-submit's --master, else "
                                     f"{d['spark']['master']} from the settings)")
    p.add_argument("--stats", default=job["stats"],
                   help=f"comma-separated statistics among {','.join(STATS)}, median and "
                        "quantiles pNN such as p05,p95 (default %(default)s)")
    p.add_argument("--pixels", choices=RULES, default=job["pixels"],
                   help="which pixels count: centre inside (center), every touched pixel "
                        "(all-touched), or touched pixels weighted by covered area (fraction); "
                        "default %(default)s")
    p.add_argument("--pca-model", help="reuse a saved PCA model (JSON) instead of fitting one")
    p.add_argument("--pca-sample", type=int, default=job["pca_sample"],
                   help="field means sampled to fit the PCA (default %(default)s)")
    p.add_argument("--seed", type=int, default=job["seed"], help="PCA sampling seed")
    p.add_argument("--year-column", metavar="NAME",
                   help="column giving each field's own year (default: 'time' or 'year' if present); "
                        "'none' reduces every field for every year")
    p.add_argument("--skip-missing-years", action="store_true",
                   help="drop (and count) fields whose year the store lacks instead of failing")
    p.add_argument("--mode", choices=output.MODES, default="error",
                   help="when --out exists: refuse (error, default), replace it (overwrite), or "
                        "replace only the time/label partitions this run writes (add)")
    p.add_argument("--on-bad-chunk", choices=("fail", "skip"), default=job["on_bad_chunk"],
                   help="a chunk that does not decode fails the run (default %(default)s) or is "
                        "skipped, listed in _run.json, its fields marked complete = false")
    p.add_argument("--s3-region", default=st["region"] or None, help="S3 region of the store")
    p.add_argument("--s3-endpoint", default=st["endpoint"] or None,
                   help="S3-compatible endpoint URL, e.g. http://127.0.0.1:9000")
    p.add_argument("--retries", type=int, default=st["retries"],
                   help="retries per store request on 5xx, throttling, dropped connections "
                        "(default %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="show Spark's own logging")
    args = p.parse_args(argv)
    for name in ("store", "fields", "out"):
        if not getattr(args, name):
            p.error(f"--{name} is required (or set job.{name} in a --conf file)")
    args.settings = d
    args.stats = [s.strip() for s in args.stats.split(",") if s.strip()]
    args.quantiles = quantiles.parse(args.stats)
    unknown = sorted(set(args.stats) - set(STATS) - set(args.quantiles))
    if unknown:
        p.error(f"unknown statistic(s) {unknown}; choose among {list(STATS)}, median, pNN")
    if args.quantiles and args.pixels == "fraction":
        p.error(f"quantiles ({', '.join(args.quantiles)}) are not available with --pixels fraction: "
                "weighted quantiles are not implemented; use --pixels center or all-touched")
    return args


def access(args) -> zstore.Access:
    st = args.settings["store"]
    return zstore.Access(args.store, region=args.s3_region, endpoint=args.s3_endpoint,
                         retries=args.retries, retry_timeout=float(st["retry_timeout"]),
                         backoff=float(st["backoff"]), concurrency=int(st["concurrency"]))


def sql(spark, name: str, **params):
    text = (SQL / name).read_text()
    return spark.sql(text, args=params)


def spark_session(master: str | None, verbose: bool, settings: dict | None = None):
    """A Sedona-enabled session. Under spark-submit (or in a running session), what it was given
    (--master, --conf, --jars, --packages) wins; the settings here only fill what is unset."""
    from pyspark import SparkConf, SparkContext
    from sedona.spark import SedonaContext

    d = settings or config.load()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    preset = {}
    active = SparkContext._active_spark_context  # notebooks, Databricks, a test session
    if active is not None:
        preset = dict(active.getConf().getAll())
    elif "PYSPARK_GATEWAY_PORT" in os.environ:  # started by spark-submit: its JVM is already up
        SparkContext._ensure_initialized()
        preset = dict(SparkConf().getAll())
    builder = SedonaContext.builder().appName("aef-zonal")
    if master or "spark.master" not in preset:
        builder = builder.master(master or d["spark"]["master"])
    if not {"spark.jars", "spark.jars.packages"} & set(preset):
        try:
            builder = builder.config("spark.jars", ",".join(str(j) for j in config.jars(d)))
        except FileNotFoundError as e:
            raise JobError(str(e)) from e
    for key, value in d["spark"].get("conf", {}).items():
        if key not in preset:
            builder = builder.config(key, str(value))
    try:
        spark = SedonaContext.create(builder.getOrCreate())
    except TypeError as e:  # py4j's JavaPackage: the Sedona classes are not on the driver
        raise JobError("Sedona's jars are not on the driver's classpath; with spark-submit pass "
                       "them with --jars (see README: Running with spark-submit)") from e
    spark.sparkContext.setLogLevel("WARN" if verbose else "ERROR")
    storage.configure(spark, d)
    return spark


def fit_pca(stats, total: int, sample: int, seed: int) -> dict:
    """Fit on a random sample of the field-year means with a valid pixel (`total` of them)."""
    from udfs import pca

    if total < 3:  # three components need three points
        raise JobError(f"only {total} field-year(s) have a valid pixel: too few to fit the PCA "
                       "(3 needed); pass --pca-model with the _pca_model.json of a larger run")
    frac = min(1.0, 1.2 * sample / total)
    # Arrow, not Rows: 100,000 means of 64 doubles as Python objects cost seconds
    means = (stats.where("count > 0").sample(fraction=frac, seed=seed).select("mean")
             .limit(sample).toArrow().column("mean").combine_chunks())
    return pca.fit(means.flatten().to_numpy().reshape(len(means), -1), seed)


TASKS_PER_BATCH = 16


def forget_zip_importers():
    """Drop the zip importers (pyspark.zip, py4j) from the import cache of a Python worker.

    PySpark calls importlib.invalidate_caches() before every task, and on Python < 3.12 each
    cached zipimporter re-reads its whole archive directory there (CPython gh-103200): 14 of
    them cost 0.15-0.33 s per task on this machine, a quarter of a small task's time. Forgotten
    importers are rebuilt on the next import that needs one.
    """
    import zipimport

    for path, importer in list(sys.path_importer_cache.items()):
        if isinstance(importer, zipimport.zipimporter):
            del sys.path_importer_cache[path]


def hilbert_udf():
    from pyspark.sql.functions import pandas_udf

    from udfs.grid import hilbert_key

    @pandas_udf("long")
    def hilbert(x: pd.Series, y: pd.Series) -> pd.Series:
        forget_zip_importers()
        return pd.Series(hilbert_key(x.to_numpy(), y.to_numpy()))

    return hilbert


def pca_udf(model_broadcast):
    """pca_rgb(mean) for the output SQL: udfs.pca.apply on a batch of means (numpy, 3 x 64 dot
    products per row); the model reaches the workers once as a Spark broadcast variable."""
    from pyspark.sql.functions import pandas_udf

    from udfs import pca

    @pandas_udf("array<float>")
    def pca_rgb(mean: pd.Series) -> pd.Series:
        forget_zip_importers()
        has = mean.notna().to_numpy()
        out = [None] * len(mean)  # a plain list: masked assignment into a Series costs 6x more
        if has.any():
            rgb = pca.apply(model_broadcast.value, np.stack(mean[has].to_numpy())).astype(np.float32)
            for i, v in zip(np.flatnonzero(has), rgb):
                out[i] = v
        return pd.Series(out, dtype=object)

    return pca_rgb


def finish_function(fin):
    """The mapInArrow body of the aggregate stage (udfs/finish.py)."""
    from udfs.finish import finish_batches

    def finish_partition(batches):
        yield from finish_batches(batches, fin)
        forget_zip_importers()

    return finish_partition


def versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in
            ("aef-zonal", "pyspark", "apache-sedona", "zarr", "numpy", "numba", "obstore")} | {
        "python": sys.version.split()[0]}


def reduce_function(acc: zstore.Access, red, skip_bad: bool, counters: dict):
    """The mapInArrow body, closed over what every worker needs (all small and picklable)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from udfs import tasks

    kill_marker = os.environ.get("AEF_ZONAL_TEST_KILL_ONCE")  # test hook: a worker dies once

    def reduce_partition(batches):
        reader = zstore.reader(acc, red.grid, skip_bad)
        reads0, requests0, bytes0 = reader.reads, reader.requests, reader.bytes
        fy = 0.0

        def counted(batch_iter):
            nonlocal fy
            for batch in batch_iter:  # Arrow compute: the reduce loop converts the rows itself
                f = batch.column("fields").flatten()
                years = pc.cast(pc.list_value_length(f.field("years")), pa.float64())
                fy += pc.sum(pc.divide(years, pc.cast(f.field("chunks"), pa.float64()))).as_py() or 0.0
                yield batch

        if kill_marker and not os.path.exists(kill_marker):
            Path(kill_marker).touch()
            os._exit(1)
        yield from tasks.reduce_batches(counted(batches), red, reader.submit)
        counters["chunk_reads"].add(reader.reads - reads0)
        counters["requests"].add(reader.requests - requests0)
        counters["bytes"].add(reader.bytes - bytes0)
        counters["field_years"].add(fy)
        forget_zip_importers()

    return reduce_partition


def chunk_error(e: BaseException) -> str | None:
    """The message of a worker's ChunkError inside a Spark exception, if that is what failed."""
    m = re.search(r"ChunkError: (.+)", str(e))
    return m.group(1).strip() if m else None


def run(args) -> dict:
    from pyproj import CRS
    from pyspark.sql import functions as F

    from jobs import fields as fields_stage
    from jobs.progress import Progress
    from udfs import finish, pca, tasks

    timings, t0 = {}, time.perf_counter()

    def lap(stage):
        nonlocal t0
        timings[stage] = round(time.perf_counter() - t0, 2)
        print(f"[aef-zonal] {stage}: {timings[stage]} s", flush=True)
        t0 = time.perf_counter()

    acc = access(args)
    try:
        info = zstore.describe(acc)
    except zstore.StoreError as e:
        raise JobError(str(e)) from e
    years = args.years or list(info.years)
    absent = sorted(set(years) - set(info.years))
    if absent:
        raise JobError(f"year(s) {absent} not in store {args.store}; it has {list(info.years)}")
    g, q = info.grid, info.quant
    spark = spark_session(args.master, args.verbose, args.settings)
    secrets = storage.secret_values(args.settings)
    target = output.Output(spark, args.out, args.mode, secrets)
    try:
        previous = target.check(args.stats, args.pixels)
    except (output.OutputError, storage.StorageError) as e:
        raise JobError(str(e)) from e
    lap("start spark")

    report: dict = {}
    persisted = []
    try:
        try:
            year_column = fields_stage.load(spark, args.fields, args.year_column)
            crs = fields_stage.source_crs(spark, args.fields, report)
            sql(spark, "10_fields.sql", source_crs=crs).createOrReplaceTempView("fields")
            report.update(fields_stage.validate(spark, args.fields))
            fields = fields_stage.select_years(spark.table("fields"), args.fields, year_column,
                                               years, info.years, args.skip_missing_years, report)
        except (fields_stage.FieldsError, storage.StorageError) as e:
            raise JobError(str(e)) from e
        fields = fields.persist()
        persisted.append(fields)
        fields.createOrReplaceTempView("fields")
        lap("fields")

        chunk_deg = g.chunk * g.res
        sql(spark, "20_assign.sql", xmin=g.xmin, ymax=g.ymax, chunk_deg=chunk_deg,
            chunk_rows=g.chunk_rows, chunk_cols=g.chunk_cols).createOrReplaceTempView("field_chunks")
        chunk_tasks = sql(spark, "30_chunk_tasks.sql", years=F.array(*[F.lit(y) for y in years]))
        chunk_tasks = chunk_tasks.persist()
        persisted.append(chunk_tasks)
        totals = chunk_tasks.selectExpr(
            "COUNT(*) AS tasks",
            "SUM(SIZE(ARRAY_DISTINCT(FLATTEN(TRANSFORM(fields, f -> f.years))))) AS reads").first()
        field_years = spark.createDataFrame([(y, info.time_index(y)) for y in years], "year int, t int")
        (fields.select("feature_id", "layer_year").crossJoin(field_years)
            .where("layer_year IS NULL OR layer_year = year")
            .createOrReplaceTempView("field_years"))
        n_field_years = spark.table("field_years").count()
        report.update(chunk_tasks=totals.tasks, field_years=n_field_years)
        lap("assign")

        red = tasks.Reduction(g, q, info.years, info.bands, rule=args.pixels,
                              extremes=bool({"min", "max"} & set(args.stats)),
                              histograms=bool(args.quantiles))
        sc = spark.sparkContext
        counters = {"chunk_reads": sc.accumulator(0), "requests": sc.accumulator(0),
                    "bytes": sc.accumulator(0), "field_years": sc.accumulator(0.0)}
        n_tasks = max(totals.tasks, 1)
        partitions = max(1, min(n_tasks, max(4 * sc.defaultParallelism, n_tasks // 32)))
        partials = (chunk_tasks.repartitionByRange(partitions, "cy", "cx")
                    .mapInArrow(reduce_function(acc, red, args.on_bad_chunk == "skip", counters),
                                red.schema())).persist()
        persisted.append(partials)
        partials.createOrReplaceTempView("partials")
        # a few chunk tasks per Arrow batch (each reads 4 MiB per year), so reads spread over
        # the workers and the progress counter moves; later Arrow UDFs keep Spark's 10,000 rows
        # (16 there made the Hilbert key UDF alone take 18 s of the benchmark's write stage)
        batch_key = "spark.sql.execution.arrow.maxRecordsPerBatch"
        batch_default = spark.conf.get(batch_key)
        spark.conf.set(batch_key, str(TASKS_PER_BATCH))
        with Progress(sc, totals.reads or 0, n_field_years, counters):
            try:
                report["partials"] = partials.count()
            except Exception as e:
                message = chunk_error(e)
                if message:
                    raise JobError(message) from e
                raise
            finally:
                spark.conf.set(batch_key, batch_default)
        reads = counters["chunk_reads"].value
        report.update({
            "chunk_reads": reads, "requests": counters["requests"].value,
            "requests_per_chunk": round(counters["requests"].value / max(reads, 1), 3),
            "bytes_read": counters["bytes"].value,
        })
        lap("reduce")

        fin = finish.Finish(q, info.bands, weighted=red.weighted, extremes=red.extremes,
                            sums="sum" in args.stats, normalized="mean_normalized" in args.stats,
                            qs=tuple(args.quantiles.values()))
        # a few large Arrow batches per core: each Python task has a fixed cost, a batch of
        # field-years hardly any
        stats = (sql(spark, "40_aggregate.sql", extremes=red.extremes)
                 .coalesce(2 * sc.defaultParallelism)
                 .mapInArrow(finish_function(fin), fin.schema()).persist())
        persisted.append(stats)
        stats.createOrReplaceTempView("stats")
        seen = stats.selectExpr("COUNT_IF(count > 0) AS with_pixels",
                                "ARRAY_SORT(ARRAY_DISTINCT(FLATTEN(COLLECT_LIST(skipped_chunks)))) AS skipped").first()
        report["field_years_with_pixels"] = seen.with_pixels
        report["skipped_chunks"] = list(seen.skipped)
        lap("aggregate")

        if args.pca_model:
            model = pca.loads(target.fs.read_text(args.pca_model), args.pca_model)
        elif previous is not None:  # --mode add: new partitions keep the dataset's colours
            model = pca.loads(target.read_text("_pca_model.json"), args.out)
        else:
            model = fit_pca(stats, seen.with_pixels, args.pca_sample, args.seed)
        spark.udf.register("pca_rgb", pca_udf(spark.sparkContext.broadcast(model)))
        lap("pca")

        spark.udf.register("hilbert_key", hilbert_udf())
        result = sql(spark, "50_output.sql", store=args.store, xmin=g.xmin, ymax=g.ymax, res=g.res,
                     shard=g.shard, width=g.width, height=g.height)
        for i, name in enumerate(args.quantiles):  # one list<double>(64) column per quantile
            result = result.withColumn(name, F.col("quantiles")[i])
        # mean is part of the published schema: always written
        result = result.drop("quantiles", *[s for s in OPTIONAL_STATS if s not in args.stats])

        try:
            target.write(result, CRS.from_user_input("EPSG:4326").to_json())
            target.save_text("_pca_model.json", pca.dumps(model))
            # what was written, read back: one small query over the partition columns and reason
            written = (target.written().groupBy("time", "label", "reason")
                       .agg(F.count("*").alias("rows")).collect())
            summary = {}
            for r in sorted(written, key=lambda r: (r.time, r.label)):
                part = f"time={r.time}/label={r.label}"
                summary[part] = summary.get(part, 0) + r.rows
            reasons = {}
            for r in written:
                if r.reason is not None:
                    reasons[r.reason] = reasons.get(r.reason, 0) + r.rows
            lap("write")
            report.update({
                "rows_per_partition": summary,
                "rows": sum(summary.values()),
                "rows_count_zero": reasons,
                "complete": not report["skipped_chunks"],
                "seconds": timings,
                "command": storage.redact(" ".join(sys.argv), secrets),
                "store": storage.redact(args.store, secrets),
                "fields_path": storage.redact(args.fields, secrets), "years": years,
                "stats": args.stats, "pixels": args.pixels, "mode": args.mode,
                "versions": versions(),
            })
            target.commit(report)
        except storage.StorageError as e:
            target.abort()
            raise JobError(str(e)) from e
        except BaseException:
            target.abort()
            raise
    finally:  # a long-lived session (notebooks, tests) should not keep this run's tables
        for df in persisted:
            df.unpersist()
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except JobError as e:
        print(f"aef-zonal: error: {storage.redact(str(e), storage.secret_values(args.settings))}",
              file=sys.stderr)
        return 2
    out = storage.redact(args.out, storage.secret_values(args.settings))
    print(f"[aef-zonal] wrote {report['rows']} rows to {out} in "
          f"{sum(report['seconds'].values()):.0f} s (report: {out}/_run.json)")
    print(f"  fields: {report['fields']} ({report['null_geometries']} null, "
          f"{report['empty_geometries']} empty, {report['repaired_geometries']} repaired geometries; "
          f"CRS {report['fields_crs']})")
    print(f"  read: {report['chunk_reads']} chunks, {report['bytes_read'] / 1e6:,.0f} MB, "
          f"{report['requests']} requests")
    for part, n in report["rows_per_partition"].items():
        print(f"  {part}: {n}")
    if report["rows_count_zero"]:
        print("  rows with count = 0: " + ", ".join(f"{n} ({why})" for why, n in report["rows_count_zero"].items()))
    if report["skipped_chunks"]:
        print(f"  INCOMPLETE: {len(report['skipped_chunks'])} undecodable chunk(s) skipped; "
              f"see {out}/_run.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
