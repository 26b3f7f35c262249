"""Open an AEF-layout Zarr store, describe its grid and quantisation, read one inner chunk."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import zarr

from udfs.grid import Grid

ARRAY = "embeddings"


class StoreError(ValueError):
    """The store cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Quantisation:
    """value = a * u + b, where u = sign(q) q^2 (square) or u = q; q == nodata is masked."""
    square: bool
    a: float
    b: float
    nodata: int

    @classmethod
    def from_attrs(cls, attrs: dict, url: str) -> "Quantisation":
        q = attrs.get("geoemb:quantization")
        if q is None:
            raise StoreError(f"{url}: no 'geoemb:quantization' attribute; cannot dequantise int8 codes")
        method = q.get("method")
        nodata = int(q.get("nodata", -128))
        if method == "signed_square":
            return cls(True, 1.0 / 127.5 ** 2, 0.0, nodata)
        if method == "linear":
            return cls(False, float(q["scale"]), float(q.get("offset", 0.0)), nodata)
        raise StoreError(f"{url}: unknown quantisation method {method!r}; "
                         "supported: 'signed_square', 'linear' (scale/offset)")

    def table(self) -> np.ndarray:
        """float64[256]: the value of each code, indexed by code + 128 (nodata -> NaN)."""
        q = np.arange(-128, 128, dtype=np.float64)
        u = np.sign(q) * q * q if self.square else q
        v = self.a * u + self.b
        v[self.nodata + 128] = np.nan
        return v


@dataclass(frozen=True)
class StoreInfo:
    url: str
    grid: Grid
    quant: Quantisation
    years: tuple[int, ...]
    bands: int

    def time_index(self, year: int) -> int:
        return self.years.index(year)


def open_group(url: str) -> zarr.Group:
    try:
        return zarr.open_group(url, mode="r")
    except Exception as e:  # zarr raises several types for "nothing there"
        raise StoreError(f"cannot open Zarr store {url}: {type(e).__name__}: {e}") from e


def describe(url: str) -> StoreInfo:
    """Read the group metadata once (on the driver) and check it is a store we can reduce."""
    group = open_group(url)
    if ARRAY not in group:
        raise StoreError(f"{url}: no '{ARRAY}' array in the group")
    arr = group[ARRAY]
    attrs = {**dict(arr.attrs), **dict(group.attrs)}  # older copies keep them on the array
    if arr.dtype != np.int8:
        raise StoreError(f"{url}: {ARRAY} has dtype {arr.dtype}; only int8 quantised stores are supported")
    dims = tuple(arr.metadata.dimension_names or ())
    if dims != ("time", "band", "y", "x"):
        raise StoreError(f"{url}: {ARRAY} dimensions are {dims}, expected ('time', 'band', 'y', 'x')")
    if "spatial:transform" not in attrs:
        raise StoreError(f"{url}: no 'spatial:transform' attribute; cannot place pixels")
    chunk = arr.chunks  # inner chunks when sharded
    shard = arr.shards or chunk
    if chunk[2] != chunk[3] or chunk[1] != arr.shape[1] or chunk[0] != 1:
        raise StoreError(f"{url}: inner chunks {chunk} are not (1, bands, n, n)")
    grid = Grid.from_transform(attrs["spatial:transform"], arr.shape[2:], chunk[2], shard[2])
    years = tuple(int(y) for y in group["time"][:])
    return StoreInfo(url, grid, Quantisation.from_attrs(attrs, url), years, int(arr.shape[1]))


@functools.lru_cache(maxsize=4)
def _array(url: str) -> zarr.Array:
    # one open array per Python worker and store: metadata is read once, not per chunk
    return open_group(url)[ARRAY]


def read_chunk(url: str, t: int, window: tuple[int, int, int, int]) -> np.ndarray:
    """int8[bands, rows, cols] of one inner chunk; never-written chunks read as nodata."""
    r0, r1, c0, c1 = window
    return _array(url)[t, :, r0:r1, c0:c1]
