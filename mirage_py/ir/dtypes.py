"""Element types of the IR, named (never numbered) so saved graphs survive edits."""

from __future__ import annotations

import numpy as np

DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32")

# Bytes per element, used by cost terms and shared-memory planning.
ITEMSIZE: dict[str, int] = {"float16": 2, "bfloat16": 2, "float32": 4}


def check_dtype(name: str) -> str:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r} (expected one of {', '.join(DTYPES)})")
    return name


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """Round float values to `dtype`'s precision, returned as float32 (bfloat16 has no
    NumPy type, so every 16-bit value is carried in float32 after rounding)."""
    x32 = np.asarray(x, dtype=np.float32)
    if dtype == "float32":
        return x32
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return x32.astype(np.float16).astype(np.float32)
    # bfloat16: keep the top 16 bits of the float32 pattern, rounding to nearest even.
    bits = x32.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    out = rounded.astype(np.uint32).view(np.float32)
    return np.where(np.isnan(x32), x32, out)
