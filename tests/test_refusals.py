"""What a newcomer gets wrong first, refused before Spark starts: one `aef-zonal: error:` line
naming the file, what is wrong and the fix, exit 2, no stack trace, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from aef_zonal import formats, run, session
from aef_zonal.demo.sample import create_store

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A store's folder inside a sample folder (`out/sample/store.zarr`), no chunk written."""
    folder = tmp_path_factory.mktemp("sample")
    create_store(folder / "store.zarr", (2025,), 256, -93.9, 42.1, 8.983111749910169e-05, shard=256)
    return folder / "store.zarr"


@pytest.fixture(scope="module")
def fields() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "feature_id": np.arange(3, dtype=np.int64),
            "label": ["corn", "soybeans", "corn"],
            "score_mean": np.float32(0.5),
        },
        geometry=[
            shapely.box(-93.89 + i * 0.001, 42.09, -93.8895 + i * 0.001, 42.0905) for i in range(3)
        ],
        crs="EPSG:4326",
    )


@pytest.fixture(autouse=True)
def no_spark(monkeypatch):
    """Every refusal here comes before the JVM: starting one fails the test."""

    def started(*a, **k):
        raise AssertionError("Spark was started")

    monkeypatch.setattr(session, "spark_session", started)


def refused(store, given, out, capsys, *extra) -> str:
    rc = run.main(["--store", str(store), "--fields", str(given), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("aef-zonal: error: ") and len(err.splitlines()) < 3, err
    assert not [w for w in ("Traceback", "Exception", "at org.") if w in err], err
    assert not out.exists()
    return err


def write_csv(f, path):
    pd.DataFrame(f.drop(columns="geometry")).assign(geometry=f.geometry.to_wkt()).to_csv(
        path, index=False
    )


def write_plain(f, path):
    pd.DataFrame(f.drop(columns="geometry")).assign(geometry=f.geometry.to_wkb()).to_parquet(path)


def write_truncated(f, path):
    f.to_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_mixed(f, path):
    path.mkdir()
    f.to_parquet(path / "a.parquet")
    write_csv(f, path / "b.csv")
    f.to_file(path / "c.geojson", driver="GeoJSON")


def write_damaged_footer(f, path):
    f.to_parquet(path)
    data = bytearray(path.read_bytes())
    data[-200:-8] = bytes(192)  # the footer's end zeroed, its length and magic kept
    path.write_bytes(bytes(data))


def write_png(f, path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))


def write_without_dbf(f, path):
    f.to_file(path)
    path.with_suffix(".dbf").unlink()


def write_truncated_shp(f, path):
    f.to_file(path)
    data = path.read_bytes()
    path.write_bytes(data[:-40])


@pytest.mark.parametrize(
    "name, write, words",
    [
        (
            "fields.csv",
            write_csv,
            ["is a CSV text file", '"feature_id,label,score_mean,geometry"', "from_wkt"],
        ),
        (
            "plain.parquet",
            write_plain,
            ["plain Parquet without GeoParquet's 'geo' metadata", "geometry: binary", "from_wkb"],
        ),
        (
            "mixed",
            write_mixed,
            ["mixes formats: 1 CSV (b.csv); 1 GeoJSON (c.geojson); 1 GeoParquet (a.parquet)"],
        ),
        ("cut.parquet", write_truncated, ["is not a whole Parquet file", "truncated"]),
        (
            "damaged.parquet",
            write_damaged_footer,
            ["its Parquet footer is damaged", "write it again"],
        ),
        (
            "fields.parquet",
            write_png,
            ["is a PNG image", "GeoParquet, GeoPackage, Shapefile, GeoJSON or FlatGeobuf"],
        ),
        ("empty.parquet", lambda f, p: p.write_bytes(b""), ["is empty (0 bytes)"]),
        ("nodbf.shp", write_without_dbf, ["nodbf.dbf is missing"]),
        ("cut.shp", write_truncated_shp, ["is not a whole Shapefile", "truncated"]),
        ("absent.parquet", lambda f, p: None, ["fields file", "absent.parquet does not exist"]),
    ],
)
def test_input_that_is_not_fields(name, write, words, fields, store, tmp_path, capsys):
    path = tmp_path / name
    write(fields, path)
    err = refused(store, path, tmp_path / "out", capsys)
    assert str(path) in err and all(w in err for w in words), err


def test_store_given_as_fields_and_a_geopackage_layer(fields, store, tmp_path, capsys):
    err = refused(store, store, tmp_path / "out", capsys)
    assert "is a Zarr store, not fields: give it as --store" in err
    path = tmp_path / "two.gpkg"
    fields.to_file(path, layer="parcels")
    fields.to_file(path, layer="roads")
    assert "has 2 feature layers (parcels, roads); name one with --layer" in refused(
        store, path, tmp_path / "out", capsys
    )
    assert "has no layer 'fields'; its feature layers: parcels, roads" in refused(
        store, path, tmp_path / "out", capsys, "--layer", "fields"
    )
    fields.to_parquet(tmp_path / "f.parquet")
    assert "is GeoParquet, which has one layer; leave --layer out" in refused(
        store, tmp_path / "f.parquet", tmp_path / "out", capsys, "--layer", "parcels"
    )


def test_existing_output_and_the_folder_above_a_store(fields, store, tmp_path, capsys):
    fields.to_parquet(tmp_path / "f.parquet")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("kept")
    rc = run.main(
        ["--store", str(store), "--fields", str(tmp_path / "f.parquet"), "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert rc == 2 and f"output {out} already exists; choose another --out" in err
    assert (out / "mine.txt").read_text() == "kept"
    err = refused(store.parent, tmp_path / "f.parquet", tmp_path / "new", capsys)
    assert f"cannot open Zarr store {store.parent}" in err
    assert f"{store} holds one: pass --store {store}" in err


def test_what_each_format_starts_with():
    head = {
        formats.GEOPARQUET: b"PAR1\x15\x04",
        formats.GEOPACKAGE: b"SQLite format 3\x00" + bytes(52) + b"GPKG" + bytes(28),
        formats.SHAPEFILE: b"\x00\x00\x27\x0a" + bytes(96),
        formats.GEOJSON: b'\xef\xbb\xbf  {"type": "FeatureCollection"',
        formats.FLATGEOBUF: b"fgb\x03fgb\x01",
    }
    assert {k: formats.kind_of("f", h) for k, h in head.items()} == {k: k for k in head}
    for given, what in (
        (b"SQLite format 3\x00" + bytes(84), "an SQLite database but not a GeoPackage"),
        (b"PK\x03\x04zipped", "a ZIP archive (a zipped Shapefile: unzip it and give the .shp)"),
        (b"id;wkt\n1;POLYGON", 'a CSV text file (first line: "id;wkt")'),
        (b"just some words\n", 'a text file (first line: "just some words")'),
        ("é".encode() * 2048 + b"\xc3", None),  # text cut mid-character at the head's end
    ):
        with pytest.raises(formats.FormatError) as e:
            formats.kind_of("f", given)
        assert what is None or what in str(e.value)


def test_the_command_line_prints_one_line(fields, store, tmp_path):
    """The whole process's standard error (what a terminal shows), not only Python's."""
    path = tmp_path / "fields.csv"
    write_csv(fields, path)
    cli = Path(sys.executable).parent / "aef-zonal"
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(cli), "run", "--store", str(store), "--fields", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"aef-zonal: error: {path} is a CSV text file")
    assert len(proc.stderr.splitlines()) == 1 and not out.exists()
