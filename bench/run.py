"""Benchmark: the job against the decode-only limit on a larger AEF-layout sample.

    .venv/bin/python bench/run.py [--size 8192] [--years 2023 2024 2025] [--workers 2]
                                  [--skip peer half] [--iowa]

Generates the sample once (cached in .cache/bench-SIZE), reads the whole store once so the page
cache holds it, then measures in the same run:
  1. the decode-only limit: zarr reads and decompresses, once, every inner chunk any field
     touches, on the same number of processes, doing nothing else; and the same with the job's
     own reader (udfs/store.py), which skips zarr's per-chunk overhead;
  2. three job runs, each in a fresh process (wall time with Spark start-up, each stage's time,
     peak resident memory of the driver, the JVM and each Python worker): all fields, the first
     field alone (start-up and fixed costs), every field cut in four (same chunks, 4x the
     field-years); and from them the `table` (the performance goals: reduce stage and marginal
     job against decode-only, field-years per core-second, core time per added field-year);
     then the writer's floor (bench/writer.py): the rows of the full and the cut-in-four runs
     written again by the job's writer and by Sedona's alone, per added row; and one-field
     runs through the API in a running session (bench/api.py);
  3. the exactextract peer on the last year (bench/peer.py), against the job on that year with
     the same pixel rule (fraction) and with the default (center);
  4. the western half of the fields (a run over ~58 % of the chunks);
  5. with --iowa, Iowa's count: every field cut into 48 (~1.2 M fields, ~3.6 M field-years),
     its cost per field-year added to the full run, and the writer's floor at that scale;
writes bench/bench-SIZE.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def touched_chunks(fields_path: Path, store: str) -> list[tuple[int, int]]:
    """Inner chunks whose footprint some field intersects (what the job must read per year)."""
    import geopandas as gpd
    import shapely

    from aef_zonal.udfs.store import describe

    g = describe(store).grid
    f = gpd.read_parquet(fields_path)
    cells = [
        ((cy, cx), shapely.box(*g.chunk_footprint(cy, cx)))
        for cy in range(g.chunk_rows)
        for cx in range(g.chunk_cols)
    ]
    tree = shapely.STRtree([c for _, c in cells])
    hit = np.unique(tree.query(f.geometry.values, predicate="intersects")[1])
    return [cells[i][0] for i in hit]


@functools.lru_cache(maxsize=1)
def _open(store: str):
    import zarr

    from aef_zonal.udfs.store import describe

    return zarr.open_group(store, mode="r")["embeddings"], describe(store).grid


def _decode(args):
    """Plain zarr: what reading the chunk costs with nothing else done."""
    store, t, cy, cx = args
    arr, g = _open(store)
    r0, r1, c0, c1 = g.chunk_window(cy, cx)
    arr[t, :, r0:r1, c0:c1]


@functools.lru_cache(maxsize=1)
def _reader(store: str):
    from aef_zonal.udfs.store import Access, describe, reader

    g = describe(store).grid
    return reader(Access(store), g), g


def _decode_reader(args):
    """The job's own read path (aef_zonal.udfs.store.ChunkReader), with nothing else done."""
    store, t, cy, cx = args
    r, g = _reader(store)
    r.submit(t, g.chunk_window(cy, cx)).result()


def decode_only(store: str, chunks, years_idx, workers: int, how=_decode) -> float:
    jobs = [(store, t, cy, cx) for t in years_idx for cy, cx in chunks]
    with mp.get_context("spawn").Pool(workers) as pool:
        pool.map(how, jobs[:workers])  # warm the processes (imports, metadata)
        t0 = time.perf_counter()
        pool.map(how, jobs, chunksize=8)
        return time.perf_counter() - t0


def warm_page_cache(store: str) -> float:
    """Read every object of a local store once, so that every measurement after it reads from
    memory (the first run otherwise pays the disk, and which run is first would decide)."""
    size = 0
    for path in Path(store).rglob("*"):
        if path.is_file():
            with path.open("rb") as f:
                while chunk := f.read(1 << 24):
                    size += len(chunk)
    return size / 1e9


