"""`aef-zonal run`'s options: conf/defaults.toml, a --conf file, then argv -> one frozen Options."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from aef_zonal import config, dataset, writer
from aef_zonal.errors import JobError
from aef_zonal.udfs import statistics
from aef_zonal.udfs.pixels import RULES

EXAMPLES = """examples:
  aef-zonal run --store out/sample/store.zarr --fields out/sample/fields.parquet --out out/result
  aef-zonal run --store s3://bucket/aef/v1.zarr --s3-region us-west-2 --fields fields.gpkg \\
      --layer parcels --out out/iowa --years 2023 2024 2025 --stats count,mean,std,p50
  aef-zonal run --conf my.toml --out out/more --mode add     # settings from a file (see conf/)
  aef-zonal run --store out/sample/store.zarr --fields out/sample/fields.parquet --out out/change \\
      --pixels fraction --min-coverage 0.5 --stats count,mean,median,change --keep-columns all
"""


@dataclass(frozen=True)
class Options:
    store: str
    fields: object  # a path or URL, or a Spark DataFrame (the API)
    layer: str | None  # a GeoPackage's layer (None: its only one)
    out: str | None  # None: the API's run, written by ZonalStats.write
    years: list[int] | None  # None: every year of the store
    master: str | None
    stats: list[str]  # as asked (udfs/statistics.py's names)
    pixels: str
    min_coverage: float  # all-touched, fraction: least covered share of a pixel
    keep_columns: tuple[str, ...] | None  # input columns carried into every row; None: all
    pca_model: str | None
    pca_sample: int
    seed: int
    year_column: str | None
    skip_missing_years: bool
    mode: str
    rows_without_pixels: str  # listed: beside the data (dataset.WITHOUT_PIXELS); inline: in it
    on_bad_chunk: str
    s3_region: str | None
    s3_endpoint: str | None
    retries: int
    verbose: bool
    settings: dict  # the merged settings (conf/defaults.toml + --conf)

    @property
    def statistics(self) -> tuple[statistics.Statistic, ...]:
        """The statistics written (those asked, and those always written), in output order."""
        return statistics.parse(self.stats)

    def output_columns(self) -> set[str]:
        """The columns the output writes besides the kept input columns."""
        return dataset.columns(self.stats)

    @property
    def weighted(self) -> bool:
        return self.pixels == "fraction"

    def access(self):
        """How workers reach the store (aef_zonal.udfs.store.Access)."""
        from aef_zonal.udfs.store import Access

        st = self.settings["store"]
        return Access(
            self.store,
            region=self.s3_region,
            endpoint=self.s3_endpoint,
            retries=self.retries,
            retry_timeout=float(st["retry_timeout"]),
            backoff=float(st["backoff"]),
            concurrency=int(st["concurrency"]),
        )


def year(text: str) -> int:
    """A --years value: a four-digit year; a list with commas gets the hint to use spaces."""
    try:
        return int(text)
    except ValueError:
        hint = (
            f"; separate years by spaces: --years {' '.join(text.replace(',', ' ').split())}"
            if "," in text
            else ""
        )
        raise argparse.ArgumentTypeError(f"{text!r} is not a year{hint}") from None


def parse(argv=None) -> Options:
    """`aef-zonal run`'s argv -> Options (argparse's usage and exit 2 on a bad option)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--conf")
    try:
        d = config.load(pre.parse_known_args(argv)[0].conf)
    except ValueError as e:
        pre.error(str(e))
    p = parser(d)
    args = vars(p.parse_args(argv))
    args.pop("conf")
    try:
        o = build(d, **args)
    except JobError as e:
        p.error(str(e))
    if o.out is None:
        p.error("--out is required (or set job.out in a --conf file)")
    return o


