"""Which pixels of a chunk window belong to which field, by one of three rules.

- center (default): a pixel belongs to a polygon when its centre is inside by the even-odd crossing test with
half-open edges (W. R. Franklin's PNPOLY): a centre exactly on a west or south edge counts,
on an east or north edge it does not. So two fields sharing an edge split the centres on it
between them, each counted once. Holes and the parts of a multipolygon follow from the
even-odd rule (parts are assumed disjoint, as in a valid multipolygon).
- all-touched: every pixel whose square shares positive area with the polygon (exactextract's
  coverage fraction > 0): the centre pixels plus every pixel whose open square the boundary
  passes through. An edge along a pixel boundary, or through a pixel corner, adds nothing on
  its outer side (GDAL's all_touched=True differs there: it adds some of those pixels).
- fraction: every touched pixel weighted by the share of its area inside the polygon
  (exactextract's coverage fraction). A pixel the boundary does not cross is wholly inside
  (weight 1, exactly the centre pixels) or wholly outside; only crossed pixels need an area,
  which GEOS computes (shapely.intersection with the pixel squares).
- min_coverage (with all-touched or fraction): only pixels at least that share of whose area
  is inside count, as exactextract's min_coverage_frac.

Hand-written (numba) rather than shapely/rasterio because membership must be many-to-many
(overlapping fields each get a shared pixel) and run once per chunk for all its fields in a
small fraction of the chunk's decode time: a scanline visits each row once per edge instead of
testing every candidate pixel against the polygon.
"""

from __future__ import annotations

import numba
import numpy as np
import shapely

from aef_zonal.udfs.grid import centres


def ring_edges(geoms) -> tuple[np.ndarray, np.ndarray]:
    """Edges (x1, y1, x2, y2) of every ring of every geometry, and each geometry's edge offset.

    Returns (edges[E, 4], offsets[n + 1]); geometry i owns edges[offsets[i]:offsets[i + 1]].
    """
    geoms = np.asarray(geoms, dtype=object)
    parts, part_of = shapely.get_parts(geoms, return_index=True)
    rings_ext = shapely.get_exterior_ring(parts)
    n_int = shapely.get_num_interior_rings(parts)
    ring_geom = [part_of]
    rings = [rings_ext]
    if n_int.sum():
        holes, hole_of = shapely.get_rings(parts, return_index=True)
        is_hole = np.ones(len(holes), bool)
        # get_rings lists each part's exterior first; drop it (already taken above)
        firsts = np.r_[0, np.cumsum(n_int + 1)[:-1]]
        is_hole[firsts] = False
        rings.append(holes[is_hole])
        ring_geom.append(part_of[hole_of[is_hole]])
    rings = np.concatenate(rings)
    ring_geom = np.concatenate(ring_geom)
    order = np.argsort(ring_geom, kind="stable")
    rings, ring_geom = rings[order], ring_geom[order]
    coords, ring_idx = shapely.get_coordinates(rings, return_index=True)
    # an edge joins consecutive vertices of the same ring (rings are closed)
    same = ring_idx[1:] == ring_idx[:-1]
    edges = np.column_stack([coords[:-1][same], coords[1:][same]])
    edge_geom = ring_geom[ring_idx[:-1][same]]
    offsets = np.searchsorted(edge_geom, np.arange(len(geoms) + 1), side="left")
    return np.ascontiguousarray(edges), offsets.astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _centre_runs(edges, offsets, xs, ys, out):
    n = 0
    for f in range(offsets.shape[0] - 1):
        e0, e1 = offsets[f], offsets[f + 1]
        if e1 == e0:
            continue
        ylo, yhi = np.inf, -np.inf
        for e in range(e0, e1):
            ylo = min(ylo, edges[e, 1], edges[e, 3])
            yhi = max(yhi, edges[e, 1], edges[e, 3])
        cross = np.empty(e1 - e0, np.float64)
        for r in range(ys.shape[0]):
            y = ys[r]
            if y < ylo or y >= yhi:
                continue
            k = 0
            for e in range(e0, e1):
                x1, y1, x2, y2 = edges[e, 0], edges[e, 1], edges[e, 2], edges[e, 3]
                if (y1 > y) != (y2 > y):
                    cross[k] = (x2 - x1) * (y - y1) / (y2 - y1) + x1
                    k += 1
            c = np.sort(cross[:k])
            for j in range(0, k - 1, 2):
                # centres with c[j] <= x < c[j + 1] are inside
                start = np.searchsorted(xs, c[j], side="left")
                stop = np.searchsorted(xs, c[j + 1], side="left")
                if stop > start:
                    out[n, 0] = r
                    out[n, 1] = start
                    out[n, 2] = stop
                    out[n, 3] = f
                    n += 1
    return n


