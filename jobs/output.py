"""Writing the dataset: GeoParquet partitions into a hidden staging folder, then committed.

A reader of --out never sees a partial partition: every partition folder appears by one rename.
"""
from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

MODES = ("error", "overwrite", "add")


class OutputError(ValueError):
    """--out cannot be written as asked; the message says what to do."""


def check(out: Path, mode: str, stats: list[str], pixels: str) -> dict | None:
    """Refuse what would lose or mix data; for --mode add, return the existing run report."""
    if not out.exists():
        return None
    if mode == "error":
        raise OutputError(f"output {out} already exists; choose another --out, pass --mode overwrite "
                          "to replace it or --mode add to replace only this run's partitions")
    if mode == "overwrite":
        return None
    report = out / "_run.json"
    if not report.exists():
        raise OutputError(f"--mode add: {out} is not an aef-zonal output (no _run.json); "
                          "choose another --out")
    previous = json.loads(report.read_text())
    if (previous.get("stats"), previous.get("pixels")) != (stats, pixels):
        raise OutputError(f"--mode add: {out} holds --stats {','.join(previous.get('stats', []))} "
                          f"--pixels {previous.get('pixels')}; add partitions with the same options "
                          "so that every partition has the same columns")
    return previous


def staging_for(out: Path) -> Path:
    """A fresh hidden folder next to --out; leftovers of interrupted runs are removed first."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for old in [*out.parent.glob(f".{out.name}.staging-*"), *out.parent.glob(f".{out.name}.old-*")]:
        print(f"[aef-zonal] removing {old}, left by an interrupted run", flush=True)
        shutil.rmtree(old, ignore_errors=True)
    return out.parent / f".{out.name}.staging-{uuid.uuid4().hex[:8]}"


def write(df, staging: Path, crs_projjson: str):
    (df.repartition("time", "label")
       .sortWithinPartitions("time", "label", "hilbert_key")
       .write.format("geoparquet")
       .option("geoparquet.version", "1.1.0")
       .option("geoparquet.covering.geometry", "bbox")
       .option("geoparquet.crs", crs_projjson)
       .partitionBy("time", "label")
       .save(str(staging)))
    drop_void_bbox(staging)


def drop_void_bbox(staging: Path):
    """Remove the file bbox Sedona writes as [0, 0, -1, -1] for a file whose geometries are all
    empty: no extent to state, and an inverted box fails GeoParquet's bbox rule (bbox is optional).
    Only such files (a partition of empty geometries) are rewritten; every other keeps its bytes."""
    import pyarrow.parquet as pq

    for f in staging.glob("time=*/label=*/*.parquet"):
        meta = pq.read_schema(f).metadata
        geo = json.loads(meta[b"geo"])
        col = geo["columns"][geo["primary_column"]]
        box = col.get("bbox")
        if box and (box[0] > box[2] or box[1] > box[3]):
            del col["bbox"]
            table = pq.read_table(f)
            pq.write_table(table.replace_schema_metadata({**meta, b"geo": json.dumps(geo).encode()}), f)
            # Hadoop's checksum of the old bytes would fail the next read of the file
            (f.parent / f".{f.name}.crc").unlink(missing_ok=True)


def _swap(new: Path, dest: Path):
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        dest.rename(old)
        new.rename(dest)
        shutil.rmtree(old)
    else:
        new.rename(dest)


def commit(staging: Path, out: Path, mode: str):
    """Move the staged dataset into place: whole (new, overwrite) or partition by partition (add)."""
    if mode != "add" or not out.exists():
        _swap(staging, out)
        return
    for part in sorted(staging.glob("time=*/label=*")):
        dest = out / part.relative_to(staging)
        dest.parent.mkdir(exist_ok=True)
        _swap(part, dest)
    (out / "_runs").mkdir(exist_ok=True)
    for report in (staging / "_runs").iterdir():  # every run's report is kept
        shutil.copy(report, out / "_runs" / report.name)
    shutil.copy(staging / "_run.json", out / "_run.json")
    shutil.rmtree(staging)


def save_report(report: dict, staging: Path):
    """_run.json (this run) and _runs/<time>.json (kept across --mode add runs)."""
    text = json.dumps(report, indent=2)
    (staging / "_run.json").write_text(text)
    (staging / "_runs").mkdir()
    (staging / "_runs" / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:4]}.json").write_text(text)
