"""The store's grid, the one authority for where things are.

Pixel <-> coordinate (centres, chunk windows and their footprints), storage keys (zarr's own
chunk-key encoding of the array), year <-> time index and the CRS (`proj:code`). The SQL stages
get these rules as parameters derived here (sql_params), never as a second copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def centres(start: float, step: float, n: int) -> np.ndarray:
    """Coordinates of n pixel centres from the edge `start`, `step` per pixel (negative: y)."""
    return start + (np.arange(n, dtype=np.float64) + 0.5) * step


@dataclass(frozen=True)
class Grid:
    res: float  # pixel size in CRS units (square pixels, north-up)
    xmin: float  # x of the top-left pixel corner
    ymax: float  # y of the top-left pixel corner
    height: int  # pixels along y
    width: int  # pixels along x
    chunk: int  # inner chunk edge in pixels (256 in the AEF mosaic)
    shard: int  # shard edge in pixels (4096 in the AEF mosaic)
    years: tuple[int, ...] = ()  # the time axis: years[t] is time index t
    crs: str | None = None  # the store's `proj:code`, e.g. EPSG:4326
    array: str = "embeddings"  # the array's name in the group
    key_encoding: Any = None  # zarr's chunk-key encoding of the array (its metadata)

    @classmethod
    def from_transform(cls, transform, shape, chunk: int, shard: int, **store) -> Grid:
        res, rot1, xmin, rot2, neg_res, ymax = (float(v) for v in transform)
        if rot1 != 0 or rot2 != 0 or neg_res != -res or res <= 0:
            raise ValueError(
                f"spatial:transform {list(transform)} is not a north-up grid with square pixels; "
                "only [res, 0, xmin, 0, -res, ymax] is supported"
            )
        return cls(res, xmin, ymax, int(shape[0]), int(shape[1]), int(chunk), int(shard), **store)

    @property
    def chunk_rows(self) -> int:
        return -(-self.height // self.chunk)

    @property
    def chunk_cols(self) -> int:
        return -(-self.width // self.chunk)

    @property
    def chunk_deg(self) -> float:
        """Edge of an inner chunk's footprint in CRS units."""
        return self.chunk * self.res

    def time_index(self, year: int) -> int:
        return self.years.index(year)

    def col_centres(self, start: int, stop: int) -> np.ndarray:
        return centres(self.xmin + start * self.res, self.res, stop - start)

    def row_centres(self, start: int, stop: int) -> np.ndarray:
        return centres(self.ymax - start * self.res, -self.res, stop - start)

    def chunk_window(self, cy: int, cx: int) -> tuple[int, int, int, int]:
        """(row0, row1, col0, col1) of inner chunk (cy, cx), clipped to the array."""
        r0, c0 = cy * self.chunk, cx * self.chunk
        return r0, min(r0 + self.chunk, self.height), c0, min(c0 + self.chunk, self.width)

    def window_corner(self, window: tuple[int, int, int, int]) -> tuple[float, float]:
        """(x, y) of a pixel window's top-left corner."""
        r0, _, c0, _ = window
        return self.xmin + c0 * self.res, self.ymax - r0 * self.res

    def chunk_footprint(self, cy: int, cx: int) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of inner chunk (cy, cx), as sql/20_assign.sql builds it."""
        d = self.chunk_deg
        return (
            self.xmin + cx * d,
            self.ymax - (cy + 1) * d,
            self.xmin + (cx + 1) * d,
            self.ymax - cy * d,
        )

    def shard_key(self, t: int, row: int, col: int) -> str:
        """Storage key of the shard holding global pixel (row, col) of time index t."""
        return f"{self.array}/{self.key_encoding.encode_chunk_key((t, 0, row // self.shard, col // self.shard))}"

    def chunk_name(self, t: int, cy: int, cx: int) -> str:
        """Where inner chunk (cy, cx) of time index t is stored: its shard's key, place within."""
        per = self.shard // self.chunk
        return (
            f"{self.shard_key(t, cy * self.chunk, cx * self.chunk)} "
            f"inner chunk ({cy % per}, {cx % per})"
        )

    def key_parts(self) -> tuple[str, str]:
        """(prefix, separator) of the shard keys, so SQL builds the same key from the indices:
        prefix + t + sep + 0 + sep + shard row + sep + shard column."""
        probe = self.shard_key(7, 8 * self.shard, 9 * self.shard)
        start = probe.index("7", len(self.array))
        prefix, rest = probe[:start], probe[start + 1 :]
        sep = rest[: rest.index("0")]
        if probe != prefix + sep.join("7089"):
            raise ValueError(
                f"chunk key encoding {self.key_encoding} does not join the indices "
                "with one separator"
            )
        return prefix, sep

    def sql_params(self) -> dict:
        """The grid's derived values, as the named parameters of the SQL stages."""
        prefix, sep = self.key_parts()
        return {
            "xmin": self.xmin,
            "ymax": self.ymax,
            "res": self.res,
            "chunk_deg": self.chunk_deg,
            "chunk_rows": self.chunk_rows,
            "chunk_cols": self.chunk_cols,
            "shard": self.shard,
            "width": self.width,
            "height": self.height,
            "key_prefix": prefix,
            "key_sep": sep,
            "store_crs": self.crs,
        }


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
