"""The PCA stage: the model that colours the field means (udfs/pca.py), fitted on a sample of
them on the driver, or the one given (--pca-model) or kept by the output (--mode add)."""
from __future__ import annotations

from jobs.options import JobError, Options
from udfs import pca as kernel


def pca(o: Options, stats, with_pixels: int, previous_model):
    if o.pca_model:
        return kernel.load(o.pca_model), {}
    if previous_model is not None:  # --mode add: new partitions keep the dataset's colours
        return kernel.load(previous_model), {}
    return fit(stats, with_pixels, o.pca_sample, o.seed), {}


def fit(stats, total: int, sample: int, seed: int) -> dict:
    """Fit on a random sample of the field-year means with a valid pixel (`total` of them)."""
    if total < 3:  # three components need three points
        raise JobError(f"only {total} field-year(s) have a valid pixel: too few to fit the PCA "
                       "(3 needed); pass --pca-model with the _pca_model.json of a larger run")
    frac = min(1.0, 1.2 * sample / total)
    # Arrow, not Rows: a Python object per mean would cost more than the fit
    means = (stats.where("count > 0").sample(fraction=frac, seed=seed).select("mean")
             .limit(sample).toArrow().column("mean").combine_chunks())
    return kernel.fit(means.flatten().to_numpy().reshape(len(means), -1), seed)
