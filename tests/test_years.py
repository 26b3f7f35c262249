"""Fields that carry their own year: each is reduced against that year's slice only."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from aef_zonal.demo.sample import fields_by_year
from aef_zonal.stages import fields as fields_stage
from tests import reference
from tests.compare import read, without_pixels
from tests.conftest import run_job

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def yearly(sample, tmp_path_factory, job_out):
    fields = fields_by_year(gpd.read_parquet(sample / "fields.parquet"), (2024, 2025), seed=3)
    folder = tmp_path_factory.mktemp("yearly")
    fields.to_parquet(folder / "fields.parquet")
    out = folder / "result"
    assert (
        run_job(
            sample / "store.zarr",
            folder / "fields.parquet",
            out,
            "--stats",
            "count,mean,std,change",
            "--pca-model",
            str(job_out / "_pca_model.json"),
        )
        == 0
    )
    return fields, out


def test_each_field_reduced_for_its_own_year(sample, yearly):
    fields, out = yearly
    got = read(out)
    got["year"] = got.time.str.slice(0, 4).astype(int)
    got = got.set_index(["feature_id", "year"]).sort_index()
    listed = without_pixels(out)
    listed = set(zip(listed.feature_id, listed.time.str.slice(0, 4).astype(int)))
    # one row (or a listed reason) per field of each year's layer, not fields x years
    assert len(got) + len(listed) == len(fields) and not listed & set(got.index)
    both = fields.groupby("feature_id").year.nunique()
    assert (both == 2).sum() > 100, "the same ids appear in both years with different polygons"
    store = reference.open_store(sample / "store.zarr")
    worst, means = 0.0, {}
    for fid, year, geom in zip(fields.feature_id, fields.year, fields.geometry):
        ref = reference.field_stats(store, geom, int(year))
        if ref["count"] == 0:
            assert (fid, int(year)) in listed, (fid, year)
            continue
        row = got.loc[(fid, int(year))]
        assert row["count"] == ref["count"], (fid, year)
        if ref["count"]:
            means[fid, int(year)] = ref["mean"]
            worst = max(
                worst,
                np.abs(np.asarray(row["mean"]) - ref["mean"]).max(),
                np.abs(np.asarray(row["std"]) - ref["std"]).max(),
            )
    assert worst <= 1e-6
    # change: the two layers' polygons of an id are the same field (1 - cosine of the reference
    # means in numpy); null in 2024, for ids only in 2025 and without a valid pixel either year
    changed = 0
    for (fid, year), row in got.iterrows():
        if year == 2025 and (fid, 2024) in means and (fid, 2025) in means:
            a, b = means[fid, 2024], means[fid, 2025]
            assert row["change"] == pytest.approx(1 - a @ b / np.sqrt((a @ a) * (b @ b)), abs=1e-12)
            assert row["change_from"] == 2024
            changed += 1
        else:
            assert pd.isna(row["change"]) and pd.isna(row["change_from"]), (fid, year)
    assert changed > 100
    assert json.loads((out / "_run.json").read_text())["year_column"] == "year"


@pytest.mark.parametrize(
    "column, values",
    [
        ("time", pd.to_datetime(["2024-01-01", "2025-01-01", "2024-01-01"]).date),
        ("time", pd.to_datetime(["2024-01-01", "2025-01-01", "2024-01-01"])),
        ("time", ["2024-01-01", "2025-01-01", "2024-01-01"]),
        ("time", np.array([2024, 2025, 2024], np.int64)),
        ("year", np.array([2024, 2025, 2024], np.int16)),
    ],
)
def test_year_column_types(spark, sample, tmp_path, column, values):
    fields = gpd.read_parquet(sample / "fields.parquet").head(3)
    fields[column] = values
    path = tmp_path / "f.parquet"
    fields.to_parquet(path)
    given = spark.read.format("geoparquet").load(str(path))
    df, year_column = fields_stage.load(given, str(path), None)
    assert year_column == column
    got = [r.layer_year for r in df.orderBy("feature_id").collect()]
    assert got == [2024, 2025, 2024]


def test_year_absent_from_store_is_refused_or_skipped(sample, tmp_path, capsys, job_out):
    fields = gpd.read_parquet(sample / "fields.parquet").head(12)
    fields["year"] = [2019] * 3 + [2024] * 9
    path = tmp_path / "f.parquet"
    fields.to_parquet(path)
    model = ("--pca-model", str(job_out / "_pca_model.json"))
    assert run_job(sample / "store.zarr", path, tmp_path / "a", *model) == 2
    err = capsys.readouterr().err
    assert "year(s) absent from the store: 2019 (3 fields)" in err and "--skip-missing-years" in err
    assert not (tmp_path / "a").exists()
    assert run_job(sample / "store.zarr", path, tmp_path / "b", *model, "--skip-missing-years") == 0
    report = json.loads((tmp_path / "b" / "_run.json").read_text())
    assert report["fields_skipped_missing_year"] == 3 and report["rows"] == 9
