"""aef-zonal map: one year of an aef-zonal output as one self-contained, interactive HTML file.

Drawn by deck.gl (WebGL) from binary columns: vertex offsets as float32, triangles precomputed
here with earcut (the triangulator deck.gl itself uses) so that holes and multipolygons draw
right, one colour and id per field. The deck.gl bundles come from the npm registry at set-up
(`make setup` puts their tarballs in .cache/npm) and are inlined with the data: the file opens
from disk with no network. An optional tile URL adds a basemap (that part then needs network).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tarfile
from pathlib import Path

import numpy as np

from aef_zonal import config, dataset, filesystem
from aef_zonal.dataset import OutputError
from aef_zonal.query import output_years
from aef_zonal.viewers.plot import NO_PIXEL as NO_PIXEL_RGBA
from aef_zonal.viewers.plot import listed_without_pixels, write_file

DECK_VERSION = "9.4.0"
# the npm packages whose standalone bundle the page inlines (their tarballs, as `npm pack` names
# them); with a tile basemap, the whole of deck.gl (the TileLayer needs more than geo-layers)
BUNDLES = ("@deck.gl/core", "@deck.gl/layers")
TILE_BUNDLES = ("deck.gl",)
NPM_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "npm"
NO_PIXEL = tuple(round(255 * c) for c in NO_PIXEL_RGBA[:3])  # map.png's grey
MAX_FIELDS = 200_000
COLUMNS = ["geometry", "feature_id", "label", "count", "pca_components"]
COLOURS = ("pca", "cluster")
# the clusters' colours: matplotlib's tab10 without its grey (the no-pixel colour is grey), then
# hues a golden angle apart
TAB10 = ("1f77b4", "ff7f0e", "2ca02c", "d62728", "9467bd", "8c564b", "e377c2", "bcbd22", "17becf")


def read_fields(out, year: int, bbox=None, colour: str = "pca", settings: dict | None = None):
    """pyarrow Table of one year's fields (COLUMNS, and `cluster` when colouring by it),
    optionally only those whose bbox meets `bbox`; `settings`: a --conf's
    spark.hadoop.fs.s3a.* keys for an s3:// output."""
    import pyarrow.dataset as ds

    years = output_years(out, settings)
    if year not in years:
        raise OutputError(f"year {year} is not in {out}; it has {', '.join(map(str, years))}")
    fs, root = filesystem.arrow_fs(str(out), settings)
    folder = filesystem.join(root, dataset.year_folder(year))
    data = ds.dataset(folder, filesystem=fs, format="parquet", partitioning="hive")
    columns = COLUMNS + (["cluster"] if colour == "cluster" else [])
    if colour == "cluster" and "cluster" not in data.schema.names:
        raise OutputError(
            f"{folder} has no cluster column: `aef-zonal cluster {out} --k K --to DIR` writes "
            "one, then draw DIR"
        )
    missing = set(columns + ["bbox"]) - set(data.schema.names)
    if missing:
        raise OutputError(
            f"{folder} is not an aef-zonal output: column(s) {sorted(missing)} missing"
        )
    where = None
    if bbox is not None:
        xmin, ymin, xmax, ymax = bbox
        b = lambda k: ds.field("bbox", k)  # noqa: E731
        # the bbox covering column: pushed down to the Parquet row-group statistics
        where = (
            (b("xmin") <= xmax) & (b("xmax") >= xmin) & (b("ymin") <= ymax) & (b("ymax") >= ymin)
        )
    return data.to_table(columns=columns, filter=where)


def thin(table, max_fields: int, seed: int):
    """At most max_fields rows, a seeded sample when there are more; (table, note or None)."""
    n = table.num_rows
    if n <= max_fields:
        return table, None
    keep = np.sort(np.random.default_rng(seed).choice(n, size=max_fields, replace=False))
    return table.take(
        keep
    ), f"a seeded sample of {max_fields:,} of {n:,} fields (--max-fields, --seed)"


