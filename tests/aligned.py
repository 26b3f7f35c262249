"""Polygons whose edges and vertices lie exactly on pixel boundaries and corners, and the exact
all-touched reference for them.

Each case is written in pixel units (column, row of pixel corners) on a 1024 px grid with
512 px shards of 256 px inner chunks (the built-in sample's layout), then placed on the AEF grid
in degrees with the grid's own corner formula (x = xmin + column * res). The references work in
pixel units, where every corner is an exact integer: a pixel is touched when the area of its
square intersected with the polygon is > 0 (shapely), or when its coverage fraction is > 0
(exactextract).
"""

from __future__ import annotations

import numpy as np
import shapely
import shapely.geometry
from shapely import affinity

from aef_zonal.udfs.grid import Grid

RES = 8.983111749910169e-05
GRID = Grid(RES, -93.6, 42.1, 1024, 1024, 256, 512)


def _box(c0, r0, c1, r1):
    return shapely.box(c0, r0, c1, r1)


# name -> polygon in pixel units (x = column, y = row, rows growing southwards)
CASES = {
    "rectangle aligned to pixels": _box(10, 40, 30, 47),
    "single pixel": _box(900, 900, 901, 901),
    "square = inner chunk (2, 2)": _box(512, 512, 768, 768),
    "square = shard (0, 0)": _box(0, 0, 512, 512),
    "rectangle with aligned hole": shapely.Polygon(
        _box(100, 100, 160, 140).exterior.coords, [_box(120, 110, 130, 125).exterior.coords]
    ),
    "shard (1, 0) with a chunk-sized hole": shapely.Polygon(
        _box(0, 512, 512, 1024).exterior.coords, [_box(256, 768, 384, 960).exterior.coords]
    ),
    "diagonal through corners (slope 1)": shapely.Polygon([(300, 100), (340, 100), (300, 140)]),
    "diagonal through corners (slope 2/3)": shapely.Polygon([(400, 100), (430, 120), (400, 140)]),
    "diamond on corners across a chunk corner": shapely.Polygon(
        [(256, 236), (276, 256), (256, 276), (236, 256)]
    ),
    "crossing a chunk border, edges on pixels": _box(240, 300, 272, 310),
    "east edge on a chunk border": _box(200, 600, 256, 620),
    "north edge on a shard border": _box(700, 512, 740, 530),
    "two squares touching at a corner": shapely.MultiPolygon(
        [_box(800, 10, 810, 20), _box(810, 20, 820, 30)]
    ),
}


def to_degrees(geom, grid: Grid = GRID):
    """The same polygon on the grid in degrees, corners by the grid's formula."""
    return shapely.transform(
        geom, lambda c: np.c_[grid.xmin + c[:, 0] * grid.res, grid.ymax - c[:, 1] * grid.res]
    )


def _candidates(geom, grid: Grid):
    c0, r0, c1, r1 = geom.bounds
    cols = np.arange(max(int(np.floor(c0)) - 1, 0), min(int(np.ceil(c1)) + 1, grid.width))
    rows = np.arange(max(int(np.floor(r0)) - 1, 0), min(int(np.ceil(r1)) + 1, grid.height))
    return np.meshgrid(rows, cols, indexing="ij")


def shapely_coverage(geom, grid: Grid = GRID) -> dict[tuple[int, int], float]:
    """{(row, col): area of the pixel's square inside the polygon} for every pixel it shares area with."""
    R, C = (a.ravel() for a in _candidates(geom, grid))
    cells = shapely.box(C, R, C + 1, R + 1)
    shapely.prepare(geom)
    # a square inside the interior has area 1, one disjoint from the polygon 0: only the squares
    # the boundary meets need their intersection's area
    area = shapely.contains_properly(geom, cells).astype(float)
    edge = (area == 0) & shapely.intersects(geom, cells)
    area[edge] = shapely.area(shapely.intersection(geom, cells[edge]))
    keep = area > 0
    return dict(zip(zip(R[keep].tolist(), C[keep].tolist()), area[keep].tolist()))


def shapely_touched(geom, grid: Grid = GRID) -> set[tuple[int, int]]:
    """(row, col) of every pixel whose square shares positive area with the polygon."""
    return set(shapely_coverage(geom, grid))


