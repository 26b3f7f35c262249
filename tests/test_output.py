"""The written dataset: schema, GeoParquet metadata, partitioning, and readers that use it."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from aef_zonal.udfs import pca_model
from tests.conftest import run_job

pytestmark = pytest.mark.spark

COLUMNS = [
    "geometry",
    "score_mean",
    "score_std",
    "source_store",
    "global_x_offset",
    "global_y_offset",
    "local_x_offset",
    "local_y_offset",
    "path",
    "feature_id",
    "bbox",
    "mean",
    "pca_components",
    "hilbert_key",
    "count",
    "std",
    "min",
    "max",
    "sum",
    "mean_normalized",
    "valid_fraction",
    "change",
    "change_from",
    "complete",
    "reason",
    "p05",
    "median",
    "p95",
]


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


def test_the_field_years_without_pixels_beside_the_data(job_out, table):
    """A plain Parquet table of its own, skipped by the readers of the data (its name starts
    with _): every row of the data has its vectors."""
    from aef_zonal import dataset

    listed = pq.read_table(job_out / dataset.WITHOUT_PIXELS)
    assert listed.schema.equals(dataset.without_pixels_schema()) and listed.num_rows > 0
    assert (table["count"] > 0).all() and table.reason.isna().all()
    assert table.pca_components.notna().all() and table["mean"].notna().all()
    assert listed.to_pandas().equals(
        listed.to_pandas().sort_values(["time", "label", "feature_id"]).reset_index(drop=True)
    )


def test_rows_sorted_by_hilbert_key_in_each_partition(job_out):
    for f in parts(job_out):
        keys = pq.read_table(f, columns=["hilbert_key"])["hilbert_key"].to_numpy()
        assert (np.diff(keys) >= 0).all()


def test_hilbert_key_is_the_bbox_centres(table):
    from aef_zonal.udfs.grid import hilbert_key

    box = table.bbox.apply(pd.Series)
    want = hilbert_key((box.xmin + box.xmax).to_numpy() / 2, (box.ymin + box.ymax).to_numpy() / 2)
    np.testing.assert_array_equal(table.hilbert_key.to_numpy(), want)


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
    from aef_zonal.udfs.store import describe

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
    model = pca_model.load(Path(job_out) / "_pca_model.json")
    rows = table[table["count"] > 0]
    got = np.stack(rows.pca_components.to_numpy())
    np.testing.assert_allclose(
        got, sklearn_rgb(model, np.stack(rows["mean"].to_numpy())), rtol=0, atol=6e-8
    )
    assert got.min() >= 0 and got.max() <= 1 and got.std(axis=0).min() > 0.05


def sklearn_rgb(model: dict, means: np.ndarray) -> np.ndarray:
    """scikit-learn's own PCA.transform and MinMaxScaler(clip=True) on the saved model, in float32
    as written."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import MinMaxScaler

    p = PCA(n_components=3)
    p.mean_, p.components_ = np.asarray(model["center"]), np.asarray(model["components"])
    p.n_features_in_, p.whiten = p.components_.shape[1], False
    scale = MinMaxScaler(clip=True).fit(np.array([model["lo"], model["hi"]]))
    return scale.transform(p.transform(means)).astype(np.float32)


