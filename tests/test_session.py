"""The Python workers: the environment the job's session starts them with, the housekeeping
around each task (udfs/spark.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from aef_zonal import config


@pytest.mark.spark
def test_python_workers_run_under_the_executor_env(spark):
    # glibc reads its malloc settings once, when a process starts: they must be in the
    # environment Spark starts the Python workers with, not set from inside a task
    want = config.executor_env()
    assert {"MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} <= set(want)

    def env(batches):
        for _ in batches:
            yield pd.DataFrame({"name": list(want), "value": [os.environ.get(k, "") for k in want]})

    got = spark.range(1, numPartitions=1).mapInPandas(env, "name string, value string").collect()
    assert {r.name: r.value for r in got} == want


@pytest.mark.spark
def test_the_driver_jvm_maps_the_class_archive_setup_built(spark):
    # an archive the JVM cannot use (another JDK, another class path) is ignored silently, so
    # look at what the running JVM mapped
    assert config.CLASS_ARCHIVE.is_file(), "make setup builds it (tools/class_archive.py)"
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    assert str(config.CLASS_ARCHIVE) in Path(f"/proc/{pid}/maps").read_text()


# In a fresh interpreter, as a worker is: in the test process other threads (the S3 test
# server's, the job's warm-up imports) add and drop modules while this runs.
FREEZE_SCENARIO = """
import gc, sys, types, weakref
import numba  # the bulk of a worker's objects: what each collection walked
from aef_zonal.udfs import spark as executor

class Cycle:
    def __init__(self):
        self.me = self

gc.collect()  # as PySpark's daemon does after every task
before = len(gc.get_objects())
executor.freeze_imports()
frozen = gc.get_freeze_count()
assert len(gc.get_objects()) < before / 20 and frozen >= before * 0.9, (before, frozen)
garbage = Cycle()
gone = weakref.ref(garbage)
del garbage
executor.freeze_imports()  # no module imported since: nothing frozen, the cycle neither
assert gc.get_freeze_count() <= frozen, (gc.get_freeze_count(), frozen)
gc.collect()  # frozen objects still die by reference count
assert gone() is None
garbage = Cycle()
gone = weakref.ref(garbage)
del garbage
sys.modules["imported_by_a_task"] = types.ModuleType("imported_by_a_task")
frozen = gc.get_freeze_count()
executor.freeze_imports()  # a module imported since: frozen again, garbage collected first
assert gc.get_freeze_count() > frozen and gone() is None, (gc.get_freeze_count(), frozen)
print("ok")
"""


@pytest.mark.fast
def test_a_task_start_freezes_what_is_alive_and_later_garbage_is_still_collected():
    run = subprocess.run(
        [sys.executable, "-c", FREEZE_SCENARIO],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
        timeout=120,
    )
    assert run.returncode == 0 and run.stdout == "ok\n", run.stderr


@pytest.mark.spark
def test_a_command_line_run_prints_its_own_lines_only(sample, job_out, tmp_path):
    """The whole process's output, as a terminal shows it: nothing of the JVM's or Spark's start
    (nor of its logging after) without -v, and a time line for each stage that ran (no change
    stage when change was not asked for)."""
    import re

    import geopandas as gpd

    gpd.read_parquet(sample / "fields.parquet").head(5).to_parquet(tmp_path / "f.parquet")
    cli = Path(sys.executable).parent / "aef-zonal"
    proc = subprocess.run(
        [
            str(cli),
            "run",
            "--store",
            str(sample / "store.zarr"),
            "--fields",
            str(tmp_path / "f.parquet"),
            "--out",
            str(tmp_path / "out"),
            "--years",
            "2025",
            "--pca-model",
            str(job_out / "_pca_model.json"),
            "--master",
            "local[1]",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    # stderr: the progress lines alone
    assert [line for line in proc.stderr.splitlines() if not line.startswith("[aef-zonal] ")] == []
    stages = re.findall(r"^\[aef-zonal\] (\S+(?: \S+)?): [\d.]+ s$", proc.stdout, re.M)
    assert stages == [
        "start spark",
        "fields",
        "assign",
        "chunk_tasks",
        "field_years",
        "reduce",
        "aggregate",
        "pca",
        "rows",
        "write",
    ], proc.stdout
    assert "5/5 field-years" in proc.stderr  # the progress reached its total
