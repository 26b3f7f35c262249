"""The exactextract peer: the same fields' 64-band mean for one year, with exactextract.

exactextract cannot read the sharded Zarr store (GDAL's Zarr driver has no sharding codec), so
the year is copied once into a tiled GeoTIFF (cached, not timed). The GeoTIFF holds
u = sign(q)·q² as int16, so exactextract's mean of u divided by 127.5² is exactly the mean of the
dequantised values; nodata is -32768 (q = -128). Its pixel rule is coverage-weighted: each pixel
counts with the fraction of it the polygon covers (the job's --pixels fraction).
Fields are split into `workers` parts run in parallel processes, like the job's cores.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

NODATA = -32768


def geotiff(store: str, t: int, path: Path) -> Path:
    """The year's codes as u = sign(q)·q² (int16, 64 bands, 256² tiles, zstd), written once."""
    if path.exists():
        return path
    import rasterio
    import zarr
    from affine import Affine

    from aef_zonal.udfs.store import describe

    g = describe(store).grid
    arr = zarr.open_group(store, mode="r")["embeddings"]
    bands = arr.shape[1]
    tmp = path.with_suffix(".partial.tif")
    profile = {
        "driver": "GTiff",
        "width": g.width,
        "height": g.height,
        "count": bands,
        "dtype": "int16",
        "nodata": NODATA,
        "crs": "EPSG:4326",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "zstd",
        "interleave": "pixel",
        "transform": Affine(g.res, 0, g.xmin, 0, -g.res, g.ymax),
        "BIGTIFF": "YES",
    }
    with rasterio.open(tmp, "w", **profile) as dst:
        for r0 in range(0, g.height, g.shard):
            for c0 in range(0, g.width, g.shard):
                q = arr[t, :, r0 : r0 + g.shard, c0 : c0 + g.shard].astype(np.int16)
                u = np.where(q == -128, NODATA, np.sign(q) * q * q).astype(np.int16)
                dst.write(u, window=((r0, r0 + u.shape[1]), (c0, c0 + u.shape[2])))
    tmp.rename(path)
    return path


def _part(args):
    tif, wkb, ids = args
    import geopandas as gpd
    import shapely
    from exactextract import exact_extract

    gdf = gpd.GeoDataFrame({"feature_id": ids}, geometry=shapely.from_wkb(wkb), crs="EPSG:4326")
    t0 = time.perf_counter()
    out = exact_extract(str(tif), gdf, "mean", include_cols=["feature_id"], output="pandas")
    return time.perf_counter() - t0, out


def run(tif: Path, fields, workers: int):
    """(seconds wall, DataFrame feature_id + band_N_mean in u units) for every field."""
    import pandas as pd
    import shapely

    wkb = shapely.to_wkb(fields.geometry.values)
    ids = fields.feature_id.to_numpy()
    parts = [(tif, wkb[i::workers], ids[i::workers]) for i in range(workers)]
    with mp.get_context("spawn").Pool(workers) as pool:
        pool.map(_part, [(tif, wkb[:2], ids[:2])] * workers)  # warm up imports
        t0 = time.perf_counter()
        results = pool.map(_part, parts)
        wall = time.perf_counter() - t0
    return wall, pd.concat([r[1] for r in results], ignore_index=True)
