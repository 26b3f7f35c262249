"""The numeric kernels with numpy alone: dequantisation, pixel membership, chunk reduction."""

from __future__ import annotations

import os

import numpy as np
import pytest
import shapely
from shapely import affinity

from aef_zonal.udfs.grid import Grid, hilbert_key
from aef_zonal.udfs.partials import reduce_chunk
from aef_zonal.udfs.pixels import centre_runs, runs_to_pairs
from aef_zonal.udfs.store import Quantisation
from tests import aligned

pytestmark = pytest.mark.fast

GRID = Grid(8.983111749910169e-05, -93.6, 42.1, 512, 512, 256, 512)
SIGNED_SQUARE = {"geoemb:quantization": {"method": "signed_square", "nodata": -128}}


def window_centres(grid=GRID, size=256):
    return grid.col_centres(0, size), grid.row_centres(0, size)


def membership(geoms, size=256):
    xs, ys = window_centres(size=size)
    pix, fld = runs_to_pairs(centre_runs(geoms, xs, ys), size)
    mask = np.zeros((len(geoms), size * size), bool)
    mask[fld, pix] = True
    return mask.reshape(len(geoms), size, size)


# --- dequantisation --------------------------------------------------------------------------


def test_signed_square_table_matches_the_formula():
    table = Quantisation.from_attrs(SIGNED_SQUARE, "s").table()
    for q in range(-127, 128):
        assert table[q + 128] == pytest.approx(np.sign(q) * (q / 127.5) ** 2, abs=1e-15)
    assert np.isnan(table[0])  # -128 is nodata
    assert table[255] == pytest.approx((127 / 127.5) ** 2)


def test_linear_table_and_unknown_method():
    q = Quantisation.from_attrs(
        {"geoemb:quantization": {"method": "linear", "scale": 0.01, "offset": 0.5, "nodata": -128}},
        "s",
    )
    assert q.table()[10 + 128] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="unknown quantisation method 'log'"):
        Quantisation.from_attrs({"geoemb:quantization": {"method": "log"}}, "s")


# --- pixel membership ------------------------------------------------------------------------


def random_polygon(rng, cx, cy, r, n=9):
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * rng.uniform(0.5, 1.0, n)
    return shapely.Polygon(np.c_[cx + rad * np.cos(ang), cy + rad * np.sin(ang)])


def test_membership_equals_point_in_polygon_for_random_polygons():
    rng = np.random.default_rng(1)
    xs, ys = window_centres()
    X, Y = np.meshgrid(xs, ys)
    res = GRID.res
    geoms = []
    for _ in range(40):
        cx, cy = rng.uniform(xs[0], xs[-1]), rng.uniform(ys[-1], ys[0])
        g = random_polygon(rng, cx, cy, rng.uniform(0.3, 60) * res)
        if rng.random() < 0.3:  # a hole
            g = g.difference(shapely.Point(cx, cy).buffer(g.area**0.5 / 5))
        geoms.append(g)
    off = res / 3  # keeps the edges off pixel centres; the second part leaves the window
    geoms.append(
        shapely.MultiPolygon(
            [
                shapely.box(xs[10] + off, ys[20] + off, xs[30] + off, ys[10] + off),
                shapely.box(xs[200] + off, ys[250] + off, xs[255] + 9 * res, ys[240] + off),
            ]
        )
    )
    mask = membership(geoms)
    for g, m in zip(geoms, mask):
        # no centre lies on these boundaries, so GEOS's strict test decides every pixel
        assert not shapely.touches(g, shapely.points(X[m], Y[m])).any()
        assert (m == shapely.contains_xy(g, X, Y)).all()


