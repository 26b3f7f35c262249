"""The output as others read it: `aef-zonal sql` (Spark + Sedona), SedonaDB and DuckDB (with its
spatial extension from the duckdb-extension-spatial wheel, no download) give the same answers as
pyarrow; and a third-party validator (geoparquet-validator) checks every file against GeoParquet 1.1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from aef_zonal import query

pytestmark = pytest.mark.spark

YEAR = "2024-01-01"
BAND = 5  # 1-based; Spark's `mean[i]` is 0-based, DuckDB's and SedonaDB's 1-based

# {window}: a WKT polygon in EPSG:4326 as each engine builds it; {band}: the engine's index of BAND
SQL = {
    "per_label": "SELECT CAST(time AS STRING) AS time, label, COUNT(*) AS n FROM fields GROUP BY time, label",
    "bbox": f"""SELECT feature_id FROM fields WHERE time = '{YEAR}'
                AND bbox.xmin >= {{xmin}} AND bbox.xmax <= {{xmax}}
                AND bbox.ymin >= {{ymin}} AND bbox.ymax <= {{ymax}}""",
    "intersects": f"SELECT feature_id FROM fields WHERE time = '{YEAR}' AND ST_Intersects(geometry, {{window}})",
    "band_mean": f"""SELECT label, AVG(mean[{{band}}]) AS v, SUM(ST_Area(geometry)) AS area FROM fields
                     WHERE time = '{YEAR}' AND count > 0 GROUP BY label""",
}


@pytest.fixture(scope="module")
def table(job_out) -> pd.DataFrame:
    return ds.dataset(job_out, format="parquet", partitioning="hive").to_table().to_pandas()


@pytest.fixture(scope="module")
def box(table) -> dict:
    """The middle half of the year's extent: some fields inside, some across, most outside."""
    b = pd.DataFrame(list(table[table.time == YEAR].bbox))
    x0, x1, y0, y1 = b.xmin.min(), b.xmax.max(), b.ymin.min(), b.ymax.max()
    return {
        "xmin": x0 + (x1 - x0) / 4,
        "xmax": x1 - (x1 - x0) / 4,
        "ymin": y0 + (y1 - y0) / 4,
        "ymax": y1 - (y1 - y0) / 4,
    }


def wkt(box) -> str:
    x0, x1, y0, y1 = box["xmin"], box["xmax"], box["ymin"], box["ymax"]
    return f"POLYGON(({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))"


def expected(table, box) -> dict:
    """The same answers from pyarrow, numpy and shapely."""
    import shapely

    year = table[table.time == YEAR]
    b = pd.DataFrame(list(year.bbox), index=year.index)
    inside = (
        (b.xmin >= box["xmin"])
        & (b.xmax <= box["xmax"])
        & (b.ymin >= box["ymin"])
        & (b.ymax <= box["ymax"])
    )
    geoms = shapely.from_wkb(year.geometry)
    hits = shapely.intersects(geoms, shapely.from_wkt(wkt(box)))
    valid = year[year["count"] > 0].assign(area=shapely.area(geoms[year["count"].to_numpy() > 0]))
    return {
        "per_label": table.groupby(["time", "label"]).size().to_dict(),
        "bbox": sorted(year.feature_id[inside]),
        "intersects": sorted(year.feature_id[hits]),
        "band_mean": {
            label: (np.mean([m[BAND - 1] for m in g["mean"]]), g.area.sum())
            for label, g in valid.groupby("label")
        },
    }


def answers(rows: dict[str, pd.DataFrame]) -> dict:
    """Engine results (pandas) in the shape of expected()."""
    per_label = rows["per_label"]
    return {
        "per_label": {
            (str(t)[:10], lab): int(n)
            for t, lab, n in per_label[["time", "label", "n"]].itertuples(index=False)
        },
        "bbox": sorted(int(i) for i in rows["bbox"].feature_id),
        "intersects": sorted(int(i) for i in rows["intersects"].feature_id),
        "band_mean": {r.label: (r.v, r.area) for r in rows["band_mean"].itertuples()},
    }


