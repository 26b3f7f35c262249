"""Which pixels of a chunk window belong to which field (pixel-centre rule).

A pixel belongs to a polygon when its centre is inside by the even-odd crossing test with
half-open edges (W. R. Franklin's PNPOLY): a centre exactly on a west or south edge counts,
on an east or north edge it does not. So two fields sharing an edge split the centres on it
between them, each counted once. Holes and the parts of a multipolygon follow from the
even-odd rule (parts are assumed disjoint, as in a valid multipolygon).

Hand-written (numba) rather than shapely/rasterio because membership must be many-to-many
(overlapping fields each get a shared pixel) and run once per chunk for all its fields in a
small fraction of the chunk's decode time: a scanline visits each row once per edge instead of
testing every candidate pixel against the polygon.
"""
from __future__ import annotations

import numba
import numpy as np
import shapely


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
    n = _centre_runs(edges, offsets, np.ascontiguousarray(xs, np.float64),
                     np.ascontiguousarray(ys, np.float64), out)
    runs = out[:n]
    return runs[np.lexsort((runs[:, 1], runs[:, 0]))]


def runs_to_pairs(runs: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Expand runs into (flat pixel index, geometry index) pairs."""
    lengths = runs[:, 2] - runs[:, 1]
    starts = np.repeat(runs[:, 0] * width + runs[:, 1], lengths)
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return starts + within, np.repeat(runs[:, 3], lengths)
