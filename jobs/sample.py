"""The built-in sample: an AEF-layout Zarr store over Iowa and realistic field polygons.

The store has the real mosaic's layout (Zarr v3 group, `embeddings(time, band, y, x)` int8,
fill -128, sharded with 256^2 inner chunks, zstd, coordinate arrays, the group attributes)
on a window of the global grid; only its size and shard edge are smaller.

Content: quarter-quarter-section fields of a few crop classes, each class a unit vector plus
per-pixel noise and a small drift per year, renormalised and signed-square quantised; roads on
the section lines; ~1 % nodata pixels; one inner chunk never written. The fields file adds the
edge cases a job must survive (holes, multipolygons, a many-chunk field, chunk and shard border
crossings, sub-pixel polygons, fields partly and wholly outside the store, overlaps).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import zarr
from rasterio import features
from rasterio.transform import Affine
from zarr.codecs import ZstdCodec
from zarr.dtype import VariableLengthUTF8

# the real mosaic's grid (see shared aef-format notes)
GLOBAL_RES = 8.983111749910169e-05
GLOBAL_XMIN = -180.0
GLOBAL_YMAX = 83.68570533713473
BANDS = 64
CLASSES = ("corn", "soybeans", "alfalfa", "pasture")
BACKGROUND, ROAD = len(CLASSES), len(CLASSES) + 1


def _grid_origin(lon: float, lat: float, shard: int) -> tuple[int, int]:
    """Global pixel (row, col) of a shard-aligned origin near (lon, lat)."""
    col = int((lon - GLOBAL_XMIN) / GLOBAL_RES) // shard * shard
    row = int((GLOBAL_YMAX - lat) / GLOBAL_RES) // shard * shard
    return row, col


def _fields(rng, xmin, ymax, size, res, shard, missing):
    """Regular quarter-quarter-section fields plus the edge cases, in EPSG:4326."""
    lat = ymax - size * res / 2
    mile_x = 1609.344 / (111_320 * math.cos(math.radians(lat))) / res  # px per mile along x
    mile_y = 1609.344 / 110_946 / res
    px = lambda c, r: (xmin + c * res, ymax - r * res)  # noqa: E731  pixel corner -> lon/lat
    rows = []

    def add(geom, label, kind):
        rows.append({"geometry": geom, "label": label, "kind": kind})

    road = 2.0  # px kept clear on each side of a section line
    for si in range(int(size / mile_y) + 1):
        for sj in range(int(size / mile_x) + 1):
            for qi in range(4):
                j = 0
                while j < 4:
                    span = 2 if (j < 3 and rng.random() < 0.3) else 1  # some 80-acre fields
                    c0 = sj * mile_x + j * mile_x / 4 + (road if j == 0 else 0.6)
                    c1 = sj * mile_x + (j + span) * mile_x / 4 - (road if j + span == 4 else 0.6)
                    r0 = si * mile_y + qi * mile_y / 4 + (road if qi == 0 else 0.6)
                    r1 = si * mile_y + (qi + 1) * mile_y / 4 - (road if qi == 3 else 0.6)
                    j += span
                    if c1 > size or r1 > size:
                        continue
                    mid = (c0 + c1) / 2 + rng.normal(0, 1.5)
                    ring = [(c0, r0), (mid, r0), (c1, r0), (c1, r1), (c0, r1)]
                    ring = [(c + rng.normal(0, 0.4), r + rng.normal(0, 0.4)) for c, r in ring]
                    poly = shapely.Polygon([px(c, r) for c, r in ring])
                    label = CLASSES[rng.choice(len(CLASSES), p=[0.4, 0.35, 0.15, 0.1])]
                    if rng.random() < 0.03:  # a farmstead cut out of the field
                        cc, rr = c0 + (c1 - c0) * 0.3, r0 + (r1 - r0) * 0.3
                        hole = [px(cc, rr), px(cc + 8, rr), px(cc + 8, rr + 6), px(cc, rr + 6)]
                        poly = shapely.Polygon(poly.exterior.coords, [hole])
                        add(poly, label, "hole")
                    elif rng.random() < 0.03:  # a creek splits the field in two parts
                        # offsets keep the unjittered edges off the pixel grid lines
                        c0, c1, r0, r1 = c0 + 0.137, c1 - 0.211, r0 + 0.173, r1 - 0.059
                        cm = (c0 + c1) / 2
                        a = shapely.box(*px(c0, r1), *px(cm - 1.5, r0))
                        b = shapely.box(*px(cm + 1.5, r1), *px(c1, r0))
                        add(shapely.MultiPolygon([a, b]), label, "multipolygon")
                    else:
                        add(poly, label, "field")
    regular = len(rows)
    # edge cases, drawn over the regular fields (overlaps are allowed and count for both)
    s = size
    # vertex offsets keep edges off pixel-centre lattices (ties are tested on purpose elsewhere)
    big = [(0.30 * s + 0.137, 0.35 * s + 0.291), (0.62 * s + 0.413, 0.30 * s + 0.077),
           (0.70 * s + 0.229, 0.55 * s + 0.371), (0.55 * s + 0.061, 0.70 * s + 0.187),
           (0.33 * s + 0.353, 0.62 * s + 0.439)]
    add(shapely.Polygon([px(c, r) for c, r in big]), "pasture", "many-chunks")
    sc, sr = shard, shard  # a shard corner
    add(shapely.box(*px(sc - 30.3, sr + 25.7), *px(sc + 20.2, sr - 18.1)), "corn", "shard-corner")
    add(shapely.box(*px(256 - 10.2, 300.4), *px(256 + 12.7, 280.2)), "corn", "chunk-border")
    c, r = int(0.35 * s), int(0.45 * s)  # sub-pixel squares: one around a pixel centre, one around a corner
    add(shapely.box(*px(c + 0.3, r + 0.7), *px(c + 0.7, r + 0.3)), "corn", "subpixel-centre")
    add(shapely.box(*px(c + 4.8, r + 5.2), *px(c + 5.2, r + 4.8)), "corn", "subpixel-corner")
    add(shapely.box(*px(-20.3, 140.6), *px(30.7, 100.4)), "soybeans", "partly-outside")
    add(shapely.box(*px(-80.5, 240.5), *px(-30.5, 200.5)), "soybeans", "outside")
    c, r = int(0.2 * s), int(0.72 * s)
    add(shapely.box(*px(c + 0.2, r + 40.8), *px(c + 50.6, r + 0.1)), "alfalfa", "overlap-a")
    add(shapely.box(*px(c + 25.4, r + 60.3), *px(c + 75.9, r + 20.6)), "alfalfa", "overlap-b")
    # a field lying on the never-written chunk: no valid pixel in that year
    t, cy, cx = missing
    add(shapely.box(*px(cx * 256 + 60.3, cy * 256 + 120.6), *px(cx * 256 + 110.1, cy * 256 + 80.2)),
        "corn", "missing-chunk")
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    gdf.insert(0, "feature_id", np.arange(1, len(gdf) + 1, dtype=np.int64) * 7 + 1000)
    gdf["score_mean"] = rng.uniform(0.6, 1.0, len(gdf)).astype(np.float32)
    gdf["score_std"] = rng.uniform(0.0, 0.2, len(gdf)).astype(np.float32)
    return gdf, regular


def fields_by_year(gdf: gpd.GeoDataFrame, years, seed: int = 0) -> gpd.GeoDataFrame:
    """Field layers that differ by year, as a field-boundary model would give them.

    Every year's layer is shifted by a few pixels; in the last year every fifth field is split
    in two (the west half keeps the id, the east half gets a new one); in the first year every
    seventh field is missing. Same ids in several years carry different geometry.
    """
    from shapely import affinity

    rng = np.random.default_rng(seed)
    layers = []
    for k, year in enumerate(years):
        layer = gdf.copy()
        dx, dy = rng.uniform(-3, 3, 2) * GLOBAL_RES
        layer["geometry"] = layer.geometry.map(lambda g: affinity.translate(g, dx, dy))
        if k == 0:
            layer = layer[np.arange(len(layer)) % 7 != 3]
        if k == len(years) - 1 and len(years) > 1:
            split = np.arange(len(layer)) % 5 == 2
            west, east = layer[split].copy(), layer[split].copy()
            for part, side in ((west, 0), (east, 1)):
                def half(g, side=side):
                    x0, y0, x1, y1 = g.bounds
                    xm = (x0 + x1) / 2 + 0.37 * GLOBAL_RES
                    return g.intersection(shapely.box(*((x0, y0, xm, y1) if side == 0 else (xm, y0, x1, y1))))
                part["geometry"] = part.geometry.map(half)
            east["feature_id"] = east["feature_id"] + 1_000_000
            # a half can degenerate to a line or a collection: keep only splits into two polygons
            polygonal = lambda part: (part.geometry.geom_type.isin(["Polygon", "MultiPolygon"])  # noqa: E731
                                      .to_numpy() & (shapely.area(np.asarray(part.geometry)) > 0))
            keep = polygonal(west) & polygonal(east)
            layer = gpd.GeoDataFrame(
                pd.concat([layer[~split], west[keep], east[keep], layer[split][~keep]]),
                geometry="geometry", crs=gdf.crs)
        layer["year"] = np.int32(year)
        layers.append(layer)
    return gpd.GeoDataFrame(pd.concat(layers, ignore_index=True), geometry="geometry", crs=gdf.crs)


def _class_map(gdf, regular, xmin, ymax, size, res):
    """Class of every pixel: fields' crops, roads on section lines, background elsewhere."""
    transform = Affine(res, 0, xmin, 0, -res, ymax)
    fields = gdf.iloc[:regular]
    shapes = ((g, CLASSES.index(label)) for g, label in zip(fields.geometry, fields.label))
    cmap = features.rasterize(shapes, out_shape=(size, size), transform=transform,
                              fill=BACKGROUND, dtype=np.uint8)
    lat = ymax - size * res / 2
    mile_x = 1609.344 / (111_320 * math.cos(math.radians(lat))) / res
    mile_y = 1609.344 / 110_946 / res
    for k in range(int(size / mile_x) + 2):
        c = int(round(k * mile_x))
        cmap[:, max(c - 1, 0):c + 1] = ROAD
    for k in range(int(size / mile_y) + 2):
        r = int(round(k * mile_y))
        cmap[max(r - 1, 0):r + 1, :] = ROAD
    return cmap