def test_centre_on_boundary_counts_on_west_and_south_edges_only():
    xs, ys = window_centres()
    # a square whose edges run exactly through pixel centres: columns 10..20, rows 30..40
    square = shapely.box(xs[10], ys[40], xs[20], ys[30])
    m = membership([square])[0]
    rows, cols = np.nonzero(m)
    assert (cols.min(), cols.max()) == (10, 19)  # west edge in, east edge out
    assert (rows.min(), rows.max()) == (31, 40)  # south edge (row 40) in, north edge out
    # two fields sharing an edge through centres: each centre on it counted exactly once
    left, right = (
        shapely.box(xs[50], ys[60], xs[55], ys[50]),
        shapely.box(xs[55], ys[60], xs[60], ys[50]),
    )
    a, b = membership([left, right])
    assert not (a & b).any() and (a | b).sum() == membership([left.union(right)])[0].sum()


def test_overlapping_fields_share_pixels_and_subpixel_polygons():
    xs, ys = window_centres()
    res = GRID.res
    a = shapely.box(xs[5] - 0.3 * res, ys[15] - 0.2 * res, xs[15] + 0.1 * res, ys[5] + 0.4 * res)
    b = affinity.translate(a, 5 * res, 0)
    tiny_on_centre = shapely.box(
        xs[100] - 0.2 * res, ys[100] - 0.2 * res, xs[100] + 0.2 * res, ys[100] + 0.2 * res
    )
    tiny_off = affinity.translate(tiny_on_centre, 0.5 * res, 0.5 * res)
    ma, mb, mt, mo = membership([a, b, tiny_on_centre, tiny_off])
    assert ma.sum() == 11 * 11 and mb.sum() == 11 * 11 and (ma & mb).sum() == 6 * 11
    assert mt.sum() == 1 and mt[100, 100] and mo.sum() == 0


# --- chunk reduction -------------------------------------------------------------------------


def naive_partials(data, mask, table):
    """Per field: count, sum and sum of squares of dequantised values over valid pixels."""
    valid = (data != -128).all(axis=0)
    out = []
    for m in mask:
        sel = (m & valid).reshape(-1)
        v = table[data.reshape(data.shape[0], -1)[:, sel].astype(int) + 128]
        out.append(
            (
                sel.sum(),
                v.sum(axis=1),
                (v * v).sum(axis=1),
                v.min(axis=1) if sel.any() else None,
                v.max(axis=1) if sel.any() else None,
            )
        )
    return out


@pytest.fixture(scope="module")
def chunk_case():
    rng = np.random.default_rng(7)
    data = rng.integers(-127, 128, (64, 256, 256)).astype(np.int8)
    data[:, rng.random((256, 256)) < 0.02] = -128  # nodata pixels, all bands
    data[5, 3, 3] = -128  # nodata in a single band masks the pixel
    xs, ys = window_centres()
    geoms = [
        random_polygon(
            rng,
            rng.uniform(xs[20], xs[230]),
            rng.uniform(ys[230], ys[20]),
            rng.uniform(2, 80) * GRID.res,
        )
        for _ in range(25)
    ]
    geoms.append(shapely.box(xs[0], ys[10], xs[10], ys[0]))  # covers pixel (3, 3)
    return data, geoms


def test_reduce_matches_naive_numpy(chunk_case):
    data, geoms = chunk_case
    q = Quantisation.from_attrs(SIGNED_SQUARE, "s")
    xs, ys = window_centres()
    p = reduce_chunk(data, centre_runs(geoms, xs, ys), len(geoms), square=True)
    for f, (n, s1, s2, lo, hi) in enumerate(naive_partials(data, membership(geoms), q.table())):
        assert p.count[f] == n
        np.testing.assert_allclose(q.a * p.s1[f], s1, rtol=0, atol=1e-9)
        np.testing.assert_allclose(q.a**2 * p.s2[f], s2, rtol=0, atol=1e-9)
        if n:
            np.testing.assert_allclose(q.a * p.umin[f], lo, atol=1e-15)
            np.testing.assert_allclose(q.a * p.umax[f], hi, atol=1e-15)