class PeakMemory:
    """Peak resident memory (VmHWM) and CPU time of a process tree, sampled from /proc while it
    runs: the driver's Python, the JVM (driver and, in local mode, executor) and each Python
    worker (CPU time as last sampled, so a worker's final fraction of a second may be missed)."""

    def __init__(self, root_pid: int, every: float = 0.25):
        self.root, self.every, self.peaks, self.kinds, self.cpu = root_pid, every, {}, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _tree(self) -> list[int]:
        children = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                pid, rest = stat.read_text().split(" (", 1)
                ppid = int(rest.rsplit(") ", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(pid))
        out, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(children.get(pid, []))
        return out

    def _loop(self):
        tick = os.sysconf("SC_CLK_TCK")
        while not self._stop.wait(self.every):
            for pid in self._tree():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                hwm = next(
                    (int(s.split()[1]) for s in status.splitlines() if s.startswith("VmHWM")), 0
                )
                self.peaks[pid] = max(self.peaks.get(pid, 0), hwm)
                self.cpu[pid] = (int(stat[11]) + int(stat[12])) / tick  # utime + stime
                kind = (
                    "jvm"
                    if "java" in cmd.split(" ")[0]
                    else "python_worker"
                    if "pyspark.daemon" in cmd or "pyspark.worker" in cmd
                    else "driver_python"
                    if pid == self.root
                    else "other"
                )
                # the JVM is a launcher script until it execs java; an exiting worker shows no
                # command line: a process keeps the first kind other than "other" it showed
                if self.kinds.get(pid, "other") == "other":
                    self.kinds[pid] = kind

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        mb, cpu = {}, {}
        for pid, kb in self.peaks.items():
            kind = self.kinds.get(pid, "other")
            mb.setdefault(kind, []).append(round(kb / 1024))
            cpu[kind] = cpu.get(kind, 0.0) + self.cpu.get(pid, 0.0)
        return {
            "driver_python_mb": max(mb.get("driver_python", [0])),
            "jvm_mb": max(mb.get("jvm", [0])),
            "python_worker_max_mb": max(mb.get("python_worker", [0])),
            "python_workers": len(mb.get("python_worker", [])),
            "cpu_s": {k: round(v, 1) for k, v in sorted(cpu.items())},
        }


def run_job(store: str, fields: Path, out: Path, workers: int, *extra: str) -> dict:
    """One job run in a fresh process (Spark start-up included), its report and memory peaks."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "aef-zonal"),
            "run",
            "--store",
            store,
            "--fields",
            str(fields),
            "--out",
            str(out),
            "--mode",
            "overwrite",
            "--master",
            f"local[{workers}]",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    memory = PeakMemory(proc.pid)
    if proc.wait() != 0:
        raise SystemExit(f"job failed: {out}")
    wall = time.perf_counter() - t0
    report = json.loads((out / "_run.json").read_text())
    stages = report["seconds"]
    after_start = sum(v for k, v in stages.items() if k != "start spark")
    return {
        "wall_s": round(wall, 2),
        "after_start_s": round(after_start, 2),
        "stages_s": stages,
        "fields": report["fields"],
        "field_years": report["field_years"],
        "chunk_reads": report["chunk_reads"],
        "chunk_tasks": report["chunk_tasks"],
        "field_years_per_core_second": round(report["field_years"] / (after_start * workers), 1),
        "peak_memory": memory.stop(),
    }


def split_fields(fields: Path, out: Path, pieces=(5, 2)) -> Path:
    """Each field cut into up to nx x ny pieces along its bbox: more fields, the same area and
    chunks (ids: the field's id times 100 plus the piece)."""
    if out.exists():
        return out
    import geopandas as gpd
    import shapely

    f = gpd.read_parquet(fields)
    nx, ny = pieces
    x0, y0, x1, y1 = shapely.bounds(f.geometry.values).T
    parts, ids, labels = [], [], []
    for i in range(nx):
        for j in range(ny):
            cells = shapely.box(
                x0 + (x1 - x0) * i / nx,
                y0 + (y1 - y0) * j / ny,
                x0 + (x1 - x0) * (i + 1) / nx,
                y0 + (y1 - y0) * (j + 1) / ny,
            )
            parts.append(shapely.intersection(f.geometry.values, cells))
            ids.append(f.feature_id.to_numpy() * 100 + i * ny + j)
            labels.append(f.label.to_numpy())
    geoms, ids, labels = np.concatenate(parts), np.concatenate(ids), np.concatenate(labels)
    keep = np.isin(shapely.get_type_id(geoms), (3, 6)) & ~shapely.is_empty(geoms)
    gpd.GeoDataFrame(
        {"feature_id": ids[keep], "label": labels[keep]}, geometry=geoms[keep], crs=f.crs
    ).to_parquet(out)
    return out


def one_field(fields: Path, out: Path) -> Path:
    """The first field alone: a run whose time is Spark start-up and the stages' fixed costs."""
    if not out.exists():
        import geopandas as gpd

        gpd.read_parquet(fields).iloc[:1].to_parquet(out)
    return out


def half_area(fields: Path, store: str, out: Path) -> Path:
    """The fields whose centroid lies in the western half of the store."""
    if out.exists():
        return out
    import geopandas as gpd

    from aef_zonal.udfs.store import describe

    g = describe(store).grid
    f = gpd.read_parquet(fields)
    f[f.geometry.centroid.x < g.xmin + g.width * g.res / 2].to_parquet(out)
    return out


def api_calls(data: Path) -> dict:
    """bench/api.py: one-field runs through the API in one session, in a fresh process."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "api.py"), str(data)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.splitlines()[-1])


def writer_floor(outputs: list[Path], workers: int) -> list[dict]:
    """bench/writer.py over the outputs, in a fresh process."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "writer.py"),
            *map(str, outputs),
            "--workers",
            str(workers),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def table(
    job: dict, one: dict, four: dict, decode_s: float, workers: int, floor: list[dict]
) -> dict:
    """The issue-16 goals, from the runs of one benchmark: the job against the decode-only limit,
    its marginal cost (a full run minus a one-field run), and the cost of each added field-year
    (every field cut in four: the same chunks, four times the field-years), beside the writer's
    cost of each added row (`floor`: the full run's and the cut-in-four run's rows rewritten)."""
    marginal = job["wall_s"] - one["wall_s"]
    added = four["field_years"] - job["field_years"]

    def per_added_row(key: str, cores: int) -> float:
        return round((floor[1][key] - floor[0][key]) * cores / added * 1e6, 1)

    return {
        "reduce_over_decode": round(job["stages_s"]["reduce"] / decode_s, 2),
        "marginal_s": round(marginal, 2),
        "marginal_over_decode": round(marginal / decode_s, 2),
        "field_years_per_core_second_marginal": round(job["field_years"] / (marginal * workers)),
        "core_us_per_added_field_year": round(
            (four["after_start_s"] - job["after_start_s"]) * workers / added * 1e6, 1
        ),
        "writer_core_us_per_added_row": per_added_row("job_writer_core_s", 1),
        "sedona_alone_core_us_per_added_row": per_added_row("sedona_alone_s", workers),
        "one_field_wall_s": one["wall_s"],
    }


def at_scale(job: dict, iowa: dict, floor: list[dict], workers: int) -> dict:
    """The cost of each field-year Iowa's count adds to the full run, beside the writer's cost of
    each added row at that scale."""
    added = iowa["field_years"] - job["field_years"]
    return {
        "iowa_core_us_per_added_field_year": round(
            (iowa["after_start_s"] - job["after_start_s"]) * workers / added * 1e6, 1
        ),
        "iowa_writer_core_us_per_added_row": round(
            (floor[1]["job_writer_core_s"] - floor[0]["job_writer_core_s"]) / added * 1e6, 1
        ),
    }


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--years", type=int, nargs="+", default=[2023, 2024, 2025])
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=("peer", "half"),
        help="leave out the exactextract peer or the half-area run",
    )
    p.add_argument(
        "--iowa",
        action="store_true",
        help="also the Iowa-count scenario: every field cut into 48 (~1.2 M fields)",
    )
    p.add_argument("--out", help="result JSON (default bench/bench-SIZE.json)")
    a = p.parse_args()

    from aef_zonal.demo.sample import make_sample

    data = ROOT / ".cache" / f"bench-{a.size}"
    if not (data / "store.zarr" / "zarr.json").exists() or not (data / "fields.parquet").exists():
        t0 = time.perf_counter()
        make_sample(data, size=a.size, years=tuple(a.years))
        print(f"sample generated in {time.perf_counter() - t0:.0f} s")
    store, fields = str(data / "store.zarr"), data / "fields.parquet"
    results = ROOT / "out" / f"bench-{a.size}"

    chunks = touched_chunks(fields, store)
    print(f"page cache: read {warm_page_cache(store):.1f} GB once", flush=True)
    decode_s = decode_only(store, chunks, range(len(a.years)), a.workers)
    reader_s = decode_only(store, chunks, range(len(a.years)), a.workers, _decode_reader)
    print(
        f"decode-only: {len(chunks) * len(a.years)} chunks in {decode_s:.2f} s with zarr, "
        f"{reader_s:.2f} s with the job's reader, on {a.workers} processes",
        flush=True,
    )

    runs = {}
    for name, path in (
        ("job", fields),
        ("one_field", one_field(fields, data / "fields-1.parquet")),
        ("four", split_fields(fields, data / "fields-x4.parquet", (2, 2))),
    ):
        runs[name] = run_job(store, path, results / name, a.workers)
        print(f"{name}: {json.dumps(runs[name])}", flush=True)
    floor = writer_floor([results / "job", results / "four"], a.workers)
    print(f"writer floor: {json.dumps(floor)}", flush=True)
    result = {
        "machine_cores": os.cpu_count(),
        "workers": a.workers,
        "size_px": a.size,
        "years": a.years,
        "command": " ".join(["bench/run.py", *sys.argv[1:]]),
        "chunks_read": len(chunks) * len(a.years),
        "decode_only_s": round(decode_s, 2),
        "decode_only_reader_s": round(reader_s, 2),
        "table": table(runs["job"], runs["one_field"], runs["four"], decode_s, a.workers, floor),
        **runs,
        "writer_floor": floor,
        "api_one_field": api_calls(data),
    }
    print(f"table: {json.dumps(result['table'])}", flush=True)
    print(f"one-field calls through the API: {json.dumps(result['api_one_field'])}", flush=True)

    if "peer" not in a.skip:
        import geopandas as gpd

        from bench import peer

        year = a.years[-1]
        tif = peer.geotiff(store, len(a.years) - 1, data / f"u-{year}.tif")
        peer_s, _ = peer.run(tif, gpd.read_parquet(fields), a.workers)
        print(f"exactextract: {peer_s:.1f} s for the fields' 64-band means of {year}", flush=True)
        same = run_job(
            store,
            fields,
            results / "fraction",
            a.workers,
            "--years",
            str(year),
            "--pixels",
            "fraction",
            "--stats",
            "mean",
        )
        centre = run_job(
            store, fields, results / "centre-1y", a.workers, "--years", str(year), "--stats", "mean"
        )
        result["peer"] = {
            "tool": "exactextract (mean: coverage-weighted, 64 bands)",
            "year": year,
            "exactextract_s": round(peer_s, 2),
            "job_fraction_after_start_s": same["after_start_s"],
            "job_center_after_start_s": centre["after_start_s"],
            "ratio_job_fraction_to_exactextract": round(same["after_start_s"] / peer_s, 2),
            "ratio_job_center_to_exactextract": round(centre["after_start_s"] / peer_s, 2),
        }
        print(f"peer: {json.dumps(result['peer'])}", flush=True)

    if "half" not in a.skip:
        result["half_area"] = run_job(
            store,
            half_area(fields, store, data / "fields-half.parquet"),
            results / "half",
            a.workers,
        )
        print(f"half: {json.dumps(result['half_area'])}", flush=True)

    if a.iowa:
        result["iowa"] = run_job(
            store,
            split_fields(fields, data / "fields-x48.parquet", (8, 6)),
            results / "iowa",
            a.workers,
        )
        print(f"iowa: {json.dumps(result['iowa'])}", flush=True)
        # at this size the job (and so the writer's floor) compiles with C1 and C2
        result["iowa_writer_floor"] = writer_floor([results / "job", results / "iowa"], a.workers)
        result["table"] |= at_scale(
            runs["job"], result["iowa"], result["iowa_writer_floor"], a.workers
        )
        print(f"at Iowa's count: {json.dumps(result['iowa_writer_floor'])}", flush=True)

    Path(a.out or ROOT / "bench" / f"bench-{a.size}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
