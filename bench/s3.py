"""Object-storage latency: the job against a local S3 server, without and with per-request latency.

    .venv/bin/python -m bench.s3 [--store out/sample/store.zarr] [--fields out/sample/fields.parquet]
                                 [--latency 0.04] [--workers 2]

The store is copied into moto's S3 server (tests/s3server.py) behind a proxy that sleeps
`--latency` seconds before answering each request. The job runs twice (fresh Spark each time);
the reduce stage's time, chunk reads and requests come from each run's _run.json and from the
proxy's own count. Writes bench/s3-latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--store", default=str(ROOT / "out" / "sample" / "store.zarr"))
    p.add_argument("--fields", default=str(ROOT / "out" / "sample" / "fields.parquet"))
    p.add_argument("--latency", type=float, default=0.04, help="seconds added to every request")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    a = p.parse_args()
    from tests.s3server import S3Server

    runs = {}
    with S3Server() as s3:
        t0 = time.perf_counter()
        url = s3.upload(Path(a.store), "bench/store.zarr")
        print(f"uploaded {a.store} to {url} in {time.perf_counter() - t0:.0f} s")
        for latency in (0.0, a.latency):
            s3.proxy.latency = latency
            s3.proxy.clear()
            out = ROOT / "out" / f"bench-s3-{int(latency * 1000)}ms"
            env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            subprocess.run(
                [
                    str(ROOT / ".venv" / "bin" / "aef-zonal"),
                    "run",
                    "--store",
                    url,
                    "--s3-endpoint",
                    s3.endpoint,
                    "--fields",
                    a.fields,
                    "--out",
                    str(out),
                    "--mode",
                    "overwrite",
                    "--master",
                    f"local[{a.workers}]",
                ],
                check=True,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            report = json.loads((out / "_run.json").read_text())
            gets = sum(
                n for (m, path), n in s3.proxy.requests.items() if m == "GET" and "/c/" in path
            )
            runs[f"{int(latency * 1000)} ms"] = r = {
                "reduce_s": report["seconds"]["reduce"],
                "chunk_reads": report["chunk_reads"],
                "chunk_requests_seen_by_server": gets,
                "requests_per_chunk": round(gets / report["chunk_reads"], 3),
                "mb_read": round(report["bytes_read"] / 1e6, 1),
            }
            print(f"latency {latency * 1000:.0f} ms: {json.dumps(r)}")
    base, slow = runs["0 ms"], runs[f"{int(a.latency * 1000)} ms"]
    result = {
        "machine_cores": os.cpu_count(),
        "workers": a.workers,
        "store": a.store,
        "latency_s": a.latency,
        "runs": runs,
        "ratio_with_latency": round(slow["reduce_s"] / base["reduce_s"], 2),
    }
    (ROOT / "bench" / "s3-latency.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