def test_integer_sums_are_exact_in_runs_with_and_without_nodata(chunk_case):
    """Runs wholly valid and runs holding nodata pixels (the kernel takes a different loop for
    each) both give numpy's exact integer sums of u = sign(q) q^2 over valid member pixels."""
    data, geoms = chunk_case
    xs, ys = window_centres()
    runs = centre_runs(geoms, xs, ys)
    valid = (data != -128).all(axis=0)
    whole = np.array([valid[r, c0:c1].all() for r, c0, c1, _ in runs])
    assert whole.any() and not whole.all()
    p = reduce_chunk(data, runs, len(geoms), square=True)
    u = data.astype(np.int64) * np.abs(data.astype(np.int64))
    for f, m in enumerate(membership(geoms)):
        sel = m & valid
        assert p.count[f] == sel.sum() and p.inside[f] == m.sum()
        assert (p.s1[f] == u[:, sel].sum(axis=1)).all() and (
            p.s2[f] == (u[:, sel] ** 2).sum(axis=1)
        ).all()


def test_partials_of_pieces_merge_to_the_whole(chunk_case):
    """Sums are additive over any split of the pixels: what the aggregate SQL stage relies on."""
    data, geoms = chunk_case
    xs, ys = window_centres()
    runs = centre_runs(geoms, xs, ys)
    whole = reduce_chunk(data, runs, len(geoms), square=True)
    top = reduce_chunk(data, runs[runs[:, 0] < 100], len(geoms), square=True)
    bottom = reduce_chunk(data, runs[runs[:, 0] >= 100], len(geoms), square=True)
    assert (top.count + bottom.count == whole.count).all()
    assert (top.s1 + bottom.s1 == whole.s1).all() and (top.s2 + bottom.s2 == whole.s2).all()
    assert (np.minimum(top.umin, bottom.umin) == whole.umin).all()
    assert (np.maximum(top.umax, bottom.umax) == whole.umax).all()


def reduction(grid, q, stats, rule="center", sample=0.0, scratch=None):
    """A run's Reduction over `grid` without kept columns, as jobs/stages/reduce.py makes it."""
    import dataclasses

    from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding

    from aef_zonal import dataset
    from aef_zonal.udfs import rows, tasks
    from aef_zonal.udfs.finish import Finish

    grid = dataclasses.replace(grid, key_encoding=DefaultChunkKeyEncoding(separator="/"))
    weighted = rule == "fraction"
    fin = Finish(q, 64, tuple(stats), weighted=weighted)
    layout = rows.Layout(dataset.schema(list(stats), [], weighted), "s", grid, tuple(stats))
    return tasks.Reduction(
        grid, q, 64, fin, layout, rule=rule, sample=sample, seed=1, scratch=scratch
    )


