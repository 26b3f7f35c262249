"""Input from other people's pipelines: kept and explained, repaired, reprojected, or refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
import shapely

from aef_zonal.demo.sample import create_store
from aef_zonal.udfs.store import describe
from tests import reference
from tests.compare import read, without_pixels
from tests.conftest import run_job

pytestmark = pytest.mark.spark

LABELS = ["a/b", "..", "x=y", "with space", "maïs", "../../escape", "100%"]


def run(store, fields, out, *extra):
    return run_job(store, fields, out, "--stats", "count,mean,std", *extra)


@pytest.fixture(scope="module")
def messy(sample, tmp_path_factory, job_out):
    """30 sample fields with awkward labels, plus a bow-tie, an empty, a null and a far-away field,
    written without a CRS."""
    tmp = tmp_path_factory.mktemp("messy")
    f = gpd.read_parquet(sample / "fields.parquet").iloc[:30].copy()
    f["label"] = [LABELS[i % len(LABELS)] for i in range(len(f))]
    x0, y0, x1, y1 = f.geometry.iloc[0].bounds
    extra = gpd.GeoDataFrame(
        {
            "feature_id": [9001, 9002, 9003, 9004],
            "label": ["bowtie", "empty", "null", "far"],
            "geometry": [
                shapely.Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1)]),
                shapely.Polygon(),
                None,
                shapely.box(10, 10, 10.01, 10.01),
            ],
        }
    )
    both = pd.concat([f[["feature_id", "label", "geometry"]], extra])
    fields = gpd.GeoDataFrame(both.drop(columns="geometry"), geometry=list(both.geometry))
    assert fields.crs is None
    path = tmp / "fields.parquet"
    fields.to_parquet(path)
    out = tmp / "out"
    assert run(sample / "store.zarr", path, out, "--years", "2025") == 0
    return fields, out


def test_bad_rows_are_listed_with_a_reason(messy):
    """Out of the data, every row of which has its vectors; listed beside it (the default)."""
    fields, out = messy
    t = read(out).set_index("feature_id")
    listed = without_pixels(out).set_index("feature_id")
    assert sorted([*t.index, *listed.index]) == sorted(fields.feature_id), "no field dropped"
    assert (t["count"] > 0).all() and t.pca_components.notna().all()
    assert listed.reason.to_dict() == {
        9002: "empty geometry",
        9003: "null geometry",
        9004: "outside the store",
    }
    assert (listed.time == "2025-01-01").all()
    assert listed.label.to_dict() == {9002: "empty", 9003: "null", 9004: "far"}
    report = json.loads((out / "_run.json").read_text())
    assert report["rows"] == len(t) and report["rows_without_pixels"] == "listed"
    assert report["rows_count_zero"] == {
        "empty geometry": 1,
        "null geometry": 1,
        "outside the store": 1,
    }
    assert report["fields_crs"].startswith("OGC:CRS84 (assumed")


def test_invalid_geometry_is_repaired_like_make_valid(messy, sample):
    fields, out = messy
    report = json.loads((out / "_run.json").read_text())
    assert report["repaired_geometries"] == 1 and report["repaired_examples"] == [9001]
    row = read(out).set_index("feature_id").loc[9001]
    bowtie = fields.set_index("feature_id").geometry[9001]
    fixed = shapely.make_valid(bowtie)  # GEOS: two triangles
    assert fixed.geom_type == "MultiPolygon" and len(fixed.geoms) == 2
    assert shapely.equals(shapely.from_wkb(row.geometry), fixed)
    ref = reference.field_stats(reference.open_store(sample / "store.zarr"), fixed, 2025)
    assert row["count"] == ref["count"] > 0
    np.testing.assert_allclose(np.asarray(row["mean"]), ref["mean"], atol=1e-9)


def test_labels_are_encoded_inside_out_and_read_back(messy, job_out):
    fields, out = messy
    files = list(Path(out).rglob("*.parquet"))
    assert files and all(f.resolve().is_relative_to(Path(out).resolve()) for f in files)
    assert not list(Path(out).parent.glob("escape*")) and not (Path(out).parent / "b").exists()
    back = ds.dataset(out, format="parquet", partitioning="hive").to_table().to_pandas()
    expected = fields.set_index("feature_id").label
    listed = without_pixels(out)
    labels = dict(zip(back.feature_id, back.label)) | dict(zip(listed.feature_id, listed.label))
    assert labels == expected.to_dict()
    # and the statistics are those of the same fields in the plain run
    ref = read(job_out).query("time == '2025-01-01'").set_index("feature_id")["count"]
    got = back.set_index("feature_id")["count"]
    ids = fields.feature_id[fields.feature_id < 9000]
    assert (got[ids] == ref[ids]).all()


def test_labels_read_back_in_spark(messy, spark):
    fields, out = messy
    rows = spark.read.parquet(str(out)).select("feature_id", "label").collect()
    want = fields.set_index("feature_id").label.to_dict()
    assert {r.feature_id: r.label for r in rows} == {
        k: v for k, v in want.items() if k not in (9002, 9003, 9004)
    }


def test_fields_in_utm_are_reprojected(sample, tmp_path, job_out):
    f = gpd.read_parquet(sample / "fields.parquet").iloc[:60]
    path = tmp_path / "utm.parquet"
    f.to_crs("EPSG:32615").to_parquet(path)
    out = tmp_path / "out"
    assert run(sample / "store.zarr", path, out, "--years", "2025") == 0
    assert json.loads((out / "_run.json").read_text())["fields_crs"] == "EPSG:32615"
    got = read(out).set_index("feature_id")
    ref = read(job_out).query("time == '2025-01-01'").set_index("feature_id").loc[got.index]
    # UTM -> lon/lat moves vertices by < 1e-9 degrees (0.1 mm); no pixel centre of the sample
    # lies that close to an edge, so the same pixels are chosen: counts equal, means within 1e-12
    assert (got["count"] == ref["count"]).all()
    for u, v in zip(got["mean"], ref["mean"]):
        if v is not None:
            np.testing.assert_allclose(u, v, atol=1e-12)
    moved = [
        shapely.hausdorff_distance(shapely.from_wkb(a), shapely.from_wkb(b))
        for a, b in zip(got.geometry, ref.geometry)
    ]
    assert max(moved) < 1e-8


@pytest.fixture(scope="module")
def meta_only(sample, tmp_path_factory) -> Path:
    """The sample store's metadata and coordinates without its chunks (cheap to copy and edit)."""

    def skip_chunks(folder, names):
        return ["c"] if Path(folder).name == "embeddings" else []

    store = tmp_path_factory.mktemp("meta") / "store.zarr"
    shutil.copytree(sample / "store.zarr", store, ignore=skip_chunks)
    return store


