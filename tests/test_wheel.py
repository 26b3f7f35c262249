"""The package as a data team installs it: the wheel `python -m build` makes, installed (not
editable) with its core dependencies into a new virtual environment, run from a folder outside
the checkout with no jar cache, so that Spark resolves Sedona's jars by their Maven coordinates."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from tests.compare import assert_same
from tests.conftest import ALL_STATS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.install


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    return next(dist.glob("aef_zonal-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The virtual environment's bin folder."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "-c",
            str(ROOT / "constraints.txt"),
            str(wheel),
        ],
        check=True,
    )
    return venv / "bin"


def clean_env() -> dict:
    """This process's environment without what points at the checkout or its jar cache."""
    drop = ("AEF_ZONAL_", "PYSPARK", "SPARK_", "PYTHONPATH", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def run_installed(installed: Path, sample: Path, cwd: Path) -> subprocess.CompletedProcess:
    """The installed `aef-zonal run` on the sample into `cwd`/out (a bare relative name)."""
    proc = subprocess.run(
        [str(installed / "aef-zonal"), "run", "--store", str(sample / "store.zarr"), "--fields",
         str(sample / "fields.parquet"), "--out", "out", "--stats", ALL_STATS, "--master", "local[2]"],
        cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_wheel_is_one_package_with_its_sql_and_defaults(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "aef_zonal",
        wheel.name.split("-py3")[0] + ".dist-info",
    }
    for f in (
        "aef_zonal/sql/50_output.sql",
        "aef_zonal/conf/defaults.toml",
        "aef_zonal/udfs/spark.py",
        "aef_zonal/stages/fields.py",
        "aef_zonal/submit.py",
        "aef_zonal/viewers/webmap.py",
        "aef_zonal/demo/sample.py",
    ):
        assert f in names
    meta = Parser().parsestr(
        zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    )
    core = {
        re.match(r"[\w.-]+", r).group()
        for r in meta.get_all("Requires-Dist")
        if "extra ==" not in r
    }
    assert {"pyspark", "apache-sedona", "zarr", "numba", "obstore"} <= core
    assert not core & {"geopandas", "matplotlib", "rasterio", "mapbox-earcut"}  # the viz extra's
    assert {"viz", "test"} <= set(meta.get_all("Provides-Extra"))


def test_installed_wheel_runs_outside_the_checkout(installed, sample, job_out, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_installed(installed, sample, elsewhere)
    # Spark's own resolution brought Sedona (from its Ivy cache after the first time)
    assert "org.apache.sedona#sedona-spark-shaded" in proc.stderr
    assert_same(elsewhere / "out", job_out)


def test_installed_api_refuses_a_session_without_sedona(installed, sample, tmp_path):
    script = (
        "import aef_zonal\nfrom pyspark.sql import SparkSession\n"
        "spark = SparkSession.builder.master('local[1]').getOrCreate()\n"
        "try:\n"
        f"    aef_zonal.zonal_stats({str(sample / 'fields.parquet')!r}, "
        f"store={str(sample / 'store.zarr')!r})\n"
        "except aef_zonal.JobError as e:\n    print('JobError:', e)\n"
        "print('session running:', spark.range(3).count() == 3)\n"
    )
    proc = subprocess.run(
        [str(installed / "python"), "-c", script],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "JobError: Sedona's classes are not in this Spark session" in proc.stdout, proc.stderr[
        -2000:
    ]
    assert (
        "spark.jars.packages=org.apache.sedona:sedona-spark-shaded-4.0_2.13:1.8.0," in proc.stdout
    )
    assert "session running: True" in proc.stdout


# the newest Spark 3.5 on PyPI when this was written: EMR 7, Dataproc 2.2 and Databricks' LTS
# runtimes are 3.5
SPARK_35 = "3.5.9"


def test_installed_wheel_runs_on_spark_35(installed, sample, job_out, tmp_path):
    """Last in this file: it replaces the environment's pyspark with 3.5's."""
    subprocess.run(
        [str(installed / "python"), "-m", "pip", "install", "-q", f"pyspark=={SPARK_35}"],
        check=True,
    )
    proc = run_installed(installed, sample, tmp_path)
    assert "org.apache.sedona#sedona-spark-shaded-3.5_2.12" in proc.stderr  # Sedona's 3.5 build
    report = json.loads((tmp_path / "out" / "_run.json").read_text())
    assert report["versions"]["pyspark"] == SPARK_35
    assert_same(tmp_path / "out", job_out)
