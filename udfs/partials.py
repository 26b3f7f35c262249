"""One chunk + its fields -> per-field partial statistics. The hot loop of the job.

A pixel becomes a statistic here. `pixels.members` gives, for the chunk's fields, runs of
pixels (row, col_start, col_stop, field); every valid pixel of a run adds its 64 codes to the
field's sums. Codes q map to integers u (u = sign(q) q^2 for signed-square stores, u = q for
linear ones) with value = a * u + b (see quant.Quantisation), so the partials are exact
integers: no float rounding however many pixels or chunks are merged.

Hand-written (numba) because it is the product's core and its cost sits beside zstd decode:
one pass per band over the runs in memory order, no per-field or per-pixel Python, no
temporary array of the chunk's size. Unsigned indices let LLVM vectorise the inner loop
(numba's negative-index wrap check otherwise blocks it).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

_BIG = np.int64(1) << 40


class Partials(NamedTuple):
    count: np.ndarray  # int64[F]    valid pixels per field (float64: summed weights)
    inside: np.ndarray  # int64[F]    member pixels, valid or not (float64: summed weights)
    s1: np.ndarray  # int64[F, B] sum of u (float64: weighted)
    s2: np.ndarray  # int64[F, B] sum of u * u (float64: weighted)
    umin: np.ndarray  # int64[F, B] smallest u (+2^40 where count == 0; float stores: value, inf)
    umax: np.ndarray  # int64[F, B] largest u (-2^40 where count == 0; float stores: value, -inf)
    hist: (
        np.ndarray | None
    )  # int32[F, B, 256] valid pixels per code (index code + 128; float64: weights)


@numba.njit(cache=True, nogil=True)
def valid_pixels(data, nodata):
    """uint8[pixels]: 1 where no band holds the nodata code."""
    bands, npix = data.shape
    valid = np.ones(npix, np.uint8)
    for b in range(bands):
        row = data[b]
        for p in range(np.uint64(npix)):
            valid[p] &= row[p] != nodata
    return valid


@numba.njit(cache=True, nogil=True)
def _reduce(data, width, runs, nfields, valid, square, extremes, histograms):
    bands = data.shape[0]
    count = np.zeros(nfields, np.int64)
    inside = np.zeros(nfields, np.int64)
    s1 = np.zeros((bands, nfields), np.int64)
    s2 = np.zeros((bands, nfields), np.int64)
    umin = np.full((bands, nfields), _BIG, np.int64)
    umax = np.full((bands, nfields), -_BIG, np.int64)
    hist = np.zeros((nfields if histograms else 0, bands, 256), np.int32)
    nruns = runs.shape[0]
    whole = np.zeros(nruns, np.bool_)  # every pixel of the run valid
    for k in range(nruns):
        base = np.uint64(runs[k, 0] * width)
        n = runs[k, 2] - runs[k, 1]
        inside[runs[k, 3]] += n
        v = np.int64(0)
        for c in range(np.uint64(runs[k, 1]), np.uint64(runs[k, 2])):
            v += valid[base + c]
        count[runs[k, 3]] += v
        whole[k] = v == n
    for b in range(bands):
        row = data[b]
        for k in range(nruns):
            base = np.uint64(runs[k, 0] * width)
            f = runs[k, 3]
            r1 = np.int64(0)
            r2 = np.int64(0)
            # most runs hold no nodata pixel: their loop skips the validity mask (a fifth of
            # the kernel's time on the benchmark's chunks, bench/kernel.py)
            if whole[k]:
                for c in range(np.uint64(runs[k, 1]), np.uint64(runs[k, 2])):
                    q = np.int32(row[base + c])
                    u = q * abs(q) if square else q
                    r1 += u
                    r2 += np.int64(u * u)
            else:
                for c in range(np.uint64(runs[k, 1]), np.uint64(runs[k, 2])):
                    # invalid pixels become code 0, which adds nothing to either sum
                    q = np.int32(row[base + c]) * np.int32(valid[base + c])
                    u = q * abs(q) if square else q
                    r1 += u
                    r2 += np.int64(u * u)
            s1[b, f] += r1
            s2[b, f] += r2
            if extremes:
                mn, mx = umin[b, f], umax[b, f]
                for c in range(np.uint64(runs[k, 1]), np.uint64(runs[k, 2])):
                    q = np.int32(row[base + c])
                    u = q * abs(q) if square else q
                    ok = valid[base + c] != 0
                    mn = min(mn, u if ok else _BIG)
                    mx = max(mx, u if ok else -_BIG)
                umin[b, f], umax[b, f] = mn, mx
            if histograms:
                h = hist[f, b]
                for c in range(np.uint64(runs[k, 1]), np.uint64(runs[k, 2])):
                    h[np.int64(row[base + c]) + 128] += valid[base + c]
    return count, inside, s1.T.copy(), s2.T.copy(), umin.T.copy(), umax.T.copy(), hist


@numba.njit(cache=True, nogil=True)
def _weighted_counts(pix, fld, weight, nfields, valid):
    """Summed weights per field of its valid pixels (count) and of all its pixels (inside)."""
    count = np.zeros(nfields)
    inside = np.zeros(nfields)
    for k in range(pix.shape[0]):
        inside[fld[k]] += weight[k]
        count[fld[k]] += weight[k] * valid[pix[k]]
    return count, inside


@numba.njit(cache=True, nogil=True)
def _reduce_weighted(data, pix, fld, weight, nfields, valid, square):
    bands = data.shape[0]
    count, inside = _weighted_counts(pix, fld, weight, nfields, valid)
    s1 = np.zeros((bands, nfields))
    s2 = np.zeros((bands, nfields))
    umin = np.full((bands, nfields), _BIG, np.int64)
    umax = np.full((bands, nfields), -_BIG, np.int64)
    for b in range(bands):
        row = data[b]
        for k in range(pix.shape[0]):
            p = pix[k]
            if valid[p] == 0:
                continue
            f = fld[k]
            q = np.int64(row[p])
            u = q * abs(q) if square else q
            s1[b, f] += weight[k] * u
            s2[b, f] += weight[k] * (u * u)
            umin[b, f] = min(umin[b, f], u)
            umax[b, f] = max(umax[b, f], u)
    return count, inside, s1.T.copy(), s2.T.copy(), umin.T.copy(), umax.T.copy()


@numba.njit(cache=True, nogil=True)
def _histograms_weighted(data, pix, fld, weight, nfields, valid):
    """float64[F, B, 256]: summed weights of each code per field and band (valid pixels)."""
    bands = data.shape[0]
    hist = np.zeros((nfields, bands, 256))
    for b in range(bands):
        row = data[b]
        for k in range(pix.shape[0]):
            p = pix[k]
            if valid[p] != 0:
                hist[fld[k], b, np.int64(row[p]) + 128] += weight[k]
    return hist


@numba.njit(cache=True, nogil=True)
def valid_float_pixels(data, fill):
    """uint8[pixels]: 1 where no band holds NaN or the fill value."""
    bands, npix = data.shape
    valid = np.ones(npix, np.uint8)
    for b in range(bands):
        row = data[b]
        for p in range(npix):
            v = row[p]
            valid[p] &= (v == v) & (v != fill)
    return valid


@numba.njit(cache=True, nogil=True, inline="always")
def _neumaier(s, c, x):
    """s + x, with the rounding error of the addition added to the compensation c."""
    t = s + x
    c += (s - t) + x if abs(s) >= abs(x) else (x - t) + s
    return t, c


@numba.njit(cache=True, nogil=True)
def _reduce_float(data, pix, fld, weight, nfields, valid):
    bands = data.shape[0]
    count, inside = _weighted_counts(pix, fld, weight, nfields, valid)
    s1, c1 = np.zeros((bands, nfields)), np.zeros((bands, nfields))
    s2, c2 = np.zeros((bands, nfields)), np.zeros((bands, nfields))
    vmin = np.full((bands, nfields), np.inf)
    vmax = np.full((bands, nfields), -np.inf)
    for b in range(bands):
        row = data[b]
        for k in range(pix.shape[0]):
            p = pix[k]
            if valid[p] == 0:
                continue
            f = fld[k]
            x = np.float64(row[p])
            wx = weight[k] * x
            s1[b, f], c1[b, f] = _neumaier(s1[b, f], c1[b, f], wx)
            s2[b, f], c2[b, f] = _neumaier(s2[b, f], c2[b, f], wx * x)
            vmin[b, f] = min(vmin[b, f], x)
            vmax[b, f] = max(vmax[b, f], x)
    return count, inside, (s1 + c1).T.copy(), (s2 + c2).T.copy(), vmin.T.copy(), vmax.T.copy()


def reduce_chunk_float(
    data: np.ndarray,
    pix: np.ndarray,
    fld: np.ndarray,
    weight: np.ndarray | None,
    nfields: int,
    *,
    fill: float = np.nan,
) -> Partials:
    """Partials of a float store's chunk (values as stored; NaN and `fill` are nodata) over
    (pixel, field) pairs, weighted (coverage fractions) or each weighing 1 (weight None: counts
    stay int64). Sums are float64 with Neumaier's compensated summation: each field's sum over
    one chunk is within 2 u |S| + O(n u^2) sum |x| of the exact one (u = 2^-53), whatever the
    number of pixels; min, max as stored."""
    bands = data.shape[0]
    flat = np.ascontiguousarray(data).reshape(bands, -1)
    if flat.dtype == np.float16:  # numba has no float16; float32 holds every float16 exactly
        flat = flat.astype(np.float32)
    valid = valid_float_pixels(flat, flat.dtype.type(fill))
    w = np.ones(len(pix)) if weight is None else np.asarray(weight, np.float64)
    count, inside, *sums = _reduce_float(
        flat, np.asarray(pix, np.int64), np.asarray(fld, np.int64), w, nfields, valid
    )
    if weight is None:
        count, inside = count.astype(np.int64), inside.astype(np.int64)
    return Partials(count, inside, *sums, None)


def reduce_chunk(
    data: np.ndarray,
    runs: np.ndarray,
    nfields: int,
    *,
    square: bool,
    nodata: int = -128,
    extremes: bool = True,
    histograms: bool = False,
) -> Partials:
    """Partials of `nfields` fields over one chunk, every member pixel weighing 1.

    data: int8[bands, rows, cols], the chunk; runs: int64[R, 4] from pixels.members;
    square: u = sign(q) q^2 (signed-square store) instead of u = q (linear store);
    histograms: also count each code per field and band (for exact quantiles).
    A pixel with the nodata code in any band is skipped in every band.
    """
    bands, _, width = data.shape
    flat = np.ascontiguousarray(data).reshape(bands, -1)
    valid = valid_pixels(flat, np.int8(nodata))
    *sums, hist = _reduce(
        flat,
        width,
        np.ascontiguousarray(runs, np.int64),
        nfields,
        valid,
        square,
        extremes,
        histograms,
    )
    return Partials(*sums, hist if histograms else None)


def reduce_chunk_weighted(
    data: np.ndarray,
    pix: np.ndarray,
    fld: np.ndarray,
    weight: np.ndarray,
    nfields: int,
    *,
    square: bool,
    nodata: int = -128,
    histograms: bool = False,
) -> Partials:
    """Partials with each (pixel, field) pair weighted (coverage fractions): float sums;
    histograms: also the summed weight of each code per field and band (weighted quantiles)."""
    bands = data.shape[0]
    flat = np.ascontiguousarray(data).reshape(bands, -1)
    valid = valid_pixels(flat, np.int8(nodata))
    pix, fld, weight = (
        np.asarray(pix, np.int64),
        np.asarray(fld, np.int64),
        np.asarray(weight, np.float64),
    )
    sums = _reduce_weighted(flat, pix, fld, weight, nfields, valid, square)
    hist = _histograms_weighted(flat, pix, fld, weight, nfields, valid) if histograms else None
    return Partials(*sums, hist)
