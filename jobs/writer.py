"""Writing the dataset: GeoParquet partitions, the PCA model and the run report, then committed.

The files are written by the Python workers with pyarrow (udfs/parquet.py) where they can write
--out: into the staging folder on a local disk, or as S3 multipart uploads through S3A's
settings; elsewhere (HDFS, other object stores, or [job] writer = "sedona") by Sedona's
GeoParquet writer through Hadoop. Each task writes its files and returns a commit message per
file; the driver collects them and commits or takes back exactly those (Spark 4's Python data
source writer works the same way, but commits in a separate Python process fed by string
options, and Spark 3.5 has none).

Every other file operation goes through jobs/filesystem.py, and jobs/commit.py's strategy fits
--out's filesystem: a rename of a hidden staging folder where renames are atomic (local, HDFS),
uploads left pending until the commit (S3), the scheme's output committer elsewhere. Either way
no reader sees a data file of a run before the run commits, and `_SUCCESS` marks a committed run.
"""

from __future__ import annotations

import json

import pyarrow as pa
from pyspark.sql.pandas.types import from_arrow_schema

from aef_zonal import commit, config, dataset, filesystem, redaction
from aef_zonal.session import cancelled_on
from aef_zonal.udfs import parquet
from aef_zonal.udfs import spark as executor

MODES = ("error", "overwrite", "add")
WRITERS = ("auto", "sedona")


class Output:
    """One run's output at `out`: check, write, commit (or abort)."""

    def __init__(
        self, spark, out: str, mode: str, secrets: list[str] = (), settings: dict | None = None
    ):
        self.spark, self.out, self.mode = spark, str(out), mode
        self.fs = filesystem.Hadoop(spark, secrets)
        self.shown = redaction.redact(self.out, self.fs.secrets)
        self.writer = (settings or config.load())["job"]["writer"]
        if self.writer not in WRITERS:
            raise dataset.OutputError(
                f"[job] writer = {self.writer!r}: choose among {list(WRITERS)} (conf/defaults.toml)"
            )
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

    def write(self, packed, pieced: bool, files: parquet.Files, frame, inline: bool):
        """The partitions, sorted by Hilbert key within each file: `packed`, the rows packed per
        (time, label) (udfs/rows.py), written by the Python workers into `files` (its target
        set here), or `frame()`, the rows as a DataFrame, by Sedona's writer; the field-years
        without a valid pixel among them too if `inline`. `pieced`: `packed` holds a file's
        rows in each partition already; else it is rebalanced rather than repartitioned: one
        task per (time, label) would cap the write at as many tasks as partitions; adaptive
        execution splits a large one into ~64 MB pieces. Returns the rows
        written per (time, label) and the field-years without a valid pixel (an Arrow table of
        dataset.WITHOUT_PIXELS_COLUMNS)."""
        self.strategy = commit.commit_for(self.fs, self.out)
        self._target = self.strategy.begin()
        place = self.strategy.python_target() if self.writer == "auto" else None
        if place is None:
            return self._sedona(frame(), files, inline)
        files = files.to(place, timestamps_int96=self._int96(), inline=inline)
        messages = self._python(packed if pieced else rebalance(packed, "time", "label"), files)
        self.strategy.written([m for m in messages if m["path"] is not None])
        written = {}
        for m in messages:
            written[(m["time"], m["label"])] = written.get((m["time"], m["label"]), 0) + m["rows"]
        return written, without_pixels(messages)

    def _int96(self) -> bool:
        """Whether timestamps are written as INT96, as Spark writes them by default."""
        key = "spark.sql.parquet.outputTimestampType"
        return self.spark.conf.get(key, "INT96").upper() == "INT96"

    def _python(self, packed, files: parquet.Files) -> list[dict]:
        """Each task's files, written by udfs/parquet.py; their commit messages. A file that
        cannot be written fails the run with the store's answer (the workers hand it over as a
        value, and the job stops at the first)."""
        sc = self.spark.sparkContext
        errors = sc.accumulator([], executor.Messages())
        body = executor.write_partitions(files, errors)
        with cancelled_on(sc, lambda: errors.value), filesystem.failing(self.out, self.fs.secrets):
            try:
                messages = packed.mapInArrow(body, from_arrow_schema(parquet.MESSAGES)).collect()
            except Exception:
                if not errors.value:
                    raise
        if errors.value:
            first = sorted(set(errors.value))
            more = f" (and {len(first) - 1} other error(s))" if len(first) > 1 else ""
            raise filesystem.StorageError(
                f"writing {self.shown} failed: "
                f"{filesystem.hinted(redaction.redact(first[0], self.fs.secrets))}{more}"
            )
        return [m.asDict() for m in messages]

    def _sedona(self, df, files: parquet.Files, inline: bool):
        without = df.where("reason IS NOT NULL").select(*dataset.WITHOUT_PIXELS_COLUMNS)
        listed = pa.Table.from_pandas(
            without.toPandas(), schema=dataset.without_pixels_schema(), preserve_index=False
        )
        self.write_frame(df if inline else df.where("reason IS NULL"), json.dumps(files.crs))
        written = self.written()
        written = [] if written is None else written.groupBy("time", "label").count().collect()
        return {(r.time, r.label): r["count"] for r in written}, listed

    def write_frame(self, df, crs_projjson: str):
        """Rows of a DataFrame with the output's partition columns, written by Sedona's writer
        (the answers' datasets; the job's rows where the Python workers cannot write)."""
        if self.strategy is None:
            self.strategy = commit.commit_for(self.fs, self.out)
            self._target = self.strategy.begin()
        with (
            self.strategy.writing(self.spark) as options,
            filesystem.failing(self.out, self.fs.secrets),
        ):
            geoparquet(
                rebalance(df, "time", "label")
                .sortWithinPartitions("time", "label", "hilbert_key")
                .write.options(**options),
                crs_projjson,
            ).mode("append").save(self._target)
        self._data = self.strategy.data()

    def written(self):
        """What this run wrote, as a DataFrame with its partition columns; None when it wrote no
        row."""
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


def without_pixels(messages: list[dict]) -> pa.Table:
    """The field-years without a valid pixel the writer's tasks report, as listed."""
    ids = [i for m in messages for i in m["without_ids"]]
    return pa.Table.from_pydict(
        {
            "feature_id": ids,
            "time": [m["time"] for m in messages for _ in m["without_ids"]],
            "label": [m["label"] for m in messages for _ in m["without_ids"]],
            "reason": [r for m in messages for r in m["without_reasons"]],
        },
        schema=dataset.without_pixels_schema(),
    )


def rebalance(df, *columns: str):
    """df with the REBALANCE hint on `columns`, given in SQL: PySpark 3.5's DataFrame.hint takes
    no Column arguments (and a string there is a literal, not a column)."""
    df.createOrReplaceTempView("aef_zonal_rows")
    return df.sparkSession.sql(
        f"SELECT /*+ REBALANCE({', '.join(columns)}) */ * FROM aef_zonal_rows"
    )


def geoparquet(writer, crs_projjson: str):
    """Sedona's GeoParquet writer as udfs/parquet.py writes the dataset: GeoParquet 1.1 with a
    bbox covering, the store's CRS, partitioned by time and label."""
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
