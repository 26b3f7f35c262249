"""Storage: the fields read and the output written on a local disk, HDFS, S3 or any Hadoop filesystem.

Where Spark runs, every operation goes through Hadoop's FileSystem API in the session's JVM: the
filesystem, settings and credentials the executors use. Where no Spark runs (`aef-zonal plot`, the
checks of `aef-zonal sql`), pyarrow's filesystems read the output with the same `fs.s3a.*` settings.

URLs: a plain path is local; `s3://` and `s3a://` both mean Hadoop's S3A connector, unless the
cluster maps `s3://` to a filesystem of its own (EMR's `fs.s3.impl`); any other Hadoop URL
(`hdfs://`, `gs://`, `abfss://`, `file:`) is used as the cluster has it.

How a run commits, per filesystem (`commit_for`):
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

import os
import re
import uuid
from contextlib import contextmanager
from urllib.parse import urlsplit

from aef_zonal import dataset

S3A = "org.apache.hadoop.fs.s3a.S3AFileSystem"
LOCAL = "org.apache.hadoop.fs.LocalFileSystem"
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

SECRET_KEY = re.compile(
    r"secret|password|passwd|token|access\.key|credential|signature|sas", re.IGNORECASE
)
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# user:password@ (a secret key may hold "/") or user@ right after the scheme
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?:[^@\s/:]+:[^@\s]*|[^@\s/:]+)@")
_KEY_VALUE = re.compile(
    r"(?P<key>[\w.-]*(?:secret|password|passwd|token|access\.key|credential)"
    r"[\w.-]*)(?P<sep>\"?\s*=\s*)(?P<value>\"[^\"]*\"|\S+)",
    re.IGNORECASE,
)


class StorageError(ValueError):
    """A URL cannot be read or written; the message names it, the cause and the fix."""


def secret_values(settings: dict | None = None) -> list[str]:
    """The values no record may show: credentials in the environment and in the settings."""
    values = [os.environ[k] for k in SECRET_ENV if os.environ.get(k)]
    for key, value in ((settings or {}).get("spark", {}).get("conf", {})).items():
        if SECRET_KEY.search(key) and str(value):
            values.append(str(value))
    return sorted(set(values), key=len, reverse=True)


def redact(text: str, secrets: list[str] = ()) -> str:
    """`text` with URL user-info, `key=value` credentials and the known secret values masked."""
    for s in secrets:
        if len(s) >= 4:  # shorter ones would mask ordinary words
            text = text.replace(s, "***")
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    return _KEY_VALUE.sub(lambda m: f"{m['key']}{m['sep']}***", text)


def is_url(path: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", str(path))) or str(path).startswith(
        "file:"
    )


def local_rows(path: str) -> int | None:
    """Rows of a local Parquet file or folder, from its footers alone; None for another
    filesystem or what pyarrow cannot read (the fields stage then says what is wrong)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    if is_url(path) and not str(path).startswith("file:"):
        return None
    try:
        return ds.dataset(urlsplit(str(path)).path, format="parquet").count_rows()
    except (OSError, ValueError, pa.ArrowException):
        return None


def is_s3(url: str) -> bool:
    """Whether `url` is an S3 URL (Hadoop's S3A connector reads and writes it)."""
    return urlsplit(str(url)).scheme in ("s3", "s3a")


def name(url: str) -> str:
    return str(url).rstrip("/").rsplit("/", 1)[-1]


def join(url: str, *parts: str) -> str:
    return "/".join([str(url).rstrip("/"), *parts])


def configure(spark, settings: dict) -> None:
    """The session's Hadoop settings: `spark.hadoop.*` of the settings' [spark.conf] (where
    spark-submit or the running session did not set them), and `s3://` bound to S3A and its
    committers unless the cluster maps `s3://` itself."""
    sc = spark.sparkContext
    conf = sc._jsc.hadoopConfiguration()
    given = sc.getConf()
    for key, value in settings["spark"].get("conf", {}).items():
        # a session that already ran (notebook, tests) reads spark.hadoop.* only at its start
        if key.startswith("spark.hadoop.") and not given.contains(key):
            conf.set(key[len("spark.hadoop.") :], str(value))
    if conf.get("fs.s3.impl") is None:
        conf.set("fs.s3.impl", S3A)
        conf.set("fs.AbstractFileSystem.s3.impl", "org.apache.hadoop.fs.s3a.S3A")
        conf.set(
            "mapreduce.outputcommitter.factory.scheme.s3",
            conf.get("mapreduce.outputcommitter.factory.scheme.s3a"),
        )


