"""The aggregate stage: the partials of each field-year that spans chunks grouped
(sql/40_aggregate.sql) and turned into statistics on the workers (udfs/finish.py). The reduce
stage finished the others. Cached: the PCA fit and the output read them."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql.pandas.types import from_arrow_schema

from aef_zonal.options import Options
from aef_zonal.session import sql
from aef_zonal.stages.reduce import Reduced, finish
from aef_zonal.udfs import schemas
from aef_zonal.udfs import spark as executor
from aef_zonal.udfs.store import StoreInfo
from aef_zonal.udfs.tasks import PARTIAL


@dataclass(frozen=True)
class Statistics:
    """One row per field-year that spans chunks, with a pixel inside: its statistics
    (schemas.statistics)."""

    df: object
    with_pixels: int  # field-years of the run with a valid pixel, these and the finished ones
    cached: tuple


def aggregate(spark, o: Options, store: StoreInfo, reduced: Reduced):
    fin = finish(o, store)
    columns = schemas.partials(o.weighted, store.quant.floats).names
    # a few large Arrow batches per core: each Python task has a fixed cost, a batch of
    # field-years hardly any
    merged = (
        sql(
            spark,
            "40_aggregate.sql",
            {"partials": reduced.of(PARTIAL, columns)},
            extremes=fin.extremes,
        )
        .coalesce(2 * spark.sparkContext.defaultParallelism)
        .mapInArrow(executor.finish_partitions(fin), from_arrow_schema(fin.schema()))
        .persist()
    )
    with_pixels = reduced.with_pixels + merged.where("count > 0").count()
    return Statistics(merged, with_pixels, (merged,)), {
        "field_years_with_pixels": with_pixels,
        "skipped_chunks": reduced.skipped,
    }
