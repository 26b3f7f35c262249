"""The fields' file formats: what a --fields path holds, told from its bytes before Spark reads
it, and each format read by its engine's reader.

| format     | told by                                   | read by                                      |
|------------|-------------------------------------------|----------------------------------------------|
| GeoParquet | PAR1 at both ends, `geo` in the footer    | Sedona's geoparquet source (on the executors) |
| GeoPackage | SQLite header, application id GPKG        | Sedona's geopackage source (`--layer`)       |
| Shapefile  | the .shp's file code 9994                 | Sedona's shapefile source (.dbf, .prj beside) |
| GeoJSON    | JSON text                                 | Sedona's geojson source                      |
| FlatGeobuf | its `fgb` magic bytes                     | pyogrio (GDAL) on the driver: Sedona has none |

Sedona's readers run on the executors and read any Hadoop URL with the session's credentials,
as the GeoParquet source does; FlatGeobuf is read whole by the driver, so it suits files of up
to some hundred thousand fields (convert larger ones to GeoParquet). The bytes are looked at
first (a few hundred bytes and a Parquet footer per file: before the JVM starts for a local
path, through Hadoop's filesystem for a URL), so that a file of another kind, a plain Parquet
file, a folder of mixed formats or a truncated file is refused in one line naming it and the
fix, and never reaches a Spark task.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass

from aef_zonal import filesystem

GEOPARQUET, GEOPACKAGE, SHAPEFILE, GEOJSON, FLATGEOBUF = (
    "GeoParquet",
    "GeoPackage",
    "Shapefile",
    "GeoJSON",
    "FlatGeobuf",
)
READ = "GeoParquet, GeoPackage, Shapefile, GeoJSON and FlatGeobuf"
# the files a Shapefile's .shp comes with
SIDECARS = (".dbf", ".shx", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".xml", ".qmd", ".fix")
HEAD = 4096  # enough for a CSV's first line and a GeoPackage's header
# binary formats people hand over by mistake, by their first bytes
NOT_TABLES = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive (a zipped Shapefile: unzip it and give the .shp)",
    b"\x1f\x8b": "a gzip file (decompress it first)",
    b"\x89HDF": "an HDF5 file",
    b"ORC": "an ORC file",
    b"ARROW1": "an Arrow IPC file",
    b"Obj\x01": "an Avro file",
    b"\xd0\xcf\x11\xe0": "an Office document",
}


class FormatError(ValueError):
    """The fields path is not something the job reads; the message names it and the fix."""


class OtherFormat(FormatError):
    """A file of a kind the job does not read (`what`: "CSV", "a PNG image", …)."""

    def __init__(self, message: str, what: str):
        super().__init__(message)
        self.what = what


@dataclass(frozen=True)
class Source:
    """What a --fields path holds: its format, its data files, the GeoPackage layer."""

    url: str
    kind: str
    files: tuple[str, ...]
    layer: str | None = None
    collection: bool = True  # GeoJSON: one FeatureCollection per file (else a Feature a line)


class LocalFiles:
    """A local path's bytes, read before any JVM runs."""

    @staticmethod
    def path(url: str) -> str:
        return filesystem.local_path(url)

    def exists(self, url: str) -> bool:
        return os.path.exists(self.path(url))

    def is_dir(self, url: str) -> bool:
        return os.path.isdir(self.path(url))

    def files(self, url: str) -> list[str]:
        root = self.path(url)
        return sorted(
            os.path.relpath(os.path.join(d, n), root) for d, _, ns in os.walk(root) for n in ns
        )

    def size(self, url: str) -> int:
        return os.path.getsize(self.path(url))

    def read(self, url: str, offset: int, length: int) -> bytes:
        try:
            with open(self.path(url), "rb") as f:
                f.seek(offset)
                return f.read(length)
        except OSError as e:
            raise FormatError(f"cannot read {url}: {e.strerror}") from None


