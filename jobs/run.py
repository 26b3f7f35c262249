"""The aef-zonal job: fields -> assign -> chunk tasks -> reduce -> aggregate -> pca -> output
rows, then written and committed.

`zonal_stats()` is the one way in: the command line (`aef-zonal run`), spark-submit
(jobs/submit.py) and notebooks all call it. Each stage (jobs/stages/) takes the tables it
needs and returns its table and its part of the report; the SQL stages are the files of sql/,
the executor side is udfs/spark.py.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading

from aef_zonal import config, filesystem, formats, options, redaction, report, session
from aef_zonal.errors import JobError
from aef_zonal.options import Options
from aef_zonal.stages import aggregate, assign, fields, output, pca, reduce
from aef_zonal.udfs import statistics
from aef_zonal.udfs import store as zstore


def zonal_stats(
    fields,
    store: str | None = None,
    *,
    layer: str | None = None,
    years: list[int] | None = None,
    stats: str | list[str] | None = None,
    pixels: str | None = None,
    min_coverage: float | None = None,
    keep_columns: str | list[str] | None = None,
    pca_model: str | None = None,
    pca_sample: int | None = None,
    seed: int | None = None,
    year_column: str | None = None,
    skip_missing_years: bool = False,
    rows_without_pixels: str | None = None,
    on_bad_chunk: str | None = None,
    s3_region: str | None = None,
    s3_endpoint: str | None = None,
    retries: int | None = None,
    conf: str | os.PathLike | None = None,
    master: str | None = None,
    verbose: bool = False,
    spark=None,
) -> ZonalStats:
    """Per-field statistics of an AEF embeddings Zarr store, one row per field and year.

    fields: a Spark DataFrame (a `geometry` column -- a Sedona geometry, WKB bytes or WKT text;
        an integer `feature_id`; optional `label`, `score_mean`, `score_std`, a `time`/`year`
        column and any columns to keep) or the path/URL of a GeoParquet file or folder, a
        GeoPackage (`layer`), Shapefile, GeoJSON or FlatGeobuf file. A DataFrame's CRS is its
        geometries' SRID, or the store's when they have none.
    store: the Zarr store: a path, s3://bucket/prefix or https://host/path.
    The other keywords are `aef-zonal run`'s options of the same name (`aef-zonal run --help`);
    None takes the default of conf/defaults.toml, or of the `conf` file over it.
    spark: the session to run in; default the active one, else one is started (local mode unless
        `master` or the settings say otherwise). A caller's session is never stopped nor
        reconfigured: the job's SQL settings apply to its own stages only.

    The stages up to the output rows run now (their tables cached until `close()`); `df` is
    the rows, `write()` publishes them. Bad input raises JobError, whose message says what
    and how to fix it.
    """
    o = options.build(
        config.load(conf),
        store=store,
        fields=fields,
        layer=layer,
        years=years,
        stats=stats,
        pixels=pixels,
        min_coverage=min_coverage,
        keep_columns=keep_columns,
        pca_model=pca_model,
        pca_sample=pca_sample,
        seed=seed,
        year_column=year_column,
        skip_missing_years=skip_missing_years,
        rows_without_pixels=rows_without_pixels,
        on_bad_chunk=on_bad_chunk,
        s3_region=s3_region,
        s3_endpoint=s3_endpoint,
        retries=retries,
        master=master,
        verbose=verbose,
    )
    run = ZonalStats(o, spark)
    try:
        run.compute()
    except BaseException:
        run.close()
        raise
    return run


def spark_session(
    master: str | None = None, conf: str | os.PathLike | None = None, verbose: bool = False
):
    """The Sedona-enabled session the job runs in: the active one (Sedona's functions registered
    in it), else one started with the settings (conf/defaults.toml, `conf` over it): local mode
    unless `master` says otherwise, Sedona's jars from `make setup`'s cache or resolved by Spark
    from Maven Central."""
    return session.spark_session(master, verbose, config.load(conf))[0]


class ZonalStats:
    """One run of the job in a Spark session.

    df: the output rows as a Spark DataFrame, with the columns the GeoParquet holds (`time` and
        `label` included); lazily evaluated over the run's cached tables. The field-years with
        a valid pixel (every one with rows_without_pixels="inline").
    without_pixels: the field-years without a valid pixel (feature_id, time, label, reason), as
        _without_pixels lists them.
    report: what _run.json holds so far (after `write()`, all of it).
    """

    def __init__(self, o: Options, spark=None):
        self.options = o
        self._chain = report.Chain()
        self.spark, self.store, self.years, self._owned = self._chain(
            "start spark", start, o, spark
        )
        self._chain.sc = self.spark.sparkContext
        self.df = self.without_pixels = self.model = self.layout = self._packed = None
        # the kept columns are not known yet: they change what rows carry, not the kernels
        reduce.warm(self.spark, o, self.store, output.layout(o, self.store, []))

    @property
    def report(self) -> dict:
        return dict(self._chain.report)

    def compute(self, kept_model: dict | None = None):
        """The stages up to the output rows; `kept_model`: the PCA model of the dataset a
        `--mode add` run adds to."""
        o, spark, store, chain = self.options, self.spark, self.store, self._chain
        with session.job_settings(spark, o.settings, self._owned):
            fields_ = chain("fields", fields.fields, spark, o, store, self.years)
            assigned = chain("assign", assign.assign, spark, o, fields_.df, store.grid)
            tasks = chain("chunk_tasks", assign.chunk_tasks, spark, assigned, self.years)
            field_years = chain("field_years", assign.field_years, spark, assigned, self.years)
            self.layout = output.layout(o, store, output.kept_fields(fields_.df))
            drawn = pca.probability(o, fields_.field_years, kept_model is not None)
            scratch = chain.hold(output.scratch_folder(spark, o))
            meter = reduce.Meter(
                spark.sparkContext, tasks.reads, fields_.field_years, tasks.field_years
            )
            reduced = chain(
                "reduce", reduce.reduce, spark, o, store, tasks, meter, self.layout, drawn,
                scratch, meter=meter,
            )  # fmt: skip
            stats = chain("aggregate", aggregate.aggregate, spark, o, store, reduced)
            self.model = chain("pca", pca.pca, o, reduced, stats, kept_model, drawn)
            self._packed = chain(
                "rows", output.rows_packed, spark, o, self.layout, reduced, field_years,
                stats.df, scratch,
            )  # fmt: skip
            files = output.files(spark, store, self.layout, self.model)
            self.df, self.without_pixels = output.split(o, output.frame(spark, self._packed, files))

    def write(self, out: str | os.PathLike, mode: str = "error") -> dict:
        """Publish the rows at `out` (a path or URL: local, HDFS, s3://) as the command line
        does: Hive-partitioned GeoParquet, _pca_model.json, _run.json, then committed.
        mode: when `out` exists, refuse it (error), replace it (overwrite), or replace only the
        time/label partitions this run writes (add; its rows then take the dataset's PCA
        colours). Returns the run report."""
        target, kept = output.check(self.spark, self.options, str(out), mode)
        return self._write(target, kept)

    def _write(self, target, kept_model: dict | None) -> dict:
        o, chain = self.options, self._chain
        model = self.model
        if kept_model is not None and not o.pca_model:
            model = kept_model
        files = output.files(self.spark, self.store, self.layout, model)
        settings = session.job_settings(self.spark, o.settings, self._owned)
        with settings, output.staged(target):
            covered = chain(
                "write", output.write, o, target, self._packed, files,
                lambda: output.frame(self.spark, self._packed, files),
            )  # fmt: skip
            command = " ".join(sys.argv) if o.out is not None else "aef_zonal.zonal_stats"
            return output.commit(
                o, target, covered, chain.report, chain.seconds, self.years, command
            )

    def close(self):
        """Release the run's cached tables and its rows' scratch folder (`df` cannot be read
        after it). A session the run started keeps running too, for other runs in this
        process."""
        self._chain.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run(o: Options) -> dict:
    """`aef-zonal run`: the rows computed and written to --out, refused before any stage when
    --out cannot take them."""
    output.check_local(o)
    job = ZonalStats(o)
    try:
        target, kept = output.check(job.spark, o, o.out, o.mode)
        job.compute(kept)
        return job._write(target, kept)
    finally:
        job.close()


def start(o: Options, spark=None):
    """The store described (its grid and quantisation), the years to reduce, the Spark session
    and whether the run started it. A local fields file is looked at first: one of another
    format is refused before the JVM starts."""
    if isinstance(o.fields, str) and filesystem.local_path(o.fields) is not None:
        try:
            formats.identify(o.fields, o.layer, formats.LocalFiles())
        except formats.FormatError as e:
            raise JobError(str(e)) from None
    try:
        store = zstore.describe(o.access())
    except zstore.StoreError as e:
        raise JobError(str(e)) from e
    histograms = [s.name for s in o.statistics if statistics.HISTOGRAMS in s.needs]
    if store.quant.floats and histograms:
        raise JobError(
            f"{', '.join(histograms)}: not available for the {store.quant.dtype} store "
            f"{o.store}: these statistics are read off the histograms of int8 codes, and a float "
            "store's values have no such small set; ask for count, mean, std, min, max, sum "
            "instead"
        )
    years = o.years or list(store.years)
    absent = sorted(set(years) - set(store.years))
    if absent:
        raise JobError(f"year(s) {absent} not in store {o.store}; it has {list(store.years)}")
    # what the driver imports later loads while it waits for the JVM: scikit-learn (the PCA
    # fit) takes about a second
    for module in ("pyproj", *(() if o.pca_model else ("sklearn.decomposition",))):
        threading.Thread(target=importlib.import_module, args=(module,), daemon=True).start()
    rows = filesystem.local_rows(o.fields) if isinstance(o.fields, str) else None
    urls = [u for u in (o.fields, o.out, o.pca_model) if isinstance(u, str)]
    spark, owned = session.spark_session(
        o.master,
        o.verbose,
        o.settings,
        None if rows is None else rows * len(years),
        spark=spark,
        s3=any(filesystem.is_s3(u) for u in urls),
    )
    return (spark, store, years, owned), {}


def main(argv=None) -> int:
    o = options.parse(argv)
    try:
        result = run(o)
    except JobError as e:
        print(
            f"aef-zonal: error: {redaction.redact(str(e), redaction.secret_values(o.settings))}",
            file=sys.stderr,
        )
        return 2
    report.summary(result, redaction.redact(o.out, redaction.secret_values(o.settings)))
    return 0
