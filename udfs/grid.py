"""The store's affine grid: pixel <-> coordinate, inner-chunk footprints and storage keys.

Everything that turns a coordinate into a pixel or chunk index lives here, so the rule
"pixel centre = origin + (i + 0.5) * res" is written exactly once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    res: float          # pixel size in degrees (square pixels, north-up)
    xmin: float         # x of the top-left pixel corner
    ymax: float         # y of the top-left pixel corner
    height: int         # pixels along y
    width: int          # pixels along x
    chunk: int          # inner chunk edge in pixels (256 in the AEF mosaic)
    shard: int          # shard edge in pixels (4096 in the AEF mosaic)

    @classmethod
    def from_transform(cls, transform, shape, chunk: int, shard: int) -> "Grid":
        res, rot1, xmin, rot2, neg_res, ymax = (float(v) for v in transform)
        if rot1 != 0 or rot2 != 0 or neg_res != -res or res <= 0:
            raise ValueError(
                f"spatial:transform {list(transform)} is not a north-up grid with square pixels; "
                "only [res, 0, xmin, 0, -res, ymax] is supported")
        return cls(res, xmin, ymax, int(shape[0]), int(shape[1]), int(chunk), int(shard))

    @property
    def chunk_rows(self) -> int:
        return -(-self.height // self.chunk)

    @property
    def chunk_cols(self) -> int:
        return -(-self.width // self.chunk)

    def col_centres(self, start: int, stop: int) -> np.ndarray:
        return self.xmin + (np.arange(start, stop, dtype=np.float64) + 0.5) * self.res

    def row_centres(self, start: int, stop: int) -> np.ndarray:
        return self.ymax - (np.arange(start, stop, dtype=np.float64) + 0.5) * self.res

    def chunk_window(self, cy: int, cx: int) -> tuple[int, int, int, int]:
        """(row0, row1, col0, col1) of inner chunk (cy, cx), clipped to the array."""
        r0, c0 = cy * self.chunk, cx * self.chunk
        return r0, min(r0 + self.chunk, self.height), c0, min(c0 + self.chunk, self.width)

    def shard_key(self, array: str, t: int, row: int, col: int) -> str:
        """Storage key of the shard holding global pixel (row, col) of time index t."""
        return f"{array}/c/{t}/0/{row // self.shard}/{col // self.shard}"

    def chunk_name(self, array: str, t: int, cy: int, cx: int) -> str:
        """Where inner chunk (cy, cx) of time index t is stored: its shard's key, place within."""
        per = self.shard // self.chunk
        return (f"{self.shard_key(array, t, cy * self.chunk, cx * self.chunk)} "
                f"inner chunk ({cy % per}, {cx % per})")


def hilbert_key(x: np.ndarray, y: np.ndarray, order: int = 31) -> np.ndarray:
    """Hilbert-curve index of lon/lat points on a 2^order grid over the whole world.

    World bounds (not the data's) so keys from different runs compare. int64 (2 * 31 bits).
    """
    n = np.int64(1) << order
    xi = np.clip(((np.asarray(x, np.float64) + 180.0) / 360.0 * n).astype(np.int64), 0, n - 1)
    yi = np.clip(((np.asarray(y, np.float64) + 90.0) / 180.0 * n).astype(np.int64), 0, n - 1)
    d = np.zeros(xi.shape, np.int64)
    s = n >> 1
    while s > 0:
        rx = (xi & s) > 0
        ry = (yi & s) > 0
        d += s * s * ((3 * rx) ^ ry)
        # rotate the quadrant so the curve stays continuous
        flip = ~ry & rx
        xi = np.where(flip, s - 1 - xi, xi)
        yi = np.where(flip, s - 1 - yi, yi)
        swap = ~ry
        xi, yi = np.where(swap, yi, xi), np.where(swap, xi, yi)
        s >>= 1
    return d
