"""The Sedona-enabled Spark session, and running a stage's SQL file in it."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from importlib.resources import files

from aef_zonal import config, filesystem
from aef_zonal.errors import JobError

SQL = files("aef_zonal.sql")
# the driver JVM's logging without -v: errors only (spark-submit takes it as
# --driver-java-options -Dlog4j2.configurationFile=…, docs/deploy.md)
LOG_CONFIG = files("aef_zonal.conf") / "log4j2.properties"
# what the JDK itself prints as the driver's JVM starts (Spark's launcher adds that module), which
# no logging setting reaches
JVM_NOISE = re.compile(rb"^WARNING: Using incubator modules: ")


def spark_session(
    master: str | None,
    verbose: bool,
    settings: dict | None = None,
    field_years: int | None = None,
    *,
    spark=None,
    s3: bool = False,
):
    """A Sedona-enabled session and whether this call started it.

    A caller's session (`spark`, or the one already running: a notebook, Databricks, a test) is
    used as it is: its settings are never changed, Sedona's functions are registered in it if
    they are not yet. Under spark-submit, what it was given (--master, --conf, --jars,
    --packages) wins; the settings here only fill what is unset. A session started here gets
    the settings' [spark.conf], and Sedona's jars (and, when the run names an `s3` URL, S3A's)
    from the local cache `make setup` fills, or else by their Maven coordinates through Spark's
    own resolution (spark.jars.packages). `field_years`: the run's size as far as it is known
    before the JVM starts (its compilers)."""
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession
    from sedona.spark import SedonaContext

    d = settings or config.load()
    if spark is None and SparkContext._active_spark_context is not None:
        spark = SparkSession.builder.getOrCreate()
    if spark is not None:
        return _with_sedona(spark, d), False
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    preset, launches = {}, False
    if "PYSPARK_GATEWAY_PORT" in os.environ:  # started by spark-submit: its JVM is already up
        SparkContext._ensure_initialized()
        preset = dict(SparkConf().getAll())
    else:
        launches = True
    builder = SedonaContext.builder().appName("aef-zonal")
    if master or "spark.master" not in preset:
        builder = builder.master(master or d["spark"]["master"])
    conf = dict(d["spark"].get("conf", {}))
    if not {"spark.jars", "spark.jars.packages"} & set(preset):
        conf |= config.jar_settings(d, s3=s3)
    if not verbose:
        # as the context starts: under spark-submit, whose logging is Spark's default profile
        # (INFO) unless it was given LOG_CONFIG, the hundred lines of the context's start
        conf["spark.log.level"] = "ERROR"
    if launches:  # this process starts the driver's JVM
        java = config.class_archive_options() + config.jit_options(field_years, d)
        if not verbose:
            java.append(f"-Dlog4j2.configurationFile={LOG_CONFIG}")
        conf["spark.driver.extraJavaOptions"] = " ".join(
            filter(None, (conf.get("spark.driver.extraJavaOptions", ""), *java))
        )
    for key, value in conf.items():
        if key not in preset:
            builder = builder.config(key, str(value))
    if launches and not verbose:
        launch_quietly({**conf, "spark.master": master or d["spark"]["master"]})
    spark = _with_sedona(builder.getOrCreate(), d)
    spark.sparkContext.setLogLevel("WARN" if verbose else "ERROR")
    return spark, True


def launch_quietly(settings: dict[str, str]) -> None:
    """Start the driver's JVM as the session's builder would (spark-submit with the settings a
    JVM takes at its start: its options, memory, jars), its standard error passed on line by
    line but for the JDK's own start-up warning. The JVM and the Python workers it starts keep
    that stream for their lifetime: a daemon thread forwards it to this process's standard
    error for as long as it runs."""
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    conf = SparkConf(loadDefaults=False).setAll([(k, str(v)) for k, v in settings.items()])
    read, write = os.pipe()
    try:
        gateway = launch_gateway(conf, popen_kwargs={"stderr": write})
    finally:
        os.close(write)
    threading.Thread(
        target=_forward, args=(read,), name="aef-zonal JVM stderr", daemon=True
    ).start()
    SparkContext._ensure_initialized(gateway=gateway)


def _forward(fd: int) -> None:
    with os.fdopen(fd, "rb", buffering=0) as stream:
        for line in iter(stream.readline, b""):
            if not JVM_NOISE.match(line):
                os.write(2, line)


def _with_sedona(spark, settings: dict):
    """`spark` with Sedona's functions registered and `s3://` bound (filesystem.configure)."""
    from sedona.spark import SedonaContext

    try:
        spark = SedonaContext.create(spark)
    except TypeError as e:  # py4j's JavaPackage: the Sedona classes are not on the driver
        packages = ",".join(config.sedona_coordinates(settings, spark.version))
        raise JobError(
            f"Sedona's classes are not in this Spark session; start it with "
            f"spark.jars.packages={packages} (the session's configuration before it "
            "starts, spark-submit --packages, or a cluster library of those Maven "
            "coordinates)"
        ) from e
    filesystem.configure(spark, settings)
    return spark


@contextlib.contextmanager
def job_settings(spark, settings: dict, owned: bool):
    """The settings' Spark SQL options (spark.sql.*) in a caller's session while the job's stages
    run, restored afterwards; a session the job started has them already."""
    if owned:
        yield
        return
    with contextlib.ExitStack() as stack:
        for key, value in settings["spark"].get("conf", {}).items():
            if key.startswith("spark.sql.") and spark.conf.isModifiable(key):
                stack.enter_context(setting(spark, key, value))
        yield


def sql(spark, name: str, tables: dict, columns: dict | None = None, **params):
    """Run sql/<name> over `tables` (the inputs its header names, `{name}` in its text) with its
    named parameters; `columns`: column lists its text takes as `{name}` too (a run's
    statistics). Each input is bound to the temporary view `aef_zonal_<name>`, replaced by
    the next query that takes an input of that name: no view of the caller's is replaced, and
    none is dropped (Spark uncaches a dropped view's plan, which is a cached table's here)."""
    views = {view: f"aef_zonal_{view}" for view in tables}
    for view, df in tables.items():
        df.createOrReplaceTempView(views[view])
    return spark.sql((SQL / name).read_text().format(**views, **(columns or {})), args=params)


@contextlib.contextmanager
def setting(spark, key: str, value):
    """A Spark SQL setting for the actions inside the block only."""
    before = spark.conf.get(key, None)
    spark.conf.set(key, str(value))
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


@contextlib.contextmanager
def cancelled_on(sc, failed, every: float = 0.5):
    """The block's Spark jobs in a job group of their own, cancelled as soon as `failed()` is
    true: a worker's error reaches the driver when its task ends, and the run stops then rather
    than after every other task. The thread's previous group is restored afterwards."""
    group = f"aef-zonal-{threading.get_ident()}-{id(failed)}"
    before = sc.getLocalProperty("spark.jobGroup.id")
    sc.setLocalProperty("spark.jobGroup.id", group)
    done = threading.Event()

    def watch():
        while not done.wait(every):
            if failed():
                sc.cancelJobGroup(group)
                return

    watcher = threading.Thread(target=watch, name="aef-zonal failure watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        sc.setLocalProperty("spark.jobGroup.id", before)
