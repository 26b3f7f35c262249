"""The planet-scale estimate of docs/scale.md: all cropland, 9 years, from the benchmark's rates.

    .venv/bin/python bench/scale.py [--bench bench/bench-8192.json] [--fill 2.0] [--cores 1000]

Measured inputs come from the benchmark JSON (bench/run.py; by default bench/bench-8192-job.json
if it exists, else bench/bench-8192.json) and the bench store; every other input is an
assumption named below (docs/scale.md gives the sources).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CROPLAND_HA = 1.573e9  # FAOSTAT land statistics, cropland 2022 (arable land + permanent crops)
MEAN_COS_LAT = 0.83  # assumed: cropland-weighted mean cos(latitude), rough country estimate
RES_DEG = 8.983111749910169e-05  # the store's pixel size (spatial:transform)
M_PER_DEG = 111_320.0  # one degree at the equator (spherical approximation, +-0.4 %)
CHUNK_PX = 256  # inner chunk edge; shards are 16 x 16 inner chunks
BANDS = 64
YEARS = 9
CHUNK_BYTES = 10.8337e9 / 3072  # measured: shard bytes of .cache/bench-8192 per chunk-year (zstd 3)
CHUNKS_PER_TASK = 32  # the job's reduce partitions hold ~n_tasks // 32 chunk tasks
SHARDS_PER_TASK = 3  # assumed: a task's 32 chunks, in row-major order, touch ~3 shards
GET_PER_PREFIX = 5_500  # S3: GET/HEAD requests per second per partitioned prefix
FIELD_HA = 10.0  # assumed mean field size (the bench's fields: ~21 ha mean, 15 ha median)


def measured(bench: dict) -> dict:
    """The benchmark's numbers, from bench/run.py's schema (the job under "job", the reduce and
    aggregate stages timed apart) or the older one (bench-4096.json: one "reduce + aggregate")."""
    if "job" in bench:
        job = bench["job"]
        return {
            "workers": bench["workers"],
            "chunk_years": bench["chunks_read"],
            "decode_s": bench["decode_only_s"],
            "after_start_s": job["after_start_s"],
            "wall_s": job["wall_s"],
            "reduce_s": job["stages_s"]["reduce"],
            "field_years": job["field_years"],
        }
    return {
        "workers": bench["workers"],
        "chunk_years": bench["chunks_read"],
        "decode_s": bench["decode_only_s"],
        "after_start_s": bench["job_after_start_s"],
        "wall_s": bench["job_wall_s"],
        "reduce_s": bench["job_stages_s"]["reduce + aggregate"],
        "field_years": bench["field_years"],
    }


def estimate(bench: dict, fill: float, cores: int) -> list[tuple[str, float, str]]:
    m = measured(bench)
    cores_used = m["workers"]
    chunk_years = m["chunk_years"]
    px_m2 = (RES_DEG * M_PER_DEG) ** 2 * MEAN_COS_LAT
    pixels = CROPLAND_HA * 1e4 / px_m2
    chunks = pixels / CHUNK_PX**2 * fill
    cy = chunks * YEARS
    tasks = chunks / CHUNKS_PER_TASK
    index_gets = tasks * YEARS * SHARDS_PER_TASK
    rate_job = chunk_years / (m["after_start_s"] * cores_used)
    rate_reduce = chunk_years / (m["reduce_s"] * cores_used)
    rate_decode = chunk_years / (m["decode_s"] * cores_used)
    rate_wall = chunk_years / (m["wall_s"] * cores_used)
    fy_per_cy = m["field_years"] / chunk_years
    core_s = cy / rate_job
    wall = core_s / cores
    return [
        ("pixel area at the cropland's mean latitude (m²)", px_m2, "assumed cos φ"),
        ("cropland pixels per year", pixels, "derived"),
        ("inner chunks touched per year", chunks, f"fill factor {fill}"),
        ("chunk-years (9 years)", cy, "derived"),
        ("bytes read, raw (TB)", cy * CHUNK_PX**2 * BANDS / 1e12, "4 MiB per chunk-year"),
        ("bytes read, compressed (TB)", cy * CHUNK_BYTES / 1e12, "bench store ratio"),
        ("chunk GETs", cy, "one ranged GET per chunk-year"),
        ("shard-index GETs", index_gets, f"{SHARDS_PER_TASK} shards per task per year"),
        ("field-years (at the bench's density)", cy * fy_per_cy, f"{fy_per_cy:.1f} per chunk-year"),
        (
            "cropland ha per field at the bench's density",
            CROPLAND_HA * YEARS / (cy * fy_per_cy),
            f"fill factor {fill}",
        ),
        ("field-years (10 ha fields)", CROPLAND_HA / FIELD_HA * YEARS, "assumed field size"),
        ("chunk-years per core-second, job after start-up", rate_job, "measured"),
        ("chunk-years per core-second, reduce stage", rate_reduce, "measured"),
        ("chunk-years per core-second, decode-only limit", rate_decode, "measured"),
        ("field-years per core-second, job after start-up", rate_job * fy_per_cy, "measured"),
        ("field-years per core-second, job with start-up", rate_wall * fy_per_cy, "measured"),
        ("job after start-up / decode-only time", rate_decode / rate_job, "measured"),
        ("reduce stage / decode-only time", rate_decode / rate_reduce, "measured"),
        ("core-hours, job rate", core_s / 3600, "derived"),
        ("core-hours, reduce-stage rate", cy / rate_reduce / 3600, "derived"),
        ("core-hours, decode-only limit", cy / rate_decode / 3600, "derived"),
        (f"wall hours on {cores} cores, job rate", wall / 3600, "derived"),
        (f"GET/s on {cores} cores, job rate", (cy + index_gets) / wall, "derived"),
        (
            f"GET/s on {cores} cores, reduce-stage rate",
            (cy + index_gets) / (cy / rate_reduce / cores),
            "derived",
        ),
        (
            f"GET/s on {cores} cores, decode-only limit",
            (cy + index_gets) / (cy / rate_decode / cores),
            "derived",
        ),
        ("read MB/s per core, job rate", rate_job * CHUNK_BYTES / 1e6, "derived"),
        ("read MB/s per core, reduce-stage rate", rate_reduce * CHUNK_BYTES / 1e6, "derived"),
        ("read MB/s per core, decode-only limit", rate_decode * CHUNK_BYTES / 1e6, "derived"),
        (
            "prefixes' worth of GET rate at the job rate",
            (cy + index_gets) / wall / GET_PER_PREFIX,
            "x 5,500 GET/s",
        ),
        (
            "reference tool core-hours (90 field-years/core-s, 10 ha fields)",
            CROPLAND_HA / FIELD_HA * YEARS / 90 / 3600,
            "derived",
        ),
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    final = ROOT / "bench" / "bench-8192-job.json"  # the job rerun on the final code, if there
    p.add_argument(
        "--bench",
        type=Path,
        default=final if final.exists() else ROOT / "bench" / "bench-8192.json",
    )
    p.add_argument(
        "--fill",
        type=float,
        default=2.0,
        help="touched chunk area / cropland area (default %(default)s)",
    )
    p.add_argument("--cores", type=int, default=1000)
    a = p.parse_args()
    print(f"measured inputs from {a.bench}", file=sys.stderr)
    for name, value, note in estimate(json.loads(a.bench.read_text()), a.fill, a.cores):
        shown = f"{float(f'{value:.3g}'):,.0f}" if value >= 100 else f"{value:.3g}"
        print(f"| {name} | {shown} | {note} |")


if __name__ == "__main__":
    main()
