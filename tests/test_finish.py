"""udfs/finish.py with numpy alone: merging per-chunk sums and turning them into statistics."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from udfs.finish import Finish, finish_batch, merge, statistics
from udfs.quant import Quantisation

pytestmark = pytest.mark.fast

SQUARE = Quantisation(True, 1 / 127.5 ** 2, 0.0, -128)


def _nested(rows: list[list[np.ndarray]]) -> pa.ListArray:
    return pa.array([[p.tolist() for p in parts] for parts in rows], pa.list_(pa.list_(pa.int64())))


def test_merge_combines_each_rows_partials():
    rng = np.random.default_rng(3)
    rows = [[rng.integers(-10**12, 10**12, 4) for _ in range(k)] for k in (1, 3, 2, 1, 5)]
    arr = _nested(rows)
    np.testing.assert_array_equal(merge(arr, 4, np.add), [np.sum(r, axis=0) for r in rows])
    np.testing.assert_array_equal(merge(arr, 4, np.minimum), [np.min(r, axis=0) for r in rows])
    # a slice of a batch (offsets not starting at 0) merges the same rows
    np.testing.assert_array_equal(merge(arr.slice(2, 2), 4, np.maximum), [np.max(r, axis=0) for r in rows[2:4]])


def test_std_is_exact_beyond_float64_integers():
    # 3 million pixels of code 127 and one of 126: n * S2 and S1^2 are ~7e20, far past 2^53;
    # their difference is the exact integer (n - 1) * (127^2 - 126^2)^2
    n = 3_000_001
    u = np.array([127 ** 2, 126 ** 2])
    k = np.array([n - 1, 1])
    s1 = np.array([[int((u * k).sum())]])
    s2 = np.array([[int((u * u * k).sum())]])
    f = Finish(SQUARE, bands=1)
    assert n > f.exact_count
    exact = SQUARE.a * math.sqrt((n - 1) * (127 ** 2 - 126 ** 2) ** 2) / n
    got = statistics(f, np.array([n]), s1, s2)["std"][0, 0]
    assert got == exact
    # the float64 formula alone is far off here: the test would catch its use
    naive = SQUARE.a * math.sqrt(max(float(n) * float(s2[0, 0]) - float(s1[0, 0]) ** 2, 0)) / n
    assert abs(naive - exact) > 1e-8 * exact


def test_batch_statistics_and_empty_rows():
    f = Finish(SQUARE, bands=2, extremes=True, sums=True, normalized=True)
    codes = np.array([[10, -20], [30, 40], [-50, 60]])  # 3 pixels x 2 bands, two chunks
    u = np.sign(codes) * codes ** 2
    batch = pa.RecordBatch.from_pydict({
        "feature_id": pa.array([1, 2], pa.int64()), "year": pa.array([2024, 2024], pa.int32()),
        "count": pa.array([3, 0], pa.int64()), "inside": pa.array([4, 2], pa.int64()),
        "l1": _nested([[u[:2].sum(0), u[2:].sum(0)], [np.zeros(2, int)]]),
        "l2": _nested([[(u[:2] ** 2).sum(0), (u[2:] ** 2).sum(0)], [np.zeros(2, int)]]),
        "lmin": _nested([[u[:2].min(0), u[2:].min(0)], [np.full(2, 1 << 40)]]),
        "lmax": _nested([[u[:2].max(0), u[2:].max(0)], [np.full(2, -(1 << 40))]]),
        "hkeys": pa.array([[], []], pa.list_(pa.int16())),
        "hcounts": pa.array([[], []], pa.list_(pa.int32())),
        "skipped_chunks": pa.array([[], ["embeddings/c/0/0/0/0 inner chunk (0, 1)"]], pa.list_(pa.string())),
    })
    out = finish_batch(batch, f).to_pylist()
    v = u / 127.5 ** 2
    np.testing.assert_allclose(out[0]["mean"], v.mean(0), rtol=1e-15)
    np.testing.assert_allclose(out[0]["std"], v.std(0), rtol=1e-13)
    np.testing.assert_allclose(out[0]["sum"], v.sum(0), rtol=1e-15)
    np.testing.assert_allclose(out[0]["min"], v.min(0), rtol=1e-15)
    np.testing.assert_allclose(out[0]["max"], v.max(0), rtol=1e-15)
    np.testing.assert_allclose(out[0]["mean_normalized"], v.mean(0) / np.linalg.norm(v.mean(0)), rtol=1e-15)
    assert out[0]["valid_fraction"] == 0.75 and out[0]["skipped_chunks"] == []
    assert all(out[1][c] is None for c in ("mean", "std", "sum", "min", "max", "mean_normalized"))
    assert out[1]["valid_fraction"] == 0 and out[1]["skipped_chunks"] == ["embeddings/c/0/0/0/0 inner chunk (0, 1)"]