class HadoopFiles:
    """A URL's bytes through Hadoop's filesystem in the driver's JVM (S3A, HDFS, …)."""

    def __init__(self, spark):
        self.fs = filesystem.Hadoop(spark)

    def exists(self, url: str) -> bool:
        return self.fs.exists(url)

    def is_dir(self, url: str) -> bool:
        return self.fs.is_dir(url)

    def files(self, url: str) -> list[str]:
        return self.fs.files(url)

    def size(self, url: str) -> int:
        return self.fs.size(url)

    def read(self, url: str, offset: int, length: int) -> bytes:
        return self.fs.read_range(url, offset, length)


def files_of(url: str, spark=None):
    """How to read `url`'s bytes: from the local disk, else through Spark's Hadoop filesystem."""
    return LocalFiles() if filesystem.local_path(url) is not None else HadoopFiles(spark)


def identify(url: str, layer: str | None, files) -> Source:
    """The Source at `url`, or a FormatError naming what is wrong with it and the fix."""
    if not files.exists(url):
        raise FormatError(f"fields file {url} does not exist")
    if files.is_dir(url):
        names = [
            n
            for n in files.files(url)
            if not any(p.startswith(("_", ".")) for p in n.split("/")) and not n.endswith(".crc")
        ]
        if "zarr.json" in names:
            raise FormatError(
                f"{url} is a Zarr store, not fields: give it as --store, and the field "
                "polygons as --fields"
            )
        if not names:
            raise FormatError(f"fields folder {url} holds no files")
        kinds: dict[str, list[str]] = {}
        other = None
        for n in names:
            whole = filesystem.join(url, n)
            try:
                kind = (
                    SHAPEFILE
                    if n.lower().endswith(SIDECARS)
                    else kind_of(whole, _head(files, whole))
                )
            except OtherFormat as e:
                kind, other = e.what, other or e
            kinds.setdefault(kind, []).append(n)
        if len(kinds) > 1:
            mixed = "; ".join(
                f"{len(ns)} {kind} ({', '.join(ns[:2])}{', …' if len(ns) > 2 else ''})"
                for kind, ns in sorted(kinds.items())
            )
            raise FormatError(
                f"fields folder {url} mixes formats: {mixed}; give one file, or a folder of "
                "files of one format"
            )
        ((kind, found),) = kinds.items()
        if kind in (GEOPACKAGE, FLATGEOBUF) and len(found) > 1:
            raise FormatError(
                f"fields folder {url} holds {len(found)} {kind} files ({', '.join(found[:3])}"
                f"{', …' if len(found) > 3 else ''}); give one of them as --fields"
            )
        data = tuple(
            filesystem.join(url, n)
            for n in found
            if kind != SHAPEFILE or n.lower().endswith(".shp")
        )
    else:
        kind = kind_of(url, _head(files, url))
        data = (url,)
    checks = {GEOPARQUET: _check_parquet, SHAPEFILE: _check_shapefile}
    for f in data:
        if kind in checks:
            checks[kind](f, files)
    if layer and kind != GEOPACKAGE:
        raise FormatError(
            f"--layer {layer}: {url} is {kind}, which has one layer; leave --layer out"
        )
    if kind == GEOPACKAGE and isinstance(files, LocalFiles):
        layer = _gpkg_layer(data[0], layer, _local_layers(files.path(data[0]), data[0]))
    collection = kind != GEOJSON or b"FeatureCollection" in _head(files, data[0])
    return Source(url, kind, data, layer, collection)


def _head(files, url: str) -> bytes:
    size = files.size(url)
    if size == 0:
        raise FormatError(f"{url} is empty (0 bytes); write the fields again")
    return files.read(url, 0, min(HEAD, size))


