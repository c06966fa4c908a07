"""Search benchmark: each paper benchmark's spec searched with its preset at paper size,
under a time limit, on this machine. Prints a table: time to best, states, states/s, the
best μGraph's kernels and modelled cost beside the hand-written expert's, and the share of
candidate ops each pruning rule removed.

    python benchmarks/search_bench.py [--time-limit S] [--batch B] [NAME ...]

Numbers are from one run on a shared 2-core machine; costs are modelled (no GPU).
"""

from __future__ import annotations

import argparse
import time

from mirage_py.benchmarks import all_benchmarks
from mirage_py.codegen.cost import modeled_us
from mirage_py.search.config import get_config
from mirage_py.search.enumerate import Budget, Searcher
from mirage_py.search.evaluate import FFEvaluator
from mirage_py.verify import equivalent


def _verify(spec, cand) -> bool:
    return equivalent(spec, cand).equivalent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--time-limit", type=float, default=120.0)
    ap.add_argument("--batch", type=int, default=None)
    args = ap.parse_args()
    benches = all_benchmarks()
    names = args.names or list(benches)
    head = (
        f"{'benchmark':<10}{'t_best s':>9}{'states':>9}{'st/s':>7}{'stop':>10}"
        f"{'kern':>6}{'us':>8}{'expert us':>10}{'spec us':>9}  pruned (share of candidate ops)"
    )
    print(f"search at paper size, preset per benchmark, time limit {args.time_limit:g} s; modelled costs")
    print(head)
    print("-" * len(head))
    for name in names:
        b = benches[name]
        spec, expert = b.spec("paper", args.batch), b.expert("paper", args.batch)
        t0 = time.monotonic()
        s = Searcher(spec, get_config(b.preset), FFEvaluator(), _verify, modeled_us, Budget(time_limit=args.time_limit))
        r = s.run()
        st = r.stats
        total = sum(st.pruned.values()) or 1
        pruned = ", ".join(f"{k} {v / total:.1%}" for k, v in st.pruned.most_common(4))
        best = r.best
        print(
            f"{name:<10}{st.time_to_best if st.time_to_best is not None else '-':>9}{st.states:>9}"
            f"{st.states / max(st.seconds, 1e-9):>7.0f}{st.stop_reason:>10}"
            f"{best.kernels if best else '-':>6}{(f'{best.cost:.2f}' if best else '-'):>8}"
            f"{modeled_us(expert):>10.2f}{modeled_us(spec):>9.2f}  {pruned}"
            f"  [{time.monotonic() - t0:.0f} s]",
            flush=True,
        )


if __name__ == "__main__":
    main()
