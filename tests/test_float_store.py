"""An unquantised float32 store (`aef-zonal sample --dtype float32`): the job against xarray."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest

from tests import reference
from tests.compare import read
from tests.conftest import run_job

pytestmark = pytest.mark.spark

U = 2.0**-53


@pytest.fixture(scope="module")
def float_sample(tmp_path_factory):
    from aef_zonal.demo.sample import make_sample

    out = tmp_path_factory.mktemp("float-sample")
    make_sample(out, size=512, shard=512, years=(2024, 2025), dtype="float32", log=lambda *_: None)
    return out


def test_float32_store_against_xarray(float_sample, tmp_path):
    """The edge cases and every 4th ordinary field, both years: count exact; sum within
    4 u sum|x| of the correctly rounded sum (each chunk's sum is compensated, within 2 u |S|;
    merging k chunks adds k u sum|x|); mean from it; std to 1e-12 of the field's mean |value|;
    min and max exactly the stored values."""
    import json

    store, fields_path = float_sample / "store.zarr", float_sample / "fields.parquet"
    out = tmp_path / "result"
    stats = ("--stats", "count,mean,std,min,max,sum")
    assert run_job(store, fields_path, out, *stats, "--rows-without-pixels", "inline") == 0
    got = read(out)
    got["year"] = got.time.str.slice(0, 4).astype(int)
    got = got.set_index(["feature_id", "year"])
    ds = reference.open_store(store)
    assert ds["embeddings"].dtype == np.float32
    fields = gpd.read_parquet(fields_path)
    kinds = json.loads((float_sample / "fields_kinds.json").read_text())
    regular = fields.feature_id[[kinds[str(f)] == "field" for f in fields.feature_id]].iloc[::4]
    fields = fields[
        fields.feature_id.isin(regular).to_numpy()
        | np.array([kinds[str(f)] != "field" for f in fields.feature_id])
    ]
    worst_sum = worst_std = 0.0
    empty = 0
    for fid, geom in zip(fields.feature_id, fields.geometry):
        for year in (2024, 2025):
            ref, row = reference.float_field_stats(ds, geom, year), got.loc[(fid, year)]
            assert row["count"] == ref["count"], (fid, year)
            if not ref["count"]:
                empty += 1
                assert row["mean"] is None and row["sum"] is None
                continue
            scale = np.abs(ref["values"]).sum(axis=1)
            worst_sum = max(worst_sum, (np.abs(row["sum"] - ref["sum"]) / (U * scale)).max())
            np.testing.assert_allclose(
                row["mean"], ref["mean"], rtol=0, atol=(4 * U * scale / ref["count"]).max()
            )
            worst_std = max(
                worst_std, (np.abs(row["std"] - ref["std"]) / (scale / ref["count"])).max()
            )
            np.testing.assert_array_equal(row["min"], ref["min"])
            np.testing.assert_array_equal(row["max"], ref["max"])
    print(
        f"float32 store: sum within {worst_sum:.3g} u sum|x|, std within {worst_std:.3g} of mean |x|; "
        f"{empty} field-years without a valid pixel"
    )
    assert worst_sum <= 4 and worst_std <= 1e-12 and empty > 0


def test_float_store_quantiles_are_refused(float_sample, tmp_path, capsys):
    assert (
        run_job(
            float_sample / "store.zarr",
            float_sample / "fields.parquet",
            tmp_path / "q",
            "--stats",
            "mean,p50",
        )
        == 2
    )
    assert "p50: not available for the float32 store" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()
