"""S3 multipart uploads for the writer: each file a multipart upload that its task leaves
pending, completed by the driver when the run commits (S3A's magic committer's protocol).

Until then no reader sees anything: S3 shows an object only once its upload completes. A run
killed before its commit leaves pending uploads only, which the next run into that output
aborts (jobs/commit.py). The client reaches the bucket as S3A is configured to (jobs/filesystem.py
reads the settings: endpoint, region, path style, the bucket's keys, else AWS's default
credential chain) and retries throttling, 5xx and dropped connections (boto3's standard mode).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

PART = 16 << 20  # bytes per uploaded part (S3: at least 5 MiB but the last)


@dataclass(frozen=True)
class Bucket:
    """How to reach an S3 bucket; small and picklable, so every task gets it."""

    name: str
    endpoint: str | None = None  # http(s)://host[:port] of an S3-compatible store
    region: str | None = None
    path_style: bool = False
    anonymous: bool = False
    keys: tuple[str, str, str | None] | None = field(default=None, repr=False)  # id, secret, token
    attempts: int = 11  # tries per request

    def client(self):
        return _client(self)


@functools.lru_cache(maxsize=8)
def _client(b: Bucket):
    """One client per bucket and process (a Python worker writes many files)."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": b.attempts},
        s3={"addressing_style": "path" if b.path_style else "auto"},
        **({"signature_version": UNSIGNED} if b.anonymous else {}),
    )
    keys = dict(
        zip(("aws_access_key_id", "aws_secret_access_key", "aws_session_token"), b.keys or ())
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=b.endpoint, region_name=b.region, config=config, **keys
    )


class S3Error(OSError):
    """A request failed after its retries; the message names the operation, the key and S3's
    answer, as S3A's do (`<operation> on <key>: ...`)."""


def error(operation: str, key: str, e: Exception) -> S3Error:
    response = getattr(e, "response", None) or {}
    err, meta = response.get("Error", {}), response.get("ResponseMetadata", {})
    if err:
        text = (
            f"{err.get('Code')}: {err.get('Message')} (Status Code: {meta.get('HTTPStatusCode')})"
        )
    else:
        text = f"{type(e).__name__}: {e}"
    return S3Error(f"{operation} on {key}: {text}")


@dataclass(frozen=True)
class UploadTarget:
    """Files as multipart uploads below `prefix` of a bucket, left pending."""

    bucket: Bucket
    prefix: str  # the output's key prefix, without a trailing /

    def open(self, rel: str):
        return Upload(self.bucket, f"{self.prefix}/{rel}" if self.prefix else rel)

    def folder(self):
        """The prefix's folder marker (an empty object `prefix/`, as S3A's mkdirs makes)."""
        if not self.prefix:
            return
        try:
            self.bucket.client().put_object(
                Bucket=self.bucket.name, Key=f"{self.prefix}/", Body=b""
            )
        except Exception as e:
            raise error("PutObject", f"{self.prefix}/", e) from None


class Upload:
    """A file-like sink sending parts as they fill; closed, it returns the upload's id and part
    tags for the commit, the object still invisible."""

    def __init__(self, bucket: Bucket, key: str):
        self.s3, self.bucket, self.key = bucket.client(), bucket.name, key
        self.buffer = bytearray()
        self.etags: list[str] = []
        self.bytes = 0
        self.closed = False
        try:
            self.upload_id = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key)[
                "UploadId"
            ]
        except Exception as e:
            raise error("CreateMultipartUpload", key, e) from None

    def write(self, data) -> int:
        self.buffer += data
        self.bytes += len(data)
        while len(self.buffer) >= 2 * PART:  # the last part may not be below 5 MiB: keep one
            self._send(bytes(self.buffer[:PART]))
            del self.buffer[:PART]
        return len(data)

    def flush(self):
        pass

    def _send(self, body: bytes):
        n = len(self.etags) + 1
        try:
            r = self.s3.upload_part(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=n, Body=body
            )
        except Exception as e:
            raise error(f"UploadPart {n}", self.key, e) from None
        self.etags.append(r["ETag"])

    def close(self) -> dict:
        if self.buffer or not self.etags:
            self._send(bytes(self.buffer))
            self.buffer = bytearray()
        self.closed = True
        return {"upload_id": self.upload_id, "etags": list(self.etags)}

    def abort(self):
        self.closed = True
        self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)


def complete(bucket: Bucket, key: str, upload_id: str, etags: list[str]) -> None:
    try:
        bucket.client().complete_multipart_upload(
            Bucket=bucket.name,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": i + 1, "ETag": t} for i, t in enumerate(etags)]
            },
        )
    except Exception as e:
        raise error("CompleteMultipartUpload", key, e) from None
