"""The change stage, run when `change` is asked for: each field-year's mean against the field's
latest earlier year with a valid pixel (sql/45_change.sql, a window over the years of each
field)."""

from __future__ import annotations

from aef_zonal.session import sql


def change(spark, stats):
    return sql(spark, "45_change.sql", {"stats": stats}), {}