def parser(d: dict) -> argparse.ArgumentParser:
    job, st = d["job"], d["store"]
    p = argparse.ArgumentParser(
        prog="aef-zonal run",
        usage="aef-zonal run --store URL --fields FILE --out DIR [options]",
        description="Per-field statistics of an AEF embeddings Zarr store, written as "
        "Hive-partitioned GeoParquet. Defaults come from conf/defaults.toml.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,  # -h joins the other options, listed after the required ones
    )
    needed = p.add_argument_group("required (each may be set in a --conf file's [job] instead)")
    needed.add_argument(
        "--store",
        metavar="URL",
        default=job["store"] or None,
        help="Zarr store: path, s3://bucket/prefix or https://host/path",
    )
    needed.add_argument(
        "--fields",
        metavar="FILE",
        default=job["fields"] or None,
        help="the field polygons: GeoParquet (a file or a folder of files), GeoPackage "
        "(--layer), Shapefile, GeoJSON or FlatGeobuf; a path or URL. They need an integer "
        "feature_id and Polygon/MultiPolygon geometries; label, score_mean, score_std and a "
        "time or year column are optional; the CRS is taken from the file",
    )
    needed.add_argument(
        "--out",
        metavar="DIR",
        default=job["out"] or None,
        help="output folder (must not exist unless --mode)",
    )
    opts = p.add_argument_group("options")
    opts.add_argument("-h", "--help", action="help", help="show this help and exit")
    opts.add_argument(
        "--conf",
        metavar="FILE",
        help="TOML file over conf/defaults.toml (same layout); options here win",
    )
    opts.add_argument(
        "--layer",
        metavar="NAME",
        default=job["layer"] or None,
        help="the GeoPackage layer holding the fields (default: its only feature layer)",
    )
    opts.add_argument(
        "--years",
        type=year,
        metavar="YEAR",
        nargs="+",
        default=job["years"] or None,
        help="years to reduce (default: all in store)",
    )
    opts.add_argument(
        "--master",
        help="Spark master (default: spark-submit's --master, else "
        f"{d['spark']['master']} from the settings)",
    )
    opts.add_argument(
        "--stats",
        default=job["stats"],
        help=f"comma-separated statistics among {','.join(statistics.BY_NAME)}, median and "
        "quantiles pNN such as p05,p95 (coverage-weighted with --pixels fraction, "
        "as exactextract; not for float stores); change: 1 - cosine of the mean "
        "with the field's previous year with pixels (and change_from, that year) "
        "(default %(default)s)",
    )
    opts.add_argument(
        "--pixels",
        choices=RULES,
        default=job["pixels"],
        help="which pixels count: centre inside (center), every touched pixel "
        "(all-touched), or touched pixels weighted by covered area (fraction); "
        "default %(default)s",
    )
    opts.add_argument(
        "--min-coverage",
        type=float,
        default=job["min_coverage"],
        metavar="F",
        help="with all-touched or fraction: a pixel counts only when at least F (0..1) "
        "of its area is inside the field, as exactextract's min_coverage_frac "
        "(default %(default)s: any share)",
    )
    opts.add_argument(
        "--keep-columns",
        default=job["keep_columns"],
        metavar="all|none|A,B",
        help="input columns written unchanged into every output row: all, none or a "
        "comma-separated list (default %(default)s); label is always the "
        "partition column",
    )
    opts.add_argument("--pca-model", help="reuse a saved PCA model (JSON) instead of fitting one")
    opts.add_argument(
        "--pca-sample",
        type=int,
        default=job["pca_sample"],
        help="field means sampled to fit the PCA (default %(default)s)",
    )
    opts.add_argument("--seed", type=int, default=job["seed"], help="PCA sampling seed")
    opts.add_argument(
        "--year-column",
        metavar="NAME",
        help="column giving each field's own year (default: 'time' or 'year' if present); "
        "'none' reduces every field for every year",
    )
    opts.add_argument(
        "--skip-missing-years",
        action="store_true",
        help="drop (and count) fields whose year the store lacks instead of failing",
    )
    opts.add_argument(
        "--mode",
        choices=writer.MODES,
        default="error",
        help="when --out exists: refuse (error, default), replace it (overwrite), or "
        "replace only the time/label partitions this run writes (add)",
    )
    opts.add_argument(
        "--rows-without-pixels",
        choices=dataset.ROWS_WITHOUT_PIXELS,
        default=job["rows_without_pixels"],
        help="field-years without a valid pixel: kept out of the data and listed with their "
        f"reason in OUT/{dataset.WITHOUT_PIXELS}/ (listed, default), or also kept in the data "
        "as rows with count = 0, null statistics and the reason (inline)",
    )
    opts.add_argument(
        "--on-bad-chunk",
        choices=("fail", "skip"),
        default=job["on_bad_chunk"],
        help="a chunk that does not decode fails the run (default %(default)s) or is "
        "skipped, listed in _run.json, its fields marked complete = false",
    )
    opts.add_argument("--s3-region", default=st["region"] or None, help="S3 region of the store")
    opts.add_argument(
        "--s3-endpoint",
        default=st["endpoint"] or None,
        help="S3-compatible endpoint URL, e.g. http://127.0.0.1:9000",
    )
    opts.add_argument(
        "--retries",
        type=int,
        default=st["retries"],
        help="retries per store request on 5xx, throttling, dropped connections "
        "(default %(default)s)",
    )
    opts.add_argument("-v", "--verbose", action="store_true", help="show Spark's own logging")
    return p


