"""Bad input fails early with a message naming the problem, a non-zero exit, no output left."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest
import shapely

from tests.conftest import run_job

pytestmark = pytest.mark.spark


@pytest.fixture
def fields(sample):
    return gpd.read_parquet(sample / "fields.parquet").head(20)


def assert_refused(rc, err, out, *words):
    assert rc != 0
    for w in words:
        assert w in err, err
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.staging-*")), "staging folder left behind"


@pytest.mark.parametrize(
    "case, words",
    [
        ("missing_id", ["required column(s) ['feature_id'] missing"]),
        ("duplicate_ids", ["feature_id is not unique", "1007 (2 rows)"]),
        ("point", ["not polygons", "ST_Point"]),
    ],
)
def test_bad_fields_are_refused(case, words, fields, sample, tmp_path, capsys, job_out):
    if case == "missing_id":
        fields = fields.rename(columns={"feature_id": "id"})
    elif case == "duplicate_ids":
        fields.loc[fields.index[1], "feature_id"] = fields.feature_id.iloc[0]
    else:
        fields.loc[fields.index[3], "geometry"] = shapely.Point(fields.geometry.iloc[3].centroid)
    path = tmp_path / "fields.parquet"
    fields.to_parquet(path)
    out = tmp_path / "out"
    rc = run_job(sample / "store.zarr", path, out)
    err = capsys.readouterr().err
    assert_refused(rc, err, out, *words)


def test_store_that_does_not_exist(sample, tmp_path, capsys):
    out = tmp_path / "out"
    rc = run_job(tmp_path / "nowhere.zarr", sample / "fields.parquet", out)
    err = capsys.readouterr().err
    assert_refused(rc, err, out, "cannot open Zarr store", "nowhere.zarr")


def test_year_not_in_store(sample, tmp_path, capsys):
    out = tmp_path / "out"
    rc = run_job(sample / "store.zarr", sample / "fields.parquet", out, "--years", "2019")
    err = capsys.readouterr().err
    assert_refused(rc, err, out, "year(s) [2019] not in store", "it has [2024, 2025]")


def test_existing_output_is_not_touched(sample, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc = run_job(sample / "store.zarr", sample / "fields.parquet", out)
    err = capsys.readouterr().err
    assert rc != 0 and "already exists" in err and (out / "keep.txt").read_text() == "mine"


def test_cli_exit_code(sample, tmp_path):
    cli = Path(sys.executable).parent / "aef-zonal"
    proc = subprocess.run(
        [
            str(cli),
            "run",
            "--store",
            str(tmp_path / "none.zarr"),
            "--fields",
            str(sample / "fields.parquet"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "cannot open Zarr store" in proc.stderr
