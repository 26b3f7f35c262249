"""udfs/statistics.py: a statistic is one record, from which the options' check, the reduction's
flags, the schemas and the output's columns follow (numpy and pyarrow alone)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from aef_zonal import config, dataset, options
from aef_zonal.errors import JobError
from aef_zonal.udfs import statistics
from aef_zonal.udfs.finish import Finish, finish_batch
from aef_zonal.udfs.quantisation import Quantisation

pytestmark = pytest.mark.fast

SQUARE = Quantisation(True, 1 / 127.5**2, 0.0, -128)
TOY = statistics.Statistic(
    "range",
    "per band: max - min",
    lambda m: m.a * (m.partials["umax"] - m.partials["umin"]),
    frozenset({statistics.EXTREMES}),
)


@pytest.fixture
def toy(monkeypatch):
    """The registry with one more record, as adding it to udfs/statistics.py would make it."""
    monkeypatch.setattr(statistics, "RECORDS", (*statistics.RECORDS, TOY))
    monkeypatch.setattr(statistics, "BY_NAME", {**statistics.BY_NAME, "range": TOY})


def test_a_new_record_is_a_statistic_everywhere(toy):
    o = options.build(config.load(None), store="s.zarr", fields="f.parquet", stats="count,range")
    assert [s.name for s in o.statistics] == ["count", "mean", "range"]
    assert "range" in dataset.columns(o.stats) and "std" not in dataset.columns(o.stats)
    f = Finish(SQUARE, 2, tuple(o.stats))
    assert f.extremes and not f.histograms  # the reduction keeps what the record needs
    assert f.schema().names == [
        "feature_id", "year", "count", "inside", "mean", "range", "skipped_chunks"
    ]  # fmt: skip
    u = np.array([[100, -400], [2500, 900], [-3600, 1600]])  # 3 pixels x 2 bands, two chunks
    nested = pa.list_(pa.list_(pa.int64()))
    batch = pa.RecordBatch.from_pydict(
        {
            "feature_id": pa.array([1], pa.int64()),
            "year": pa.array([2024], pa.int32()),
            "count": pa.array([3], pa.int64()),
            "inside": pa.array([3], pa.int64()),
            "l1": pa.array([[u[:2].sum(0).tolist(), u[2:].sum(0).tolist()]], nested),
            "l2": pa.array([[(u[:2] ** 2).sum(0).tolist(), (u[2:] ** 2).sum(0).tolist()]], nested),
            "lmin": pa.array([[u[:2].min(0).tolist(), u[2:].min(0).tolist()]], nested),
            "lmax": pa.array([[u[:2].max(0).tolist(), u[2:].max(0).tolist()]], nested),
            "hkeys": pa.array([[]], pa.list_(pa.int16())),
            "hcounts": pa.array([[]], pa.list_(pa.int32())),
            "skipped_chunks": pa.array([[]], pa.list_(pa.string())),
        }
    )
    (row,) = finish_batch(batch, f).to_pylist()
    v = u / 127.5**2
    np.testing.assert_allclose(row["range"], v.max(0) - v.min(0), rtol=1e-15)
    np.testing.assert_allclose(row["mean"], v.mean(0), rtol=1e-15)


def test_unknown_statistics_are_refused_naming_them():
    with pytest.raises(JobError, match=r"unknown statistic\(s\) \['mode', 'p200'\]; choose among"):
        options.build(config.load(None), store="s", fields="f", stats="mean,mode,p200")


def test_the_output_order_and_quantiles():
    stats = statistics.parse(["p95", "valid_fraction", "count", "median", "change"])
    assert [s.name for s in stats] == ["count", "mean", "valid_fraction", "change", "p95", "median"]
    assert [s.level for s in stats[-2:]] == [0.95, 0.5]
    assert statistics.needs(stats) == {statistics.HISTOGRAMS}
    assert stats[3].columns == ("change", "change_from")
    # made elsewhere: the count by the kernel, change by its stage
    assert [s.name for s in statistics.finished(stats)] == [
        "mean",
        "valid_fraction",
        "p95",
        "median",
    ]
