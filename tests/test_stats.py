"""Statistics beyond the mean and the three pixel rules, against independent references."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pytest

from aef_zonal import options
from tests import aligned, reference
from tests.compare import read, without_pixels
from tests.conftest import run_job

pytestmark = pytest.mark.spark

QS = {"p05": 0.05, "median": 0.5, "p95": 0.95}
# fraction's weighted quantiles against exactextract's (float32 coverages): 6.6e-9 measured
QUANTILE_TOLERANCE = 1e-7


def load(out):
    t = read(out)
    t["year"] = t["time"].str.slice(0, 4).astype(int)
    return t.set_index(["feature_id", "year"]).sort_index()


def run_rule(sample, job_out, tmp_path_factory, rule, stats, fields):
    """A run of another pixel rule; its field-years without a valid pixel kept inline, so that
    every field-year is a row (count 0, null statistics, valid_fraction 0 where it has some)."""
    out = tmp_path_factory.mktemp(rule) / "result"
    assert (
        run_job(
            sample / "store.zarr",
            fields,
            out,
            "--pixels",
            rule,
            "--stats",
            stats,
            "--pca-model",
            str(job_out / "_pca_model.json"),
            "--rows-without-pixels",
            "inline",
        )
        == 0
    )
    return load(out)


ALIGNED_IDS = 900_000


@pytest.fixture(scope="module")
def fields(sample):
    return gpd.read_parquet(sample / "fields.parquet")


@pytest.fixture(scope="module")
def with_aligned(sample, fields, tmp_path_factory):
    """The sample's fields plus tests/aligned.py's polygons on pixel boundaries and corners."""
    import pandas as pd

    from aef_zonal.udfs.store import describe

    grid = describe(str(sample / "store.zarr")).grid
    extra = gpd.GeoDataFrame(
        {
            "feature_id": ALIGNED_IDS + np.arange(len(aligned.CASES)),
            "label": "aligned",
            "geometry": [aligned.to_degrees(g, grid) for g in aligned.CASES.values()],
        },
        crs=fields.crs,
    )
    both = gpd.GeoDataFrame(pd.concat([fields, extra], ignore_index=True), crs=fields.crs)
    path = tmp_path_factory.mktemp("aligned") / "fields.parquet"
    both.to_parquet(path)
    return both, path


@pytest.fixture(scope="module")
def all_kinds(kinds):
    return kinds | {ALIGNED_IDS + i: f"aligned: {name}" for i, name in enumerate(aligned.CASES)}


@pytest.fixture(scope="module")
def store(sample):
    return reference.open_store(sample / "store.zarr")


@pytest.fixture(scope="module")
def center(job_out):
    return load(job_out)


@pytest.fixture(scope="module")
def center_listed(job_out) -> set:
    """The session run's field-years without a valid pixel, listed beside its data."""
    t = without_pixels(job_out)
    return set(zip(t.feature_id, t.time.str.slice(0, 4).astype(int)))


@pytest.fixture(scope="module")
def touched(sample, job_out, tmp_path_factory, with_aligned):
    return run_rule(
        sample,
        job_out,
        tmp_path_factory,
        "all-touched",
        "count,mean,std,median,valid_fraction",
        with_aligned[1],
    )


@pytest.fixture(scope="module")
def fraction(sample, job_out, tmp_path_factory, with_aligned):
    return run_rule(
        sample,
        job_out,
        tmp_path_factory,
        "fraction",
        "count,mean,std,valid_fraction,p05,median,p95",
        with_aligned[1],
    )


def test_center_quantiles_extremes_and_more_are_exact(center, center_listed, fields, store):
    worst = 0.0
    for fid, geom in zip(fields.feature_id, fields.geometry):
        for year in (2024, 2025):
            ref = reference.field_stats(store, geom, year)
            if ref["count"] == 0:  # listed beside the data (test_reference.py: with its reason)
                assert (fid, year) in center_listed and (fid, year) not in center.index
                continue
            row = center.loc[(fid, year)]
            assert row["valid_fraction"] == pytest.approx(ref["count"] / ref["inside"], abs=1e-15)
            v = ref["values"]
            # exact order statistics: numpy.quantile to float precision (the job's code -> value
            # table is a * u, the reference's (q / 127.5)^2: 1 ulp apart)
            want = np.quantile(v, list(QS.values()), axis=1, method="linear")
            for name, w in zip(QS, want):
                np.testing.assert_allclose(row[name], w, rtol=1e-15, atol=1e-17)
            np.testing.assert_allclose(row["min"], v.min(axis=1), rtol=1e-15, atol=1e-17)
            np.testing.assert_allclose(row["max"], v.max(axis=1), rtol=1e-15, atol=1e-17)
            # fsum: the correctly rounded sum (a float loop over 10^5 values drifts by ~1e-8)
            exact = np.array([math.fsum(band) for band in v])
            # relative to sum |v|: each reference value carries its own rounding of (q / 127.5)^2
            worst = max(
                worst, (np.abs(np.asarray(row["sum"]) - exact) / np.abs(v).sum(axis=1)).max()
            )
            m = np.asarray(row["mean"])
            np.testing.assert_allclose(row["mean_normalized"], m / np.linalg.norm(m), atol=1e-12)
    assert worst <= 2e-15


