"""The built-in sample: an AEF-layout Zarr store over Iowa and realistic field polygons.

The store has the real mosaic's layout (Zarr v3 group, `embeddings(time, band, y, x)` int8,
fill -128, sharded with 256^2 inner chunks, zstd, coordinate arrays, the group attributes)
on a window of the global grid; only its size and shard edge are smaller.

Content, built to behave like AEF's embeddings rather than one vector per class: quarter-quarter
section fields of four crops whose class vectors share a common farmland part (alfalfa and
pasture close together); every field its own persistent offset (soil, drainage) plus a yearly one
(management); a smooth soil gradient across the area and a within-field texture that changes
every year; crop rotation (the label is the last year's crop; before it corn and soybeans mostly
alternate); grass margins along field edges, roads on the section lines; per-pixel noise; all
renormalised to unit length and signed-square quantised. Nodata: ~1 % scattered pixels, a few
cloud-like patches a year, and one inner chunk never written. The fields file adds the
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
BACKGROUND, ROAD, MARGIN = len(CLASSES), len(CLASSES) + 1, len(CLASSES) + 2  # non-field surfaces


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
    big = [
        (0.30 * s + 0.137, 0.35 * s + 0.291),
        (0.62 * s + 0.413, 0.30 * s + 0.077),
        (0.70 * s + 0.229, 0.55 * s + 0.371),
        (0.55 * s + 0.061, 0.70 * s + 0.187),
        (0.33 * s + 0.353, 0.62 * s + 0.439),
    ]
    add(shapely.Polygon([px(c, r) for c, r in big]), "pasture", "many-chunks")
    sc, sr = shard, shard  # a shard corner
    add(shapely.box(*px(sc - 30.3, sr + 25.7), *px(sc + 20.2, sr - 18.1)), "corn", "shard-corner")
    add(shapely.box(*px(256 - 10.2, 300.4), *px(256 + 12.7, 280.2)), "corn", "chunk-border")
    c, r = (
        int(0.35 * s),
        int(0.45 * s),
    )  # sub-pixel squares: one around a pixel centre, one around a corner
    add(shapely.box(*px(c + 0.3, r + 0.7), *px(c + 0.7, r + 0.3)), "corn", "subpixel-centre")
    add(shapely.box(*px(c + 4.8, r + 5.2), *px(c + 5.2, r + 4.8)), "corn", "subpixel-corner")
    add(shapely.box(*px(-20.3, 140.6), *px(30.7, 100.4)), "soybeans", "partly-outside")
    add(shapely.box(*px(-80.5, 240.5), *px(-30.5, 200.5)), "soybeans", "outside")
    c, r = int(0.2 * s), int(0.72 * s)
    add(shapely.box(*px(c + 0.2, r + 40.8), *px(c + 50.6, r + 0.1)), "alfalfa", "overlap-a")
    add(shapely.box(*px(c + 25.4, r + 60.3), *px(c + 75.9, r + 20.6)), "alfalfa", "overlap-b")
    # a field lying on the never-written chunk: no valid pixel in that year
    t, cy, cx = missing
    add(
        shapely.box(*px(cx * 256 + 60.3, cy * 256 + 120.6), *px(cx * 256 + 110.1, cy * 256 + 80.2)),
        "corn",
        "missing-chunk",
    )
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
                    return g.intersection(
                        shapely.box(*((x0, y0, xm, y1) if side == 0 else (xm, y0, x1, y1)))
                    )

                part["geometry"] = part.geometry.map(half)
            east["feature_id"] = east["feature_id"] + 1_000_000

            # a half can degenerate to a line or a collection: keep only splits into two polygons
            def polygonal(part):
                return part.geometry.geom_type.isin(["Polygon", "MultiPolygon"]).to_numpy() & (
                    shapely.area(np.asarray(part.geometry)) > 0
                )

            keep = polygonal(west) & polygonal(east)
            layer = gpd.GeoDataFrame(
                pd.concat([layer[~split], west[keep], east[keep], layer[split][~keep]]),
                geometry="geometry",
                crs=gdf.crs,
            )
        layer["year"] = np.int32(year)
        layers.append(layer)
    return gpd.GeoDataFrame(pd.concat(layers, ignore_index=True), geometry="geometry", crs=gdf.crs)


def _owner_map(gdf, regular, xmin, ymax, size, res):
    """What every pixel shows: the index of the regular field under it, or regular + 0, 1, 2 for
    the non-field surfaces (background, roads on the section lines, margins on field edges)."""
    transform = Affine(res, 0, xmin, 0, -res, ymax)
    fields = gdf.geometry.iloc[:regular]
    background, road, margin = (regular + s - len(CLASSES) for s in (BACKGROUND, ROAD, MARGIN))
    owner = features.rasterize(
        zip(fields, range(regular)),
        out_shape=(size, size),
        transform=transform,
        fill=background,
        dtype=np.int32,
    )
    # the grass strip and headland at a field's edge: the pixels its boundary runs through
    edges = features.rasterize(
        ((b, 1) for b in fields.boundary),
        out_shape=(size, size),
        transform=transform,
        fill=0,
        dtype=np.uint8,
    )
    owner[edges == 1] = margin
    lat = ymax - size * res / 2
    mile_x = 1609.344 / (111_320 * math.cos(math.radians(lat))) / res
    mile_y = 1609.344 / 110_946 / res
    for k in range(int(size / mile_x) + 2):
        c = int(round(k * mile_x))
        owner[:, max(c - 1, 0) : c + 1] = road
    for k in range(int(size / mile_y) + 2):
        r = int(round(k * mile_y))
        owner[max(r - 1, 0) : r + 1, :] = road
    return owner


def _rotations(labels, years, rng) -> np.ndarray:
    """Class index of every field in every year (years x fields): the label is the last year's crop;
    going back, corn and soybeans mostly alternate and some alfalfa was corn before it was sown."""
    cls = np.empty((len(years), len(labels)), np.int8)
    cls[-1] = [CLASSES.index(label) for label in labels]
    corn, soy, alfalfa = (CLASSES.index(c) for c in ("corn", "soybeans", "alfalfa"))
    for t in range(len(years) - 2, -1, -1):
        nxt, u = cls[t + 1], rng.random(len(labels))
        cls[t] = nxt
        cls[t][(nxt == corn) & (u < 0.7)] = soy
        cls[t][(nxt == soy) & (u < 0.7)] = corn
        cls[t][(nxt == alfalfa) & (u < 0.25)] = corn
    return cls


def _smooth(rng, size: int, step: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random surface of `channels` channels over size x size pixels, as the two
    interpolation matrices (size x knots) and the knot values: pixels = L @ G[c] @ L.T."""
    knots = size // step + 2
    pos = (np.arange(size) + 0.5) / step
    lo = np.minimum(pos.astype(int), knots - 2)
    interp = np.zeros((size, knots), np.float32)
    interp[np.arange(size), lo] = 1 - (pos - lo)
    interp[np.arange(size), lo + 1] = pos - lo
    return interp, rng.standard_normal((channels, knots, knots)).astype(np.float32)


