"""The job on a real Spark standalone cluster: a master and two one-core workers on 127.0.0.1,
started from the pyspark distribution, the job submitted the way production does it (code in the
`--py-files` zip built by tools/pyfiles.py, Sedona and S3A through `--jars`, executors on their
own Python), its output written to a local S3 server: no disk is shared by driver and executors.
Its output must equal the local-mode run of the same sample (`job_out`)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyspark
import pytest

from aef_zonal import config
from tests.conftest import ALL_STATS
from tests.s3server import S3Server

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # spark-class and spark-submit of the pyspark wheel
KEYS = ["time", "label", "feature_id"]


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def base_env() -> dict[str, str]:
    # nothing of the test process's Python path leaks into the cluster or the submitted job;
    # SPARK_HOME is the wheel's distribution (its scripts would otherwise look for it with the
    # python3 on PATH)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYSPARK", "SPARK"))}
    return {**env, "SPARK_HOME": str(Path(pyspark.__file__).parent), "SPARK_LOCAL_IP": "127.0.0.1"}


def executor_python(folder: Path) -> Path:
    """An interpreter for the executors that cannot import this checkout.

    The venv has the project installed in editable mode: a .pth file in site-packages installs an
    import hook mapping `jobs` and `udfs` to this repository, so the venv's plain python on the
    executors would import them from here even without --py-files. `-S` skips site processing
    (and with it every .pth file); the venv's site-packages goes on PYTHONPATH instead, for the
    third-party packages. `jobs` and `udfs` can then come only from the path Spark gives the
    Python workers, where --py-files puts the zip."""
    script = folder / "python"
    site = sysconfig.get_paths()["purelib"]
    script.write_text(
        "#!/bin/sh\n"
        f'export PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site}"\n'
        f'exec "{sys.executable}" -S "$@"\n'
    )
    script.chmod(0o755)
    return script


def master_state(ui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as r:
        return json.load(r)


@pytest.fixture
def cluster(tmp_path):
    """spark://127.0.0.1:PORT with two one-core workers; stopped (process groups killed) after."""
    port, ui, *worker_ports = free_ports(6)
    env, procs, logs = base_env(), [], []

    def start(name, *args):
        log = tmp_path / f"{name}.log"
        logs.append(log)
        with open(log, "w") as f:  # the child keeps its own descriptor
            procs.append(
                subprocess.Popen(
                    [str(BIN / "spark-class"), *args],
                    cwd=tmp_path,
                    env=env,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    url = f"spark://127.0.0.1:{port}"
    work_dirs = [tmp_path / "worker1", tmp_path / "worker2"]
    try:
        start(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui),
        )
        for i, work in enumerate(work_dirs):
            work.mkdir()
            start(
                work.name,
                "org.apache.spark.deploy.worker.Worker",
                url,
                "--host",
                "127.0.0.1",
                "--cores",
                "1",
                "--memory",
                "2g",
                "--work-dir",
                str(work),
                "--port",
                str(worker_ports[2 * i]),
                "--webui-port",
                str(worker_ports[2 * i + 1]),
            )
        deadline = time.monotonic() + 120
        while True:
            try:
                if master_state(ui)["aliveworkers"] == 2:
                    break
            except OSError:  # master not listening yet
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                pytest.fail(
                    "cluster did not come up:\n"
                    + "\n".join(f"{log.name}: {log.read_text()[-2000:]}" for log in logs)
                )
            time.sleep(1)
        yield {"url": url, "ui": ui, "work_dirs": work_dirs}
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def rows(folder, filesystem=None):
    return (
        ds.dataset(folder, filesystem=filesystem, format="parquet", partitioning="hive")
        .to_table()
        .to_pandas()
        .sort_values(KEYS)
        .reset_index(drop=True)
    )


def floating(column) -> bool:
    """Float scalars or lists of floats (statistics); everything else must match exactly."""
    first = next((v for v in column if v is not None), None)
    return column.dtype.kind == "f" or (isinstance(first, np.ndarray) and first.dtype.kind == "f")


def assert_close(x_col, y_col, atol: float, name: str):
    for x, y in zip(x_col, y_col):
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_allclose(
                np.asarray(x, float),
                np.asarray(y, float),
                rtol=0,
                atol=atol,
                equal_nan=True,
                err_msg=name,
            )


def test_standalone_cluster_gives_the_local_output(sample, job_out, cluster, tmp_path):
    python = executor_python(tmp_path)
    # on its own the executors' interpreter has the third-party packages but not the job
    probe = subprocess.run(
        [str(python), "-c", "import numba, pyspark, zarr, aef_zonal"],
        cwd=tmp_path,
        env=base_env(),
        capture_output=True,
        text=True,
    )
    assert "No module named 'aef_zonal'" in probe.stderr, probe.stderr

    pyfiles = tmp_path / "aef_zonal.zip"
    subprocess.run([sys.executable, str(ROOT / "tools" / "pyfiles.py"), str(pyfiles)], check=True)
    jars = config.jar_settings(config.load())["spark.jars"]
    driver_cwd = tmp_path / "driver"
    driver_cwd.mkdir()
    with S3Server() as s3:
        # the S3A settings as a cluster has them: spark-submit --conf spark.hadoop.fs.s3a.*
        settings = [a for k, v in s3.settings().items() for a in ("--conf", f"{k}={v}")]
        cmd = [
            str(BIN / "spark-submit"),
            "--master",
            cluster["url"],
            "--py-files",
            str(pyfiles),
            "--jars",
            jars,
            *settings,
            str(ROOT / "jobs" / "submit.py"),
            "--store",
            str(sample / "store.zarr"),
            "--fields",
            str(sample / "fields.parquet"),
            "--out",
            "s3://results/cluster",
            "--stats",
            ALL_STATS,
        ]
        env = {
            **{k: v for k, v in base_env().items() if not k.startswith("AWS_")},
            "PYSPARK_PYTHON": str(python),
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        t0 = time.perf_counter()
        # 600 s ran out at a load average of 16 (four engineers' tests on two cores)
        proc = subprocess.run(
            cmd, cwd=driver_cwd, env=env, capture_output=True, text=True, timeout=1500
        )
        wall = time.perf_counter() - t0
        print(f"\ncluster run (spark-submit, 2 workers x 1 core, output on S3): {wall:.1f} s wall")
        assert proc.returncode == 0, proc.stderr[-4000:]
        keys = s3.objects("cluster/")
        success = json.loads(
            s3.client.get_object(Bucket="results", Key="cluster/_SUCCESS")["Body"].read()
        )
        b = rows("results/cluster", s3.arrow_fs())
    assert success["committer"] == "magic" and "cluster/_run.json" in keys
    assert not [k for k in keys if "__magic" in k]

    # it ran on the cluster: one finished application, an executor on each worker, each of
    # which fetched the zip into its working folder
    deadline = time.monotonic() + 30  # the master records the end once the driver has left
    while (
        not (apps := master_state(cluster["ui"])["completedapps"]) and time.monotonic() < deadline
    ):
        time.sleep(1)
    assert [(a["name"], a["state"]) for a in apps] == [("aef-zonal", "FINISHED")], apps
    for work in cluster["work_dirs"]:
        assert list(work.glob(f"{apps[0]['id']}/*/aef_zonal.zip")), (
            f"no executor of the app in {work}"
        )

    # the same rows and columns, every value equal: statistics to 1e-12 (integer partials make
    # them exact), the PCA projection to 1e-9 (fitted on the same means, collected in another order)
    a = rows(job_out)
    assert len(a) == len(b) > 0
    assert list(a.columns) == list(b.columns)
    assert {"mean", "std", "p05", "median", "p95", "pca_components", "count"} <= set(a.columns)
    assert a[KEYS].equals(b[KEYS])
    for col in a.columns:
        if col == "pca_components":
            assert_close(a[col], b[col], 1e-9, col)
        elif floating(a[col]):
            assert_close(a[col], b[col], 1e-12, col)
        else:
            assert a[col].equals(b[col]), col
