"""Exact quantiles of a field from per-band code histograms.

Dequantisation is monotonic, so the k-th smallest value of a band is the value of the code
where the band's cumulative count passes k. Quantile q is numpy.quantile(values, q,
method="linear"): the order statistics at floor(h) and floor(h) + 1, h = (n - 1) q, linearly
interpolated. Histograms merge by adding counts, so partials of any number of chunks combine
exactly.

With coverage-weighted pixels the histograms hold summed weights, and quantile q is
exactextract's weighted quantile (its WeightedQuantiles, over the distinct values of the field
with their summed coverage, which is all it keeps too): for the n distinct values x_i in
ascending order with weights w_i and cumulative weights W_i, s_0 = 0 and
s_i = i w_i + (n - 1) W_(i-1); with h = q (n - 1) W_n, the value is x_l + (h - s_l)(x_r - x_l)/(s_r - s_l)
for the first r with s_r > h and l = r - 1 (x_(n-1) when there is no such r).
"""

from __future__ import annotations

import numpy as np

CODES = 256


def dense(keys: np.ndarray, counts: np.ndarray, bands: int, weighted: bool = False) -> np.ndarray:
    """int64[bands, 256] from sparse (band * 256 + code + 128, count) entries, summing repeats
    (float64 summed weights when `weighted`)."""
    h = np.bincount(
        np.asarray(keys, np.int64), weights=np.asarray(counts, np.float64), minlength=bands * CODES
    )
    return (h if weighted else h.astype(np.int64)).reshape(bands, CODES)


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


def from_weighted_histogram(hist: np.ndarray, qs, table: np.ndarray) -> np.ndarray:
    """float64[len(qs), bands]: exactextract's weighted quantiles (module docstring) from summed
    weights per code; NaN where a band has no weight. table: value of code index."""
    present = hist > 0
    n = present.sum(axis=1)
    # a code without weight adds exactly 0, so W_(i-1) is the running sum up to the code before
    cum = np.cumsum(hist, axis=1)
    before = np.concatenate([np.zeros((len(hist), 1)), cum[:, :-1]], axis=1)
    rank = np.cumsum(present, axis=1) - 1
    s = rank * hist + (n[:, None] - 1.0) * before
    sn = cum[:, -1] * (n - 1.0)
    codes = np.arange(CODES)
    out = np.full((len(qs), len(hist)), np.nan)
    ok = n > 0
    for i, q in enumerate(qs):
        h = q * sn
        above = present & (s > h[:, None])
        has_right = above.any(axis=1)
        right = np.where(has_right, np.argmax(above, axis=1), 0)
        # s ascends over the codes present: the one before `right` is the last with s <= h
        left = np.where(present & ~above, codes, -1).max(axis=1)
        b = np.arange(len(hist))
        left = np.maximum(left, 0)
        xl, xr = table[left], table[right]
        sl, sr = s[b, left], s[b, right]
        with np.errstate(divide="ignore", invalid="ignore"):
            val = np.where(has_right, xl + (h - sl) * (xr - xl) / (sr - sl), xl)
        out[i, ok] = val[ok]
    return out
