"""The store on object storage: a local S3 server (moto) behind a proxy that injects faults."""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from aef_zonal import submit
from tests.compare import assert_same, read
from tests.conftest import ALL_STATS
from tests.s3server import S3Server

ROOT = Path(__file__).resolve().parent.parent
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
    return submit.main(
        [
            "--store",
            s3.url,
            "--s3-endpoint",
            s3.endpoint,
            "--fields",
            str(sample / "fields.parquet"),
            "--out",
            str(out),
            "--master",
            "local[2]",
            *extra,
        ]
    )


def test_transient_faults_are_retried_and_change_nothing(s3, sample, job_out, tmp_path):
    s3.proxy.clear()
    # throttling, a server error and a dropped connection, each on a different shard
    s3.proxy.fail("/c/0/0/0/0", "503", times=3)
    s3.proxy.fail("/c/1/0/1/1", "500", times=2)
    s3.proxy.fail("/c/0/0/1/0", "drop", times=1)
    out = tmp_path / "s3"
    assert (
        run(
            s3,
            sample,
            out,
            "--stats",
            ALL_STATS,
            "--retries",
            "5",
            "--pca-model",
            str(job_out / "_pca_model.json"),
        )
        == 0
    )
    assert_same(out, job_out)
    assert not any(f[2] for f in s3.proxy._faults), "every injected fault was met and retried"
    report = json.loads((out / "_run.json").read_text())
    chunk_gets = sum(n for (m, p), n in s3.proxy.requests.items() if m == "GET" and "/c/" in p)
    # each shard index (4 shards x 2 years) is fetched once per Python worker (2 cores), not
    # once per chunk; + the 6 retries
    assert report["chunk_reads"] < chunk_gets <= report["chunk_reads"] + 2 * 8 + 6
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

    rc = submit.main(
        [
            "--store",
            "s3://aef/v1/store.zarr",
            "--s3-endpoint",
            f"http://127.0.0.1:{free_port()}",
            "--retries",
            "0",
            "--fields",
            str(sample / "fields.parquet"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "cannot open Zarr store s3://aef/v1/store.zarr" in err, err
    assert "127.0.0.1" in err and "onnect" in err, err  # the endpoint and "connection refused"


def test_https_style_store_url(s3, sample, job_out, tmp_path):
    """The same bucket read as a plain HTTP(S) URL (path-style), no S3 API involved."""
    out = tmp_path / "http"
    url = f"{s3.endpoint}/aef/v1/store.zarr"
    assert (
        submit.main(
            [
                "--store",
                url,
                "--fields",
                str(sample / "fields.parquet"),
                "--out",
                str(out),
                "--master",
                "local[2]",
                "--stats",
                ALL_STATS,
                "--pca-model",
                str(job_out / "_pca_model.json"),
            ]
        )
        == 0
    )
    assert_same(out, job_out)


# --- fields in and output out on S3 (Hadoop's S3A and its magic committer) --------------------

OUT = "s3://results/iowa"


def data_keys(keys) -> list[str]:
    """The keys a dataset reader takes as data: no path component starting with _ or ., and
    not a directory marker (an empty object `prefix/` that S3A creates for a folder)."""
    return [
        k
        for k in keys
        if not k.endswith("/") and not any(p.startswith(("_", ".")) for p in k.split("/")[1:])
    ]


@pytest.fixture(scope="module")
def s3conf(s3, tmp_path_factory):
    return s3.conf_file(tmp_path_factory.mktemp("s3conf") / "s3.toml")


@pytest.fixture(scope="module")
def s3_fields(s3, sample):
    s3.client.put_object(
        Bucket="results", Key="in/fields.parquet", Body=(sample / "fields.parquet").read_bytes()
    )
    return "s3://results/in/fields.parquet"


def run_s3(s3, conf, fields, out, *extra):
    return submit.main(
        [
            "--store",
            s3.url,
            "--s3-endpoint",
            s3.endpoint,
            "--fields",
            fields,
            "--out",
            out,
            "--master",
            "local[2]",
            "--conf",
            str(conf),
            *extra,
        ]
    )


SECRETS = {
    "settings": "S3CR3T-settings-d41d8cd98f00",
    "env": "S3CR3T-env-token-0cc175b9c0f1",
    "url": "S3CR3T-url-92eb5ffee6ae",
}


@pytest.fixture(scope="module")
def s3_out(s3, s3_fields, job_out, tmp_path_factory):
    """The sample's fields read from S3, the output written to S3: the job's usual run, with
    secrets in its settings, environment and command line, and transient faults on its writes."""
    s3.proxy.clear()
    conf = s3.conf_file(
        tmp_path_factory.mktemp("secret") / "c.toml", **{"results.secret.key": SECRETS["settings"]}
    )
    args = [
        "--store",
        s3.url,
        "--s3-endpoint",
        s3.endpoint,
        "--fields",
        s3_fields,
        "--out",
        OUT,
        "--master",
        "local[2]",
        "--conf",
        str(conf),
        "--stats",
        ALL_STATS,
        "--pca-model",
        str(job_out / "_pca_model.json"),
    ]
    s3.proxy.fail("/results/iowa/", "503", times=4, methods=("PUT", "POST"))
    s3.proxy.fail("/results/iowa/", "500", times=2, methods=("PUT", "POST"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_SESSION_TOKEN", SECRETS["env"])
        # as typed: a URL with user-info and a setting on the command line are recorded redacted
        mp.setattr(
            sys,
            "argv",
            [
                "aef-zonal",
                "run",
                *args,
                "--note",
                f"https://user:{SECRETS['url']}@host/x",
                "fs.s3a.secret.key=" + SECRETS["settings"],
            ],
        )
        console = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
            rc = submit.main(args)
        wall = time.perf_counter() - t0
    assert rc == 0, console.getvalue()[-3000:]
    faults_left = [f for f in s3.proxy._faults if f[2]]
    out_requests = collections.Counter(
        m
        for (m, p), n in s3.proxy.requests.items()
        for _ in range(n)
        if p.startswith("/results/iowa")
    )
    files = data_keys(s3.objects("iowa/"))
    local = json.loads((job_out / "_run.json").read_text())["seconds"]
    remote = json.loads(s3.client.get_object(Bucket="results", Key="iowa/_run.json")["Body"].read())
    print(
        f"\nS3 run {wall:.1f} s wall; stages {remote['seconds']} vs local {local}; "
        f"{sum(out_requests.values())} requests on the output ({dict(out_requests)}) for "
        f"{len(files)} data files: {sum(out_requests.values()) / len(files):.1f} per file"
    )
    return {
        "files": files,
        "report": remote,
        "faults_left": faults_left,
        "console": console.getvalue(),
    }


def test_s3_fields_and_output_equal_the_local_run(s3, s3_out, job_out):
    assert not s3_out["faults_left"], "every 503 and 500 on the writes was met and retried"
    assert_same("results/iowa", job_out, filesystem=s3.arrow_fs())
    keys = s3.objects("iowa/")
    assert {
        "iowa/_run.json",
        "iowa/_pca_model.json",
        "iowa/_without_pixels/part-0.parquet",
        "iowa/_SUCCESS",
    } <= set(keys)
    assert len([k for k in keys if k.startswith("iowa/_runs/")]) == 1
    assert not [k for k in keys if "__magic" in k] and not s3.uploads("iowa/")
    success = json.loads(s3.client.get_object(Bucket="results", Key="iowa/_SUCCESS")["Body"].read())
    assert success["committer"] == "magic" and success["success"] is True
    assert s3_out["report"]["rows"] == json.loads((job_out / "_run.json").read_text())["rows"]
    model = json.loads(
        s3.client.get_object(Bucket="results", Key="iowa/_pca_model.json")["Body"].read()
    )
    assert model == json.loads((job_out / "_pca_model.json").read_text())


def test_s3_output_passes_the_geoparquet_validator(s3, s3_out):
    """Each object as read from its s3:// URL (pyarrow's S3 filesystem): the validator's own S3
    client takes no endpoint or keys from the environment and asks the EC2 instance metadata
    service for credentials instead, an address this test must not reach."""
    import geoparquet_validator as gpv

    fs = s3.arrow_fs()
    for key in s3_out["files"]:
        with fs.open_input_file(f"results/{key}") as f:
            report = gpv.check_bytes(f"s3://results/{key}", f.read())
        assert report["version"] == "1.1.0" and gpv.conformant(report, "core"), gpv.failed(report)
        assert not gpv.failed(report, "covering"), gpv.failed(report)


def test_sql_and_plot_read_the_s3_output(s3, s3_out, s3conf, job_out, tmp_path):
    from aef_zonal import query
    from aef_zonal.session import spark_session
    from aef_zonal.viewers import plot, webmap

    settings = {"spark": {"conf": s3.settings()}}
    assert query.output_years(OUT, settings) == [2024, 2025]
    spark, _ = spark_session(None, False)
    text = "SELECT label, COUNT(*) AS n FROM fields WHERE time = '2025-01-01' GROUP BY label"
    got = {r.label: r.n for r in query.query(spark, OUT, text, settings).collect()}
    local = read(job_out)
    assert got == local[local.time == "2025-01-01"].groupby("label").size().to_dict()
    assert query.main([OUT, text, "--conf", str(s3conf)]) == 0
    assert plot.main([OUT, "--year", "2024", "--to", str(tmp_path), "--conf", str(s3conf)]) == 0
    assert (tmp_path / "map.png").stat().st_size > 10_000 and (tmp_path / "pca.png").exists()
    # map reads it on the custom endpoint too (it asked AWS before it took --conf)
    page = tmp_path / "map.html"
    assert webmap.main([OUT, "--year", "2024", "--to", str(page), "--conf", str(s3conf)]) == 0
    assert page.read_text().startswith("<!doctype html>")


def test_s3_existing_output_is_refused_without_mode(s3, s3_out, s3conf, s3_fields, capsys):
    before = s3.objects("iowa/")
    assert run_s3(s3, s3conf, s3_fields, OUT) == 2
    assert f"output {OUT} already exists" in capsys.readouterr().err
    assert s3.objects("iowa/") == before


def test_s3_mode_add_replaces_only_its_partitions(s3, s3_out, s3conf, s3_fields, job_out):
    before = s3.objects("iowa/")
    body = lambda key: s3.client.get_object(Bucket="results", Key=key)["Body"].read()  # noqa: E731
    bodies = {k: body(k) for k in before if k.startswith("iowa/time=2024")}
    assert (
        run_s3(s3, s3conf, s3_fields, OUT, "--stats", ALL_STATS, "--years", "2025", "--mode", "add")
        == 0
    )
    after = s3.objects("iowa/")
    old24 = {k: e for k, e in before.items() if k.startswith("iowa/time=2024")}
    assert old24 and {k: e for k, e in after.items() if k.startswith("iowa/time=2024")} == old24
    old25 = {k for k in before if k.startswith("iowa/time=2025")}
    new25 = {k for k in after if k.startswith("iowa/time=2025")}
    assert new25 and not old25 & new25  # every 2025 file replaced, none left behind
    assert {k: body(k) for k in old24} == bodies  # byte for byte, not only the same ETags
    assert len([k for k in after if k.startswith("iowa/_runs/")]) == 2
    # the added run reduced 2025 alone: no earlier year, so no change (test_faults says more)
    assert_same(
        "results/iowa",
        job_out,
        ignore=("source_store", "change", "change_from"),
        filesystem=s3.arrow_fs(),
    )
    added = read("results/iowa", s3.arrow_fs()).query("time == '2025-01-01'")
    assert len(added) and added.change.isna().all()
    report = json.loads(s3.client.get_object(Bucket="results", Key="iowa/_run.json")["Body"].read())
    assert report["mode"] == "add" and report["years"] == [2025]


def test_s3_killed_driver_leaves_no_data_and_the_rerun_completes(
    s3, s3conf, s3_fields, job_out, tmp_path
):
    import duckdb

    out = "s3://results/killed"
    # its own JVM: the secret given in the settings must not reach its console and logs either
    conf = s3.conf_file(tmp_path / "c.toml", **{"results.secret.key": SECRETS["settings"]})
    args = [
        "--store",
        s3.url,
        "--s3-endpoint",
        s3.endpoint,
        "--fields",
        s3_fields,
        "--out",
        out,
        "--master",
        "local[2]",
        "--conf",
        str(conf),
        "--stats",
        ALL_STATS,
        "--pca-model",
        str(job_out / "_pca_model.json"),
        "-v",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYSPARK", "SPARK"))}
    log = tmp_path / "killed.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "jobs" / "submit.py"), *args],
            env={**env, "AWS_EC2_METADATA_DISABLED": "true"},
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 1500  # reaching the write took > 400 s at load average 16
        while not s3.uploads("killed/"):  # the write has begun: parts are being uploaded
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended first"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "[aef-zonal] fields:" in log.read_text() and "S3CR3T" not in log.read_text()
    left = s3.objects("killed/")
    print(
        f"\nkilled run left {len(left)} objects: {sorted(left)[:5]}…, "
        f"{len(s3.uploads('killed/'))} pending uploads"
    )
    assert data_keys(left) == []
    # what readers take as the dataset: nothing
    fs = s3.arrow_fs()
    assert ds.dataset("results/killed", filesystem=fs, partitioning="hive").files == []
    mirror = tmp_path / "mirror"
    for key in left:
        if key.endswith("/"):  # S3A's directory markers: empty objects that stand for folders
            (mirror / key).mkdir(parents=True, exist_ok=True)
            continue
        (mirror / key).parent.mkdir(parents=True, exist_ok=True)
        (mirror / key).write_bytes(s3.client.get_object(Bucket="results", Key=key)["Body"].read())
    if left:
        assert (
            duckdb.sql(f"SELECT COUNT(*) FROM glob('{mirror}/killed/*/*/*.parquet')").fetchone()[0]
            == 0
        )
    # the same command again: completes, and nothing of the killed run remains
    assert submit.main(args[:-1]) == 0
    assert_same("results/killed", job_out, filesystem=fs)
    keys = s3.objects("killed/")
    assert not [k for k in keys if "__magic" in k] and not s3.uploads("killed/")


def test_s3_permanent_write_failure_names_the_object_and_leaves_nothing(
    s3, s3conf, s3_fields, capsys
):
    s3.proxy.clear()
    s3.proxy.fail("/results/broken/", "500", times=float("inf"), methods=("PUT", "POST"))
    try:
        rc = run_s3(s3, s3conf, s3_fields, "s3://results/broken")
    finally:
        s3.proxy.clear()
    err = capsys.readouterr().err
    assert rc == 2 and "aef-zonal: error: writing s3://results/broken failed" in err, err
    # the object as S3A names it: `<operation> on broken/<key>: … Status Code: 500`
    assert re.search(r" on broken[/:]", err) and "500" in err and "Traceback" not in err, err
    assert data_keys(s3.objects("broken/")) == [] and not s3.uploads("broken/")


@pytest.mark.parametrize(
    "case",
    [
        "no bucket",
        "no credentials",
        "wrong key",
        "write denied",
        "fields not geoparquet",
        "no fields",
    ],
)
def test_s3_bad_input_is_named_and_nothing_written(s3, s3conf, s3_fields, tmp_path, capsys, case):
    s3.proxy.clear()
    conf, fields, out = s3conf, s3_fields, "s3://results/bad"
    if case == "no bucket":
        out, expect = "s3://nobucket/out", ["s3://nobucket/out", "bucket does not exist"]
    elif case == "no credentials":
        s3.client.create_bucket(Bucket="nokeys")
        conf = s3.conf_file(
            tmp_path / "c.toml", **{"nokeys.access.key": "", "nokeys.secret.key": ""}
        )
        out, expect = (
            "s3://nokeys/out",
            ["s3://nokeys/out", "No AWS credentials", "no credentials:"],
        )
    elif case == "wrong key":
        s3.client.create_bucket(Bucket="badkeys")
        s3.proxy.deny_key("wrong")
        conf = s3.conf_file(tmp_path / "c.toml", **{"badkeys.access.key": "wrong"})
        # a HEAD's 403 has no body: S3 names no error code, S3A maps the status
        out, expect = (
            "s3://badkeys/out",
            ["s3://badkeys/out", "AccessDeniedException", "403", "check the keys"],
        )
    elif case == "write denied":
        s3.proxy.fail("/results/bad/", "403", times=float("inf"), methods=("PUT", "POST"))
        expect = ["writing s3://results/bad failed", " on bad", "AccessDenied"]
    elif case == "fields not geoparquet":
        s3.client.put_object(
            Bucket="results", Key="in/notes.parquet", Body=b"plain text, not Parquet"
        )
        fields = "s3://results/in/notes.parquet"
        expect = [f'{fields} is a CSV text file (first line: "plain text, not Parquet")']
    else:
        fields = "s3://results/in/none.parquet"
        expect = [f"fields file {fields} does not exist"]
    try:
        rc = run_s3(s3, conf, fields, out)
    finally:
        s3.proxy.clear()
    err = capsys.readouterr().err
    assert rc == 2 and all(e in err for e in expect) and "Traceback" not in err, err
    bucket, prefix = out[5:].split("/", 1)
    if case != "no bucket":
        assert s3.client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0) == 0


def test_no_secret_in_the_output_the_report_or_the_console(s3, s3_out):
    keys = s3.objects("iowa/")
    for key in keys:
        body = s3.client.get_object(Bucket="results", Key=key)["Body"].read()
        assert not [n for n, v in SECRETS.items() if v.encode() in body], key
    assert "[aef-zonal] wrote" in s3_out["console"] and "S3CR3T" not in s3_out["console"]
    report = s3_out["report"]
    assert (
        "https://***@host/x" in report["command"] and "fs.s3a.secret.key=***" in report["command"]
    )


def test_redact():
    from aef_zonal.redaction import redact

    assert (
        redact("s3a://AKIA:abc/def@bucket/x and http://u:p@h:9/")
        == "s3a://***@bucket/x and http://***@h:9/"
    )
    assert redact("s3://bucket/key and mail@host") == "s3://bucket/key and mail@host"
    assert (
        redact("--conf spark.hadoop.fs.s3a.secret.key=abc123 x")
        == "--conf spark.hadoop.fs.s3a.secret.key=*** x"
    )
    assert redact('"fs.s3a.session.token" = "tok"') == '"fs.s3a.session.token" = ***'
    assert (
        redact("NoAwsCredentialsException: No AWS credentials in the Hadoop configuration")
        == "NoAwsCredentialsException: No AWS credentials in the Hadoop configuration"
    )
    assert redact("the value hunter2 here", ["hunter2"]) == "the value *** here"
    assert redact("s3://bucket/plain/path --mode add") == "s3://bucket/plain/path --mode add"
