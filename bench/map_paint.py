"""File size and time to first paint of `aef-zonal map` pages at 10^3 and 10^5 fields.

    .venv/bin/python -m bench.map_paint OUT [--year 2025] [--fields 1000 100000] [--pan]

Tiles the year's fields of OUT (an aef-zonal output, e.g. the demo's out/result) side by side
until there are N, writes the page and opens it in headless Chromium (software WebGL, network
off); first paint is window.aefFirstPaint, ms from navigation start to the first frame drawn
with the fields; with --pan, a pan frame is the mean time between frames over 20 frames of panning (one
step per frame, each drawn before the next is asked for), then the same with no layer at all:
the software renderer's own cost per frame, which the difference is above (at 10^5 fields under
load that takes over 10 minutes with software WebGL). Prints one line per N.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import shapely

from aef_zonal.viewers import webmap
from tests import browser


def tiled(table: pa.Table, n: int) -> pa.Table:
    """n fields: copies of `table`'s fields shifted east and south by the extent, row by row."""
    geoms = shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))
    x0, y0, x1, y1 = shapely.total_bounds(geoms)
    copies = -(-n // len(geoms))
    side = int(np.ceil(np.sqrt(copies)))
    parts = []
    for k in range(copies):
        dx, dy = (k % side) * (x1 - x0) * 1.02, -(k // side) * (y1 - y0) * 1.02
        moved = shapely.transform(geoms, lambda c, dx=dx, dy=dy: c + [dx, dy])
        parts.append(table.set_column(0, "geometry", pa.array(shapely.to_wkb(moved))))
    return pa.concat_tables(parts).slice(0, n)


PAN = """() => new Promise(done => {
  const v = aefDeck.getViewports()[0], times = [];
  const step = () => {
    times.push(performance.now());
    if (times.length > 20) return done((times[20] - times[0]) / 20);
    aefDeck.setProps({onAfterRender: () => requestAnimationFrame(step),
      viewState: {longitude: v.longitude + times.length * 2e-4, latitude: v.latitude, zoom: v.zoom}});
  };
  step();
})"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--year", type=int, default=2025)
    p.add_argument("--fields", type=int, nargs="+", default=[1000, 100_000])
    p.add_argument("--pan", action="store_true", help="also time frames while panning")
    a = p.parse_args(argv)
    base = webmap.read_fields(a.out, a.year)
    with tempfile.TemporaryDirectory() as tmp, browser.chromium() as chromium:
        for n in a.fields:
            t0 = time.perf_counter()
            path = Path(tmp) / f"map-{n}.html"
            path.write_text(webmap.page(tiled(base, n), a.year), encoding="utf-8")
            build = time.perf_counter() - t0
            with browser.open_map(chromium, path, timeout_s=600) as page:
                assert not page.errors, page.errors
                paint = page.first_paint_ms
                pan = ""
                if a.pan:
                    frame = page.page.evaluate(PAN)
                    page.page.evaluate("aefDeck.setProps({layers: []})")
                    pan = (
                        f", pan frame {frame:4.0f} ms (no layer: {page.page.evaluate(PAN):4.0f} ms)"
                    )
            print(
                f"{n:>7,} fields: {path.stat().st_size / 1e6:6.1f} MB, written in {build:5.1f} s, "
                f"first paint {paint / 1000:5.1f} s{pan}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