def test_change_is_one_minus_the_cosine_of_the_years_means(center, fields, store, kinds):
    """change (2025 against 2024) against numpy on the reference means: 1e-12; null in 2024 and
    where either year has no valid pixel."""
    worst = 0.0
    for fid, geom in list(zip(fields.feature_id, fields.geometry))[::3]:
        a, b = (reference.field_stats(store, geom, year)["mean"] for year in (2024, 2025))
        if a is not None:  # a field-year without a pixel is listed beside the data, no row
            first = center.loc[(fid, 2024)]
            assert np.isnan(first["change"]) and np.isnan(first["change_from"])
        if b is None:
            continue
        row = center.loc[(fid, 2025)]
        if a is None:
            assert np.isnan(row["change"]) and np.isnan(row["change_from"]), kinds[fid]
            continue
        want = 1 - a @ b / np.sqrt((a @ a) * (b @ b))
        worst = max(worst, abs(row["change"] - want))
        assert row["change_from"] == 2024
    print(f"change vs numpy: worst {worst:.3g}")
    assert worst <= 1e-12


def test_all_touched_matches_exactextract(touched, with_aligned, store, all_kinds):
    """Every sample field: exactly the pixels exactextract covers; every polygon on pixel
    boundaries: exactly those sharing area with it (shapely in pixel units, where the corners
    are exact: exactextract in degrees gives the pixels beyond a 512 px edge slivers of ~1e-8);
    their statistics to float64 rounding."""
    both = with_aligned[0]
    worst = 0.0
    for fid, geom in zip(both.feature_id, both.geometry):
        for year in (2024, 2025):
            ref = (
                reference.field_stats(store, geom, year, all_touched=True)
                if fid < ALIGNED_IDS
                else reference.pixel_stats(
                    store,
                    dict.fromkeys(
                        aligned.shapely_touched(list(aligned.CASES.values())[fid - ALIGNED_IDS]),
                        1.0,
                    ),
                    year,
                )
            )
            row = touched.loc[(fid, year)]
            assert row["count"] == ref["count"], (fid, year, all_kinds[fid])
            if ref["count"]:
                worst = max(worst, reference.rounding_error(row, ref))
                np.testing.assert_allclose(
                    row["median"], np.median(ref["values"], axis=1), rtol=1e-15, atol=1e-17
                )
    print(f"worst mean/std error in units of mean |v|: {worst:.3g}")
    assert worst <= 1e-12


def test_fraction_matches_exactextract(fraction, with_aligned, store, all_kinds):
    both = with_aligned[0]
    special = [fid for fid in both.feature_id if all_kinds[fid] != "field" and fid < ALIGNED_IDS]
    regular = [fid for fid in both.feature_id if all_kinds[fid] == "field"][::12]
    geoms = dict(zip(both.feature_id, both.geometry))
    worst, worst_q = 0.0, 0.0
    for fid in special + regular:
        for year in (2024, 2025):
            ref = reference.fraction_stats(store, geoms[fid], year, qs=tuple(QS.values()))
            row = fraction.loc[(fid, year)]
            # exactextract keeps coverage fractions in float32
            assert row["count"] == pytest.approx(ref["count"], rel=1e-6), (fid, all_kinds[fid])
            if ref["count"]:
                worst = max(
                    worst,
                    np.abs(np.asarray(row["mean"]) - ref["mean"]).max(),
                    np.abs(np.asarray(row["std"]) - ref["std"]).max(),
                )
                got = np.stack([np.asarray(row[name]) for name in QS])
                worst_q = max(worst_q, np.abs(got - ref["quantiles"]).max())
    # the weights are areas, not integers; exactextract's are float32 (~1e-7 relative)
    print(f"fraction vs exactextract: mean/std {worst:.3g}, weighted quantiles {worst_q:.3g}")
    assert worst <= 1e-6
    # a weighted quantile interpolates between two adjacent values by (h - s_l) / (s_r - s_l),
    # differences of sums over the whole field, which float32 weights move by ~1e-7 of the
    # field's weight over one value's (tests/test_finish.py: equal to float64 rounding where
    # exactextract holds the coverages exactly)
    assert worst_q <= QUANTILE_TOLERANCE
    # on pixel boundaries: the covered share of each pixel by shapely in pixel units (exact);
    # the job's GEOS areas in degrees carry ~1e-10 of a pixel each
    for i, geom in enumerate(aligned.CASES.values()):
        for year in (2024, 2025):
            ref = reference.pixel_stats(store, aligned.shapely_coverage(geom), year)
            row = fraction.loc[(ALIGNED_IDS + i, year)]
            assert row["count"] == pytest.approx(ref["count"], rel=1e-10), list(aligned.CASES)[i]
            assert reference.rounding_error(row, ref) <= 1e-9, list(aligned.CASES)[i]


