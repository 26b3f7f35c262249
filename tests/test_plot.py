"""aef-zonal plot over the session's output: two PNGs of a sensible size that show the fields'
colours (not blank), and clear refusals for an absent year or a folder that is no output."""

from __future__ import annotations

import numpy as np
import pyarrow.dataset as ds
import pytest
from PIL import Image

from aef_zonal.viewers import plot

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def pictures(job_out, tmp_path_factory):
    to = tmp_path_factory.mktemp("plots")
    assert plot.main([str(job_out), "--year", "2024", "--to", str(to)]) == 0
    return to


@pytest.fixture(scope="module")
def label_colours(job_out) -> dict[str, np.ndarray]:
    """Each label's typical colour in 2024, as 0..255 RGB: that of its field nearest to the label's
    median colour (a label's fields spread widely: the median itself may be no field's colour)."""
    t = (
        ds.dataset(job_out, format="parquet", partitioning="hive")
        .to_table(
            filter=(ds.field("time") == "2024-01-01") & (ds.field("count") > 0),
            columns=["label", "pca_components"],
        )
        .to_pandas()
    )
    colours = {
        label: np.stack(g.pca_components.to_numpy()) * 255 for label, g in t.groupby("label")
    }
    return {
        label: c[np.abs(c - np.median(c, axis=0)).sum(axis=1).argmin()]
        for label, c in colours.items()
    }


@pytest.mark.parametrize("name,min_share", [("map.png", 0.0005), ("pca.png", 0.00002)])
def test_picture_shows_the_fields_colours(pictures, label_colours, name, min_share):
    path = pictures / name
    im = np.asarray(Image.open(path).convert("RGB")).astype(float)
    h, w, _ = im.shape
    assert 1000 <= w <= 1600 and 500 <= h <= 2000, (w, h)
    assert path.stat().st_size < 300_000
    pixels = im.reshape(-1, 3)
    assert pixels.std(axis=0).mean() > 20  # a blank or one-colour picture fails here
    assert len(np.unique(pixels @ [65536, 256, 1])) > 40
    # every label's typical colour is drawn somewhere: on the map over part of a field (each
    # field has its own shade), in PCA space as points (under a density shading that darkens by
    # at most a third)
    for label, rgb in label_colours.items():
        dark = np.clip(1 - pixels @ rgb / (rgb @ rgb), 0, 0.35)
        share = (np.abs(pixels - np.outer(1 - dark, rgb)).max(axis=1) < 12).mean()
        assert share > min_share, (label, rgb, share)


def test_absent_year_is_refused_with_the_years_present(job_out, tmp_path, capsys):
    assert plot.main([str(job_out), "--year", "2019", "--to", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "year 2019 is not in" in err and "it has 2024, 2025" in err
    assert not (tmp_path / "p").exists()


def test_a_folder_that_is_not_an_output_is_refused(tmp_path, capsys):
    assert plot.main([str(tmp_path), "--to", str(tmp_path / "p")]) == 2
    assert "is not an aef-zonal output" in capsys.readouterr().err


def test_the_fields_listed_without_pixels_are_counted(job_out, tmp_path, capsys):
    """Not drawn (the data has no row of them): the console and the map's legend say how many."""
    import pandas as pd

    listed = pd.read_parquet(job_out / "_without_pixels").query("time == '2024-01-01'")
    assert len(listed)
    assert plot.listed_without_pixels(job_out, 2024) == set(listed.feature_id)
    assert plot.main([str(job_out), "--year", "2024", "--to", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"; {len(listed)} without a valid pixel, listed in _without_pixels/)" in out
