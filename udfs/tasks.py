"""Executor side of the reduce stage: chunk tasks in, per-field partial rows out (Arrow).

A task is one inner chunk with every field that touches it. The chunk is read once per year
that any of its fields needs, and reduced for all of those fields in one pass.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import shapely

from udfs.grid import Grid
from udfs.pixels import centre_runs
from udfs.reduce import reduce_chunk
from udfs.store import Quantisation

PARTIAL_SCHEMA = ("feature_id long, year int, count long, s1 array<long>, s2 array<long>, "
                  "umin array<long>, umax array<long>")

Reader = Callable[[int, tuple[int, int, int, int]], np.ndarray]  # (time index, window) -> chunk


def _lists(a: np.ndarray) -> pa.Array:
    rows, width = a.shape
    return pa.ListArray.from_arrays(pa.array(np.arange(rows + 1, dtype=np.int32) * width),
                                    pa.array(a.reshape(-1)))


def reduce_task(cy: int, cx: int, fields: list[dict], grid: Grid, quant: Quantisation,
                store_years: tuple[int, ...], read: Reader, extremes: bool) -> dict[str, list]:
    """Partials of every field of one chunk task, for each year it asks for."""
    window = grid.chunk_window(cy, cx)
    geoms = shapely.from_wkb([f["wkb"] for f in fields])
    runs = centre_runs(geoms, grid.col_centres(window[2], window[3]),
                       grid.row_centres(window[0], window[1]))
    ids = np.array([f["feature_id"] for f in fields], np.int64)
    out = {"feature_id": [], "year": [], "count": [], "s1": [], "s2": [], "umin": [], "umax": []}
    if len(runs) == 0:
        return out
    for year in sorted({y for f in fields for y in f["years"]}):
        active = np.array([year in f["years"] for f in fields])
        year_runs = runs[active[runs[:, 3]]]
        if len(year_runs) == 0:
            continue
        data = read(store_years.index(year), window)
        p = reduce_chunk(data, year_runs, len(fields), square=quant.square,
                         nodata=quant.nodata, extremes=extremes)
        hit = p.count > 0
        out["feature_id"].append(ids[hit])
        out["year"].append(np.full(hit.sum(), year, np.int32))
        out["count"].append(p.count[hit])
        for name in ("s1", "s2", "umin", "umax"):
            out[name].append(getattr(p, name)[hit])
    return out


def reduce_batches(batches: Iterable[pa.RecordBatch], grid: Grid, quant: Quantisation,
                   store_years: tuple[int, ...], read: Reader, extremes: bool,
                   bands: int) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: each input row is a chunk task (cy, cx, fields)."""
    for batch in batches:
        parts = {k: [] for k in ("feature_id", "year", "count", "s1", "s2", "umin", "umax")}
        for task in batch.to_pylist():
            res = reduce_task(task["cy"], task["cx"], task["fields"], grid, quant,
                              store_years, read, extremes)
            for k, v in res.items():
                parts[k].extend(v)
        if not parts["feature_id"]:
            continue
        cols = {k: np.concatenate(v) for k, v in parts.items()}
        yield pa.RecordBatch.from_arrays(
            [pa.array(cols["feature_id"]), pa.array(cols["year"]), pa.array(cols["count"])]
            + [_lists(cols[k].reshape(-1, bands)) for k in ("s1", "s2", "umin", "umax")],
            names=list(cols))
