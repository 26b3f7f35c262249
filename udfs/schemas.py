"""The Arrow schema of each table an executor function writes, declared once.

Spark's schemas (mapInArrow's return types) are derived from these on the driver; the executor
builds its batches in this column order. Numbers are integers (exact sums) unless the pixels
are coverage-weighted, then doubles.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from aef_zonal.udfs.rows import PACKED


def _number(weighted: bool) -> pa.DataType:
    return pa.float64() if weighted else pa.int64()


def partials(weighted: bool, floats: bool) -> pa.Schema:
    """A spanning field's sums over one chunk and year (udfs/tasks.py; float stores: sums and
    extremes of the values, doubles)."""
    num, sums = _number(weighted), _number(weighted or floats)
    extreme = pa.float64() if floats else pa.int64()
    return pa.schema(
        [
            ("feature_id", pa.int64()),
            ("year", pa.int32()),
            ("count", num),  # valid pixels (summed weights)
            ("inside", num),  # member pixels, valid or not
            ("s1", pa.list_(sums)),  # per band: sum of u
            ("s2", pa.list_(sums)),  # per band: sum of u * u
            ("umin", pa.list_(extreme)),  # per band: smallest u (null unless a statistic needs it)
            ("umax", pa.list_(extreme)),
            ("hkeys", pa.list_(pa.int16())),  # histogram: band * 256 + code + 128 ...
            # ... its count (summed weights), for the codes present
            ("hcounts", pa.list_(pa.float64() if weighted else pa.int32())),
            ("skipped", pa.string()),  # the chunk's name when it was skipped (undecodable)
        ]
    )


def reduced(weighted: bool, floats: bool) -> pa.Schema:
    """Reduce stage output (udfs/tasks.py), one table for its four kinds of row (`kind`), so
    that the stage runs once: `rows`, published rows packed per (time, label) (udfs/rows.py:
    PACKED); `sample`, a finished field-year's mean drawn for the PCA fit (feature_id, year,
    mean); `partial`, a spanning field's sums (the partial columns); `skipped`, a chunk skipped
    as undecodable (its name in `skipped`). The columns of the other kinds are null."""
    sample = [pa.field("mean", pa.list_(pa.float64()))]
    return pa.schema([("kind", pa.string()), *PACKED, *sample, *partials(weighted, floats)])


def statistics(stats, weighted: bool) -> pa.Schema:
    """Aggregate stage output (udfs/finish.py): one row per field-year, with a column per
    statistic finished from the partials (udfs/statistics.py's records, in their order)."""
    num = _number(weighted)
    return pa.schema(
        [
            ("feature_id", pa.int64()),
            ("year", pa.int32()),
            ("count", num),
            ("inside", num),
            *[(s.name, pa.list_(pa.float64()) if s.per_band else pa.float64()) for s in stats],
            ("skipped_chunks", pa.list_(pa.string())),
        ]
    )


# what a statistic's output column holds (udfs/statistics.py: Statistic.kinds)
KINDS = {
    "bands": pa.list_(pa.float64()),  # per band
    "double": pa.float64(),
    "year": pa.int32(),
}


def statistic_fields(stats, weighted: bool) -> list[pa.Field]:
    """The published columns of these statistics (udfs/statistics.py's records, in their order):
    the pixel count ("number": integers, summed weights with weighted pixels) is never null, 0
    where a field-year has no pixel."""
    return [
        pa.field(name, _number(weighted), nullable=False)
        if kind == "number"
        else pa.field(name, KINDS[kind])
        for s in stats
        for name, kind in zip(s.columns, s.kinds)
    ]


def rows_as_lists(a: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """A list per row of a[rows, width], without a Python object per row; null where not valid."""
    rows, width = a.shape
    return pa.ListArray.from_arrays(
        pa.array(np.arange(rows + 1, dtype=np.int32) * width),
        pa.array(a.reshape(-1)),
        mask=None if valid is None else pa.array(~valid),
    )


def ragged(parts: list[np.ndarray], typ: pa.DataType) -> pa.Array:
    """A list per array of `parts` (any lengths), one copy of the values."""
    offsets = np.zeros(len(parts) + 1, np.int32)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    values = np.concatenate(parts) if parts else np.empty(0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=typ))
