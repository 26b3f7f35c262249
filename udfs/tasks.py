"""Executor side of the reduce stage: chunk tasks in, the published rows of the fields inside
each chunk and the partial sums of the others out (Arrow).

A task is one inner chunk with every field that touches it. The chunk is read once per year
that any of its fields needs, and reduced for all of those fields in one pass. A field inside
the chunk (`whole`, most fields) has all its pixels here: its field-years leave the task as
published rows (udfs/finish.py finishes their sums, udfs/rows.py builds the rows), so its sums
make no trip through the JVM, the aggregate stage and a join. A field spanning chunks leaves
its sums (a partial row per year) for the aggregate stage to merge. The `skipped` column names
a chunk that could not be decoded and was skipped on request (--on-bad-chunk skip).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from aef_zonal.udfs import pca_model, rows, schemas
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
# what a reduce task's output rows are (udfs/schemas.py: reduced)
ROWS, SAMPLE, PARTIAL, SKIPPED = "rows", "sample", "partial", "skipped"
SUMS = ("s1", "s2", "umin", "umax")


@dataclass(frozen=True)
class Reduction:
    """What every task of a run computes: partial sums, and the published rows (`layout`) of the
    fields that lie inside one chunk, with a sample of their means for the PCA fit (each
    field-year drawn with probability `sample`, udfs/pca_model.py: drawn)."""

    grid: Grid
    quant: Quantisation
    bands: int
    finish: Finish  # the run's statistics, which say what the sums must hold
    layout: rows.Layout
    rule: str = "center"  # pixels.RULES
    min_coverage: float = 0.0  # all-touched, fraction: least covered share of a pixel that counts
    sample: float = 0.0
    seed: int = 0

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
        return schemas.reduced(self.weighted, self.quant.floats)


def _sparse(hist: np.ndarray | None, rows_: np.ndarray, weighted: bool):
    """Per field, only the codes present: keys band * 256 + code index (int16), counts (int32;
    summed weights, float64, for weighted pixels); as two list arrays."""
    count = pa.float64() if weighted else pa.int32()
    if hist is None:
        empty = pa.array(np.zeros(len(rows_) + 1, np.int32))
        return (
            pa.ListArray.from_arrays(empty, pa.array([], pa.int16())),
            pa.ListArray.from_arrays(empty, pa.array([], count)),
        )
    keys, counts = [], []
    for f in rows_:
        flat = hist[f].reshape(-1)
        nz = np.flatnonzero(flat)
        keys.append(nz.astype(np.int16))
        counts.append(flat[nz])
    return schemas.ragged(keys, pa.int16()), schemas.ragged(counts, count)


class Planned:
    """One chunk task with its pixel membership computed and its chunk reads in flight."""

    def __init__(
        self, key: tuple[int, int], fields: pa.StructArray, red: Reduction, submit: Submit
    ):
        g = red.grid
        self.key, self.fields = key, fields
        r0, r1, c0, c1 = window = g.chunk_window(*key)
        self.shape = (red.bands, r1 - r0, c1 - c0)
        geoms = shapely.from_wkb(fields.field("wkb").to_numpy(zero_copy_only=False))
        self.m = members(
            geoms, red.rule, *g.window_corner(window), g.res, r1 - r0, c1 - c0, red.min_coverage
        )
        self.ids = fields.field("feature_id").to_numpy()
        self.whole = fields.field("whole").to_numpy(zero_copy_only=False)
        years = fields.field("years")
        year_of = pc.list_flatten(years).to_numpy()
        field_of = pc.list_parent_indices(years).to_numpy()
        owner = self.m[1] if red.weighted else self.m[:, 3]
        # year -> (fields asked for it, rows of m to reduce, Future of the chunk or None when
        # no asked field has a member pixel: nothing to read)
        self.reads = {}
        for year in np.unique(year_of):
            asked = np.zeros(len(self.ids), bool)
            asked[field_of[year_of == year]] = True
            active = asked[owner]
            future = submit(g.time_index(int(year)), window) if active.any() else None
            self.reads[int(year)] = (asked, active, future)

    def _partials(self, red: Reduction, active, data) -> Partials:
        n = len(self.ids)
        if red.quant.floats:
            pix, fld = (
                (self.m[0][active], self.m[1][active])
                if red.weighted
                else runs_to_pairs(self.m[active], self.shape[2])
            )
            weight = self.m[2][active] if red.weighted else None
            return reduce_chunk_float(data, pix, fld, weight, n, fill=red.quant.nodata)
        if red.weighted:
            return reduce_chunk_weighted(
                data,
                self.m[0][active],
                self.m[1][active],
                self.m[2][active],
                n,
                square=red.quant.square,
                nodata=red.quant.nodata,
                histograms=red.histograms,
            )
        return reduce_chunk(
            data,
            self.m[active],
            n,
            square=red.quant.square,
            nodata=red.quant.nodata,
            extremes=red.extremes,
            histograms=red.histograms,
        )

    def reduce(self, red: Reduction, out: Gathered):
        """The partial sums of the task's spanning fields and the rows of its whole ones, for
        each year they ask for, into `out`."""
        stats_schema = red.finish.schema()
        for year, (asked, active, future) in self.reads.items():
            whole = asked & self.whole
            if future is None:  # no pixel of any of its fields this year
                at = np.flatnonzero(whole)
                out.whole(self, at, year, _no_stats(stats_schema, len(at)))
                continue
            data, skipped = future.result(), None
            if data is None:  # undecodable and skipped on request: its fields say so
                data = np.full(self.shape, red.quant.nodata, red.quant.dtype)
                skipped = red.grid.chunk_name(red.grid.time_index(year), *self.key)
                out.skipped.append(skipped)
            p = self._partials(red, active, data)
            inside = p.inside > 0
            out.partial(self, p, np.flatnonzero(~self.whole & inside), year, skipped)
            done = np.flatnonzero(whole & inside)
            out.whole(self, done, year, _finished(self.ids[done], year, p, done, skipped, red))
            empty = np.flatnonzero(whole & ~inside)
            out.whole(self, empty, year, _no_stats(stats_schema, len(empty)))
        out.close_task()


def _no_stats(schema: pa.Schema, n: int) -> pa.RecordBatch:
    """Statistics of field-years without a pixel inside: none (the rows say why)."""
    return pa.RecordBatch.from_arrays([pa.nulls(n, f.type) for f in schema], schema=schema)


def _finished(ids, year, p: Partials, at, skipped, red: Reduction) -> pa.RecordBatch:
    """The statistics of fields with all their pixels in this chunk, finished as the aggregate
    stage finishes the others (udfs/finish.py), from a list of one partial each."""
    n = len(at)
    one = pa.array(np.arange(n + 1, dtype=np.int32))  # each row a list of one partial
    num = pa.float64() if red.weighted else pa.int64()
    sums = pa.float64() if red.weighted or red.quant.floats else pa.int64()
    extreme = pa.float64() if red.quant.floats else pa.int64()

    def listed(name, typ):
        if name in ("umin", "umax") and not red.extremes:
            return pa.nulls(n, pa.list_(pa.list_(typ)))
        return pa.ListArray.from_arrays(
            one, schemas.rows_as_lists(getattr(p, name)[at]).cast(pa.list_(typ))
        )

    keys, counts = _sparse(p.hist, at, red.weighted)
    lists = pa.RecordBatch.from_pydict(
        {
            "feature_id": pa.array(ids, pa.int64()),
            "year": pa.array(np.full(n, year, np.int32)),
            "count": pa.array(p.count[at], num),
            "inside": pa.array(p.inside[at], num),
            "l1": listed("s1", sums),
            "l2": listed("s2", sums),
            "lmin": listed("umin", extreme),
            "lmax": listed("umax", extreme),
            "hkeys": keys,
            "hcounts": counts,
            "skipped_chunks": pa.ListArray.from_arrays(
                one if skipped else pa.array(np.zeros(n + 1, np.int32)),
                pa.array([skipped] * n if skipped else [], pa.string()),
            ),
        }
    )
    return finish_batch(lists, red.finish)


class Gathered:
    """What tasks gave, gathered until a batch is full: partial sums, published rows with the
    year and label of each, the sample of means, skipped chunks."""

    def __init__(self, red: Reduction):
        self.red = red
        self.clear()

    def clear(self):
        self.partials: dict[str, list] = collections.defaultdict(list)
        self.rows: list[tuple[pa.RecordBatch, pa.Array, pa.Array]] = []
        self.samples: list[pa.RecordBatch] = []
        self.skipped: list[str] = []
        self.size = 0  # partial and published rows
        self._whole: list[tuple] = []  # the current task's whole field-years

    def partial(self, task: Planned, p: Partials, at: np.ndarray, year: int, skipped):
        if not len(at):
            return
        part = self.partials
        part["feature_id"].append(pa.array(task.ids[at], pa.int64()))
        part["year"].append(pa.array(np.full(len(at), year, np.int32)))
        for name in ("count", "inside"):
            part[name].append(pa.array(getattr(p, name)[at]))
        for name in SUMS:
            # min/max not asked for: null, so no 2 x 64 int64 a row reach the JVM
            if name in ("s1", "s2") or self.red.extremes:
                part[name].append(schemas.rows_as_lists(getattr(p, name)[at]))
        keys, counts = _sparse(p.hist, at, self.red.weighted)
        part["hkeys"].append(keys)
        part["hcounts"].append(counts)
        part["skipped"].append(pa.array([skipped] * len(at), pa.string()))
        self.size += len(at)

    def whole(self, task: Planned, at: np.ndarray, year: int, stats: pa.RecordBatch):
        if len(at):
            self._whole.append((task.fields.take(pa.array(at)), year, stats))

    def close_task(self):
        """The task's whole field-years as published rows (and a sample of their means),
        ordered by field and year: `change` takes each field's years in order."""
        if not self._whole:
            return
        red = self.red
        fields = pa.concat_arrays([f for f, _, _ in self._whole])
        year = np.concatenate([np.full(len(f), y, np.int32) for f, y, _ in self._whole])
        stats = pa.Table.from_batches([s for _, _, s in self._whole])
        self._whole = []
        order = np.lexsort((year, fields.field("feature_id").to_numpy()))
        fields, year = fields.take(pa.array(order)), year[order]
        stats = stats.take(pa.array(order))
        columns = {k: c.combine_chunks() for k, c in zip(stats.column_names, stats.columns)}
        ids = fields.field("feature_id").to_numpy()
        count = rows.doubles(columns["count"])
        if red.layout.change:
            means = rows.dense(columns["mean"])
            columns["change"], columns["change_from"], _ = rows.change(ids, year, count, means)
        f = {
            "feature_id": fields.field("feature_id"),
            "year": pa.array(year),
            "geometry": fields.field("wkb"),
            "label": fields.field("label"),
            "kept": fields.field("kept"),
            **{k: fields.field(k) for k in ("xmin", "ymin", "xmax", "ymax")},
        }
        self.rows.append((rows.build(f, columns, red.layout), f["year"], f["label"]))
        self.size += len(year)
        if red.sample:
            at = pa.array(
                np.flatnonzero((count > 0) & pca_model.drawn(ids, year, red.seed, red.sample))
            )
            self.samples.append(
                pa.RecordBatch.from_pydict(
                    {
                        "feature_id": f["feature_id"].take(at),
                        "year": f["year"].take(at),
                        "mean": columns["mean"].take(at),
                    }
                )
            )

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The gathered output as batches of the reduce schema; then empty again."""
        red, schema = self.red, self.red.schema()
        if self.rows:
            built = _one([b for b, _, _ in self.rows])
            years = pa.concat_arrays([y for _, y, _ in self.rows])
            labels = pa.concat_arrays([lab for _, _, lab in self.rows])
            yield _union(schema, ROWS, rows.pack(built, years, labels))
        if any(b.num_rows for b in self.samples):
            yield _union(schema, SAMPLE, _one(self.samples))
        if self.partials:
            n = sum(len(a) for a in self.partials["feature_id"])
            cols = {
                f.name: pa.concat_arrays([a.cast(f.type) for a in self.partials[f.name]])
                if self.partials[f.name]
                else pa.nulls(n, f.type)
                for f in schemas.partials(red.weighted, red.quant.floats)
            }
            yield _union(schema, PARTIAL, pa.RecordBatch.from_pydict(cols))
        if self.skipped:
            yield _union(schema, SKIPPED, pa.RecordBatch.from_pydict({"skipped": self.skipped}))
        self.clear()


def _one(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    """Batches of one schema as one."""
    table = pa.Table.from_batches(batches).combine_chunks()
    return table.to_batches()[0] if table.num_rows else batches[0].slice(0, 0)


def _union(schema: pa.Schema, kind: str, batch: pa.RecordBatch) -> pa.RecordBatch:
    """A batch of one kind in the reduce schema: the other kinds' columns null."""
    n = batch.num_rows
    have = dict(zip(batch.schema.names, batch.columns))
    return pa.RecordBatch.from_arrays(
        [
            pa.array(np.full(n, kind, object), pa.string())
            if f.name == "kind"
            else have[f.name].cast(f.type)
            if f.name in have
            else pa.nulls(n, f.type)
            for f in schema
        ],
        schema=schema,
    )


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
    box = g.chunk_footprint(0, 0)
    task = pa.RecordBatch.from_pylist(
        [{"cy": 0, "cx": 0, "fields": [field(0, shapely.box(*box), [g.years[0]], 1, red)]}],
        schema=task_schema(red),
    )
    for _ in reduce_batches([task], red, lambda t, w: fill):
        pass


