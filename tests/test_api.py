"""The Python API (aef_zonal.zonal_stats) on DataFrames in a caller's session: the command line's
rows and files, the caller's session left as it was, the command line's messages for bad input."""

from __future__ import annotations

import glob
import os

import geopandas as gpd
import pandas as pd
import pytest

import aef_zonal
from tests.compare import assert_frames_same, read, without_pixels
from tests.conftest import ALL_STATS, run_job

pytestmark = pytest.mark.spark


def scratch_folders(spark) -> list:
    from pyspark import SparkFiles

    return glob.glob(
        os.path.join(os.path.dirname(SparkFiles.getRootDirectory()), "aef-zonal-rows-*")
    )


def fields_frame(spark, sample):
    return spark.read.format("geoparquet").load(str(sample / "fields.parquet"))


def test_api_on_a_filtered_dataframe_gives_the_cli_rows(spark, sample, job_out, tmp_path):
    spark.range(2).createOrReplaceTempView(
        "fields"
    )  # a view of the caller's, as named as a stage's
    partitions = spark.conf.get("spark.sql.shuffle.partitions")
    even = fields_frame(spark, sample).where("feature_id % 2 = 0")
    # the CLI run's model: a fit on other fields would colour them otherwise
    with aef_zonal.zonal_stats(
        even,
        store=str(sample / "store.zarr"),
        stats=ALL_STATS,
        pca_model=str(job_out / "_pca_model.json"),
        spark=spark,
    ) as run:
        cli = read(job_out)
        cli = cli[cli.feature_id % 2 == 0]
        columns = [c for c in cli.columns if c != "geometry"]
        assert sorted(run.df.columns) == sorted(cli.columns)
        rows = run.df.select(*columns).toPandas().sort_values(["time", "feature_id"])
        assert_frames_same(rows, cli[columns])
        assert run.report["fields_crs"].startswith("EPSG:4326")
        listed = without_pixels(job_out)
        listed = listed[listed.feature_id % 2 == 0].reset_index(drop=True)
        assert run.report["fields"] * 2 == len(cli) + len(listed)  # every field-year, once
        got = run.without_pixels.toPandas().sort_values(["time", "label", "feature_id"])
        pd.testing.assert_frame_equal(got.reset_index(drop=True), listed, check_dtype=False)

        report = run.write(tmp_path / "out")
        assert report["rows"] == len(cli) and report["fields_path"] == "the fields DataFrame"
        assert_frames_same(read(tmp_path / "out"), cli)
        assert (tmp_path / "out" / "_SUCCESS").exists() and (
            tmp_path / "out" / "_run.json"
        ).exists()
        with pytest.raises(aef_zonal.JobError, match="already exists"):
            run.write(tmp_path / "out")
        # local mode: the rows wait in a scratch folder of Spark's local dir until close()
        assert run.report["files_cut"] >= 1 and scratch_folders(spark)
    assert not scratch_folders(spark)
    # the caller's session: running, its settings and views its own
    assert spark.conf.get("spark.sql.shuffle.partitions") == partitions
    assert spark.table("fields").count() == 2 and spark.range(5).count() == 5


def test_api_in_a_session_without_sedona_registered(spark, sample, job_out):
    fresh = spark.newSession()  # same JVM, its own function registry: no ST_ functions yet
    with pytest.raises(Exception, match="ST_Point"):
        fresh.sql("SELECT ST_Point(1.0, 2.0)").collect()
    wkb = gpd.read_parquet(sample / "fields.parquet").head(40)
    df = fresh.createDataFrame(
        wkb.assign(geometry=wkb.geometry.to_wkb())[["feature_id", "label", "geometry"]]
    )
    with aef_zonal.zonal_stats(
        df,
        store=str(sample / "store.zarr"),
        years=[2025],
        spark=fresh,
        pca_model=str(job_out / "_pca_model.json"),
    ) as run:
        got = run.df.select("feature_id", "count", "mean").toPandas().sort_values("feature_id")
    cli = read(job_out)
    cli = cli[(cli.time == "2025-01-01") & cli.feature_id.isin(wkb.feature_id)]
    assert_frames_same(got, cli[["feature_id", "count", "mean"]])
    assert fresh.range(3).count() == 3


@pytest.mark.parametrize(
    "case, keywords, argv",
    [
        ("no store", {"store": "nowhere.zarr"}, ["--store", "nowhere.zarr"]),
        ("year", {"years": [2019]}, ["--years", "2019"]),
        ("duplicate ids", {"fields": "dup"}, []),
    ],
)
def test_bad_input_gives_the_cli_message(case, keywords, argv, spark, sample, tmp_path, capsys):
    store, path = str(sample / "store.zarr"), str(sample / "fields.parquet")
    if keywords.get("fields") == "dup":
        f = gpd.read_parquet(path).head(5)
        f.loc[f.index[1], "feature_id"] = f.feature_id.iloc[0]
        path = str(tmp_path / "dup.parquet")
        f.to_parquet(path)
        keywords = {"fields": path}
    given = {"store": store, "fields": path} | keywords
    assert run_job(store, path, tmp_path / "out", *argv) == 2
    err = capsys.readouterr().err
    cli = err[err.index("aef-zonal: error: ") + len("aef-zonal: error: ") :].strip()
    with pytest.raises(aef_zonal.JobError) as e:
        aef_zonal.zonal_stats(given.pop("fields"), spark=spark, **given)
    assert str(e.value).strip() == cli


def test_bad_keywords_are_refused_before_spark_runs(sample):
    with pytest.raises(aef_zonal.JobError, match=r"unknown statistic\(s\) \['avg'\]"):
        aef_zonal.zonal_stats("f.parquet", store="s.zarr", stats=["mean", "avg"])
    with pytest.raises(aef_zonal.JobError, match="--min-coverage needs --pixels"):
        aef_zonal.zonal_stats("f.parquet", store="s.zarr", min_coverage=0.5)
