"""Quantisation of the store's int8 codes: code -> value, and the integers the sums are kept in.

value = a * u + b, where u = sign(q) q^2 (signed-square stores) or u = q (linear ones); the code
`nodata` is masked. Summing u, not values, keeps every partial an exact integer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Quantisation:
    """value = a * u + b, where u = sign(q) q^2 (square) or u = q; q == nodata is masked."""
    square: bool
    a: float
    b: float
    nodata: int

    @classmethod
    def from_attrs(cls, attrs: dict, url: str) -> "Quantisation":
        """From the `geoemb:quantization` attribute of store `url`; ValueError saying what is wrong."""
        q = attrs.get("geoemb:quantization")
        if q is None:
            raise ValueError(f"{url}: no 'geoemb:quantization' attribute; cannot dequantise int8 codes")
        method = q.get("method")
        nodata = int(q.get("nodata", -128))
        if method == "signed_square":
            return cls(True, 1.0 / 127.5 ** 2, 0.0, nodata)
        if method == "linear":
            return cls(False, float(q["scale"]), float(q.get("offset", 0.0)), nodata)
        raise ValueError(f"{url}: unknown quantisation method {method!r}; "
                         "supported: 'signed_square', 'linear' (scale/offset)")

    def table(self) -> np.ndarray:
        """float64[256]: the value of each code, indexed by code + 128 (nodata -> NaN)."""
        q = np.arange(-128, 128, dtype=np.float64)
        u = np.sign(q) * q * q if self.square else q
        v = self.a * u + self.b
        v[self.nodata + 128] = np.nan
        return v
