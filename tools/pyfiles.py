"""Write the zip that executors (and a cluster-mode driver) import the job from
(spark-submit --py-files): the `aef_zonal` package exactly as its wheel holds it, so pyproject.toml
is the one definition of what the package is. The wheel's metadata folder is left out.

Usage: python tools/pyfiles.py [OUT.zip]   (default dist/aef_zonal.zip)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(out: Path) -> list[str]:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", folder, str(ROOT)],
            check=True,
        )
        wheel = next(Path(folder).glob("aef_zonal-*.whl"))
        with zipfile.ZipFile(wheel) as w, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            names = [n for n in w.namelist() if n.startswith("aef_zonal/")]
            for name in names:
                z.writestr(name, w.read(name))
    return names


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "dist" / "aef_zonal.zip")
    names = build(out)
    print(f"{out}: {len(names)} files")
