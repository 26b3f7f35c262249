"""The Arrow schema of each table an executor function writes, declared once.

Spark's schemas (mapInArrow's return types) are derived from these on the driver; the executor
builds its batches in this column order. Numbers are integers (exact sums) unless the pixels
are coverage-weighted, then doubles.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def _number(weighted: bool) -> pa.DataType:
    return pa.float64() if weighted else pa.int64()


def partials(weighted: bool, floats: bool, finished: pa.Schema) -> pa.Schema:
    """Reduce stage output (udfs/tasks.py): sums per field, year and chunk (float stores: sums
    and extremes of the values, doubles); `finished`: the run's statistics table's schema."""
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
            ("chunks", pa.int32()),  # chunks the field touches
            # a field inside one chunk (chunks = 1) has all its pixels here: its statistics,
            # finished on the worker (the sums above are then null); null for a field that needs
            # a merge
            ("finished", pa.struct(list(finished)[2:])),
        ]
    )


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
