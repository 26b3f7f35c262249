"""The writer's task: a partition's packed rows (udfs/rows.py) as GeoParquet files, each sorted
by Hilbert key, with their `geo` metadata, written with pyarrow's Parquet writer.

A task's input is the rows of one or more (time, label) partitions, in pieces of ~64 MB: cut by
the driver from the scratch folder's files (local mode), or by adaptive execution from the
rebalanced packed rows. Each partition's rows become one file: unpacked, sorted, coloured with
the run's PCA model, encoded (pyarrow writes a list<double> column as one buffer) and put where
the commit strategy says (`Target`): into the staging folder, or as an S3 multipart upload left
pending until the driver commits. The task returns one commit message per file.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aef_zonal.udfs import pca_model
from aef_zonal.udfs.rows import COLOURS, PARTITIONS, Layout, unpack

GEOPARQUET = "1.1.0"
COVERING = {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}
_TYPES = {
    1: "Point",
    2: "LineString",
    3: "Polygon",
    4: "MultiPoint",
    5: "MultiLineString",
    6: "MultiPolygon",
    7: "GeometryCollection",
}
# one row per partition a task holds: the file written (below the output; none when no row is
# left to write), its partition and rows, the field-years without a valid pixel of the partition
# (written inline or not) and for an upload left pending its id and parts
MESSAGES = pa.schema(
    [
        ("path", pa.string()),
        ("time", pa.string()),
        ("label", pa.string()),
        ("rows", pa.int64()),
        ("without_ids", pa.list_(pa.int64())),
        ("without_reasons", pa.list_(pa.string())),
        ("bytes", pa.int64()),
        ("upload_id", pa.string()),
        ("etags", pa.list_(pa.string())),  # part i + 1's
    ]
)


@dataclass(frozen=True)
class Files:
    """How a run's files are written: their columns, metadata and destination."""

    layout: Layout
    crs: dict  # PROJJSON of the store's CRS
    model: dict | None  # the PCA model colouring the means (None: no colours)
    spark_schema: str  # the files' columns as Spark's schema JSON, which Spark reads back
    folder: Callable[[str, str], str]  # a (time, label) partition's folder (jobs/dataset.py)
    target: object = None  # where files go: LocalTarget or udfs/s3.py's UploadTarget
    timestamps_int96: bool = True  # Spark's default for timestamps (outputTimestampType)
    inline: bool = True  # rows without a valid pixel written too (else only listed)

    def to(self, target, timestamps_int96: bool, inline: bool) -> Files:
        return dataclasses.replace(
            self, target=target, timestamps_int96=timestamps_int96, inline=inline
        )

    @property
    def schema(self) -> pa.Schema:
        """The files' columns: the published ones but the partition columns."""
        return pa.schema([f for f in self.layout.schema if f.name not in PARTITIONS])


@dataclass(frozen=True)
class LocalTarget:
    """Files into a folder on this machine's disks (the run's staging folder)."""

    root: str

    def open(self, rel: str):
        import os

        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return LocalFile(path)


class LocalFile:
    def __init__(self, path: str):
        self.f = open(path, "wb")  # noqa: SIM115  closed by close()
        self.bytes = 0

    def write(self, data) -> int:
        self.bytes += len(data)
        return self.f.write(data)

    def close(self) -> dict:
        self.f.close()
        return {"upload_id": None, "etags": None}

    def abort(self):
        import os

        self.f.close()
        os.unlink(self.f.name)

    @property
    def closed(self) -> bool:
        return self.f.closed


def write_partition(batches: Iterable[pa.RecordBatch], files: Files, task: int) -> Iterator[dict]:
    """Each (time, label) partition of a task's packed rows as one file; a commit message
    each."""
    groups: dict[tuple[str, str], list] = {}
    for b in batches:
        times, labels = b.column("time"), b.column("label")
        for i, rows in unpack(b, files.layout.packed):
            groups.setdefault((times[i].as_py(), labels[i].as_py()), []).append(rows)
    for (time_, label), rows in sorted(groups.items()):
        table = pa.Table.from_batches(rows, files.layout.packed)
        order = hilbert_order(table)
        without = table.column("reason").is_valid().to_numpy(zero_copy_only=False)[order]
        listed = table.select(["feature_id", "reason"]).take(pa.array(order[without]))
        # one take sorts, and leaves out the rows only listed: a table's every copy counts here
        table = table.take(pa.array(order if files.inline else order[~without]))
        del rows[:]  # the unpacked batches refer to the input's buffers: let them go
        message = {
            "path": None,
            "time": time_,
            "label": label,
            "rows": 0,
            "without_ids": listed.column("feature_id").to_pylist(),
            "without_reasons": listed.column("reason").to_pylist(),
            "bytes": 0,
            "upload_id": None,
            "etags": None,
        }
        if table.num_rows:
            table = coloured(table, files)
            rel = f"{files.folder(time_, label)}/part-{task:05d}-{uuid.uuid4().hex}.c000.snappy.parquet"
            sink = files.target.open(rel)
            try:
                encode(table, files, sink)
            except BaseException:
                sink.abort()
                raise
            message |= {"path": rel, "rows": table.num_rows, "bytes": sink.bytes, **sink.close()}
        yield message