def centre_runs(geoms, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Runs of pixels of a window whose centres lie inside each geometry.

    xs: ascending x of the window's column centres; ys: y of its row centres.
    Returns int64[R, 4] rows (row, col_start, col_stop, geometry index), sorted by row then
    column so that a reduction walks the chunk in memory order.
    """
    geoms = np.asarray(geoms, dtype=object)
    edges, offsets = ring_edges(geoms) if len(geoms) else (np.empty((0, 4)), np.zeros(1, np.int64))
    # per row, a geometry has at most edges / 2 runs, and at most one per column
    per_row = np.minimum(np.diff(offsets) // 2, len(xs)).sum()
    out = np.empty((len(ys) * per_row, 4), np.int64)
    n = _centre_runs(
        edges,
        offsets,
        np.ascontiguousarray(xs, np.float64),
        np.ascontiguousarray(ys, np.float64),
        out,
    )
    runs = out[:n]
    return runs[np.lexsort((runs[:, 1], runs[:, 0]))]


def runs_to_pairs(runs: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Expand runs into (flat pixel index, geometry index) pairs."""
    lengths = runs[:, 2] - runs[:, 1]
    starts = np.repeat(runs[:, 0] * width + runs[:, 1], lengths)
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return starts + within, np.repeat(runs[:, 3], lengths)


# Cell coordinates within this many pixels of an integer are on that pixel boundary: corners
# computed from the grid (xmin + i * res, or a centre minus res / 2) land a few ulps (< 1e-9
# pixel at 180 degrees) off the integer once divided by res.
SNAP = 1e-7


@numba.njit(cache=True, nogil=True, inline="always")
def _snap(v):
    k = np.floor(v + 0.5)
    return k if abs(v - k) <= SNAP else v


@numba.njit(cache=True, nogil=True, inline="always")
def _open_cells(lo, hi):
    """First and last cell k whose open interval (k, k + 1) meets [lo, hi] (last < first: none).

    A point on an integer (lo == hi == k) lies in no open cell; a span ending on k + 1 does not
    reach cell k + 1.
    """
    if lo == hi:
        k = np.floor(lo)
        return (int(k), int(k) - 1) if k == lo else (int(k), int(k))
    return int(np.floor(lo)), int(np.ceil(hi)) - 1


@numba.njit(cache=True, nogil=True)
def _boundary_cells(edges, offsets, x_left, y_top, res, height, width, out_pix, out_fld):
    """Cells of the window whose open square each edge passes through.

    An edge that runs along a pixel boundary, or meets a cell only at its corner, shares no area
    with that cell and does not mark it.
    """
    n = 0
    for f in range(offsets.shape[0] - 1):
        for e in range(offsets[f], offsets[f + 1]):
            c1, r1 = _snap((edges[e, 0] - x_left) / res), _snap((y_top - edges[e, 1]) / res)
            c2, r2 = _snap((edges[e, 2] - x_left) / res), _snap((y_top - edges[e, 3]) / res)
            first, last = _open_cells(min(c1, c2), max(c1, c2))
            for c in range(max(first, 0), min(last, width - 1) + 1):
                if c2 == c1:
                    ra, rb = r1, r2
                else:
                    # rows the segment spans inside the column strip [c, c + 1]; with integer
                    # end points the product is exact, so crossings on corners stay integers
                    xa, xb = max(float(c), min(c1, c2)), min(float(c + 1), max(c1, c2))
                    ra = _snap(r1 + (xa - c1) * (r2 - r1) / (c2 - c1))
                    rb = _snap(r1 + (xb - c1) * (r2 - r1) / (c2 - c1))
                top, bottom = _open_cells(min(ra, rb), max(ra, rb))
                for r in range(max(top, 0), min(bottom, height - 1) + 1):
                    out_pix[n] = r * width + c
                    out_fld[n] = f
                    n += 1
    return n


def boundary_pairs(
    geoms, x_left: float, y_top: float, res: float, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unique (pixel, geometry) pairs of the window's cells crossed by a geometry's boundary."""
    edges, offsets = ring_edges(geoms)
    span = (
        np.minimum(np.abs(edges[:, 2] - edges[:, 0]) / res, width)
        + np.minimum(np.abs(edges[:, 3] - edges[:, 1]) / res, height)
        + 3
    )
    bound = int(span.sum()) + 1
    pix = np.empty(bound, np.int64)
    fld = np.empty(bound, np.int64)
    n = _boundary_cells(edges, offsets, x_left, y_top, res, height, width, pix, fld)
    keys = np.unique(fld[:n] * (height * width) + pix[:n])
    return keys % (height * width), keys // (height * width)


def pairs_to_runs(pix: np.ndarray, fld: np.ndarray, width: int) -> np.ndarray:
    """Runs (row, col_start, col_stop, geometry) of unique pairs, sorted by row then column."""
    order = np.lexsort((pix, fld))
    pix, fld = pix[order], fld[order]
    brk = np.ones(len(pix), bool)
    brk[1:] = (fld[1:] != fld[:-1]) | (pix[1:] != pix[:-1] + 1) | (pix[1:] % width == 0)
    starts = np.nonzero(brk)[0]
    stops = np.r_[starts[1:], len(pix)]
    first = pix[starts]
    runs = np.column_stack(
        [first // width, first % width, first % width + (stops - starts), fld[starts]]
    ).astype(np.int64)
    return runs[np.lexsort((runs[:, 1], runs[:, 0]))]


def union_runs(runs: np.ndarray, height: int, width: int) -> np.ndarray:
    """The union of runs (row, col_start, col_stop, geometry) as maximal runs, sorted by row then
    column: overlapping or adjacent runs of a geometry's row merge into one."""
    if not len(runs):
        return runs
    r = runs[np.lexsort((runs[:, 1], runs[:, 0], runs[:, 3]))]
    group = r[:, 3] * height + r[:, 0]
    # furthest stop so far within each (geometry, row): groups ascend and stops are <= width
    reach = np.maximum.accumulate(group * (width + 1) + r[:, 2]) - group * (width + 1)
    start = np.ones(len(r), bool)
    start[1:] = (group[1:] != group[:-1]) | (r[1:, 1] > reach[:-1])
    first = np.flatnonzero(start)
    last = np.r_[first[1:] - 1, len(r) - 1]
    out = np.column_stack([r[first, 0], r[first, 1], reach[last], r[first, 3]])
    return out[np.lexsort((out[:, 1], out[:, 0]))]


RULES = ("center", "all-touched", "fraction")
# coverage shares within this of --min-coverage count as reaching it (GEOS rounding in degrees)
COVER_SNAP = 1e-9


def members(
    geoms,
    rule: str,
    x_left: float,
    y_top: float,
    res: float,
    height: int,
    width: int,
    min_coverage: float = 0.0,
):
    """Membership of a window for `rule`.

    center, all-touched: int64[R, 4] runs (weight 1 each pixel).
    fraction: (pixel, geometry, weight) arrays, weight in (0, 1].
    min_coverage (all-touched, fraction): a pixel counts only when at least this share of its
    area is inside the geometry (exactextract's min_coverage_frac; the weights of those kept
    stay as they are).
    """
    geoms = np.asarray(geoms, dtype=object)
    xs, ys = centres(x_left, res, width), centres(y_top, -res, height)
    runs = centre_runs(geoms, xs, ys)
    if rule == "center":
        return runs
    if rule not in RULES:
        raise ValueError(f"unknown pixel rule {rule!r}; choose among {RULES}")
    bpix, bfld = boundary_pairs(geoms, x_left, y_top, res, height, width)
    if rule == "all-touched" and not min_coverage:
        # as runs: the centre pixels are most of a chunk, the boundary pairs a few thousand
        return union_runs(np.r_[runs, pairs_to_runs(bpix, bfld, width)], height, width)
    cpix, cfld = runs_to_pairs(runs, width)
    # centre pixels the boundary does not cross are wholly inside
    bkeys = bfld * (height * width) + bpix
    interior = ~np.isin(cfld * (height * width) + cpix, bkeys)
    weights = np.empty(len(bpix))
    for f in np.unique(bfld):
        sel = bfld == f
        r, c = bpix[sel] // width, bpix[sel] % width
        cells = shapely.box(
            x_left + c * res, y_top - (r + 1) * res, x_left + (c + 1) * res, y_top - r * res
        )
        weights[sel] = shapely.area(shapely.intersection(geoms[f], cells)) / (res * res)
    # GEOS's areas in degrees carry ~1e-10 of a pixel: a pixel covered exactly `min_coverage`
    # (half a pixel for 0.5) must not fall below it by that rounding
    keep = weights >= min_coverage - COVER_SNAP if min_coverage else weights > 0
    pix, fld = np.r_[cpix[interior], bpix[keep]], np.r_[cfld[interior], bfld[keep]]
    if rule == "all-touched":
        return pairs_to_runs(pix, fld, width)
    return pix, fld, np.r_[np.ones(interior.sum()), np.minimum(weights[keep], 1.0)]
