"""Reading an output folder into one table and comparing two of them value for value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from aef_zonal import dataset


def read(out, filesystem=None) -> pd.DataFrame:
    t = (
        ds.dataset(out, filesystem=filesystem, format="parquet", partitioning="hive")
        .to_table()
        .to_pandas()
    )
    return t.sort_values(["time", "feature_id"]).reset_index(drop=True)


def without_pixels(out, filesystem=None) -> pd.DataFrame:
    """The output's field-years without a valid pixel (its _without_pixels), as written."""
    return pq.read_table(f"{out}/{dataset.WITHOUT_PIXELS}", filesystem=filesystem).to_pandas()


def same(u, v) -> bool:
    if isinstance(u, dict) and isinstance(v, dict):  # a struct: NaN equals NaN in its fields too
        return u.keys() == v.keys() and all(same(u[k], v[k]) for k in u)
    if isinstance(u, np.ndarray) or isinstance(v, np.ndarray):
        u, v = (np.stack(w) if w.dtype == object else w for w in (u, v))
        return np.array_equal(u, v, equal_nan=u.dtype.kind == "f")
    if u is None or v is None or u is pd.NaT or (isinstance(u, float) and np.isnan(u)):
        return pd.isna(u) and pd.isna(v)
    return u == v


def assert_same(a, b, ignore=("source_store",), filesystem=None):
    """Same rows and the same values, exactly (arrays, structs, geometry bytes), and the same
    field-years listed without a valid pixel; `a` may be on another pyarrow filesystem."""
    assert_frames_same(read(a, filesystem), read(b), ignore)
    pd.testing.assert_frame_equal(without_pixels(a, filesystem), without_pixels(b))


def assert_frames_same(x: pd.DataFrame, y: pd.DataFrame, ignore=("source_store",)):
    """Two outputs' rows (sorted as read() sorts them), value for value."""
    x, y = x.reset_index(drop=True), y.reset_index(drop=True)
    assert list(x.columns) == list(y.columns)
    assert len(x) == len(y) and (x.feature_id.to_numpy() == y.feature_id.to_numpy()).all()
    for col in x.columns:
        if col not in ignore:
            bad = [i for i, (u, v) in enumerate(zip(x[col], y[col])) if not same(u, v)]
            assert not bad, (
                f"{col} differs in {len(bad)} rows, e.g. {x[col][bad[0]]!r} != {y[col][bad[0]]!r}"
            )
