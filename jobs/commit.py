"""How a run commits its output, per filesystem (`commit_for`):
- atomic renames (local, HDFS): the run is written into a hidden sibling folder, then renamed into
  place -- the whole output at once, or (`--mode add`) each replaced partition folder at once.
  Only the files the tasks reported are published: a failed or duplicate task attempt's file is
  removed from the folder first.
- object stores (S3A and the rest): renaming is a copy of every byte, so the run is written in
  place. On S3A every file is a multipart upload its task leaves pending (udfs/s3.py), invisible
  until the driver completes it when the run commits, as S3A's magic committer does (whose
  protocol `_SUCCESS` names); uploads no task reported are aborted. Where Sedona's writer writes
  (other stores, or [job] writer = "sedona"), the committer bound to the URL's scheme does (on S3A
  the magic committer itself; elsewhere what the cluster configured, e.g. EMRFS's S3-optimized
  committer). For `--mode add` and `overwrite` the files the run replaces are deleted after its
  own are committed. Not atomic on S3: during the commit readers may see some of the new files,
  and between the commit and the deletes a replaced partition holds its old and its new files; a
  run killed before its commit leaves no visible data file, only pending uploads (and the magic
  committer's `__magic_job-*` folder, ignored by readers: it starts with `_`), removed by the next
  run into that output.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from aef_zonal import dataset
from aef_zonal.filesystem import Hadoop, StorageError, hinted, join, name
from aef_zonal.udfs import parquet, s3

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
        self.files = None
        return self.staging

    def python_target(self):
        """Where the Python workers write: the staging folder, on a local disk only."""
        if self.fs.scheme_of(self.staging) != "file":
            return None
        return parquet.LocalTarget(self.fs.local_path(self.staging))

    def written(self, messages: list[dict]):
        """The files the tasks reported: any other data file in the folder is a failed or
        duplicate task attempt's, and goes."""
        self.files = {m["path"] for m in messages}
        for rel in self.fs.files(self.staging):
            if dataset.data_partition(rel) and rel not in self.files:
                self.fs.delete(join(self.staging, rel))

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
        if self.files is not None:  # Spark's committer writes it for Sedona's writer
            self.fs.write_text(join(self.staging, dataset.SUCCESS), "")
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
        self.uploads: list[dict] | None = None
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

    def python_target(self):
        """Where the Python workers write: S3 through S3A's settings, as pending uploads. The
        output's folder is made now, as S3A's committers make theirs: a reader pointed at it
        during the run sees an empty dataset rather than a missing path."""
        if self.kind != "s3a":
            return None
        target = s3.UploadTarget(self.fs.s3_bucket(self.out), self.fs.s3_key(self.out))
        try:
            target.folder()
        except s3.S3Error as e:
            raise StorageError(
                f"writing {self.fs.shown(self.out)} failed: {hinted(str(e))}"
            ) from None
        return target

    def written(self, messages: list[dict]):
        self.uploads = messages
        self.new = [m["path"] for m in messages]

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
        """(the output, this run's files): the committer made them visible."""
        before = set(self.before)
        self.new = [
            f for f in self.fs.files(self.out) if dataset.data_partition(f) and f not in before
        ]
        return self.out, [join(self.out, f) for f in self.new]

    def small_file(self, rel: str) -> str:
        return join(self.out, rel)

    def commit(self, add: bool, covered: set[tuple[str, str]] = frozenset()):
        """The run's uploads completed, then what it replaces deleted: (add) the old files of the
        partitions it wrote or covers (`covered`, as RenameCommit's), else every old file that
        this run did not write anew."""
        if self.uploads is not None:
            self._complete()
        written = {dataset.data_partition(f) for f in self.new or []}
        written |= _partitions(self.before, covered)
        for rel in self.before:
            if (dataset.data_partition(rel) in written) if add else rel not in dataset.REWRITTEN:
                self.fs.delete(join(self.out, rel))

    def _complete(self):
        """Complete the uploads the tasks reported, abort any other (a failed or duplicate task
        attempt's), then `_SUCCESS` in S3A's form, naming the protocol."""
        bucket, key = self.fs.s3_bucket(self.out), self.fs.s3_key(self.out)

        def one(m):
            s3.complete(
                bucket, join(key, m["path"]) if key else m["path"], m["upload_id"], m["etags"]
            )

        try:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(one, self.uploads))
        except s3.S3Error as e:
            raise StorageError(f"committing {self.out} failed: {e}") from None
        self.fs.abort_uploads(self.out)
        success = {
            "name": "org.apache.hadoop.fs.s3a.commit.files.SuccessData/1",
            "timestamp": int(time.time() * 1000),
            "date": time.strftime("%a %b %d %H:%M:%S %Z %Y"),
            "hostname": socket.gethostname(),
            "committer": "magic",
            "description": "aef-zonal: each file an S3 multipart upload its task left pending, "
            "completed at the job's commit (S3A's magic committer's protocol)",
            "jobId": uuid.uuid4().hex,
            "filenames": [f"/{join(key, p) if key else p}" for p in self.new[:100]],
            "success": True,
        }
        self.fs.write_text(join(self.out, dataset.SUCCESS), json.dumps(success, indent=2))

    def abort(self):
        """Take back what the run made visible: its data files (the uploads left pending, and
        the committer's, aborted)."""
        try:
            if self.uploads is not None:
                self.fs.abort_uploads(self.out)
            if not self.existed:
                self.fs.delete(self.out)
            for rel in self.new or []:
                self.fs.delete(join(self.out, rel))
        except StorageError as e:  # the run's own error says more
            print(f"[aef-zonal] could not clean up after the failed run: {e}", flush=True)
