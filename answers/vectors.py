"""An output's field-year vectors as the answers read them.

The output is read as `aef-zonal sql` reads it (query.read: Sedona's GeoParquet source over the
folder, `time` and `label` as partition columns, a `--conf` file's S3A settings). An answer takes
the rows of one year or of all of them, and of those only the rows whose `mean` holds a valid
pixel: a field-year without one (count = 0, mean null) is left out and counted.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass

from pyspark.sql import functions as F

from aef_zonal import config, dataset, filesystem, query, session
from aef_zonal.errors import JobError

# what an answer's message says about a column the output lacks
KEEP_HINT = "an input column reaches the output with `aef-zonal run --keep-columns`"


@dataclass
class Vectors:
    """The rows an answer works on."""

    spark: object
    settings: dict
    out: str
    years: list[int]  # the years read: the one asked for, or all of the output's
    every: object  # DataFrame: every row of those years, every column
    rows: object  # DataFrame: those with a valid pixel (mean not null)
    valid: dict[int, int]  # rows with a valid pixel, per year
    left_out: dict[int, int]  # rows without one, per year


def settings_of(conf) -> dict:
    """The settings of a `conf` file over the defaults; a bad file is the caller's error."""
    try:
        return config.load(conf)
    except ValueError as e:
        raise JobError(str(e)) from None


@contextlib.contextmanager
def opened(
    out,
    *,
    year: int | None,
    need=(),
    settings: dict,
    spark=None,
    master: str | None = None,
    verbose: bool = False,
    urls=(),
):
    """The output's rows of `year` (None: every year) in a Sedona-enabled session, inside the
    settings' Spark SQL options (session.job_settings: a caller's session gets them back after).
    `need`: columns the answer names, refused when the output lacks them; `urls`: the answer's
    other paths (an s3:// one puts S3A's jars on a session started here)."""
    out = str(out)
    try:
        years = query.output_years(out, settings)
        if year is not None and year not in years:
            raise JobError(f"year {year} is not in {out}; it has {', '.join(map(str, years))}")
        spark, owned = session.spark_session(
            master,
            verbose,
            settings,
            spark=spark,
            s3=any(filesystem.is_s3(u) for u in (out, *urls) if u is not None),
        )
        with session.job_settings(spark, settings, owned):
            every = query.read(spark, out, settings)
            missing = [c for c in ("feature_id", "mean", *need) if c not in every.columns]
            if missing:
                raise JobError(
                    f"column {', '.join(map(repr, missing))} is not in {out}; it has "
                    f"{', '.join(c for c in every.columns if c != 'bbox')} ({KEEP_HINT})"
                )
            if year is not None:
                every = every.where(F.col("time") == F.lit(dataset.time_value(year)).cast("date"))
            counts = {
                r.year: (r.all, r.valid)
                for r in every.groupBy(year_of())
                .agg(F.count("*").alias("all"), F.count("mean").alias("valid"))
                .collect()
            }
            read = [year] if year is not None else years
            valid = {y: counts.get(y, (0, 0))[1] for y in read}
            if not any(valid.values()):
                where = f"in {year}" if year is not None else "in any year"
                raise JobError(
                    f"{out} has no row with a valid pixel {where} (every `mean` is null): "
                    "nothing to compare"
                )
            yield Vectors(
                spark,
                settings,
                out,
                read,
                every,
                every.where(F.col("mean").isNotNull()),
                valid,
                {y: counts.get(y, (0, 0))[0] - valid[y] for y in read},
            )
    except (dataset.OutputError, filesystem.StorageError) as e:
        raise JobError(str(e)) from None


def dot(a, b):
    """The dot product of two array<double> columns, in Spark SQL's higher-order functions."""
    return F.aggregate(F.zip_with(a, b, lambda x, y: x * y), F.lit(0.0), lambda s, x: s + x)


def norm(a):
    """The Euclidean length of an array<double> column."""
    return F.sqrt(F.aggregate(a, F.lit(0.0), lambda s, x: s + x * x))


def year_of(column: str = "time"):
    return F.year(column).alias("year")


def geo_crs(v: Vectors) -> str:
    """The PROJJSON CRS of the output's geometry column, from a data file's GeoParquet metadata:
    what an answer writes keeps the output's own."""
    import pyarrow.parquet as pq

    fs, files = query.data_files(v.out, v.settings)
    geo = json.loads(pq.read_schema(next(iter(files)), filesystem=fs).metadata[b"geo"])
    return json.dumps(geo["columns"][geo["primary_column"]]["crs"])
