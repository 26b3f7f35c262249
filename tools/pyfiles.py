"""Write the zip that executors import the job from (spark-submit --py-files).

It holds the `jobs` and `udfs` packages (all that executors import) and, in the repository's
layout, the `sql/` and `conf/` files the driver reads beside the `jobs` package it imported, so a
driver without a checkout (cluster deploy mode) reads them from the zip.

Usage: python tools/pyfiles.py [OUT.zip]   (default dist/aef_zonal.zip)
"""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTENT = {"jobs": "**/*.py", "udfs": "*.py", "sql": "*.sql", "conf": "*"}


def build(out: Path) -> list[str]:
    out.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(p.relative_to(ROOT).as_posix()
                   for folder, pattern in CONTENT.items() for p in (ROOT / folder).glob(pattern))
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name in names:
            z.write(ROOT / name, name)
    return names


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "dist" / "aef_zonal.zip")
    names = build(out)
    print(f"{out}: {len(names)} files")
