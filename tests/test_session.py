"""The Spark session the job builds: what its settings must change where the work runs."""
from __future__ import annotations

import os

import pandas as pd
import pytest

from jobs import config

pytestmark = pytest.mark.spark

PREFIX = "spark.executorEnv."


def test_python_workers_run_under_the_executor_env(spark):
    # glibc reads its malloc settings once, when a process starts: they must be in the
    # environment Spark starts the Python workers with, not set from inside a task
    want = {k.removeprefix(PREFIX): str(v) for k, v in config.load()["spark"]["conf"].items()
            if k.startswith(PREFIX)}
    assert {"MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} <= set(want)

    def env(batches):
        for _ in batches:
            yield pd.DataFrame({"name": list(want), "value": [os.environ.get(k, "") for k in want]})

    got = spark.range(1, numPartitions=1).mapInPandas(env, "name string, value string").collect()
    assert {r.name: r.value for r in got} == want