def kind_of(name: str, head: bytes) -> str:
    """The format of a file from its first bytes (its name only in the messages); OtherFormat
    for what the job does not read."""
    if head.startswith(b"PAR1"):
        return GEOPARQUET
    if head.startswith(b"SQLite format 3\x00"):
        if head[68:72] in (b"GPKG", b"GP10", b"GP11"):
            return GEOPACKAGE
        raise OtherFormat(
            f"{name} is an SQLite database but not a GeoPackage (its application id is not "
            f"GPKG); write the fields as GeoPackage or GeoParquet ({READ} are read)",
            "SQLite",
        )
    if head.startswith(b"\x00\x00\x27\x0a"):
        return SHAPEFILE
    if head[:3] == b"fgb" and head[4:7] == b"fgb":
        return FLATGEOBUF
    what = next((w for magic, w in NOT_TABLES.items() if head.startswith(magic)), None)
    text = None if what else _text(head)
    if text is not None:
        body = text.lstrip("\ufeff \t\r\n")
        if body.startswith(("{", "[")):
            return GEOJSON
        first = body.splitlines()[0][:120] if body else ""
        if any(c in first for c in ",;\t|"):
            raise OtherFormat(
                f'{name} is a CSV text file (first line: "{first}"), not a fields format; '
                "write it as GeoParquet, e.g. with geopandas: gpd.GeoDataFrame(df, "
                'geometry=gpd.GeoSeries.from_wkt(df["geometry"]), crs=4326)'
                f'.to_parquet("fields.parquet") ({READ} are read)',
                "CSV",
            )
        raise OtherFormat(
            f'{name} is a text file (first line: "{first}"), not a fields format; '
            f"give the field polygons as {READ.replace(' and ', ' or ')}",
            "text",
        )
    raise OtherFormat(
        f"{name} is {what or 'not a table in any format it knows'}"
        f"{'' if what else f' (it starts with bytes {head[:8].hex(chr(32))})'}; "
        f"give the field polygons as {READ.replace(' and ', ' or ')}",
        (what or "unknown").split(" (")[0],
    )


def _text(head: bytes) -> str | None:
    """The bytes as text when they look like text (UTF-8 without control characters but
    whitespace), else None."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a character cut at the end of the head
            return None
        text = head[: e.start].decode("utf-8")
    return None if any(ord(c) < 32 and c not in "\t\n\r\f" for c in text) else text


def parquet_footer(url: str, files):
    """A Parquet file's footer (pyarrow's FileMetaData), read from its last bytes alone."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    size = files.size(url)
    tail = files.read(url, size - 8, 8) if size >= 12 else b""
    if tail[4:] != b"PAR1":
        raise FormatError(
            f"{url} is not a whole Parquet file: it has no footer at its end (truncated, e.g. "
            "an interrupted copy?); copy or write it again"
        )
    (length,) = struct.unpack("<i", tail[:4])
    if not 0 < length <= size - 12:
        raise FormatError(f"{url}: its Parquet footer is damaged; copy or write it again")
    footer = files.read(url, size - 8 - length, length)
    try:
        return pq.read_metadata(pa.BufferReader(b"PAR1" + footer + tail))
    except (OSError, pa.ArrowException) as e:
        raise FormatError(
            f"{url}: its Parquet footer is damaged ({e}); copy or write it again"
        ) from None


def _check_parquet(url: str, files) -> None:
    meta = parquet_footer(url, files)
    if b"geo" in (meta.metadata or {}):
        return
    schema = meta.schema.to_arrow_schema()
    columns = ", ".join(f"{f.name}: {f.type}" for f in schema)
    geometry = schema.field("geometry").type if "geometry" in schema.names else None
    parse = (
        "from_wkb"
        if geometry is not None and "binary" in str(geometry)
        else "from_wkt"
        if geometry is not None and "string" in str(geometry)
        else None
    )
    fix = (
        f'gpd.GeoDataFrame(df, geometry=gpd.GeoSeries.{parse}(df["geometry"]), crs=4326)'
        '.to_parquet("fields.parquet")'
        if parse
        else "a GeoDataFrame's to_parquet (geopandas) or Sedona's geoparquet writer"
    )
    raise FormatError(
        f"{url} is plain Parquet without GeoParquet's 'geo' metadata (columns {columns}); "
        f"write it as GeoParquet with its CRS, e.g. {fix}"
    )