def hilbert_order(table: pa.Table) -> np.ndarray:
    """The rows' order by Hilbert key, rows without one (no geometry extent) first, as Spark
    sorts nulls."""
    key = table.column("hilbert_key").combine_chunks()
    first = np.iinfo(np.int64).min  # keys are >= 0
    values = pc.fill_null(key, first).to_numpy(zero_copy_only=False)
    return np.argsort(values, kind="stable")


def coloured(table: pa.Table, files: Files) -> pa.Table:
    """The rows in the files' columns, pca_components made from each mean by the run's model
    (null without a valid pixel or without a model), in float32 as published."""
    mean = table.column("mean").combine_chunks()
    has = mean.is_valid().to_numpy(zero_copy_only=False)
    n = len(mean)
    if files.model is None or not has.any():
        colours = pa.nulls(n, pa.list_(pa.float32()))
    else:
        rgb = np.zeros((n, 3), np.float32)
        some = mean if has.all() else mean.filter(pa.array(has))  # no copy when all have one
        values = some.flatten().to_numpy().reshape(-1, len(files.model["center"]))
        rgb[has] = pca_model.apply(files.model, values).astype(np.float32)
        colours = pa.ListArray.from_arrays(
            pa.array(np.arange(n + 1, dtype=np.int32) * 3),
            pa.array(rgb.reshape(-1)),
            mask=pa.array(~has),
        )
    columns = {**dict(zip(table.column_names, table.columns)), COLOURS: colours}
    schema = files.schema
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def geometry_types(wkb: pa.Array) -> list[str]:
    """The distinct geometry types of WKB values, as GeoParquet names them ('Polygon Z')."""
    wkb = pc.drop_null(wkb.combine_chunks() if isinstance(wkb, pa.ChunkedArray) else wkb)
    if not len(wkb):
        return []
    _, offsets, data = wkb.buffers()
    start = np.frombuffer(offsets, np.int32)[wkb.offset : wkb.offset + len(wkb)]
    data = np.frombuffer(data, np.uint8)
    head = data[start[:, None] + np.arange(5)].astype(np.uint32)
    little = head[:, 0] == 1
    code = np.where(
        little,
        head[:, 1] | head[:, 2] << 8 | head[:, 3] << 16 | head[:, 4] << 24,
        head[:, 4] | head[:, 3] << 8 | head[:, 2] << 16 | head[:, 1] << 24,
    )
    names = set()
    for c in np.unique(code):
        # ISO WKB adds 1000 for Z (2000 M, 3000 ZM); EWKB sets the high bits
        iso, flags = int(c) & 0x0FFFFFFF, int(c) & 0xF0000000
        base, dims = iso % 1000, iso // 1000
        z = dims in (1, 3) or bool(flags & 0x80000000)
        m = dims in (2, 3) or bool(flags & 0x40000000)
        names.add(
            _TYPES[base]
            + {(True, True): " ZM", (True, False): " Z", (False, True): " M"}.get((z, m), "")
        )
    return sorted(names)


def geo_metadata(table: pa.Table, crs: dict) -> dict:
    """The file's GeoParquet metadata: WKB geometry of these types, their extent (none where
    every geometry is empty), the store's CRS, the bbox column as its covering."""
    box = table.column("bbox").combine_chunks()
    column = {"encoding": "WKB", "geometry_types": geometry_types(table.column("geometry"))}
    lo = [pc.min(box.field(k)).as_py() for k in ("xmin", "ymin")]
    hi = [pc.max(box.field(k)).as_py() for k in ("xmax", "ymax")]
    if all(v is not None and np.isfinite(v) for v in (*lo, *hi)):
        column["bbox"] = [*lo, *hi]
    column |= {"crs": crs, "covering": COVERING}
    return {"version": GEOPARQUET, "primary_column": "geometry", "columns": {"geometry": column}}


def encode(table: pa.Table, files: Files, sink) -> None:
    """The file: snappy, no dictionaries (most values are 64-number arrays of distinct doubles),
    timestamps as Spark writes them, the geo and Spark schema metadata."""
    meta = {
        "geo": json.dumps(geo_metadata(table, files.crs), separators=(",", ":")),
        "org.apache.spark.sql.parquet.row.metadata": files.spark_schema,
    }
    with pq.ParquetWriter(
        sink,
        table.schema,
        compression="snappy",
        use_dictionary=False,
        store_schema=False,
        use_deprecated_int96_timestamps=files.timestamps_int96,
    ) as w:
        w.write_table(table, row_group_size=max(table.num_rows, 1))
        w.add_key_value_metadata(meta)
