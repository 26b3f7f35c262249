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
ERRORS = {  # S3's own bodies, so clients see what real throttling and failures look like
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "403": (403, "AccessDenied", "Access Denied"),
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
        self._faults: list[list] = []  # [path substring, kind, times left]
        self._lock = threading.Lock()

    def fail(self, pattern: str, kind: str, times: float = 1):
        """The next `times` requests whose path contains `pattern` get `kind`: '503' (SlowDown),
        '500', '403', 'drop' (connection closed without a response) or 'corrupt' (bytes flipped)."""
        with self._lock:
            self._faults.append([pattern, kind, times])

    def clear(self):
        with self._lock:
            self._faults.clear()
            self.requests.clear()

    def fault_for(self, path: str) -> str | None:
        with self._lock:
            for f in self._faults:
                if f[0] in path and f[2] > 0:
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
        fault = server.fault_for(self.path)
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault in ERRORS:
            status, code, message = ERRORS[fault]
            payload = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                       f"<Message>{message}</Message></Error>").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        conn = http.client.HTTPConnection("127.0.0.1", server.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        headers["Host"] = f"127.0.0.1:{server.upstream}"
        conn.request(self.command, self.path, body=body or None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if fault == "corrupt" and len(data) > 16:
            data = bytes(b ^ 0x5A for b in data[:16]) + data[16:]
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
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

    def __enter__(self) -> "S3Server":
        import boto3

        self._moto.start()
        self.client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.port}",
                                   aws_access_key_id="test", aws_secret_access_key="test",
                                   region_name="us-east-1")
        self.client.create_bucket(Bucket=BUCKET)
        # like the AEF mosaic's bucket: anyone may read without signing
        self.client.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": "*",
                           "Action": ["s3:GetObject", "s3:ListBucket"],
                           "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]}]}))
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

    def upload(self, folder: Path, prefix: str) -> str:
        """Copy a local store into the bucket; returns its s3:// URL."""
        folder = Path(folder)
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                self.client.put_object(Bucket=BUCKET, Key=f"{prefix}/{f.relative_to(folder).as_posix()}",
                                       Body=f.read_bytes())
        return f"s3://{BUCKET}/{prefix}"
