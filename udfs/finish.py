"""Partial sums of a field-year (one per chunk it touches) -> its statistics.

The aggregate SQL (sql/40_aggregate.sql) groups each field-year's partials from udfs/reduce.py
into lists; this module merges the lists and turns sums into statistics, a batch of field-years
at a time with numpy (vectorised, where Spark's array lambdas go element by element). A field
inside one chunk is finished the same way by the reduce stage (udfs/tasks.py), from a list of one.

value = a * u + b, so with n valid pixels, S1 = sum(u) and S2 = sum(u^2) per band:
  mean = a * S1 / n + b,  std = a * sqrt(n * S2 - S1^2) / n,  sum = a * S1 + b * n.
Integer sums merge exactly and n * S2 - S1^2 is formed exactly before the one square root: in
float64 while every term stays below 2^53 (n <= exact_count), in Python integers beyond.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from aef_zonal.udfs import quantiles, schemas
from aef_zonal.udfs.quant import Quantisation
from aef_zonal.udfs.schemas import rows_as_lists


@dataclass(frozen=True)
class Finish:
    """What every field-year of a run gets: the store's dequantisation and the asked statistics."""

    quant: Quantisation
    bands: int
    weighted: bool = False  # coverage-weighted sums (doubles), not integers
    extremes: bool = False  # min, max
    sums: bool = False  # sum
    normalized: bool = False  # mean_normalized
    qs: tuple[float, ...] = ()  # quantile levels, from the histograms

    @property
    def exact_count(self) -> int:
        # n * S2 and S1^2 stay below 2^53 while n * umax^2 < 2^26.5
        umax = 127**2 if self.quant.square else 128
        return int(2**26.5 / umax)

    def schema(self) -> pa.Schema:
        return schemas.statistics(self.weighted)


def merge(lists: pa.ListArray, bands: int, op: np.ufunc) -> np.ndarray:
    """[rows, bands]: each row's partial arrays (list<list<number>>) combined with op."""
    offsets = lists.offsets.to_numpy()
    values = lists.flatten().flatten().to_numpy().reshape(-1, bands)
    return op.reduceat(values, offsets[:-1] - offsets[0], axis=0)


def statistics(f: Finish, n: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> dict[str, np.ndarray]:
    """mean and std [rows, bands] (and sum, mean_normalized if asked); NaN rows where n == 0."""
    a, b = f.quant.a, f.quant.b
    with np.errstate(divide="ignore", invalid="ignore"):
        nn = n.astype(np.float64)[:, None]
        out = {"mean": a * s1 / nn + b}
        if f.weighted or f.quant.floats:  # float sums: no exact integer form
            out["std"] = a * np.sqrt(np.maximum(s2 / nn - (s1 / nn) ** 2, 0.0))
        else:
            var_n2 = nn * s2.astype(np.float64) - s1.astype(np.float64) ** 2
            for i in np.flatnonzero(n > f.exact_count):  # beyond float64's exact integers
                var_n2[i] = [
                    float(int(n[i]) * int(q) - int(p) * int(p)) for p, q in zip(s1[i], s2[i])
                ]
            out["std"] = a * np.sqrt(var_n2) / nn
        if f.sums:
            out["sum"] = a * s1 + b * nn
        if f.normalized:
            out["mean_normalized"] = out["mean"] / np.sqrt(
                (out["mean"] ** 2).sum(axis=1, keepdims=True)
            )
    return out


def _lists(a: np.ndarray | None, valid: np.ndarray) -> pa.Array:
    """A statistic's column: its rows where valid, all null when it was not asked for (None)."""
    return pa.nulls(len(valid), pa.list_(pa.float64())) if a is None else rows_as_lists(a, valid)


def finish_batch(batch: pa.RecordBatch, f: Finish) -> pa.RecordBatch:
    col = batch.column
    n = col("count").to_numpy(zero_copy_only=False)
    inside = col("inside").to_numpy(zero_copy_only=False)
    s1 = merge(col("l1"), f.bands, np.add)
    s2 = merge(col("l2"), f.bands, np.add)
    st = statistics(f, n, s1, s2)
    ok = n > 0
    a, b = f.quant.a, f.quant.b
    extremes = (
        (
            a * merge(col("lmin"), f.bands, np.minimum) + b,
            a * merge(col("lmax"), f.bands, np.maximum) + b,
        )
        if f.extremes
        else (None, None)
    )
    if f.qs:
        keys, counts, table = col("hkeys"), col("hcounts"), f.quant.table()
        read = quantiles.from_weighted_histogram if f.weighted else quantiles.from_histogram
        qv = [
            read(
                quantiles.dense(
                    keys[i].values.to_numpy(), counts[i].values.to_numpy(), f.bands, f.weighted
                ),
                f.qs,
                table,
            ).tolist()
            if ok[i]
            else None
            for i in range(len(n))
        ]
        qcol = pa.array(qv, pa.list_(pa.list_(pa.float64())))
    else:
        qcol = pa.nulls(len(n), pa.list_(pa.list_(pa.float64())))
    return pa.RecordBatch.from_arrays(
        [
            col("feature_id"),
            col("year"),
            col("count"),
            col("inside"),
            _lists(st.get("sum"), ok),
            _lists(st["mean"], ok),
            _lists(st["std"], ok),
            _lists(extremes[0], ok),
            _lists(extremes[1], ok),
            _lists(st.get("mean_normalized"), ok),
            pa.array(n / inside),
            qcol,
            col("skipped_chunks"),
        ],
        schema=f.schema(),
    )


def finish_batches(batches: Iterable[pa.RecordBatch], f: Finish) -> Iterator[pa.RecordBatch]:
    """mapInArrow body over the aggregate SQL's output: one row per field-year."""
    for batch in batches:
        if batch.num_rows:
            yield finish_batch(batch, f)