def task_schema(red: Reduction) -> pa.Schema:
    """A chunk task's columns as sql/30_chunk_tasks.sql makes them."""
    kept = [f for f in red.layout.schema if f.name in red.layout.kept]
    return pa.schema(
        [
            ("cy", pa.int32()),
            ("cx", pa.int32()),
            (
                "fields",
                pa.list_(
                    pa.struct(
                        [
                            ("feature_id", pa.int64()),
                            ("wkb", pa.binary()),
                            ("years", pa.list_(pa.int32())),
                            ("chunks", pa.int32()),
                            ("whole", pa.bool_()),
                            ("label", pa.string()),
                            ("kept", pa.struct(kept or [("_no_kept_columns", pa.null())])),
                            *[(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")],
                        ]
                    )
                ),
            ),
        ]
    )


def field(fid: int, geom, years: list[int], chunks: int, red: Reduction, label="field") -> dict:
    """A chunk task's field (task_schema), as the SQL makes it: kept columns null."""
    x0, y0, x1, y1 = shapely.bounds(geom)
    return {
        "feature_id": fid,
        "wkb": shapely.to_wkb(geom),
        "years": years,
        "chunks": chunks,
        "whole": chunks == 1,
        "label": label,
        "kept": None,
        "xmin": x0,
        "ymin": y0,
        "xmax": x1,
        "ymax": y1,
    }


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
    tasks = (
        ((cy, cx), fields)
        for batch in batches
        for cy, cx, fields in zip(
            batch.column("cy").to_pylist(), batch.column("cx").to_pylist(), _tasks_fields(batch)
        )
    )
    gathered = Gathered(red)
    for task in _prefetched(tasks, red, submit, lookahead):
        task.reduce(red, gathered)
        if gathered.size >= rows_per_batch:
            yield from gathered.batches()
    yield from gathered.batches()


def _tasks_fields(batch: pa.RecordBatch) -> Iterator[pa.StructArray]:
    lists = batch.column("fields")
    flat = lists.values
    offsets = lists.offsets.to_numpy()
    for i in range(len(lists)):
        yield flat.slice(offsets[i], offsets[i + 1] - offsets[i])


def _prefetched(tasks, red: Reduction, submit: Submit, lookahead: int):
    """Tasks in order, each planned (its reads in flight) `lookahead` tasks ahead of its turn."""
    window: collections.deque[Planned] = collections.deque()
    for key, fields in tasks:
        window.append(Planned(key, fields, red, submit))
        if len(window) > lookahead:
            yield window.popleft()
    while window:
        yield window.popleft()
