"""Writing the dataset: GeoParquet partitions, the PCA model and the run report, then committed.

Every file operation goes through jobs/filesystem.py, and jobs/commit.py's strategy fits --out's
filesystem: a rename of a hidden staging folder where renames are atomic (local, HDFS), the
scheme's output committer writing in place on object stores (S3's magic committer). Either way no reader sees a
data file of a run before the run commits, and `_SUCCESS` marks a committed run.
"""

from __future__ import annotations

import json
from pathlib import Path

from aef_zonal import commit, dataset, filesystem, redaction

MODES = ("error", "overwrite", "add")


class Output:
    """One run's output at `out`: check, write, commit (or abort)."""

    def __init__(self, spark, out: str, mode: str, secrets: list[str] = ()):
        self.spark, self.out, self.mode = spark, str(out), mode
        self.fs = filesystem.Hadoop(spark, secrets)
        self.shown = redaction.redact(self.out, self.fs.secrets)
        self.strategy = None

    def _present(self) -> bool:
        """Whether --out holds anything but what runs killed before their commit left."""
        return (
            any(not n.startswith(commit.LEFTOVERS) for n in self.fs.list(self.out))
            if self.fs.is_dir(self.out)
            else self.fs.exists(self.out)
        )

    def check(self, stats: list[str], pixels: str) -> dict | None:
        """Refuse what would lose or mix data; for --mode add, return the existing run report."""
        if not self._present():
            return None
        if self.mode == "error":
            raise dataset.exists(self.shown)
        if self.mode == "overwrite":
            return None
        report = filesystem.join(self.out, dataset.REPORT)
        if not self.fs.exists(report):
            raise dataset.OutputError(
                f"--mode add: {self.shown} is not an aef-zonal output (no _run.json); "
                "choose another --out"
            )
        previous = json.loads(self.fs.read_text(report))
        if (previous.get("stats"), previous.get("pixels")) != (stats, pixels):
            raise dataset.OutputError(
                f"--mode add: {self.shown} holds --stats "
                f"{','.join(previous.get('stats', []))} --pixels {previous.get('pixels')}; "
                "add partitions with the same options so that every partition has "
                "the same columns"
            )
        return previous

    def read_text(self, rel: str) -> str:
        return self.fs.read_text(filesystem.join(self.out, rel))

    def read_bytes(self, rel: str) -> bytes | None:
        """A small file of the output as it is (before this run commits), None if absent."""
        url = filesystem.join(self.out, rel)
        return self.fs.read_bytes(url) if self.fs.exists(url) else None

    def write(self, df, crs_projjson: str):
        """The partitions, sorted by Hilbert key within each file. Rebalanced rather than
        repartitioned: one task per (time, label) would cap the write at as many tasks as
        partitions; adaptive execution splits a large one into ~64 MB pieces."""
        self.strategy = commit.commit_for(self.fs, self.out)
        target = self.strategy.begin()
        with (
            self.strategy.writing(self.spark) as options,
            filesystem.failing(self.out, self.fs.secrets),
        ):
            geoparquet(
                rebalance(df, "time", "label")
                .sortWithinPartitions("time", "label", "hilbert_key")
                .write.options(**options),
                crs_projjson,
            ).mode("append").save(target)
        self._data = self.strategy.data()
        drop_void_bbox(
            [f for f in self._data[1] if not filesystem.is_url(f) or f.startswith("file:")]
        )

    def written(self):
        """What this run wrote, as a DataFrame with its partition columns; None when it wrote no
        row (every field-year without a valid pixel, listed beside the data)."""
        base, files = self._data
        return self.spark.read.option("basePath", base).parquet(*files) if files else None

    def save_text(self, rel: str, text: str):
        self.save_bytes(rel, text.encode())

    def save_bytes(self, rel: str, data: bytes):
        self.fs.write_bytes(self.strategy.small_file(rel), data)

    def commit(self, report: dict, covered: set[tuple[str, str]] = frozenset()):
        """_run.json (this run) and _runs/<time>.json (kept across --mode add runs), then the
        dataset committed: from here on readers see only this run's files where it wrote (and,
        with add, in the `covered` (time, label) partitions of its field-years)."""
        text = json.dumps(report, indent=2)
        self.save_text(dataset.archived_report(), text)
        self.save_text(dataset.REPORT, text)
        self.strategy.commit(add=self.mode == "add", covered=covered)

    def abort(self):
        if self.strategy is not None:
            self.strategy.abort()


def rebalance(df, *columns: str):
    """df with the REBALANCE hint on `columns`, given in SQL: PySpark 3.5's DataFrame.hint takes
    no Column arguments (and a string there is a literal, not a column)."""
    df.createOrReplaceTempView("aef_zonal_rows")
    return df.sparkSession.sql(
        f"SELECT /*+ REBALANCE({', '.join(columns)}) */ * FROM aef_zonal_rows"
    )


def geoparquet(writer, crs_projjson: str):
    """Sedona's GeoParquet writer as the dataset is written: GeoParquet 1.1 with a bbox covering,
    the store's CRS, partitioned by time and label."""
    return (
        writer.format("geoparquet")
        # most values are 64-number arrays of distinct doubles: a dictionary never pays, and
        # trying one took a third of the write
        .option("parquet.enable.dictionary", "false")
        .option("geoparquet.version", "1.1.0")
        .option("geoparquet.covering.geometry", "bbox")
        .option("geoparquet.crs", crs_projjson)
        .partitionBy("time", "label")
    )


def drop_void_bbox(files: list[str]):
    """Remove the file bbox Sedona writes as [0, 0, -1, -1] for a file whose geometries are all
    empty: no extent to state, and an inverted box fails GeoParquet's bbox rule (bbox is optional).
    Only such files (a partition of empty geometries) are rewritten; every other keeps its bytes.
    Files on a local disk only: on other filesystems such a file keeps Sedona's box."""
    import pyarrow.parquet as pq

    for url in files:
        f = url.removeprefix("file:")
        meta = pq.read_schema(f).metadata
        geo = json.loads(meta[b"geo"])
        col = geo["columns"][geo["primary_column"]]
        box = col.get("bbox")
        if box and (box[0] > box[2] or box[1] > box[3]):
            del col["bbox"]
            table = pq.read_table(f)
            pq.write_table(
                table.replace_schema_metadata({**meta, b"geo": json.dumps(geo).encode()}), f
            )
            crc = Path(f).with_name(f".{Path(f).name}.crc")  # Hadoop's checksum of the old bytes
            crc.unlink(missing_ok=True)