def _quantise(v: np.ndarray) -> np.ndarray:
    q = np.rint(np.sign(v) * np.sqrt(np.abs(v)) * 127.5)
    return np.clip(q, -127, 127).astype(np.int8)


def create_store(path, years, size: int, xmin: float, ymax: float, res: float, shard: int,
                 chunk: int = 256) -> zarr.Array:
    """An empty store with the AEF layout (group attributes, coordinates, sharded int8 array):
    every chunk reads as nodata until written."""
    group = zarr.open_group(path, mode="w", zarr_format=3)
    quant = {"method": "signed_square", "original_dtype": "float32", "quantized_dtype": "int8",
             "formula": "(x / 127.5) ** 2 * sign(x)", "valid_range": [-127, 127], "nodata": -128}
    group.attrs.update({
        "proj:code": "EPSG:4326",
        "spatial:transform": [res, 0.0, xmin, 0.0, -res, ymax],
        "spatial:shape": [size, size],
        "spatial:bbox": [xmin, ymax - size * res, xmin + size * res, ymax],
        "spatial:dimensions": ["y", "x"],
        "spatial:registration": "pixel",
        "geoemb:quantization": quant,
        "geoemb:dimensions": BANDS,
        "geoemb:data_type": "int8",
        "geoemb:gsd": res,
        "geoemb:model": "synthetic sample (aef-zonal)",
        "geoemb:source_data": "synthetic: crop-class unit vectors + noise + yearly drift",
    })
    arr = group.create_array(
        "embeddings", shape=(len(years), BANDS, size, size), dtype="int8",
        shards=(1, BANDS, shard, shard), chunks=(1, BANDS, chunk, chunk),
        compressors=ZstdCodec(level=3), fill_value=-128,
        dimension_names=("time", "band", "y", "x"))
    coords = {
        "time": np.asarray(years, dtype=np.int32),
        "band": np.asarray([f"A{i:02d}" for i in range(BANDS)], dtype=object),
        "y": ymax - (np.arange(size) + 0.5) * res,
        "x": xmin + (np.arange(size) + 0.5) * res,
    }
    for name, values in coords.items():
        dtype = VariableLengthUTF8() if values.dtype == object else values.dtype
        a = group.create_array(name, shape=values.shape, dtype=dtype,
                               chunks=values.shape, dimension_names=(name,))
        a[:] = values
    return arr