def exactextract_touched(geom, grid: Grid = GRID) -> set[tuple[int, int]]:
    """(row, col) of every pixel exactextract gives a coverage fraction > 0."""
    return set(exactextract_coverage(geom, grid))


def exactextract_coverage(
    geom, grid: Grid = GRID, min_coverage: float = 0.0
) -> dict[tuple[int, int], float]:
    """{(row, col): exactextract's coverage fraction} of the pixels it covers (> 0), with its
    min_coverage_frac when given."""
    from exactextract import exact_extract
    from exactextract.raster import NumPyRasterSource

    R, C = _candidates(geom, grid)
    r0, c0 = int(R[0, 0]), int(C[0, 0])
    h, w = R.shape
    # pixel units flipped so that y grows northwards, as exactextract's extent expects
    flipped = affinity.scale(geom, 1, -1, origin=(0, 0))
    raster = NumPyRasterSource(np.zeros((h, w)), c0, -(r0 + h), c0 + w, -r0)
    feature = {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(flipped)}
    ops = (
        ["cell_id", "coverage"]
        if not min_coverage
        else [
            f"cell_id(min_coverage_frac={min_coverage})",
            f"coverage(min_coverage_frac={min_coverage})",
        ]
    )
    out = exact_extract(raster, [feature], ops, output="pandas")
    cells, cover = np.asarray(out["cell_id"].iloc[0]), np.asarray(out["coverage"].iloc[0])
    keep = cover > 0
    return dict(
        zip(
            zip((r0 + cells[keep] // w).tolist(), (c0 + cells[keep] % w).tolist()),
            cover[keep].tolist(),
        )
    )


def gdal_touched(geom, grid: Grid = GRID) -> set[tuple[int, int]]:
    """(row, col) of GDAL's all_touched=True rasterisation, for the record (not a reference)."""
    from affine import Affine
    from rasterio import features

    R, C = _candidates(geom, grid)
    r0, c0 = int(R[0, 0]), int(C[0, 0])
    g = to_degrees(geom, grid)
    t = Affine(grid.res, 0, grid.xmin + c0 * grid.res, 0, -grid.res, grid.ymax - r0 * grid.res)
    m = features.geometry_mask([g], out_shape=R.shape, transform=t, invert=True, all_touched=True)
    return set(zip((r0 + np.nonzero(m)[0]).tolist(), (c0 + np.nonzero(m)[1]).tolist()))


def job_pixels(members, geoms, rule: str, grid: Grid = GRID):
    """The job's membership of each geometry (degrees) over the whole grid, chunk window by chunk
    window as the reduce stage computes it: {(row, col): weight} per geometry."""
    out = [dict() for _ in geoms]
    geoms = np.asarray(geoms, dtype=object)
    for cy in range(grid.chunk_rows):
        for cx in range(grid.chunk_cols):
            r0, r1, c0, c1 = grid.chunk_window(cy, cx)
            box = shapely.box(
                grid.xmin + c0 * grid.res,
                grid.ymax - r1 * grid.res,
                grid.xmin + c1 * grid.res,
                grid.ymax - r0 * grid.res,
            )
            sel = np.flatnonzero(shapely.intersects(geoms, box))
            if not len(sel):
                continue
            m = members(
                geoms[sel],
                rule,
                grid.xmin + c0 * grid.res,
                grid.ymax - r0 * grid.res,
                grid.res,
                r1 - r0,
                c1 - c0,
            )
            if rule == "fraction":
                pix, fld, w = m
            else:
                lengths = m[:, 2] - m[:, 1]
                pix = (
                    np.repeat(m[:, 0] * (c1 - c0) + m[:, 1], lengths)
                    + np.arange(lengths.sum())
                    - np.repeat(np.cumsum(lengths) - lengths, lengths)
                )
                fld, w = np.repeat(m[:, 3], lengths), np.ones(lengths.sum())
            rows, cols = (r0 + pix // (c1 - c0)).tolist(), (c0 + pix % (c1 - c0)).tolist()
            for f in np.unique(fld):
                at = fld == f
                out[sel[f]].update(
                    zip(
                        zip(np.array(rows)[at].tolist(), np.array(cols)[at].tolist()),
                        w[at].tolist(),
                    )
                )
    return out