MIN_COVERAGE = 0.5


def with_columns(fields):
    """The sample's fields with the columns users bring: strings, numbers, dates, lists,
    structs, written with GeoParquet 1.1's bbox covering (not carried: the output has its own)."""
    import datetime

    out = fields.copy()
    n = len(out)
    out["crop_code"] = [f"C{i % 7:02d}" for i in range(n)]
    out["area_ha"] = np.linspace(0.5, 80.0, n)
    out["farm_id"] = np.arange(n, dtype=np.int32) // 5
    out["sown"] = [datetime.date(2024, 4, 1) + datetime.timedelta(days=i % 60) for i in range(n)]
    out["rotation"] = [[i % 3, i % 5] for i in range(n)]
    out["owner"] = [{"name": f"farm {i // 5}", "since": 1990 + i % 30} for i in range(n)]
    out.loc[3, "crop_code"] = None
    return out


KEPT = ("score_mean", "score_std", "crop_code", "area_ha", "farm_id", "sown", "rotation", "owner")


@pytest.fixture(scope="module")
def extras(sample, job_out, fields, tmp_path_factory):
    """One run for the options beyond the pixel rules: fraction with --min-coverage, and every
    input column kept (--keep-columns all)."""
    path = tmp_path_factory.mktemp("extras") / "fields.parquet"
    with_columns(fields).to_parquet(path, write_covering_bbox=True)
    out = path.parent / "result"
    assert (
        run_job(
            sample / "store.zarr",
            path,
            out,
            "--pixels",
            "fraction",
            "--min-coverage",
            str(MIN_COVERAGE),
            "--stats",
            "count,mean,std",
            "--keep-columns",
            "all",
            "--pca-model",
            str(job_out / "_pca_model.json"),
            # every field-year a row: those min_coverage leaves without a pixel too
            "--rows-without-pixels",
            "inline",
        )
        == 0
    )
    return out


def test_keep_columns_carries_every_input_column_unchanged(extras, fields):
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    given = pq.read_table(extras.parent / "fields.parquet")
    written = ds.dataset(extras, format="parquet", partitioning="hive").to_table()
    o = options.parse(["--store", "s", "--fields", "f", "--out", "o", "--stats", "count,mean,std"])
    # exactly the published columns, the statistics asked for, and the kept input columns
    assert set(written.column_names) == o.output_columns() | set(KEPT)
    names = written.column_names
    assert names[1 : 1 + len(KEPT)] == list(KEPT)  # where score_mean, score_std always were
    for name in KEPT[2:]:  # types as read: string, double, int32, date32, list, struct
        typ = given.schema.field(name).type
        # pandas' strings come as Arrow's large_string, Spark writes string: both Parquet STRING
        assert written.schema.field(name).type == (
            pa.string() if typ == pa.large_string() else typ
        ), name
    want = given.select(["feature_id", *KEPT[2:]]).to_pylist()
    want = {r["feature_id"]: r for r in want}
    rows = written.select(["feature_id", *KEPT]).to_pylist()
    assert len(rows) == 2 * len(fields)
    for r in rows:
        assert {k: r[k] for k in KEPT[2:]} == {k: want[r["feature_id"]][k] for k in KEPT[2:]}
    scores = dict(zip(fields.feature_id, fields.score_mean))
    assert all(r["score_mean"] == scores[r["feature_id"]] for r in rows)
    assert written.schema.field("score_mean").type == "float"


