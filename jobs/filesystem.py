"""Files and folders on a local disk, HDFS, S3 or any Hadoop filesystem: the fields read, the
output written.

Where Spark runs, every operation goes through Hadoop's FileSystem API in the session's JVM: the
filesystem, settings and credentials the executors use. Where no Spark runs (`aef-zonal plot`, the
checks of `aef-zonal sql`), pyarrow's filesystems read the output with the same `fs.s3a.*` settings.

URLs: a plain path is local; `s3://` and `s3a://` both mean Hadoop's S3A connector, unless the
cluster maps `s3://` to a filesystem of its own (EMR's `fs.s3.impl`); any other Hadoop URL
(`hdfs://`, `gs://`, `abfss://`, `file:`) is used as the cluster has it.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from urllib.parse import urlsplit

from aef_zonal.redaction import redact

S3A = "org.apache.hadoop.fs.s3a.S3AFileSystem"
LOCAL = "org.apache.hadoop.fs.LocalFileSystem"


class StorageError(ValueError):
    """A URL cannot be read or written; the message names it, the cause and the fix."""


def is_url(path: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", str(path))) or str(path).startswith(
        "file:"
    )


def local_path(url: str) -> str | None:
    """The path on this machine of a plain path or `file:` URL; None for another filesystem."""
    if is_url(url) and not str(url).startswith("file:"):
        return None
    return urlsplit(str(url)).path if str(url).startswith("file:") else str(url)


def local_rows(path: str) -> int | None:
    """Rows of a local Parquet file or folder, from its footers alone; None for another
    filesystem or what pyarrow cannot read (the fields stage then says what is wrong)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    local = local_path(path)
    if local is None:
        return None
    try:
        return ds.dataset(local, format="parquet").count_rows()
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


_NO_BUCKET = "the bucket does not exist; create it or fix the URL"
_NO_KEYS = (
    "no credentials: set fs.s3a.access.key and fs.s3a.secret.key in [spark.conf] (as "
    "spark.hadoop.*) or the AWS_* variables"
)
HINTS = {  # words in an error (a Java exception chain, S3's answer to the writer) -> what to do
    "UnsupportedFileSystemException": "no filesystem is installed for this scheme (S3A: run `make "
    "setup` for .cache/jars/s3a; on a cluster pass hadoop-aws, "
    "see docs/deploy.md)",
    "UnknownStoreException": _NO_BUCKET,
    "NoSuchBucket": _NO_BUCKET,
    "No AWS credentials": _NO_KEYS,
    "NoCredentialsError": _NO_KEYS,
    "AccessDenied": "the credentials may not do this: check the keys and the bucket's policy",
}


def hinted(text: str) -> str:
    """An error's text, with what to do for the usual ones."""
    hint = next((h for word, h in HINTS.items() if word in text), None)
    return text + (f" ({hint})" if hint else "")


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
        return self.read_bytes(url).decode("utf-8")

    def read_bytes(self, url: str) -> bytes:
        with self._errors(url, "read"):
            fs, path = self._fs(url)
            stream = fs.open(path)
            try:
                return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
            finally:
                stream.close()

    def size(self, url: str) -> int:
        with self._errors(url, "read"):
            fs, path = self._fs(url)
            return int(fs.getFileStatus(path).getLen())

    def read_range(self, url: str, offset: int, length: int) -> bytes:
        """`length` bytes of a file from `offset` (the range within the file): one ranged read."""
        with self._errors(url, "read"):
            fs, path = self._fs(url)
            stream = fs.open(path)
            try:
                stream.seek(offset)
                return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream, length))
            finally:
                stream.close()

    def write_text(self, url: str, text: str) -> None:
        self.write_bytes(url, text.encode())

    def write_bytes(self, url: str, data: bytes) -> None:
        with self._errors(url, "write"):
            fs, path = self._fs(url)
            stream = fs.create(path, True)
            try:
                stream.write(bytearray(data))
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

    def shown(self, url: str) -> str:
        """`url` with its secrets masked."""
        return redact(str(url), self.secrets)

    def local_path(self, url: str) -> str:
        """The absolute path on this machine of a local URL or path."""
        fs, path = self._fs(url)
        return fs.makeQualified(path).toUri().getPath()

    def s3_key(self, url: str) -> str:
        """The object key (prefix) of an S3 URL, without slashes around it."""
        return urlsplit(str(url)).path.strip("/")

    def s3_bucket(self, url: str):
        """How the Python workers reach the bucket of an S3A URL (udfs/s3.py), as S3A is set up
        for it (fs.s3a.bucket.NAME.* over fs.s3a.*): its endpoint, region and path style; its
        keys where given (also from Hadoop's credential providers), anonymous where S3A is, else
        AWS's default chain (environment, profile, instance or container role)."""
        from aef_zonal.udfs.s3 import Bucket

        bucket = urlsplit(str(url)).netloc
        jvm = self._jvm
        conf = jvm.org.apache.hadoop.fs.s3a.S3AUtils.propagateBucketOptions(self._conf, bucket)

        def secret(key: str):
            value = conf.getPassword(f"fs.s3a.{key}")
            return "".join(value) if value else None

        endpoint = conf.get("fs.s3a.endpoint") or None
        if endpoint and "://" not in endpoint:
            ssl = conf.get("fs.s3a.connection.ssl.enabled", "true") == "true"
            endpoint = ("https://" if ssl else "http://") + endpoint
        access = secret("access.key")
        return Bucket(
            bucket,
            endpoint=endpoint,
            region=conf.get("fs.s3a.endpoint.region") or None,
            path_style=conf.get("fs.s3a.path.style.access", "false") == "true",
            anonymous="Anonymous" in (conf.get("fs.s3a.aws.credentials.provider") or ""),
            keys=(access, secret("secret.key"), secret("session.token")) if access else None,
        )

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
