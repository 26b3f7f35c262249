"""The reduce stage: every chunk task read and reduced on the workers (udfs/spark.py ->
udfs/tasks.py): the published rows of the fields inside one chunk, packed, with a sample of
their means for the PCA fit, and one partial row per year and chunk of the fields spanning
chunks. Cached: the aggregate, the PCA fit and the writer read it."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from aef_zonal.errors import JobError
from aef_zonal.options import Options
from aef_zonal.session import cancelled_on, setting
from aef_zonal.stages.assign import ChunkTasks
from aef_zonal.udfs import spark as executor
from aef_zonal.udfs.finish import Finish
from aef_zonal.udfs.rows import Layout
from aef_zonal.udfs.store import StoreInfo
from aef_zonal.udfs.tasks import PARTIAL, ROWS, SKIPPED, Reduction

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


def finish(o: Options, store: StoreInfo) -> Finish:
    """The statistics every field-year of the run gets (the reduce stage finishes some)."""
    return Finish(store.quant, store.bands, tuple(o.stats), weighted=o.weighted)


def reduction(
    o: Options, store: StoreInfo, layout: Layout, sample: float = 0.0, scratch: str | None = None
) -> Reduction:
    return Reduction(
        store.grid,
        store.quant,
        store.bands,
        finish(o, store),
        layout,
        rule=o.pixels,
        min_coverage=o.min_coverage,
        sample=sample,
        seed=o.seed,
        scratch=scratch,
    )


@dataclass(frozen=True)
class Reduced:
    """The reduce stage's table (udfs/schemas.py: reduced) and what it holds."""

    df: object
    finished: int  # field-years whose rows it holds
    with_pixels: int  # of those, with a valid pixel
    skipped: list  # chunks skipped as undecodable
    cached: tuple

    def of(self, kind: str, columns):
        """Its rows of one kind, in these columns."""
        return self.df.where(self.df.kind == kind).select(*columns)


def warm(spark, o: Options, store: StoreInfo, layout: Layout) -> None:
    """Python workers started, and this run's reduction loaded into them, while the driver
    plans the stages before the reduce (the JVM's work there leaves the cores mostly idle);
    the reduce and aggregate stages then reuse these workers. A failure here is left to the
    reduce stage, which reports it."""
    n = max(1, spark.sparkContext.defaultParallelism - 1)  # a core left for the driver's jobs
    body = executor.warm_partitions(reduction(o, store, layout))

    def run():
        with contextlib.suppress(Exception):
            spark.range(n, numPartitions=n).mapInArrow(body, "id long").collect()

    threading.Thread(target=run, name="aef-zonal warm-up", daemon=True).start()


def reduce(
    spark,
    o: Options,
    store: StoreInfo,
    chunk_tasks: ChunkTasks,
    meter: Meter,
    layout: Layout,
    sample: float,
    scratch,
):
    """`sample`: the probability with which a finished field-year's mean is drawn for the PCA
    fit (0: no fit); `scratch`: the folder the finished rows wait in (jobs/stages/output.py:
    Scratch; None: in the cache)."""
    red = reduction(o, store, layout, sample, scratch.path if scratch else None)
    sc = spark.sparkContext
    counters = meter.counters
    n_tasks = max(chunk_tasks.tasks, 1)
    partitions = max(1, min(n_tasks, max(4 * sc.defaultParallelism, n_tasks // 32)))
    body = executor.reduce_partitions(o.access(), red, o.on_bad_chunk == "skip", counters)
    reduced = (
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
            by_kind = {
                r.kind: r
                for r in reduced.groupBy("kind")
                .agg(
                    F.count("*").alias("n"),
                    F.sum("rows").alias("rows"),
                    F.sum("with_pixels").alias("with_pixels"),
                    F.sort_array(F.collect_set("skipped")).alias("skipped"),
                )
                .collect()
            }
        except Exception:
            if not errors.value:
                raise
        if errors.value:
            reduced.unpersist()
            raise JobError(failure(errors.value))
    rows = by_kind.get(ROWS)
    skipped = by_kind.get(SKIPPED)
    done = counters["chunk_reads"].value
    result = Reduced(
        reduced,
        rows.rows if rows else 0,
        rows.with_pixels if rows else 0,
        list(skipped.skipped) if skipped else [],
        (reduced,),
    )
    return result, {
        "partials": by_kind[PARTIAL].n if PARTIAL in by_kind else 0,
        "field_years_finished_in_tasks": result.finished,
        "chunk_reads": done,
        "requests": counters["requests"].value,
        "requests_per_chunk": round(counters["requests"].value / max(done, 1), 3),
        "bytes_read": counters["bytes"].value,
    }


def failure(errors: list[str]) -> str:
    """The run's error from its workers' (each once; tasks may meet the same chunk)."""
    distinct = sorted(set(errors))
    more = len(distinct) - 1
    return distinct[0] + (f" (and {more} other error(s))" if more else "")
