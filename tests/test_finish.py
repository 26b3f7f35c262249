"""udfs/finish.py with numpy alone: merging per-chunk sums and turning them into statistics."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from aef_zonal.udfs import statistics
from aef_zonal.udfs.finish import Finish, finish_batch, merge
from aef_zonal.udfs.quantisation import Quantisation

pytestmark = pytest.mark.fast

SQUARE = Quantisation(True, 1 / 127.5**2, 0.0, -128)


def _nested(rows: list[list[np.ndarray]]) -> pa.ListArray:
    return pa.array([[p.tolist() for p in parts] for parts in rows], pa.list_(pa.list_(pa.int64())))


def test_merge_combines_each_rows_partials():
    rng = np.random.default_rng(3)
    rows = [[rng.integers(-(10**12), 10**12, 4) for _ in range(k)] for k in (1, 3, 2, 1, 5)]
    arr = _nested(rows)
    np.testing.assert_array_equal(merge(arr, 4, np.add), [np.sum(r, axis=0) for r in rows])
    np.testing.assert_array_equal(merge(arr, 4, np.minimum), [np.min(r, axis=0) for r in rows])
    # a slice of a batch (offsets not starting at 0) merges the same rows
    np.testing.assert_array_equal(
        merge(arr.slice(2, 2), 4, np.maximum), [np.max(r, axis=0) for r in rows[2:4]]
    )


def test_std_is_exact_beyond_float64_integers():
    # 3 million pixels of code 127 and one of 126: n * S2 and S1^2 are ~7e20, far past 2^53;
    # their difference is the exact integer (n - 1) * (127^2 - 126^2)^2
    n = 3_000_001
    u = np.array([127**2, 126**2])
    k = np.array([n - 1, 1])
    s1 = np.array([[int((u * k).sum())]])
    s2 = np.array([[int((u * u * k).sum())]])
    m = statistics.Merged(SQUARE, False, np.array([n]), np.array([n]), s1, s2)
    assert n > m.exact_count
    exact = SQUARE.a * math.sqrt((n - 1) * (127**2 - 126**2) ** 2) / n
    got = statistics.get("std").finish(m)[0, 0]
    assert got == exact
    # the float64 formula alone is far off here: the test would catch its use
    naive = SQUARE.a * math.sqrt(max(float(n) * float(s2[0, 0]) - float(s1[0, 0]) ** 2, 0)) / n
    assert abs(naive - exact) > 1e-8 * exact


def test_batch_statistics_and_empty_rows():
    f = Finish(SQUARE, 2, ("std", "min", "max", "sum", "mean_normalized", "valid_fraction"))
    codes = np.array([[10, -20], [30, 40], [-50, 60]])  # 3 pixels x 2 bands, two chunks
    u = np.sign(codes) * codes**2
    batch = pa.RecordBatch.from_pydict(
        {
            "feature_id": pa.array([1, 2], pa.int64()),
            "year": pa.array([2024, 2024], pa.int32()),
            "count": pa.array([3, 0], pa.int64()),
            "inside": pa.array([4, 2], pa.int64()),
            "l1": _nested([[u[:2].sum(0), u[2:].sum(0)], [np.zeros(2, int)]]),
            "l2": _nested([[(u[:2] ** 2).sum(0), (u[2:] ** 2).sum(0)], [np.zeros(2, int)]]),
            "lmin": _nested([[u[:2].min(0), u[2:].min(0)], [np.full(2, 1 << 40)]]),
            "lmax": _nested([[u[:2].max(0), u[2:].max(0)], [np.full(2, -(1 << 40))]]),
            "hkeys": pa.array([[], []], pa.list_(pa.int16())),
            "hcounts": pa.array([[], []], pa.list_(pa.int32())),
            "skipped_chunks": pa.array(
                [[], ["embeddings/c/0/0/0/0 inner chunk (0, 1)"]], pa.list_(pa.string())
            ),
        }
    )
    out = finish_batch(batch, f).to_pylist()
    v = u / 127.5**2
    np.testing.assert_allclose(out[0]["mean"], v.mean(0), rtol=1e-15)
    np.testing.assert_allclose(out[0]["std"], v.std(0), rtol=1e-13)
    np.testing.assert_allclose(out[0]["sum"], v.sum(0), rtol=1e-15)
    np.testing.assert_allclose(out[0]["min"], v.min(0), rtol=1e-15)
    np.testing.assert_allclose(out[0]["max"], v.max(0), rtol=1e-15)
    np.testing.assert_allclose(
        out[0]["mean_normalized"], v.mean(0) / np.linalg.norm(v.mean(0)), rtol=1e-15
    )
    assert out[0]["valid_fraction"] == 0.75 and out[0]["skipped_chunks"] == []
    assert all(out[1][c] is None for c in ("mean", "std", "sum", "min", "max", "mean_normalized"))
    assert out[1]["valid_fraction"] == 0 and out[1]["skipped_chunks"] == [
        "embeddings/c/0/0/0/0 inner chunk (0, 1)"
    ]


# --- coverage-weighted quantiles ------------------------------------------------------------------

QS = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def weighted_quantile(x, w, q):
    """exactextract's WeightedQuantiles written out element by element: the distinct values
    with their summed weights, in ascending order."""
    values = np.unique(x)
    weights = [math.fsum(w[x == v]) for v in values]
    n, s, cum = len(values), [0.0], weights[0]
    for i in range(1, n):
        s.append(i * weights[i] + (n - 1) * cum)
        cum += weights[i]
    h = q * (cum * (n - 1))
    right = next((i for i in range(n) if s[i] > h), None)
    if right is None:
        return values[-1]
    left = right - 1
    return values[left] + (h - s[left]) * (values[right] - values[left]) / (s[right] - s[left])


def weighted_case(seed, size=24, bands=3):
    """Codes with many repeats and some nodata, and the (pixel, weight) pairs of a polygon in
    pixel units whose edges (axis-parallel) cut pixels into halves and quarters (exact in
    float32)."""
    import shapely

    rng = np.random.default_rng(seed)
    data = rng.integers(-20, 21, (bands, size, size)).astype(np.int8)
    data[:, rng.random((size, size)) < 0.05] = -128
    geom = shapely.union(
        shapely.box(0.5, 1.25, 22.75, 14.5), shapely.box(3.25, 14, 12.5, 23.75)
    ).difference(shapely.box(8.5, 8.5, 12.25, 12.75))
    r, c = np.divmod(np.arange(size * size), size)
    w = shapely.area(shapely.intersection(geom, shapely.box(c, r, c + 1, r + 1)))
    keep = w > 0
    return data, geom, np.flatnonzero(keep), w[keep]


def weighted_quantiles_of_job(data, pix, w):
    from aef_zonal.udfs.partials import reduce_chunk_weighted
    from aef_zonal.udfs.quantiles import dense, from_weighted_histogram

    p = reduce_chunk_weighted(
        data, pix, np.zeros(len(pix), np.int64), w, 1, square=True, histograms=True
    )
    flat = p.hist[0].reshape(-1)
    keys = np.flatnonzero(flat)
    # two partials of the same field: their concatenated sparse histograms sum up
    half = len(keys) // 2
    hist = dense(
        np.r_[keys[:half], keys[half:]],
        np.r_[flat[keys[:half]], flat[keys[half:]]],
        data.shape[0],
        weighted=True,
    )
    return from_weighted_histogram(hist, QS, SQUARE.table())


def test_weighted_quantiles_follow_exactextracts_definition():
    """Random weights (not float32 values): every level equals the definition written out, to
    float64 rounding."""
    rng = np.random.default_rng(3)
    data = rng.integers(-30, 31, (4, 16, 16)).astype(np.int8)
    data[:, rng.random((16, 16)) < 0.05] = -128
    pix = np.flatnonzero(rng.random(256) < 0.7)
    w = rng.uniform(0.01, 1.0, len(pix))
    got = weighted_quantiles_of_job(data, pix, w)
    valid = (data.reshape(4, -1)[:, pix] != -128).all(axis=0)
    worst = 0.0
    for b in range(4):
        x = SQUARE.table()[data[b].reshape(-1)[pix][valid].astype(int) + 128]
        for i, q in enumerate(QS):
            want = weighted_quantile(x, w[valid], q)
            worst = max(worst, abs(got[i, b] - want))
            assert got[i, b] == pytest.approx(want, rel=4e-16, abs=1e-18), (b, q)
    print(f"weighted quantiles vs the definition: worst {worst:.3g}")


def test_weighted_quantiles_equal_exactextracts_own():
    """exactextract's quantile(q=...) and median with coverage weights, on a polygon whose
    coverage fractions it holds exactly (halves and quarters): equal to float64 rounding."""
    from exactextract import exact_extract
    from exactextract.raster import NumPyRasterSource
    from shapely import affinity, geometry

    data, geom, pix, w = weighted_case(5)
    got = weighted_quantiles_of_job(data, pix, w)
    bands, size = data.shape[0], data.shape[1]
    values = np.where(data == -128, -999.0, SQUARE.table()[data.astype(int) + 128])
    rasters = [
        NumPyRasterSource(values[b], 0, -size, size, 0, nodata=-999.0, name=f"b{b}")
        for b in range(bands)
    ]
    feature = {
        "type": "Feature",
        "properties": {},
        "geometry": geometry.mapping(affinity.scale(geom, 1, -1, origin=(0, 0))),
    }
    ops = [f"quantile(q={q})" for q in QS[1:-1]] + ["median", "min", "max"]
    out = exact_extract(rasters, [feature], ops, output="pandas")
    worst = 0.0
    for b in range(bands):
        want = [out[f"b{b}_quantile_{round(q * 100)}"].iloc[0] for q in QS[1:-1]]
        want = [out[f"b{b}_min"].iloc[0], *want, out[f"b{b}_max"].iloc[0]]
        worst = max(worst, np.abs(got[:, b] - want).max())
        np.testing.assert_allclose(got[:, b], want, rtol=4e-16, atol=1e-18)
        assert got[QS.index(0.5), b] == pytest.approx(out[f"b{b}_median"].iloc[0], rel=4e-16)
    print(f"weighted quantiles vs exactextract: worst {worst:.3g}")
