"""Quantisation of the store's int8 codes: code -> value, and the integers the sums are kept in.

value = a * u + b, where u = sign(q) q^2 (signed-square stores) or u = q (linear ones); the code
`nodata` is masked. Summing u, not values, keeps every partial an exact integer.

Unquantised float stores (float32, float16) hold the values themselves (u = the stored value,
a = 1, b = 0, or a linear scale/offset if the store declares one); NaN and the array's fill
value are nodata.
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
    nodata: float  # int8: the nodata code; floats: the fill value (NaN too)
    dtype: str = "int8"  # the stored dtype: int8, float32, float16

    @property
    def floats(self) -> bool:
        return self.dtype != "int8"

    @classmethod
    def from_attrs(cls, attrs: dict, url: str, dtype: str = "int8", fill=None) -> Quantisation:
        """From the `geoemb:quantization` attribute of store `url` (optional for float stores,
        whose `fill` value is nodata); ValueError saying what is wrong."""
        q = attrs.get("geoemb:quantization")
        if dtype != "int8":
            if dtype not in FLOATS:
                raise ValueError(
                    f"{url}: embeddings of dtype {dtype}; the embeddings convention "
                    f"defines int8 quantised stores and unquantised {'/'.join(FLOATS)}"
                )
            nodata = float("nan") if fill is None else float(fill)
            if q is None or q.get("method") in (None, "none"):
                return cls(False, 1.0, 0.0, nodata, dtype)
            if q.get("method") != "linear":
                raise ValueError(
                    f"{url}: a {dtype} store with quantisation method {q.get('method')!r}; "
                    "a float store is read as its values, or with a linear scale/offset"
                )
            return cls(False, *_scale(q, url), nodata, dtype)
        if q is None:
            raise ValueError(
                f"{url}: no 'geoemb:quantization' attribute; cannot dequantise int8 codes"
            )
        method = q.get("method")
        nodata = int(q.get("nodata", -128))
        if method == "signed_square":
            return cls(True, 1.0 / 127.5**2, 0.0, nodata)
        if method == "linear":
            return cls(False, *_scale(q, url), nodata)
        raise ValueError(
            f"{url}: unknown quantisation method {method!r}; "
            "supported: 'signed_square', 'linear' (scale/offset)"
        )

    def table(self) -> np.ndarray:
        """float64[256]: the value of each code, indexed by code + 128 (nodata -> NaN)."""
        q = np.arange(-128, 128, dtype=np.float64)
        u = np.sign(q) * q * q if self.square else q
        v = self.a * u + self.b
        v[self.nodata + 128] = np.nan
        return v


FLOATS = ("float32", "float16")


def _scale(q: dict, url: str) -> tuple[float, float]:
    """(scale, offset) of a linear quantisation: plain numbers, or the convention's scale object
    {"type": "scalar", "scale", "offset"}; a per-pixel scale array is refused."""
    scale, offset = q.get("scale"), q.get("offset", 0.0)
    if isinstance(scale, dict):
        if scale.get("type") != "scalar":
            raise ValueError(
                f"{url}: linear quantisation with a {scale.get('type')!r} scale "
                "(per-pixel scale arrays) is not supported; only a scalar scale/offset"
            )
        scale, offset = scale.get("scale"), scale.get("offset", 0.0)
    if scale is None:
        raise ValueError(f"{url}: linear quantisation without a 'scale'")
    return float(scale), float(offset)
