"""similar, cluster and probe on the session's job output, against independent references:
numpy's brute-force cosine, scikit-learn's KMeans(n_init=10) and LogisticRegression on the same
split; the cluster output as a dataset (layout, GeoParquet validity, the map); bad input named
with exit 2; the three on an s3:// output (the local S3 server)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from aef_zonal.answers import commands, probe
from aef_zonal.answers.cluster import cluster
from aef_zonal.answers.similar import similar
from aef_zonal.viewers import webmap
from tests.compare import read
from tests.conftest import run_job
from tests.s3server import S3Server

pytestmark = pytest.mark.spark  # the session's job output (main's test tiers)
YEAR = 2025
K = 4


@pytest.fixture(scope="module")
def inline_out(sample, tmp_path_factory):
    """The sample's run with its field-years without a valid pixel kept in the data as rows
    without `mean` (--rows-without-pixels inline), which every answer leaves out and counts."""
    out = tmp_path_factory.mktemp("inline") / "result"
    store, fields = sample / "store.zarr", sample / "fields.parquet"
    assert run_job(store, fields, out, "--rows-without-pixels", "inline", master="local[2,3]") == 0
    return out


@pytest.fixture(scope="module")
def rows(inline_out) -> pd.DataFrame:
    t = read(inline_out)
    t["year"] = t.time.str[:4].astype(int)
    return t


@pytest.fixture(scope="module")
def field(rows, kinds) -> int:
    """A plain field with a valid pixel in every year."""
    valid = rows[rows["mean"].notna()].groupby("feature_id").size()
    return int(next(f for f in valid[valid == 2].index if kinds[f] == "field"))


def unit(means) -> np.ndarray:
    x = np.stack(means)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(rows, q, k, year=None, leave_out=None) -> pd.DataFrame:
    """The k most similar rows by numpy's cosine over every candidate."""
    c = rows[rows["mean"].notna() & (rows.feature_id != leave_out)]
    if year is not None:
        c = c[c.year == year]
    c = c.assign(similarity=unit(c["mean"]) @ (q / np.linalg.norm(q)))
    return c.sort_values(["similarity", "feature_id", "year"], ascending=[False, True, True])[:k]


def assert_same_answer(got: pd.DataFrame, want: pd.DataFrame):
    assert got.feature_id.tolist() == want.feature_id.tolist()
    assert got.year.tolist() == want.year.tolist()
    assert got.label.tolist() == want.label.tolist()
    np.testing.assert_allclose(got.similarity, want.similarity, rtol=0, atol=1e-12)


def test_similar_equals_numpy_brute_force(inline_out, rows, field, tmp_path, capsys):
    own = rows[rows.feature_id == field].set_index("year")["mean"]
    r = similar(inline_out, like=field, year=YEAR, k=10)
    assert_same_answer(r["rows"], brute_force(rows, own[YEAR], 10, YEAR, field))
    assert r["rows"]["rank"].tolist() == list(range(1, 11))
    in_year = rows[rows.year == YEAR]
    assert r["compared"] == in_year["mean"].notna().sum() - 1
    assert r["left_out"] == in_year["mean"].isna().sum() > 0

    # every year searched with the field's latest mean; the field's own years left out
    r = similar(inline_out, like=field, k=25)
    assert r["query"] == {"feature_id": field, "year": YEAR}
    assert_same_answer(r["rows"], brute_force(rows, own[YEAR], 25, leave_out=field))

    # a vector, from the command line, written to a file
    q = np.random.default_rng(0).normal(size=64)
    to = tmp_path / "similar.parquet"
    argv = [
        str(inline_out),
        "--vector",
        ",".join(repr(float(v)) for v in q),
        "--k",
        "5",
        "--to",
        str(to),
    ]
    assert commands.similar_main(argv) == 0
    want = brute_force(rows, q, 5)
    written = pq.read_table(to).to_pandas()
    assert_same_answer(written, want)
    assert json.loads(pq.read_schema(to).metadata[b"geo"])["primary_column"] == "geometry"
    shown = capsys.readouterr().out
    assert "most similar to a given vector (cosine, exact)" in shown
    assert f"{want.feature_id.iloc[0]}" in shown and "wrote 5 rows" in shown


