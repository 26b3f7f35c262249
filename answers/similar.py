"""The field-years most like a field, or like a given vector: cosine similarity of `mean`, exact.

Every candidate's similarity is computed; there is no index and no approximation. The query
vector, scaled to unit length on the driver, is joined to the candidates as a broadcast table of
one row per year searched (64 doubles each); a row's cosine is then its dot product with it over
the row's own length, in double. The top k are taken by ORDER BY … LIMIT (each task keeps its k
best, the driver merges them), or per year by a window (ROW_NUMBER over PARTITION BY time). Ties
are broken by feature_id, then year, so the answer is the same on every run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
from pyspark.sql import Window
from pyspark.sql import functions as F

from aef_zonal import filesystem, query
from aef_zonal.answers import vectors
from aef_zonal.errors import JobError

COLUMNS = ["rank", "year", "feature_id", "label", "similarity"]


def similar(
    out,
    like: int | None = None,
    *,
    vector=None,
    year: int | None = None,
    k: int = 10,
    each_year: bool = False,
    to: str | os.PathLike | None = None,
    conf: str | os.PathLike | None = None,
    master: str | None = None,
    verbose: bool = False,
    spark=None,
) -> dict:
    """The k field-years of the output `out` whose `mean` is most similar by cosine to field
    `like`'s (the field itself left out) or to `vector` (as many numbers as `mean` has).

    year: search that year only, with the field's mean of that year; None: every year, with the
        field's mean of its latest year with a valid pixel.
    each_year: the k most similar in each year instead, each year with the field's own mean of
        that year (a year where it has no valid pixel is skipped).
    to: also write the rows, with their geometry, as one GeoParquet file (a local path).

    Returns {"query", "years", "k", "each_year", "compared", "left_out", "rows"}: rows is a
    pandas DataFrame (rank, year, feature_id, label, similarity); compared counts the
    field-years scored, left_out those of the years searched without a valid pixel.
    """
    if (like is None) == (vector is None):
        raise JobError("give a field to compare with (like) or a vector, one of the two")
    if k < 1:
        raise JobError(f"k {k}: give a positive number")
    if to is not None and filesystem.is_url(str(to)):
        raise JobError(f"--to {to}: give a local file (the rows are few)")
    with vectors.opened(
        out,
        year=year,
        settings=vectors.settings_of(conf),
        spark=spark,
        master=master,
        verbose=verbose,
    ) as v:
        rows = v.rows.select("feature_id", "time", "label", "mean", "geometry")
        if like is not None:
            own = _field_vectors(v, rows, like)
            rows = rows.where(F.col("feature_id") != like)
            latest = max(own)
            queries = own if each_year else {y: own[latest] for y in v.years}
            asked = {"feature_id": like, "year": None if each_year else latest}
        else:
            own, asked = {}, {"vector": [float(x) for x in vector]}
            q = _checked(vector, v.rows.select(F.size("mean")).first()[0])
            queries = {y: q for y in v.years}
        searched = sorted(queries)
        # each year's query vector: the field's own of that year (each_year), else the one asked
        query_table = v.spark.createDataFrame(
            [(y, queries[y]) for y in searched], "year INT, q ARRAY<DOUBLE>"
        )
        compared = {y: v.valid[y] - (y in own) for y in searched}
        fewest = min(compared.values()) if each_year else sum(compared.values())
        if k > fewest:
            raise JobError(
                f"k {k} is larger than the {fewest:,} field-years to compare"
                + (" in a year" if each_year else "")
            )
        scored = (
            rows.withColumn("year", F.year("time"))
            .join(F.broadcast(query_table), "year")
            .withColumn("similarity", vectors.dot("mean", "q") / vectors.norm("mean"))
        )
        order = [F.desc("similarity"), F.asc("feature_id"), F.asc("year")]
        if each_year:
            ranked = Window.partitionBy("year").orderBy(*order)
            top = scored.withColumn("rank", F.row_number().over(ranked)).where(F.col("rank") <= k)
        else:
            top = scored.orderBy(*order).limit(k).withColumn("rank", F.lit(0))  # numbered below
        top = top.select(*COLUMNS, "geometry")
        found = [r.asDict() for r in top.collect()]
        if each_year:
            found.sort(key=lambda r: (r["year"], r["rank"]))
        else:  # the k best, numbered here: ORDER BY … LIMIT leaves them in one partition anyway
            found.sort(key=lambda r: (-r["similarity"], r["feature_id"], r["year"]))
            for i, r in enumerate(found):
                r["rank"] = i + 1
        if to is not None:
            query.write_single_file(v.spark.createDataFrame(found, top.schema), Path(to))
    return {
        "query": asked,
        "years": searched,
        "skipped_years": sorted(set(v.years) - set(queries)),
        "k": k,
        "each_year": each_year,
        "compared": sum(compared.values()),
        "left_out": sum(v.left_out[y] for y in searched),
        "rows": pd.DataFrame([{c: r[c] for c in COLUMNS} for r in found], columns=COLUMNS),
    }


def _field_vectors(v, rows, like: int) -> dict[int, list[float]]:
    """Field `like`'s mean scaled to unit length, for each year read where it has a valid pixel."""
    found = {
        r.year: _unit(r.mean)
        for r in rows.where(F.col("feature_id") == like).select(vectors.year_of(), "mean").collect()
    }
    if found:
        return found
    where = f" in {v.years[0]}" if len(v.years) == 1 else ""
    if v.every.where(F.col("feature_id") == like).limit(1).count():
        raise JobError(f"field {like} has no valid pixel{where or ' in any year'} of {v.out}")
    raise JobError(f"field {like} is not in {v.out}{where}")


def _checked(vector, size: int) -> list[float]:
    try:
        values = [float(x) for x in vector]
    except (TypeError, ValueError):
        raise JobError("vector: give numbers") from None
    if len(values) != size:
        raise JobError(f"vector: {len(values)} numbers; the output's mean has {size}")
    if not all(map(math.isfinite, values)) or not any(values):
        raise JobError("vector: give finite numbers, not all zero")
    return _unit(values)


def _unit(values) -> list[float]:
    n = math.sqrt(math.fsum(x * x for x in values))
    return [x / n for x in values]
