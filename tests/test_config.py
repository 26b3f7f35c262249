"""Settings layering (defaults < --conf file < command line) and the progress line."""

from __future__ import annotations

import io
import sys
import time

import pytest

from aef_zonal.options import parse
from aef_zonal.progress import Progress
from aef_zonal.stages.reduce import Meter

pytestmark = pytest.mark.fast


def write(tmp_path, text):
    path = tmp_path / "my.toml"
    path.write_text(text)
    return str(path)


def test_conf_file_over_defaults_and_options_over_both(tmp_path):
    conf = write(
        tmp_path,
        """
[job]
store = "s3://bucket/aef.zarr"
fields = "f.parquet"
out = "o"
stats = "count,mean,p50"
years = [2024]
[store]
retries = 3
[spark.conf]
"spark.sql.shuffle.partitions" = "64"
""",
    )
    a = parse(["--conf", conf])
    assert (a.store, a.fields, a.out, a.years, a.stats) == (
        "s3://bucket/aef.zarr",
        "f.parquet",
        "o",
        [2024],
        ["count", "mean", "p50"],
    )
    assert a.retries == 3 and a.pixels == "center"  # untouched keys keep their defaults
    assert a.settings["spark"]["conf"]["spark.sql.shuffle.partitions"] == "64"
    assert a.settings["spark"]["conf"]["spark.driver.memory"] == "4g"
    b = parse(["--conf", conf, "--stats", "mean", "--retries", "7", "--years", "2025"])
    assert (b.stats, b.retries, b.years) == (["mean"], 7, [2025])