def _check_shapefile(url: str, files) -> None:
    """A .shp whose length is the one its header states, with its .dbf beside it."""
    size = files.size(url)
    header = files.read(url, 0, min(100, size))
    stated = struct.unpack(">i", header[24:28])[0] * 2 if len(header) >= 28 else -1
    if stated != size:
        raise FormatError(
            f"{url} is not a whole Shapefile: its header says {stated:,} bytes, the file has "
            f"{size:,} (truncated?); copy or write it again"
        )
    stem = url[: -len(".shp")] if url.lower().endswith(".shp") else url
    if not any(files.exists(stem + ext) for ext in (".dbf", ".DBF")):
        raise FormatError(
            f"{url}: its attribute table {filesystem.name(stem)}.dbf is missing; a Shapefile "
            "comes as .shp, .shx, .dbf (and .prj for its CRS): give them side by side"
        )


def _local_layers(path: str, url: str) -> list[str]:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT table_name FROM gpkg_contents WHERE data_type = 'features' "
                "ORDER BY table_name"
            ).fetchall()
    except sqlite3.Error as e:
        raise FormatError(f"{url} is not a readable GeoPackage ({e}); write it again") from None
    return [r[0] for r in rows]


def _gpkg_layer(url: str, layer: str | None, layers: list[str]) -> str:
    """The layer to read: the one named, or the file's only feature layer."""
    if layer:
        if layer not in layers:
            raise FormatError(
                f"{url} has no layer {layer!r}; its feature layers: {', '.join(layers) or 'none'}"
            )
        return layer
    if len(layers) == 1:
        return layers[0]
    if not layers:
        raise FormatError(f"{url} is a GeoPackage without a feature layer; nothing to reduce")
    raise FormatError(
        f"{url} has {len(layers)} feature layers ({', '.join(layers)}); name one with --layer"
    )


def read(spark, source: Source, store_crs: str):
    """The fields as the format's reader gives them: (DataFrame, its geometry column, the CRS as
    ST_Transform takes it, the report's part: fields_format, fields_crs)."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    readers = {
        GEOPARQUET: _geoparquet,
        GEOPACKAGE: _geopackage,
        SHAPEFILE: _shapefile,
        GEOJSON: _geojson,
        FLATGEOBUF: _flatgeobuf,
    }
    try:
        df, column, crs, described = readers[source.kind](spark, source)
    except Py4JJavaError as e:
        raise FormatError(
            f"cannot read {source.url} as {source.kind}: {filesystem.cause(e.java_exception)}"
        ) from None
    except PySparkException as e:
        raise FormatError(
            f"cannot read {source.url} as {source.kind}: {str(e).strip().splitlines()[0]}"
        ) from None
    crs, report = transform_from(crs, described, store_crs)
    kind = f"{source.kind} (layer {source.layer})" if source.layer else source.kind
    return df, column, crs, report | {"fields_format": kind}


def geometry_of(df, url: str) -> str:
    """A DataFrame's one geometry column, as a reader gave it."""
    from sedona.spark.sql.types import GeometryType

    found = [f.name for f in df.schema.fields if isinstance(f.dataType, GeometryType)]
    if len(found) != 1:
        raise FormatError(
            f"{url}: {'no' if not found else 'more than one'} geometry column (found "
            f"{df.columns}); the fields need one polygon geometry"
        )
    return found[0]


def _crs84(reason: str):
    from pyproj import CRS

    return CRS("OGC:CRS84"), f"OGC:CRS84 (assumed: {reason})"


def _geoparquet(spark, source: Source):
    meta = geo_metadata(spark, source.url)
    column = geometry_column(meta, source.url)
    crs, described = parquet_crs(meta, source.url, column)
    return spark.read.format("geoparquet").load(source.url), column, crs, described


