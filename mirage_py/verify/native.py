"""Compiled kernels for the finite-field executor's per-element work that NumPy cannot do in
one pass: exp (index, lookup and row sums) and a quotient's product-and-reduction.

The C source below is compiled on first use with the system C compiler ($CC, else cc, gcc
or clang) into the user's cache directory ($XDG_CACHE_HOME/mirage-py, else
~/.cache/mirage-py), under a name keyed by the source, the flags, the compiler and the
machine, written atomically, and loaded with ctypes. Without a compiler (or with
MIRAGE_PY_NATIVE=0) `kernels()` is None and ffexec uses its NumPy path; the two give
identical residues (tests/test_verify_native.py). Single-threaded, like the float64 floor
bench_verify.py measures them against.

Exactness: every value is an integer held exactly in a float64 below 2^53, and each step is
one IEEE operation with an exact result or the same rounding NumPy does (round to nearest
even, through the 1.5·2^52 trick; no FMA contraction, no fast-math). exp's result is the
canonical ω^k mod p in [0, p), so any representative k of the exponent gives the same value.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

SOURCE = r"""
#include <stdint.h>

/* Floats in [2^52, 2^53) are the integers there: (t + M) - M is t rounded to the nearest
   integer, ties to even (as np.rint), for |t| < 2^51. */
static const double M = 6755399441055744.0; /* 1.5 * 2^52 */

#if defined(MIRAGE_CLONES)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

/* out[i] = omega^(x[i] mod q) mod p, for |x[i]| + 2q < 2^53, over rows x cols elements;
   sums (unless NULL): each row's sum, exact (an integer sum below 2^53 for cols < 2^31).
   center: reduce x[i] to its centered representative x - rint(x / q) q first
   (|r| <= q/2 + 5); else |x[i]| < q. k = r mod q in [0, q) then splits as k = 1024 h + l,
   and omega^k = hi[h] lo[l] mod p: two lookups in tables that stay in L1 (hi: omega^(1024 h),
   lo: omega^l, both in [0, p)), a product below 2^42, and its centered remainder mod p made
   non-negative. */
CLONES
void ff_exp(const double *restrict x, int64_t rows, int64_t cols, int32_t center, double q,
            double invq, const double *restrict hi, const double *restrict lo, double p,
            double invp, double *restrict out, double *restrict sums) {
    const int32_t qi = (int32_t)q, pi = (int32_t)p;
    for (int64_t row = 0; row < rows; row++) {
        const double *restrict a = x + row * cols;
        double *restrict o = out + row * cols;
        /* Integers below 2^53: exact in any order, so a SIMD sum is too. The sign fix-ups
           are integer masks: a conditional on a double becomes a branch without AVX-512,
           mispredicted half the time. */
        double acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t i = 0; i < cols; i++) {
            double r = a[i];
            if (center) {
                double t = r * invq;
                t = (t + M) - M;
                r = r - t * q;
            }
            int32_t k = (int32_t)r;
            k += qi & (k >> 31);
            double v = hi[k >> 10] * lo[k & 1023];
            double t = v * invp;
            t = (t + M) - M;
            v = v - t * p;
            int32_t w = (int32_t)v;
            w += pi & (w >> 31);
            o[i] = (double)w;
            acc += (double)w;
        }
        if (sums)
            sums[row] = acc;
    }
}

/* out[i][j] = t - rint(t / m) m for t = x[i xr + j] y[i yr + j yc] (yc 0 or 1): a product
   below 2^53 and its centered remainder, as ffexec's _mul_reduce computes it. */
