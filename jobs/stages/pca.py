"""The PCA stage: the model that colours the field means (udfs/pca_model.py), fitted on a sample of
them on the driver, or the one given (--pca-model, a path or URL) or kept by the output
(--mode add)."""

from __future__ import annotations

from aef_zonal import dataset, filesystem
from aef_zonal.errors import JobError
from aef_zonal.options import Options
from aef_zonal.udfs import pca_model as kernel


def pca(o: Options, stats, with_pixels: int, previous_model: dict | None):
    """The model, or None with the reason in the report when too few means to fit one: the
    statistics are still written, with null pca_components."""
    if o.pca_model:
        try:
            text = filesystem.Hadoop(stats.sparkSession).read_text(o.pca_model)
            return kernel.loads(text, o.pca_model), {}
        except (filesystem.StorageError, ValueError) as e:
            raise JobError(f"--pca-model: {e}") from e
    if previous_model is not None:  # --mode add: new partitions keep the dataset's colours
        return previous_model, {}
    if with_pixels < 3:  # three components need three points
        return None, {
            "pca": f"not fitted: only {with_pixels} field-year(s) have a valid pixel (3 "
            "needed), so pca_components are null; pass --pca-model with the "
            f"{dataset.MODEL} of a larger run to colour them"
        }
    return fit(stats, with_pixels, o.pca_sample, o.seed), {}


def fit(stats, total: int, sample: int, seed: int) -> dict:
    """Fit on a random sample of the field-year means with a valid pixel (`total` of them)."""
    frac = min(1.0, 1.2 * sample / total)
    # Arrow, not Rows: a Python object per mean would cost more than the fit; cut to `sample`
    # here rather than by limit(), which scans the partitions in a series of growing jobs
    means = (
        to_arrow(stats.where("count > 0").sample(fraction=frac, seed=seed).select("mean"))
        .column("mean")
        .combine_chunks()
    )
    return kernel.fit(means.flatten().to_numpy().reshape(len(means), -1)[:sample], seed)


def to_arrow(df):
    """`df` collected as a pyarrow Table: DataFrame.toArrow (Spark 4), or on Spark 3.5, which
    lacks it, the Arrow batches its toPandas collects."""
    if hasattr(df, "toArrow"):
        return df.toArrow()
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    batches = df._collect_as_arrow()
    return pa.Table.from_batches(batches) if batches else to_arrow_schema(df.schema).empty_table()
