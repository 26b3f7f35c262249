"""The job's count, mean and std equal the brute-force reference for every field-year."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyarrow.dataset as ds
import pytest

from tests import reference
from tests.compare import without_pixels

pytestmark = pytest.mark.spark


def by_field_year(t):
    t["year"] = t["time"].str.slice(0, 4).astype(int)
    return t.set_index(["feature_id", "year"]).sort_index()


@pytest.fixture(scope="module")
def result(job_out):
    return by_field_year(
        ds.dataset(job_out, format="parquet", partitioning="hive").to_table().to_pandas()
    )


@pytest.fixture(scope="module")
def listed(job_out):
    """The field-years without a valid pixel: out of the data, beside it (the default)."""
    return by_field_year(without_pixels(job_out))


def test_every_field_year_matches_reference(sample, result, listed, kinds):
    fields = gpd.read_parquet(sample / "fields.parquet")
    store = reference.open_store(sample / "store.zarr")
    years = [int(y) for y in store["time"].values]
    # every field-year accounted for, once: a row in the data, or listed beside it
    assert not set(result.index) & set(listed.index)
    assert len(result) + len(listed) == len(fields) * len(years), "none dropped"
    worst = 0.0
    seen = set()
    for fid, geom in zip(fields.feature_id, fields.geometry):
        for year in years:
            ref = reference.field_stats(store, geom, year)
            if ref["count"] == 0:
                assert (fid, year) in listed.index, (fid, year, kinds[fid])
                continue
            row = result.loc[(fid, year)]
            assert row["count"] == ref["count"], (fid, year, kinds[fid])
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


def test_edge_cases_have_the_expected_rows(result, listed, kinds):
    by_kind = {}
    for (fid, year), row in result.iterrows():
        by_kind.setdefault(kinds[fid], []).append((year, row))
    reasons = {(kinds[fid], year): r for (fid, year), r in listed.reason.items()}
    # outside the store and the sub-pixel polygon holding no centre: listed with their reason
    assert "outside" not in by_kind and "subpixel-corner" not in by_kind
    for year in (2024, 2025):
        assert reasons["outside", year] == "outside the store"
        assert reasons["subpixel-corner", year] == "no pixel inside (smaller than the pixel rule)"
    assert all(row["count"] == 1 for _, row in by_kind["subpixel-centre"])
    # the never-written chunk (first year) holds no valid pixel; the next year is written
    counts = {year: row["count"] for year, row in by_kind["missing-chunk"]}
    assert reasons["missing-chunk", 2024] == "no valid pixel (all nodata)"
    assert set(counts) == {2025} and counts[2025] > 1500
    # every row of the data has its vectors: the published notebook's code relies on it
    assert (result["count"] > 0).all() and result.pca_components.notna().all()


def test_min_max_bound_the_mean(result):
    rows = result
    lo, mean, hi = (np.stack(rows[c].to_numpy()) for c in ("min", "mean", "max"))
    # the mean of a field's values lies between them (to the rounding of a * S1 / n: a few ulps)
    tol = 4 * np.spacing(np.abs(mean))
    assert (lo <= mean + tol).all() and (mean <= hi + tol).all() and (lo < hi).any()
    single = rows["count"].to_numpy() == 1
    assert (lo[single] == hi[single]).all() and np.allclose(
        mean[single], lo[single], rtol=1e-15, atol=0
    )