def geometry_arrays(geoms) -> dict[str, np.ndarray]:
    """Flat arrays of shapely polygons: float64 vertices (rings closed), the first vertex of every
    field and of every ring (each with the end appended), and earcut triangles as global vertex
    indices."""
    import mapbox_earcut
    import shapely

    kinds = set(shapely.get_type_id(geoms).tolist())
    if not kinds <= {3, 6}:
        raise OutputError("the output holds geometries other than polygons and multipolygons")
    kind, coords, offsets = shapely.to_ragged_array(geoms)
    if kind == shapely.GeometryType.POLYGON:
        (rings, parts), fields = offsets, np.arange(len(geoms) + 1)
    else:
        rings, parts, fields = offsets
    ring32 = rings.astype(np.uint32)
    triangles, starts = [], rings[parts].tolist()
    for p, (first, last) in enumerate(zip(parts[:-1].tolist(), parts[1:].tolist())):
        v0, v1 = starts[p], starts[p + 1]
        triangles.append(
            mapbox_earcut.triangulate_float64(coords[v0:v1], ring32[first + 1 : last + 1] - v0) + v0
        )
    tri = np.concatenate(triangles).astype(np.uint32) if triangles else np.zeros(0, np.uint32)
    return {
        "coords": coords,
        "field_starts": rings[parts[fields]].astype(np.uint32),
        "ring_starts": rings.astype(np.uint32),
        "triangles": tri.astype(np.uint32),
    }


def field_colours(pca) -> np.ndarray:
    """uint8 RGB per field from pca_components (each in [0, 1]); NO_PIXEL where it is null."""
    import pyarrow as pa

    rgb = np.tile(np.asarray(NO_PIXEL, np.uint8), (len(pca), 1))
    pca = pca.combine_chunks() if isinstance(pca, pa.ChunkedArray) else pca
    valid = ~np.asarray(pca.is_null())
    if valid.any():
        values = np.asarray(pca.drop_null().flatten(), dtype=np.float64).reshape(-1, 3)
        rgb[valid] = np.rint(np.clip(values, 0, 1) * 255).astype(np.uint8)
    return rgb


def cluster_palette(k: int) -> np.ndarray:
    """uint8 RGB of clusters 0 … k-1."""
    import colorsys

    rgb = [tuple(int(h[i : i + 2], 16) for i in (0, 2, 4)) for h in TAB10[:k]]
    for i in range(len(rgb), k):
        r, g, b = colorsys.hsv_to_rgb((i * 0.381966) % 1.0, 0.75, 0.85)
        rgb.append((round(255 * r), round(255 * g), round(255 * b)))
    return np.asarray(rgb, np.uint8).reshape(-1, 3)


def cluster_colours(clusters) -> tuple[np.ndarray, np.ndarray, list]:
    """(uint8 RGB per field by its cluster, NO_PIXEL where it has none; the clusters as int32
    with -1 for none; the legend's [rgb, text] per cluster)."""
    import pyarrow as pa

    clusters = clusters.combine_chunks() if isinstance(clusters, pa.ChunkedArray) else clusters
    ids = np.asarray(clusters.fill_null(-1), dtype=np.int32)
    k = int(ids.max()) + 1 if len(ids) else 0
    palette = cluster_palette(k)
    rgb = np.tile(np.asarray(NO_PIXEL, np.uint8), (len(ids), 1))
    rgb[ids >= 0] = palette[ids[ids >= 0]]
    sizes = np.bincount(ids[ids >= 0], minlength=k)
    key = [[palette[c].tolist(), f"cluster {c}: {sizes[c]:,} fields"] for c in range(k)]
    return rgb, ids, key


def bundle(package: str) -> str:
    """The standalone bundle dist.min.js of an npm package of deck.gl, read from its tarball."""
    cache = NPM_CACHE
    tgz = cache / f"{package.lstrip('@').replace('/', '-')}-{DECK_VERSION}.tgz"
    if not tgz.exists():
        raise OutputError(
            f"{tgz} is missing: `make setup` fetches deck.gl {DECK_VERSION} from the npm "
            f"registry into {cache} (or: cd {cache} && npm pack {package}@{DECK_VERSION})"
        )
    with tarfile.open(tgz) as t:
        return t.extractfile("package/dist.min.js").read().decode()


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(
        np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
    ).decode()