def test_pca_model_is_scikit_learns_fit():
    """pca_model.fit saves scikit-learn's components and the fit sample's score range;
    pca_model.apply is scikit-learn's transform scaled by it."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    means = rng.normal(size=(200, 64)) @ rng.normal(size=(64, 64)) * 0.05
    model = pca_model.fit(means, seed=1)
    p = PCA(n_components=3, random_state=1).fit(means)
    np.testing.assert_array_equal(model["components"], p.components_)
    scores = p.transform(means)
    np.testing.assert_array_equal(model["lo"], scores.min(axis=0))
    np.testing.assert_array_equal(model["hi"], scores.max(axis=0))
    fresh = rng.normal(size=(50, 64)) * 0.3  # some fall outside the fit range: clipped to [0, 1]
    for x in (means, fresh):
        np.testing.assert_allclose(
            pca_model.apply(model, x).astype(np.float32), sklearn_rgb(model, x), rtol=0, atol=6e-8
        )


def test_spark_sedona_sql_over_the_output(spark, job_out, table):
    df = spark.read.format("geoparquet").load(str(job_out))
    df.createOrReplaceTempView("fields_out")
    per_label = {
        r.label: r.n
        for r in spark.sql(
            "SELECT label, COUNT(*) AS n FROM fields_out WHERE time = '2024-01-01' GROUP BY label"
        ).collect()
    }
    expected = table[table.time == "2024-01-01"].groupby("label").size().to_dict()
    assert per_label == expected
    fid = int(table.feature_id.iloc[0])
    area = (
        spark.sql(
            f"SELECT ST_Area(geometry) AS a FROM fields_out WHERE feature_id = {fid} "
            "AND time = '2024-01-01'"
        )
        .first()
        .a
    )
    from shapely import wkb

    assert area == pytest.approx(wkb.loads(table.geometry.iloc[0]).area, rel=1e-12)


def test_path_and_offsets_name_the_shard_the_store_layer_reads(tmp_path, job_out):
    """On a store whose origin is no shard corner of the global grid, each row's path and offsets
    are the shard key (ShardLayout, zarr's own chunk-key encoding) and place of the pixel that
    holds the field's bbox top-left corner, found from the store's coordinate arrays."""
    import shapely
    import zarr

    from aef_zonal import submit
    from aef_zonal.demo.sample import create_store
    from aef_zonal.udfs.store import ShardLayout, describe

    res, size, shard = 8.983111749910169e-05, 1024, 512
    xmin, ymax = -93.61234, 42.05678  # 0.6 px and 0.3 px off the global 4096 px shard lattice
    arr = create_store(tmp_path / "store.zarr", [2024], size, xmin, ymax, res, shard)
    rng = np.random.default_rng(0)
    arr[0] = rng.integers(-127, 128, arr.shape[1:], dtype=np.int8)
    # corners in every shard, on chunk borders, in the last pixel, and west of the store
    corners = [
        (3.2, 5.7),
        (300.5, 600.1),
        (511.9, 511.9),
        (512.001, 100.3),
        (700.4, 1000.6),
        (1022.5, 1022.5),
        (255.999, 256.001),
        (-4.5, 20.2),
    ]
    geoms = [
        shapely.box(xmin + c * res, ymax - (r + 1.3) * res, xmin + (c + 1.4) * res, ymax - r * res)
        for c, r in corners
    ]
    fields = gpd.GeoDataFrame(
        {"feature_id": np.arange(len(geoms)), "geometry": geoms}, crs="EPSG:4326"
    )
    fields.to_parquet(tmp_path / "fields.parquet")
    out = tmp_path / "out"
    assert (
        submit.main(
            [
                "--store",
                str(tmp_path / "store.zarr"),
                "--fields",
                str(tmp_path / "fields.parquet"),
                "--out",
                str(out),
                "--master",
                "local[2]",
                # the field west of the store has no pixel: its row, with its offsets, inline
                "--rows-without-pixels",
                "inline",
            ]
        )
        == 0
    )
    rows = (
        ds.dataset(out, partitioning="hive")
        .to_table()
        .to_pandas()
        .set_index("feature_id")
        .sort_index()
    )
    info = describe(str(tmp_path / "store.zarr"))
    layout = ShardLayout(
        zarr.open_array(tmp_path / "store.zarr" / "embeddings", mode="r"), info.grid
    )
    group = zarr.open_group(tmp_path / "store.zarr", mode="r")
    x, y = group["x"][:], group["y"][:]
    for fid, (c, r) in enumerate(corners):
        row = rows.loc[fid]
        gx, gy = int(row.global_x_offset), int(row.global_y_offset)
        assert (gx, gy) == (int(np.floor(c)), int(np.floor(r))), fid
        if gx < 0:  # west of the store: offsets still say where, no shard holds it
            assert pd.isna(row.path)
            continue
        # the pixel whose square holds the corner, by the store's own cell centres
        assert abs(row.bbox["xmin"] - x[gx]) <= res / 2 and abs(row.bbox["ymax"] - y[gy]) <= res / 2
        cy, cx = gy // info.grid.chunk, gx // info.grid.chunk
        assert row.path == layout.key(0, cy, cx)
        assert (tmp_path / "store.zarr" / row.path).is_file()
        slot = layout.slot(cy, cx)
        per = layout.per
        assert (row.local_y_offset, row.local_x_offset) == (
            slot // per * info.grid.chunk + gy % info.grid.chunk,
            slot % per * info.grid.chunk + gx % info.grid.chunk,
        )


def test_pca_sample_is_drawn_by_seed(sample, tmp_path):
    """--pca-sample below the run's field-years: the model is fitted on the field-years that
    pca_model.drawn picks by (feature_id, year, seed) with p = 1.2 * sample / field-years, cut
    to the sample by a generator seeded alike, in (feature_id, year) order. Refitted here from
    the written means it is the same model, whichever tasks drew them; another seed draws
    another sample; each stays close to the fit on every mean."""
    from tests.compare import read

    SAMPLE = 300  # noqa: N806  a third of the test sample's field-years
    models = {}
    for seed in (7, 8):
        out = tmp_path / f"seed-{seed}"
        extra = ("--pca-sample", str(SAMPLE), "--seed", str(seed))
        assert run_job(sample / "store.zarr", sample / "fields.parquet", out, *extra) == 0
        model = json.loads((out / "_pca_model.json").read_text())
        field_years = json.loads((out / "_run.json").read_text())["field_years"]
        rows = read(out)
        rows = rows[rows["mean"].notna()].copy()
        rows["year"] = rows.time.astype(str).str.slice(0, 4).astype(int)
        rows = rows.sort_values(["feature_id", "year"])
        p = min(1.0, 1.2 * SAMPLE / field_years)
        picked = pca_model.drawn(rows.feature_id.to_numpy(), rows.year.to_numpy(), seed, p)
        x = np.stack(rows["mean"].to_numpy()[picked])
        assert SAMPLE < len(x) < 1.4 * SAMPLE, len(x)
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), SAMPLE, replace=False))]
        again = pca_model.fit(x, seed)
        for key in ("center", "components", "lo", "hi"):
            np.testing.assert_array_equal(model[key], again[key], err_msg=key)
        full = pca_model.fit(np.stack(rows["mean"].to_numpy()), seed)
        cosines = np.abs(np.sum(np.multiply(model["components"], full["components"]), axis=1))
        print(f"seed {seed}: |cos| to the full fit per component {np.round(cosines, 4)}")
        assert (cosines > 0.95).all()
        models[seed] = model
    assert models[7]["components"] != models[8]["components"]
