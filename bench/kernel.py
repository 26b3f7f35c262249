"""Micro-benchmark: one chunk read's work on a Python worker, step by step, against the arithmetic bound.

    .venv/bin/python bench/kernel.py [--size 8192] [--chunks 48] [--repeat 15] [--workers N] [--bare]

On the sample of bench/run.py (generated there, cached in .cache/bench-SIZE), for --chunks
inner chunks that fields touch (spread over the store, first year), the best of --repeat runs of:
  - read: the job's reader (udfs/store.py) fetching and decompressing the chunk, one thread;
  - members: aef_zonal.udfs.pixels.members of the chunk's fields (center rule), once per chunk task;
  - valid mask and kernel: aef_zonal.udfs.partials.reduce_chunk's two passes (default statistics);
  - bound: every value of the chunk summed as u and u * u into one accumulator per band, the
    kernel's arithmetic without runs or fields (the least a pass over 4 M int8 values costs);
milliseconds per chunk, and a check on every chunk that the kernel's sums equal numpy's.
Then the reduce stage's whole Python side without Spark: aef_zonal.udfs.tasks.reduce_batches over every
chunk task of the sample (built as sql/30_chunk_tasks.sql builds them, all years), split over
--workers processes (default: one per core, as the job's Python workers and the decode-only
limit) with the job's reader and its threads, wall and CPU seconds: what the stage would cost
with no JVM, Arrow transfer or task scheduling around it. Both run under the environment the
job gives its Python workers (conf/defaults.toml: spark.executorEnv.*, glibc's malloc settings);
--bare runs without it.
Writes bench/kernel-SIZE.json (kernel-SIZE-bare.json with --bare).
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numba
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


@numba.njit(cache=True, nogil=True)
def bound(data):
    """Sums of u = q |q| and of u * u per band over the whole chunk."""
    bands, n = data.shape
    s1 = np.zeros(bands, np.int64)
    s2 = np.zeros(bands, np.int64)
    for b in range(bands):
        row = data[b]
        r1 = np.int64(0)
        r2 = np.int64(0)
        for p in range(np.uint64(n)):
            q = np.int32(row[p])
            u = q * abs(q)
            r1 += u
            r2 += np.int64(u * u)
        s1[b], s2[b] = r1, r2
    return s1, s2


def best(fn, repeat: int) -> float:
    fn()
    t = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - t0)
    return t


def check(data: np.ndarray, runs: np.ndarray, s1: np.ndarray, nodata: int) -> None:
    """The kernel's sums against numpy's over each field's valid member pixels."""
    bands, _, width = data.shape
    flat = data.reshape(bands, -1).astype(np.int64)
    u = flat * np.abs(flat) * (flat != nodata).all(axis=0)
    want = np.zeros_like(s1)
    for r, c0, c1, f in runs:
        want[f] += u[:, r * width + c0 : r * width + c1].sum(axis=1)
    assert np.array_equal(want, s1), "kernel sums differ from numpy's"


@functools.cache
def _sample(data_dir: str):
    """The store's description, the fields, their tree and the chunks they touch (per process)."""
    import geopandas as gpd
    import shapely

    from aef_zonal.udfs.store import describe
    from bench.run import touched_chunks

    store, fields = str(Path(data_dir) / "store.zarr"), Path(data_dir) / "fields.parquet"
    geoms = gpd.read_parquet(fields).geometry.values
    return store, describe(store), geoms, shapely.STRtree(geoms), touched_chunks(fields, store)


@functools.cache
def _chunk_fields(data_dir: str):
    """Per touched chunk, the fields that intersect it; per field, how many chunks it touches."""
    import shapely

    _, info, geoms, tree, touched = _sample(data_dir)
    per_chunk = [
        tree.query(shapely.box(*info.grid.chunk_footprint(cy, cx)), predicate="intersects")
        for cy, cx in touched
    ]
    return dict(zip(touched, per_chunk)), np.bincount(
        np.concatenate(per_chunk), minlength=len(geoms)
    )


def _tasks(data_dir: str, chunks):
    """The chunk tasks of `chunks` as sql/30_chunk_tasks.sql builds them (every year)."""
    import pyarrow as pa
    import shapely

    _, info, geoms, _, _ = _sample(data_dir)
    g = info.grid
    wkb = shapely.to_wkb(geoms)
    mine, spans = _chunk_fields(data_dir)
    return pa.RecordBatch.from_pylist(
        [
            {
                "cy": cy,
                "cx": cx,
                "fields": [
                    {
                        "feature_id": int(i),
                        "wkb": wkb[i],
                        "years": list(g.years),
                        "chunks": int(spans[i]),
                    }
                    for i in mine[cy, cx]
                ],
            }
            for cy, cx in chunks
        ]
    )


def _reduce_part(args) -> dict:
    """One process's share of the chunk tasks through aef_zonal.udfs.tasks.reduce_batches, after one
    task to load the kernels."""
    from aef_zonal.udfs.finish import Finish
    from aef_zonal.udfs.store import Access, reader
    from aef_zonal.udfs.tasks import Reduction, reduce_batches

    data_dir, part, parts = args
    store, info, _, _, touched = _sample(data_dir)
    red = Reduction(
        info.grid, info.quant, info.bands, Finish(info.quant, info.bands, ("count", "std"))
    )
    rd = reader(Access(store), info.grid)
    chunks = touched[part::parts]
    tasks = _tasks(data_dir, chunks)
    sum(b.num_rows for b in reduce_batches([_tasks(data_dir, chunks[:1])], red, rd.submit))
    cpu0, t0 = os.times(), time.perf_counter()
    rows = sum(b.num_rows for b in reduce_batches([tasks], red, rd.submit))
    wall, cpu1 = time.perf_counter() - t0, os.times()
    return {
        "reads": len(chunks) * len(info.grid.years),
        "rows": rows,
        "wall": wall,
        "cpu": cpu1.user - cpu0.user + cpu1.system - cpu0.system,
        "system": cpu1.system - cpu0.system,
    }


