"""Brute-force references: each field on its own, over its own window.

Shares no code with the job: pixels come from the store's coordinate arrays through xarray,
membership from GDAL's rasteriser (rasterio.features.geometry_mask: centre rule or
all_touched), coverage-weighted statistics from exactextract, values from the dequantisation
formula written out here.
"""
from __future__ import annotations

import numpy as np
import xarray as xr
from affine import Affine
from rasterio import features


def open_store(path):
    return xr.open_zarr(path, consolidated=False)


def _window(ds, geom, year):
    """Codes int8[64, h, w] of the field's bbox plus a pixel of margin, and the window's affine."""
    x, y = ds["x"].values, ds["y"].values
    res = float(x[1] - x[0])
    xmin, ymin, xmax, ymax = geom.bounds
    cols = np.nonzero((x >= xmin - res) & (x <= xmax + res))[0]
    rows = np.nonzero((y >= ymin - res) & (y <= ymax + res))[0]
    if len(cols) == 0 or len(rows) == 0:
        return None, None
    c0, c1, r0, r1 = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1
    transform = Affine(res, 0, x[c0] - res / 2, 0, -res, y[r0] + res / 2)
    q = ds["embeddings"].sel(time=year).isel(y=slice(r0, r1), x=slice(c0, c1)).values
    return q, transform


def dequantise(q):
    qf = q.astype(np.float64)
    return np.sign(qf) * (qf / 127.5) ** 2


def field_stats(ds, geom, year, all_touched: bool = False) -> dict:
    """count, inside, mean/std (population), and the valid values[64, n] of the field's pixels."""
    q, transform = _window(ds, geom, year)
    empty = {"count": 0, "inside": 0, "mean": None, "std": None, "values": None}
    if q is None:
        return empty
    inside = features.geometry_mask([geom], out_shape=q.shape[1:], transform=transform,
                                    invert=True, all_touched=all_touched)
    valid = inside & (q != -128).all(axis=0)
    if not valid.any():
        return {**empty, "inside": int(inside.sum())}
    v = dequantise(q[:, valid])
    return {"count": int(valid.sum()), "inside": int(inside.sum()), "mean": v.mean(axis=1),
            "std": v.std(axis=1), "values": v}


def fraction_stats(ds, geom, year) -> dict:
    """exactextract's coverage-weighted count, mean and stdev of each band."""
    import geopandas as gpd
    from exactextract import exact_extract
    from exactextract.raster import NumPyRasterSource

    q, t = _window(ds, geom, year)
    if q is None:
        return {"count": 0.0, "mean": None, "std": None}
    h, w = q.shape[1:]
    nodata = -999.0
    v = np.where((q != -128).all(axis=0), dequantise(q), nodata)
    xmin, ymax = t.c, t.f
    rasters = [NumPyRasterSource(v[b], xmin, ymax - h * t.a, xmin + w * t.a, ymax, nodata=nodata,
                                 name=f"b{b}") for b in range(len(v))]
    gdf = gpd.GeoDataFrame({"id": [0]}, geometry=[geom], crs="EPSG:4326")
    out = exact_extract(rasters, gdf, ["count", "mean", "stdev"], output="pandas")
    count = float(out["b0_count"].iloc[0])
    if count == 0:
        return {"count": 0.0, "mean": None, "std": None}
    return {"count": count,
            "mean": np.array([out[f"b{b}_mean"].iloc[0] for b in range(len(v))]),
            "std": np.array([out[f"b{b}_stdev"].iloc[0] for b in range(len(v))])}