def test_similar_in_each_year(inline_out, rows, field):
    """The field's own mean of each year against that year's fields; a vector against each year."""
    r = similar(inline_out, like=field, k=5, each_year=True)
    own = rows[rows.feature_id == field].set_index("year")["mean"]
    for year in (2024, 2025):
        got = r["rows"][r["rows"].year == year]
        assert_same_answer(got, brute_force(rows, own[year], 5, year, field))
    assert r["rows"]["rank"].tolist() == [1, 2, 3, 4, 5] * 2
    q = np.random.default_rng(1).normal(size=64)
    r = similar(inline_out, vector=q, k=3, each_year=True)
    for year in (2024, 2025):
        assert_same_answer(r["rows"][r["rows"].year == year], brute_force(rows, q, 3, year))


@pytest.fixture(scope="module")
def clustered(inline_out, tmp_path_factory):
    out = tmp_path_factory.mktemp("clusters")
    first = cluster(inline_out, K, to=out / "a", seed=7, by="label")
    again = cluster(inline_out, K, to=out / "b", seed=7)
    return out, first, again


def test_cluster_is_k_means_of_the_unit_means(rows, clustered):
    out, r, again = clustered
    got = read(out / "a")
    assert got.feature_id.tolist() == rows.feature_id.tolist()  # every row, the same order
    assert got.cluster.isna().tolist() == rows["mean"].isna().tolist()
    valid = got[got.cluster.notna()]
    x, centres = unit(valid["mean"]), np.asarray(r["centres"])
    d = ((x[:, None, :] - centres[None]) ** 2).sum(axis=2)
    assert (d.argmin(axis=1) == valid.cluster.to_numpy()).all(), "each row at its nearest centre"
    np.testing.assert_allclose(d.min(axis=1).sum(), r["inertia"], rtol=1e-9)
    from sklearn.cluster import KMeans

    reference = KMeans(K, n_init=10, random_state=0).fit(x).inertia_
    print(f"\ninertia: MLlib {r['inertia']:.4f}, scikit-learn {reference:.4f}")
    assert abs(r["inertia"] - reference) <= 0.02 * reference
    assert r["clustered"] == len(valid) and r["left_out"] == rows["mean"].isna().sum()
    assert r["sizes"] == valid.cluster.astype(int).value_counts().sort_index().to_dict()
    composition = valid.groupby(["cluster", "label"]).size()
    assert {
        (c, label): n for c, counts in r["composition"].items() for label, n in counts.items()
    } == {(int(c), label): n for (c, label), n in composition.items()}
    assert read(out / "b").cluster.equals(got.cluster), "the same seed, the same clusters"


