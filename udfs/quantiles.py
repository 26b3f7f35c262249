"""Exact quantiles of a field from per-band code histograms.

Dequantisation is monotonic, so the k-th smallest value of a band is the value of the code
where the band's cumulative count passes k. Quantile q is numpy.quantile(values, q,
method="linear"): the order statistics at floor(h) and floor(h) + 1, h = (n - 1) q, linearly
interpolated. Histograms merge by adding counts, so partials of any number of chunks combine
exactly.
"""
from __future__ import annotations

import re

import numpy as np

CODES = 256


def parse(names) -> dict[str, float]:
    """{'p05': 0.05, 'median': 0.5, ...} for the quantile statistics among `names`."""
    out = {}
    for name in names:
        if name == "median":
            out[name] = 0.5
        elif re.fullmatch(r"p\d{1,2}(\.\d+)?|p100", name):
            out[name] = float(name[1:]) / 100
    return out


def dense(keys: np.ndarray, counts: np.ndarray, bands: int) -> np.ndarray:
    """int64[bands, 256] from sparse (band * 256 + code + 128, count) entries, summing repeats."""
    h = np.bincount(np.asarray(keys, np.int64), weights=np.asarray(counts, np.float64),
                    minlength=bands * CODES)
    return h.astype(np.int64).reshape(bands, CODES)


def from_histogram(hist: np.ndarray, qs, table: np.ndarray) -> np.ndarray:
    """float64[len(qs), bands]; NaN where a band has no value. table: value of code index."""
    bands = hist.shape[0]
    cum = np.cumsum(hist, axis=1)
    n = cum[:, -1]
    out = np.full((len(qs), bands), np.nan)
    ok = n > 0
    for i, q in enumerate(qs):
        h = (n - 1) * q
        lo = np.floor(h).astype(np.int64)
        hi = np.minimum(lo + 1, n - 1)
        # code index of the k-th smallest value: first index whose cumulative count exceeds k
        v_lo = table[np.minimum((cum <= lo[:, None]).sum(axis=1), CODES - 1)]
        v_hi = table[np.minimum((cum <= hi[:, None]).sum(axis=1), CODES - 1)]
        t = h - lo
        # numpy's lerp, including its form for t >= 0.5, so results agree to the last bit
        val = np.where(t >= 0.5, v_hi - (v_hi - v_lo) * (1 - t), v_lo + t * (v_hi - v_lo))
        out[i, ok] = val[ok]
    return out
