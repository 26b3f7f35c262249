"""The store on object storage: a local S3 server (moto) behind a proxy that injects faults."""
from __future__ import annotations

import json

import pytest

from jobs import zonal_stats
from tests.compare import assert_same
from tests.conftest import ALL_STATS
from tests.s3server import S3Server

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def s3(sample, monkeypatch_module):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch_module.delenv(var, raising=False)  # the public mosaic: unsigned requests
    with S3Server() as server:
        server.url = server.upload(sample / "store.zarr", "v1/store.zarr")
        yield server


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def run(s3, sample, out, *extra):
    return zonal_stats.main(["--store", s3.url, "--s3-endpoint", s3.endpoint, "--fields",
                             str(sample / "fields.parquet"), "--out", str(out),
                             "--master", "local[2]", *extra])


def test_transient_faults_are_retried_and_change_nothing(s3, sample, job_out, tmp_path):
    s3.proxy.clear()
    # throttling, a server error and a dropped connection, each on a different shard
    s3.proxy.fail("/c/0/0/0/0", "503", times=3)
    s3.proxy.fail("/c/1/0/1/1", "500", times=2)
    s3.proxy.fail("/c/0/0/1/0", "drop", times=1)
    out = tmp_path / "s3"
    assert run(s3, sample, out, "--stats", ALL_STATS, "--retries", "5",
               "--pca-model", str(job_out / "_pca_model.json")) == 0
    assert_same(out, job_out)
    assert not any(f[2] for f in s3.proxy._faults), "every injected fault was met and retried"
    report = json.loads((out / "_run.json").read_text())
    chunk_gets = sum(n for (m, p), n in s3.proxy.requests.items() if m == "GET" and "/c/" in p)
    # each shard index is fetched once per worker, not once per chunk
    assert report["chunk_reads"] < chunk_gets < 1.5 * report["chunk_reads"] + 6  # + retries
    assert report["requests_per_chunk"] < 1.5


def test_permanent_failure_names_store_and_chunk(s3, sample, tmp_path, capsys):
    s3.proxy.clear()
    s3.proxy.fail("/c/1/0/0/1", "500", times=float("inf"))
    out = tmp_path / "failed"
    try:
        rc = run(s3, sample, out, "--retries", "1")
    finally:
        s3.proxy.clear()
    err = capsys.readouterr().err
    assert rc == 2
    assert "aef-zonal: error: reading store s3://aef/v1/store.zarr" in err, err
    assert "chunk embeddings/c/1/0/0/1 inner chunk" in err and "after 1 retries" in err, err
    assert not out.exists() and not list(tmp_path.glob(".failed.*"))


def test_unreachable_store_shows_url_and_error(sample, tmp_path, capsys):
    from tests.s3server import free_port

    rc = zonal_stats.main(["--store", "s3://aef/v1/store.zarr", "--s3-endpoint",
                           f"http://127.0.0.1:{free_port()}", "--retries", "0", "--fields",
                           str(sample / "fields.parquet"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot open Zarr store s3://aef/v1/store.zarr" in err, err
    assert "127.0.0.1" in err and "onnect" in err, err  # the endpoint and "connection refused"


def test_https_style_store_url(s3, sample, job_out, tmp_path):
    """The same bucket read as a plain HTTP(S) URL (path-style), no S3 API involved."""
    out = tmp_path / "http"
    url = f"{s3.endpoint}/aef/v1/store.zarr"
    assert zonal_stats.main(["--store", url, "--fields", str(sample / "fields.parquet"),
                             "--out", str(out), "--master", "local[2]", "--stats", ALL_STATS,
                             "--pca-model", str(job_out / "_pca_model.json")]) == 0
    assert_same(out, job_out)