def test_cluster_output_is_the_datasets_layout(inline_out, clustered, tmp_path, capsys):
    import geoparquet_validator as gpv

    out, r, _ = clustered
    files = sorted((out / "a").glob("time=*/label=*/*.parquet"))
    source = sorted(inline_out.glob("time=*/label=*/*.parquet"))
    assert {f.parent.relative_to(out / "a") for f in files} == {
        f.parent.relative_to(inline_out) for f in source
    }
    assert pq.read_schema(files[0]).names == [
        *(n for n in pq.read_schema(source[0]).names),
        "cluster",
    ]
    for f in files:
        report = gpv.check_bytes(str(f), f.read_bytes())
        assert report["version"] == "1.1.0" and gpv.conformant(report, "core"), gpv.failed(report)
        assert not gpv.failed(report, "covering"), gpv.failed(report)
    geo = [json.loads(pq.read_schema(f).metadata[b"geo"]) for f in (files[0], source[0])]
    assert geo[0]["columns"]["geometry"]["crs"] == geo[1]["columns"]["geometry"]["crs"]
    assert (out / "a" / "_pca_model.json").read_text() == (
        inline_out / "_pca_model.json"
    ).read_text()
    report = json.loads((out / "a" / "_run.json").read_text())
    assert report["answer"] == "cluster" and report["k"] == K and report["seed"] == 7

    # the map colours each field by its cluster
    page = tmp_path / "map.html"
    assert webmap.main([str(out / "a"), "--color", "cluster", "--to", str(page)]) == 0
    table = webmap.read_fields(out / "a", YEAR, colour="cluster")
    rgb, ids, key = webmap.cluster_colours(table["cluster"])
    palette = webmap.cluster_palette(K)
    assert len({tuple(c) for c in palette}) == K and len(key) == K
    assert (rgb[ids >= 0] == palette[ids[ids >= 0]]).all()
    assert (rgb[ids < 0] == webmap.NO_PIXEL).all() and (ids < 0).any()
    assert "k-means cluster" in page.read_text() and "cluster 0: " in page.read_text()
    assert webmap.main([str(inline_out), "--color", "cluster", "--to", str(page)]) == 2
    assert "has no cluster column" in capsys.readouterr().err

    # an existing folder is refused
    assert commands.cluster_main([str(inline_out), "--k", "2", "--to", str(out / "a")]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.fixture(scope="module")
def probed(inline_out, tmp_path_factory) -> dict:
    """The probe of the sample's crops (label) over both years, from the command line."""
    to = tmp_path_factory.mktemp("probe") / "probe.json"
    assert commands.probe_main([str(inline_out), "--label-column", "label", "--to", str(to)]) == 0
    return json.loads(to.read_text())


def test_probe_beats_the_baseline_like_scikit_learn_on_the_same_split(rows, probed):
    from pyspark.sql import SparkSession
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    r = probed
    # the split, as the probe makes it, checked: field-disjoint and stratified
    spark = SparkSession.getActiveSession()
    data = rows[rows["mean"].notna()][["feature_id", "time", "label"]]
    frame = spark.createDataFrame(data.rename(columns={"label": "class"}))
    side = probe.split(frame, 0.2, 42).toPandas().set_index("feature_id")["test"]
    data = data.join(side, on="feature_id")
    fields = data.groupby("feature_id").agg(sides=("test", "nunique"), label=("label", "first"))
    assert (fields.sides == 1).all(), "no field on both sides"
    for label, group in data.drop_duplicates("feature_id").groupby("label"):
        assert group.test.sum() == round(0.2 * len(group)), label  # each class in proportion
        assert r["per_class"][label]["test_fields"] == group.test.sum()
        assert r["per_class"][label]["test_rows"] == data[data.label == label].test.sum()
    assert r["rows"]["test"] == data.test.sum() and r["rows"]["train"] == (~data.test).sum()

    x = np.stack(rows.loc[data.index, "mean"])
    y, test = data.label.to_numpy(), data.test.to_numpy()
    # the same objective: MLlib's mean log-loss + reg/2 |w|² on standardised features
    reference = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=1 / ((~test).sum() * probe.REG_PARAM), max_iter=10_000),
    ).fit(x[~test], y[~test])
    accuracy = reference.score(x[test], y[test])
    print(f"\nprobe accuracy: MLlib {r['accuracy']:.4f}, scikit-learn {accuracy:.4f}")
    assert abs(r["accuracy"] - accuracy) <= 0.03
    majority = pd.Series(y[~test]).value_counts().idxmax()
    assert r["baseline"] == {"class": majority, "accuracy": float((y[test] == majority).mean())}
    assert r["accuracy"] > r["baseline"]["accuracy"] + 0.1
    confusion = np.asarray(r["confusion"])
    assert confusion.sum() == test.sum() and np.trace(confusion) / test.sum() == r["accuracy"]
    assert r["classes"] == sorted(set(y))


@pytest.fixture(scope="module")
def one_label(inline_out, tmp_path_factory):
    """An output of one label: the corn partitions alone."""
    out = tmp_path_factory.mktemp("one") / "corn"
    for f in inline_out.glob("time=*/label=corn/*.parquet"):
        (out / f.parent.relative_to(inline_out)).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, out / f.relative_to(inline_out))
    return out


@pytest.fixture(scope="module")
def no_pixel(inline_out, tmp_path_factory):
    """An output whose rows all lack a valid pixel."""
    out = tmp_path_factory.mktemp("empty") / "out"
    for f in sorted(inline_out.glob("time=*/label=*/*.parquet")):
        table = pq.read_table(f)
        table = table.filter(table["mean"].is_null())
        if table.num_rows:
            break
    (out / f.parent.relative_to(inline_out)).mkdir(parents=True)
    pq.write_table(table, out / f.relative_to(inline_out))
    return out