def assert_same(got: dict, want: dict) -> None:
    assert got["per_label"] == want["per_label"]
    assert got["bbox"] == want["bbox"] and len(want["bbox"]) > 0
    assert got["intersects"] == want["intersects"] and len(want["intersects"]) > len(want["bbox"])
    assert got["band_mean"].keys() == want["band_mean"].keys()
    for label, (v, area) in want["band_mean"].items():
        assert got["band_mean"][label] == pytest.approx((v, area), rel=1e-12, abs=1e-15), label


def test_spark_sedona_via_the_sql_command(spark, job_out, table, box):
    sql = {
        k: s.format(band=BAND - 1, window=f"ST_GeomFromText('{wkt(box)}')", **box)
        for k, s in SQL.items()
    }
    rows = {k: query.query(spark, job_out, s).toPandas() for k, s in sql.items()}
    assert_same(answers(rows), expected(table, box))


def test_sedonadb(job_out, table, box):
    import sedona.db

    sd = sedona.db.connect()
    sd.read_parquet(str(job_out)).to_view("fields")
    window = f"ST_SetSRID(ST_GeomFromText('{wkt(box)}'), 4326)"  # SedonaDB refuses mixed CRSs
    rows = {
        k: sd.sql(s.format(band=BAND, window=window, **box)).to_pandas() for k, s in SQL.items()
    }
    assert_same(answers(rows), expected(table, box))


def test_duckdb_with_spatial(job_out, table, box, tmp_path):
    import duckdb
    from duckdb_extensions import import_extension

    con = duckdb.connect()
    con.sql(
        f"SET extension_directory = '{tmp_path}'"
    )  # install from the wheel here, not in ~/.duckdb
    import_extension("spatial", con=con)
    con.sql("LOAD spatial")
    con.sql(
        f"CREATE VIEW fields AS SELECT * FROM read_parquet('{job_out}/*/*/*.parquet', hive_partitioning = true)"
    )
    assert (
        con.sql("SELECT data_type FROM information_schema.columns WHERE column_name = 'geometry'")
        .fetchone()[0]
        .startswith("GEOMETRY")
    )
    window = f"ST_GeomFromText('{wkt(box)}')"
    rows = {k: con.sql(s.format(band=BAND, window=window, **box)).df() for k, s in SQL.items()}
    assert_same(answers(rows), expected(table, box))


def test_year_filter_prunes_partitions(spark, job_out, capsys):
    plan = query.query(
        spark, job_out, f"SELECT feature_id FROM fields WHERE time = '{YEAR}' AND label = 'corn'"
    )
    text = plan._jdf.queryExecution().executedPlan().toString()
    assert "PartitionFilters: [isnotnull(time" in text and f"= {YEAR}" in text and "(label" in text
    # the same plan through the command line
    assert (
        query.main(
            [str(job_out), f"SELECT COUNT(*) FROM fields WHERE time = '{YEAR}'", "--explain"]
        )
        == 0
    )
    assert "PartitionFilters: [isnotnull(time#" in capsys.readouterr().out


def test_area_spheroid_is_geodesic_square_metres(spark, job_out, table):
    from pyproj import Geod
    from shapely import wkb

    row = table[(table.time == YEAR)].iloc[0]
    got = (
        query.query(
            spark,
            job_out,
            f"SELECT ST_AreaSpheroid(geometry) AS a FROM fields "
            f"WHERE time = '{YEAR}' AND feature_id = {row.feature_id}",
        )
        .first()
        .a
    )
    want = abs(Geod(ellps="WGS84").geometry_area_perimeter(wkb.loads(row.geometry))[0])
    assert got == pytest.approx(want, rel=1e-6) and got > 100