CLONES
void ff_mul_center(const double *restrict x, const double *restrict y, int64_t rows, int64_t cols,
                   int64_t xr, int64_t yr, int64_t yc, double m, double invm, double *restrict out) {
    for (int64_t i = 0; i < rows; i++) {
        const double *restrict a = x + i * xr;
        const double *restrict b = y + i * yr;
        double *restrict o = out + i * cols;
        if (yc == 0) {
            const double s = b[0];
            for (int64_t j = 0; j < cols; j++) {
                double t = a[j] * s;
                double c = t * invm;
                c = (c + M) - M;
                o[j] = t - c * m;
            }
        } else {
            for (int64_t j = 0; j < cols; j++) {
                double t = a[j] * b[j];
                double c = t * invm;
                c = (c + M) - M;
                o[j] = t - c * m;
            }
        }
    }
}
"""

# -fopenmp-simd: the `omp simd` pragmas only (no OpenMP runtime, no threads).
FLAGS = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fopenmp-simd", "-shared", "-fPIC"]
LO_BITS = 10  # the split of exp's exponent: k = 2^LO_BITS·h + l (fixed in SOURCE)

_lock = threading.Lock()
_loaded: list[Kernels | None] = []  # one entry once loading was tried


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mirage-py"


def _compiler() -> str | None:
    """$CC when set (a path or a name on PATH), else the first of cc, gcc, clang."""
    if os.environ.get("CC"):
        return shutil.which(os.environ["CC"])
    return next((path for c in ("cc", "gcc", "clang") if (path := shutil.which(c))), None)


def _build(cc: str, variants: list[list[str]]) -> Path | None:
    """The shared library from SOURCE, compiled with the first of `variants` (extra flags)
    that compiles, from the cache when it is there already. A variant that does not
    compile leaves a marker, so that the next process does not try it again. The key
    covers the source, the flags, the compiler (its path, size and date) and the machine."""
    st = os.stat(cc)
    uid = os.getuid() if hasattr(os, "getuid") else 0
    for extra in variants:
        flags = FLAGS + extra
        ident = (SOURCE, flags, cc, st.st_size, st.st_mtime_ns, platform.machine(), platform.system())
        key = hashlib.sha256(repr(ident).encode()).hexdigest()[:16]
        for d in (cache_dir(), Path(tempfile.gettempdir()) / f"mirage-py-{uid}"):
            lib, failed = d / f"ffkernels-{key}.so", d / f"ffkernels-{key}.failed"
            if lib.exists():
                return lib
            if failed.exists():
                break  # this variant did not compile before: try the next one
            try:
                d.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=d) as tmp:
                    src, out = Path(tmp) / "ffkernels.c", Path(tmp) / "ffkernels.so"
                    src.write_text(SOURCE)
                    r = subprocess.run([cc, *flags, str(src), "-o", str(out)], capture_output=True, timeout=120)
                    if r.returncode != 0:
                        failed.touch()
                        break  # this variant does not compile: try the next one
                    os.replace(out, lib)  # atomic: a concurrent build writes the same bytes
                return lib
            except (OSError, subprocess.SubprocessError):
                continue  # this directory is not writable: try the next one
    return None


class Kernels:
    """The loaded library's functions, with NumPy-level wrappers."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        d, i64, i32, ptr = ctypes.c_double, ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
        self._exp = lib.ff_exp
        self._exp.argtypes = [ptr, i64, i64, i32, d, d, ptr, ptr, d, d, ptr, ptr]
        self._exp.restype = None
        self._mul_center = lib.ff_mul_center
        self._mul_center.argtypes = [ptr, ptr, i64, i64, i64, i64, i64, d, d, ptr]
        self._mul_center.restype = None

    def exp(
        self,
        x: np.ndarray,
        center: bool,
        q: int,
        p: int,
        hi: np.ndarray,
        lo: np.ndarray,
        out: np.ndarray,
        sums: np.ndarray | None = None,
    ) -> None:
        """out = ω^(x mod q) mod p elementwise (see SOURCE); x and out C-contiguous float64
        of one shape, |x| + 2q < 2^53, and |x| < q unless `center`. `sums`: also each
        row's sum (over the last axis), into this C-contiguous array of x.shape[:-1]."""
        assert x.dtype == out.dtype == hi.dtype == lo.dtype == np.float64 and x.shape == out.shape
        assert x.flags.c_contiguous and out.flags.c_contiguous and hi.flags.c_contiguous and lo.size == 1 << LO_BITS
        assert hi.size * len(lo) >= q and p < 2**31
        cols = x.shape[-1] if x.ndim else 1
        if sums is not None:
            assert sums.dtype == np.float64 and sums.flags.c_contiguous and sums.shape == x.shape[:-1]
            assert cols < 2**31
        rows = x.size // cols if cols else 0
        self._exp(
            x.ctypes.data,
            rows,
            cols,
            int(center),
            float(q),
            1.0 / q,
            hi.ctypes.data,
            lo.ctypes.data,
            float(p),
            1.0 / p,
            out.ctypes.data,
            None if sums is None else sums.ctypes.data,
        )

    def mul_center(self, x: np.ndarray, y: np.ndarray, m: int, out: np.ndarray) -> bool:
        """out = x·y - rint(x·y/m)·m (x, y broadcast to out's shape; the caller ensures
        |x·y| + m < 2^53), as ffexec's _center_into computes it; False (out untouched) when
        the layout is not one the kernel takes: out C-contiguous, and after merging axes
        at most rows × columns with x or y contiguous along the columns, the other
        contiguous or constant along them."""
        if not out.flags.c_contiguous or x.dtype != np.float64 or y.dtype != np.float64 or out.dtype != np.float64:
            return False
        xb, yb = np.broadcast_to(x, out.shape), np.broadcast_to(y, out.shape)
        shape = _rows(out.shape, [_strides(xb), _strides(yb)])
        if shape is None:
            return False
        rows, cols, ((xr, xc), (yr, yc)) = shape
        if xc != 1 and cols > 1:
            xb, yb, xr, xc, yr, yc = yb, xb, yr, yc, xr, xc
        if cols > 1 and (xc != 1 or yc not in (0, 1)):
            return False
        self._mul_center(
            xb.ctypes.data,
            yb.ctypes.data,
            rows,
            cols,
            xr,
            yr,
            yc if cols > 1 else 0,
            float(m),
            1.0 / m,
            out.ctypes.data,
        )
        return True


