"""Float64 reference-executor time of each benchmark's spec and expert at paper size.

Usage: python benchmarks/bench_float.py [--repeats N] [--size paper|small] [--batch B]

The executor is the correctness reference, not a fast path: these figures say how long
checking a graph costs on this machine, and how much the vectorized block executor pays
for tiling (or saves by working on small tiles). They are not GPU timings.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# One BLAS thread unless the caller says otherwise: on a shared machine, multithreaded BLAS
# thrashes and the large spec matmuls swing by 5x from run to run. Set before NumPy loads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

# Run from a checkout without installing: the package sits one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mirage_py import run_float  # noqa: E402
from mirage_py.benchmarks import all_benchmarks  # noqa: E402
from mirage_py.benchmarks._common import count_kernels  # noqa: E402
from mirage_py.ir import KernelGraph  # noqa: E402


def median_seconds(graph: KernelGraph, inputs: dict[str, np.ndarray], repeats: int) -> float:
    run_float(graph, inputs, "float64")  # warm-up: first-call imports and allocations
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run_float(graph, inputs, "float64")
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", choices=("paper", "small"), default="paper")
    ap.add_argument("--batch", type=int, default=None, help="default: each benchmark's default batch")
    args = ap.parse_args()
    print(
        f"float64 executor, size {args.size}, median of {args.repeats} runs; {platform.machine()}, {os.cpu_count()} cores, "
        f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )
    header = (
        f"{'benchmark':<10} {'expert':<16} {'b':>2} {'spec ms':>9} {'expert ms':>10} {'spec/expert':>11} {'kernels':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, bm in all_benchmarks().items():
        b = args.batch or bm.batches[0]
        spec = bm.spec(args.size, b)
        # Inputs already in float64, so no run pays for a conversion.
        inputs = {k: np.asarray(v, dtype=np.float64) for k, v in bm.inputs(spec, seed=0).items()}
        t_spec = median_seconds(spec, inputs, args.repeats)
        for key, ex in bm.experts(args.size, b).items():
            t_ex = median_seconds(ex, inputs, args.repeats)
            kernels = f"{count_kernels(spec)}->{count_kernels(ex)}"
            print(
                f"{name:<10} {key:<16} {b:>2} {t_spec * 1e3:>9.2f} {t_ex * 1e3:>10.2f} {t_spec / t_ex:>11.2f} {kernels:>8}"
            )


if __name__ == "__main__":
    main()