@pytest.mark.parametrize(
    "command,args,words",
    [
        ("probe", ["--label-column", "crop"], "column 'crop' is not in"),
        ("cluster", ["--k", "3", "--by", "crop", "--to", "{tmp}/c"], "column 'crop' is not in"),
        ("probe", ["--year", "2019"], "year 2019 is not in {out}; it has 2024, 2025"),
        ("similar", ["--like", "1", "--year", "2019"], "year 2019 is not in"),
        ("cluster", ["--k", "100000", "--to", "{tmp}/c"], "k 100000 is larger than the"),
        ("similar", ["--like", "{field}", "--k", "100000"], "k 100000 is larger than the"),
        ("similar", ["--like", "999999999"], "field 999999999 is not in"),
        ("similar", ["--vector", "1,2,3"], "vector: 3 numbers; the output's mean has 64"),
        ("cluster", ["--k", "2", "--to", "{out}/inside"], "is inside the output"),
        ("probe", ["--test-fraction", "1.5"], "give a number between 0 and 1"),
    ],
)
def test_bad_input_is_named_with_exit_2(inline_out, field, tmp_path, capsys, command, args, words):
    fill = {"tmp": tmp_path, "out": inline_out, "field": field}
    argv = [str(inline_out), *(a.format(**fill) for a in args)]
    assert getattr(commands, f"{command}_main")(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"aef-zonal {command}: error: "), err
    assert words.format(**fill) in err[0], err
    assert not (tmp_path / "c").exists()


def test_an_output_of_one_class_or_without_pixels_is_refused(one_label, no_pixel, tmp_path, capsys):
    assert commands.probe_main([str(one_label)]) == 2
    assert "column 'label' has one class ('corn')" in capsys.readouterr().err
    for command in ("similar", "cluster", "probe"):
        extra = {"similar": ["--like", "1"], "cluster": ["--k", "2", "--to", str(tmp_path / "c")]}
        assert getattr(commands, f"{command}_main")([str(no_pixel), *extra.get(command, [])]) == 2
        assert "has no row with a valid pixel in any year" in capsys.readouterr().err
    assert commands.probe_main([str(tmp_path)]) == 2
    assert "is not an aef-zonal output" in capsys.readouterr().err


# --- the three on an s3:// output ----------------------------------------------------------------

BUCKET = "answers"  # not the S3 tests' bucket: S3A keeps one filesystem per bucket per session


@pytest.fixture(scope="module")
def s3(inline_out, tmp_path_factory):
    with S3Server() as server:
        server.client.create_bucket(Bucket=BUCKET)
        for f in sorted(inline_out.rglob("*")):
            if f.is_file() and not f.name.startswith("."):
                key = f"in/{f.relative_to(inline_out).as_posix()}"
                server.client.put_object(Bucket=BUCKET, Key=key, Body=f.read_bytes())
        server.conf = server.conf_file(tmp_path_factory.mktemp("s3") / "s3.toml")
        yield server


def test_the_three_on_an_s3_output(s3, rows, field, probed):
    url, conf = f"s3://{BUCKET}/in", str(s3.conf)
    r = similar(url, like=field, year=YEAR, k=10, conf=conf)
    own = rows[(rows.feature_id == field) & (rows.year == YEAR)]["mean"].iloc[0]
    assert_same_answer(r["rows"], brute_force(rows, own, 10, YEAR, field))

    r = cluster(url, K, to=f"s3://{BUCKET}/clusters", year=YEAR, seed=7, conf=conf)
    got = read(f"{BUCKET}/clusters", s3.arrow_fs())
    assert got.feature_id.tolist() == rows[rows.year == YEAR].feature_id.tolist()
    valid = got[got.cluster.notna()]
    d = ((unit(valid["mean"])[:, None, :] - np.asarray(r["centres"])[None]) ** 2).sum(axis=2)
    assert (d.argmin(axis=1) == valid.cluster.to_numpy()).all()
    keys = s3.objects("clusters/", bucket=BUCKET)
    assert {"clusters/_SUCCESS", "clusters/_run.json", "clusters/_pca_model.json"} <= set(keys)

    to = f"s3://{BUCKET}/probe.json"
    r = probe.probe(url, to=to, conf=conf)
    written = json.loads(s3.client.get_object(Bucket=BUCKET, Key="probe.json")["Body"].read())
    assert written == json.loads(json.dumps(r))
    # the same split (it depends on the ids and the seed alone); the fit may round differently
    assert sides(r) == sides(probed) and abs(r["accuracy"] - probed["accuracy"]) <= 0.01


def sides(r: dict) -> dict:
    return {c: (v["train_rows"], v["test_rows"]) for c, v in r["per_class"].items()}
