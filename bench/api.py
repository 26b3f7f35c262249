"""A one-field run through the API in a running session: what a notebook user waits for on every
call once Spark has started (the stages' fixed cost).

    python bench/api.py DATA [--calls 3]   DATA: bench/run.py's sample folder; one JSON line
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("data")
    p.add_argument("--calls", type=int, default=3)
    a = p.parse_args()
    from aef_zonal import zonal_stats

    store, fields = f"{a.data}/store.zarr", f"{a.data}/fields-1.parquet"
    with tempfile.TemporaryDirectory() as out:
        seconds = []
        for i in range(a.calls + 1):  # the first call starts Spark
            t0 = time.perf_counter()
            zonal_stats(fields, store).write(f"{out}/{i}")
            seconds.append(round(time.perf_counter() - t0, 2))
    print(json.dumps({"first_call_s": seconds[0], "next_calls_s": seconds[1:]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
