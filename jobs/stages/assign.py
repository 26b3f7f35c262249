"""Which chunks each field touches and whether the reduce stage finishes it (sql/20_assign.sql),
the chunk tasks the reduce stage runs (sql/30_chunk_tasks.sql) and the field-years it does not
finish (sql/35_field_years.sql; the fields stage counted all of them)."""

from __future__ import annotations

from dataclasses import dataclass

from aef_zonal.options import Options
from aef_zonal.session import sql
from aef_zonal.udfs.grid import Grid


@dataclass(frozen=True)
class Assigned:
    """The fields with their chunks; cached: the chunk tasks and the field-years both read it."""

    df: object
    cached: tuple


def assign(spark, o: Options, fields, grid: Grid):
    g = grid.sql_params()
    assigned = sql(
        spark,
        "20_assign.sql",
        {"fields": fields},
        xmin=g["xmin"],
        ymax=g["ymax"],
        chunk_deg=g["chunk_deg"],
        chunk_rows=g["chunk_rows"],
        chunk_cols=g["chunk_cols"],
        change="change" in o.stats,
    ).persist()
    return Assigned(assigned, (assigned,)), {}


@dataclass(frozen=True)
class ChunkTasks:
    """One row per inner chunk with all its fields; cached: the reduce stage reads it twice
    (its totals here, then the tasks)."""

    df: object
    tasks: int
    reads: int  # chunk reads planned: a task reads its chunk once per year its fields need
    field_years: int  # the field-years with a chunk to read (the others have no pixel at all)
    cached: tuple


def chunk_tasks(spark, assigned: Assigned, years: list[int]):
    tasks = sql(
        spark, "30_chunk_tasks.sql", {"assigned": assigned.df}, years=int_array(spark, years)
    ).persist()
    totals = tasks.selectExpr(
        "COUNT(*) AS tasks",
        "SUM(SIZE(ARRAY_DISTINCT(FLATTEN(TRANSFORM(fields, f -> f.years))))) AS reads",
        # each task holds a field-year's share of its chunks, as the workers count them
        "SUM(AGGREGATE(fields, 0D, (n, f) -> n + SIZE(f.years) / f.chunks)) AS field_years",
    ).first()
    reads = totals.reads or 0
    covered = round(totals.field_years or 0)
    return ChunkTasks(tasks, totals.tasks, reads, covered, (tasks,)), {
        "chunk_tasks": totals.tasks,
        "chunk_reads_planned": reads,
    }


def field_years(spark, assigned: Assigned, years: list[int]):
    """The field-years the reduce stage does not finish: fields spanning chunks or in none."""
    run_years = spark.createDataFrame([(y,) for y in years], "year int")
    return sql(spark, "35_field_years.sql", {"assigned": assigned.df, "run_years": run_years}), {}


def int_array(spark, values: list[int]):
    """An ARRAY<INT> literal: Spark 3.5's sql() takes only literals as arguments, and array() of
    literals is an expression there, not a literal."""
    from pyspark.sql import Column

    sc = spark.sparkContext
    java = sc._gateway.new_array(sc._jvm.int, len(values))
    for i, v in enumerate(values):
        java[i] = int(v)
    return Column(sc._jvm.org.apache.spark.sql.functions.lit(java))
