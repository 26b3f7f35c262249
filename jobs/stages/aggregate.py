"""The aggregate stage: the partials of each field-year that spans chunks grouped
(sql/40_aggregate.sql) and turned into statistics on the workers (udfs/finish.py), beside the
field-years the reduce stage finished (sql/42_statistics.sql). Only the merged field-years are
cached: the finished ones, most of a run with many small fields, are read from the partials'
cache through the union rather than copied into a second cache of the same size."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql.pandas.types import from_arrow_schema

from aef_zonal.options import Options
from aef_zonal.session import sql
from aef_zonal.udfs import spark as executor
from aef_zonal.udfs.finish import Finish
from aef_zonal.udfs.store import StoreInfo


def finish(o: Options, store: StoreInfo) -> Finish:
    """The statistics every field-year of the run gets (the reduce stage finishes some)."""
    return Finish(store.quant, store.bands, tuple(o.stats), weighted=o.weighted)


@dataclass(frozen=True)
class Statistics:
    """One row per field-year with pixels: its statistics (schemas.statistics)."""

    df: object
    with_pixels: int  # field-years with a valid pixel
    cached: tuple  # the merged field-years (the finished ones are the partials' cache)


def aggregate(spark, o: Options, store: StoreInfo, partials):
    fin = finish(o, store)
    # a few large Arrow batches per core: each Python task has a fixed cost, a batch of
    # field-years hardly any
    merged = (
        sql(spark, "40_aggregate.sql", {"partials": partials}, extremes=fin.extremes)
        .coalesce(2 * spark.sparkContext.defaultParallelism)
        .mapInArrow(executor.finish_partitions(fin), from_arrow_schema(fin.schema()))
        .persist()
    )
    stats = sql(spark, "42_statistics.sql", {"merged": merged, "partials": partials})
    seen = stats.selectExpr(
        "COUNT_IF(count > 0) AS with_pixels",
        "ARRAY_SORT(ARRAY_DISTINCT(FLATTEN(COLLECT_LIST(skipped_chunks)))) AS skipped",
    ).first()
    return Statistics(stats, seen.with_pixels, (merged,)), {
        "field_years_with_pixels": seen.with_pixels,
        "skipped_chunks": list(seen.skipped),
    }
