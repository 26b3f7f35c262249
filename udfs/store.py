"""Open an AEF-layout Zarr store (local, s3://, https://), describe it, read inner chunks.

Object storage goes through obstore, which retries 5xx errors, throttling and dropped
connections with exponential backoff and jitter. Reads of one worker overlap (a thread pool over
zarr's own event loop) so that request latency, not bandwidth, stops being the limit.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import numpy as np
import zarr
from obstore.exceptions import BaseError as ObstoreError
from zarr.abc.store import SuffixByteRequest
from zarr.storage import WrapperStore

from aef_zonal.udfs.grid import Grid
from aef_zonal.udfs.quantisation import Quantisation

ARRAY = "embeddings"


class StoreError(ValueError):
    """The store cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class StoreInfo:
    url: str
    grid: Grid
    quant: Quantisation
    bands: int

    @property
    def years(self) -> tuple[int, ...]:
        return self.grid.years


@dataclass(frozen=True)
class Access:
    """Where a store is and how to talk to it; small and picklable, so every worker gets it."""

    url: str
    region: str | None = None  # S3 region (default: AWS_REGION or us-east-1)
    endpoint: str | None = None  # S3-compatible endpoint, e.g. http://127.0.0.1:9000
    retries: int = 10  # per request, on 5xx, throttling, dropped connections
    retry_timeout: float = 180.0  # seconds from a request's first try after which it fails
    backoff: float = 0.1  # seconds before the first retry; doubles, with jitter
    concurrency: int = 32  # chunk reads in flight per worker

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme.lower()


class IndexCachingStore(WrapperStore):
    """Keeps the shard indexes a worker has read, so each shard's index costs one request.

    zarr's sharding codec fetches the index (a suffix range of the shard object) again for
    every inner chunk read; on S3 that doubles the requests and the latency per chunk.
    Also counts requests, for the run report.
    """

    def __init__(self, store, size: int = 1024):
        super().__init__(store)
        self._indexes: collections.OrderedDict = collections.OrderedDict()
        self._size = size
        self.requests = 0
        self.bytes = 0

    def _with_store(self, store):
        return type(self)(store, self._size)

    async def get(self, key, prototype, byte_range=None):
        if not isinstance(byte_range, SuffixByteRequest):
            return await self._fetch(key, prototype, byte_range)
        cache_key = (key, byte_range.suffix)
        # the task, not its result, is kept: concurrent reads of one shard share one request
        task = self._indexes.get(cache_key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(key, prototype, byte_range))
            self._indexes[cache_key] = task
            if len(self._indexes) > self._size:
                self._indexes.popitem(last=False)
        else:
            self._indexes.move_to_end(cache_key)
        try:
            return await asyncio.shield(task)  # None too: an absent shard stays absent
        except Exception:
            self._indexes.pop(cache_key, None)  # a failed fetch is tried again next time
            raise

    async def _fetch(self, key, prototype, byte_range):
        self.requests += 1
        value = await self._store.get(key, prototype, byte_range)
        self.bytes += 0 if value is None else len(value)
        return value


