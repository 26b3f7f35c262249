"""Inputs a new user brings: each gives a result or a message naming the problem, never a trace."""

from __future__ import annotations

import json
import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
import shapely
import zarr

from aef_zonal import submit
from tests import reference

pytestmark = pytest.mark.spark


def run(sample, fields, out, *extra):
    return submit.main(
        [
            "--store",
            str(sample / "store.zarr"),
            "--fields",
            str(fields),
            "--out",
            str(out),
            "--master",
            "local[2]",
            "--stats",
            "count,mean,std",
            *extra,
        ]
    )


def rows(out) -> pd.DataFrame:
    t = ds.dataset(out, partitioning="hive").to_table().to_pandas()
    t["year"] = t.time.str.slice(0, 4).astype(int)
    return t.set_index(["feature_id", "year"]).sort_index()


@pytest.fixture(scope="module")
def odd(sample, tmp_path_factory):
    """One file with what other tools write: string ids, the geometry column called `geom` (the
    `geo` metadata names it), a 3-D copy of a field, a geometry collection holding two fields,
    a polygon larger than the store, and every optional column null."""
    base = gpd.read_parquet(sample / "fields.parquet").iloc[:12].reset_index(drop=True)
    g = list(base.geometry)
    z = shapely.force_3d(g[0], 100.0)
    collection = shapely.GeometryCollection([g[1], g[2]])
    huge = shapely.box(-100, 35, -85, 50)  # the whole store and far beyond
    geoms = g + [z, collection, huge]
    ids = [str(i) for i in base.feature_id] + ["5000001", "5000002", "5000003"]
    f = gpd.GeoDataFrame(
        {
            "feature_id": ids,
            "label": [None] * len(geoms),
            "score_mean": np.full(len(geoms), np.nan, np.float32),
            "score_std": np.full(len(geoms), np.nan, np.float32),
        },
        geometry=gpd.GeoSeries(geoms, crs="EPSG:4326"),
    ).rename_geometry("geom")
    folder = tmp_path_factory.mktemp("odd")
    f.to_parquet(folder / "fields.parquet")
    out = folder / "out"
    assert run(sample, folder / "fields.parquet", out, "--years", "2025") == 0
    return base, rows(out), out


def test_string_ids_geom_column_and_null_optionals(odd):
    base, got, _ = odd
    assert sorted(got.index.get_level_values(0)) == sorted(
        list(base.feature_id) + [5000001, 5000002, 5000003]
    )
    assert (
        (got.label == "field").all() and got.score_mean.isna().all() and got.score_std.isna().all()
    )
    assert (got["count"] > 0).all()


def test_3d_polygon_and_collection_are_reduced_as_their_polygons(odd, sample):
    base, got, _ = odd
    store = reference.open_store(sample / "store.zarr")
    first = got.loc[(int(base.feature_id[0]), 2025)]
    z = got.loc[(5000001, 2025)]
    assert z["count"] == first["count"] and np.array_equal(z["mean"], first["mean"])
    ref = reference.field_stats(
        store, shapely.MultiPolygon([base.geometry[1], base.geometry[2]]), 2025
    )
    c = got.loc[(5000002, 2025)]
    assert c["count"] == ref["count"] > 0 and pd.isna(c.reason)
    assert reference.rounding_error(c, ref) <= 1e-12
    assert shapely.from_wkb(c.geometry).geom_type == "MultiPolygon"


def test_a_polygon_larger_than_the_store(odd, sample):
    _, got, _ = odd
    q = zarr.open_group(sample / "store.zarr", mode="r")["embeddings"][1]  # 2025
    valid = (q != -128).all(axis=0)
    v = reference.dequantise(q[:, valid])
    row = got.loc[(5000003, 2025)]
    assert row["count"] == valid.sum()
    # fsum: over 10^6 values numpy's mean drifts by 3e-13, the job's exact integer sums do not
    exact = np.array([math.fsum(band) for band in v]) / v.shape[1]
    np.testing.assert_allclose(row["mean"], exact, rtol=0, atol=1e-15 * np.abs(v).mean())


def test_a_run_report_names_the_odd_inputs(odd):
    out = odd[2]
    report = json.loads((out / "_run.json").read_text())
    assert report["geometry_column"] == "geom"
    assert report["collections_reduced_as_polygons"] == 1


def refused(sample, tmp_path, capsys, fields) -> str:
    path = tmp_path / "fields.parquet"
    fields.to_parquet(path)
    assert run(sample, path, tmp_path / "out") == 2
    assert not (tmp_path / "out").exists()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_string_ids_that_are_not_integers(sample, tmp_path, capsys):
    f = gpd.read_parquet(sample / "fields.parquet").iloc[:5]
    f["feature_id"] = ["field-" + str(i) for i in f.feature_id]
    err = refused(sample, tmp_path, capsys, f)
    assert "'feature_id'" in err and "field-1007" in err and "integer" in err


def test_a_fields_file_without_rows(sample, tmp_path, capsys):
    f = gpd.read_parquet(sample / "fields.parquet").iloc[:0]
    err = refused(sample, tmp_path, capsys, f)
    assert "has no fields" in err


def test_files_in_different_crs(sample, tmp_path, capsys):
    f = gpd.read_parquet(sample / "fields.parquet").iloc[:6]
    folder = tmp_path / "fields"
    folder.mkdir()
    f.iloc[:3].to_parquet(folder / "a.parquet")
    f.iloc[3:].to_crs(32615).to_parquet(folder / "b.parquet")
    assert run(sample, folder, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert (
        "different CRSs" in err
        and "EPSG:32615" in err
        and "EPSG:4326" in err
        and "Traceback" not in err
    )


def test_one_field_one_year_writes_statistics_without_pca(sample, tmp_path, odd):
    f = gpd.read_parquet(sample / "fields.parquet").iloc[:1]
    f.to_parquet(tmp_path / "one.parquet")
    assert run(sample, tmp_path / "one.parquet", tmp_path / "out", "--years", "2025") == 0
    row = rows(tmp_path / "out").iloc[0]
    ref = reference.field_stats(
        reference.open_store(sample / "store.zarr"), f.geometry.iloc[0], 2025
    )
    assert row["count"] == ref["count"] > 0 and row.pca_components is None
    report = json.loads((tmp_path / "out" / "_run.json").read_text())
    assert (
        "only 1 field-year(s) have a valid pixel" in report["pca"]
        and "--pca-model" in report["pca"]
    )
    assert not (tmp_path / "out" / "_pca_model.json").exists()
    # with a model the same run is coloured
    assert (
        run(
            sample,
            tmp_path / "one.parquet",
            tmp_path / "coloured",
            "--years",
            "2025",
            "--pca-model",
            str(odd[2] / "_pca_model.json"),
        )
        == 0
    )
    assert rows(tmp_path / "coloured").iloc[0].pca_components is not None
