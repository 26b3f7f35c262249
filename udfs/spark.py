"""The functions Spark runs in its Python workers: mapInArrow bodies and pandas UDFs.

Each is built on the driver, closed over what every worker needs (small and picklable), and
wrapped by `per_task`, the one place for per-task housekeeping.
"""

from __future__ import annotations

import functools
import gc
import inspect
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd  # module-level: pandas_udf resolves the type hints in this module
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.accumulators import AccumulatorParam


def forget_zip_importers():
    """Drop the zip importers (pyspark.zip, py4j) from the import cache of a Python worker.

    PySpark calls importlib.invalidate_caches() before every task, and on Python < 3.12 each
    cached zipimporter re-reads its whole archive directory there (CPython gh-103200), a large
    share of a small task's time. Forgotten importers are rebuilt on the next import that
    needs one.
    """
    import zipimport

    for path, importer in list(sys.path_importer_cache.items()):
        if isinstance(importer, zipimport.zipimporter):
            del sys.path_importer_cache[path]


_modules_frozen = 0


def freeze_imports():
    """Move what a Python worker holds out of the cyclic collector's sight (gc.freeze) whenever
    modules were imported since the last time: a handful of times per worker.

    PySpark's daemon runs gc.collect() after every task, and a worker that has imported numba,
    pyarrow and zarr holds ~180,000 objects: ~90 ms a collection, each task. Collected first, so
    only live objects are frozen (a pandas UDF's later batch may hold its task's garbage); the
    daemon's collections then walk only what later tasks create.
    """
    global _modules_frozen
    if len(sys.modules) != _modules_frozen:
        gc.collect()
        gc.freeze()
        _modules_frozen = len(sys.modules)


def per_task(fn):
    """`fn` (a mapInArrow body or a pandas UDF's function) with the per-task housekeeping around it."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def partition(*args):
            freeze_imports()
            yield from fn(*args)
            forget_zip_importers()

        return partition

    @functools.wraps(fn)
    def batch(*args):
        freeze_imports()
        try:
            return fn(*args)
        finally:
            forget_zip_importers()

    return batch


class Messages(AccumulatorParam):
    """An accumulator of texts: a worker's errors, handed to the driver as values."""

    def zero(self, value):
        return []

    def addInPlace(self, a, b):
        return a + b


def reduce_partitions(access, red, skip_bad: bool, counters: dict):
    """The reduce stage: chunk tasks -> partials (udfs/tasks.py), reads counted in `counters`
    (Spark accumulators: chunk_reads, requests, bytes, field_years). A chunk that cannot be
    read or decoded (store.ChunkError) ends its task early, successfully, with the error in
    `counters["errors"]`: the driver fails the run with it (Spark would only pass on its text,
    after retrying a task whose chunk will not decode the next time either)."""
    from aef_zonal.udfs import store, tasks

    kill_marker = os.environ.get("AEF_ZONAL_TEST_KILL_ONCE")  # test hook: a worker dies once

    @per_task
    def reduce_partition(batches):
        reader = store.reader(access, red.grid, skip_bad)
        reads0, requests0, bytes0 = reader.reads, reader.requests, reader.bytes
        fy = 0.0

        def counted(batch_iter):
            nonlocal fy
            for batch in batch_iter:  # Arrow compute: the reduce loop converts the rows itself
                f = batch.column("fields").flatten()
                years = pc.cast(pc.list_value_length(f.field("years")), pa.float64())
                fy += (
                    pc.sum(pc.divide(years, pc.cast(f.field("chunks"), pa.float64()))).as_py()
                    or 0.0
                )
                yield batch

        if kill_marker and not os.path.exists(kill_marker):
            Path(kill_marker).touch()
            os._exit(1)
        try:
            yield from tasks.reduce_batches(counted(batches), red, reader.submit)
        except store.ChunkError as e:
            counters["errors"].add([str(e)])
        counters["chunk_reads"].add(reader.reads - reads0)
        counters["requests"].add(reader.requests - requests0)
        counters["bytes"].add(reader.bytes - bytes0)
        counters["field_years"].add(fy)

    return reduce_partition


def warm_partitions(red):
    """Run ahead of the reduce stage (jobs/stages/reduce.warm): aef_zonal.udfs.tasks.warm_up (imports,
    kernels) in workers the stages after it reuse; yields nothing."""
    from aef_zonal.udfs import finish, tasks  # noqa: F401  finish: the aggregate stage's worker code

    @per_task
    def warm_partition(batches):
        for _ in batches:
            pass
        tasks.warm_up(red)
        yield from ()

    return warm_partition


def finish_partitions(fin):
    """The aggregate stage: partial lists -> statistics (udfs/finish.py)."""
    from aef_zonal.udfs.finish import finish_batches

    @per_task
    def finish_partition(batches):
        yield from finish_batches(batches, fin)

    return finish_partition


def pca_rgb(model_broadcast):
    """pca_rgb(mean): aef_zonal.udfs.pca_model.apply on a batch of means (3 x 64 dot products per row); the
    model reaches the workers once, as a Spark broadcast variable."""
    from pyspark.sql.functions import pandas_udf

    from aef_zonal.udfs import pca_model

    @pandas_udf("array<float>")
    @per_task
    def pca_rgb(mean: pd.Series) -> pd.Series:
        # no model (too few means to fit one): null components
        has = mean.notna().to_numpy() & (model_broadcast.value is not None)
        out = [None] * len(mean)  # a list, not a Series: masked assignment into one is slow
        if has.any():
            rgb = pca_model.apply(model_broadcast.value, np.stack(mean[has].to_numpy())).astype(
                np.float32
            )
            for i, v in zip(np.flatnonzero(has), rgb):
                out[i] = v
        return pd.Series(out, dtype=object)

    return pca_rgb


def hilbert_key():
    """hilbert_key(x, y): aef_zonal.udfs.grid.hilbert_key on a batch of points."""
    from pyspark.sql.functions import pandas_udf

    from aef_zonal.udfs import grid

    @pandas_udf("long")
    @per_task
    def hilbert_key(x: pd.Series, y: pd.Series) -> pd.Series:
        return pd.Series(grid.hilbert_key(x.to_numpy(), y.to_numpy()))

    return hilbert_key
