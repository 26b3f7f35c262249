"""The planet-scale estimate of docs/scale.md: all cropland, 9 years, from the benchmark's rates.

    .venv/bin/python bench/scale.py [--bench bench/bench-4096.json] [--fill 2.0] [--cores 1000]

Measured inputs come from the benchmark JSON and the bench store; every other input is an
assumption named below (docs/scale.md gives the sources).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CROPLAND_HA = 1.573e9        # FAOSTAT land statistics, cropland 2022 (arable land + permanent crops)
MEAN_COS_LAT = 0.83          # assumed: cropland-weighted mean cos(latitude), rough country estimate
RES_DEG = 8.983111749910169e-05  # the store's pixel size (spatial:transform)
M_PER_DEG = 111_320.0        # one degree at the equator (spherical approximation, +-0.4 %)
CHUNK_PX = 256               # inner chunk edge; shards are 16 x 16 inner chunks
BANDS = 64
YEARS = 9
CHUNK_BYTES = 2.69133e9 / 768  # measured: shard bytes of .cache/bench-4096 per chunk-year (zstd 3)
CHUNKS_PER_TASK = 32         # the job's reduce partitions hold ~n_tasks // 32 chunk tasks
SHARDS_PER_TASK = 3          # assumed: a task's 32 chunks, in row-major order, touch ~3 shards
GET_PER_PREFIX = 5_500       # S3: GET/HEAD requests per second per partitioned prefix
FIELD_HA = 10.0              # assumed mean field size (the bench's fields are ~11 ha)


def estimate(bench: dict, fill: float, cores: int) -> list[tuple[str, float, str]]:
    cores_used = bench["workers"]
    chunk_years = bench["chunks_read"]
    px_m2 = (RES_DEG * M_PER_DEG) ** 2 * MEAN_COS_LAT
    pixels = CROPLAND_HA * 1e4 / px_m2
    chunks = pixels / CHUNK_PX ** 2 * fill
    cy = chunks * YEARS
    tasks = chunks / CHUNKS_PER_TASK
    index_gets = tasks * YEARS * SHARDS_PER_TASK
    rate_job = chunk_years / (bench["job_after_start_s"] * cores_used)
    rate_reduce = chunk_years / (bench["job_stages_s"]["reduce + aggregate"] * cores_used)
    rate_decode = chunk_years / (bench["decode_only_s"] * cores_used)
    fy_per_cy = bench["field_years"] / chunk_years
    core_s = cy / rate_job
    wall = core_s / cores
    return [
        ("pixel area at the cropland's mean latitude (m²)", px_m2, "assumed cos φ"),
        ("cropland pixels per year", pixels, "derived"),
        ("inner chunks touched per year", chunks, f"fill factor {fill}"),
        ("chunk-years (9 years)", cy, "derived"),
        ("bytes read, raw (TB)", cy * CHUNK_PX ** 2 * BANDS / 1e12, "4 MiB per chunk-year"),
        ("bytes read, compressed (TB)", cy * CHUNK_BYTES / 1e12, "bench store ratio"),
        ("chunk GETs", cy, "one ranged GET per chunk-year"),
        ("shard-index GETs", index_gets, f"{SHARDS_PER_TASK} shards per task per year"),
        ("field-years (at the bench's density)", cy * fy_per_cy, f"{fy_per_cy:.1f} per chunk-year"),
        ("field-years (10 ha fields)", CROPLAND_HA / FIELD_HA * YEARS, "assumed field size"),
        ("chunk-years per core-second, job after start-up", rate_job, "measured"),
        ("chunk-years per core-second, reduce + aggregate stage", rate_reduce, "measured"),
        ("chunk-years per core-second, decode-only limit", rate_decode, "measured"),
        ("field-years per core-second, job after start-up", rate_job * fy_per_cy, "measured"),
        ("core-hours, job rate", core_s / 3600, "derived"),
        ("core-hours, reduce-stage rate", cy / rate_reduce / 3600, "derived"),
        ("core-hours, decode-only limit", cy / rate_decode / 3600, "derived"),
        (f"wall hours on {cores} cores, job rate", wall / 3600, "derived"),
        (f"GET/s on {cores} cores, job rate", (cy + index_gets) / wall, "derived"),
        (f"GET/s on {cores} cores, decode-only limit", (cy + index_gets) / (cy / rate_decode / cores),
         "derived"),
        ("read MB/s per core, job rate", rate_job * CHUNK_BYTES / 1e6, "derived"),
        ("read MB/s per core, decode-only limit", rate_decode * CHUNK_BYTES / 1e6, "derived"),
        ("prefixes' worth of GET rate at the job rate", (cy + index_gets) / wall / GET_PER_PREFIX,
         "x 5,500 GET/s"),
        ("reference tool core-hours (90 field-years/core-s, 10 ha fields)",
         CROPLAND_HA / FIELD_HA * YEARS / 90 / 3600, "derived"),
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench", default=ROOT / "bench" / "bench-4096.json", type=Path)
    p.add_argument("--fill", type=float, default=2.0,
                   help="touched chunk area / cropland area (default %(default)s)")
    p.add_argument("--cores", type=int, default=1000)
    a = p.parse_args()
    for name, value, note in estimate(json.loads(a.bench.read_text()), a.fill, a.cores):
        shown = f"{float(f'{value:.3g}'):,.0f}" if value >= 100 else f"{value:.3g}"
        print(f"| {name} | {shown} | {note} |")


if __name__ == "__main__":
    main()
