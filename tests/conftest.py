"""Shared fixtures: one small AEF-layout sample and one job run over it, per test session; the
one way tests run the job (run_job)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aef_zonal.udfs import statistics

# every statistic's record, and three quantiles
ALL_STATS = ",".join([*statistics.BY_NAME, "p05", "median", "p95"])


def job_args(store, fields, out, *extra, master: str = "local[2]") -> list[str]:
    """`aef-zonal run`'s arguments for a store, fields and an output folder."""
    return [
        "--store",
        str(store),
        "--fields",
        str(fields),
        "--out",
        str(out),
        "--master",
        master,
        *extra,
    ]


def run_job(store, fields, out, *extra, master: str = "local[2]") -> int:
    """The job in this process (its Spark session shared by the tests); its exit code."""
    from aef_zonal import run

    return run.main(job_args(store, fields, out, *extra, master=master))


@pytest.fixture(scope="session")
def sample(tmp_path_factory) -> Path:
    from aef_zonal.demo.sample import make_sample

    out = tmp_path_factory.mktemp("sample")
    # 1024 px with 512 px shards: 4 shards, 16 inner chunks a year; the first year has one
    # inner chunk never written
    make_sample(out, size=1024, shard=512, years=(2024, 2025), log=lambda *_: None)
    return out


@pytest.fixture(scope="session")
def job_out(sample, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "result"
    assert (
        run_job(
            sample / "store.zarr",
            sample / "fields.parquet",
            out,
            "--stats",
            ALL_STATS,
            master="local[2,3]",
        )
        == 0
    )
    return out


@pytest.fixture(scope="session")
def kinds(sample) -> dict[int, str]:
    return {int(k): v for k, v in json.loads((sample / "fields_kinds.json").read_text()).items()}


@pytest.fixture(scope="session")
def spark(job_out):
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()