@pytest.mark.parametrize(
    "edit, words",
    [
        (
            lambda g, a: g["attributes"].pop("spatial:transform"),
            ["no 'spatial:transform' attribute"],
        ),
        (lambda g, a: g["attributes"].pop("proj:code"), ["no 'proj:code' attribute", "EPSG:4326"]),
        (
            lambda g, a: g["attributes"]["geoemb:quantization"].update(method="log"),
            ["unknown quantisation method 'log'", "signed_square"],
        ),
        (
            lambda g, a: a.update(data_type="int16", fill_value=0),
            ["dtype int16", "int8", "float32/float16"],
        ),
        (
            lambda g, a: a.update(data_type="float32", fill_value=0.0),
            ["a float32 store with quantisation method 'signed_square'", "linear scale/offset"],
        ),
    ],
)
def test_store_problems_are_named(edit, words, meta_only, sample, tmp_path, capsys):
    store = tmp_path / "store.zarr"
    shutil.copytree(meta_only, store)
    group, array = store / "zarr.json", store / "embeddings" / "zarr.json"
    g, a = json.loads(group.read_text()), json.loads(array.read_text())
    edit(g, a)
    group.write_text(json.dumps(g))
    array.write_text(json.dumps(a))
    rc = run(store, sample / "fields.parquet", tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 2 and all(w in err for w in words) and str(store) in err, err


def test_a_polygon_over_a_thousand_chunks(sample, tmp_path, job_out):
    """1,024 chunk tasks for one field; two chunks hold data, the rest were never written."""
    g = describe(str(sample / "store.zarr")).grid
    size = 8192
    arr = create_store(tmp_path / "big.zarr", (2025,), size, g.xmin, g.ymax, g.res, shard=256)
    rng = np.random.default_rng(1)
    written = rng.integers(-127, 128, size=(2, 64, 256, 256), dtype=np.int8)
    arr[0, :, 0:256, 0:256] = written[0]
    arr[0, :, 4096:4352, 2048:2304] = written[1]
    fields = gpd.GeoDataFrame(
        {
            "feature_id": [1],
            "geometry": [
                shapely.box(g.xmin, g.ymax - size * g.res, g.xmin + size * g.res, g.ymax).buffer(
                    -g.res / 4
                )
            ],
        },
        crs="EPSG:4326",
    )
    fields.to_parquet(tmp_path / "big.parquet")
    out = tmp_path / "out"
    assert (
        run(
            tmp_path / "big.zarr",
            tmp_path / "big.parquet",
            out,
            "--stats",
            "count,mean,valid_fraction",
            "--pca-model",
            str(job_out / "_pca_model.json"),
        )
        == 0
    )  # one field: nothing to fit
    report = json.loads((out / "_run.json").read_text())
    assert report["chunk_tasks"] == 32 * 32
    row = read(out).iloc[0]
    q = written.transpose(1, 0, 2, 3).reshape(64, -1).astype(np.float64)
    assert row["count"] == 2 * 256 * 256
    np.testing.assert_allclose(
        row["mean"], (np.sign(q) * (q / 127.5) ** 2).mean(axis=1), atol=1e-12
    )
    assert row["valid_fraction"] == pytest.approx(2 * 256 * 256 / size**2)
