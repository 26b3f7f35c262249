"""The published rows: a field-year's columns from its field and its statistics, the change
between its years, and the rows packed per (time, label) for the writer.

Where the pixels are, the reduce stage builds the rows of the fields inside its chunk
(udfs/tasks.py); the others' are built after the aggregate stage, from sql/50_output.sql's join
of their field-years with their statistics. Both with `build`, so a column has one rule. The
rows travel packed: each (time, label) group of a batch as one Arrow IPC message (`pack`), one
value of a Spark row, so that the JVM moves and caches a few large values instead of every
field-year's 64-number lists; the writer (udfs/parquet.py) and `ZonalStats.df` unpack them.
Where the driver and the workers share a disk (local mode) the messages do not go through the
JVM at all: a task appends them to files of a scratch folder (`Spill`), and its packed rows are
references to those files.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aef_zonal.udfs.grid import Grid, hilbert_key

# made where the rows are written: from the mean and the run's PCA model (udfs/parquet.py)
COLOURS = "pca_components"
PARTITIONS = ("time", "label")
REASONS = (
    "null geometry",
    "empty geometry",
    "outside the store",
    "chunk skipped (undecodable)",
    "no valid pixel (all nodata)",
    "no pixel inside (smaller than the pixel rule)",
)
# a packed group of rows: its partition, its rows, how many have a valid pixel, the IPC message
# (blob) or the scratch file of IPC messages holding them (path)
PACKED = pa.schema(
    [
        ("time", pa.string()),
        ("label", pa.string()),
        ("rows", pa.int64()),
        ("with_pixels", pa.int64()),
        ("blob", pa.binary()),
        ("path", pa.string()),
    ]
)


@dataclass(frozen=True)
class Layout:
    """What every published row of a run is made from; built on the driver (jobs/dataset.py
    gives the columns)."""

    schema: pa.Schema  # the published columns in order, partition columns included
    store: str  # source_store
    grid: Grid
    stats: tuple[str, ...]  # as asked (udfs/statistics.py's names)

    @property
    def packed(self) -> pa.Schema:
        """A packed group's columns: all but the colours and the partition columns."""
        return pa.schema([f for f in self.schema if f.name not in (COLOURS, *PARTITIONS)])

    @property
    def kept(self) -> list[str]:
        """The input columns carried into every row: those between geometry and source_store."""
        names = self.schema.names
        return names[1 : names.index("source_store")]

    @property
    def change(self) -> bool:
        return "change" in self.stats


def time_value(year) -> pa.Array:
    """The `time` partition value of each year: `YYYY-01-01` (jobs/dataset.py: time_value)."""
    return pc.binary_join_element_wise(pc.cast(year, pa.string()), "-01-01", "")


