"""The PCA stage: the model that colours the field means (udfs/pca_model.py), fitted on the driver
on a sample of them, or the one given (--pca-model, a path or URL) or kept by the output
(--mode add). The writer colours every row with it (udfs/parquet.py).

The sample: each field-year with a valid pixel is drawn with probability
p = min(1, 1.2 * --pca-sample / the run's field-years), by a hash of its feature_id, year and
--seed (udfs/pca_model.py: drawn), where its statistics are made (the reduce stage for fields
inside a chunk, the aggregate stage's output for the others); the drawn means, ordered by
feature_id and year, are cut to --pca-sample by a generator seeded with --seed. So a run's
sample, and its colours, depend on its fields, years, statistics and seed only, not on how
Spark split the work; with up to --pca-sample / 1.2 field-years every mean is in it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql.pandas.types import from_arrow_schema

from aef_zonal import dataset, filesystem
from aef_zonal.errors import JobError
from aef_zonal.options import Options
from aef_zonal.stages.aggregate import Statistics
from aef_zonal.stages.reduce import Reduced
from aef_zonal.udfs import pca_model as kernel
from aef_zonal.udfs import spark as executor
from aef_zonal.udfs.tasks import SAMPLE

MEANS = pa.schema(
    [("feature_id", pa.int64()), ("year", pa.int32()), ("mean", pa.list_(pa.float64()))]
)


def probability(o: Options, field_years: int, fixed: bool) -> float:
    """The probability with which a field-year's mean is drawn for the fit; 0 when the model is
    given (`fixed`: --pca-model, or the one an output keeps)."""
    if fixed or o.pca_model:
        return 0.0
    return min(1.0, 1.2 * o.pca_sample / max(field_years, 1))


def pca(o: Options, reduced: Reduced, stats: Statistics, previous_model: dict | None, p: float):
    """The model, or None with the reason in the report when too few means to fit one: the
    statistics are still written, with null pca_components."""
    if o.pca_model:
        try:
            text = filesystem.Hadoop(stats.df.sparkSession).read_text(o.pca_model)
            return kernel.loads(text, o.pca_model), {}
        except (filesystem.StorageError, ValueError) as e:
            raise JobError(f"--pca-model: {e}") from e
    if previous_model is not None:  # --mode add: new partitions keep the dataset's colours
        return previous_model, {}
    if stats.with_pixels < 3:  # three components need three points
        return None, {
            "pca": f"not fitted: only {stats.with_pixels} field-year(s) have a valid pixel (3 "
            "needed), so pca_components are null; pass --pca-model with the "
            f"{dataset.MODEL} of a larger run to colour them"
        }
    return fit(reduced, stats, p, o.pca_sample, o.seed), {}


def fit(reduced: Reduced, stats: Statistics, p: float, sample: int, seed: int) -> dict:
    """Fit on the drawn means (the module's docstring says how they are drawn)."""
    merged = (
        stats.df.where("count > 0")
        .select(*MEANS.names)
        .mapInArrow(executor.drawn_partitions(seed, p), from_arrow_schema(MEANS))
    )
    drawn = to_arrow(reduced.of(SAMPLE, MEANS.names).unionByName(merged))
    drawn = drawn.take(pc.sort_indices(drawn, [("feature_id", "ascending"), ("year", "ascending")]))
    means = drawn.column("mean").combine_chunks()
    x = means.flatten().to_numpy().reshape(len(means), -1)
    if len(x) > sample:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), sample, replace=False))]
    if len(x) < 3:  # a sparse draw of a run with pixels: the fit needs three points
        raise JobError(
            f"the PCA fit drew only {len(x)} mean(s); pass a larger --pca-sample or --pca-model"
        )
    return kernel.fit(x, seed)


def to_arrow(df):
    """`df` collected as a pyarrow Table: DataFrame.toArrow (Spark 4), or on Spark 3.5, which
    lacks it, the Arrow batches its toPandas collects."""
    if hasattr(df, "toArrow"):
        return df.toArrow()
    from pyspark.sql.pandas.types import to_arrow_schema

    batches = df._collect_as_arrow()
    return pa.Table.from_batches(batches) if batches else to_arrow_schema(df.schema).empty_table()