def without_spark(data_dir: Path, workers: int) -> dict:
    """aef_zonal.udfs.tasks.reduce_batches over every chunk task, split over `workers` processes started
    (and their data loaded) before the clock starts, as the decode-only limit of bench/run.py."""
    with mp.get_context("spawn").Pool(
        workers, initializer=_sample, initargs=(str(data_dir),)
    ) as pool:
        pool.map(time.sleep, [0.5] * workers)  # every process loaded before the clock starts
        t0 = time.perf_counter()
        parts = pool.map(
            _reduce_part, [(str(data_dir), i, workers) for i in range(workers)], chunksize=1
        )
        wall = time.perf_counter() - t0
    reads, cpu = sum(p["reads"] for p in parts), sum(p["cpu"] for p in parts)
    return {
        "processes": workers,
        "chunk_reads": reads,
        "partial_rows": sum(p["rows"] for p in parts),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "system_cpu_s": round(sum(p["system"] for p in parts), 2),
        "cpu_ms_per_chunk_read": round(cpu / reads * 1e3, 2),
    }


def as_python_worker() -> None:
    """Run this script again under the Python workers' environment unless it already is: glibc
    reads its malloc settings once, when the process starts."""
    from aef_zonal import config

    env = config.executor_env()
    if any(os.environ.get(k) != v for k, v in env.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **env})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--chunks", type=int, default=48)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count(),
        help="processes of the reduce without Spark (the job's Python workers)",
    )
    p.add_argument(
        "--bare",
        action="store_true",
        help="not under the Python workers' environment (glibc's default malloc)",
    )
    a = p.parse_args(argv)
    if not a.bare:
        as_python_worker()

    from aef_zonal.udfs.partials import _reduce, valid_pixels
    from aef_zonal.udfs.pixels import members
    from aef_zonal.udfs.store import Access, reader

    data_dir = ROOT / ".cache" / f"bench-{a.size}"
    if not (data_dir / "store.zarr" / "zarr.json").exists():
        raise SystemExit(f"no sample in {data_dir}: run bench/run.py --size {a.size} once first")
    store, info, geoms, _, touched = _sample(str(data_dir))
    g, nodata = info.grid, np.int8(info.quant.nodata)
    picked = [touched[i] for i in np.linspace(0, len(touched) - 1, a.chunks).astype(int)]
    rd = reader(Access(store), g)

    steps = {k: 0.0 for k in ("read", "members", "valid mask", "kernel", "bound")}
    fields_per_chunk, member_px = [], []
    for cy, cx in picked:
        window = g.chunk_window(cy, cx)
        h, w = window[1] - window[0], window[3] - window[2]
        mine = geoms[_chunk_fields(str(data_dir))[0][cy, cx]]
        runs = members(mine, "center", *g.window_corner(window), g.res, h, w)
        data = rd.submit(0, window).result()
        flat = np.ascontiguousarray(data).reshape(data.shape[0], -1)
        valid = valid_pixels(flat, nodata)
        steps["read"] += best(lambda: rd.submit(0, window).result(), a.repeat)
        steps["members"] += best(
            lambda: members(mine, "center", *g.window_corner(window), g.res, h, w), a.repeat
        )
        steps["valid mask"] += best(lambda: valid_pixels(flat, nodata), a.repeat)
        steps["kernel"] += best(
            lambda: _reduce(flat, w, runs, len(mine), valid, info.quant.square, False, False),
            a.repeat,
        )
        steps["bound"] += best(lambda: bound(flat), a.repeat)
        check(data, runs, _reduce(flat, w, runs, len(mine), valid, True, False, False)[2], nodata)
        fields_per_chunk.append(len(mine))
        member_px.append(int((runs[:, 2] - runs[:, 1]).sum()))

    ms = {k: round(v / len(picked) * 1e3, 3) for k, v in steps.items()}
    whole = without_spark(data_dir, a.workers)
    result = {
        "size_px": a.size,
        "chunks": len(picked),
        "repeat": a.repeat,
        "machine_cores": os.cpu_count(),
        "python_worker_env": not a.bare,
        "fields_per_chunk": round(float(np.mean(fields_per_chunk)), 1),
        "member_pixels_per_chunk": round(float(np.mean(member_px))),
        "ms_per_chunk": ms,
        "kernel_over_bound": round(ms["kernel"] / ms["bound"], 2),
        "kernel_and_mask_over_read": round((ms["kernel"] + ms["valid mask"]) / ms["read"], 3),
        "reduce_without_spark": whole,
    }
    for k, v in ms.items():
        print(f"{k:12s} {v:7.3f} ms per chunk")
    print(f"the reduce stage's Python side without Spark: {json.dumps(whole)}")
    print(json.dumps(result))
    (ROOT / "bench" / f"kernel-{a.size}{'-bare' if a.bare else ''}.json").write_text(
        json.dumps(result, indent=1) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