def page(
    table, year: int, note: str | None = None, tiles: str | None = None, not_drawn: int = 0
) -> str:
    """The HTML text of the map of `table` (read_fields' columns): fields in their
    pca_components colour, or their cluster's when the table has a `cluster` column;
    `not_drawn`: the year's fields without a valid pixel listed beside the data, said in the
    legend."""
    import pyarrow.compute as pc
    import shapely

    if table.num_rows == 0:
        raise OutputError(f"no field of {year} to draw (is the --bbox right?)")
    geoms = shapely.from_wkb(table["geometry"].combine_chunks().to_numpy(zero_copy_only=False))
    # large fields first, drawn under the small ones they overlap (as in map.png)
    order = np.argsort(-shapely.area(geoms), kind="stable")
    table, geoms = table.take(order), geoms[order]
    g = geometry_arrays(geoms)
    coords = g.pop("coords")
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    origin = (lo + hi) / 2
    labels = pc.dictionary_encode(table["label"].combine_chunks())
    count = table["count"].to_numpy(zero_copy_only=False)
    key = clusters = None
    if "cluster" in table.column_names:
        rgb, clusters, key = cluster_colours(table["cluster"])
    else:
        rgb = field_colours(table["pca_components"])
    empty = int((count == 0).sum())
    meta = {
        "year": year,
        "n": table.num_rows,
        "empty": empty,
        "not_drawn": not_drawn,
        "listed_in": dataset.WITHOUT_PIXELS + "/",
        "note": note,
        "tiles": tiles,
        "origin": origin.tolist(),
        "bounds": [*lo.tolist(), *hi.tolist()],
        "labels": labels.dictionary.to_pylist(),
        "grey": list(NO_PIXEL),
        # float32 offsets from the centre: ~1e-7 of the extent (1 mm over the demo's 16 km), where
        # float32 degrees would be off by up to ~1 m anywhere
        "positions": _b64((coords - origin).astype(np.float32)),
        **{k: _b64(v) for k, v in g.items()},
        "rgb": _b64(rgb),
        "feature_id": _b64(table["feature_id"].to_numpy().astype(np.int64)),
        "count": _b64(count.astype(np.float64)),
        "label": _b64(labels.indices.to_numpy().astype(np.int32)),
        "key": key,
        "cluster": None if clusters is None else _b64(clusters),
    }
    scripts = "\n".join(
        f"<script>{bundle(b)}</script>" for b in (TILE_BUNDLES if tiles else BUNDLES)
    )
    data = json.dumps(meta).replace("</", "<\\/")  # nothing in it can close its <script>
    head, rest = _TEMPLATE.split("@SCRIPTS@")
    between, end = rest.split("@DATA@")
    # joined, not replaced in turn: no bundle or label can then be taken for a placeholder
    return "".join(
        [
            head.replace("@TITLE@", f"aef-zonal: {table.num_rows:,} fields, {year}"),
            scripts,
            between,
            data,
            end.replace("@APP@", _APP),
        ]
    )


_TEMPLATE = """<!doctype html>
<html><head><meta charset="utf-8"><title>@TITLE@</title>
<style>
html, body { margin: 0; height: 100%; overflow: hidden; background: #fff; font: 13px system-ui, sans-serif; }
#map { position: absolute; inset: 0; }
#legend { position: absolute; left: 10px; bottom: 10px; max-width: 360px; padding: 8px 10px;
  background: rgba(255,255,255,.92); border: 1px solid #999; border-radius: 4px; line-height: 1.5; }
.sw { display: inline-block; width: 12px; height: 12px; vertical-align: -2px;
  border: 1px solid #555; margin-right: 4px; }
</style></head>
<body><div id="map"></div><div id="legend"></div>
@SCRIPTS@
<script id="aef-data" type="application/json">@DATA@</script>
<script>@APP@</script>
</body></html>
"""