def _clouds(rng, size: int, count: int) -> np.ndarray:
    """Nodata patches: `count` ellipses of 10 to 60 px radius at random places (bool mask)."""
    mask = np.zeros((size, size), bool)
    for cy, cx, ry, rx in zip(
        *(rng.uniform(0, size, (2, count))), *rng.uniform(10, 60, (2, count))
    ):
        r0, r1, c0, c1 = (
            max(int(cy - ry), 0),
            min(int(cy + ry) + 1, size),
            max(int(cx - rx), 0),
            min(int(cx + rx) + 1, size),
        )
        yy, xx = np.ogrid[r0:r1, c0:c1]
        mask[r0:r1, c0:c1] |= ((yy + 0.5 - cy) / ry) ** 2 + ((xx + 0.5 - cx) / rx) ** 2 <= 1
    return mask


def _class_vectors(rng) -> np.ndarray:
    """Unit vectors of the classes and surfaces. All share a common part (it is all farmland:
    corn and soybeans end up 0.8 apart, not the 1.4 of random directions); alfalfa and pasture
    lie close (both perennial forage) and margins near pasture (grass), so clusters overlap."""
    base = rng.normal(size=(len(CLASSES) + 4, BANDS))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    base = base[:1] + 0.8 * base[1:]  # the first draw is the common part
    pasture, alfalfa = CLASSES.index("pasture"), CLASSES.index("alfalfa")
    base[pasture] = base[alfalfa] + 0.7 * base[pasture]
    base[MARGIN] = base[pasture] + 0.8 * base[MARGIN]
    return base / np.linalg.norm(base, axis=1, keepdims=True)