@contextmanager
def failing(url: str, secrets: list[str] = ()):
    """A failed Spark write as a StorageError naming the object and the store's answer."""
    from py4j.protocol import Py4JJavaError

    try:
        yield
    except Py4JJavaError as e:
        raise StorageError(
            f"writing {redact(url, secrets)} failed: {cause(e.java_exception, secrets)}"
        ) from None


HINTS = {  # words in a Java exception chain -> what to do
    "UnsupportedFileSystemException": "no filesystem is installed for this scheme (S3A: run `make "
    "setup` for .cache/jars/s3a; on a cluster pass hadoop-aws, "
    "see docs/deploy.md)",
    "UnknownStoreException": "the bucket does not exist; create it or fix the URL",
    "No AWS credentials": "no credentials: set fs.s3a.access.key and fs.s3a.secret.key in "
    "[spark.conf] (as spark.hadoop.*) or the AWS_* variables",
    "AccessDeniedException": "the credentials may not do this: check the keys and the bucket's "
    "policy",
}


def cause(error, secrets: list[str] = ()) -> str:
    """A Java exception chain in one line: the innermost exception that names an object (S3A's
    `… on s3a://bucket/key: …`), then the root cause, and what to do for the usual ones."""
    chain, messages = [], []
    while error is not None and len(chain) < 20:
        message = (error.getMessage() or "").strip()
        messages.append(message.splitlines()[0][:400] if message else "")
        chain.append(f"{error.getClass().getSimpleName()}: {messages[-1]}")
        error = error.getCause()
    # S3A's messages name the object: `<operation> on <key or URL>: <the store's answer>`
    named = [c for c in chain if "://" in c or " on " in c]
    shown = [named[-1]] if named else []
    if not shown or messages[-1] not in shown[0]:
        shown.append(chain[-1])
    text = " <- ".join(shown)
    hint = next((h for word, h in HINTS.items() if any(word in c for c in chain)), None)
    return redact(text, secrets) + (f" ({hint})" if hint else "")


