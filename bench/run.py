"""Benchmark: the job against the decode-only limit on a larger AEF-layout sample.

    .venv/bin/python bench/run.py [--size 8192] [--years 2023 2024 2025] [--workers 2]

Generates the sample once (cached in .cache/bench-SIZE), then measures in the same run:
  1. the job's wall time, with and without Spark start-up (its own stage timings);
  2. the decode-only limit: zarr reads and decompresses, once, every inner chunk any field
     touches, on the same number of processes, doing nothing else;
and prints field-years per core-second and the ratio job / decode-only; writes
bench/bench-SIZE.json.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def touched_chunks(fields_path: Path, store: str) -> list[tuple[int, int]]:
    """Inner chunks whose footprint some field intersects (what the job must read per year)."""
    import geopandas as gpd
    import shapely

    from udfs.store import describe

    g = describe(store).grid
    f = gpd.read_parquet(fields_path)
    cells = []
    for cy in range(g.chunk_rows):
        for cx in range(g.chunk_cols):
            r0, r1, c0, c1 = g.chunk_window(cy, cx)
            cells.append(((cy, cx), shapely.box(g.xmin + c0 * g.res, g.ymax - r1 * g.res,
                                                g.xmin + c1 * g.res, g.ymax - r0 * g.res)))
    tree = shapely.STRtree([c for _, c in cells])
    hit = np.unique(tree.query(f.geometry.values, predicate="intersects")[1])
    return [cells[i][0] for i in hit]


def _decode(args):
    store, t, cy, cx = args
    from udfs.store import describe, read_chunk

    g = describe(store).grid
    read_chunk(store, t, g.chunk_window(cy, cx))


def decode_only(store: str, chunks, years_idx, workers: int) -> float:
    jobs = [(store, t, cy, cx) for t in years_idx for cy, cx in chunks]
    with mp.get_context("spawn").Pool(workers) as pool:
        pool.map(_decode, jobs[:workers])  # warm the processes (imports, metadata)
        t0 = time.perf_counter()
        pool.map(_decode, jobs, chunksize=8)
        return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--years", type=int, nargs="+", default=[2023, 2024, 2025])
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--out", help="result JSON (default bench/bench-SIZE.json)")
    a = p.parse_args()

    from jobs.sample import make_sample

    data = ROOT / ".cache" / f"bench-{a.size}"
    if not (data / "fields.parquet").exists():
        t0 = time.perf_counter()
        make_sample(data, size=a.size, years=tuple(a.years))
        print(f"sample generated in {time.perf_counter() - t0:.0f} s")
    store, fields = str(data / "store.zarr"), data / "fields.parquet"

    chunks = touched_chunks(fields, store)
    decode_s = decode_only(store, chunks, range(len(a.years)), a.workers)
    print(f"decode-only: {len(chunks) * len(a.years)} chunks in {decode_s:.2f} s on {a.workers} processes")

    out = ROOT / "out" / f"bench-{a.size}"
    t0 = time.perf_counter()
    subprocess.run([str(ROOT / ".venv" / "bin" / "aef-zonal"), "run", "--store", store, "--fields",
                    str(fields), "--out", str(out), "--mode", "overwrite",
                    "--master", f"local[{a.workers}]"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    report = json.loads((out / "_run.json").read_text())
    stages = report["seconds"]
    after_start = sum(v for k, v in stages.items() if k != "start spark")
    reduce_s = stages["reduce + aggregate"]
    field_years = report["rows"]
    result = {
        "machine_cores": os.cpu_count(), "workers": a.workers, "size_px": a.size, "years": a.years,
        "fields": report["fields"], "field_years": field_years,
        "chunks_read": len(chunks) * len(a.years),
        "job_wall_s": round(wall, 2), "job_after_start_s": round(after_start, 2),
        "job_stages_s": stages, "decode_only_s": round(decode_s, 2),
        "ratio_job_after_start_to_decode": round(after_start / decode_s, 2),
        "ratio_reduce_stage_to_decode": round(reduce_s / decode_s, 2),
        "field_years_per_core_second": round(field_years / (after_start * a.workers), 1),
    }
    Path(a.out or ROOT / "bench" / f"bench-{a.size}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
