"""The Sedona-enabled Spark session, and running a stage's SQL file in it."""
from __future__ import annotations

import contextlib
import os
import sys

from jobs import config, storage
from jobs.options import JobError

SQL = config.ROOT / "sql"


def spark_session(master: str | None, verbose: bool, settings: dict | None = None,
                  field_years: int | None = None):
    """A Sedona-enabled session. Under spark-submit (or in a running session), what it was given
    (--master, --conf, --jars, --packages) wins; the settings here only fill what is unset.
    `field_years`: the run's size as far as it is known before the JVM starts (its compilers)."""
    from pyspark import SparkConf, SparkContext
    from sedona.spark import SedonaContext

    d = settings or config.load()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    preset, launches = {}, False
    active = SparkContext._active_spark_context  # notebooks, Databricks, a test session
    if active is not None:
        preset = dict(active.getConf().getAll())
    elif "PYSPARK_GATEWAY_PORT" in os.environ:  # started by spark-submit: its JVM is already up
        SparkContext._ensure_initialized()
        preset = dict(SparkConf().getAll())
    else:
        launches = True
    builder = SedonaContext.builder().appName("aef-zonal")
    if master or "spark.master" not in preset:
        builder = builder.master(master or d["spark"]["master"])
    if not {"spark.jars", "spark.jars.packages"} & set(preset):
        try:
            builder = builder.config("spark.jars", ",".join(str(j) for j in config.jars(d)))
        except FileNotFoundError as e:
            raise JobError(str(e)) from e
    conf = dict(d["spark"].get("conf", {}))
    if launches:  # this process starts the driver's JVM
        java = config.class_archive_options() + config.jit_options(field_years, d)
        conf["spark.driver.extraJavaOptions"] = " ".join(
            filter(None, (conf.get("spark.driver.extraJavaOptions", ""), *java)))
    for key, value in conf.items():
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


def sql(spark, name: str, tables: dict, **params):
    """Run sql/<name> over `tables` (the inputs its header names, bound to those names just
    before the query is analysed) with its named parameters."""
    for view, df in tables.items():
        df.createOrReplaceTempView(view)
    return spark.sql((SQL / name).read_text(), args=params)


@contextlib.contextmanager
def setting(spark, key: str, value):
    """A Spark SQL setting for the actions inside the block only."""
    before = spark.conf.get(key)
    spark.conf.set(key, str(value))
    try:
        yield
    finally:
        spark.conf.set(key, before)