def _srid_crs(df, column: str, url: str):
    """The geometries' one SRID (Sedona's readers set it from the file's CRS) as a CRS, or None
    when they carry none."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    srids = {
        r[0]
        for r in df.where(f"`{column}` IS NOT NULL")
        .selectExpr(f"ST_SRID(`{column}`)")
        .distinct()
        .limit(3)
        .collect()
    } - {0}
    if len(srids) > 1:
        raise FormatError(
            f"{url}: its files have different CRSs (EPSG:{', EPSG:'.join(map(str, sorted(srids)))})"
            "; write the fields in one CRS, e.g. with geopandas' to_crs"
        )
    if not srids:
        return None
    (srid,) = srids
    try:
        return CRS.from_epsg(srid)
    except CRSError:
        return None


def _shapefile(spark, source: Source):
    from pyproj import CRS

    df = spark.read.format("shapefile").load(source.url)
    column = geometry_of(df, source.url)
    crs = _srid_crs(df, column, source.url)
    if crs is not None:
        return df, column, crs, crs.to_string()
    prj = source.files[0][: -len(".shp")] + ".prj"
    files = files_of(prj, spark)
    if not files.exists(prj):
        return (df, column, *_crs84("no .prj beside the .shp"))
    try:
        crs = CRS.from_wkt(files.read(prj, 0, files.size(prj)).decode("utf-8", "replace"))
    except Exception as e:
        raise FormatError(
            f"{prj}: cannot interpret its CRS ({e}); write the Shapefile with an EPSG CRS"
        ) from None
    return df, column, crs, crs.to_string()


def _geopackage(spark, source: Source):
    from pyproj import CRS

    url = source.url
    contents = spark.read.format("geopackage").option("showMetadata", "true").load(url).collect()
    layers = sorted(r.table_name for r in contents if r.data_type == "features")
    layer = _gpkg_layer(url, source.layer, layers)
    srs_id = next(r.srs_id for r in contents if r.table_name == layer)
    df = spark.read.format("geopackage").option("tableName", layer).load(url)
    column = geometry_of(df, url)
    if srs_id in (None, 0, -1):  # the specification's undefined geographic and Cartesian
        return (df, column, *_crs84(f"layer {layer} names no CRS"))
    srs = (
        spark.read.format("geopackage")
        .option("tableName", "gpkg_spatial_ref_sys")
        .load(url)
        .where(f"srs_id = {int(srs_id)}")
        .first()
    )
    try:
        crs = (
            CRS.from_authority(srs.organization, srs.organization_coordsys_id)
            if srs.organization and srs.organization.upper() != "NONE"
            else CRS.from_wkt(srs.definition)
        )
    except Exception as e:
        raise FormatError(
            f"{url}: cannot interpret the CRS of layer {layer} ({e}); write it with an EPSG CRS"
        ) from None
    return df, column, crs, crs.to_string()


def _geojson(spark, source: Source):
    from pyproj import CRS
    from pyspark.sql import types as T

    url = source.url
    if source.collection:
        given = spark.read.format("geojson").option("multiLine", "true").load(url)
        if "features" not in given.columns:
            raise FormatError(
                f"{url} is JSON but not a GeoJSON FeatureCollection (its top level holds "
                f"{[c for c in given.columns if not c.startswith('_')] or 'no object'}); "
                "write the fields as GeoJSON or GeoParquet"
            )
        names = (
            {r[0] for r in given.selectExpr("crs.properties.name").collect()} - {None}
            if "crs" in given.columns
            else set()
        )
        df = given.selectExpr("inline(features)")
    else:
        df, names = spark.read.format("geojson").load(url), set()
    if "geometry" not in df.columns:
        raise FormatError(f"{url}: its features have no geometry; write the fields again")
    props = df.schema["properties"].dataType if "properties" in df.columns else None
    columns = ["geometry"] + (
        ["properties.*"] if isinstance(props, T.StructType) and props.fields else []
    )
    df = df.selectExpr(*columns)
    if len(names) > 1:
        raise FormatError(f"{url}: its files name different CRSs {sorted(names)}")
    if not names:
        return df, "geometry", CRS("OGC:CRS84"), "OGC:CRS84 (GeoJSON's, RFC 7946)"
    (name,) = names
    try:
        crs = CRS(name)
    except Exception as e:
        raise FormatError(f"{url}: cannot interpret its CRS {name!r} ({e})") from None
    return df, "geometry", crs, crs.to_string()


def _flatgeobuf(spark, source: Source):
    import io

    from pyproj import CRS
    from pyspark.sql import functions as F

    try:
        import pyogrio
    except ImportError:
        raise FormatError(
            f"{source.url} is FlatGeobuf, read with pyogrio: pip install pyogrio (the viz "
            "extra has it), or write the fields as GeoParquet"
        ) from None
    url = source.url
    files = files_of(url, spark)
    data = files.read(url, 0, files.size(url))
    try:
        meta, table = pyogrio.read_arrow(io.BytesIO(data))
    except Exception as e:
        raise FormatError(
            f"cannot read {url} as FlatGeobuf ({str(e).splitlines()[0]}); write it again"
        ) from None
    column = meta.get("geometry_name") or "wkb_geometry"
    df = spark.createDataFrame(table.to_pandas())
    df = df.withColumn(column, F.expr(f"ST_GeomFromWKB(`{column}`)"))
    if not meta.get("crs"):
        return (df, column, *_crs84("the file names no CRS"))
    crs = CRS(meta["crs"])
    return df, column, crs, crs.to_string()


def geo_metadata(spark, path: str) -> list:
    """Each GeoParquet file's metadata (path, primary_column, columns), read once."""
    return (
        spark.read.format("geoparquet.metadata")
        .load(path)
        .select("path", "primary_column", "columns")
        .collect()
    )