def _object_store(a: Access):
    """The zarr store for a URL: local paths through zarr, object storage through obstore."""
    from obstore.store import HTTPStore, S3Store
    from zarr.storage import LocalStore, ObjectStore

    if a.scheme in ("", "file"):
        path = urlsplit(a.url).path if a.scheme else a.url
        if not os.path.isdir(path):
            raise StoreError(f"cannot open Zarr store {a.url}: no such folder")
        return IndexCachingStore(LocalStore(path, read_only=True))

    retry = {
        "max_retries": a.retries,
        "retry_timeout": timedelta(seconds=a.retry_timeout),
        "backoff": {
            "init_backoff": timedelta(seconds=a.backoff),
            "max_backoff": timedelta(seconds=30),
            "base": 2.0,
        },
    }
    client = {"allow_http": True} if (a.endpoint or a.url).startswith("http://") else {}
    if a.scheme in ("s3", "s3a"):
        parts = urlsplit(a.url)
        # the AEF mosaic is public: sign requests only when the user gave credentials
        signed = bool(os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE"))
        opts = {
            "skip_signature": not signed,
            "region": a.region or os.environ.get("AWS_REGION") or "us-east-1",
        }
        if a.endpoint:
            opts["endpoint"] = a.endpoint
        store = S3Store(
            parts.netloc,
            prefix=parts.path.strip("/") or None,
            retry_config=retry,
            client_options=client,
            **opts,
        )
    elif a.scheme in ("http", "https"):
        store = HTTPStore.from_url(a.url, retry_config=retry, client_options=client)
    else:
        raise StoreError(
            f"{a.url}: unsupported URL scheme {a.scheme!r}; use a local path, "
            "s3://bucket/prefix or https://host/path"
        )
    return IndexCachingStore(ObjectStore(store, read_only=True))


def open_group(a: Access) -> zarr.Group:
    try:
        return zarr.open_group(_object_store(a), mode="r")
    except StoreError:
        raise
    except Exception as e:  # zarr and obstore raise several types for "nothing there"
        raise StoreError(
            f"cannot open Zarr store {a.url}: {type(e).__name__}: {e}{_inner_store(a)}"
        ) from e


def _inner_store(a: Access) -> str:
    """A hint when a local folder is not a store but holds one (`out/sample` for
    `out/sample/store.zarr`)."""
    if a.scheme not in ("", "file"):
        return ""
    path = urlsplit(a.url).path if a.scheme else a.url
    inner = sorted(
        os.path.join(a.url, e.name)
        for e in os.scandir(path)
        if e.is_dir() and os.path.isfile(os.path.join(e.path, "zarr.json"))
    )
    return f"; {inner[0]} holds one: pass --store {inner[0]}" if inner else ""


def describe(a: Access | str) -> StoreInfo:
    """Read the group metadata once (on the driver) and check it is a store we can reduce."""
    a = a if isinstance(a, Access) else Access(a)
    url = a.url
    group = open_group(a)
    if ARRAY not in group:
        raise StoreError(f"{url}: no '{ARRAY}' array in the group")
    arr = group[ARRAY]
    attrs = {**dict(arr.attrs), **dict(group.attrs)}  # older copies keep them on the array
    dims = tuple(arr.metadata.dimension_names or ())
    if dims != ("time", "band", "y", "x"):
        raise StoreError(
            f"{url}: {ARRAY} dimensions are {dims}, expected ('time', 'band', 'y', 'x')"
        )
    if "spatial:transform" not in attrs:
        raise StoreError(f"{url}: no 'spatial:transform' attribute; cannot place pixels")
    chunk = arr.chunks  # inner chunks when sharded
    shard = arr.shards or chunk
    if chunk[2] != chunk[3] or chunk[1] != arr.shape[1] or chunk[0] != 1:
        raise StoreError(f"{url}: inner chunks {chunk} are not (1, bands, n, n)")
    ShardLayout.check(arr, url)
    if "proj:code" not in attrs:
        raise StoreError(
            f"{url}: no 'proj:code' attribute (e.g. 'EPSG:4326'); cannot place the fields"
        )
    try:
        grid = Grid.from_transform(
            attrs["spatial:transform"],
            arr.shape[2:],
            chunk[2],
            shard[2],
            years=tuple(int(y) for y in group["time"][:]),
            crs=str(attrs["proj:code"]),
            array=ARRAY,
            key_encoding=arr.metadata.chunk_key_encoding,
        )
    except ValueError as e:
        raise StoreError(f"{url}: {e}") from e
    try:
        quant = Quantisation.from_attrs(attrs, url, str(arr.dtype), arr.metadata.fill_value)
    except ValueError as e:
        raise StoreError(str(e)) from e
    return StoreInfo(url, grid, quant, int(arr.shape[1]))


class ChunkError(RuntimeError):
    """A chunk that cannot be read (after retries) or decoded; names the store and key."""


class ShardLayout:
    """Where an inner chunk's bytes sit in its shard object, and how they decode.

    The AEF codec chain only: sharding_indexed with the index at the end (bytes little-endian +
    crc32c) around bytes + zstd. Reading the index entry and the byte range through the same
    zarr store and decompressing with numcodecs' zstd (the codec zarr itself calls) skips zarr's
    event-loop hops and the copy into an output array, most of its read path besides zstd
    (bench/run.py measures both paths). describe() refuses any other codec chain, so nothing
    else reaches this.
    """

    def __init__(self, arr: zarr.Array, grid: Grid):
        self.grid = grid
        self.per = grid.shard // grid.chunk  # inner chunks per shard edge
        self.index_bytes = 16 * self.per * self.per + 4  # (offset, length) uint64 pairs + crc32c
        self.shape = (int(arr.shape[1]), grid.chunk, grid.chunk)
        # the bytes codec writes little-endian (ShardLayout.check refuses any other order)
        self.dtype = np.dtype(arr.dtype).newbyteorder("<")
        self.fill = np.asarray(arr.metadata.fill_value, arr.dtype)

    @staticmethod
    def check(arr: zarr.Array, url: str) -> None:
        from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec
        from zarr.codecs.sharding import ShardingCodecIndexLocation

        codecs = arr.metadata.codecs
        ok = (
            len(codecs) == 1
            and isinstance(codecs[0], ShardingCodec)
            and codecs[0].index_location == ShardingCodecIndexLocation.end
            and [type(c) for c in codecs[0].index_codecs] == [BytesCodec, Crc32cCodec]
            and [type(c) for c in codecs[0].codecs] == [BytesCodec, ZstdCodec]
            and getattr(codecs[0].codecs[0].endian, "value", "little") == "little"
        )
        if not ok:
            raise StoreError(
                f"{url}: {ARRAY} codecs are {codecs}; expected the AEF layout "
                "(sharding_indexed, index at the end with crc32c, little-endian bytes "
                "+ zstd inside)"
            )

    def key(self, t: int, cy: int, cx: int) -> str:
        return self.grid.shard_key(t, cy * self.grid.chunk, cx * self.grid.chunk)

    def slot(self, cy: int, cx: int) -> int:
        return (cy % self.per) * self.per + cx % self.per

    def entry(self, index: bytes, cy: int, cx: int) -> tuple[int, int] | None:
        """(offset, length) of the inner chunk in its shard, None when it was never written."""
        import google_crc32c  # zarr's crc32c codec uses the same library

        body, crc = index[:-4], index[-4:]
        if len(index) != self.index_bytes or google_crc32c.value(body).to_bytes(4, "little") != crc:
            raise ValueError("shard index checksum mismatch")
        offset, length = np.frombuffer(body, "<u8").reshape(-1, 2)[self.slot(cy, cx)]
        return None if offset == EMPTY and length == EMPTY else (int(offset), int(length))

    def decode(self, raw) -> np.ndarray:
        out = _zstd().decode(raw)
        size = int(np.prod(self.shape)) * self.dtype.itemsize
        if len(out) != size:
            raise ValueError(f"inner chunk decodes to {len(out)} bytes, expected {size}")
        return np.frombuffer(out, self.dtype).reshape(self.shape)


EMPTY = np.uint64(2**64 - 1)


@functools.cache
def _zstd():
    from numcodecs import Zstd

    return Zstd()


class ChunkReader:
    """Reads inner chunks of one store on a worker, many at a time.

    submit() returns a Future at once, so a task can ask for the chunks it will need next while
    it reduces the current one. A chunk whose bytes do not decode raises ChunkError, or, with
    skip_bad=True, resolves to None and is listed in `skipped`. Decoding runs on the pool's
    threads (zstd releases the GIL), the requests on zarr's event loop.
    """

    def __init__(self, a: Access, grid: Grid, skip_bad: bool = False):
        self.access, self.grid, self.skip_bad = a, grid, skip_bad
        arr = _array(a)
        self.store, self.layout = arr.store, ShardLayout(arr, grid)
        self._pool = ThreadPoolExecutor(a.concurrency, thread_name_prefix="aef-read")
        self._lock = threading.Lock()
        self.reads = 0

    async def _fetch(self, key: str, cy: int, cx: int):
        from zarr.abc.store import RangeByteRequest
        from zarr.core.buffer import default_buffer_prototype

        proto = default_buffer_prototype()
        index = await self.store.get(key, proto, SuffixByteRequest(self.layout.index_bytes))
        if index is None:  # shard never written
            return None
        where = self.layout.entry(index.to_bytes(), cy, cx)
        if where is None:
            return None
        offset, length = where
        return await self.store.get(key, proto, RangeByteRequest(offset, offset + length))

    def _read(self, t: int, window: tuple[int, int, int, int]) -> np.ndarray | None:
        from zarr.core.sync import sync

        r0, r1, c0, c1 = window
        g = self.grid
        cy, cx = r0 // g.chunk, c0 // g.chunk
        with self._lock:
            self.reads += 1
        try:
            raw = sync(self._fetch(self.layout.key(t, cy, cx), cy, cx))
            if raw is None:  # a missing chunk reads as the fill value: all nodata
                return np.full((self.layout.shape[0], r1 - r0, c1 - c0), self.layout.fill)
            return self.layout.decode(raw.as_numpy_array())[:, : r1 - r0, : c1 - c0]
        except Exception as e:
            where = f"store {self.access.url}, chunk {g.chunk_name(t, cy, cx)}"
            if _is_io_error(e):
                raise ChunkError(
                    f"reading {where} failed after {self.access.retries} retries: "
                    f"{type(e).__name__}: {e}"
                ) from e
            if self.skip_bad:
                return None
            raise ChunkError(
                f"{where} does not decode ({type(e).__name__}: {e}); the object is "
                "corrupt. Pass --on-bad-chunk skip to skip such chunks (the fields "
                "they touch are marked complete = false)"
            ) from e

    def submit(self, t: int, window: tuple[int, int, int, int]) -> Future:
        return self._pool.submit(self._read, t, window)

    @property
    def requests(self) -> int:
        return self.store.requests

    @property
    def bytes(self) -> int:
        return self.store.bytes


@functools.lru_cache(maxsize=4)
def reader(a: Access, grid: Grid, skip_bad: bool = False) -> ChunkReader:
    """The worker's reader of a store: one open array and one pool of reads per store."""
    return ChunkReader(a, grid, skip_bad)


def _is_io_error(e: BaseException) -> bool:
    return isinstance(e, (OSError, TimeoutError, ObstoreError))


_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _array(a: Access) -> zarr.Array:
    # one open array per Python worker and store: metadata is read once, not per chunk
    with _lock:
        return open_group(a)[ARRAY]
