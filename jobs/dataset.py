"""What a published aef-zonal dataset is, in one place.

    OUT/time=YYYY-01-01/label=…/part-….parquet   the rows, GeoParquet 1.1, Hive-partitioned
    OUT/_without_pixels/part-0.parquet            the field-years without a valid pixel
    OUT/_pca_model.json                           the model that coloured pca_components
    OUT/_run.json, OUT/_runs/…json                the report of the last run, and of every run
    OUT/_SUCCESS                                  the committed run's marker

The writer (writer.py, commit.py, stages/output.py) and the readers (`sql`, `plot`, `map`) use
these names and rules; none spells them again. Readers skip names starting with `_` or `.`.
"""

from __future__ import annotations

import re
import time
import uuid

import pyarrow as pa

from aef_zonal.udfs import schemas, statistics

PARTITION_COLUMNS = ("time", "label")
_BOX = pa.struct([(c, pa.float64()) for c in ("xmin", "ymin", "xmax", "ymax")])
# the columns every output writes whatever the statistics, in order, with their Arrow types
# (None: a statistic's, udfs/statistics.py); the kept input columns follow the geometry, the
# asked statistics hilbert_key, the quantiles label. No kept column may share a name with them
# (label is the partition's).
TYPES = {
    "geometry": pa.binary(),  # WKB
    "source_store": pa.string(),
    "global_x_offset": pa.int64(),
    "global_y_offset": pa.int64(),
    "local_x_offset": pa.int64(),
    "local_y_offset": pa.int64(),
    "path": pa.string(),
    "feature_id": pa.int64(),
    "bbox": _BOX,  # the GeoParquet covering of the geometry
    "mean": None,
    "pca_components": pa.list_(pa.float32()),
    "hilbert_key": pa.int64(),
    "complete": pa.bool_(),
    "reason": pa.string(),
    "time": pa.string(),
    "label": pa.string(),
}
COLUMNS = tuple(TYPES)
NOT_NULL = ("source_store",)
MODEL = "_pca_model.json"
REPORT = "_run.json"
REPORTS = "_runs"
SUCCESS = "_SUCCESS"
# every field-year of the run without a valid pixel (no geometry, outside the store, all nodata,
# smaller than the pixel rule, its chunk skipped), one row each with its reason: beside the data,
# so that every row of the data has its vectors (--rows-without-pixels listed, the default), or
# besides their rows in the data (inline). A plain Parquet table in a folder of its own: readers
# of the data skip folders starting with _ (SedonaDB reads a file at the top level as data).
WITHOUT_PIXELS = "_without_pixels"
WITHOUT_PIXELS_FILE = f"{WITHOUT_PIXELS}/part-0.parquet"
WITHOUT_PIXELS_COLUMNS = ("feature_id", "time", "label", "reason")
ROWS_WITHOUT_PIXELS = ("listed", "inline")
# a dataset whose report does not say (written before the choice existed) has them inline
ROWS_WITHOUT_PIXELS_BEFORE = "inline"
# written by every run under the same name: never deleted as "replaced" by a later run
REWRITTEN = (SUCCESS, REPORT, MODEL, WITHOUT_PIXELS_FILE)
PARTITIONS_TEXT = "time=YYYY-01-01/label=…/*.parquet"

_YEAR_FOLDER = re.compile(r"time=(\d{4})-01-01")


class OutputError(ValueError):
    """An output is not what was asked of it: not an aef-zonal output, without the year, columns
    or model asked for, or not writable as asked (it exists, or holds other statistics). The
    message says what to do: the readers (`sql`, `plot`, `map`) print it and exit 2, the job
    raises it as a JobError."""


def exists(shown: str) -> OutputError:
    """The refusal of an output folder that holds something, for --mode error."""
    return OutputError(
        f"output {shown} already exists; choose another --out, pass --mode overwrite to "
        "replace it or --mode add to replace only this run's partitions"
    )


def columns(stats: list[str]) -> set[str]:
    """The columns an output of these statistics writes besides the kept input columns (each
    statistic's, udfs/statistics.py)."""
    return set(COLUMNS) | {c for s in statistics.parse(stats) for c in s.columns}


