"""The chunk reader against zarr itself: same int8 values for every inner chunk, written or not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding, V2ChunkKeyEncoding

from aef_zonal.demo.sample import create_store
from aef_zonal.udfs.grid import Grid
from aef_zonal.udfs.store import Access, ChunkError, ChunkReader, StoreError, describe, reader

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "s.zarr"
    arr = create_store(
        path, [2024, 2025], size=1024, xmin=-93.0, ymax=42.0, res=1e-4, shard=512, chunk=256
    )
    rng = np.random.default_rng(7)
    block = rng.integers(-128, 128, (1, 64, 512, 512), dtype=np.int8)
    arr[0:1, :, 0:512, 0:512] = block  # a whole shard
    arr[1:2, :, 512:768, 0:256] = block[
        ..., :256, :256
    ]  # one inner chunk; its shard's others never written
    # time 0, shard (1, 1) and all of time 1 but that chunk: never written (fill value)
    return str(path)


def test_every_chunk_equals_zarr(store):
    info = describe(store)
    g = info.grid
    arr = zarr.open_group(store, mode="r")["embeddings"]
    r = ChunkReader(Access(store), g)
    opening = r.requests  # the metadata documents
    for t in range(2):
        for cy in range(g.chunk_rows):
            for cx in range(g.chunk_cols):
                window = g.chunk_window(cy, cx)
                r0, r1, c0, c1 = window
                got = r.submit(t, window).result()
                np.testing.assert_array_equal(
                    got, arr[t, :, r0:r1, c0:c1], err_msg=f"{t} {cy} {cx}"
                )
    assert r.reads == 2 * 16
    # one request per shard index (4 shards x 2 years) plus one per written inner chunk
    assert r.requests - opening == 8 + 4 + 1


def test_corrupt_index_is_a_decode_error(store, tmp_path):
    import shutil

    copy = tmp_path / "c.zarr"
    shutil.copytree(store, copy)
    shard = copy / "embeddings" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF  # inside the index, so its crc32c no longer matches
    shard.write_bytes(bytes(data))
    g = describe(str(copy)).grid
    with pytest.raises(ChunkError, match=r"embeddings/c/0/0/0/0 .*does not decode.*checksum"):
        reader(Access(str(copy)), g).submit(0, g.chunk_window(0, 0)).result()
    assert (
        reader(Access(str(copy)), g, skip_bad=True).submit(0, g.chunk_window(0, 0)).result() is None
    )


def test_other_codec_chains_are_refused(tmp_path):
    from zarr.codecs import BloscCodec

    path = tmp_path / "blosc.zarr"
    arr = create_store(path, [2024], size=512, xmin=0.0, ymax=1.0, res=1e-4, shard=512)
    group = zarr.open_group(path, mode="a")
    del group["embeddings"]
    group.create_array(
        "embeddings",
        shape=arr.shape,
        dtype="int8",
        chunks=(1, 64, 256, 256),
        compressors=BloscCodec(),
        fill_value=-128,
        dimension_names=("time", "band", "y", "x"),
    )
    with pytest.raises(StoreError, match="expected the AEF layout"):
        describe(str(path))


def test_shard_keys_name_the_written_objects(store):
    g = describe(store).grid
    assert (Path(store) / g.shard_key(0, 0, 0)).is_file() and (
        Path(store) / g.shard_key(1, 512, 0)
    ).is_file()
    assert not (Path(store) / g.shard_key(0, 512, 512)).exists()  # never written


@pytest.mark.parametrize(
    "encoding",
    [
        DefaultChunkKeyEncoding(separator="/"),
        DefaultChunkKeyEncoding(separator="."),
        V2ChunkKeyEncoding(separator="."),
    ],
)
def test_sql_key_parts_build_zarrs_keys(encoding):
    g = Grid(1.0, 0.0, 0.0, 8192, 8192, 256, 512, array="embeddings", key_encoding=encoding)
    prefix, sep = g.key_parts()
    for t, row, col in [(0, 0, 0), (1, 600, 1500), (12, 8191, 513)]:
        indices = (t, 0, row // 512, col // 512)
        key = "embeddings/" + encoding.encode_chunk_key(indices)
        # what sql/50_output.sql builds from the parts
        assert g.shard_key(t, row, col) == key == prefix + sep.join(str(i) for i in indices)
