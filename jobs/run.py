"""The aef-zonal job: fields -> assign -> chunk tasks -> reduce -> aggregate -> pca -> change -> output.

Each stage (jobs/stages/) takes the tables it needs and returns its table and its part of the
report; the SQL stages are the files of sql/, the executor side is udfs/spark.py.
"""
from __future__ import annotations

import importlib
import sys
import threading

from jobs import options, report, session, storage
from jobs.options import JobError, Options
from jobs.stages import aggregate, assign, change, fields, output, pca, reduce
from udfs import store as zstore


def run(o: Options) -> dict:
    chain = report.Chain()
    spark, store, years = chain("start spark", start, o)
    chain.sc = spark.sparkContext
    reduce.warm(spark, o, store)
    try:
        target, model_kept = output.check(spark, o)  # refuse a bad --out before any stage
        fields_ = chain("fields", fields.fields, spark, o, store, years)
        field_chunks = chain("assign", assign.assign, spark, fields_, store.grid)
        tasks = chain("chunk_tasks", assign.chunk_tasks, spark, field_chunks, years)
        field_years = chain("field_years", assign.field_years, spark, fields_, store.grid, years)
        totals = chain.report
        meter = reduce.Meter(spark.sparkContext, totals["chunk_reads_planned"], totals["field_years"])
        partials = chain("reduce", reduce.reduce, spark, o, store, tasks, totals["chunk_tasks"], meter,
                         meter=meter)
        stats = chain("aggregate", aggregate.aggregate, spark, o, store, partials)
        model = chain("pca", pca.pca, o, stats, totals["field_years_with_pixels"], model_kept)
        stats = chain("change", change.change, spark, o, stats)
        with output.staged(target):
            chain("write", output.write, spark, o, store, field_years, stats, model, target)
            return output.commit(o, target, chain.report, chain.seconds, years)
    finally:
        chain.release()


def start(o: Options):
    """The store described (its grid and quantisation), the years to reduce, the Spark session."""
    try:
        store = zstore.describe(o.access())
    except zstore.StoreError as e:
        raise JobError(str(e)) from e
    if store.quant.floats and o.quantiles:
        raise JobError(f"quantiles ({', '.join(o.quantiles)}) are not available for the {store.quant.dtype} "
                       f"store {o.store}: exact quantiles are read off the histograms of int8 codes, "
                       "and a float store's values have no such small set; ask for count, mean, "
                       "std, min, max, sum instead")
    years = o.years or list(store.years)
    absent = sorted(set(years) - set(store.years))
    if absent:
        raise JobError(f"year(s) {absent} not in store {o.store}; it has {list(store.years)}")
    # what the driver imports later loads while it waits for the JVM: scikit-learn (the PCA
    # fit) takes about a second
    for module in ("pyproj", *(() if o.pca_model else ("sklearn.decomposition",))):
        threading.Thread(target=importlib.import_module, args=(module,), daemon=True).start()
    rows = storage.local_rows(o.fields)
    return (session.spark_session(o.master, o.verbose, o.settings,
                                  None if rows is None else rows * len(years)), store, years), {}


def main(argv=None) -> int:
    o = options.parse(argv)
    try:
        result = run(o)
    except JobError as e:
        print(f"aef-zonal: error: {storage.redact(str(e), storage.secret_values(o.settings))}",
              file=sys.stderr)
        return 2
    report.summary(result, storage.redact(o.out, storage.secret_values(o.settings)))
    return 0
