"""The fields stage: read the user's fields (jobs/formats.py: GeoParquet, GeoPackage, Shapefile,
GeoJSON, FlatGeobuf) or DataFrame, check them, bring them to the store's CRS.

Everything here runs on the driver as Spark SQL over the input; bad input stops the run with a
message that names the file, the column or example ids, and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import functions as F
from pyspark.sql import types as T
from sedona.spark.sql.types import GeometryType

from aef_zonal import dataset, filesystem, formats
from aef_zonal.errors import JobError
from aef_zonal.options import Options
from aef_zonal.session import sql
from aef_zonal.udfs.store import StoreInfo

REQUIRED = ("feature_id", "geometry")
OPTIONAL = {"label": "STRING", "score_mean": "FLOAT", "score_std": "FLOAT"}
# the one null field of `kept` when no input column is kept (--keep-columns none): Spark 3.5
# refuses a DataFrame with an empty struct column; the output stage drops it
NO_KEPT = "_no_kept_columns"


@dataclass(frozen=True)
class Fields:
    """The checked fields in the store's CRS, restricted to the run's years."""

    df: object
    field_years: int  # the (field, year) pairs the run writes
    cached: tuple  # the typed fields every later stage reads (the checks fill the cache)


def fields(spark, o: Options, store: StoreInfo, years: list[int]):
    """sql/10_fields.sql over the user's fields (a path or URL of a format jobs/formats.py reads,
    or a DataFrame), checked, restricted to `years`."""
    try:
        if isinstance(o.fields, str):
            name = o.fields
            source = formats.identify(name, o.layer, formats.files_of(name, spark))
            given, column, crs, report = formats.read(spark, source, store.grid.crs)
        else:
            name = FRAME
            given, column = o.fields, frame_geometry(o.fields)
            crs, report = frame_crs(given, column, store.grid.crs)
        df, year_column = load(given, name, o.year_column, column, o.keep_columns, o.stats)
        typed = sql(
            spark, "10_fields.sql", {"fields_input": df}, source_crs=crs, store_crs=store.grid.crs
        ).persist()
        report |= validate(typed, name) | {"geometry_column": column}
        selected, part = select_years(
            typed, name, year_column, years, store.years, o.skip_missing_years, report["fields"]
        )
    except (FieldsError, formats.FormatError, filesystem.StorageError) as e:
        raise JobError(str(e)) from e
    report |= part
    return Fields(selected, report["field_years"], (typed,)), report


class FieldsError(ValueError):
    """The fields cannot be used as given; the message says why and what to do."""


def year_of(df, column: str, path: str):
    """Integer year of a `time`/`year` column: date, timestamp, 'YYYY-01-01' string or integer."""
    typ = df.schema[column].dataType
    col = F.col(column)
    if isinstance(typ, (T.DateType, T.TimestampType, T.TimestampNTZType)):
        return F.year(col)
    if isinstance(typ, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)):
        return col.cast("int")
    if isinstance(typ, T.StringType):
        bad = (
            df.where(col.isNotNull() & ~col.rlike(r"^\d{4}(-\d{2}-\d{2})?$"))
            .select(column)
            .limit(3)
            .collect()
        )
        if bad:
            raise FieldsError(
                f"{path}: column '{column}' holds values that are not years, e.g. "
                f"{[r[0] for r in bad]}; use 'YYYY-01-01' strings, dates or integer years"
            )
        return F.substring(col, 1, 4).cast("int")
    raise FieldsError(
        f"{path}: column '{column}' has type {typ.simpleString()}; a year column must "
        "be a date, timestamp, 'YYYY-01-01' string or integer (or pass --year-column none)"
    )


def feature_ids(df, path: str):
    """feature_id as int64: integer columns as they are, strings holding integers and decimals
    without a fraction (a Shapefile's numbers) converted; anything else refused with examples."""
    typ = df.schema["feature_id"].dataType
    if isinstance(typ, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)):
        return df
    col = F.col("feature_id")
    if isinstance(typ, T.DecimalType) and typ.scale == 0 and typ.precision <= 18:
        return df.withColumn("feature_id", col.cast("bigint"))
    if isinstance(typ, T.StringType):
        bad = [
            r[0]
            for r in df.where(col.isNotNull() & ~col.rlike(r"^\s*[+-]?\d{1,18}\s*$"))
            .select("feature_id")
            .limit(3)
            .collect()
        ]
        if not bad:
            return df.withColumn("feature_id", F.trim(col).cast("bigint"))
        raise FieldsError(
            f"{path}: column 'feature_id' holds strings that are not integers, e.g. "
            f"{bad}; the ids must be integers (int64, or strings of digits): number the "
            "fields, e.g. with geopandas df['feature_id'] = range(len(df)), and keep "
            "your own id in another column"
        )
    raise FieldsError(
        f"{path}: column 'feature_id' has type {typ.simpleString()}; the ids must be "
        "integers (int64, or strings of digits), e.g. df['feature_id'].astype('int64')"
    )


