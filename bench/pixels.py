"""Micro-benchmark: cost of each pixel rule's membership per 256 px inner chunk (numpy + numba only).

    .venv/bin/python bench/pixels.py [--repeat 20]

The fields are the built-in sample's (demo/sample.py: quarter-quarter sections and the edge
cases, ~40 fields a chunk) on a 1024 px grid, plus the same fields moved onto the pixel lattice
(every vertex rounded to a pixel corner: the edges that lie on pixel boundaries). For each rule,
the best of --repeat runs of aef_zonal.udfs.pixels.members over each of the 16 chunks, summed and divided
by 16: milliseconds per chunk.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import shapely

from aef_zonal.demo import sample
from aef_zonal.udfs.grid import Grid
from aef_zonal.udfs.pixels import RULES, members


def chunk_fields(size: int = 1024):
    res = sample.GLOBAL_RES
    row0, col0 = sample._grid_origin(-93.65, 42.10, 4096)
    grid = Grid(
        res, sample.GLOBAL_XMIN + col0 * res, sample.GLOBAL_YMAX - row0 * res, size, size, 256, 512
    )
    gdf, _ = sample._fields(
        np.random.default_rng(42), grid.xmin, grid.ymax, size, res, 512, (0, 1, 3)
    )
    geoms = np.asarray(gdf.geometry, dtype=object)
    snapped = shapely.transform(
        geoms,
        lambda c: np.c_[
            grid.xmin + np.round((c[:, 0] - grid.xmin) / res) * res,
            grid.ymax - np.round((grid.ymax - c[:, 1]) / res) * res,
        ],
    )
    snapped = snapped[shapely.is_valid(snapped) & (shapely.area(snapped) > 0)]
    return grid, {"sample": geoms, "on the lattice": snapped}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args(argv)
    grid, sets = chunk_fields()
    for name, geoms in sets.items():
        windows = []
        for cy in range(grid.chunk_rows):
            for cx in range(grid.chunk_cols):
                r0, r1, c0, c1 = grid.chunk_window(cy, cx)
                x0, y0 = grid.xmin + c0 * grid.res, grid.ymax - r0 * grid.res
                box = shapely.box(x0, y0 - (r1 - r0) * grid.res, x0 + (c1 - c0) * grid.res, y0)
                windows.append((geoms[shapely.intersects(geoms, box)], x0, y0, r1 - r0, c1 - c0))
        per_chunk = np.mean([len(w[0]) for w in windows])
        for rule in RULES:
            total = 0.0
            for g, x0, y0, h, w in windows:
                members(g, rule, x0, y0, grid.res, h, w)  # compile and warm
                best = np.inf
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    members(g, rule, x0, y0, grid.res, h, w)
                    best = min(best, time.perf_counter() - t)
                total += best
            print(
                f"{name:15s} ({per_chunk:.0f} fields/chunk) {rule:12s} {1e3 * total / len(windows):7.3f} ms/chunk"
            )


if __name__ == "__main__":
    main()