def _strides(a: np.ndarray) -> tuple[int, ...]:
    return tuple(s // a.itemsize for s in a.strides)


def kernels() -> Kernels | None:
    """The compiled kernels, built or loaded on first call; None when disabled
    (MIRAGE_PY_NATIVE=0) or when no C compiler is available or it fails."""
    if os.environ.get("MIRAGE_PY_NATIVE", "1") == "0":
        return None
    with _lock:
        if not _loaded:
            _loaded.append(_load())
        return _loaded[0]


def _variants() -> list[list[str]]:
    """The extra flags to try, best first. On x86-64: per-CPU versions picked at load time
    (GCC's target_clones: AVX-512, AVX2, baseline), and GCC's gather instructions, which its
    generic tuning leaves out and exp's table lookups need (2.6 ms instead of 4 ms for 2 M
    elements on a Xeon with AVX-512); a compiler without them gets the next variant."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return [[]]
    gather = "-mtune-ctrl=use_gather_2parts,use_gather_4parts,use_gather"
    return [["-DMIRAGE_CLONES", gather], ["-DMIRAGE_CLONES"], []]


def _load() -> Kernels | None:
    cc = _compiler()
    if cc is None:
        return None
    lib = _build(cc, _variants())
    if lib is None:
        return None
    try:
        return Kernels(ctypes.CDLL(str(lib)))
    except (OSError, AttributeError):  # not loadable, or an old library without a function
        return None


def _rows(shape: tuple[int, ...], strides: list[tuple[int, ...]]) -> tuple[int, int, list[tuple[int, int]]] | None:
    """`shape` with the element strides of some arrays as (rows, cols, [(row stride, col
    stride) per array]): size-1 axes dropped, adjacent axes merged where every array allows
    it; None when that leaves more than two axes."""
    dims = [(n, [st[i] for st in strides]) for i, n in enumerate(shape) if n > 1]
    merged: list[tuple[int, list[int]]] = []
    for n, st in dims:
        if merged and all(a == b * n for a, b in zip(merged[-1][1], st)):
            merged[-1] = (merged[-1][0] * n, st)
        else:
            merged.append((n, st))
    if len(merged) > 2:
        return None
    while len(merged) < 2:
        merged.insert(0, (1, [0] * len(strides)))
    (rows, rs), (cols, cs) = merged
    return rows, cols, list(zip(rs, cs))
