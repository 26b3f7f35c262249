"""Fields in the formats people have (GeoPackage, Shapefile, GeoJSON, FlatGeobuf), written by
geopandas from the sample's fields: the same output as the same fields in GeoParquet."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import shapely

from tests.compare import assert_frames_same, read
from tests.conftest import ALL_STATS, run_job

pytestmark = pytest.mark.spark
YEAR = 2025


@pytest.fixture(scope="module")
def fields(sample, kinds):
    """Every edge case of the sample (holes, multipolygons, a many-chunk field, fields partly
    and wholly outside, sub-pixel ones) and every tenth ordinary field."""
    f = gpd.read_parquet(sample / "fields.parquet")
    kind = f.feature_id.map(kinds)
    return f[(kind != "field") | (f.index % 10 == 0)].reset_index(drop=True)


def run(sample, job_out, path, out, *extra):
    return run_job(
        sample / "store.zarr",
        path,
        out,
        "--years",
        str(YEAR),
        "--stats",
        ALL_STATS,
        "--pca-model",
        str(job_out / "_pca_model.json"),
        *extra,
    )


def reference(job_out, ids):
    """The session's GeoParquet run, restricted to these fields and the year (its `change` saw
    the year before, a run of one year has none)."""
    t = read(job_out)
    t = t[(t.time == f"{YEAR}-01-01") & t.feature_id.isin(ids)].reset_index(drop=True)
    return t.drop(columns=["change", "change_from"])


def assert_same_output(out, job_out, fields):
    got = read(out).drop(columns=["change", "change_from"])
    want = reference(job_out, fields.feature_id)
    assert_frames_same(got, want, ignore=("source_store", "geometry"))
    # a format may store a polygon as a one-part multipolygon, or start its rings elsewhere
    assert all(
        shapely.equals(shapely.from_wkb(a), shapely.from_wkb(b))
        for a, b in zip(got.geometry, want.geometry)
    )


@pytest.mark.parametrize(
    "name, write",
    [
        ("fields.shp", lambda f, p: f.to_file(p)),
        # GDAL writes a float32 column to GeoJSON with 8 significant digits, which do not give
        # the same float32 back: as float64 the scores travel exactly
        (
            "fields.geojson",
            lambda f, p: f.astype({"score_mean": "float64", "score_std": "float64"}).to_file(
                p, driver="GeoJSON"
            ),
        ),
        ("fields.fgb", lambda f, p: f.to_file(p, driver="FlatGeobuf")),
    ],
)
def test_a_format_gives_the_geoparquet_output(name, write, fields, sample, job_out, tmp_path):
    write(fields, tmp_path / name)
    assert run(sample, job_out, tmp_path / name, tmp_path / "out") == 0
    assert_same_output(tmp_path / "out", job_out, fields)
    report = json.loads((tmp_path / "out" / "_run.json").read_text())
    assert report["fields_crs"] in ("EPSG:4326", "OGC:CRS84")  # as the file states it
    assert report["fields_format"] == {"shp": "Shapefile", "geojson": "GeoJSON"}.get(
        name.split(".")[1], "FlatGeobuf"
    )


def test_a_geopackage_layer_in_utm(fields, sample, job_out, tmp_path, capsys):
    """Two layers: --layer picks one; the file's CRS (UTM 15N) is read and reprojected."""
    path = tmp_path / "fields.gpkg"
    fields.to_crs(32615).to_file(path, layer="parcels")
    fields.head(3).to_file(path, layer="roads")
    assert run(sample, job_out, path, tmp_path / "none") == 2
    err = capsys.readouterr().err
    assert "has 2 feature layers (parcels, roads); name one with --layer" in err
    assert run(sample, job_out, path, tmp_path / "out", "--layer", "parcels") == 0
    report = json.loads((tmp_path / "out" / "_run.json").read_text())
    assert report["fields_crs"] == "EPSG:32615"
    assert report["fields_format"] == "GeoPackage (layer parcels)"
    got, want = read(tmp_path / "out"), reference(job_out, fields.feature_id)
    # as tests/test_inputs.py's UTM GeoParquet: vertices move by < 1e-8 degrees, no pixel
    # centre lies that close to an edge: the same pixels, the means within 1e-12
    assert (got.feature_id.to_numpy() == want.feature_id.to_numpy()).all()
    assert (got["count"].to_numpy() == want["count"].to_numpy()).all()
    for u, v in zip(got["mean"], want["mean"]):
        if v is not None:
            np.testing.assert_allclose(u, v, atol=1e-12)