@pytest.mark.parametrize("spilled", [False, True], ids=["packed", "scratch"])
def test_fields_inside_one_chunk_leave_the_reduce_as_rows(chunk_case, spilled, tmp_path):
    """A task's fields that touch no other chunk come out as published rows, their statistics
    finished on the worker (udfs/finish.py) exactly as the aggregate stage finishes a
    field-year from the list of its partials (here one, from numpy); the others leave their
    sums and no statistics; a sample of the finished means for the PCA fit beside them. With
    a scratch folder, the rows wait in its files and the task's output names them."""
    from concurrent.futures import Future

    import pyarrow as pa

    from aef_zonal.udfs import rows, tasks
    from aef_zonal.udfs.finish import finish_batch

    data, geoms = chunk_case
    q = Quantisation.from_attrs(SIGNED_SQUARE, "s")
    grid = Grid(GRID.res, GRID.xmin, GRID.ymax, 512, 512, 256, 512, years=(2024,), crs="EPSG:4326")
    stats = ("std", "min", "max", "sum", "mean_normalized", "p05", "median")
    red = reduction(grid, q, stats, sample=0.5, scratch=str(tmp_path) if spilled else None)
    chunk = Future()
    chunk.set_result(data)
    spans = [1 + i % 2 for i in range(len(geoms))]
    task = pa.RecordBatch.from_pylist(
        [
            {
                "cy": 0,
                "cx": 0,
                "fields": [
                    tasks.field(i, g, [2024], c, red) for i, (g, c) in enumerate(zip(geoms, spans))
                ],
            }
        ],
        schema=tasks.task_schema(red),
    )
    out = list(tasks.reduce_batches([task], red, lambda t, w: chunk))
    kinds = {b.column("kind")[0].as_py(): b for b in out}
    partials = kinds[tasks.PARTIAL].to_pylist()
    packed = kinds[tasks.ROWS]
    published = {
        r["feature_id"]: r for _, b in rows.unpack(packed, red.layout.packed) for r in b.to_pylist()
    }
    assert packed.column("blob").is_null().to_pylist() == [spilled]
    assert [p and os.path.dirname(p) for p in packed.column("path").to_pylist()] == [
        str(tmp_path) if spilled else None
    ]
    members = membership(geoms)
    # every field inside the chunk has its row, with pixels or not; the others a partial if any
    assert sorted(published) == [f for f, c in enumerate(spans) if c == 1]
    assert sorted(r["feature_id"] for r in partials) == [
        f for f, m in enumerate(members) if m.any() and spans[f] == 2
    ]
    assert packed.column("rows").to_pylist() == [len(published)]
    valid = (data != -128).all(axis=0)
    u = np.sign(data.astype(np.int64)) * data.astype(np.int64) ** 2
    lists = pa.schema(
        [
            ("feature_id", pa.int64()),
            ("year", pa.int32()),
            ("count", pa.int64()),
            ("inside", pa.int64()),
            *[(k, pa.list_(pa.list_(pa.int64()))) for k in ("l1", "l2", "lmin", "lmax")],
            ("hkeys", pa.list_(pa.int16())),
            ("hcounts", pa.list_(pa.int32())),
            ("skipped_chunks", pa.list_(pa.string())),
        ]
    )
    for r in partials:
        v = u[:, members[r["feature_id"]] & valid]
        assert r["s1"] == v.sum(axis=1).tolist() and r["mean"] is None
    for f, r in published.items():
        sel = members[f] & valid
        if not members[f].any():
            assert r["mean"] is None and r["reason"].startswith("no pixel")
            continue
        v = u[:, sel]
        keys, counts = np.unique(
            (np.arange(64)[:, None] * 256 + data[:, sel] + 128).reshape(-1), return_counts=True
        )
        one = pa.RecordBatch.from_pylist(
            [
                {
                    "feature_id": f,
                    "year": 2024,
                    "count": int(sel.sum()),
                    "inside": int(members[f].sum()),
                    "l1": [v.sum(axis=1).tolist()],
                    "l2": [(v * v).sum(axis=1).tolist()],
                    "lmin": [v.min(axis=1).tolist()],
                    "lmax": [v.max(axis=1).tolist()],
                    "hkeys": keys.tolist(),
                    "hcounts": counts.tolist(),
                    "skipped_chunks": [],
                }
            ],
            schema=lists,
        )
        expected = finish_batch(one, red.finish).to_pylist()[0]
        assert {k: r[k] for k in expected if k in r} == {k: expected[k] for k in expected if k in r}
        np.testing.assert_allclose(r["mean"], q.a * v.mean(axis=1), rtol=1e-14)
    sample = kinds[tasks.SAMPLE].to_pylist()
    assert 0 < len(sample) < len([r for r in published.values() if r["mean"]])
    assert all(s["mean"] == published[s["feature_id"]]["mean"] for s in sample)
    # output batches close once they hold rows_per_batch rows: one task's rows each here; a
    # scratch folder takes them all, and the task's end names its file
    sizes = [
        b.column("rows").to_pylist()
        for b in tasks.reduce_batches(
            [pa.concat_batches([task] * 3)], red, lambda t, w: chunk, rows_per_batch=1
        )
        if b.column("kind")[0].as_py() == tasks.ROWS
    ]
    assert sizes == ([[3 * len(published)]] if spilled else [[len(published)]] * 3)


