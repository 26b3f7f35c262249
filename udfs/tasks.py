"""Executor side of the reduce stage: chunk tasks in, per-field partial rows out (Arrow).

A task is one inner chunk with every field that touches it. The chunk is read once per year
that any of its fields needs, and reduced for all of those fields in one pass. The `skipped`
column names a chunk that could not be decoded and was skipped on request (--on-bad-chunk skip).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import shapely

from aef_zonal.udfs import schemas
from aef_zonal.udfs.finish import Finish, finish_batch
from aef_zonal.udfs.grid import Grid
from aef_zonal.udfs.partials import (
    Partials,
    reduce_chunk,
    reduce_chunk_float,
    reduce_chunk_weighted,
)
from aef_zonal.udfs.pixels import members, runs_to_pairs
from aef_zonal.udfs.quantisation import Quantisation

# (time index, pixel window) -> Future of the int8 chunk (None: undecodable, skipped)
Submit = Callable[[int, tuple[int, int, int, int]], Future]
COLUMNS = tuple(
    n
    for n in schemas.partials(False, False, schemas.statistics((), False)).names
    if n != "finished"
)
SUMS = ("s1", "s2", "umin", "umax", "hkeys", "hcounts")  # null in a row finished on the worker


@dataclass(frozen=True)
class Reduction:
    """What every task of a run computes: partial sums, and the statistics (`finish`) of the
    fields that lie inside one chunk."""

    grid: Grid
    quant: Quantisation
    bands: int
    finish: Finish  # the run's statistics, which say what the sums must hold
    rule: str = "center"  # pixels.RULES
    min_coverage: float = 0.0  # all-touched, fraction: least covered share of a pixel that counts

    @property
    def weighted(self) -> bool:
        return self.rule == "fraction"

    @property
    def extremes(self) -> bool:  # smallest and largest u
        return self.finish.extremes

    @property
    def histograms(self) -> bool:  # per-code counts
        return self.finish.histograms

    def schema(self) -> pa.Schema:
        return schemas.partials(self.weighted, self.quant.floats, self.finish.schema())


def _sparse(hist: np.ndarray | None, rows: np.ndarray):
    """Per field, only the codes present: keys band * 256 + code index (int16), counts (int32;
    summed weights, float64, for weighted pixels)."""
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


class Planned:
    """One chunk task with its pixel membership computed and its chunk reads in flight."""

    def __init__(self, task: dict, red: Reduction, submit: Submit):
        g = red.grid
        fields = task["fields"]
        self.key = (task["cy"], task["cx"])
        r0, r1, c0, c1 = window = g.chunk_window(*self.key)
        self.shape = (red.bands, r1 - r0, c1 - c0)
        geoms = shapely.from_wkb([f["wkb"] for f in fields])
        self.m = members(
            geoms, red.rule, *g.window_corner(window), g.res, r1 - r0, c1 - c0, red.min_coverage
        )
        self.ids = np.array([f["feature_id"] for f in fields], np.int64)
        self.chunks = np.array([f["chunks"] for f in fields], np.int32)
        owner = self.m[1] if red.weighted else self.m[:, 3]
        self.reads = {}  # year -> (rows of m to reduce, Future of the chunk)
        for year in sorted({y for f in fields for y in f["years"]}):
            active = np.array([year in f["years"] for f in fields], bool)[owner]
            if active.any():
                self.reads[year] = (active, submit(g.time_index(year), window))

    def reduce(self, red: Reduction) -> dict[str, list]:
        """Partials of every field of the task, for each year it asks for."""
        out = {k: [] for k in COLUMNS}
        for year, (active, future) in self.reads.items():
            data, skipped = future.result(), None
            if data is None:  # undecodable and skipped on request: its fields say so
                data = np.full(self.shape, red.quant.nodata, red.quant.dtype)
                skipped = red.grid.chunk_name(red.grid.time_index(year), *self.key)
            if red.quant.floats:
                pix, fld = (
                    (self.m[0][active], self.m[1][active])
                    if red.weighted
                    else runs_to_pairs(self.m[active], self.shape[2])
                )
                p: Partials = reduce_chunk_float(
                    data,
                    pix,
                    fld,
                    self.m[2][active] if red.weighted else None,
                    len(self.ids),
                    fill=red.quant.nodata,
                )
            elif red.weighted:
                p = reduce_chunk_weighted(
                    data,
                    self.m[0][active],
                    self.m[1][active],
                    self.m[2][active],
                    len(self.ids),
                    square=red.quant.square,
                    nodata=red.quant.nodata,
                    histograms=red.histograms,
                )
            else:
                p = reduce_chunk(
                    data,
                    self.m[active],
                    len(self.ids),
                    square=red.quant.square,
                    nodata=red.quant.nodata,
                    extremes=red.extremes,
                    histograms=red.histograms,
                )
            rows = np.flatnonzero(p.inside > 0)
            out["feature_id"].append(self.ids[rows])
            out["year"].append(np.full(len(rows), year, np.int32))
            for name in ("count", "inside", "s1", "s2") + (
                ("umin", "umax") if red.extremes else ()
            ):
                out[name].append(getattr(p, name)[rows])
            keys, counts = _sparse(p.hist, rows)
            out["hkeys"].extend(keys)
            out["hcounts"].extend(counts)
            out["skipped"].extend([skipped] * len(rows))
            out["chunks"].append(self.chunks[rows])
        return out


def warm_up(red: Reduction) -> None:
    """One task over a chunk of nodata, read from nowhere: a fresh worker imports what the
    reduce stage runs and loads this run's kernels from numba's cache (~1 CPU-second) before
    its first real task."""
    g = red.grid
    window = g.chunk_window(0, 0)
    fill = Future()
    fill.set_result(
        np.full(
            (red.bands, window[1] - window[0], window[3] - window[2]),
            red.quant.nodata,
            red.quant.dtype,
        )
    )
    field = {
        "feature_id": 0,
        "chunks": 1,
        "years": [g.years[0]],
        "wkb": shapely.to_wkb(shapely.box(*g.chunk_footprint(0, 0))),
    }
    Planned({"cy": 0, "cx": 0, "fields": [field]}, red, lambda t, w: fill).reduce(red)


def reduce_batches(
    batches: Iterable[pa.RecordBatch],
    red: Reduction,
    submit: Submit,
    lookahead: int = 8,
    rows_per_batch: int = 4096,
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: each input row is a chunk task (cy, cx, fields). Output batches close
    after the task that brings them to `rows_per_batch` rows: a worker's memory then stays the
    same however many fields share a chunk."""
    tasks = (t for batch in batches for t in batch.to_pylist())
    parts = {k: [] for k in COLUMNS}
    rows = 0
    for result in _prefetched(tasks, red, submit, lookahead):
        for k, v in result.items():
            parts[k].extend(v)
        rows += sum(len(ids) for ids in result["feature_id"])
        if rows >= rows_per_batch:
            yield _batch(parts, red)
            parts, rows = {k: [] for k in COLUMNS}, 0
    if parts["feature_id"]:
        yield _batch(parts, red)