def build(fields: dict, stats: dict, layout: Layout) -> pa.RecordBatch:
    """The rows of field-years: `fields` their field's columns (feature_id, year, geometry as
    WKB, label, kept: a struct of the kept columns or None, xmin, ymin, xmax, ymax: null for a
    null or empty geometry), `stats` their statistics' columns (udfs/schemas.py: statistics,
    change and change_from when asked; a row without statistics null in all). In the columns of
    `layout.packed`."""
    g = layout.grid
    n = len(fields["feature_id"])
    geometry = fields["geometry"]
    xmin, ymin, xmax, ymax = (doubles(fields[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
    has_box = ~np.isnan(xmin)
    null_geometry = geometry.is_null().to_numpy(zero_copy_only=False)
    empty = ~null_geometry & ~has_box
    # where there is no box, any number: those values are masked
    gx = np.floor((np.where(has_box, xmin, g.xmin) - g.xmin) / g.res)
    gy = np.floor((g.ymax - np.where(has_box, ymax, g.ymax)) / g.res)
    cx = np.where(has_box, (xmin + xmax) / 2, 0.0)
    cy = np.where(has_box, (ymin + ymax) / 2, 0.0)
    count = doubles(stats["count"])
    inside = doubles(stats["inside"])
    skipped = stats["skipped_chunks"]
    n_skipped = pc.fill_null(pc.list_value_length(skipped), 0).to_numpy(zero_copy_only=False)
    outside = (
        (xmax <= g.xmin)
        | (xmin >= g.xmin + g.width * g.res)
        | (ymin >= g.ymax)
        | (ymax <= g.ymax - g.height * g.res)
    )
    why = np.select(
        [count > 0, null_geometry, empty, outside, n_skipped > 0, inside > 0],
        [-1, 0, 1, 2, 3, 4],
        5,
    )
    offsets = {
        "global_x_offset": gx,
        "global_y_offset": gy,
        "local_x_offset": gx - np.floor(gx / g.shard) * g.shard,
        "local_y_offset": gy - np.floor(gy / g.shard) * g.shard,
    }
    columns = {
        "geometry": geometry,
        "source_store": pa.array(np.full(n, layout.store, object), pa.string()),
        **{k: pa.array(v.astype(np.int64), mask=~has_box) for k, v in offsets.items()},
        "path": _paths(gx, gy, fields["year"], g, has_box),
        "feature_id": fields["feature_id"],
        "bbox": _boxes(xmin, ymin, xmax, ymax, null_geometry),
        "hilbert_key": pa.array(hilbert_key(cx, cy), mask=~has_box),
        "complete": pa.array(n_skipped == 0),
        "reason": pa.DictionaryArray.from_arrays(
            pa.array(np.maximum(why, 0), pa.int8(), mask=why < 0), pa.array(REASONS)
        ).cast(pa.string()),
        "count": pc.fill_null(stats["count"], 0),
    }
    if fields["kept"] is not None:
        columns |= dict(zip(layout.kept, fields["kept"].flatten()))
    for f in layout.packed:
        if f.name not in columns:
            columns[f.name] = stats[f.name]
    return pa.RecordBatch.from_arrays(
        [columns[f.name].cast(f.type) for f in layout.packed], schema=layout.packed
    )


def doubles(a: pa.Array) -> np.ndarray:
    """float64 values, NaN where null."""
    return pc.fill_null(pc.cast(a, pa.float64()), np.nan).to_numpy(zero_copy_only=False)


def dense(lists: pa.Array) -> np.ndarray:
    """[rows, width] of a column of equal-length lists of doubles, NaN in the null rows."""
    valid = lists.is_valid().to_numpy(zero_copy_only=False)
    values = lists.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False)
    out = np.full((len(lists), len(values) // max(valid.sum(), 1)), np.nan)
    if valid.any():
        out[valid] = values.reshape(valid.sum(), -1)
    return out


def _boxes(xmin, ymin, xmax, ymax, null_geometry) -> pa.StructArray:
    """Each geometry's bounds; NaN in all four for an empty geometry (no extent: no range filter
    selects it), null for a null geometry."""
    return pa.StructArray.from_arrays(
        [pa.array(v) for v in (xmin, ymin, xmax, ymax)],
        names=["xmin", "ymin", "xmax", "ymax"],
        mask=pa.array(null_geometry),
    )


def _paths(gx, gy, years, g: Grid, has_box) -> pa.Array:
    """The store key of the shard holding each field's top-left pixel; null off the store."""
    prefix, sep = g.key_parts()
    on = has_box & (gx >= 0) & (gy >= 0) & (gx < g.width) & (gy < g.height)
    stored = np.asarray(g.years)
    t = np.argsort(stored)[np.searchsorted(np.sort(stored), years.to_numpy(zero_copy_only=False))]
    parts = [
        pa.array(v.astype(np.int64)).cast(pa.string()) for v in (t, gy // g.shard, gx // g.shard)
    ]
    path = pc.binary_join_element_wise(
        prefix, parts[0], f"{sep}0{sep}", parts[1], sep, parts[2], ""
    )
    return pc.if_else(pa.array(on), path, pa.nulls(len(on), pa.string()))


def change(
    feature_id: np.ndarray, year: np.ndarray, count: np.ndarray, mean: np.ndarray, carry=None
):
    """statistics' `change` of rows sorted by feature_id, then year: 1 - the cosine similarity of
    a row's mean with the mean of its field's latest earlier year with a valid pixel, and that
    year; null where the row has no valid pixel or no such year. The sums run band by band in
    order, as Spark's AGGREGATE over arrays does, so the values are the same to the last bit.
    `carry`: (feature_id, year, mean) of the last valid row before these (rows of one field
    may span batches). Returns (change, change_from, the carry for the next batch)."""
    valid = np.flatnonzero(count > 0)
    fid, yr, means = feature_id[valid], year[valid], mean[valid]
    if carry is not None:
        fid = np.r_[carry[0], fid]
        yr = np.r_[carry[1], yr]
        means = np.r_[carry[2][None], means]
    later = np.flatnonzero(fid[1:] == fid[:-1]) + 1  # valid rows with an earlier valid year
    a, b = means[later], means[later - 1]
    dot = np.zeros(len(later))
    aa, bb = dot.copy(), dot.copy()
    for band in range(means.shape[1] if len(means) else 0):
        dot = dot + a[:, band] * b[:, band]
        aa = aa + a[:, band] * a[:, band]
        bb = bb + b[:, band] * b[:, band]
    rows = valid[later - (carry is not None)]
    out = np.full(len(count), np.nan)
    out[rows] = 1 - dot / np.sqrt(aa * bb)
    since = np.zeros(len(count), np.int32)
    since[rows] = yr[later - 1]
    has = np.zeros(len(count), bool)
    has[rows] = True
    last = (fid[-1], yr[-1], means[-1]) if len(fid) else carry
    return pa.array(out, mask=~has), pa.array(since, mask=~has), last


def grouping(year: pa.Array, label: pa.Array) -> pa.Array:
    """The order that groups rows by (time, label), as `pack` takes them."""
    keys = pa.table({"year": year, "label": label})
    return pc.sort_indices(keys, [("year", "ascending"), ("label", "ascending")])


def pack(batch: pa.RecordBatch, year: pa.Array, label: pa.Array, grouped=False) -> pa.RecordBatch:
    """Rows in the packed columns as groups per (time, label) (PACKED), `year` and `label` each
    row's (`grouped`: the rows are in `grouping`'s order already). Each group is one IPC message
    (without schema: the readers know it), placed at an 8-byte boundary so that unpacking reads
    it in place."""
    if not batch.num_rows:
        return pa.RecordBatch.from_pylist([], schema=PACKED)
    if grouped:
        rows = batch
    else:
        order = grouping(year, label)
        rows, year, label = batch.take(order), year.take(order), label.take(order)
    y = year.to_numpy(zero_copy_only=False)
    lab = label
    change_at = np.flatnonzero(
        (y[1:] != y[:-1]) | pc.not_equal(lab[1:], lab[:-1]).to_numpy(zero_copy_only=False)
    )
    starts = np.r_[0, change_at + 1]
    stops = np.r_[starts[1:], len(y)]
    valid = rows.column("mean").is_valid().to_numpy(zero_copy_only=False)  # a valid pixel
    messages = [rows.slice(a, b - a).serialize() for a, b in zip(starts, stops)]
    offsets = np.zeros(len(messages) + 1, np.int32)
    np.cumsum([m.size for m in messages], out=offsets[1:])
    data = pa.py_buffer(b"".join(messages))
    return pa.RecordBatch.from_arrays(
        [
            time_value(pa.array(y[starts])),
            lab.take(pa.array(starts)),
            pa.array(stops - starts, pa.int64()),
            pa.array(np.add.reduceat(valid, starts) if len(starts) else [], pa.int64()),
            pa.BinaryArray.from_buffers(
                pa.binary(), len(messages), [None, pa.py_buffer(offsets), data]
            ),
            pa.nulls(len(messages), pa.string()),
        ],
        schema=PACKED,
    )


def unpack(packed: pa.RecordBatch, schema: pa.Schema) -> Iterator[tuple[int, pa.RecordBatch]]:
    """The rows of packed groups (`pack`, `Spill`), read in place: (the group's index, rows of
    it)."""
    blobs, paths = packed.column("blob"), packed.column("path")
    _, offsets, data = blobs.buffers()
    offsets = np.frombuffer(offsets, np.int32)[blobs.offset : blobs.offset + len(blobs) + 1]
    for i, path in enumerate(paths.to_pylist()):
        if path is not None:
            for message in pa.ipc.MessageReader.open_stream(pa.memory_map(path)):
                yield i, pa.ipc.read_record_batch(message, schema)
        elif blobs[i].is_valid:
            message = data.slice(offsets[i], offsets[i + 1] - offsets[i])
            yield i, pa.ipc.read_record_batch(message, schema)


class SpillError(RuntimeError):
    """The scratch folder cannot take a task's rows (a full or failing disk); says what to do."""


class Spill:
    """A task's packed groups kept in a scratch folder on the machine's disk (the driver and the
    workers' one in local mode): each (time, label) group's IPC messages appended to a file of
    the task's, a reference to which (`refs`) then travels in their place."""

    def __init__(self, folder: str):
        self.folder = folder
        self.groups: dict[tuple[str, str], list] = {}  # -> [file, rows, with_pixels]

    def add(self, packed: pa.RecordBatch) -> None:
        try:
            self._add(packed)
        except OSError as e:
            raise self._failed(e) from None

    def _failed(self, e: OSError) -> SpillError:
        return SpillError(
            f"the rows' scratch folder {self.folder} cannot take them ({e.strerror or e}): "
            "free space there, point spark.local.dir at a larger disk, or set [job] scratch "
            '= "spark" (--conf) to keep them in Spark\'s cache and shuffle'
        )

    def _add(self, packed: pa.RecordBatch) -> None:
        counts = zip(packed.column("rows").to_pylist(), packed.column("with_pixels").to_pylist())
        keys = zip(packed.column("time").to_pylist(), packed.column("label").to_pylist())
        for blob, key, (n, valid) in zip(packed.column("blob"), keys, counts):
            group = self.groups.get(key)
            if group is None:
                path = os.path.join(self.folder, f"{uuid.uuid4().hex}.arrows")
                group = self.groups[key] = [open(path, "wb"), 0, 0]  # noqa: SIM115  refs closes
            group[0].write(blob.as_buffer())
            group[1] += n
            group[2] += valid

    def refs(self) -> pa.RecordBatch:
        """The groups added, as packed rows that name their files; then empty again."""
        try:
            for f, _, _ in self.groups.values():
                f.close()
        except OSError as e:
            raise self._failed(e) from None
        keys, counts = list(self.groups), list(self.groups.values())
        self.groups = {}
        return pa.RecordBatch.from_arrays(
            [
                pa.array([t for t, _ in keys], pa.string()),
                pa.array([lab for _, lab in keys], pa.string()),
                pa.array([n for _, n, _ in counts], pa.int64()),
                pa.array([v for _, _, v in counts], pa.int64()),
                pa.nulls(len(keys), pa.binary()),
                pa.array([f.name for f, _, _ in counts], pa.string()),
            ],
            schema=PACKED,
        )