def build(
    d: dict,
    *,
    store,
    fields,
    out=None,
    layer=None,
    years=None,
    master=None,
    stats=None,
    pixels=None,
    min_coverage=None,
    keep_columns=None,
    pca_model=None,
    pca_sample=None,
    seed=None,
    year_column=None,
    skip_missing_years=False,
    mode="error",
    rows_without_pixels=None,
    on_bad_chunk=None,
    s3_region=None,
    s3_endpoint=None,
    retries=None,
    verbose=False,
) -> Options:
    """Options from keywords (the API's, or argv's): None takes the settings' default (`d`,
    conf/defaults.toml with a --conf file over it). Refuses what cannot run with a JobError
    whose message names the option and the fix."""
    job, st = d["job"], d["store"]
    store = store or job["store"] or None
    fields = job["fields"] or None if fields is None else fields
    for name, value in (("store", store), ("fields", fields)):
        if value is None or (isinstance(value, str) and not value):
            raise JobError(f"--{name} is required (or set job.{name} in a --conf file)")
    if isinstance(stats, str) or stats is None:
        stats = (job["stats"] if stats is None else stats).split(",")
    stats = [s.strip() for s in stats if s.strip()]
    try:
        statistics.parse(stats)
    except ValueError as e:
        raise JobError(str(e)) from e
    pixels = job["pixels"] if pixels is None else pixels
    if pixels not in RULES:
        raise JobError(f"pixels '{pixels}': choose among {list(RULES)}")
    min_coverage = float(job["min_coverage"] if min_coverage is None else min_coverage)
    if not 0.0 <= min_coverage <= 1.0:
        raise JobError(
            f"--min-coverage {min_coverage}: give the least covered share of a pixel "
            "between 0 and 1, e.g. 0.5"
        )
    if min_coverage and pixels == "center":
        raise JobError(
            "--min-coverage needs --pixels all-touched or fraction (the center rule "
            "counts a pixel by its centre, not by its covered share)"
        )
    if mode not in writer.MODES:
        raise JobError(f"mode '{mode}': choose among {list(writer.MODES)}")
    rows_without_pixels = rows_without_pixels or job["rows_without_pixels"]
    if rows_without_pixels not in dataset.ROWS_WITHOUT_PIXELS:
        raise JobError(
            f"rows_without_pixels '{rows_without_pixels}': choose among "
            f"{list(dataset.ROWS_WITHOUT_PIXELS)}"
        )
    on_bad_chunk = job["on_bad_chunk"] if on_bad_chunk is None else on_bad_chunk
    if on_bad_chunk not in ("fail", "skip"):
        raise JobError(f"on_bad_chunk '{on_bad_chunk}': choose fail or skip")
    keep = keep_columns_of(job["keep_columns"] if keep_columns is None else keep_columns)
    clash = dataset.clashing(keep or (), stats)
    if clash:
        raise JobError(
            f"--keep-columns: {', '.join(clash)} would clash with the output column(s) "
            "of the same name; rename the input column(s) or leave them out"
        )
    return Options(
        store=str(store),
        fields=fields if not isinstance(fields, os.PathLike) else str(fields),
        layer=layer or job["layer"] or None,
        out=None if out is None else str(out),
        years=list(years or job["years"]) or None,
        master=master,
        stats=stats,
        pixels=pixels,
        min_coverage=min_coverage,
        keep_columns=keep,
        pca_model=None if pca_model is None else str(pca_model),
        pca_sample=int(job["pca_sample"] if pca_sample is None else pca_sample),
        seed=int(job["seed"] if seed is None else seed),
        year_column=year_column,
        skip_missing_years=bool(skip_missing_years),
        mode=mode,
        rows_without_pixels=rows_without_pixels,
        on_bad_chunk=on_bad_chunk,
        s3_region=s3_region or st["region"] or None,
        s3_endpoint=s3_endpoint or st["endpoint"] or None,
        retries=int(st["retries"] if retries is None else retries),
        verbose=bool(verbose),
        settings=d,
    )


def keep_columns_of(given) -> tuple[str, ...] | None:
    """--keep-columns: 'all' -> None, 'none' -> (), 'a,b' or ['a', 'b'] -> ('a', 'b')."""
    parts = given.split(",") if isinstance(given, str) else given
    names = tuple(dict.fromkeys(n.strip() for n in parts if n.strip()))
    if names == ("all",):
        return None
    return () if names in ((), ("none",)) else names
