"""How a run commits its output, per filesystem (`commit_for`):
- atomic renames (local, HDFS): the run is written into a hidden sibling folder, then renamed into
  place -- the whole output at once, or (`--mode add`) each replaced partition folder at once.
- object stores (S3A and the rest): renaming is a copy of every byte, so the run is written in place
  by the committer bound to the URL's scheme (on S3A the magic committer: every file is a pending
  multipart upload until the job commits, then completed; `_SUCCESS` names the committer; other
  stores: what the cluster configured, e.g. EMRFS's S3-optimized committer). For
  `--mode add` and `overwrite` the files the run replaces are deleted after its own are committed.
  Not atomic on S3: during the job commit readers may see some of the new files, and between the
  commit and the deletes a replaced partition holds its old and its new files; a run killed before
  its job commit leaves no visible data file, only the committer's `__magic_job-*` folder (ignored
  by readers: it starts with `_`) and pending uploads, removed by the next run into that output.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager

from aef_zonal import dataset
from aef_zonal.filesystem import Hadoop, StorageError, join, name

# filesystems whose directory rename is atomic: the rename commit stays
RENAME_SCHEMES = ("file", "hdfs", "viewfs")
# left in an output by a run killed before it committed (S3A's magic committer, FileOutputCommitter)
LEFTOVERS = ("__magic", "_temporary")
# S3A writes: Spark's protocol that asks the scheme's committer factory (S3A's committers)
S3A_SQL_CONF = {
    "spark.sql.sources.commitProtocolClass": "org.apache.spark.internal.io.cloud.PathOutputCommitProtocol",
    "spark.sql.parquet.output.committer.class": "org.apache.spark.internal.io.cloud.BindingParquetOutputCommitter",
}
MAGIC = {"fs.s3a.committer.name": "magic", "fs.s3a.committer.magic.enabled": "true"}


def _partitions(files: list[str], covered: set[tuple[str, str]]) -> set[str]:
    """The partition folders among `files` (paths relative to the output) of `covered`'s
    (time, label) values."""
    folders = {dataset.data_partition(f) for f in files} - {None}
    return {p for p in folders if dataset.partition_values(p) in covered}


def commit_for(fs: Hadoop, out: str):
    """The commit strategy for `out`'s filesystem."""
    kind = fs.scheme_of(out)
    return RenameCommit(fs, out) if kind in RENAME_SCHEMES else InPlaceCommit(fs, out, kind)


class RenameCommit:
    """Write into a hidden sibling folder, then rename it (or its partition folders) into place."""

    def __init__(self, fs: Hadoop, out: str):
        self.fs, self.out = fs, str(out)
        self.parent = fs.parent(self.out)
        self.prefix = f".{name(self.out)}."
        self.staging = None

    def begin(self) -> str:
        """Remove what interrupted runs left; returns the folder to write into."""
        self.fs.mkdirs(self.parent)
        for old in self.fs.list(self.parent):
            if old.startswith((self.prefix + "staging-", self.prefix + "old-")):
                print(
                    f"[aef-zonal] removing {join(self.parent, old)}, left by an interrupted run",
                    flush=True,
                )
                self.fs.delete(join(self.parent, old))
        self.staging = join(self.parent, f"{self.prefix}staging-{uuid.uuid4().hex[:8]}")
        return self.staging

    @contextmanager
    def writing(self, spark):
        yield {}

    def data(self) -> tuple[str, list[str]]:
        """(base folder, its files) of what this run wrote."""
        return self.staging, [
            join(self.staging, f) for f in self.fs.files(self.staging) if dataset.data_partition(f)
        ]

    def small_file(self, rel: str) -> str:
        return join(self.staging, rel)

    def _swap(self, new: str, dest: str):
        if self.fs.exists(dest):
            old = join(self.fs.parent(dest), f".{name(dest)}.old-{uuid.uuid4().hex[:8]}")
            self.fs.rename(dest, old)
            self.fs.rename(new, dest)
            self.fs.delete(old)
        else:
            self.fs.rename(new, dest)

    def commit(self, add: bool, covered: set[tuple[str, str]] = frozenset()):
        """Move the staged run into place: whole, or (add) partition by partition plus its reports;
        `covered`: the (time, label) partitions of the run's field-years, whose old files go
        even where it wrote no row (every field-year there without a valid pixel)."""
        if not add or not self.fs.exists(self.out):
            self._swap(self.staging, self.out)
            return
        emptied = _partitions(self.fs.files(self.out), covered)
        staged = {dataset.data_partition(f) for f in self.fs.files(self.staging)} - {None}
        for part in sorted(staged):
            self.fs.mkdirs(join(self.out, part.split("/")[0]))
            self._swap(join(self.staging, part), join(self.out, part))
        for part in sorted(emptied - staged):
            self.fs.delete(join(self.out, part))
        for rel in self.fs.files(self.staging):  # the reports, the model, the field-years listed
            small = rel.endswith(".json") or rel == dataset.WITHOUT_PIXELS_FILE
            if small and not name(rel).startswith("."):
                self.fs.write_bytes(
                    join(self.out, rel), self.fs.read_bytes(join(self.staging, rel))
                )
        self.fs.delete(self.staging)

    def abort(self):
        if self.staging:
            self.fs.delete(self.staging)


