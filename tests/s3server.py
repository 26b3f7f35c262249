"""A local S3-compatible server (moto) holding a copy of a store, behind a proxy that can add
per-request latency and inject faults. Used by the tests and by bench/run.py.

    with S3Server() as s3:
        url = s3.upload(local_store, "aef/v1.zarr")     # s3://aef/v1.zarr, public-read bucket
        s3.proxy.fail("/c/0/0/0/0", "503", times=2)      # the next two matching requests fail
        ... --store url --s3-endpoint s3.endpoint ...
"""

from __future__ import annotations

import collections
import http.client
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BUCKET = "aef"
OUTPUT_BUCKET = "results"
ERRORS = {  # S3's own bodies, so clients see what real throttling and failures look like
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "403": (403, "AccessDenied", "Access Denied"),
    "key": (
        403,
        "InvalidAccessKeyId",
        "The AWS Access Key Id you provided does not exist in our records.",
    ),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy(ThreadingHTTPServer):
    """Forwards every request to the S3 server; counts them; adds latency; injects faults."""

    daemon_threads = True

    def __init__(self, upstream: int, latency: float = 0.0):
        super().__init__(("127.0.0.1", free_port()), _Handler)
        self.upstream, self.latency = upstream, latency
        self.requests: collections.Counter = collections.Counter()  # (method, path) -> n
        self._faults: list[list] = []  # [path substring, kind, times left, methods]
        self._denied_keys: set[str] = set()
        self._lock = threading.Lock()

    def handle_error(self, request, client_address):
        """Quiet about clients that drop a connection (S3A aborting a stream, a killed run)."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def fail(self, pattern: str, kind: str, times: float = 1, methods: tuple[str, ...] = ()):
        """The next `times` requests whose path contains `pattern` (and whose method is one of
        `methods`, if given) get `kind`: '503' (SlowDown), '500', '403', 'drop' (connection
        closed without a response) or 'corrupt' (bytes flipped)."""
        with self._lock:
            self._faults.append([pattern, kind, times, methods])

    def deny_key(self, access_key: str):
        """Requests signed with this access key id get S3's InvalidAccessKeyId (moto itself
        accepts any key)."""
        with self._lock:
            self._denied_keys.add(access_key)

    def clear(self):
        with self._lock:
            self._faults.clear()
            self._denied_keys.clear()
            self.requests.clear()

    def fault_for(self, method: str, path: str, authorization: str) -> str | None:
        with self._lock:
            if any(f"Credential={k}/" in authorization for k in self._denied_keys):
                return "key"
            for f in self._faults:
                if f[0] in path and f[2] > 0 and (not f[3] or method in f[3]):
                    f[2] -= 1
                    return f[1]
        return None

    def count(self, method: str, path: str):
        with self._lock:
            self.requests[(method, path)] += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: tests read counts, not logs
        pass

    def _forward(self):
        server: Proxy = self.server
        server.count(self.command, self.path)
        if server.latency:
            time.sleep(server.latency)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        fault = server.fault_for(self.command, self.path, self.headers.get("Authorization", ""))
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault in ERRORS:
            status, code, message = ERRORS[fault]
            payload = (
                f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f"<Message>{message}</Message></Error>"
            ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        conn = http.client.HTTPConnection("127.0.0.1", server.upstream, timeout=60)
        # Expect: 100-continue was answered here already (BaseHTTPRequestHandler)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "expect")}
        headers["Host"] = f"127.0.0.1:{server.upstream}"
        conn.request(self.command, self.path, body=body or None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if fault == "corrupt" and len(data) > 16:
            data = bytes(b ^ 0x5A for b in data[:16]) + data[16:]
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in (
                "content-length",
                "transfer-encoding",
                "connection",
                "server",
                "date",
            ):
                self.send_header(k, v)
        # a HEAD's length is the object's (S3A takes a file's size from it), not the empty body's
        self.send_header(
            "Content-Length",
            resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data)),
        )
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward


class S3Server:
    """moto's S3 in server mode on 127.0.0.1, a public-read bucket, and the fault proxy."""

    def __init__(self, latency: float = 0.0):
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self.port = free_port()
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.latency = latency

    def __enter__(self) -> S3Server:
        import boto3

        self._moto.start()
        self.client = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.port}",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        self.client.create_bucket(Bucket=BUCKET)
        self.client.create_bucket(Bucket=OUTPUT_BUCKET)  # private: signed requests only
        # like the AEF mosaic's bucket: anyone may read without signing
        self.client.put_bucket_policy(
            Bucket=BUCKET,
            Policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": "*",
                            "Action": ["s3:GetObject", "s3:ListBucket"],
                            "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
                        }
                    ],
                }
            ),
        )
        self.proxy = Proxy(self.port, self.latency)
        threading.Thread(target=self.proxy.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.proxy.shutdown()
        self.proxy.server_close()
        self._moto.stop()

    @property
    def endpoint(self) -> str:
        """Where clients should connect: the proxy."""
        return f"http://127.0.0.1:{self.proxy.server_address[1]}"

    def settings(self, **bucket_keys) -> dict[str, str]:
        """Spark settings for S3A on this server (through the proxy): path-style over http, the
        test keys, no lookup of AWS's instance metadata; few, quick retries. `bucket_keys`
        become per-bucket settings: fs.s3a.bucket.<bucket>.<key>."""
        s3a = {
            "endpoint": self.endpoint,
            "endpoint.region": "us-east-1",
            "path.style.access": "true",
            "connection.ssl.enabled": "false",
            "access.key": "test",
            "secret.key": "test",
            "aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
            "retry.limit": "3",
            "retry.interval": "50ms",
            "retry.throttle.limit": "5",
            "retry.throttle.interval": "50ms",
            "attempts.maximum": "2",
        }
        s3a.update({f"bucket.{k}": v for k, v in bucket_keys.items()})
        return {f"spark.hadoop.fs.s3a.{k}": v for k, v in s3a.items()}

    def conf_file(self, path: Path, **bucket_keys) -> Path:
        """A --conf file with settings(): its [spark.conf] table."""
        lines = ["[spark.conf]"] + [
            f"{json.dumps(k)} = {json.dumps(v)}" for k, v in self.settings(**bucket_keys).items()
        ]
        Path(path).write_text("\n".join(lines) + "\n")
        return Path(path)

    def objects(self, prefix: str, bucket: str = OUTPUT_BUCKET) -> dict[str, str]:
        """Key -> ETag of every object under `prefix`."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}

    def uploads(self, prefix: str, bucket: str = OUTPUT_BUCKET) -> list[str]:
        """Keys of the multipart uploads under `prefix` not completed nor aborted."""
        r = self.client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        return [u["Key"] for u in r.get("Uploads", [])]

    def arrow_fs(self):
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(
            access_key="test",
            secret_key="test",
            region="us-east-1",
            scheme="http",
            endpoint_override=f"127.0.0.1:{self.port}",
        )

    def upload(self, folder: Path, prefix: str) -> str:
        """Copy a local store into the bucket; returns its s3:// URL."""
        folder = Path(folder)
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                self.client.put_object(
                    Bucket=BUCKET,
                    Key=f"{prefix}/{f.relative_to(folder).as_posix()}",
                    Body=f.read_bytes(),
                )
        return f"s3://{BUCKET}/{prefix}"