def test_a_scratch_folder_that_cannot_take_the_rows_says_what_to_do(tmp_path):
    """Rows the scratch folder cannot take (here: it is gone) fail the task with a SpillError
    naming the folder and the ways out, which the reduce stage hands to the driver as it hands
    a chunk's error (udfs/spark.py)."""
    import pyarrow as pa

    from aef_zonal.udfs import rows

    gone = tmp_path / "gone"
    batch = pa.RecordBatch.from_pydict({"feature_id": [1, 2], "mean": [1.0, None]})
    packed = rows.pack(batch, pa.array([2024, 2024]), pa.array(["a", "b"]))
    with pytest.raises(rows.SpillError, match=rf"{gone} cannot take them .*\[job\] scratch"):
        rows.Spill(str(gone)).add(packed)


def test_scratch_files_are_cut_into_pieces_of_one_partition():
    """The writer's pieces (jobs/stages/output.pieces): the files of one (time, label) each, in
    order, at most `most` bytes together unless one file alone is larger; a null label is a
    partition of its own."""
    from aef_zonal.stages.output import pieces

    size = {"a": 40, "b": 30, "c": 50, "d": 200, "e": 10, "f": 5, "g": 5}
    refs = [
        ("2024", "corn", 1, 1, None, "a"),
        ("2024", "corn", 1, 1, None, "c"),
        ("2024", "corn", 1, 1, None, "b"),
        ("2024", "corn", 1, 1, None, "d"),
        ("2025", "corn", 1, 1, None, "e"),
        ("2024", None, 1, 1, None, "f"),
        ("2024", "soy", 1, 1, None, "g"),
    ]
    got = [[r[-1] for r in p] for p in pieces(refs, size.get, most=100)]
    assert got == [["a", "b"], ["c"], ["d"], ["g"], ["f"], ["e"]]
    assert {(p[0][0], p[0][1]) for p in pieces(refs, size.get, 100)} == {
        (t, lab) for t, lab, *_ in refs
    }
    assert pieces([], size.get) == []


def test_linear_store_sums_codes():
    data = np.arange(-3, 5, dtype=np.int8).reshape(1, 2, 4)
    runs = np.array([[0, 0, 4, 0], [1, 0, 4, 0]])
    p = reduce_chunk(data, runs, 1, square=False)
    assert p.count[0] == 8 and p.s1[0, 0] == 4 and p.s2[0, 0] == sum(q * q for q in range(-3, 5))


# --- grid ------------------------------------------------------------------------------------


def test_hilbert_key_is_a_bijection_on_a_small_grid():
    n = 1 << 4
    i, j = np.meshgrid(np.arange(n), np.arange(n))
    x = (i.ravel() + 0.5) / n * 360 - 180
    y = (j.ravel() + 0.5) / n * 180 - 90
    d = hilbert_key(x, y, order=4)
    assert sorted(d) == list(range(n * n))
    # consecutive keys are neighbouring cells: the defining property of the curve
    order = np.argsort(d)
    steps = np.abs(np.diff(i.ravel()[order])) + np.abs(np.diff(j.ravel()[order]))
    assert (steps == 1).all()


def test_fraction_weights_add_up_to_the_area_and_all_touched_covers_center():
    from aef_zonal.udfs.pixels import members

    rng = np.random.default_rng(5)
    xs, ys = window_centres()
    res = GRID.res
    x_left, y_top = GRID.xmin, GRID.ymax
    geoms = [
        random_polygon(
            rng,
            rng.uniform(xs[40], xs[200]),
            rng.uniform(ys[200], ys[40]),
            rng.uniform(0.2, 30) * res,
        )
        for _ in range(15)
    ]
    pix, fld, w = members(geoms, "fraction", x_left, y_top, res, 256, 256)
    assert (w > 0).all() and (w <= 1).all()
    for f, g in enumerate(geoms):
        assert w[fld == f].sum() == pytest.approx(g.area / res**2, rel=1e-9)
    center = membership(geoms)
    touched = np.zeros_like(center)
    for r, c0, c1, f in members(geoms, "all-touched", x_left, y_top, res, 256, 256):
        touched[f, r, c0:c1] = True
    assert (touched >= center).all() and (touched.sum(axis=(1, 2)) >= 1).all()
    # every fraction pixel is a touched pixel and vice versa
    frac = np.zeros_like(center)
    frac.reshape(len(geoms), -1)[fld, pix] = True
    assert (frac == touched).all()


