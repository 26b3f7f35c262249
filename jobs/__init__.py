"""aef-zonal: per-field statistics of the AlphaEarth Foundations embeddings mosaic on Spark +
Sedona.

    import aef_zonal
    run = aef_zonal.zonal_stats(fields, store="s3://…/aef-mosaic/", years=[2024, 2025],
                                stats=["count", "mean", "std"])
    run.df                      # the output rows, a Spark DataFrame
    run.write("s3://bucket/out")  # the committed GeoParquet dataset, as `aef-zonal run` writes it
    aef_zonal.similar("s3://bucket/out", like=1049, k=10)   # what the output answers
    aef_zonal.cluster("s3://bucket/out", k=8, to="s3://bucket/clusters")
    aef_zonal.probe("s3://bucket/out", label_column="crop")

The package's parts: the driver (this package: options, session, stages, output), the
executor side (`aef_zonal.udfs`), the stages' SQL (`aef_zonal.sql`) and the defaults
(`aef_zonal.conf`); beside the job, what its output answers (`aef_zonal.answers`), the output's
viewers (`aef_zonal.viewers`) and the built-in sample (`aef_zonal.demo`).
"""

from __future__ import annotations

import importlib

__all__ = ["zonal_stats", "ZonalStats", "spark_session", "JobError", "similar", "cluster", "probe"]


def __getattr__(name: str):
    # the API loads on first use: Spark's Python workers import aef_zonal.udfs, never the driver
    if name in ("zonal_stats", "ZonalStats", "spark_session"):
        from aef_zonal import run

        return getattr(run, name)
    if name in ("similar", "cluster", "probe"):
        module = importlib.import_module(f"aef_zonal.answers.{name}")
        return getattr(module, name)
    if name == "JobError":
        from aef_zonal.errors import JobError

        return JobError
    raise AttributeError(f"module 'aef_zonal' has no attribute {name!r}")
