"""Faults during a run: corrupt chunks, a worker that dies, an interrupted run, adding partitions."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import pytest
import shapely

from aef_zonal.run import main
from aef_zonal.udfs.store import describe
from tests.compare import assert_same, read, same, without_pixels
from tests.conftest import ALL_STATS, job_args, run_job

pytestmark = pytest.mark.spark

BAD_CHUNK = "embeddings/c/0/0/0/0 inner chunk (0, 1)"  # 2024, rows 0-255, columns 256-511


@pytest.fixture(scope="module")
def corrupt_store(sample, tmp_path_factory) -> Path:
    """A copy of the sample whose inner chunk (0, 1) of the first 2024 shard does not decode."""
    store = tmp_path_factory.mktemp("corrupt") / "store.zarr"
    shutil.copytree(sample / "store.zarr", store)
    shard = store / "embeddings" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    # shard index at the end: (offset, nbytes) uint64 pairs per inner chunk in C order, then crc32c
    offset, _ = struct.unpack_from("<QQ", data, len(data) - 4 - 4 * 16 + 1 * 16)
    data[offset : offset + 16] = b"\x07" * 16  # the zstd frame header
    shard.write_bytes(bytes(data))
    return store


def test_corrupt_chunk_fails_naming_it(corrupt_store, sample, tmp_path, capsys, job_out):
    out = tmp_path / "out"
    rc = run_job(corrupt_store, sample / "fields.parquet", out)
    err = capsys.readouterr().err
    assert rc == 2
    assert f"chunk {BAD_CHUNK} does not decode" in err and "--on-bad-chunk skip" in err, err
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_corrupt_chunk_skipped_on_request_marks_fields(corrupt_store, sample, tmp_path, job_out):
    out = tmp_path / "out"
    rc = run_job(
        corrupt_store,
        sample / "fields.parquet",
        out,
        "--stats",
        ALL_STATS,
        "--on-bad-chunk",
        "skip",
        "--pca-model",
        str(job_out / "_pca_model.json"),
    )
    assert rc == 0
    report = json.loads((out / "_run.json").read_text())
    assert report["skipped_chunks"] == [BAD_CHUNK] and report["complete"] is False
    got = read(out).set_index(["feature_id", "time"])
    ref = read(job_out).set_index(["feature_id", "time"])
    listed = without_pixels(out).set_index(["feature_id", "time"])
    ref_listed = without_pixels(job_out).set_index(["feature_id", "time"])
    g = describe(str(sample / "store.zarr")).grid
    box = shapely.box(g.xmin + 256 * g.res, g.ymax - 256 * g.res, g.xmin + 512 * g.res, g.ymax)
    # the fields wholly inside the skipped chunk have no pixel left: listed with that reason
    skipped = listed[listed.reason == "chunk skipped (undecodable)"]
    assert len(skipped) and (skipped.index.get_level_values(1) == "2024-01-01").all()
    geoms = dict(zip(ref.index, shapely.from_wkb(ref.geometry)))
    assert all(shapely.within(geoms[k], box) for k in skipped.index)
    assert listed.drop(index=skipped.index).equals(ref_listed)  # the others as without fault
    # the fields partly in it keep a row, marked incomplete; every other row is unchanged
    assert set(got.index) == set(ref.index) - set(skipped.index)
    ref = ref.loc[got.index]
    incomplete = ~got.complete.to_numpy()
    in_2024 = got.index.get_level_values(1) == "2024-01-01"
    changed = (got["count"] != ref["count"]).to_numpy()
    assert incomplete.sum() >= 5 and (incomplete <= in_2024).all()
    assert (changed <= incomplete).all(), "a field changed without being marked"
    assert shapely.intersects(shapely.from_wkb(got.geometry[incomplete]), box).all()
    untouched = ~incomplete  # every other row is exactly the fault-free result
    for col in ("count", "mean", "std", "p05"):
        for u, v in zip(got[col][untouched], ref[col][untouched]):
            assert same(u, v)


def test_worker_killed_once_is_retried(sample, tmp_path, monkeypatch, job_out):
    marker = tmp_path / "killed"
    monkeypatch.setenv("AEF_ZONAL_TEST_KILL_ONCE", str(marker))
    out = tmp_path / "out"
    rc = run_job(
        sample / "store.zarr",
        sample / "fields.parquet",
        out,
        "--stats",
        ALL_STATS,
        "--pca-model",
        str(job_out / "_pca_model.json"),
    )
    assert rc == 0 and marker.exists(), "the hook killed a Python worker"
    assert_same(out, job_out)


def test_interrupted_run_then_same_command(sample, tmp_path, job_out):
    out = tmp_path / "out"
    cmd = job_args(
        sample / "store.zarr",
        sample / "fields.parquet",
        out,
        "--stats",
        ALL_STATS,
        "--pca-model",
        str(job_out / "_pca_model.json"),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "aef_zonal.cli", "run", *cmd],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parent.parent,
    )
    deadline = time.time() + 600
    while (
        not list(tmp_path.glob(".out.staging-*")) and proc.poll() is None and time.time() < deadline
    ):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its JVM and the Python workers
    proc.wait()
    assert not out.exists(), "a reader must never see a half-written output"
    assert main(cmd) == 0
    assert_same(out, job_out)
    assert not list(tmp_path.glob(".out.*")), "the interrupted run's staging folder is gone"


def test_mode_add_replaces_only_its_partitions(sample, tmp_path, job_out, capsys):
    out = tmp_path / "out"
    shutil.copytree(job_out, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.glob("time=*/label=*/*.parquet")}
    fields = gpd.read_parquet(sample / "fields.parquet")
    corn = tmp_path / "corn.parquet"
    fields[fields.label == "corn"].to_parquet(corn)
    assert (
        run_job(
            sample / "store.zarr",
            corn,
            out,
            "--stats",
            ALL_STATS,
            "--years",
            "2025",
            "--mode",
            "add",
        )
        == 0
    )
    summary = capsys.readouterr().out  # the console summary of the run
    n = int((fields.label == "corn").sum())
    assert f"fields: {n} (0 null, 0 empty, 0 repaired geometries; CRS EPSG:4326)" in summary, (
        summary
    )
    listed = without_pixels(job_out).query("time == '2025-01-01' and label == 'corn'")
    assert f"time=2025-01-01/label=corn: {n - len(listed)}" in summary and " chunks, " in summary
    assert (f"{len(listed)} field-years without a valid pixel" in summary) == bool(len(listed))
    after = {p.relative_to(out): p.read_bytes() for p in out.glob("time=*/label=*/*.parquet")}
    replaced = {p.parent.as_posix() for p in set(before) ^ set(after)}
    assert replaced == {"time=2025-01-01/label=corn"}
    assert all(after[p] == b for p, b in before.items() if p in after)
    # same values (the dataset's PCA model was reused) but the change: the added run reduced
    # 2025 alone, so it has no earlier year to compare with; the same field-years listed (the
    # replaced partition's anew, the others kept)
    assert_same(out, job_out, ignore=("source_store", "change", "change_from"))
    added = read(out).query("time == '2025-01-01' and label == 'corn'")
    assert len(added) == n - len(listed) and added.change.isna().all()
    assert added.change_from.isna().all()
    assert len(list((out / "_runs").glob("*.json"))) == 2
    # different statistics would give partitions different columns: refused, nothing touched
    rc = run_job(sample / "store.zarr", corn, out, "--mode", "add")
    assert rc == 2 and "--mode add" in capsys.readouterr().err
    assert {
        p.relative_to(out): p.read_bytes() for p in out.glob("time=*/label=*/*.parquet")
    } == after
    # the same field-years kept in the data would mix two layouts: refused too
    rc = run_job(
        sample / "store.zarr",
        corn,
        out,
        "--stats",
        ALL_STATS,
        "--mode",
        "add",
        "--rows-without-pixels",
        "inline",
    )
    assert (
        rc == 2 and "keeps its field-years without a valid pixel listed" in capsys.readouterr().err
    )


def test_mode_add_of_a_partition_without_pixels(sample, tmp_path, job_out):
    """A --mode add run whose fields of a partition have no valid pixel (here: moved far away)
    writes no row there: the partition's old rows go all the same, its field-years are listed
    anew, and every other partition and listed field-year stays."""
    out = tmp_path / "out"
    shutil.copytree(job_out, out)
    fields = gpd.read_parquet(sample / "fields.parquet")
    pasture = fields[fields.label == "pasture"].copy()
    pasture["geometry"] = pasture.geometry.translate(xoff=40)  # in Asia, outside the store
    pasture.to_parquet(tmp_path / "pasture.parquet")
    before = {p.relative_to(out): p.read_bytes() for p in out.glob("time=*/label=*/*.parquet")}
    assert (
        run_job(
            sample / "store.zarr",
            tmp_path / "pasture.parquet",
            out,
            "--stats",
            ALL_STATS,
            "--years",
            "2025",
            "--mode",
            "add",
        )
        == 0
    )
    after = {p.relative_to(out): p.read_bytes() for p in out.glob("time=*/label=*/*.parquet")}
    gone = "time=2025-01-01/label=pasture"
    assert {p.parent.as_posix() for p in set(before) - set(after)} == {gone}
    assert after == {p: b for p, b in before.items() if p.parent.as_posix() != gone}
    listed = without_pixels(out)
    mine = listed.query("time == '2025-01-01' and label == 'pasture'")
    assert sorted(mine.feature_id) == sorted(pasture.feature_id)
    assert (mine.reason == "outside the store").all()
    old = without_pixels(job_out).query("not (time == '2025-01-01' and label == 'pasture')")
    assert (
        listed.query("not (time == '2025-01-01' and label == 'pasture')")
        .reset_index(drop=True)
        .equals(old.reset_index(drop=True))
    )