class Hadoop:
    """Files and folders through Hadoop's FileSystem API in the driver's JVM."""

    def __init__(self, spark, secrets: list[str] = ()):
        self.spark = spark
        self._jvm = spark._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()
        self.secrets = list(secrets)

    @contextmanager
    def _errors(self, url: str, action: str):
        from py4j.protocol import Py4JJavaError

        try:
            yield
        except Py4JJavaError as e:
            raise StorageError(
                f"cannot {action} {redact(str(url), self.secrets)}: "
                f"{cause(e.java_exception, self.secrets)}"
            ) from None

    def _fs(self, url: str):
        path = self._jvm.org.apache.hadoop.fs.Path(str(url))
        fs = path.getFileSystem(self._conf)
        # local files without Hadoop's .crc companions (Spark's part files keep theirs)
        return (fs.getRaw() if fs.getClass().getName() == LOCAL else fs), path

    def scheme_of(self, url: str) -> str:
        """The filesystem's own scheme: `s3` mapped to S3A is `s3a`; EMR's `s3` is `s3`."""
        with self._errors(url, "open"):
            fs, _ = self._fs(url)
            return "s3a" if fs.getClass().getName() == S3A else fs.getScheme()

    def exists(self, url: str) -> bool:
        with self._errors(url, "check"):
            fs, path = self._fs(url)
            return bool(fs.exists(path))

    def is_dir(self, url: str) -> bool:
        with self._errors(url, "check"):
            fs, path = self._fs(url)
            return bool(fs.exists(path) and fs.getFileStatus(path).isDirectory())

    def read_text(self, url: str) -> str:
        with self._errors(url, "read"):
            fs, path = self._fs(url)
            stream = fs.open(path)
            try:
                return self._jvm.org.apache.commons.io.IOUtils.toString(
                    stream, self._jvm.java.nio.charset.StandardCharsets.UTF_8
                )
            finally:
                stream.close()

    def write_text(self, url: str, text: str) -> None:
        with self._errors(url, "write"):
            fs, path = self._fs(url)
            stream = fs.create(path, True)
            try:
                stream.write(bytearray(text.encode()))
            finally:
                stream.close()

    def list(self, url: str) -> list[str]:
        """The names in folder `url` ([] if it does not exist)."""
        with self._errors(url, "list"):
            fs, path = self._fs(url)
            if not fs.exists(path):
                return []
            return sorted(s.getPath().getName() for s in fs.listStatus(path))

    def files(self, url: str) -> list[str]:
        """Every file under `url`, as paths relative to it ([] if it does not exist)."""
        with self._errors(url, "list"):
            fs, path = self._fs(url)
            if not fs.exists(path):
                return []
            root = fs.makeQualified(path).toString().rstrip("/") + "/"
            found, it = [], fs.listFiles(path, True)
            while it.hasNext():
                found.append(it.next().getPath().toString()[len(root) :])
            return sorted(found)

    def delete(self, url: str) -> None:
        with self._errors(url, "delete"):
            fs, path = self._fs(url)
            fs.delete(path, True)

    def mkdirs(self, url: str) -> None:
        with self._errors(url, "create"):
            fs, path = self._fs(url)
            fs.mkdirs(path)

    def rename(self, src: str, dst: str) -> None:
        with self._errors(src, f"rename to {dst}:"):
            fs, path = self._fs(src)
            if not fs.rename(path, self._fs(dst)[1]):
                raise StorageError(f"cannot rename {src} to {dst}")

    def parent(self, url: str) -> str:
        parent = self._jvm.org.apache.hadoop.fs.Path(str(url)).getParent().toString()
        return parent or "."  # a bare name: a folder in the working directory

    def abort_uploads(self, url: str) -> int:
        """Abort the pending multipart uploads under `url` (S3A only): what a killed writer left."""
        with self._errors(url, "abort the pending uploads under"):
            fs, path = self._fs(url)
            if fs.getClass().getName() != S3A:
                return 0
            key = fs.pathToKey(fs.makeQualified(path))
            return fs.createWriteOperationHelper(
                fs.getAuditSpanSource().getActiveAuditSpan()
            ).abortMultipartUploadsUnderPath(key.rstrip("/") + "/")


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

    def commit(self, add: bool):
        """Move the staged run into place: whole, or (add) partition by partition plus its reports."""
        if not add or not self.fs.exists(self.out):
            self._swap(self.staging, self.out)
            return
        for part in sorted(
            {dataset.data_partition(f) for f in self.fs.files(self.staging)} - {None}
        ):
            self.fs.mkdirs(join(self.out, part.split("/")[0]))
            self._swap(join(self.staging, part), join(self.out, part))
        for rel in self.fs.files(self.staging):  # _run.json, _runs/*.json, _pca_model.json
            if rel.endswith(".json") and not name(rel).startswith("."):
                self.fs.write_text(join(self.out, rel), self.fs.read_text(join(self.staging, rel)))
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

    def commit(self, add: bool):
        """Delete what this run replaces: (add) the old files of the partitions it wrote, else
        every old file that this run did not write anew."""
        written = {dataset.data_partition(f) for f in self.new or []}
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


def arrow_fs(url: str, settings: dict | None = None):
    """(pyarrow filesystem, path) for `url` without Spark; S3 takes the `spark.hadoop.fs.s3a.*`
    settings (endpoint, region, keys, path style, anonymous) and otherwise AWS's own chain."""
    import pyarrow.fs as pafs

    if not is_url(url):
        return pafs.LocalFileSystem(), os.path.abspath(url)
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("s3", "s3a"):
        return pafs.FileSystem.from_uri(url)
    conf = {
        k[len("spark.hadoop.") :]: str(v)
        for k, v in ((settings or {}).get("spark", {}).get("conf", {})).items()
        if k.startswith("spark.hadoop.")
    }
    kw = {}
    endpoint = conf.get("fs.s3a.endpoint")
    if endpoint:
        ep = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
        kw["endpoint_override"] = ep.netloc
        kw["scheme"] = ep.scheme
    if conf.get("fs.s3a.endpoint.region"):
        kw["region"] = conf["fs.s3a.endpoint.region"]
    if "Anonymous" in conf.get("fs.s3a.aws.credentials.provider", ""):
        kw["anonymous"] = True
    elif conf.get("fs.s3a.access.key"):
        kw.update(
            access_key=conf["fs.s3a.access.key"],
            secret_key=conf.get("fs.s3a.secret.key"),
            session_token=conf.get("fs.s3a.session.token"),
        )
    kw["force_virtual_addressing"] = (
        conf.get("fs.s3a.path.style.access", "false") != "true" and not endpoint
    )
    return pafs.S3FileSystem(**kw), f"{parts.netloc}{parts.path}".rstrip("/")
