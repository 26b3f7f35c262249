"""The change stage: each field-year's mean against the field's latest earlier year with a
valid pixel (sql/45_change.sql, a window over the years of each field), when `change` is asked
for; otherwise its two columns are null and nothing runs."""

from __future__ import annotations

from pyspark.sql import functions as F

from aef_zonal.options import Options
from aef_zonal.session import sql


def change(spark, o: Options, stats):
    if "change" not in o.stats:
        return (
            stats.withColumn("change_from", F.lit(None).cast("int")).withColumn(
                "change", F.lit(None).cast("double")
            )
        ), {}
    return sql(spark, "45_change.sql", {"stats": stats}), {}
