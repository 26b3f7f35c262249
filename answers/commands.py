"""`aef-zonal similar`, `cluster` and `probe`: their options, the API call, what is printed.

Each parses its options, calls the function of the same name (similar.py, cluster.py, probe.py)
and prints the Python values it returns; bad input is one `aef-zonal NAME: error: …` line and
exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from aef_zonal import config
from aef_zonal.errors import JobError


def _parser(name: str, description: str, example: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"aef-zonal {name}", description=description, epilog=f"example: {example}"
    )
    p.add_argument("out", help="output folder of `aef-zonal run` (a path or a URL: s3://, hdfs://)")
    p.add_argument("--year", type=int, help="this year only (default: every year of OUT)")
    p.add_argument("--master", help="Spark master (default: the settings' spark.master)")
    p.add_argument("-v", "--verbose", action="store_true", help="show Spark's own logging")
    return p


def _common(args) -> dict:
    return {
        "year": args.year,
        "conf": args.conf,
        "master": args.master,
        "verbose": args.verbose,
    }


def _answer(name: str, call) -> int:
    try:
        call()
    except JobError as e:
        print(f"aef-zonal {name}: error: {e}", file=sys.stderr)
        return 2
    return 0


def _vector(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("give numbers separated by commas") from None


def similar_main(argv=None) -> int:
    p = _parser(
        "similar",
        "The k field-years whose mean is most similar by cosine (exact, every row compared) to a "
        "field's mean (the field itself left out) or to a given vector, with their similarity "
        "and label.",
        "aef-zonal similar out/result --like 1049 --year 2024 --k 10",
    )
    asked = p.add_mutually_exclusive_group(required=True)
    asked.add_argument("--like", type=int, metavar="FEATURE_ID", help="the field to compare with")
    asked.add_argument(
        "--vector", type=_vector, metavar="X,X,…", help="a mean to compare with (64 numbers)"
    )
    p.add_argument("--k", type=int, default=10, help="how many (default %(default)s)")
    p.add_argument(
        "--each-year",
        action="store_true",
        help="the k most similar in each year, each year with the field's own mean of that year",
    )
    p.add_argument(
        "--to", metavar="FILE.parquet", help="also write the rows with their geometry (GeoParquet)"
    )
    args = config.parse_with_settings(p, argv)
    from aef_zonal.answers.similar import similar

    def call():
        r = similar(
            args.out,
            args.like,
            vector=args.vector,
            k=args.k,
            each_year=args.each_year,
            to=args.to,
            **_common(args),
        )
        print(similar_text(r))
        if args.to:
            print(f"[aef-zonal] wrote {len(r['rows'])} rows to {args.to}")

    return _answer("similar", call)


def similar_text(r: dict) -> str:
    q = r["query"]
    what = (
        "a given vector"
        if "vector" in q
        else f"field {q['feature_id']}'s mean"
        + (" of each year" if q["year"] is None else f" of {q['year']}")
    )
    head = (
        f"[aef-zonal] the {r['k']} field-years{' of each year' if r['each_year'] else ''} most "
        f"similar to {what} (cosine, exact): {r['compared']:,} compared in "
        f"{_years(r['years'])}, {r['left_out']:,} without a valid pixel left out"
    )
    if r["skipped_years"]:
        head += f"; no valid pixel of the field in {', '.join(map(str, r['skipped_years']))}"
    return head + "\n" + r["rows"].to_string(index=False, float_format=lambda x: f"{x:.6f}")


def cluster_main(argv=None) -> int:
    p = _parser(
        "cluster",
        "k-means (Spark MLlib, seeded) on the unit-length means of the field-years with a valid "
        "pixel; writes the output's rows with a `cluster` column to DIR (the same layout, "
        "GeoParquet; `aef-zonal map DIR --color cluster` draws it) and prints each cluster's "
        "size and, with --by, its composition.",
        "aef-zonal cluster out/result --k 4 --year 2025 --by label --to out/clusters",
    )
    p.add_argument("--k", type=int, required=True, help="number of clusters")
    p.add_argument("--to", metavar="DIR", required=True, help="folder to write (path or URL)")
    p.add_argument("--seed", type=int, default=42, help="k-means seed (default %(default)s)")
    p.add_argument("--by", metavar="COLUMN", help="count this column's values in each cluster")
    p.add_argument(
        "--mode",
        choices=("error", "overwrite"),
        default="error",
        help="an existing DIR: refuse (default) or replace it",
    )
    args = config.parse_with_settings(p, argv)
    from aef_zonal.answers.cluster import cluster

    def call():
        r = cluster(
            args.out,
            args.k,
            to=args.to,
            seed=args.seed,
            by=args.by,
            mode=args.mode,
            **_common(args),
        )
        print(cluster_text(r))

    return _answer("cluster", call)


def cluster_text(r: dict) -> str:
    import pandas as pd

    lines = [
        f"[aef-zonal] k-means, k {r['k']}, seed {r['seed']}: {r['clustered']:,} field-years of "
        f"{_years(r['years'])} (unit-length means; {r['left_out']:,} without a valid pixel left "
        f"out), inertia {r['inertia']:.2f} after {r['iterations']} rounds"
    ]
    table = pd.DataFrame({"cluster": list(r["sizes"]), "field-years": list(r["sizes"].values())})
    if r.get("composition"):
        counts = pd.DataFrame.from_dict(r["composition"], orient="index").fillna(0).astype(int)
        table = table.join(counts[sorted(counts.columns, key=str)], on="cluster")
    lines.append(table.to_string(index=False))
    lines.append(
        f"[aef-zonal] wrote {r['rows']:,} rows to {r['to']} "
        f"(aef-zonal map {r['to']} --color cluster draws them)"
    )
    return "\n".join(lines)


def probe_main(argv=None) -> int:
    p = _parser(
        "probe",
        "A linear probe: a multinomial logistic regression (Spark MLlib) of a column's classes "
        "on `mean`, trained and tested on a seeded, stratified split by field (a field's years "
        "never on both sides); prints and writes accuracy, balanced accuracy, per-class "
        "precision/recall/F1, the confusion matrix and the majority-class baseline.",
        "aef-zonal probe out/result --label-column label --year 2025 --to out/probe.json",
    )
    p.add_argument(
        "--label-column",
        default="label",
        metavar="COLUMN",
        help="the classes: label or a column kept with `aef-zonal run --keep-columns` "
        "(default %(default)s)",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share of each class's fields held out (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=42, help="split seed (default %(default)s)")
    p.add_argument("--to", metavar="FILE.json", help="also write the result as JSON (path or URL)")
    args = config.parse_with_settings(p, argv)
    from aef_zonal.answers.probe import probe

    def call():
        r = probe(
            args.out,
            args.label_column,
            test_fraction=args.test_fraction,
            seed=args.seed,
            to=args.to,
            **_common(args),
        )
        print(probe_text(r))
        if args.to:
            print(f"[aef-zonal] wrote {args.to}")

    return _answer("probe", call)


def probe_text(r: dict) -> str:
    import pandas as pd

    left = r["left_out"]
    lines = [
        f"[aef-zonal] probe of {r['label_column']} on mean, {_years(r['years'])}: multinomial "
        f"logistic regression (MLlib), split by field (seed {r['seed']}, test fraction "
        f"{r['test_fraction']})",
        f"  train {r['rows']['train']:,} rows ({r['fields']['train']:,} fields), test "
        f"{r['rows']['test']:,} rows ({r['fields']['test']:,} fields); left out: "
        f"{left['no valid pixel']:,} without a valid pixel, {left['no label']:,} without a label",
        f"accuracy {r['accuracy']:.3f}   balanced accuracy {r['balanced_accuracy']:.3f}   "
        f"majority baseline {r['baseline']['accuracy']:.3f} ({r['baseline']['class']})",
    ]
    per_class = pd.DataFrame.from_dict(r["per_class"], orient="index")
    per_class = per_class[["train_rows", "test_rows", "precision", "recall", "f1"]]
    lines.append(per_class.to_string(float_format=lambda x: f"{x:.3f}"))
    lines.append("confusion (rows: true class, columns: predicted)")
    lines.append(pd.DataFrame(r["confusion"], index=r["classes"], columns=r["classes"]).to_string())
    return "\n".join(lines)


def _years(years: list[int]) -> str:
    return str(years[0]) if len(years) == 1 else f"{years[0]}–{years[-1]}"