def _quantise(v: np.ndarray) -> np.ndarray:
    """Signed-square quantisation of unit vectors' components (one temporary, updated in place)."""
    q = np.sqrt(np.abs(v))
    q *= 127.5
    np.copysign(q, v, out=q)
    return np.clip(np.rint(q, out=q), -127, 127, out=q).astype(np.int8)


def create_store(
    path,
    years,
    size: int,
    xmin: float,
    ymax: float,
    res: float,
    shard: int,
    chunk: int = 256,
    dtype: str = "int8",
) -> zarr.Array:
    """An empty store with the AEF layout (group attributes, coordinates, sharded int8 array, or
    an unquantised float32 one with NaN as fill): every chunk reads as nodata until written."""
    group = zarr.open_group(path, mode="w", zarr_format=3)
    quant = {
        "method": "signed_square",
        "original_dtype": "float32",
        "quantized_dtype": "int8",
        "formula": "(x / 127.5) ** 2 * sign(x)",
        "valid_range": [-127, 127],
        "nodata": -128,
    }
    group.attrs.update(
        {
            "proj:code": "EPSG:4326",
            "spatial:transform": [res, 0.0, xmin, 0.0, -res, ymax],
            "spatial:shape": [size, size],
            "spatial:bbox": [xmin, ymax - size * res, xmin + size * res, ymax],
            "spatial:dimensions": ["y", "x"],
            "spatial:registration": "pixel",
            **({"geoemb:quantization": quant} if dtype == "int8" else {}),
            "geoemb:dimensions": BANDS,
            "geoemb:data_type": dtype,
            "geoemb:gsd": res,
            "geoemb:model": "synthetic sample (aef-zonal)",
            "geoemb:source_data": "synthetic: crop classes, field offsets, soil and texture, rotation, noise",
        }
    )
    arr = group.create_array(
        "embeddings",
        shape=(len(years), BANDS, size, size),
        dtype=dtype,
        shards=(1, BANDS, shard, shard),
        chunks=(1, BANDS, chunk, chunk),
        compressors=ZstdCodec(level=3),
        fill_value=-128 if dtype == "int8" else np.nan,
        dimension_names=("time", "band", "y", "x"),
    )
    coords = {
        "time": np.asarray(years, dtype=np.int32),
        "band": np.asarray([f"A{i:02d}" for i in range(BANDS)], dtype=object),
        "y": ymax - (np.arange(size) + 0.5) * res,
        "x": xmin + (np.arange(size) + 0.5) * res,
    }
    for name, values in coords.items():
        dtype = VariableLengthUTF8() if values.dtype == object else values.dtype
        a = group.create_array(
            name, shape=values.shape, dtype=dtype, chunks=values.shape, dimension_names=(name,)
        )
        a[:] = values
    return arr