def make_sample(out_dir, size: int = 2048, years=(2023, 2024, 2025), seed: int = 42,
                shard: int = 1024, chunk: int = 256, lon: float = -93.65, lat: float = 42.10,
                per_year_fields: bool = False, log=print) -> tuple[Path, Path]:
    """Write OUT/store.zarr and OUT/fields.parquet; returns their paths.

    per_year_fields: fields.parquet holds one layer per year (a `year` column), see fields_by_year.
    """
    if size % shard or shard % chunk:
        raise ValueError(f"size {size} must be a multiple of the shard edge {shard}, "
                         f"itself a multiple of the chunk edge {chunk}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    row0, col0 = _grid_origin(lon, lat, 4096)
    res = GLOBAL_RES
    xmin, ymax = GLOBAL_XMIN + col0 * res, GLOBAL_YMAX - row0 * res
    # one inner chunk of the first year is left unwritten: (time index, chunk row, chunk col)
    missing = (0, 1, min(6, size // chunk - 1))
    gdf, regular = _fields(rng, xmin, ymax, size, res, shard, missing)
    fields_path = out / "fields.parquet"
    written = fields_by_year(gdf, years, seed) if per_year_fields else gdf
    written.drop(columns="kind").to_parquet(fields_path, index=False)
    (out / "fields_kinds.json").write_text(json.dumps(dict(zip(map(int, gdf.feature_id), gdf.kind))))
    log(f"fields: {len(written)} polygons -> {fields_path}")

    cmap = _class_map(gdf, regular, xmin, ymax, size, res)
    ncls = ROAD + 1
    base = rng.normal(size=(ncls, BANDS))
    base /= np.linalg.norm(base, axis=1, keepdims=True)

    store_path = out / "store.zarr"
    arr = create_store(store_path, years, size, xmin, ymax, res, shard, chunk)
    for t, year in enumerate(years):
        drift = rng.normal(scale=0.15 / math.sqrt(BANDS), size=(ncls, BANDS))
        centres = base + drift
        for r0 in range(0, size, shard):
            for c0 in range(0, size, shard):
                cls = cmap[r0:r0 + shard, c0:c0 + shard]
                v = centres[cls].astype(np.float32)  # (rows, cols, bands)
                v += rng.standard_normal(v.shape, dtype=np.float32) * np.float32(0.35 / math.sqrt(BANDS))
                v /= np.linalg.norm(v, axis=2, keepdims=True)
                q = _quantise(v)
                q[rng.random(cls.shape) < 0.01] = -128
                q = np.ascontiguousarray(q.transpose(2, 0, 1))
                if t == missing[0]:
                    cy, cx = missing[1] * chunk - r0, missing[2] * chunk - c0
                    if 0 <= cy < shard and 0 <= cx < shard:
                        q[:, cy:cy + chunk, cx:cx + chunk] = -128  # all fill: never written
                arr[t, :, r0:r0 + shard, c0:c0 + shard] = q
        log(f"store: year {year} written")
    log(f"store: {len(years)} years x {BANDS} bands x {size}^2 px -> {store_path}")
    return store_path, fields_path