class InPlaceCommit:
    """Write into `out` with the scheme's committer; delete the replaced files once committed."""

    def __init__(self, fs: Hadoop, out: str, kind: str):
        self.fs, self.out, self.kind = fs, str(out).rstrip("/"), kind
        self.before: list[str] = []
        self.new: list[str] | None = None
        self.existed = False

    def begin(self) -> str:
        """Remove what killed runs left (committer folders, pending uploads); note what is there."""
        for old in self.fs.list(self.out):
            if old.startswith(LEFTOVERS):
                print(
                    f"[aef-zonal] removing {join(self.out, old)}, left by an interrupted run",
                    flush=True,
                )
                self.fs.delete(join(self.out, old))
        aborted = self.fs.abort_uploads(self.out)
        if aborted:
            print(
                f"[aef-zonal] aborted {aborted} pending upload(s) of an interrupted run", flush=True
            )
        self.before = self.fs.files(self.out)
        self.existed = bool(self.before)
        return self.out

    @contextmanager
    def writing(self, spark):
        """S3A: the magic committer around the write; yields the write options. Other object
        stores keep the protocol the cluster configured (EMRFS's S3-optimized committer on
        EMR's s3://, or the manifest committer where bound for gs:// and abfs://)."""
        if self.kind != "s3a":
            yield {}
            return
        saved = {k: spark.conf.get(k, None) for k in S3A_SQL_CONF}
        for k, v in S3A_SQL_CONF.items():
            spark.conf.set(k, v)
        try:
            yield dict(MAGIC)
        finally:
            for k, v in saved.items():
                if v is None:
                    spark.conf.unset(k)
                else:
                    spark.conf.set(k, v)

    def data(self) -> tuple[str, list[str]]:
        before = set(self.before)
        self.new = [
            f for f in self.fs.files(self.out) if dataset.data_partition(f) and f not in before
        ]
        return self.out, [join(self.out, f) for f in self.new]

    def small_file(self, rel: str) -> str:
        return join(self.out, rel)

    def commit(self, add: bool, covered: set[tuple[str, str]] = frozenset()):
        """Delete what this run replaces: (add) the old files of the partitions it wrote or
        covers (`covered`, as RenameCommit's), else every old file that this run did not write
        anew."""
        written = {dataset.data_partition(f) for f in self.new or []}
        written |= _partitions(self.before, covered)
        for rel in self.before:
            if (dataset.data_partition(rel) in written) if add else rel not in dataset.REWRITTEN:
                self.fs.delete(join(self.out, rel))

    def abort(self):
        """Take back what the run made visible: its data files (the committer aborted the rest)."""
        try:
            if not self.existed:
                self.fs.delete(self.out)
            for rel in self.new or []:
                self.fs.delete(join(self.out, rel))
        except StorageError as e:  # the run's own error says more
            print(f"[aef-zonal] could not clean up after the failed run: {e}", flush=True)