_APP = r"""
"use strict";
const M = JSON.parse(document.getElementById("aef-data").textContent);
function bytes(b64) {
  const s = atob(b64), a = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) a[i] = s.charCodeAt(i);
  return a.buffer;
}
const positions = new Float32Array(bytes(M.positions));
const fieldStarts = new Uint32Array(bytes(M.field_starts));
const ringStarts = new Uint32Array(bytes(M.ring_starts));
const triangles = new Uint32Array(bytes(M.triangles));
const rgb = new Uint8Array(bytes(M.rgb));
const ids = new BigInt64Array(bytes(M.feature_id));
const counts = new Float64Array(bytes(M.count));
const labels = new Int32Array(bytes(M.label));
const clusters = M.cluster ? new Int32Array(bytes(M.cluster)) : null;
const nv = positions.length / 2;
// one colour per vertex, as deck.gl's binary polygons take it
const colours = new Uint8Array(nv * 4);
for (let f = 0; f < M.n; f++) {
  for (let v = fieldStarts[f]; v < fieldStarts[f + 1]; v++) {
    colours.set(rgb.subarray(3 * f, 3 * f + 3), 4 * v);
    colours[4 * v + 3] = 255;
  }
}
const common = {coordinateSystem: deck.COORDINATE_SYSTEM.LNGLAT_OFFSETS,
                coordinateOrigin: [M.origin[0], M.origin[1], 0]};
const layers = [];
if (M.tiles) {
  layers.push(new deck.TileLayer({id: "tiles", data: M.tiles, minZoom: 0, maxZoom: 19, tileSize: 256,
    renderSubLayers: p => new deck.BitmapLayer(p, {data: null, image: p.data,
      bounds: [p.tile.bbox.west, p.tile.bbox.south, p.tile.bbox.east, p.tile.bbox.north]})}));
}
// painter's order (the rows come largest first) rather than depth: all fields lie at z = 0
common.parameters = {depthCompare: "always", depthWriteEnabled: false};
layers.push(new deck.SolidPolygonLayer({...common, id: "fields", pickable: true, _normalize: false,
  data: {length: M.n, startIndices: fieldStarts,
         attributes: {getPolygon: {value: positions, size: 2}, indices: triangles,
                      getFillColor: {value: colours, size: 4, normalized: true}}}}));
layers.push(new deck.PathLayer({...common, id: "outlines", _pathType: "open",
  data: {length: ringStarts.length - 1, startIndices: ringStarts,
         attributes: {getPath: {value: positions, size: 2}}},
  getColor: [40, 40, 40, 140], getWidth: 0.6, widthUnits: "pixels"}));
function html(s) { return String(s).replace(/[&<>"]/g, c => "&#" + c.charCodeAt(0) + ";"); }
function tooltip({layer, index}) {
  if (!layer || layer.id !== "fields" || index < 0) return null;
  return {html: `feature_id <b>${ids[index]}</b><br>label <b>${html(M.labels[labels[index]])}</b><br>` +
                `count <b>${counts[index]}</b> pixels<br>year <b>${M.year}</b>` +
                (clusters ? `<br>cluster <b>${clusters[index] < 0 ? "none" : clusters[index]}</b>` : "")};
}
const [x0, y0, x1, y1] = M.bounds;
const view = new deck.WebMercatorViewport({width: window.innerWidth, height: window.innerHeight})
  .fitBounds([[x0, y0], [x1, y1]], {padding: 30});
window.aefFirstPaint = null;
window.aefDeck = new deck.Deck({
  parent: document.getElementById("map"), controller: true, getTooltip: tooltip, layers,
  initialViewState: {longitude: view.longitude, latitude: view.latitude, zoom: view.zoom},
  onAfterRender: () => {
    if (window.aefFirstPaint === null && layers.every(l => l.id === "tiles" || l.isLoaded)) {
      window.aefFirstPaint = performance.now();
      document.body.dataset.painted = "1";
    }
  },
  onError: e => console.error(e),
});
const grey = `rgb(${M.grey.join(",")})`;
const swatch = c => `<span class="sw" style="background:${c}"></span>`;
document.getElementById("legend").innerHTML =
  `<b>${M.n.toLocaleString("en")} fields, ${M.year}</b><br>` +
  (M.key ? `colour = k-means cluster of the field's mean embedding:<br>` +
           M.key.map(([c, text]) => swatch(`rgb(${c.join(",")})`) + html(text) + "<br>").join("")
         : `colour = PCA(3) of the field's mean embedding:<br>` +
           `${swatch("#f00")}PC1 ${swatch("#0f0")}PC2 ${swatch("#00f")}PC3, each scaled to [0, 1]<br>`) +
  `${swatch(grey)}no valid pixel (${M.empty.toLocaleString("en")} fields)<br>` +
  (M.not_drawn ? `${M.not_drawn.toLocaleString("en")} fields without a valid pixel, not drawn ` +
                 `(listed in ${html(M.listed_in)})<br>` : "") +
  (M.note ? html(M.note) + "<br>" : "") +
  `hover a field for its feature_id, label, count${clusters ? " and cluster" : ""}`;
"""


