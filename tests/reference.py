"""Brute-force references: each field on its own, over its own window.

Shares no code with the job: pixels come from the store's coordinate arrays through xarray,
membership from GDAL's rasteriser for the centre rule (rasterio.features.geometry_mask) and
from exactextract for all-touched (coverage fraction > 0: GDAL's all_touched=True adds pixels
that only share an edge or a corner with some polygons), coverage-weighted statistics from
exactextract, values from the dequantisation formula written out here.
"""

from __future__ import annotations

import numpy as np
import shapely.geometry
import xarray as xr
from affine import Affine
from rasterio import features


def open_store(path):
    """The whole store in memory: the tests' stores are small, and a field's window read lazily
    decompresses its chunks again for every field (5x the reference's time)."""
    return xr.open_zarr(path, consolidated=False).load()


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


def pixel_stats(ds, weights: dict, year) -> dict:
    """count (summed weight), mean and std (weighted, population) and the valid values of the
    given pixels {(row, col): weight} of the whole store."""
    q = ds["embeddings"].sel(time=year).values
    rows, cols = (np.array(a, np.int64) for a in zip(*weights))
    w = np.array(list(weights.values()))
    valid = (q[:, rows, cols] != -128).all(axis=0)
    v, w = dequantise(q[:, rows[valid], cols[valid]]), w[valid]
    mean = (v * w).sum(axis=1) / w.sum()
    std = np.sqrt((w * (v - mean[:, None]) ** 2).sum(axis=1) / w.sum())
    return {"count": w.sum(), "inside": len(weights), "mean": mean, "std": std, "values": v}


def rounding_error(row, ref) -> float:
    """Largest difference of the job's mean and std from the reference's, in units of the field's
    mean |value| per band: float64 rounding of exact integer sums leaves ~1e-15 of it, one pixel
    too many or too few ~1 / count."""
    scale = np.abs(ref["values"]).mean(axis=1)
    return max((np.abs(np.asarray(row[k]) - ref[k]) / scale).max() for k in ("mean", "std"))


def dequantise(q):
    qf = q.astype(np.float64)
    return np.sign(qf) * (qf / 127.5) ** 2


def field_stats(ds, geom, year, all_touched: bool = False) -> dict:
    """count, inside, mean/std (population), and the valid values[64, n] of the field's pixels."""
    q, transform = _window(ds, geom, year)
    empty = {"count": 0, "inside": 0, "mean": None, "std": None, "values": None}
    if q is None:
        return empty
    if all_touched:
        # exactextract works in degrees here: an edge on a pixel boundary leaves the pixel beyond
        # it a sliver of <= 2e-10 of its area, rounding that the job treats as on the boundary
        # (a real corner clipped by a sample field covers 4.7e-8 of its pixel)
        inside = coverage(geom, q.shape[1:], transform) > 1e-9
    else:
        inside = features.geometry_mask(
            [geom], out_shape=q.shape[1:], transform=transform, invert=True
        )
    valid = inside & (q != -128).all(axis=0)
    if not valid.any():
        return {**empty, "inside": int(inside.sum())}
    v = dequantise(q[:, valid])
    return {
        "count": int(valid.sum()),
        "inside": int(inside.sum()),
        "mean": v.mean(axis=1),
        "std": v.std(axis=1),
        "values": v,
    }


def float_field_stats(ds, geom, year) -> dict:
    """A float store's field (centre rule): count, the correctly rounded sum (math.fsum) and the
    mean from it, std (numpy, two-pass in float64), min, max of the valid values (no band NaN)."""
    import math

    q, transform = _window(ds, geom, year)
    if q is None:
        return {"count": 0}
    inside = features.geometry_mask([geom], out_shape=q.shape[1:], transform=transform, invert=True)
    valid = inside & ~np.isnan(q).any(axis=0)
    if not valid.any():
        return {"count": 0}
    v = q[:, valid].astype(np.float64)
    total = np.array([math.fsum(band) for band in v])
    return {
        "count": int(valid.sum()),
        "sum": total,
        "mean": total / v.shape[1],
        "std": v.std(axis=1),
        "min": v.min(axis=1),
        "max": v.max(axis=1),
        "values": v,
    }


def coverage(geom, shape, t) -> np.ndarray:
    """exactextract's coverage fraction of each pixel of a window (shape, affine t)."""
    from exactextract import exact_extract
    from exactextract.raster import NumPyRasterSource

    h, w = shape
    raster = NumPyRasterSource(np.zeros(shape), t.c, t.f - h * t.a, t.c + w * t.a, t.f)
    feature = {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(geom)}
    out = exact_extract(raster, [feature], ["cell_id", "coverage"], output="pandas")
    cover = np.zeros(h * w)
    cover[np.asarray(out["cell_id"].iloc[0], np.int64)] = out["coverage"].iloc[0]
    return cover.reshape(shape)


def fraction_stats(ds, geom, year, min_coverage: float = 0.0, qs=()) -> dict:
    """exactextract's coverage-weighted count, mean and stdev of each band (pixels covered at
    least `min_coverage`, its min_coverage_frac), and its weighted quantile(q) for each level of
    `qs` ("quantiles": float64[len(qs), bands])."""
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
    rasters = [
        NumPyRasterSource(
            v[b], xmin, ymax - h * t.a, xmin + w * t.a, ymax, nodata=nodata, name=f"b{b}"
        )
        for b in range(len(v))
    ]
    gdf = gpd.GeoDataFrame({"id": [0]}, geometry=[geom], crs="EPSG:4326")
    arg = f"(min_coverage_frac={min_coverage})" if min_coverage else ""
    quantile_ops = [
        f"quantile(q={q}{', min_coverage_frac=' + str(min_coverage) if min_coverage else ''})"
        for q in qs
    ]
    out = exact_extract(
        rasters, gdf, [f"count{arg}", f"mean{arg}", f"stdev{arg}", *quantile_ops], output="pandas"
    )
    count = float(out["b0_count"].iloc[0])
    if count == 0:
        return {"count": 0.0, "mean": None, "std": None}
    return {
        "count": count,
        "mean": np.array([out[f"b{b}_mean"].iloc[0] for b in range(len(v))]),
        "std": np.array([out[f"b{b}_stdev"].iloc[0] for b in range(len(v))]),
        "quantiles": np.array(
            [[out[f"b{b}_quantile_{round(q * 100)}"].iloc[0] for b in range(len(v))] for q in qs]
        ),
    }
