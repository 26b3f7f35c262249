"""PCA(3) of field means, scaled to [0, 1] per component so the result draws as RGB."""

from __future__ import annotations

import json
from pathlib import Path

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


def apply(model: dict, means) -> np.ndarray:
    """float[n, 3] in [0, 1]: each mean's scores, scaled by the fit sample's range (RGB)."""
    x = np.asarray(means, np.float64)
    center, components = np.asarray(model["center"]), np.asarray(model["components"])
    # band by band rather than a matrix product, whose rounding depends on which rows share the
    # batch: a row's colours are then the same whichever task writes it
    s = np.zeros((len(x), len(components)))
    for band in range(x.shape[1]):
        s += (x[:, band] - center[band])[:, None] * components[:, band]
    lo, hi = np.asarray(model["lo"]), np.asarray(model["hi"])
    return np.clip((s - lo) / (hi - lo), 0.0, 1.0)


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