def parse_bbox(text: str):
    try:
        xmin, ymin, xmax, ymax = (float(v) for v in text.split(","))
    except ValueError:
        raise OutputError(
            f"--bbox {text!r}: give xmin,ymin,xmax,ymax in degrees, e.g. --bbox=-93.8,42.0,-93.6,42.2"
        ) from None
    if not (xmin < xmax and ymin < ymax):
        raise OutputError(f"--bbox {text!r}: xmin must be below xmax and ymin below ymax")
    return xmin, ymin, xmax, ymax


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="aef-zonal map",
        description="Write one year of an aef-zonal output as one self-contained interactive HTML "
        "map (deck.gl, WebGL): fields in their pca_components colour (or their cluster's, "
        "--color cluster), hover for "
        "feature_id, label and count. Opens from disk with no network.",
        epilog="example: aef-zonal map out/result --year 2024 --to out/map.html",
    )
    p.add_argument("out", help="output folder of `aef-zonal run`")
    p.add_argument("--year", type=int, help="year to draw (default: the latest in OUT)")
    p.add_argument(
        "--to", metavar="FILE.html", help="file to write (default OUT/_plots/YEAR/map.html)"
    )
    p.add_argument(
        "--bbox",
        metavar="XMIN,YMIN,XMAX,YMAX",
        help="only fields whose bbox meets this box, in degrees "
        "(write --bbox=-93.8,42.0,-93.6,42.2 when it starts with a minus)",
    )
    p.add_argument(
        "--max-fields",
        type=int,
        default=MAX_FIELDS,
        metavar="N",
        help="draw a seeded sample of N fields when there are more (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=42, help="sampling seed for --max-fields")
    p.add_argument(
        "--color",
        choices=COLOURS,
        default="pca",
        help="fill each field with its pca_components (default) or its cluster's colour (the "
        "output of `aef-zonal cluster`)",
    )
    p.add_argument(
        "--tiles",
        metavar="URL",
        help="basemap tile URL template with {z}/{x}/{y} "
        "(e.g. an OpenStreetMap tile server); the page then loads tiles from it",
    )
    return config.parse_with_settings(p, argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.tiles is not None and not all(k in args.tiles for k in ("{z}", "{x}", "{y}")):
            raise OutputError(f"--tiles {args.tiles!r}: the URL needs {{z}}, {{x}} and {{y}}")
        if args.max_fields < 1:
            raise OutputError(f"--max-fields {args.max_fields}: give a positive number")
        bbox = parse_bbox(args.bbox) if args.bbox else None
        year = args.year or output_years(args.out, args.settings)[-1]
        given = read_fields(args.out, year, bbox, args.color, args.settings)
        # with --bbox, the listed fields' extent is unknown: not counted
        listed = set() if bbox else listed_without_pixels(args.out, year, args.settings)
        not_drawn = len(listed - set(given["feature_id"].to_pylist()))
        table, note = thin(given, args.max_fields, args.seed)
        data = page(table, year, note, args.tiles, not_drawn).encode()
        to = args.to or filesystem.join(args.out, "_plots", str(year), "map.html")
        write_file(to, data, args.settings)
    except OutputError as e:
        print(f"aef-zonal map: error: {e}", file=sys.stderr)
        return 2
    if note:
        print(f"[aef-zonal] {note}")
    print(f"[aef-zonal] wrote {to} ({table.num_rows:,} fields, {year}, {len(data) / 1e6:.1f} MB)")
    return 0
