"""A linear probe: can a multinomial logistic regression on `mean` tell a column's classes apart?

The split is by field, so that no field is on both sides: a field's years are alike, and a test
set holding another year of a training field would measure memory, not the embedding. Each field
takes the class of its earliest year read (its stratum); within each class the fields are ordered
by a seeded hash of their id (xxhash64(feature_id, seed), the id itself breaking ties) and the
first round(test_fraction × the class's fields) go to the test side. Every class is so split in
the same proportion (stratified), the same seed gives the same split on any cluster, and all of a
field's rows follow it.

The model is Spark MLlib's LogisticRegression (family multinomial, features standardised,
L2 penalty REG_PARAM on the standardised scale, at most MAX_ITER L-BFGS rounds); the metrics are
read off the test side's confusion matrix.
"""

from __future__ import annotations

import json
import os

from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import StringIndexer
from pyspark.ml.functions import array_to_vector
from pyspark.sql import Window
from pyspark.sql import functions as F

from aef_zonal import filesystem
from aef_zonal.answers import vectors
from aef_zonal.errors import JobError

REG_PARAM = 1e-2
MAX_ITER = 200


def probe(
    out,
    label_column: str = "label",
    *,
    year: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 42,
    to: str | os.PathLike | None = None,
    conf: str | os.PathLike | None = None,
    master: str | None = None,
    verbose: bool = False,
    spark=None,
) -> dict:
    """Train a multinomial logistic regression of `label_column` (label, or an input column the
    run kept with --keep-columns) on `mean` over the output `out`'s field-years with a valid pixel
    and a label (of `year`, or of every year), split by field (seeded, stratified by class), and
    evaluate it on the held-out fields.

    to: also write the result as JSON (a path or URL).

    Returns {"label_column", "years", "classes", "rows", "fields", "accuracy",
    "balanced_accuracy", "baseline", "per_class", "confusion", "left_out", "model", …}: rows and
    fields count each side's; confusion[i][j]
    counts the test rows of classes[i] predicted as classes[j]; baseline is the accuracy of
    always answering the training side's most frequent class.
    """
    if not 0 < test_fraction < 1:
        raise JobError(f"test fraction {test_fraction}: give a number between 0 and 1")
    with vectors.opened(
        out,
        year=year,
        need=[label_column],
        settings=vectors.settings_of(conf),
        spark=spark,
        master=master,
        verbose=verbose,
        urls=[to],
    ) as v:
        labelled = v.rows.where(F.col(label_column).isNotNull()).select(
            "feature_id", "time", F.col(label_column).cast("string").alias("class"), "mean"
        )
        data = labelled.join(split(labelled, test_fraction, seed), "feature_id").persist()
        try:
            result = _fit_and_score(data, label_column, v, test_fraction, seed)
        finally:
            data.unpersist()
        if to is not None:
            filesystem.Hadoop(v.spark).write_text(str(to), json.dumps(result, indent=2))
    return result


def split(rows, test_fraction: float, seed: int):
    """(feature_id, test): each field's side, stratified by its class in its earliest year."""
    fields = rows.groupBy("feature_id").agg(F.min_by("class", "time").alias("stratum"))
    order = Window.partitionBy("stratum").orderBy(
        F.xxhash64("feature_id", F.lit(seed)), "feature_id"
    )
    return fields.select(
        "feature_id",
        (
            F.row_number().over(order)
            <= F.round(F.count("*").over(Window.partitionBy("stratum")) * test_fraction)
        ).alias("test"),
    )


def _fit_and_score(data, label_column: str, v, test_fraction: float, seed: int) -> dict:
    sides = (
        data.groupBy("class", "test")
        .agg(F.count("*").alias("rows"), F.countDistinct("feature_id").alias("fields"))
        .collect()
    )
    classes = sorted({r["class"] for r in sides})
    if len(classes) < 2:
        raise JobError(
            f"column {label_column!r} has one class ({classes[0]!r}) among the field-years with "
            "a valid pixel: a probe needs two or more"
        )
    count = {(r["class"], r.test): (r.rows, r.fields) for r in sides}
    per_side = {
        side: {c: count.get((c, side == "test"), (0, 0)) for c in classes}
        for side in ("train", "test")
    }
    if not any(n for n, _ in per_side["test"].values()):
        raise JobError(
            f"test fraction {test_fraction} leaves no field for the test side: give a larger one"
        )
    if sum(1 for n, _ in per_side["train"].values() if n) < 2:
        raise JobError("the training side holds one class: give a smaller test fraction")

    indexer = StringIndexer(inputCol="class", outputCol="y", stringOrderType="alphabetAsc").fit(
        data
    )
    features = indexer.transform(data).withColumn("features", array_to_vector("mean"))
    model = LogisticRegression(
        featuresCol="features",
        labelCol="y",
        family="multinomial",
        regParam=REG_PARAM,
        maxIter=MAX_ITER,
        standardization=True,
    ).fit(features.where(~F.col("test")))
    predicted = model.transform(features.where(F.col("test")))
    cells = predicted.groupBy("y", "prediction").count().collect()
    n = len(classes)
    confusion = [[0] * n for _ in range(n)]
    for r in cells:
        confusion[int(r.y)][int(r.prediction)] = r["count"]
    return {
        "label_column": label_column,
        "years": v.years,
        "test_fraction": test_fraction,
        "seed": seed,
        "classes": classes,
        **_metrics(classes, confusion, per_side),
        "left_out": {
            "no valid pixel": sum(v.left_out.values()),
            "no label": sum(v.valid.values()) - sum(r.rows for r in sides),
        },
        "model": {
            "family": "multinomial",
            "reg_param": REG_PARAM,
            "standardization": True,
            "iterations": model.summary.totalIterations,
        },
    }


def _metrics(classes: list[str], confusion: list[list[int]], per_side: dict) -> dict:
    """Accuracy, balanced accuracy (mean recall over the classes the test side holds), per-class
    precision, recall and F1 (0 where undefined, as scikit-learn's zero_division=0), and the
    majority baseline, from the confusion matrix (rows: true class, columns: predicted)."""
    n = len(classes)
    total = sum(map(sum, confusion))
    right = sum(confusion[i][i] for i in range(n))
    per_class, recalls = {}, []
    for i, c in enumerate(classes):
        support = sum(confusion[i])
        predicted = sum(confusion[j][i] for j in range(n))
        precision = confusion[i][i] / predicted if predicted else 0.0
        recall = confusion[i][i] / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if support:
            recalls.append(recall)
        per_class[c] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "train_rows": per_side["train"][c][0],
            "test_rows": support,
            "train_fields": per_side["train"][c][1],
            "test_fields": per_side["test"][c][1],
        }
    majority = max(classes, key=lambda c: per_side["train"][c][0])  # the first on a tie
    return {
        "rows": {side: sum(r for r, _ in per_side[side].values()) for side in per_side},
        "fields": {side: sum(f for _, f in per_side[side].values()) for side in per_side},
        "accuracy": right / total,
        "balanced_accuracy": sum(recalls) / len(recalls),
        "baseline": {
            "class": majority,
            "accuracy": per_side["test"][majority][0] / total,
        },
        "per_class": per_class,
        "confusion": confusion,
    }
