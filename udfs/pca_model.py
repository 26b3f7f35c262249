"""PCA(3) of field means, scaled to [0, 1] per component so the result draws as RGB."""

from __future__ import annotations

import json
from pathlib import Path

import numba
import numpy as np


def fit(means, seed: int) -> dict:
    # here, not at the top: the workers applying a model never pay scikit-learn's import
    from sklearn.decomposition import PCA

    x = np.asarray(means, np.float64)
    if len(x) < 3:
        raise ValueError(f"need at least 3 fields with valid pixels to fit a PCA, got {len(x)}")
    p = PCA(n_components=3, random_state=seed).fit(x)
    scores = p.transform(x)
    return {
        "center": p.mean_.tolist(),
        "components": p.components_.tolist(),
        "lo": scores.min(axis=0).tolist(),
        "hi": scores.max(axis=0).tolist(),
        "explained_variance_ratio": p.explained_variance_ratio_.tolist(),
        "n_samples": int(len(x)),
    }


def drawn(feature_id: np.ndarray, year: np.ndarray, seed: int, p: float) -> np.ndarray:
    """Whether each field-year is in the fit's sample: drawn with probability `p` by a hash of
    its feature_id, year and the seed (splitmix64), so the same run draws the same field-years
    wherever its tasks ran."""
    if p >= 1:
        return np.ones(len(feature_id), bool)
    z = (
        feature_id.astype(np.int64).view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        + year.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
        + np.uint64(seed % 2**64)
    )
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53 < p


def apply(model: dict, means) -> np.ndarray:
    """float[n, 3] in [0, 1]: each mean's scores, scaled by the fit sample's range (RGB)."""
    s = _scores(
        np.ascontiguousarray(means, np.float64),
        np.asarray(model["center"], np.float64),
        np.asarray(model["components"], np.float64),
    )
    lo, hi = np.asarray(model["lo"]), np.asarray(model["hi"])
    return np.clip((s - lo) / (hi - lo), 0.0, 1.0)


@numba.njit(cache=True, nogil=True)
def _scores(x, center, components):
    """Each row's scores, summed band by band in order rather than by a matrix product, whose
    rounding depends on which rows share the batch: a row's colours are then the same whichever
    task writes it. A loop over rows: numpy's band-by-band passes over a batch cost 1.4 us a row
    in the writer, a quarter of it."""
    n, bands = x.shape
    k = components.shape[0]
    s = np.zeros((n, k))
    for i in range(n):
        for band in range(bands):
            d = x[i, band] - center[band]
            for j in range(k):
                s[i, j] += d * components[j, band]
    return s


def dumps(model: dict) -> str:
    return json.dumps(model, indent=1)


def loads(text: str, where) -> dict:
    model = json.loads(text)
    missing = {"center", "components", "lo", "hi"} - set(model)
    if missing:
        raise ValueError(f"{where} is not an aef-zonal PCA model (missing {sorted(missing)})")
    return model


def load(path) -> dict:
    return loads(Path(path).read_text(), path)