FRAME = "the fields DataFrame"


def frame_geometry(df) -> str:
    """A DataFrame's polygon column: 'geometry', or its one Sedona geometry column."""
    if "geometry" in df.columns:
        return "geometry"
    found = [f.name for f in df.schema.fields if isinstance(f.dataType, GeometryType)]
    if len(found) != 1:
        raise FieldsError(
            f"{FRAME}: {'no' if not found else 'more than one'} geometry column "
            f"(found {df.columns}); name the field polygons 'geometry' (a Sedona "
            "geometry, WKB bytes or WKT text)"
        )
    return found[0]


def frame_crs(df, column: str, store_crs: str) -> tuple[str, dict]:
    """A DataFrame's CRS: its geometries' SRID (Sedona's ST_SetSRID, ST_Transform) when they
    have one, else the store's (WKB and WKT carry none)."""
    if not isinstance(df.schema[column].dataType, GeometryType):
        return store_crs, {"fields_crs": f"{store_crs} (assumed: WKB and WKT name no CRS)"}
    srids = [
        r[0]
        for r in df.select(F.expr(f"ST_SRID(`{column}`)"))
        .where(F.col(column).isNotNull())
        .distinct()
        .limit(3)
        .collect()
    ]
    if len(srids) > 1:
        raise FieldsError(
            f"{FRAME}: its geometries have different SRIDs {sorted(srids)}; bring "
            "them to one CRS, e.g. with ST_Transform"
        )
    if not srids or srids[0] == 0:
        return store_crs, {"fields_crs": f"{store_crs} (assumed: the geometries have no SRID)"}
    from pyproj import CRS

    return formats.transform_from(
        CRS.from_epsg(srids[0]), f"EPSG:{srids[0]} (the geometries' SRID)", store_crs
    )


def load(
    df,
    path: str,
    year_column: str | None,
    column: str = "geometry",
    keep: tuple[str, ...] | None = (),
    stats: list[str] = (),
):
    """The fields as read (`path` names them in messages), with the optional columns filled:
    sql/10_fields.sql's `fields_input`, with the input columns to carry through (`keep`, None:
    all) in the struct `kept`.

    Returns it and the column giving each field's own year, or None (every field, every year).
    """
    if column != "geometry":  # the file's primary geometry is the field polygon
        df = df.drop("geometry").withColumnRenamed(column, "geometry")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise FieldsError(
            f"{path}: required column(s) {missing} missing (found {df.columns}); "
            "the fields need an int64 'feature_id' and a polygon 'geometry'"
        )
    typ = df.schema["geometry"].dataType
    if path == FRAME and isinstance(typ, (T.BinaryType, T.StringType)):
        # a DataFrame's WKB bytes or WKT text: Sedona's parser names a bad value itself
        parse = "ST_GeomFromWKB" if isinstance(typ, T.BinaryType) else "ST_GeomFromWKT"
        df = df.withColumn("geometry", F.expr(f"{parse}(geometry)"))
    elif path == FRAME and not isinstance(typ, GeometryType):
        raise FieldsError(
            f"{path}: column 'geometry' is {typ.simpleString()}; give the polygons "
            "as a Sedona geometry, WKB bytes or WKT text"
        )
    elif not isinstance(typ, GeometryType):
        raise FieldsError(
            f"{path}: column 'geometry' is {df.schema['geometry'].dataType.simpleString()}, "
            "not a geometry: the file is plain Parquet without GeoParquet 'geo' metadata; "
            "write it with geopandas.GeoDataFrame.to_parquet or Sedona"
        )
    df = feature_ids(df, path)
    given = df.columns
    for name, typ in OPTIONAL.items():
        if name not in df.columns:
            df = df.withColumn(name, F.lit(None).cast(typ))
    if year_column is None:
        year_column = next((c for c in ("time", "year") if c in df.columns), None)
    elif year_column == "none":
        year_column = None
    elif year_column not in df.columns:
        raise FieldsError(
            f"{path}: no column '{year_column}' (found {df.columns}) for --year-column"
        )
    year = year_of(df, year_column, path) if year_column else F.lit(None)
    kept = kept_columns(df, given, path, keep, year_column, stats)
    df = df.withColumn("layer_year", year.cast("int"))
    return df.select("feature_id", "geometry", "label", kept, "layer_year"), year_column