# --- all-touched on pixel boundaries ----------------------------------------------------------


@pytest.mark.parametrize("name", list(aligned.CASES))
def test_all_touched_is_exact_on_pixel_boundaries(name):
    """Edges on pixel boundaries and through corners: exactly the pixels sharing area with the
    polygon (shapely and exactextract, in pixel units where corners are exact), computed chunk
    window by chunk window as the job does; centre and fraction keep their references."""
    from aef_zonal.udfs.pixels import members

    geom = aligned.CASES[name]
    placed = aligned.to_degrees(geom)
    (touched,) = aligned.job_pixels(members, [placed], "all-touched")
    want = aligned.shapely_touched(geom)
    assert set(touched) == want
    assert want == aligned.exactextract_touched(geom)
    # centre rule: GEOS's point test decides every centre off the boundary (the slope-1 edges
    # run through centres: their ties are the half-open rule's, tested above)
    (center,) = aligned.job_pixels(members, [placed], "center")
    rows, cols = (np.array(a) for a in zip(*want))
    off = ~shapely.touches(geom, shapely.points(cols + 0.5, rows + 0.5))
    inside = shapely.contains_xy(geom, cols + 0.5, rows + 0.5)
    got = np.array([(r, c) in center for r, c in zip(rows.tolist(), cols.tolist())])
    assert (got[off] == inside[off]).all() and set(center) <= want
    # fraction: the touched pixels, weighted by their covered share (exact here: whole pixels or
    # halves and thirds of them along the diagonals)
    (fraction,) = aligned.job_pixels(members, [placed], "fraction")
    assert set(fraction) == want
    cells = shapely.box(cols, rows, cols + 1, rows + 1)
    share = dict(
        zip(zip(rows.tolist(), cols.tolist()), shapely.area(shapely.intersection(geom, cells)))
    )
    worst = max(abs(w - share[k]) for k, w in fraction.items())
    assert worst <= 1e-9, worst
    # GEOS works in degrees here, where a pixel corner carries ~1e-10 px of rounding
    assert sum(fraction.values()) == pytest.approx(geom.area, rel=1e-10)


# --- minimum coverage --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(aligned.CASES))
def test_min_coverage_keeps_exactextracts_pixels(name):
    """--min-coverage 0.5 on pixel-boundary polygons, whose diagonals cut pixels into exact
    halves, thirds and twelfths: with fraction, exactly exactextract's pixels of coverage >= 0.5
    and their weights (its coverage is float32: to 1e-7); with all-touched the same pixels, each
    weighing 1."""
    import functools

    from aef_zonal.udfs.pixels import members

    geom = aligned.CASES[name]
    placed = aligned.to_degrees(geom)
    want = aligned.exactextract_coverage(geom, min_coverage=0.5)
    assert want and min(want.values()) >= 0.5
    least = functools.partial(members, min_coverage=0.5)
    (fraction,) = aligned.job_pixels(least, [placed], "fraction")
    assert set(fraction) == set(want)
    assert max(abs(w - want[k]) for k, w in fraction.items()) <= 1e-7
    (touched,) = aligned.job_pixels(least, [placed], "all-touched")
    assert set(touched) == set(want) and set(touched.values()) == {1.0}


