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

from aef_zonal.udfs import finish, pca_model, rows, schemas, statistics
from aef_zonal.udfs.finish import Finish
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
    scratch: str | None = None  # the folder the rows wait in for the writer (rows.Spill)

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
        for year, (asked, active, future) in self.reads.items():
            whole = np.flatnonzero(asked & self.whole)
            if future is None:  # no pixel of any of its fields this year
                out.whole(self, whole, year, None, None)
                continue
            data, skipped = future.result(), None
            if data is None:  # undecodable and skipped on request: its fields say so
                data = np.full(self.shape, red.quant.nodata, red.quant.dtype)
                skipped = red.grid.chunk_name(red.grid.time_index(year), *self.key)
                out.skipped.append(skipped)
            p = self._partials(red, active, data)
            out.partial(self, p, np.flatnonzero(~self.whole & (p.inside > 0)), year, skipped)
            out.whole(self, whole, year, p, skipped)


class Gathered:
    """What tasks gave, gathered until a batch is full: partial sums of the spanning fields; the
    whole field-years (their field's row in the task, year, and their sums where they have a
    pixel inside), finished and built into rows a batch at a time; skipped chunks."""

    def __init__(self, red: Reduction, spill: rows.Spill | None = None):
        self.red, self.spill = red, spill
        self.extremes, self.histograms = red.extremes, red.histograms
        self.clear()

    def clear(self):
        self.partials: dict[str, list] = collections.defaultdict(list)
        self.tasks: list[pa.StructArray] = []  # each task's fields
        self.at: list[np.ndarray] = []  # per task and year: its whole fields among all tasks'
        self.years: list[np.ndarray] = []
        self.inside: list[np.ndarray] = []  # each: has a pixel inside
        self.sums: dict[str, list] = collections.defaultdict(list)  # of those with one
        self.skipped: list[str] = []
        self.size = 0  # partial and whole rows
        self._base = 0  # the current task's first field among all tasks'

    def _sums(self, into: dict, task: Planned, p: Partials, at: np.ndarray, year: int, skipped):
        into["feature_id"].append(task.ids[at])
        into["year"].append(np.full(len(at), year, np.int32))
        for name in ("count", "inside", "s1", "s2") + (("umin", "umax") if self.extremes else ()):
            into[name].append(getattr(p, name)[at])
        if self.histograms:
            keys, counts = _sparse(p.hist, at, self.red.weighted)
            into["hkeys"].append(keys)
            into["hcounts"].append(counts)
        into["skipped"].append(np.full(len(at), skipped, object))

    def partial(self, task: Planned, p: Partials, at: np.ndarray, year: int, skipped):
        if len(at):
            self._sums(self.partials, task, p, at, year, skipped)
            self.size += len(at)

    def whole(self, task: Planned, at: np.ndarray, year: int, p: Partials | None, skipped):
        """Whole fields `at` of a task, in `year`; `p`: the task's sums (None: nothing read)."""
        if not len(at):
            return
        inside = p.inside[at] > 0 if p is not None else np.zeros(len(at), bool)
        if not self.tasks or self.tasks[-1] is not task.fields:
            self._base += len(self.tasks[-1]) if self.tasks else 0
            self.tasks.append(task.fields)
        self.at.append(self._base + at)
        self.years.append(np.full(len(at), year, np.int32))
        self.inside.append(inside)
        if inside.any():
            self._sums(self.sums, task, p, at[inside], year, skipped)
        self.size += len(at)

    def _rows(self):
        """The whole field-years as published rows grouped by (year, label), the year and label
        of each, and their means drawn for the PCA fit."""
        red = self.red
        field = np.concatenate(self.at)
        year = np.concatenate(self.years)
        inside = np.concatenate(self.inside)
        done = finished(self.sums, red)
        # the statistics row of each field-year; null where it has no pixel inside
        stat = np.zeros(len(year), np.int64)
        stat[inside] = np.arange(inside.sum())
        every = pa.chunked_array(self.tasks)
        labels = pa.concat_arrays([t.field("label") for t in self.tasks]).take(pa.array(field))
        # in the order pack groups them: no copy of the built rows there
        order = rows.grouping(pa.array(year), labels).to_numpy()
        fields = every.take(pa.array(field[order])).combine_chunks()
        year = year[order]
        ids = fields.field("feature_id").to_numpy()
        stats = done.take(pa.array(stat[order], mask=~inside[order]))
        columns = dict(zip(stats.schema.names, stats.columns))
        count = rows.doubles(columns["count"])
        if red.layout.change:  # each field's years together, in order
            by = np.lexsort((year, ids))
            back = np.empty_like(by)
            back[by] = np.arange(len(by))
            change, since, _ = rows.change(
                ids[by], year[by], count[by], rows.dense(columns["mean"])[by]
            )
            columns["change"], columns["change_from"] = change.take(back), since.take(back)
        f = {
            "feature_id": fields.field("feature_id"),
            "year": pa.array(year),
            "geometry": fields.field("wkb"),
            "label": fields.field("label"),
            "kept": fields.field("kept"),
            **{k: fields.field(k) for k in ("xmin", "ymin", "xmax", "ymax")},
        }
        built = rows.build(f, columns, red.layout)
        sample = None
        if red.sample:
            drawn = (count > 0) & pca_model.drawn(ids, year, red.seed, red.sample)
            take = pa.array(np.flatnonzero(drawn))
            sample = pa.RecordBatch.from_pydict(
                {
                    "feature_id": f["feature_id"].take(take),
                    "year": f["year"].take(take),
                    "mean": columns["mean"].take(take),
                }
            )
        return built, f["year"], f["label"], sample

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The gathered output as batches of the reduce schema; then empty again."""
        red, schema = self.red, self.red.schema()
        if self.at:
            built, years, labels, sample = self._rows()
            packed = rows.pack(built, years, labels, grouped=True)
            if self.spill is None:
                yield _union(schema, ROWS, packed)
            else:
                self.spill.add(packed)
            if sample is not None and sample.num_rows:
                yield _union(schema, SAMPLE, sample)
        if self.partials:
            part = self.partials
            n = sum(len(a) for a in part["feature_id"])
            cols = {}
            for f in schemas.partials(red.weighted, red.quant.floats):
                if f.name in ("hkeys", "hcounts") and self.histograms:
                    cols[f.name] = pa.concat_arrays(part[f.name]).cast(f.type)
                elif f.name in ("hkeys", "hcounts"):
                    cols[f.name] = pa.ListArray.from_arrays(
                        pa.array(np.zeros(n + 1, np.int32)), pa.array([], f.type.value_type)
                    )
                elif f.name not in part:  # min/max not asked for: null, no 2 x 64 int64 a row
                    cols[f.name] = pa.nulls(n, f.type)
                elif pa.types.is_list(f.type):
                    cols[f.name] = schemas.rows_as_lists(np.concatenate(part[f.name])).cast(f.type)
                else:
                    cols[f.name] = pa.array(np.concatenate(part[f.name]), f.type)
            yield _union(schema, PARTIAL, pa.RecordBatch.from_pydict(cols))
        if self.skipped:
            yield _union(schema, SKIPPED, pa.RecordBatch.from_pydict({"skipped": self.skipped}))
        self.clear()


def finished(sums: dict[str, list], red: Reduction) -> pa.RecordBatch:
    """The statistics of whole field-years from their one partial each, finished as the
    aggregate stage finishes the others (udfs/finish.py)."""
    fin = red.finish
    if not sums:
        return pa.RecordBatch.from_pylist([], schema=fin.schema())
    col = {
        k: pa.concat_arrays(v) if k in ("hkeys", "hcounts") else np.concatenate(v)
        for k, v in sums.items()
    }
    merged = statistics.Merged(
        red.quant,
        red.weighted,
        col["count"],
        col["inside"],
        col["s1"],
        col["s2"],
        levels=[s.level for s in fin.records if s.level is not None],
        **({"umin": col["umin"], "umax": col["umax"]} if "umin" in col else {}),
        **({"hkeys": col["hkeys"], "hcounts": col["hcounts"]} if fin.histograms else {}),
    )
    names = pa.array(col["skipped"], pa.string())
    return finish.finished(merged, fin, col["feature_id"], col["year"], _listed(names))


def _listed(names: pa.Array) -> pa.Array:
    """A list per row: [name], or [] where the name is null."""
    offsets = np.zeros(len(names) + 1, np.int32)
    np.cumsum(names.is_valid().to_numpy(zero_copy_only=False), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), names.drop_null())


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
    spill = rows.Spill(red.scratch) if red.scratch else None
    gathered = Gathered(red, spill)
    for task in _prefetched(tasks, red, submit, lookahead):
        task.reduce(red, gathered)
        if gathered.size >= rows_per_batch:
            yield from gathered.batches()
    yield from gathered.batches()
    if spill is not None and spill.groups:
        yield _union(red.schema(), ROWS, spill.refs())


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