def kept_columns(
    df,
    given: list[str],
    path: str,
    keep: tuple[str, ...] | None,
    year_column: str | None,
    stats: list[str],
):
    """The struct `kept` of the input columns --keep-columns names, values and types as read
    (score_mean, score_std: float, null when absent, as the published schema has them).

    all: score_mean, score_std and every other input column but the id, the geometry, its
    GeoParquet 1.1 `bbox` covering (the output writes its own), label (the partition) and the
    year column (the `time` partition holds it).
    """
    scores = [n for n in OPTIONAL if n != "label"]
    if keep is None:
        skip = {"feature_id", "geometry", "label", year_column, *scores}
        names = scores + [
            c
            for c in given
            if c not in skip
            and not (c == "bbox" and isinstance(df.schema[c].dataType, T.StructType))
        ]
    else:
        names = [n for n in keep if n != "label"]
        missing = [n for n in names if n not in df.columns]
        if missing:
            raise FieldsError(
                f"{path}: --keep-columns names {missing}, not in the file (found "
                f"{given}); name columns it has, or pass --keep-columns none"
            )
    clash = dataset.clashing(names, stats)
    if clash:
        raise FieldsError(
            f"{path}: input column(s) {clash} would clash with the output column(s) "
            "of the same name; rename them, or list the columns to keep with "
            "--keep-columns a,b,c"
        )
    return F.struct(
        *[
            (F.col(f"`{n}`").cast("float") if n in scores else F.col(f"`{n}`")).alias(n)
            for n in names
        ]
        or [F.lit(None).cast("boolean").alias(NO_KEPT)]
    ).alias("kept")


def validate(fields, path: str) -> dict:
    """Refuse fields the job cannot reduce, naming examples; return counts for the report.
    One pass over the fields (it fills their cache); the examples are looked up only on failure."""
    polygons = "geom_type IN ('ST_Polygon', 'ST_MultiPolygon', 'ST_GeometryCollection of polygons')"
    row = fields.selectExpr(
        "COUNT(*) AS n",
        "COUNT_IF(feature_id IS NULL) AS null_ids",
        f"COUNT_IF(geometry IS NOT NULL AND NOT {polygons}) AS bad_types",
        "COUNT_IF(geometry IS NULL) AS null_geometries",
        "COUNT_IF(geometry IS NOT NULL AND ST_IsEmpty(geometry)) AS empty_geometries",
        "COUNT_IF(repaired) AS repaired",
        "COUNT_IF(geom_type = 'ST_GeometryCollection of polygons') AS collections",
        # a struct is never null, so a field without a year counts too
        "COUNT(DISTINCT STRUCT(feature_id, layer_year)) AS distinct_ids",
    ).first()
    if row.n == 0:
        raise FieldsError(f"{path}: the file has no fields (0 rows); nothing to reduce")
    if row.null_ids:
        raise FieldsError(
            f"{path}: {row.null_ids} field(s) have a null feature_id; give every field an id"
        )
    if row.bad_types:
        ex = fields.where(f"NOT {polygons}").select("feature_id", "geom_type").limit(5).collect()
        raise FieldsError(
            f"{path}: {row.bad_types} geometr(y/ies) are not polygons, e.g. "
            + ", ".join(f"feature_id {r.feature_id}: {r.geom_type}" for r in ex)
            + "; zonal statistics need Polygon or MultiPolygon fields"
        )
    if row.distinct_ids < row.n:
        dups = (
            fields.groupBy("feature_id", "layer_year")
            .agg(F.count("*").alias("k"))
            .where("k > 1")
            .limit(5)
            .collect()
        )
        raise FieldsError(
            f"{path}: feature_id is not unique, e.g. "
            + ", ".join(f"{r.feature_id} ({r.k} rows)" for r in dups)
            + "; ids must identify one field each (one per year when fields carry a year)"
        )
    report = {
        "fields": row.n,
        "null_geometries": row.null_geometries,
        "collections_reduced_as_polygons": row.collections,
        "empty_geometries": row.empty_geometries,
        "repaired_geometries": row.repaired,
    }
    if row.repaired:
        report["repaired_examples"] = [
            r.feature_id
            for r in fields.where("repaired")
            .orderBy("feature_id")
            .select("feature_id")
            .limit(10)
            .collect()
        ]
    return report


def select_years(
    fields,
    path: str,
    year_column: str | None,
    years: list[int],
    store_years: tuple[int, ...],
    skip_missing: bool,
    n: int,
):
    """Fields with their own year: refuse (or drop and count) years the store lacks, keep --years.
    Also the number of field-years the run writes (`n` fields in all)."""
    report = {"year_column": year_column}
    if year_column is None:
        return fields, report | {"field_years": n * len(years)}
    per_year = {r.layer_year: r["count"] for r in fields.groupBy("layer_year").count().collect()}
    if None in per_year:
        raise FieldsError(
            f"{path}: {per_year[None]} field(s) have no value in year column '{year_column}'"
        )
    missing = {y: n for y, n in sorted(per_year.items()) if y not in store_years}
    if missing and not skip_missing:
        raise FieldsError(
            f"{path}: fields of year(s) absent from the store: "
            + ", ".join(f"{y} ({n} fields)" for y, n in missing.items())
            + f"; the store has {list(store_years)}. Pass --skip-missing-years to drop them"
        )
    report["fields_skipped_missing_year"] = sum(missing.values())
    report["fields_outside_years"] = sum(
        n for y, n in per_year.items() if y not in years and y not in missing
    )
    report["field_years"] = sum(n for y, n in per_year.items() if y in years)
    return fields.where(fields.layer_year.isin(years)), report
