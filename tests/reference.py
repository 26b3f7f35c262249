"""Brute-force reference: each field on its own, over its own window.

Shares no code with the job: pixels come from the store's coordinate arrays through xarray,
membership from GDAL's rasteriser (rasterio.features.geometry_mask, centre rule), values from
the dequantisation formula written out here.
"""
from __future__ import annotations

import numpy as np
import xarray as xr
from affine import Affine
from rasterio import features


def open_store(path):
    return xr.open_zarr(path, consolidated=False)


def field_stats(ds, geom, year) -> dict:
    """count, mean[64], std[64] (population) of the valid pixels whose centre is in geom."""
    x, y = ds["x"].values, ds["y"].values
    res = float(x[1] - x[0])
    xmin, ymin, xmax, ymax = geom.bounds
    cols = np.nonzero((x >= xmin - res) & (x <= xmax + res))[0]
    rows = np.nonzero((y >= ymin - res) & (y <= ymax + res))[0]
    empty = {"count": 0, "mean": None, "std": None}
    if len(cols) == 0 or len(rows) == 0:
        return empty
    c0, c1, r0, r1 = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1
    transform = Affine(res, 0, x[c0] - res / 2, 0, -res, y[r0] + res / 2)
    inside = features.geometry_mask([geom], out_shape=(r1 - r0, c1 - c0), transform=transform,
                                    invert=True, all_touched=False)
    q = ds["embeddings"].sel(time=year).isel(y=slice(r0, r1), x=slice(c0, c1)).values
    valid = inside & (q != -128).all(axis=0)
    if not valid.any():
        return empty
    qf = q[:, valid].astype(np.float64)
    v = np.sign(qf) * (qf / 127.5) ** 2
    return {"count": int(valid.sum()), "mean": v.mean(axis=1), "std": v.std(axis=1)}
