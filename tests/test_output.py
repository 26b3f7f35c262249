"""The written dataset: schema, GeoParquet metadata, partitioning, and readers that use it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from jobs import config
from tests.conftest import ALL_STATS
from udfs import pca

pytestmark = pytest.mark.spark

COLUMNS = ["geometry", "score_mean", "score_std", "source_store", "global_x_offset",
           "global_y_offset", "local_x_offset", "local_y_offset", "path", "feature_id", "bbox",
           "mean", "pca_components", "hilbert_key", "count", "std", "min", "max", "sum",
           "mean_normalized", "valid_fraction", "complete", "reason", "p05", "median", "p95"]


@pytest.fixture(scope="module")
def table(job_out):
    return ds.dataset(job_out, format="parquet", partitioning="hive").to_table().to_pandas()


def parts(job_out):
    return sorted(Path(job_out).glob("time=*/label=*/*.parquet"))


def test_layout_and_geo_metadata(job_out):
    dirs = sorted(p.parent.relative_to(job_out).as_posix() for p in parts(job_out))
    assert "time=2024-01-01/label=corn" in dirs and "time=2025-01-01/label=soybeans" in dirs
    for f in parts(job_out):
        meta = pq.read_schema(f).metadata
        geo = json.loads(meta[b"geo"])
        col = geo["columns"]["geometry"]
        assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
        assert col["encoding"] == "WKB"
        assert col["crs"]["id"] == {"authority": "EPSG", "code": 4326}
        assert col["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
        assert set(col["geometry_types"]) <= {"Polygon", "MultiPolygon"}
        assert pq.read_schema(f).names == COLUMNS


def test_rows_sorted_by_hilbert_key_in_each_partition(job_out):
    for f in parts(job_out):
        keys = pq.read_table(f, columns=["hilbert_key"])["hilbert_key"].to_numpy()
        assert (np.diff(keys) >= 0).all()


def test_read_back_with_geopandas_one_partition(job_out, table):
    folder = Path(job_out) / "time=2025-01-01" / "label=corn"
    gdf = gpd.read_parquet(next(folder.glob("*.parquet")))
    assert gdf.crs.to_epsg() == 4326
    expected = table[(table.time == "2025-01-01") & (table.label == "corn")]
    assert sorted(gdf.feature_id) == sorted(expected.feature_id)
    # the bbox covering column holds each geometry's bounds
    b = gdf.set_index("feature_id").geometry.bounds.sort_index()
    e = expected.set_index("feature_id").sort_index()
    np.testing.assert_array_equal(b.minx, e.bbox.map(lambda d: d["xmin"]))
    np.testing.assert_array_equal(b.maxy, e.bbox.map(lambda d: d["ymax"]))


def test_offsets_path_and_pca(job_out, table, sample):
    from udfs.store import describe

    info = describe(str(sample / "store.zarr"))
    g = info.grid
    inside = table[table.path.notna()]
    for _, r in inside.head(50).iterrows():
        gx = int(np.floor((r.bbox["xmin"] - g.xmin) / g.res))
        gy = int(np.floor((g.ymax - r.bbox["ymax"]) / g.res))
        assert (r.global_x_offset, r.global_y_offset) == (gx, gy)
        assert (r.local_x_offset, r.local_y_offset) == (gx % g.shard, gy % g.shard)
        t = info.grid.time_index(int(r.time[:4]))
        assert r.path == f"embeddings/c/{t}/0/{gy // g.shard}/{gx // g.shard}"
    model = pca.load(Path(job_out) / "_pca_model.json")
    rows = table[table["count"] > 0]
    got = np.stack(rows.pca_components.to_numpy())
    # the projection written out: scores on the saved components, scaled by the saved range
    scores = (np.stack(rows["mean"].to_numpy()) - model["center"]) @ np.array(model["components"]).T
    want = np.clip((scores - model["lo"]) / (np.array(model["hi"]) - model["lo"]), 0, 1)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got.min() >= 0 and got.max() <= 1 and got.std(axis=0).min() > 0.05


def test_spark_sedona_sql_over_the_output(spark, job_out, table):
    df = spark.read.format("geoparquet").load(str(job_out))
    df.createOrReplaceTempView("fields_out")
    per_label = {r.label: r.n for r in spark.sql(
        "SELECT label, COUNT(*) AS n FROM fields_out WHERE time = '2024-01-01' GROUP BY label").collect()}
    expected = table[table.time == "2024-01-01"].groupby("label").size().to_dict()
    assert per_label == expected
    fid = int(table.feature_id.iloc[0])
    area = spark.sql(f"SELECT ST_Area(geometry) AS a FROM fields_out WHERE feature_id = {fid} "
                     "AND time = '2024-01-01'").first().a
    from shapely import wkb
    assert area == pytest.approx(wkb.loads(table.geometry.iloc[0]).area, rel=1e-12)


def test_spark_submit_runs_the_same_job(sample, job_out, tmp_path):
    out = tmp_path / "submitted"
    root = Path(__file__).resolve().parent.parent
    spark_submit = Path(sys.executable).parent / "spark-submit"
    jars = ",".join(str(j) for j in config.sedona_jars())
    proc = subprocess.run(
        [str(spark_submit), "--master", "local[2]", "--jars", jars, str(root / "jobs" / "zonal_stats.py"),
         "--store", str(sample / "store.zarr"), "--fields", str(sample / "fields.parquet"),
         "--out", str(out), "--stats", ALL_STATS, "--pca-model",
         str(job_out / "_pca_model.json")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (ds.dataset(d, partitioning="hive").to_table().to_pandas()
            .sort_values(["time", "feature_id"]).reset_index(drop=True) for d in (job_out, out))
    assert len(a) == len(b)
    for col in ("feature_id", "count", "label", "path", "hilbert_key"):
        assert a[col].equals(b[col]), col
    for col in ("mean", "std", "pca_components", "median"):
        for x, y in zip(a[col], b[col]):
            assert (x is None and y is None) or np.array_equal(x, y)
