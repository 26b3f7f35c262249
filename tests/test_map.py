"""aef-zonal map over the session's output: the triangles cover each field exactly, the filters
and refusals, and the page itself in headless Chromium with the network off (first paint, the
fields' colours at their centres, the hover text, no request and no error)."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
import shapely

from aef_zonal.viewers import webmap
from tests import browser

YEAR = 2025
pytestmark = pytest.mark.spark  # the session's job output (main's test tiers)


def embedded(path) -> dict:
    """The data block the page carries (its JSON, arrays still base64)."""
    text = path.read_text(encoding="utf-8")
    block = re.search(
        r'<script id="aef-data" type="application/json">(.*?)</script>', text, re.S
    ).group(1)
    return json.loads(block.replace("<\\/", "</"))


@pytest.fixture(scope="module")
def rows(job_out):
    t = (
        ds.dataset(job_out / f"time={YEAR}-01-01", format="parquet", partitioning="hive")
        .to_table(columns=["geometry", "feature_id", "label", "count", "pca_components"])
        .to_pandas()
    )
    t["geom"] = shapely.from_wkb(t.geometry.to_numpy())
    return t


@pytest.fixture(scope="module")
def page_file(job_out, tmp_path_factory):
    path = tmp_path_factory.mktemp("map") / "map.html"
    assert webmap.main([str(job_out), "--year", str(YEAR), "--to", str(path)]) == 0
    return path


def test_triangles_cover_every_field_exactly(rows):
    """Earcut's triangles of every field (holes, multipolygons, slivers) add up to its area."""
    geoms = rows.geom.to_numpy()
    g = webmap.geometry_arrays(geoms)
    xy, tri = g["coords"], g["triangles"].reshape(-1, 3)
    a, b, c = xy[tri[:, 0]], xy[tri[:, 1]], xy[tri[:, 2]]
    area = (
        np.abs(
            (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
        )
        / 2
    )
    # the field each triangle belongs to, from its first vertex and the fields' vertex ranges
    field_of = np.searchsorted(g["field_starts"], tri[:, 0], side="right") - 1
    per_field = np.bincount(field_of, weights=area, minlength=len(geoms))
    np.testing.assert_allclose(per_field, shapely.area(geoms), rtol=1e-9, atol=1e-20)
    assert len(g["field_starts"]) == len(geoms) + 1 and g["field_starts"][-1] == len(xy)
    types = shapely.get_type_id(geoms)
    assert (types == 6).any() and (shapely.get_num_interior_rings(geoms[types == 3]) > 0).any()


def test_bbox_and_max_fields(job_out, rows, tmp_path, capsys):
    x0, y0, x1, y1 = shapely.total_bounds(rows.geom.to_numpy())
    box = (x0, y0, (x0 + x1) / 2, (y0 + y1) / 2)
    path = tmp_path / "sw.html"
    assert (
        webmap.main(
            [
                str(job_out),
                "--year",
                str(YEAR),
                "--to",
                str(path),
                "--bbox=" + ",".join(str(float(v)) for v in box),
            ]
        )
        == 0
    )
    bounds = shapely.bounds(rows.geom.to_numpy())
    expected = (
        (bounds[:, 0] <= box[2])
        & (bounds[:, 2] >= box[0])
        & (bounds[:, 1] <= box[3])
        & (bounds[:, 3] >= box[1])
    ).sum()
    assert 0 < expected < len(rows) and embedded(path)["n"] == expected

    assert (
        webmap.main([str(job_out), "--year", str(YEAR), "--to", str(path), "--max-fields", "100"])
        == 0
    )
    out = capsys.readouterr().out
    assert f"a seeded sample of 100 of {len(rows):,} fields" in out
    meta = embedded(path)
    assert meta["n"] == 100 and "seeded sample" in meta["note"]


@pytest.mark.parametrize(
    "args,words",
    [
        (["--bbox", "1,2,3"], "give xmin,ymin,xmax,ymax"),
        (["--bbox", "5,2,3,4"], "xmin must be below xmax"),
        (["--year", "2019"], "it has 2024, 2025"),
        (["--tiles", "http://tiles.example/tile.png"], "needs {z}, {x} and {y}"),
        (["--bbox", "0,0,1,1"], "no field of 2025 to draw"),
    ],
)
def test_bad_requests_are_refused(job_out, tmp_path, capsys, args, words):
    assert webmap.main([str(job_out), "--to", str(tmp_path / "m.html"), *args]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "m.html").exists()


def test_missing_deck_bundle_names_the_fix(job_out, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(webmap, "NPM_CACHE", tmp_path / "npm")
    assert webmap.main([str(job_out), "--to", str(tmp_path / "m.html")]) == 2
    assert "make setup" in capsys.readouterr().err


@pytest.fixture(scope="module")
def chromium():
    reason = browser.missing_reason()
    if reason:
        pytest.skip(reason)
    with browser.chromium() as b:
        yield b


@pytest.fixture(scope="module")
def opened(chromium, page_file):
    with browser.open_map(chromium, page_file) as page:
        yield page


def test_page_paints_offline_without_errors(opened, page_file):
    print(f"first paint {opened.first_paint_ms:.0f} ms, {page_file.stat().st_size / 1e6:.2f} MB")
    assert opened.requests == [page_file.resolve().as_uri()], "the page asked for something else"
    assert opened.errors == []


def test_fields_show_their_colours_at_their_centres(opened, rows, kinds):
    shot = opened.screenshot()
    legend = opened.page.evaluate(
        "(() => { const r = document.getElementById('legend')"
        ".getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })()"
    )
    x0, y0, x1, _ = shapely.total_bounds(rows.geom.to_numpy())
    px = (x1 - x0) / (opened.project(x1, y0)[0] - opened.project(x0, y0)[0])  # degrees per pixel
    checked = grey = 0
    for fid, geom, pca, count in zip(
        rows.feature_id, rows.geom, rows.pca_components, rows["count"]
    ):
        # at least 6 px inside its own edges, nothing drawn over it
        inner = geom.buffer(-6 * px)
        if inner.is_empty or not alone(rows, geom) or kinds[fid] not in ("field", "outside"):
            continue
        p = inner.representative_point()
        x, y = opened.project(p.x, p.y)
        if legend[0] - 5 <= x <= legend[2] + 5 and legend[1] - 5 <= y <= legend[3] + 5:
            continue
        want = webmap.NO_PIXEL if count == 0 else np.rint(np.asarray(pca) * 255)
        got = shot[int(y), int(x)].astype(int)
        assert np.abs(got - np.asarray(want)).max() <= 2, (fid, kinds[fid], (x, y), got, want)
        checked += 1
        grey += count == 0
    # the fields without a valid pixel are listed beside the data, not drawn: none grey here
    assert checked > 100 and grey == 0, (checked, grey)


def test_legend_counts_the_fields_not_drawn(opened, page_file, rows, job_out):
    listed = pd.read_parquet(job_out / "_without_pixels").query(f"time == '{YEAR}-01-01'")
    n = len(set(listed.feature_id) - set(rows.feature_id))
    assert n and embedded(page_file)["not_drawn"] == n
    legend = opened.page.inner_text("#legend")
    assert f"{n} fields without a valid pixel, not drawn (listed in _without_pixels/)" in (legend)


def test_a_field_without_pixels_is_grey():
    """An output whose rows without a valid pixel are inline draws them in map.png's grey."""
    import pyarrow as pa

    pca = pa.array([[0.0, 0.5, 1.0], None], pa.list_(pa.float32()))
    assert webmap.field_colours(pca).tolist() == [[0, 128, 255], list(webmap.NO_PIXEL)]


def alone(rows, geom) -> bool:
    """No other field of the year meets this one (so it is the one drawn at its inside)."""
    return len(shapely.STRtree(rows.geom.to_numpy()).query(geom, predicate="intersects")) == 1


def test_hover_names_the_field(opened, rows, kinds):
    fid, geom, label, count = next(
        (f, g, lab, c)
        for f, g, lab, c in zip(rows.feature_id, rows.geom, rows.label, rows["count"])
        if kinds[f] == "field" and c > 500 and alone(rows, g)
    )
    p = geom.representative_point()
    x, y = opened.project(p.x, p.y)
    opened.page.mouse.move(x, y)
    tip = opened.page.wait_for_selector(
        ".deck-tooltip", state="visible", timeout=10_000
    ).inner_text()
    assert f"feature_id {fid}" in tip and f"label {label}" in tip
    assert f"count {count} pixels" in tip and f"year {YEAR}" in tip


def test_optional_tile_basemap(chromium, job_out, tmp_path):
    """--tiles: the page asks the template for tiles (served here by the test) and draws them under
    the fields; nothing else is asked for."""
    import io

    from PIL import Image

    path = tmp_path / "tiles.html"
    assert (
        webmap.main(
            [str(job_out), "--to", str(path), "--tiles", "https://tiles.test/{z}/{x}/{y}.png"]
        )
        == 0
    )
    tile = io.BytesIO()
    Image.new("RGB", (256, 256), (10, 200, 30)).save(tile, "PNG")
    asked = []

    def serve(route):
        asked.append(route.request.url)
        if re.fullmatch(r"https://tiles\.test/\d+/\d+/\d+\.png", route.request.url):
            route.fulfill(
                status=200,
                content_type="image/png",
                body=tile.getvalue(),
                headers={"Access-Control-Allow-Origin": "*"},
            )
        else:
            route.abort()

    with browser.open_map(chromium, path, offline=False, route=serve) as opened:
        opened.page.wait_for_function("aefDeck.props.layers[0].isLoaded", timeout=60_000)
        # drawn on a later frame, whose delay under the software renderer varies: poll the pixel
        deadline = time.monotonic() + 30
        while (corner := opened.screenshot()[20, 20]).tolist() == [
            255,
            255,
            255,
        ] and time.monotonic() < deadline:
            opened.page.wait_for_timeout(100)
        assert opened.errors == []
    assert asked and all(u.startswith("https://tiles.test/") for u in asked), asked
    assert np.abs(corner.astype(int) - (10, 200, 30)).max() <= 2, corner