def test_min_coverage_on_random_polygons_matches_exactextract():
    """Polygons in degrees at random places: the pixels kept at each threshold are exactly those
    exactextract keeps (none of these lie within its float32 rounding of a threshold)."""
    from aef_zonal.udfs.pixels import members

    rng = np.random.default_rng(11)
    xs, ys = window_centres()
    res, x_left, y_top = GRID.res, GRID.xmin, GRID.ymax
    geoms = [
        random_polygon(
            rng,
            rng.uniform(xs[40], xs[200]),
            rng.uniform(ys[200], ys[40]),
            rng.uniform(0.5, 30) * res,
        )
        for _ in range(12)
    ]
    pixel_units = [
        shapely.transform(g, lambda c: np.c_[(c[:, 0] - x_left) / res, (y_top - c[:, 1]) / res])
        for g in geoms
    ]
    for f_min in (0.25, 0.5, 0.99):
        pix, fld, w = members(geoms, "fraction", x_left, y_top, res, 256, 256, min_coverage=f_min)
        runs = members(geoms, "all-touched", x_left, y_top, res, 256, 256, min_coverage=f_min)
        tpix, tfld = runs_to_pairs(runs, 256)
        for f, g in enumerate(pixel_units):
            want = aligned.exactextract_coverage(g, min_coverage=f_min)
            got = dict(
                zip(
                    zip((pix[fld == f] // 256).tolist(), (pix[fld == f] % 256).tolist()),
                    w[fld == f].tolist(),
                )
            )
            assert set(got) == set(want), (f_min, f)
            assert max(abs(v - want[k]) for k, v in got.items()) <= 1e-6
            assert set(
                zip((tpix[tfld == f] // 256).tolist(), (tpix[tfld == f] % 256).tolist())
            ) == set(want)


# --- float stores ------------------------------------------------------------------------------


def test_float_store_quantisation_and_refusals():
    q = Quantisation.from_attrs({}, "s", "float32", float("nan"))
    assert (q.floats, q.a, q.b, q.square) == (True, 1.0, 0.0, False) and np.isnan(q.nodata)
    scaled = Quantisation.from_attrs(
        {
            "geoemb:quantization": {
                "method": "linear",
                "scale": {"type": "scalar", "scale": 0.5, "offset": 2.0},
            }
        },
        "s",
        "float16",
        -9999.0,
    )
    assert (scaled.a, scaled.b, scaled.nodata, scaled.dtype) == (0.5, 2.0, -9999.0, "float16")
    # the convention's scale object on an int8 store too
    assert (
        Quantisation.from_attrs(
            {
                "geoemb:quantization": {
                    "method": "linear",
                    "scale": {"type": "scalar", "scale": 0.01},
                }
            },
            "s",
        ).a
        == 0.01
    )
    for attrs, dtype, message in (
        ({}, "int16", "embeddings of dtype int16; the embeddings convention defines int8"),
        ({}, "float64", "embeddings of dtype float64"),
        (
            {"geoemb:quantization": {"method": "product_quantization"}},
            "float32",
            "quantisation method 'product_quantization'",
        ),
        (
            {
                "geoemb:quantization": {
                    "method": "linear",
                    "scale": {"type": "array", "array_name": "s"},
                }
            },
            "int8",
            "'array' scale",
        ),
    ):
        with pytest.raises(ValueError, match=message):
            Quantisation.from_attrs(attrs, "s", dtype, float("nan"))


@pytest.mark.parametrize("weighted", [False, True])
def test_float_reduction_is_compensated(weighted):
    """Values of mixed magnitude (a cancelling offset of 1e4 on top of unit-vector components) in
    float32, NaN and the fill value as nodata: sums within 2 u |S| + 1e-6 u sum|x| of the exactly
    rounded sum (math.fsum; u = 2^-53), counts exact, min and max as stored."""
    import math

    from aef_zonal.udfs.partials import reduce_chunk_float

    rng = np.random.default_rng(9)
    data = (rng.normal(0, 0.12, (8, 256, 256)) + rng.choice([-1e4, 1e4], (8, 256, 256))).astype(
        np.float32
    )
    data[:, rng.random((256, 256)) < 0.02] = np.nan
    data[3, rng.random((256, 256)) < 0.01] = -9999.0  # the fill value in one band masks the pixel
    xs, ys = window_centres()
    geoms = [
        random_polygon(
            rng,
            rng.uniform(xs[20], xs[230]),
            rng.uniform(ys[230], ys[20]),
            rng.uniform(2, 120) * GRID.res,
        )
        for _ in range(12)
    ]
    from aef_zonal.udfs.pixels import members

    if weighted:
        pix, fld, w = members(geoms, "fraction", GRID.xmin, GRID.ymax, GRID.res, 256, 256)
    else:
        pix, fld = runs_to_pairs(centre_runs(geoms, xs, ys), 256)
        w = None
    p = reduce_chunk_float(data, pix, fld, w, len(geoms), fill=-9999.0)
    flat = data.reshape(8, -1).astype(np.float64)
    valid = ~np.isnan(flat).any(axis=0) & (flat != -9999.0).all(axis=0)
    u = 2.0**-53
    worst = 0.0
    for f in range(len(geoms)):
        sel = (fld == f) & valid[pix]
        wf = np.ones(sel.sum()) if w is None else w[sel]
        x = flat[:, pix[sel]]
        # weights summed plainly: within n u of the exact sum
        assert p.count[f] == (
            sel.sum() if w is None else pytest.approx(math.fsum(wf), rel=len(wf) * u)
        )
        if w is None:
            assert p.count.dtype == np.int64 and p.inside[f] == (fld == f).sum()
        for b in range(8):
            terms = wf * x[b]
            exact = math.fsum(terms)
            err = abs(p.s1[f, b] - exact)
            worst = max(worst, err / (u * np.abs(terms).sum()))
            assert err <= 2 * u * abs(exact) + 1e-6 * u * np.abs(terms).sum()
            assert abs(p.s2[f, b] - math.fsum(terms * x[b])) <= 4 * u * (np.abs(terms * x[b])).sum()
        np.testing.assert_array_equal(p.umin[f], x.min(axis=1))
        np.testing.assert_array_equal(p.umax[f], x.max(axis=1))
    print(f"float sums: worst error {worst:.3g} u sum|x|")


# --- warm-up ---------------------------------------------------------------------------------

WARM = """
import json
from concurrent.futures import Future
import numpy as np, shapely
import pyarrow as pa
from aef_zonal.udfs import partials, pixels, tasks
from aef_zonal.udfs.grid import Grid
from aef_zonal.udfs.store import Quantisation
from tests.test_kernels import reduction

def compiled():
    return {n: len(f.signatures) for m in (pixels, partials) for n, f in vars(m).items()
            if hasattr(f, "signatures")}

grid = Grid(8.983111749910169e-05, -93.6, 42.1, 512, 512, 256, 512, years=(2024,), crs="EPSG:4326")
q = Quantisation.from_attrs({"geoemb:quantization": {"method": "signed_square", "nodata": -128}}, "s")
red = reduction(grid, q, ("median",), RULE)
tasks.warm_up(red)
warm = compiled()
codes = np.random.default_rng(1).integers(-128, 128, (64, 256, 256)).astype(np.int8)
chunk = Future()
chunk.set_result(codes)
x0, y0, x1, y1 = grid.chunk_footprint(0, 0)
cuts = [shapely.box(x0 - 1e-3, y0 + 1e-4, (x0 + x1) / 2.01, y1 + 1e-3),
        shapely.Point((x0 + x1) / 2, (y0 + y1) / 2).buffer((x1 - x0) / 5)]
task = pa.RecordBatch.from_pylist(
    [{"cy": 0, "cx": 0, "fields": [tasks.field(i, g, [2024], 1 + i, red) for i, g in enumerate(cuts)]}],
    schema=tasks.task_schema(red))
list(tasks.reduce_batches([task], red, lambda t, w: chunk))
print(json.dumps([warm, compiled()]))
"""


@pytest.mark.parametrize("rule", ["center", "all-touched", "fraction"])
def test_warm_up_loads_every_kernel_a_first_real_task_runs(rule):
    # a fresh interpreter: this one may have compiled the kernels already
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", WARM.replace("RULE", repr(rule))],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    warm, after = json.loads(out)
    assert sum(warm.values()) > 0 and after == warm