def test_sql_command_prints_and_writes(job_out, tmp_path, capsys):
    assert (
        query.main(
            [
                str(job_out),
                "SELECT label, COUNT(*) AS n FROM fields "
                f"WHERE time = '{YEAR}' GROUP BY label ORDER BY label",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "   label|  n|" in out and "    corn|" in out and out.endswith("\n4 rows\n")
    # more rows than shown: how many, and how to see them (Spark alone says neither)
    assert query.main([str(job_out), "SELECT feature_id FROM fields"]) == 0
    total = ds.dataset(job_out, format="parquet").count_rows()
    out = capsys.readouterr().out
    assert f"\n{total:,} rows (20 shown: --limit N for more, --to FILE.parquet for all)\n" in out
    assert "only showing" not in out

    import geopandas as gpd

    target = tmp_path / "corn.parquet"
    assert (
        query.main(
            [
                str(job_out),
                f"SELECT feature_id, geometry FROM fields WHERE time = '{YEAR}' AND label = 'corn'",
                "--to",
                str(target),
                "--limit",
                "5",
            ]
        )
        == 0
    )
    gdf = gpd.read_parquet(target)
    assert len(gdf) == 5 and gdf.crs.to_epsg() == 4326 and target.is_file()

    plain = tmp_path / "labels.parquet"
    assert query.main([str(job_out), "SELECT DISTINCT label FROM fields", "--to", str(plain)]) == 0
    assert sorted(pd.read_parquet(plain).label) == ["alfalfa", "corn", "pasture", "soybeans"]


def test_sql_views_the_field_years_without_pixels(job_out, sample, spark):
    """Every field-year is a row of `fields` or of `without_pixels`, never both."""
    import geopandas as gpd

    listed = pd.read_parquet(job_out / "_without_pixels")
    answer = query.query(
        spark, job_out, "SELECT reason, COUNT(*) AS n FROM without_pixels GROUP BY reason"
    ).collect()
    assert {r.reason: r.n for r in answer} == listed.reason.value_counts().to_dict()
    both = query.query(
        spark,
        job_out,
        "SELECT COUNT(*) AS n, COUNT(DISTINCT feature_id, time) AS keys FROM (SELECT feature_id, "
        "CAST(time AS STRING) AS time FROM fields UNION ALL SELECT feature_id, time FROM "
        "without_pixels)",
    ).first()
    assert both.n == both.keys == 2 * len(gpd.read_parquet(sample / "fields.parquet"))


def test_sql_command_errors(job_out, tmp_path, capsys):
    assert query.main([str(job_out), "SELECT no_such_column FROM fields"]) == 2
    assert "no_such_column" in capsys.readouterr().err
    assert query.main([str(tmp_path), "SELECT 1"]) == 2
    assert "is not an aef-zonal output" in capsys.readouterr().err


def parts(job_out) -> list[Path]:
    return sorted(Path(job_out).glob("time=*/label=*/*.parquet"))


def test_geoparquet_validator_core(job_out):
    import geoparquet_validator as gpv

    for f in parts(job_out):
        report = gpv.check(str(f))
        assert report["version"] == "1.1.0"
        status = {o["id"]: o["status"] for o in report["outcomes"]}
        # geo-metadata: the `geo` key against the official 1.1.0 JSON Schema the validator ships
        assert status["/conf/core/geo-metadata"] == "pass" and status["/conf/core/wkb"] == "pass"
        assert gpv.conformant(report, "core"), (f, gpv.failed(report))


def test_geoparquet_validator_covering(job_out):
    import geoparquet_validator as gpv

    failed = {t for f in parts(job_out) for t in gpv.failed(gpv.check(str(f)), "covering")}
    assert not failed, failed


@pytest.fixture(scope="module")
def every_kind(sample, tmp_path_factory, job_out):
    """An output holding every kind of input row: per-year layers of sample fields, and a null,
    an empty, an invalid (repaired) and a far-away (outside the store) polygon, kept in the
    data (--rows-without-pixels inline): the rows a reader may meet there."""
    import geopandas as gpd
    import shapely

    from aef_zonal import submit
    from aef_zonal.demo.sample import fields_by_year

    layers = fields_by_year(
        gpd.read_parquet(sample / "fields.parquet").iloc[:20], (2024, 2025), seed=5
    )
    x0, y0, x1, y1 = layers.geometry.iloc[0].bounds
    odd = gpd.GeoDataFrame(
        {
            "feature_id": [9001, 9002, 9003, 9004],
            "label": ["null", "empty", "bowtie", "far"],
            "year": np.array([2024, 2025, 2025, 2024], np.int32),
            "geometry": [
                None,
                shapely.Polygon(),
                shapely.Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1)]),
                shapely.box(10, 10, 10.01, 10.01),
            ],
        },
        crs=layers.crs,
    )
    fields = gpd.GeoDataFrame(pd.concat([layers, odd], ignore_index=True), crs=layers.crs)
    folder = tmp_path_factory.mktemp("every_kind")
    fields.to_parquet(folder / "fields.parquet")
    out = folder / "out"
    assert (
        submit.main(
            [
                "--store",
                str(sample / "store.zarr"),
                "--fields",
                str(folder / "fields.parquet"),
                "--out",
                str(out),
                "--master",
                "local[2]",
                "--stats",
                "count,mean",
                "--pca-model",
                str(job_out / "_pca_model.json"),
                "--rows-without-pixels",
                "inline",
            ]
        )
        == 0
    )
    t = ds.dataset(out, partitioning="hive").to_table().to_pandas().set_index("feature_id")
    assert t.reason[9001] == "null geometry" and t.reason[9002] == "empty geometry"
    assert t.reason[9004] == "outside the store" and pd.isna(t.reason[9003])  # repaired, reduced
    # no extent, no key (and no colour without a mean); a far-away field still has a key
    assert pd.isna(t.hilbert_key[9001]) and pd.isna(t.hilbert_key[9002])
    assert t.hilbert_key[9004] > 0 and t.pca_components[9004] is None
    return out


