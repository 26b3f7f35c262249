"""The functions Spark runs in its Python workers: mapInArrow bodies.

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
    """`fn` (a mapInArrow body) with the per-task housekeeping around it."""
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
    read or decoded (store.ChunkError), or rows the scratch folder cannot take (rows.SpillError),
    end the task early, successfully, with the error in `counters["errors"]`: the driver fails
    the run with it (Spark would only pass on its text, after retrying a task whose chunk will
    not decode the next time either)."""
    from aef_zonal.udfs import rows, store, tasks

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
        except (store.ChunkError, rows.SpillError) as e:
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


def rest_partitions(layout, scratch: str | None, errors):
    """The published rows of the field-years the reduce stage did not finish, from
    sql/50_output.sql's rows (udfs/rows.py), packed per (time, label); kept in `scratch` (when
    given) as the reduce stage keeps its rows, a failure to (rows.SpillError) handed to the
    driver in the accumulator `errors`."""
    from aef_zonal.udfs import rows

    @per_task
    def rest_partition(batches):
        try:
            yield from built(batches)
        except rows.SpillError as e:
            errors.add([str(e)])

    def built(batches):
        spill = rows.Spill(scratch) if scratch else None
        carry = None
        for batch in batches:
            if not batch.num_rows:
                continue
            columns = dict(zip(batch.schema.names, batch.columns))
            if layout.change:
                columns["change"], columns["change_from"], carry = rows.change(
                    columns["feature_id"].to_numpy(zero_copy_only=False),
                    columns["year"].to_numpy(zero_copy_only=False),
                    rows.doubles(columns["count"]),
                    rows.dense(columns["mean"]),
                    carry,
                )
            made = rows.build(columns, columns, layout)
            packed = rows.pack(made, columns["year"], columns["label"])
            if spill is None:
                yield packed
            else:
                spill.add(packed)
        if spill is not None and spill.groups:
            yield spill.refs()

    return rest_partition


def drawn_partitions(seed: int, p: float):
    """The field-years of (feature_id, year, mean) rows drawn for the PCA fit
    (udfs/pca_model.py: drawn), as the reduce stage draws those it finishes."""
    from aef_zonal.udfs.pca_model import drawn

    @per_task
    def drawn_partition(batches):
        for b in batches:
            keep = drawn(
                b.column("feature_id").to_numpy(zero_copy_only=False),
                b.column("year").to_numpy(zero_copy_only=False),
                seed,
                p,
            )
            yield b.filter(pa.array(keep))

    return drawn_partition


def write_partitions(files, errors):
    """The writer (udfs/parquet.py): a task's packed rows -> files, one commit message each. A
    file that cannot be written (udfs/s3.py's S3Error after its retries, OSError) ends the task
    early with the error in the accumulator `errors`: the driver fails the run with it and takes
    back what was written."""
    from pyspark import TaskContext

    from aef_zonal.udfs import parquet
    from aef_zonal.udfs.s3 import S3Error

    @per_task
    def write_partition(batches):
        try:
            for message in parquet.write_partition(batches, files, TaskContext.get().partitionId()):
                yield pa.RecordBatch.from_pylist([message], schema=parquet.MESSAGES)
        except (S3Error, OSError) as e:
            errors.add([str(e)])

    return write_partition


def unpack_partitions(files):
    """The published rows from packed groups, coloured as the writer colours them, with their
    time and label: `ZonalStats.df`."""
    from aef_zonal.udfs import parquet, rows

    @per_task
    def unpack_partition(batches):
        for b in batches:
            times, labels = b.column("time"), b.column("label")
            for i, packed in rows.unpack(b, files.layout.packed):
                table = parquet.coloured(pa.Table.from_batches([packed]), files)
                n = table.num_rows
                columns = {
                    **dict(zip(table.column_names, table.columns)),
                    "time": pa.repeat(times[i], n),
                    "label": pa.repeat(labels[i], n),
                }
                yield from pa.Table.from_arrays(
                    [columns[f.name] for f in files.layout.schema], schema=files.layout.schema
                ).to_batches()

    return unpack_partition
