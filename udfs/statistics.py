"""The statistics a run can write, one record each, and how each is finished from merged sums.

A record says which partials it needs beyond the pixel count and the per-band sums the reduce
kernel always keeps (extremes, histograms), the column it writes and its type, and its finishing
step over a batch of merged partials (`Merged`). Everything else is derived from the records:
the options' check (`parse`), the reduction's flags (`needs`), the statistics' Arrow schema
and the output's (udfs/schemas.py, jobs/dataset.py), the aggregate SQL's parameters and the
output rows (udfs/rows.py). Adding a statistic is one record here plus its kernel.

value = a * u + b, so with n valid pixels, S1 = sum(u) and S2 = sum(u^2) per band:
  mean = a * S1 / n + b,  std = a * sqrt(n * S2 - S1^2) / n,  sum = a * S1 + b * n.
Integer sums merge exactly and n * S2 - S1^2 is formed exactly before the one square root: in
float64 while every term stays below 2^53 (n <= exact_count), in Python integers beyond.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from aef_zonal.udfs import quantiles
from aef_zonal.udfs.quantisation import Quantisation

# partials the reduce kernel keeps only for the statistics that need them
EXTREMES = "extremes"  # per band: smallest and largest u
HISTOGRAMS = "histograms"  # per band: valid pixels (summed weights) per code


class Merged:
    """A batch of field-years' partials, merged: n, inside [rows]; s1, s2, umin, umax
    [rows, bands]; sparse histograms (keys, counts per row). What a statistic derives from them
    is computed once per batch, when first asked for."""

    def __init__(
        self, quant: Quantisation, weighted: bool, n, inside, s1, s2, levels=(), **partials
    ):
        self.quant, self.weighted, self.levels = quant, weighted, tuple(levels)
        self.n, self.inside, self.s1, self.s2 = n, inside, s1, s2
        self.partials = partials
        self.a, self.b = quant.a, quant.b

    @cached_property
    def nn(self) -> np.ndarray:
        return self.n.astype(np.float64)[:, None]

    @cached_property
    def mean(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.a * self.s1 / self.nn + self.b

    def value(self, u: np.ndarray) -> np.ndarray:
        return self.a * u + self.b

    @property
    def exact_count(self) -> int:
        # n * S2 and S1^2 stay below 2^53 while n * umax^2 < 2^26.5
        umax = 127**2 if self.quant.square else 128
        return int(2**26.5 / umax)

    def quantile(self, level: float) -> np.ndarray:
        """[rows, bands]: the values at `level` (NaN rows without a valid pixel)."""
        return self._quantiles[:, self.levels.index(level)]

    @cached_property
    def _quantiles(self) -> np.ndarray:
        # every asked level from one dense histogram per row, which is not kept: 128 KiB each
        keys, counts = self.partials["hkeys"], self.partials["hcounts"]
        bands, table = self.s1.shape[1], self.quant.table()
        read = quantiles.from_weighted_histogram if self.weighted else quantiles.from_histogram
        out = np.full((len(self.n), len(self.levels), bands), np.nan)
        for i in np.flatnonzero(self.n > 0):
            hist = quantiles.dense(
                keys[i].values.to_numpy(), counts[i].values.to_numpy(), bands, self.weighted
            )
            out[i] = read(hist, self.levels, table)
        return out


def _std(m: Merged) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        if m.weighted or m.quant.floats:  # float sums: no exact integer form
            return m.a * np.sqrt(np.maximum(m.s2 / m.nn - (m.s1 / m.nn) ** 2, 0.0))
        var_n2 = m.nn * m.s2.astype(np.float64) - m.s1.astype(np.float64) ** 2
        for i in np.flatnonzero(m.n > m.exact_count):  # beyond float64's exact integers
            var_n2[i] = [
                float(int(m.n[i]) * int(q) - int(p) * int(p)) for p, q in zip(m.s1[i], m.s2[i])
            ]
        return m.a * np.sqrt(var_n2) / m.nn


def _normalized(m: Merged) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return m.mean / np.sqrt((m.mean**2).sum(axis=1, keepdims=True))


@dataclass(frozen=True)
class Statistic:
    """What one statistic is. `finish` maps a batch's merged partials to its values: [rows, bands]
    (a list<double> per field-year, null without a valid pixel) or, `per_band` false, [rows]
    (a double). A statistic without `finish` is made elsewhere (the pixel count by the kernel,
    change by udfs/rows.py); `types` says what each of its output columns holds
    (udfs/schemas.py: KINDS)."""

    name: str
    doc: str
    finish: Callable[[Merged], np.ndarray] | None = None
    needs: frozenset[str] = frozenset()
    per_band: bool = True
    level: float | None = None  # a quantile's
    also: tuple[str, ...] = ()  # other output columns it writes
    always: bool = False  # part of the published schema, whatever was asked
    types: tuple[str, ...] = ()  # per output column; default: "bands" per band, else "double"

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.name, *self.also)

    @property
    def kinds(self) -> tuple[str, ...]:
        return self.types or (("bands",) if self.per_band else ("double",))


# in the output's column order (mean leads the output's own columns; quantiles, in the order
# asked, follow the rest, after `reason`)
RECORDS = (
    Statistic(
        "count",
        "valid pixels (summed coverage with --pixels fraction); 0 where there is none",
        types=("number",),
    ),
    Statistic("mean", "per band: the mean", lambda m: m.mean, always=True),
    Statistic("std", "per band: the population standard deviation", _std),
    Statistic(
        "min",
        "per band: the smallest value",
        lambda m: m.value(m.partials["umin"]),
        frozenset({EXTREMES}),
    ),
    Statistic(
        "max",
        "per band: the largest value",
        lambda m: m.value(m.partials["umax"]),
        frozenset({EXTREMES}),
    ),
    Statistic("sum", "per band: the sum of the values", lambda m: m.a * m.s1 + m.b * m.nn),
    Statistic("mean_normalized", "the mean scaled to unit length", _normalized),
    Statistic(
        "valid_fraction",
        "valid pixels / pixels inside (summed coverage with --pixels fraction)",
        lambda m: m.n / m.inside,
        per_band=False,
    ),
    Statistic(
        "change",
        "1 - cosine similarity of the mean with the field's latest earlier year's "
        "(udfs/rows.py), which `change_from` names",
        also=("change_from",),
        types=("double", "year"),
    ),
)
BY_NAME = {s.name: s for s in RECORDS}
QUANTILE = re.compile(r"p(\d{1,2}(\.\d+)?|100)|median")


def quantile(name: str) -> Statistic:
    """A quantile statistic: median, or pNN (p05, p95, p2.5, p100), exact from the histograms."""
    level = 0.5 if name == "median" else float(name[1:]) / 100
    return Statistic(
        name,
        f"per band: the {level:g} quantile",
        lambda m: m.quantile(level),
        frozenset({HISTOGRAMS}),
        level=level,
    )


def get(name: str) -> Statistic:
    if name in BY_NAME:
        return BY_NAME[name]
    if QUANTILE.fullmatch(name):
        return quantile(name)
    raise KeyError(name)


def parse(names) -> tuple[Statistic, ...]:
    """The asked statistics, and those always written (mean), in the output's order;
    ValueError naming the unknown ones."""
    unknown = [n for n in names if n not in BY_NAME and not QUANTILE.fullmatch(n)]
    if unknown:
        raise ValueError(
            f"unknown statistic(s) {sorted(set(unknown))}; choose among {list(BY_NAME)}, "
            "median, pNN"
        )
    asked = set(names) | {s.name for s in RECORDS if s.always}
    return tuple(s for s in RECORDS if s.name in asked) + tuple(
        quantile(n) for n in dict.fromkeys(names) if n not in BY_NAME
    )


def needs(stats) -> frozenset[str]:
    """The partials these statistics need beyond count and sums."""
    return frozenset().union(*(s.needs for s in stats))


def finished(stats) -> tuple[Statistic, ...]:
    """Those finished from merged partials (udfs/finish.py), in the statistics table's order."""
    return tuple(s for s in stats if s.finish is not None)
