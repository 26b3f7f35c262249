"""Executor side of the reduce stage: chunk tasks in, per-field partial rows out (Arrow).

A task is one inner chunk with every field that touches it. The chunk is read once per year
that any of its fields needs, and reduced for all of those fields in one pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import shapely

from udfs.grid import Grid
from udfs.pixels import members
from udfs.reduce import Partials, reduce_chunk, reduce_chunk_weighted
from udfs.store import Quantisation

Reader = Callable[[int, tuple[int, int, int, int]], np.ndarray]  # (time index, window) -> chunk
COLUMNS = ("feature_id", "year", "count", "inside", "s1", "s2", "umin", "umax", "hkeys", "hcounts")


@dataclass(frozen=True)
class Reduction:
    """What every task of a run computes."""
    grid: Grid
    quant: Quantisation
    store_years: tuple[int, ...]
    bands: int
    rule: str = "center"        # pixels.RULES
    extremes: bool = False      # min / max
    histograms: bool = False    # per-code counts for exact quantiles

    @property
    def weighted(self) -> bool:
        return self.rule == "fraction"

    def schema(self) -> str:
        num = "double" if self.weighted else "long"
        return (f"feature_id long, year int, count {num}, inside {num}, s1 array<{num}>, "
                f"s2 array<{num}>, umin array<long>, umax array<long>, hkeys array<short>, "
                "hcounts array<int>")


def _lists(a: np.ndarray) -> pa.Array:
    rows, width = a.shape
    return pa.ListArray.from_arrays(pa.array(np.arange(rows + 1, dtype=np.int32) * width),
                                    pa.array(a.reshape(-1)))


def _sparse(hist: np.ndarray | None, rows: np.ndarray):
    """Per field, only the codes present: keys band * 256 + code index (int16), counts (int32)."""
    keys, counts = [], []
    for f in rows:
        if hist is None:
            keys.append(np.empty(0, np.int16))
            counts.append(np.empty(0, np.int32))
            continue
        flat = hist[f].reshape(-1)
        nz = np.flatnonzero(flat)
        keys.append(nz.astype(np.int16))
        counts.append(flat[nz])
    return keys, counts


def reduce_task(cy: int, cx: int, fields: list[dict], red: Reduction, read: Reader) -> dict[str, list]:
    """Partials of every field of one chunk task, for each year it asks for."""
    g = red.grid
    r0, r1, c0, c1 = window = g.chunk_window(cy, cx)
    geoms = shapely.from_wkb([f["wkb"] for f in fields])
    m = members(geoms, red.rule, g.xmin + c0 * g.res, g.ymax - r0 * g.res, g.res, r1 - r0, c1 - c0)
    owner = m[1] if red.weighted else m[:, 3]
    ids = np.array([f["feature_id"] for f in fields], np.int64)
    out = {k: [] for k in COLUMNS}
    if len(owner) == 0:
        return out
    for year in sorted({y for f in fields for y in f["years"]}):
        active = np.array([year in f["years"] for f in fields])[owner]
        if not active.any():
            continue
        data = read(red.store_years.index(year), window)
        if red.weighted:
            p: Partials = reduce_chunk_weighted(data, m[0][active], m[1][active], m[2][active],
                                                len(fields), square=red.quant.square,
                                                nodata=red.quant.nodata)
        else:
            p = reduce_chunk(data, m[active], len(fields), square=red.quant.square,
                             nodata=red.quant.nodata, extremes=red.extremes,
                             histograms=red.histograms)
        rows = np.flatnonzero(p.inside > 0)
        out["feature_id"].append(ids[rows])
        out["year"].append(np.full(len(rows), year, np.int32))
        for name in ("count", "inside", "s1", "s2", "umin", "umax"):
            out[name].append(getattr(p, name)[rows])
        keys, counts = _sparse(p.hist, rows)
        out["hkeys"].extend(keys)
        out["hcounts"].extend(counts)
    return out


def _ragged(parts: list[np.ndarray], typ) -> pa.Array:
    offsets = np.zeros(len(parts) + 1, np.int32)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    values = np.concatenate(parts) if parts else np.empty(0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=typ))


def reduce_batches(batches: Iterable[pa.RecordBatch], red: Reduction, read: Reader) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: each input row is a chunk task (cy, cx, fields)."""
    for batch in batches:
        parts = {k: [] for k in COLUMNS}
        for task in batch.to_pylist():
            for k, v in reduce_task(task["cy"], task["cx"], task["fields"], red, read).items():
                parts[k].extend(v)
        if not parts["feature_id"]:
            continue
        cols = {k: np.concatenate(parts[k]) for k in COLUMNS[:8]}
        yield pa.RecordBatch.from_arrays(
            [pa.array(cols[k]) for k in ("feature_id", "year", "count", "inside")]
            + [_lists(cols[k].reshape(-1, red.bands)) for k in ("s1", "s2", "umin", "umax")]
            + [_ragged(parts["hkeys"], pa.int16()), _ragged(parts["hcounts"], pa.int32())],
            names=list(COLUMNS))