def test_keep_columns_refusals(sample, fields, tmp_path, capsys):
    """A kept name that is an output column, or not in the file, or (with all) an input column
    named like an output column: refused naming it, exit 2, nothing written."""
    with pytest.raises(SystemExit) as e:
        options.parse(
            ["--store", "s", "--fields", "f", "--out", "o", "--keep-columns", "crop,mean"]
        )
    assert e.value.code == 2 and "--keep-columns: mean would clash" in capsys.readouterr().err
    assert (
        options.parse(
            ["--store", "s", "--fields", "f", "--out", "o", "--keep-columns", "none"]
        ).keep_columns
        == ()
    )
    path = tmp_path / "fields.parquet"
    clashing = fields.head(20).assign(count=1)
    clashing.to_parquet(path)
    for keep, message in (
        ("all", "input column(s) ['count'] would clash"),
        ("score_mean,crop", "--keep-columns names ['crop'], not in the file"),
    ):
        out = tmp_path / f"out-{keep}"
        assert run_job(sample / "store.zarr", path, out, "--keep-columns", keep) == 2
        assert message in capsys.readouterr().err and not out.exists()
    # none: not even the scores, and the input's own `count` is no clash then
    assert run_job(sample / "store.zarr", path, tmp_path / "none", "--keep-columns", "none") == 0
    names = read(tmp_path / "none").columns
    assert "score_mean" not in names and "geometry" in names and "count" in names


def test_min_coverage_matches_exactextract(extras, fields, store, kinds):
    """--pixels fraction --min-coverage 0.5 against exactextract's min_coverage_frac=0.5: the
    edge cases and every 12th ordinary field, both years."""
    table = load(extras)
    special = [fid for fid in fields.feature_id if kinds[fid] != "field"]
    regular = [fid for fid in fields.feature_id if kinds[fid] == "field"][::12]
    geoms = dict(zip(fields.feature_id, fields.geometry))
    worst, dropped = 0.0, 0
    for fid in special + regular:
        for year in (2024, 2025):
            ref = reference.fraction_stats(store, geoms[fid], year, min_coverage=MIN_COVERAGE)
            row = table.loc[(fid, year)]
            assert row["count"] == pytest.approx(ref["count"], rel=1e-6, abs=1e-9), (
                fid,
                kinds[fid],
            )
            if ref["count"]:
                worst = max(
                    worst,
                    np.abs(np.asarray(row["mean"]) - ref["mean"]).max(),
                    np.abs(np.asarray(row["std"]) - ref["std"]).max(),
                )
            else:
                dropped += 1
                assert row["mean"] is None and row["reason"] is not None
    print(
        f"min-coverage: worst mean/std difference {worst:.3g}, {dropped} field-years left without a pixel"
    )
    # exactextract's coverage fractions are float32 (~1e-7 relative), as for plain fraction
    assert worst <= 1e-6 and dropped > 0


def by_kind(table, kinds, kind, year):
    return next(row for (fid, y), row in table.iterrows() if kinds[fid] == kind and y == year)


def test_all_nodata_and_single_pixel_fields_in_every_mode(
    center, center_listed, touched, fraction, all_kinds, fields, store
):
    kinds = all_kinds
    missing = next(f for f in fields.feature_id if kinds[f] == "missing-chunk")
    assert (missing, 2024) in center_listed  # its chunk was never written
    for table in (touched, fraction):  # kept inline: its row says so
        empty = by_kind(table, kinds, "missing-chunk", 2024)
        assert empty["count"] == 0 and empty["mean"] is None and empty["std"] is None
        assert empty["valid_fraction"] == 0 and empty["reason"] == "no valid pixel (all nodata)"
    geom = fields.geometry[[kinds[f] == "subpixel-centre" for f in fields.feature_id]].iloc[0]
    ref = reference.field_stats(store, geom, 2025)
    assert ref["count"] == 1
    pixel = ref["values"][:, 0]
    coverage = pytest.approx(geom.area / (8.983111749910169e-05**2))
    # integer sums give std exactly 0; weighted float sums leave ~sqrt(eps) * |value|
    for table, count, std_tol in ((center, 1, 0), (touched, 1, 0), (fraction, coverage, 1e-8)):
        row = by_kind(table, kinds, "subpixel-centre", 2025)
        assert row["count"] == count
        np.testing.assert_allclose(row["mean"], pixel, atol=1e-15)
        np.testing.assert_allclose(row["std"], 0, atol=std_tol)
    np.testing.assert_allclose(
        by_kind(center, kinds, "subpixel-centre", 2025)["median"], pixel, rtol=1e-15, atol=1e-17
    )
