"""The job's count, mean and std equal the brute-force reference for every field-year."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyarrow.dataset as ds
import pytest

from tests import reference

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def result(job_out):
    t = ds.dataset(job_out, format="parquet", partitioning="hive").to_table().to_pandas()
    t["year"] = t["time"].str.slice(0, 4).astype(int)
    return t.set_index(["feature_id", "year"]).sort_index()


def test_every_field_year_matches_reference(sample, result, kinds):
    fields = gpd.read_parquet(sample / "fields.parquet")
    store = reference.open_store(sample / "store.zarr")
    years = [int(y) for y in store["time"].values]
    assert len(result) == len(fields) * len(years), "one row per field and year, none dropped"
    worst = 0.0
    seen = set()
    for fid, geom in zip(fields.feature_id, fields.geometry):
        for year in years:
            ref = reference.field_stats(store, geom, year)
            row = result.loc[(fid, year)]
            assert row["count"] == ref["count"], (fid, year, kinds[fid])
            if ref["count"] == 0:
                assert row["mean"] is None and row["std"] is None
                continue
            seen.add(kinds[fid])
            worst = max(worst, reference.rounding_error(row, ref))
    print(f"worst mean/std error in units of mean |v|: {worst:.3g}")
    assert worst <= 1e-12
    # the edge cases with pixels were all compared
    assert {
        "hole",
        "multipolygon",
        "many-chunks",
        "shard-corner",
        "chunk-border",
        "subpixel-centre",
        "partly-outside",
        "overlap-a",
        "overlap-b",
    } <= seen


def test_edge_cases_have_the_expected_rows(result, kinds):
    by_kind = {}
    for (fid, year), row in result.iterrows():
        by_kind.setdefault(kinds[fid], []).append((year, row))
    # outside the store and the sub-pixel polygon holding no centre: kept, count 0, null stats
    for kind in ("outside", "subpixel-corner"):
        for _, row in by_kind[kind]:
            assert row["count"] == 0 and row["mean"] is None and row["pca_components"] is None
    assert all(
        row["count"] == 1 for _, row in by_kind["subpixel-centre"] if row["mean"] is not None
    )
    # the never-written chunk (first year) holds no valid pixel; the next year is written
    counts = {year: row["count"] for year, row in by_kind["missing-chunk"]}
    assert counts[2024] == 0 and counts[2025] > 1500


def test_min_max_bound_the_mean(result):
    rows = result[result["count"] > 0]
    lo, mean, hi = (np.stack(rows[c].to_numpy()) for c in ("min", "mean", "max"))
    # the mean of a field's values lies between them (to the rounding of a * S1 / n: a few ulps)
    tol = 4 * np.spacing(np.abs(mean))
    assert (lo <= mean + tol).all() and (mean <= hi + tol).all() and (lo < hi).any()
    single = rows["count"].to_numpy() == 1
    assert (lo[single] == hi[single]).all() and np.allclose(
        mean[single], lo[single], rtol=1e-15, atol=0
    )