def geometry_column(meta: list, path: str) -> str:
    """The primary geometry column the file's `geo` metadata names (DuckDB and GDAL write `geom`
    or `wkb_geometry`)."""
    found = {r.primary_column for r in meta}
    found.discard(None)
    if len(found) > 1:
        raise FormatError(
            f"{path}: its files name different primary geometry columns {sorted(found)}; "
            "write the fields with one geometry column name"
        )
    return found.pop() if found else "geometry"


def parquet_crs(meta: list, path: str, column: str = "geometry"):
    """The GeoParquet files' CRS and its description. A file without a `crs` is OGC:CRS84
    (longitude, latitude) by the GeoParquet specification."""
    crs_of = [(r.path, (r.columns or {}).get(column) and r.columns[column].crs) for r in meta]
    found = {crs for _, crs in crs_of}
    if len(found) > 1:
        names = sorted({_name(path, crs) + " (" + filesystem.name(f) + ")" for f, crs in crs_of})
        raise FormatError(
            f"{path}: its files have different CRSs: {', '.join(names)}; write the "
            "fields in one CRS, e.g. with geopandas' to_crs"
        )
    crs_json = found.pop() if found else None
    if crs_json in (None, "", "null"):
        return _crs84("the file names no CRS")
    crs = _crs(path, json.loads(crs_json))
    return crs, crs.to_string()


def transform_from(crs, described: str, store_crs: str) -> tuple[str, dict]:
    """The CRS as ST_Transform takes it (`store_crs` when they are the same) and the report's
    description."""
    from pyproj import CRS

    # GeoParquet coordinates are x, y whatever axis order the CRS declares
    if crs.equals(CRS(store_crs), ignore_axis_order=True):
        return store_crs, {"fields_crs": described}
    epsg = crs.to_epsg()
    return (f"EPSG:{epsg}" if epsg else crs.to_wkt("WKT1_GDAL")), {"fields_crs": described}


def _name(path: str, crs_json) -> str:
    return (
        "OGC:CRS84 (no CRS)"
        if crs_json in (None, "", "null")
        else _crs(path, json.loads(crs_json)).to_string()
    )


def _crs(path: str, projjson: dict):
    from pyproj import CRS

    ident = projjson.get("id") or {}
    try:
        # Sedona hands back PROJJSON with camelCase keys that PROJ refuses: use its id when it has one
        return (
            CRS.from_authority(ident["authority"], ident["code"])
            if ident
            else CRS.from_json_dict(projjson)
        )
    except Exception as e:
        raise FormatError(
            f"{path}: cannot interpret its CRS ({e}); write the fields in a CRS with "
            "an EPSG code, e.g. geopandas' to_crs(4326)"
        ) from e