@pytest.mark.parametrize(
    "text, words",
    [
        ("[job]\nstatz = 'mean'\n", ["unknown setting 'job.statz'"]),
        ("[job\n", ["not valid TOML"]),
    ],
)
def test_bad_conf_file_is_named(tmp_path, capsys, text, words):
    with pytest.raises(SystemExit) as e:
        parse(["--conf", write(tmp_path, text), "--store", "s", "--fields", "f", "--out", "o"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "my.toml" in err and all(w in err for w in words), err


def test_store_is_required_somewhere(capsys):
    with pytest.raises(SystemExit):
        parse(["--fields", "f", "--out", "o"])
    assert "--store is required (or set job.store in a --conf file)" in capsys.readouterr().err


class _Acc:
    def __init__(self, value):
        self.value = value


class _Tracker:
    def __init__(self, done=5, total=8):
        self.done, self.total = done, total

    def getActiveStageIds(self):
        return [3]

    def getStageInfo(self, sid):
        return type("Info", (), {"numCompletedTasks": self.done, "numTasks": self.total})()


class _SC:
    def __init__(self, done=5, total=8):
        self.tracker = _Tracker(done, total)
        self.values = iter([])

    def statusTracker(self):
        return self.tracker

    def accumulator(self, value, param=None):
        return _Acc(next(self.values, value))


def _meter(sc, reads, mb, fy, reads_total, fy_total, with_chunks=None):
    sc.values = iter([reads, 0, mb * 1e6, fy])  # chunk_reads, requests, bytes, field_years
    return Meter(sc, reads_total, fy_total, with_chunks)


def test_progress_line_counts_rate_and_time_left():
    sc = _SC()
    p = Progress(sc, "reduce", _meter(sc, 50, 200, 1234.4, 200, 5000), stream=io.StringIO())
    p.t0 -= 10  # ten seconds in
    line = p.line()
    assert "50/200 chunk reads" in line and "1,234/5,000 field-years" in line
    assert "200 MB (20.0 MB/s)" in line and "~30 s left" in line and "[Spark tasks 5/8]" in line


def test_progress_of_a_stage_without_meter_counts_spark_tasks():
    p = Progress(_SC(done=3, total=12), "write", stream=io.StringIO())
    p.t0 -= 6
    assert p.line() == "[aef-zonal] write: Spark tasks 3/12, 6 s, ~18 s left"


def test_progress_logs_lines_when_not_on_a_terminal():
    sc = _SC()
    out = io.StringIO()
    with Progress(sc, "reduce", _meter(sc, 200, 1, 10.0, 200, 10), stream=out, log_every=0.05):
        time.sleep(0.2)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3 and "\r" not in out.getvalue()
    assert lines[-1].startswith("[aef-zonal] reduce: 200/200 chunk reads, 10/10 field-years")


def test_progress_reaches_the_field_years_without_chunks():
    """Fields outside the store (or without a geometry) have no chunk to read: done from the
    start, so the last line counts every field-year of the run."""
    sc = _SC()
    out = io.StringIO()
    with Progress(sc, "reduce", _meter(sc, 192, 669, 4485.0, 192, 4488, 4485), stream=out):
        pass
    assert "192/192 chunk reads, 4,488/4,488 field-years" in out.getvalue()


def test_a_long_run_gets_c2_and_a_short_or_unknown_one_c1_only(tmp_path):
    import geopandas as gpd
    import shapely

    from aef_zonal import config, filesystem

    path = tmp_path / "fields.parquet"
    gpd.GeoDataFrame(
        {"feature_id": range(3)}, geometry=[shapely.box(0, 0, 1, 1)] * 3, crs="EPSG:4326"
    ).to_parquet(path)
    assert filesystem.local_rows(str(path)) == 3 and filesystem.local_rows(f"file://{path}") == 3
    assert filesystem.local_rows(str(tmp_path / "absent.parquet")) is None
    assert filesystem.local_rows("s3://bucket/fields.parquet") is None  # no request before the JVM
    conf = config.load(write(tmp_path, "[spark]\nc2_from_field_years = 6\n"))
    assert config.jit_options(3 * 2, conf) == []
    assert (
        config.jit_options(3 * 1, conf)
        == config.jit_options(None, conf)
        == ["-XX:TieredStopAtLevel=1"]
    )
    assert (
        config.jit_options(None, config.load(write(tmp_path, "[spark]\nc2_from_field_years = 0\n")))
        == []
    )


def test_viz_commands_without_the_viz_extra_say_how_to_install_it(tmp_path, capsys, monkeypatch):
    from aef_zonal import cli

    monkeypatch.delitem(sys.modules, "aef_zonal.demo.sample", raising=False)
    monkeypatch.setitem(sys.modules, "geopandas", None)  # as if not installed
    assert cli.main(["sample", str(tmp_path / "s")]) == 2
    assert (
        "needs geopandas, which the viz extra installs: pip install 'aef-zonal[viz]'"
        in capsys.readouterr().err
    )


def test_command_line_help_marks_what_is_required_and_its_examples_run_on(capsys):
    from aef_zonal import cli, options

    with pytest.raises(SystemExit):
        parse(["--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: aef-zonal run --store URL --fields FILE --out DIR [options]")
    assert text.index("required (") < text.index("  --store URL") < text.index("options:")
    flat = " ".join(text.split())
    assert "GeoPackage (--layer), Shapefile, GeoJSON or FlatGeobuf" in flat
    assert "integer feature_id" in flat and "the CRS is taken from the file" in flat
    # every example is one shell command: a line that goes on ends with a backslash
    commands = options.EXAMPLES.split("\n", 1)[1].replace("\\\n", " ").splitlines()
    assert all(c.lstrip().startswith("aef-zonal run ") for c in commands), commands
    with pytest.raises(SystemExit):
        cli.main(["sample", "--help"])
    sample = capsys.readouterr().out
    assert "OUT_DIR  " in sample and "store.zarr, fields.parquet" in sample
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("aef-zonal 0.1.0 (pyspark ")


def test_years_with_commas_get_the_hint(capsys):
    with pytest.raises(SystemExit) as e:
        parse(["--store", "s", "--fields", "f", "--out", "o", "--years", "2024,2025"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "'2024,2025' is not a year; separate years by spaces: --years 2024 2025" in err
