"""Build the driver JVM's class archive (.cache/jvm/aef-zonal.jsa; `make setup` runs this).

    .venv/bin/python tools/class_archive.py [ARCHIVE]

A local-mode run spends much of Spark's start-up loading, parsing and verifying classes (Spark's,
Sedona's, GeoTools'). The JDK's dynamic class-data sharing writes the classes a JVM loaded into
an archive as it exits (-XX:ArchiveClassesAtExit); a later JVM given that archive maps them
ready-made (jobs/config.class_archive_options). The classes recorded are those of a short job on
a tiny generated sample: start-up, the spatial join, the Python UDFs and the GeoParquet writer.
The archive fits only the JDK and class path that wrote it (the JVM ignores it otherwise), so
it is rebuilt when either changes.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from aef_zonal import config


def build(archive: Path) -> int:
    from pyspark import SparkContext

    from aef_zonal import options, run
    from aef_zonal.demo.sample import make_sample

    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.unlink(missing_ok=True)  # a JVM cannot write a dynamic archive over one it maps
    with tempfile.TemporaryDirectory() as tmp:
        store, fields = make_sample(
            Path(tmp) / "sample", size=512, shard=512, years=(2024, 2025), log=lambda *a: None
        )
        partial = archive.with_suffix(".partial")  # beside it: renamed on the same filesystem
        partial.unlink(missing_ok=True)
        java = config.load()["spark"]["conf"]["spark.driver.extraJavaOptions"]
        settings = Path(tmp) / "archive.toml"
        settings.write_text(
            '[spark.conf]\n"spark.driver.extraJavaOptions" = '
            f'"{java} -XX:ArchiveClassesAtExit={partial} -Xlog:cds=off"\n'
        )
        os.environ.pop("AEF_ZONAL_CLASS_ARCHIVE", None)
        run.run(
            options.parse(
                [
                    "--conf",
                    str(settings),
                    "--store",
                    str(store),
                    "--fields",
                    str(fields),
                    "--out",
                    str(Path(tmp) / "out"),
                    "--master",
                    "local[2]",
                ]
            )
        )
        gateway = SparkContext._gateway
        SparkContext._active_spark_context.stop()
        gateway.shutdown()
        # the JVM writes the archive as it exits, which it does when its stdin closes
        gateway.proc.stdin.close()
        if gateway.proc.wait(timeout=300) != 0 or not partial.is_file():
            print(f"class archive: the JVM did not write {partial}", file=sys.stderr)
            return 1
        os.replace(partial, archive)  # whole or not at all: a truncated archive crashes the JVM
    print(f"class archive: {archive} ({archive.stat().st_size / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(build(Path(sys.argv[1]) if len(sys.argv) > 1 else config.CLASS_ARCHIVE))
