"""Groups of fields: k-means (Spark MLlib, seeded) on the unit-length means, written as a dataset.

The field-years with a valid pixel are scaled to unit length (MLlib's Normalizer), so that two
fields group by the direction of their embedding, as cosine similarity compares them; k-means
then runs on those vectors with Euclidean distance (k-means|| initialisation from the seed, at most
MAX_ITER rounds, until no centre moves more than TOL). Every row of the years read is written
again with a `cluster` column (null where the row has no valid pixel) by the job's own writer
(jobs/writer.py's Output): the same time=/label= layout, GeoParquet 1.1 with the output's CRS and
bbox covering, committed as a run's output is, with the output's `_pca_model.json` beside it and
a `_run.json` that says how the clusters were made. `aef-zonal map DIR --color cluster` draws it.
"""

from __future__ import annotations

import json
import os
import posixpath

from pyspark.ml.clustering import KMeans
from pyspark.ml.feature import Normalizer
from pyspark.ml.functions import array_to_vector
from pyspark.sql import functions as F

from aef_zonal import dataset, filesystem, redaction, writer
from aef_zonal.answers import vectors
from aef_zonal.errors import JobError
from aef_zonal.report import versions
from aef_zonal.stages.output import staged

MAX_ITER = 100
# MLlib's default: on the benchmark's 74,327 field-years (k 5) 1e-6 ends no lower (1e-8 relative)
TOL = 1e-4
MODES = ("error", "overwrite")


def cluster(
    out,
    k: int,
    *,
    to: str | os.PathLike,
    year: int | None = None,
    seed: int = 42,
    by: str | None = None,
    mode: str = "error",
    conf: str | os.PathLike | None = None,
    master: str | None = None,
    verbose: bool = False,
    spark=None,
) -> dict:
    """k-means with k clusters on the unit-length `mean` of the output `out`'s field-years with a
    valid pixel (of `year`, or of every year: a field's years may then fall in different
    clusters), written to `to` (a folder: local, HDFS, s3://) as the output's rows with a
    `cluster` column.

    by: a column (label or a kept input column) whose values are counted in each cluster.
    mode: `error` refuses an existing `to`, `overwrite` replaces it.

    Returns {"k", "seed", "years", "clustered", "left_out", "inertia", "sizes", "centres",
    "composition", "to", "rows"}: inertia is the sum of squared distances of the unit vectors to
    their centre; sizes and composition are keyed by cluster number (0 … k-1).
    """
    if k < 2:
        raise JobError(f"k {k}: give at least 2 clusters")
    if mode not in MODES:
        raise JobError(f"mode '{mode}': choose among {list(MODES)}")
    to = str(to)
    if _inside(to, str(out)):
        raise JobError(f"--to {to} is inside the output {out}: choose a folder outside it")
    settings = vectors.settings_of(conf)
    with vectors.opened(
        out,
        year=year,
        need=[by] if by else [],
        settings=settings,
        spark=spark,
        master=master,
        verbose=verbose,
        urls=[to],
    ) as v:
        clustered = sum(v.valid.values())
        if k > clustered:
            raise JobError(f"k {k} is larger than the {clustered:,} field-years with a valid pixel")
        secrets = redaction.secret_values(settings)
        target = writer.Output(v.spark, to, mode, secrets)
        source = filesystem.Hadoop(v.spark, secrets)
        previous = _source_report(source, v.out)
        try:
            target.check(previous.get("stats", []), previous.get("pixels"))
        except dataset.OutputError as e:
            raise JobError(str(e)) from None

        unit = Normalizer(inputCol="vector", outputCol="unit", p=2.0)
        with_unit = unit.transform(v.rows.withColumn("vector", array_to_vector("mean")))
        kmeans = KMeans(
            featuresCol="unit", predictionCol="cluster", k=k, seed=seed, maxIter=MAX_ITER, tol=TOL
        )
        model = kmeans.fit(with_unit.select("unit"))
        labelled = model.transform(with_unit).drop("vector", "unit")
        rows = labelled.unionByName(
            v.every.where(F.col("mean").isNull()).withColumn("cluster", F.lit(None).cast("int"))
        )
        columns = [c for c in v.every.columns if c not in dataset.PARTITION_COLUMNS]
        rows = rows.select(*columns, "cluster", F.col("time").cast("string").alias("time"), "label")
        summary = {
            "k": k,
            "seed": seed,
            "years": v.years,
            "clustered": clustered,
            "left_out": sum(v.left_out.values()),
            "inertia": model.summary.trainingCost,
            "iterations": model.summary.numIter,
            "sizes": dict(enumerate(model.summary.clusterSizes)),
            "centres": [c.tolist() for c in model.clusterCenters()],
        }
        with staged(target):
            target.write_frame(rows, vectors.geo_crs(v))
            if source.exists(filesystem.join(v.out, dataset.MODEL)):
                target.save_text(
                    dataset.MODEL, source.read_text(filesystem.join(v.out, dataset.MODEL))
                )
            written = target.written()
            if by:
                counts = written.groupBy("cluster", by).count().collect()
                summary["composition"] = {
                    c: {r[by]: r["count"] for r in counts if r.cluster == c} for c in range(k)
                }
            summary["rows"] = written.count()
            target.commit(
                {
                    "answer": "cluster",
                    "source": redaction.redact(v.out, secrets),
                    **summary,
                    "by": by,
                    # the columns the rows hold besides cluster, as the source's report says
                    "stats": previous.get("stats"),
                    "pixels": previous.get("pixels"),
                    "versions": versions(),
                }
            )
    return summary | {"by": by, "to": redaction.redact(to, secrets)}


def _inside(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or below it (local paths made absolute, URLs as written)."""
    if not filesystem.is_url(path) and not filesystem.is_url(folder):
        path, folder = os.path.abspath(path), os.path.abspath(folder)
    path, folder = posixpath.normpath(path), posixpath.normpath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _source_report(fs: filesystem.Hadoop, out: str) -> dict:
    """The output's _run.json (an output written by other means may have none)."""
    report = filesystem.join(out, dataset.REPORT)
    return json.loads(fs.read_text(report)) if fs.exists(report) else {}
