"""aef-zonal command line: thin wrappers over the job and the sample generator."""

from __future__ import annotations

import argparse
import sys


def _sample(argv) -> int:
    from aef_zonal.options import year

    p = argparse.ArgumentParser(
        prog="aef-zonal sample",
        description="Write OUT_DIR/store.zarr (AEF layout, over Iowa) and OUT_DIR/fields.parquet.",
        epilog="example: aef-zonal sample out/sample --size 1024 --years 2024 2025",
    )
    p.add_argument(
        "out_dir",
        metavar="OUT_DIR",
        help="folder to write store.zarr, fields.parquet and fields_kinds.json into",
    )
    p.add_argument(
        "--size", type=int, default=2048, help="store edge in pixels (default %(default)s)"
    )
    p.add_argument(
        "--shard", type=int, default=1024, help="shard edge in pixels (default %(default)s)"
    )
    p.add_argument(
        "--years",
        type=year,
        nargs="+",
        default=[2023, 2024, 2025],
        metavar="YEAR",
        help="the store's years, separated by spaces (default %(default)s)",
    )
    p.add_argument(
        "--seed", type=int, default=42, help="seed of the fields and the embeddings (default 42)"
    )
    p.add_argument(
        "--dtype",
        choices=("int8", "float32"),
        default="int8",
        help="int8: signed-square codes as the AEF mosaic (default); float32: the "
        "vectors unquantised, NaN as nodata",
    )
    p.add_argument(
        "--per-year-fields",
        action="store_true",
        help="one field layer per year (a 'year' column; shifted and split polygons)",
    )
    a = p.parse_args(argv)
    from aef_zonal.demo.sample import make_sample

    try:
        make_sample(
            a.out_dir,
            size=a.size,
            years=tuple(a.years),
            seed=a.seed,
            shard=a.shard,
            per_year_fields=a.per_year_fields,
            dtype=a.dtype,
        )
    except ValueError as e:
        print(f"aef-zonal sample: error: {e}", file=sys.stderr)
        return 2
    return 0


def _run(argv) -> int:
    from aef_zonal import run

    return run.main(argv)


def _plot(argv) -> int:
    from aef_zonal.viewers import plot

    return plot.main(argv)


def _map(argv) -> int:
    from aef_zonal.viewers import webmap

    return webmap.main(argv)


def _sql(argv) -> int:
    from aef_zonal import query

    return query.main(argv)


def _similar(argv) -> int:
    from aef_zonal.answers import commands

    return commands.similar_main(argv)


def _cluster(argv) -> int:
    from aef_zonal.answers import commands

    return commands.cluster_main(argv)


def _probe(argv) -> int:
    from aef_zonal.answers import commands

    return commands.probe_main(argv)


COMMANDS = {
    "sample": _sample,
    "run": _run,
    "plot": _plot,
    "map": _map,
    "sql": _sql,
    "similar": _similar,
    "cluster": _cluster,
    "probe": _probe,
}
USAGE = """usage: aef-zonal {sample,run,plot,map,sql,similar,cluster,probe} ... | --version

  sample OUT_DIR          write the built-in AEF-layout sample store and fields
  run --store URL --fields FILE --out DIR [--years Y ...] [--master M]
  plot OUT [--year YYYY] [--to DIR]       map.png and pca.png of one year
  map OUT [--year YYYY] [--to FILE.html]  interactive map, one HTML file, no network
  sql OUT "SELECT ... FROM fields" [--to FILE.parquet]   Spark SQL + Sedona
  similar OUT --like FEATURE_ID [--year Y] [--k 10]   the most similar field-years
  cluster OUT --k K --to DIR [--by COLUMN]   k-means, written with a cluster column
  probe OUT [--label-column label] [--year Y]   a linear probe against the baseline

example:
  aef-zonal sample out/sample
  aef-zonal run --store out/sample/store.zarr --fields out/sample/fields.parquet --out out/result
each sub-command has --help."""
# what sample, plot and map import beyond the job's own packages: the viz extra
VIZ = {"geopandas", "rasterio", "matplotlib", "mpl_toolkits", "PIL", "mapbox_earcut"}


def version() -> str:
    """The package's version and the engines it runs on, as installed."""
    from importlib.metadata import version as installed

    engines = ", ".join(f"{p} {installed(p)}" for p in ("pyspark", "apache-sedona"))
    return f"aef-zonal {installed('aef-zonal')} ({engines})"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-V", "--version"):
        print(version())
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        asked = bool(argv) and argv[0] in ("-h", "--help")
        print(USAGE, file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in VIZ:
            raise
        print(
            f"aef-zonal {argv[0]}: error: it needs {e.name}, which the viz extra installs: "
            "pip install 'aef-zonal[viz]'",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
