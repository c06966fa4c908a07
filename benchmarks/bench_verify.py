"""Finite-field verifier cost per benchmark: one trial of the spec and of the expert, the
default trial count and its error bound, against the same matmuls in plain float64 NumPy.

Usage: python benchmarks/bench_verify.py [--repeats N] [--size paper|small] [--batch B] [--only NAMES] [--clock cpu|wall]

Columns: `sample` draws one trial's inputs (shared by both graphs; into the previous
trial's arrays, as `equivalent` does); `spec`, `expert` run one graph over one field and
take its outputs' residues (median of N); `trial` is the three together; `matmul` is the spec's matmuls alone in float64
NumPy on arrays of the same shapes, measured in the same rounds as the graphs (each round
runs the floor, the spec and every expert once; the floor: a trial must do at least this
arithmetic); `ratio` is graph / matmul; `verify` is a full `equivalent` call at
the default trial count (inputs, both graphs, every trial) and `bound` its error bound.

Times are this thread's CPU time by default (`--clock cpu`): every measured call is
single-threaded (one BLAS thread), and on a shared machine wall time also counts the time
the scheduler gave to other jobs, which the two sides of a ratio do not suffer alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

# One BLAS thread, as in bench_float.py: on a shared machine multithreaded BLAS thrashes.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mirage_py.benchmarks import all_benchmarks  # noqa: E402
from mirage_py.ir import KernelGraph  # noqa: E402
from mirage_py.verify import DEFAULT_TRIALS, FieldOps, equivalent  # noqa: E402
from mirage_py.verify.ffexec import FFTensor, residues, run_ff, sample_inputs  # noqa: E402
from mirage_py.verify.fields import DEFAULT_FIELD, FIELDS, exp_table_ext, inverse_table  # noqa: E402


def median_seconds(fn: Callable[[], object], repeats: int, clock: Callable[[], float] = time.thread_time) -> float:
    return interleaved_medians([fn], repeats, clock)[0]


def interleaved_medians(
    fns: list[Callable[[], object]], repeats: int, clock: Callable[[], float] = time.thread_time
) -> list[float]:
    """The median time of each of `fns`, measured in rounds (each once per round), so that
    the load of a shared machine, which drifts over seconds, falls alike on all of them:
    a ratio of two of them is then not biased by when each happened to be measured."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t = clock()
            fn()
            ts.append(clock() - t)
    return [statistics.median(ts) for ts in times]


def one_run(g: KernelGraph, ins: dict[str, FFTensor]) -> Callable[[], object]:
    """One run of `g` over one field as a trial does it: a fresh FieldOps, and the outputs'
    canonical residues (what is compared; values are computed when first asked for)."""
    return lambda: [residues(y, DEFAULT_FIELD.p) for y in run_ff(g, ins, FieldOps(key=0))]


def matmul_floor(spec: KernelGraph) -> Callable[[], object]:
    """The spec's kernel-level matmuls on float64 arrays of their shapes."""
    rng = np.random.default_rng(0)
    pairs = [
        (rng.standard_normal(spec.types[n.inputs[0]].dims), rng.standard_normal(spec.types[n.inputs[1]].dims))
        for n in spec.nodes
        if n.op == "matmul"
    ]
    return lambda: [np.matmul(a, b) for a, b in pairs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", choices=("paper", "small"), default="paper")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--only", default=None, help="comma-separated benchmark names (default: all)")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="thread CPU time or wall time")
    args = ap.parse_args()
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    for f in FIELDS:  # build the lookup tables outside the timings
        exp_table_ext(f), inverse_table(f.p), inverse_table(f.q)
    print(
        f"finite-field verifier, size {args.size}, median of {args.repeats} ({args.clock} time); {platform.machine()}, "
        f"{os.cpu_count()} cores, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}; "
        f"default trials {DEFAULT_TRIALS}"
    )
    header = (
        f"{'benchmark':<10} {'expert':<16} {'sample ms':>9} {'spec ms':>8} {'expert ms':>9} {'trial ms':>8} {'matmul ms':>9} "
        f"{'ratio s/e':>10} {'verify s':>8} {'bound':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, b in all_benchmarks().items():
        if args.only and name not in args.only.split(","):
            continue
        spec = b.spec(args.size, args.batch)
        shapes = [spec.types[t].dims for t in spec.inputs]
        ins = sample_inputs(spec.input_names, shapes, 0)
        # As in `equivalent`: each trial overwrites the previous trial's input arrays.
        t_sample = median_seconds(partial(sample_inputs, spec.input_names, shapes, 1, reuse=ins), args.repeats, clock)
        experts = b.experts(args.size, args.batch)
        # The floor and every graph in the same rounds (see interleaved_medians).
        t_mm, t_spec, *t_exs = interleaved_medians(
            [matmul_floor(spec), one_run(spec, ins)] + [one_run(ex, ins) for ex in experts.values()],
            args.repeats,
            clock,
        )
        for (ename, ex), t_ex in zip(experts.items(), t_exs):
            t = clock()
            v = equivalent(spec, ex)
            t_verify = clock() - t
            assert v.equivalent, v.to_json()
            ratio = f"{t_spec / t_mm:4.2f}/{t_ex / t_mm:<5.2f}" if t_mm > 1e-4 else "no matmul"
            trial = t_sample + t_spec + t_ex
            print(
                f"{name:<10} {ename:<16} {t_sample * 1e3:9.1f} {t_spec * 1e3:8.1f} {t_ex * 1e3:9.1f} "
                f"{trial * 1e3:8.1f} {t_mm * 1e3:9.1f} {ratio:>10} {t_verify:8.2f} {f'2^{v.bound_log2:.1f}':>8}"
            )


if __name__ == "__main__":
    main()
