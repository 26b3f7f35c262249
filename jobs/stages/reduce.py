"""The reduce stage: every chunk task read and reduced on the workers (udfs/spark.py ->
udfs/tasks.py), one partial row per field, year and chunk; a field inside one chunk leaves it
finished. Cached: the aggregate reads it."""

from __future__ import annotations

import contextlib
import threading

from pyspark.sql.pandas.types import from_arrow_schema

from aef_zonal.errors import JobError
from aef_zonal.options import Options
from aef_zonal.session import setting
from aef_zonal.stages import aggregate
from aef_zonal.stages.assign import ChunkTasks
from aef_zonal.udfs import spark as executor
from aef_zonal.udfs.store import StoreInfo
from aef_zonal.udfs.tasks import Reduction

# a few chunk tasks per Arrow batch (each reads 4 MiB per year), so reads spread over the
# workers and the progress counter moves; later Arrow UDFs keep Spark's default batch size,
# small batches make their per-batch cost dominate
TASKS_PER_BATCH = 16


class Meter:
    """What the workers have done of the stage (Spark accumulators they add to, jobs/progress.py
    shows them): chunk reads, requests, bytes and field-years (a field's share of its chunks).
    Field-years without a chunk to read (no geometry, outside the store) are done from the
    start, so that the count reaches the run's field-years."""

    def __init__(
        self, sc, reads_total: int, field_years_total: int, with_chunks: int | None = None
    ):
        self.reads_total, self.fy_total = reads_total, field_years_total
        self.fy_done = field_years_total - (
            field_years_total if with_chunks is None else with_chunks
        )
        self.counters = {
            "chunk_reads": sc.accumulator(0),
            "requests": sc.accumulator(0),
            "bytes": sc.accumulator(0),
            "field_years": sc.accumulator(0.0),
            "errors": sc.accumulator([], executor.Messages()),
        }

    def value(self, name: str):
        return self.counters[name].value

    def fraction(self) -> float:
        return self.value("chunk_reads") / max(self.reads_total, 1)

    def text(self, elapsed: float) -> str:
        mb = self.value("bytes") / 1e6
        return (
            f"{self.value('chunk_reads')}/{self.reads_total} chunk reads, "
            f"{min(self.fy_done + self.value('field_years'), self.fy_total):,.0f}/"
            f"{self.fy_total:,} field-years, "
            f"{mb:,.0f} MB ({mb / max(elapsed, 1e-9):.1f} MB/s)"
        )


def reduction(o: Options, store: StoreInfo) -> Reduction:
    return Reduction(
        store.grid,
        store.quant,
        store.bands,
        aggregate.finish(o, store),
        rule=o.pixels,
        min_coverage=o.min_coverage,
    )


def warm(spark, o: Options, store: StoreInfo) -> None:
    """Python workers started, and this run's reduction loaded into them, while the driver
    plans the stages before the reduce (the JVM's work there leaves the cores mostly idle);
    the reduce and aggregate stages then reuse these workers. A failure here is left to the
    reduce stage, which reports it."""
    n = max(1, spark.sparkContext.defaultParallelism - 1)  # a core left for the driver's jobs
    body = executor.warm_partitions(reduction(o, store))

    def run():
        with contextlib.suppress(Exception):
            spark.range(n, numPartitions=n).mapInArrow(body, "id long").collect()

    threading.Thread(target=run, name="aef-zonal warm-up", daemon=True).start()


def reduce(spark, o: Options, store: StoreInfo, chunk_tasks: ChunkTasks, meter: Meter):
    red = reduction(o, store)
    sc = spark.sparkContext
    counters = meter.counters
    n_tasks = max(chunk_tasks.tasks, 1)
    partitions = max(1, min(n_tasks, max(4 * sc.defaultParallelism, n_tasks // 32)))
    body = executor.reduce_partitions(o.access(), red, o.on_bad_chunk == "skip", counters)
    partials = (
        chunk_tasks.df.repartitionByRange(partitions, "cy", "cx")
        .mapInArrow(body, from_arrow_schema(red.schema()))
        .persist()
    )
    errors = counters["errors"]
    with (
        setting(spark, "spark.sql.execution.arrow.maxRecordsPerBatch", TASKS_PER_BATCH),
        cancelled_on(sc, lambda: errors.value),
    ):
        try:
            n = partials.count()
        except Exception:
            if not errors.value:
                raise
        if errors.value:
            partials.unpersist()
            raise JobError(failure(errors.value))
    done = counters["chunk_reads"].value
    return partials, {
        "partials": n,
        "chunk_reads": done,
        "requests": counters["requests"].value,
        "requests_per_chunk": round(counters["requests"].value / max(done, 1), 3),
        "bytes_read": counters["bytes"].value,
    }


def failure(errors: list[str]) -> str:
    """The run's error from its workers' (each chunk's once; tasks may meet the same chunk)."""
    distinct = sorted(set(errors))
    more = len(distinct) - 1
    return distinct[0] + (f" (and {more} other chunk error(s))" if more else "")


@contextlib.contextmanager
def cancelled_on(sc, failed, every: float = 0.5):
    """The block's Spark jobs in a job group of their own, cancelled as soon as `failed()` is
    true: a worker's error reaches the driver when its task ends, and the run stops then rather
    than after every other chunk. The thread's previous group is restored afterwards."""
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