def test_geoparquet_validator_over_every_kind_of_row(every_kind):
    import geoparquet_validator as gpv

    files = parts(every_kind)
    assert len({f.parent.parent.name for f in files}) == 2  # both years' layers
    for f in files:
        report = gpv.check(str(f))
        assert gpv.conformant(report, "core"), (f, gpv.failed(report))
        assert not gpv.failed(report, "covering"), (f, gpv.failed(report, "covering"))


def test_bbox_is_present_exactly_where_the_geometry_is(every_kind):
    import shapely

    t = ds.dataset(every_kind, partitioning="hive").to_table().to_pandas().set_index("feature_id")
    assert (t.bbox.isna() == t.geometry.isna()).all()
    assert t.bbox[9001] is None
    assert all(np.isnan(v) for v in t.bbox[9002].values())  # empty: NaN, no extent
    rest = t.drop(index=[9001, 9002])
    bounds = shapely.bounds(shapely.from_wkb(rest.geometry))
    np.testing.assert_array_equal(
        np.array([[b[k] for k in ("xmin", "ymin", "xmax", "ymax")] for b in rest.bbox]), bounds
    )


BBOX_FILTERS = {  # the whole world: every field with an extent, in the two usual forms
    "within": "bbox.xmin >= -180 AND bbox.xmax <= 180 AND bbox.ymin >= -90 AND bbox.ymax <= 90",
    "intersects": "bbox.xmin <= 180 AND bbox.xmax >= -180 AND bbox.ymin <= 90 AND bbox.ymax >= -90",
}


def test_bbox_filters_never_select_an_empty_geometry(every_kind, spark, tmp_path):
    import duckdb
    import pyarrow.compute as pc

    data = ds.dataset(every_kind, partitioning="hive")
    # one row per field and year of its layer: all but the null and the empty geometry
    want = sorted(
        f for f in data.to_table().column("feature_id").to_pylist() if f not in (9001, 9002)
    )
    xmin, ymin, xmax, ymax = (pc.field("bbox", k) for k in ("xmin", "ymin", "xmax", "ymax"))
    arrow = {
        "within": (xmin >= -180) & (xmax <= 180) & (ymin >= -90) & (ymax <= 90),
        "intersects": (xmin <= 180) & (xmax >= -180) & (ymin <= 90) & (ymax >= -90),
    }
    con = duckdb.connect()
    for name, where in BBOX_FILTERS.items():
        got = {
            "spark": [
                r.feature_id
                for r in query.query(
                    spark, every_kind, f"SELECT feature_id FROM fields WHERE {where}"
                ).collect()
            ],
            "duckdb": [
                r[0]
                for r in con.sql(
                    f"SELECT feature_id FROM read_parquet('{every_kind}/*/*/*.parquet', "
                    f"hive_partitioning = true) WHERE {where}"
                ).fetchall()
            ],
            "pyarrow": data.to_table(filter=arrow[name]).column("feature_id").to_pylist(),
        }
        for engine, ids in got.items():
            assert sorted(ids) == want, (name, engine)