def schema(stats: list[str], kept: list[pa.Field], weighted: bool) -> pa.Schema:
    """The published rows' columns in order with their types: the fixed columns, the kept input
    columns (`kept`, as read), the statistics' (udfs/schemas.py). The files hold all but the
    partition columns."""
    records = statistics.parse(stats)
    own = {f.name: f for f in schemas.statistic_fields(records, weighted)}
    asked = [own[c] for s in records if not s.always and s.level is None for c in s.columns]
    quantiles = [own[s.name] for s in records if s.level is not None]
    fields = []
    for name, typ in TYPES.items():
        fields.append(own[name] if typ is None else pa.field(name, typ, name not in NOT_NULL))
        fields += {"geometry": kept, "hilbert_key": asked, "label": quantiles}.get(name, [])
    return pa.schema(fields)


def clashing(kept, stats: list[str]) -> list[str]:
    """The kept input columns that would share a name with an output column (label is the
    partition's: kept as it is)."""
    return sorted((set(kept) - {"label"}) & columns(stats))


def without_pixels_schema():
    """The Arrow schema of WITHOUT_PIXELS: `time` and `label` as pyarrow reads the partitions."""
    import pyarrow as pa

    return pa.schema(
        [(n, pa.int64() if n == "feature_id" else pa.string()) for n in WITHOUT_PIXELS_COLUMNS]
    )


def merge_without_pixels(old, new, replaced: set[tuple[str, str]]):
    """A --mode add run's WITHOUT_PIXELS: the old rows of the (time, label) partitions it does
    not replace, and its own."""
    import pyarrow as pa

    keep = [
        (t, lab) not in replaced
        for t, lab in zip(old["time"].to_pylist(), old["label"].to_pylist())
    ]
    return sort_without_pixels(pa.concat_tables([old.filter(pa.array(keep)).cast(new.schema), new]))


def sort_without_pixels(table):
    """Rows in the order every run writes them: by partition, then id."""
    return table.sort_by(
        [("time", "ascending"), ("label", "ascending"), ("feature_id", "ascending")]
    )


def time_value(year: int) -> str:
    """The `time` partition value of a year (sql/50_output.sql writes the same)."""
    return f"{year}-01-01"


def year_folder(year: int) -> str:
    """A year's folder below the output."""
    return f"time={time_value(year)}"


def partition(time_: str, label: str) -> str:
    """A (time, label) partition's name, as the report lists it."""
    return f"time={time_}/label={label}"


# what Spark escapes in a partition folder's value (ExternalCatalogUtils.escapePathName), so that
# a label holding `/`, `=`, `%` or a control character stays one folder and reads back unchanged
_ESCAPED = frozenset([*map(chr, range(1, 32)), *"\"#%'*/:=?\\\x7f{[]^"])
# Spark's folder for a null or empty value, which readers take as null
_EMPTY = "__HIVE_DEFAULT_PARTITION__"


def _escape(value: str) -> str:
    return "".join(f"%{ord(c):02X}" if c in _ESCAPED else c for c in value) or _EMPTY


def folder(time_: str, label: str) -> str:
    """A (time, label) partition's folder below the output, escaped as Spark escapes it."""
    return f"time={_escape(time_)}/label={_escape(label)}"


def archived_report() -> str:
    """Where this run's report is kept beside the others (`_runs/`), by time and a random tag."""
    return f"{REPORTS}/{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:4]}.json"


def partition_values(folder: str) -> tuple[str, str]:
    """(time, label) of a partition folder `time=…/label=…` as Spark escapes it (`a%2Fb`)."""
    from urllib.parse import unquote

    t, label = folder.split("/")
    return unquote(t.removeprefix("time=")), unquote(label.removeprefix("label="))


def data_partition(rel: str) -> str | None:
    """`time=…/label=…` of a data file's path relative to the output, None for anything else
    (reports, the model, checksum and hidden files)."""
    parts = rel.split("/")
    if len(parts) == 3 and parts[0].startswith("time=") and not parts[2].startswith((".", "_")):
        return "/".join(parts[:-1])
    return None


def data_year(rel: str) -> int | None:
    """The year of a Parquet data file's path relative to the output, None for anything else."""
    parts = rel.split("/")
    if (
        len(parts) == 3
        and (m := _YEAR_FOLDER.fullmatch(parts[0]))
        and parts[1].startswith("label=")
        and parts[2].endswith(".parquet")
    ):
        return int(m.group(1))
    return None