def _prefetched(tasks: Iterable[dict], red: Reduction, submit: Submit, lookahead: int):
    """Reduce tasks in order while the reads of the next `lookahead` ones are in flight."""
    window: collections.deque[Planned] = collections.deque()
    for task in tasks:
        window.append(Planned(task, red, submit))
        if len(window) > lookahead:
            yield window.popleft().reduce(red)
    while window:
        yield window.popleft().reduce(red)


def _batch(parts: dict[str, list], red: Reduction) -> pa.RecordBatch:
    schema = red.schema()
    n = sum(len(ids) for ids in parts["feature_id"])
    columns = {}
    for field in schema:
        k, typ = field.name, field.type
        if k == "finished":
            continue
        if k in ("hkeys", "hcounts"):
            columns[k] = schemas.ragged(parts[k], typ.value_type)
        elif k == "skipped":
            columns[k] = pa.array(parts[k], typ)
        elif not parts[k]:  # min/max not asked for: null, so no 2 x 64 int64 per row reach the JVM
            columns[k] = pa.nulls(n, typ)
        elif pa.types.is_list(typ):
            columns[k] = schemas.rows_as_lists(np.concatenate(parts[k]).reshape(-1, red.bands))
        else:
            columns[k] = pa.array(np.concatenate(parts[k]), typ)
    return _finish_whole(columns, red.finish, schema)


def _listed(names: pa.Array) -> pa.Array:
    """A list per row: [name], or [] where the name is null."""
    offsets = np.zeros(len(names) + 1, np.int32)
    np.cumsum(names.is_valid().to_numpy(zero_copy_only=False), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), names.drop_null())


def _finish_whole(columns: dict[str, pa.Array], fin: Finish, schema: pa.Schema) -> pa.RecordBatch:
    """Fields inside this chunk (chunks = 1, most fields) have all their pixels in this row:
    finished here by udfs/finish.py, as the aggregate stage finishes the others, so their sums
    need no trip through the JVM to a finishing worker and back. Their sums become null."""
    whole = columns["chunks"].to_numpy() == 1
    rows = np.flatnonzero(whole)
    typ = schema.field("finished").type
    if len(rows):
        one = {k: columns[k].take(pa.array(rows)) for k in columns}
        single = pa.array(
            np.arange(len(rows) + 1, dtype=np.int32)
        )  # each row a list of one partial
        lists = pa.RecordBatch.from_pydict(
            {
                "feature_id": one["feature_id"],
                "year": one["year"],
                "count": one["count"],
                "inside": one["inside"],
                **{
                    name: pa.ListArray.from_arrays(single, one[sums])
                    for name, sums in (
                        ("l1", "s1"),
                        ("l2", "s2"),
                        ("lmin", "umin"),
                        ("lmax", "umax"),
                    )
                },
                "hkeys": one["hkeys"],
                "hcounts": one["hcounts"],
                "skipped_chunks": _listed(one["skipped"]),
            }
        )
        stats = finish_batch(lists, fin)
        at = np.zeros(len(whole), np.int64)
        at[rows] = np.arange(len(rows))
        finished = pa.StructArray.from_arrays(stats.columns[2:], fields=list(typ)).take(
            pa.array(at, mask=~whole)
        )
        for k in SUMS:
            a = columns[k]
            columns[k] = pa.ListArray.from_arrays(
                a.offsets,
                a.values,
                mask=pa.array(whole | a.is_null().to_numpy(zero_copy_only=False)),
            )
    else:
        finished = pa.nulls(len(whole), typ)
    return pa.RecordBatch.from_arrays([*columns.values(), finished], schema=schema)