def make_sample(
    out_dir,
    size: int = 2048,
    years=(2023, 2024, 2025),
    seed: int = 42,
    shard: int = 1024,
    chunk: int = 256,
    lon: float = -93.65,
    lat: float = 42.10,
    per_year_fields: bool = False,
    dtype: str = "int8",
    log=print,
) -> tuple[Path, Path]:
    """Write OUT/store.zarr and OUT/fields.parquet; returns their paths.

    per_year_fields: fields.parquet holds one layer per year (a `year` column), see fields_by_year.
    dtype: int8 (signed-square codes, as the mosaic) or float32 (the unit vectors unquantised,
    NaN where the int8 store has nodata).
    """
    if size % shard or shard % chunk:
        raise ValueError(
            f"size {size} must be a multiple of the shard edge {shard}, "
            f"itself a multiple of the chunk edge {chunk}"
        )
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
    (out / "fields_kinds.json").write_text(
        json.dumps(dict(zip(map(int, gdf.feature_id), gdf.kind)))
    )
    log(f"fields: {len(written)} polygons -> {fields_path}")

    owner = _owner_map(gdf, regular, xmin, ymax, size, res)
    crops = _rotations(gdf.label.iloc[:regular].to_numpy(), years, rng)
    base = _class_vectors(rng)
    sd = 1 / math.sqrt(BANDS)  # per-band scale of a random vector of unit expected length
    field_offset = rng.normal(scale=0.7 * sd, size=(regular, BANDS))  # soil, drainage, history
    # a smooth soil gradient across the area (3 channels) and a within-field texture that
    # changes every year (3 channels, ~24 px), each mixed into the 64 bands by a fixed matrix
    soil_l, soil_g = _smooth(rng, size, 384, 3)
    tex_l = _smooth(rng, size, 24, 1)[0]
    mix = (
        rng.normal(size=(6, BANDS))
        * sd
        * np.array([[0.30], [0.30], [0.30], [0.12], [0.12], [0.12]])
    ).astype(np.float32)
    # pixels nodata must not hide: patches spare the edge-case fields, scattered nodata the
    # sub-pixel ones (their tests need those pixels); 1 = edge case, 2 = sub-pixel
    edge = features.rasterize(
        (
            (g, 2 if k.startswith("subpixel") else 1)
            for g, k in zip(gdf.geometry.iloc[regular:], gdf.kind.iloc[regular:])
        ),
        out_shape=(size, size),
        transform=Affine(res, 0, xmin, 0, -res, ymax),
        fill=0,
        dtype=np.uint8,
        all_touched=True,
    )

    store_path = out / "store.zarr"
    arr = create_store(store_path, years, size, xmin, ymax, res, shard, chunk, dtype)
    for t, year in enumerate(years):
        drift = rng.normal(scale=0.15 * sd, size=(len(base), BANDS))
        manage = rng.normal(scale=0.25 * sd, size=(regular, BANDS))  # this year's management
        centres = np.concatenate([base[crops[t]] + field_offset + manage, base[len(CLASSES) :]])
        centres = (centres + drift[np.r_[crops[t], len(CLASSES) : len(base)]]).astype(np.float32)
        tex_g = rng.standard_normal((3, tex_l.shape[1], tex_l.shape[1])).astype(np.float32)
        clouds = _clouds(rng, size, max(1, round(8 * (size / 2048) ** 2))) & (edge == 0)
        for r0 in range(0, size, shard):
            for c0 in range(0, size, shard):
                rows, cols = slice(r0, r0 + shard), slice(c0, c0 + shard)
                v = np.take(centres.T, owner[rows, cols], axis=1)  # (bands, rows, cols)
                smooth = np.stack(
                    [soil_l[rows] @ g @ soil_l[cols].T for g in soil_g]
                    + [tex_l[rows] @ g @ tex_l[cols].T for g in tex_g]
                )
                v += np.tensordot(mix.T, smooth, 1)
                v += rng.standard_normal(v.shape, dtype=np.float32) * np.float32(0.35 * sd)
                v /= np.sqrt(np.einsum("bij,bij->ij", v, v))
                q = _quantise(v)
                q[
                    :,
                    ((rng.random(v.shape[1:]) < 0.01) & (edge[rows, cols] != 2))
                    | clouds[rows, cols],
                ] = -128
                if t == missing[0]:
                    cy, cx = missing[1] * chunk - r0, missing[2] * chunk - c0
                    if 0 <= cy < shard and 0 <= cx < shard:
                        q[:, cy : cy + chunk, cx : cx + chunk] = -128  # all fill: never written
                arr[t, :, r0 : r0 + shard, c0 : c0 + shard] = (
                    q if dtype == "int8" else np.where(q == -128, np.nan, v)
                )
        log(f"store: year {year} written")
    log(f"store: {len(years)} years x {BANDS} bands x {size}^2 px -> {store_path}")
    return store_path, fields_path
