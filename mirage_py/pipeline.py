"""`optimize` as one function: spec → search → verify → numerics → rank → OUT.

The only module that joins the search with what comes after it. OUT is written into a
temporary folder beside it and renamed at the end, so a failure leaves nothing in OUT.
OUT also holds the emitted program: kernels/*.cu, runtime/*.cuh, launch.json and module.py.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .codegen.cost import describe, modeled_us
from .codegen.emit import emit_program
from .codegen.module_template import write_module
from .ir.canonical import graph_hash
from .ir.graph import KernelGraph
from .ir.serialize import dumps
from .ir.show import render_text, report_header
from .search.config import SearchConfig
from .search.enumerate import Budget, SearchResult
from .search.executors import SearchRun, search_subspaces
from .verify import equivalent
from .verify.numerics import numerics


@dataclass
class OptimizeOptions:
    config: SearchConfig
    budget: Budget
    jobs: int = 1
    seed: int = 0
    require_improvement: bool = False
    cache: Path | None = None  # the result cache and checkpoints (None: no cache)
    resume: bool = False  # read back the finished sub-spaces of an interrupted search
    executor: str = "local"  # or "ray"
    ray_address: str | None = None


def default_inputs(spec: KernelGraph, seed: int) -> dict[str, np.ndarray]:
    """Inputs for the numerics check when the caller has no distribution of its own:
    normal with standard deviation 1/sqrt(last dim), so a product or sum over that dim
    stays of order one and the spec itself does not overflow in 16-bit types."""
    rng = np.random.default_rng(seed)
    return {
        n: rng.standard_normal(spec.types[t].dims) / math.sqrt(spec.types[t].dims[-1])
        for n, t in zip(spec.input_names, spec.inputs)
    }


# ---------------------------------------------------------------------------------------
# Search, in one process or several over disjoint sub-spaces


def run_search(spec: KernelGraph, opts: OptimizeOptions, on_states: Callable[[int], None] | None = None) -> SearchRun:
    """The search over disjoint sub-spaces (the top-level choices dealt round robin) on the
    chosen executor, through the result cache and its checkpoints when `opts.cache` is set
    (search/executors.py); results merged by hash."""
    return search_subspaces(
        spec,
        opts.config,
        opts.budget,
        cost=modeled_us,  # the analytic model (H100); search itself never imports codegen
        seed=opts.seed,
        jobs=opts.jobs,
        executor=opts.executor,
        ray_address=opts.ray_address,
        cache=opts.cache,
        resume=opts.resume,
        on_states=on_states,
    )


# ---------------------------------------------------------------------------------------
# optimize


def optimize(
    spec: KernelGraph,
    out: Path,
    opts: OptimizeOptions,
    inputs: Mapping[str, np.ndarray] | None = None,
    on_states: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Search, choose the best verified and numerically sound graph (or the spec itself),
    write OUT, and return the report (the `--json` object)."""
    t0 = time.monotonic()
    result = run_search(spec, opts, on_states)
    baseline_us = modeled_us(spec)
    feed = dict(inputs) if inputs is not None else default_inputs(spec, opts.seed)
    winner, verdict, num = spec, None, None
    for cand in result.candidates:
        if cand.cost >= baseline_us:
            break
        v = equivalent(spec, cand.graph, seed=opts.seed + 1000)  # fresh trials, not the search's
        if not v.equivalent:
            continue
        n = numerics(spec, cand.graph, feed)
        if n.ok and not n.unstable:
            winner, verdict, num = cand.graph, v, n
            break
    found = winner is not spec
    if verdict is None:  # the spec itself: trivially equivalent, still checked end to end
        verdict = equivalent(spec, winner, seed=opts.seed + 1000)
        num = numerics(spec, winner, feed)
    report = _report(spec, winner, found, verdict, num, result, baseline_us, opts, time.monotonic() - t0)
    _write_out(out, spec, winner, report, result, opts.config.target)
    return report


def _report(
    spec: KernelGraph,
    winner: KernelGraph,
    found: bool,
    verdict: Any,
    num: Any,
    result: SearchRun,
    baseline_us: float,
    opts: OptimizeOptions,
    seconds: float,
) -> dict[str, Any]:
    st = result.stats.to_json()
    return {
        **report_header(__version__, opts.seed),
        "found": found,
        "verified": bool(verdict.equivalent),
        "trials": verdict.trials,
        "error_bound": verdict.error_bound,
        "verify_reason": verdict.reason,  # None when verified; else mismatch, outside-fragment, inconclusive
        "cache_hit": result.cache_hit,
        "improved": found and modeled_us(winner) < baseline_us,
        "config": json.loads(opts.config.to_json()),
        "search": {**st, "candidates": len(result.candidates), "jobs": opts.jobs, **result.info},
        "best": {
            "hash": graph_hash(winner),
            "kernels": len(winner.nodes),
            "modeled_us": round(modeled_us(winner), 3),
            "measured_us": None,
            "cost_model": describe(),
        },
        "baseline": {"hash": graph_hash(spec), "kernels": len(spec.nodes), "modeled_us": round(baseline_us, 3)},
        "numerics": num.to_json() if num is not None else None,
        "seconds": round(seconds, 3),
        "gpu": None,
        "note": "no GPU was used: times are modelled",
    }


def _report_md(spec: KernelGraph, winner: KernelGraph, report: dict[str, Any]) -> str:
    s, b, base = report["search"], report["best"], report["baseline"]
    speed = base["modeled_us"] / b["modeled_us"] if b["modeled_us"] else float("nan")
    bound = report["error_bound"]
    lines = [
        "# mirage-py optimize report",
        "",
        f"mirage-py {report['version']}, seed {report['seed']}, {report['machine'].get('system', '')} {report['machine'].get('arch', '')}, {report['machine'].get('cpus', '')} CPUs",
        "",
        "## Result",
        "",
        f"- found a better μGraph: **{'yes' if report['found'] else 'no (OUT holds the spec, op by op)'}**",
        f"- kernels: {base['kernels']} → {b['kernels']}",
        f"- modelled time: {base['modeled_us']} µs → {b['modeled_us']} µs ({speed:.2f}×; {b['cost_model']})",
        f"- winner hash: `{b['hash']}`",
        "",
        "## Evidence",
        "",
        f"- finite-field equivalence: {'proven' if report['verified'] else 'NOT proven'} in {report['trials']} trials, "
        f"error bound {bound:.3g}"
        if bound is not None
        else f"- finite-field equivalence: not proven ({report.get('verify_reason')})",
        f"- numerics (float32 and the graph's dtype vs float64): {'ok' if report['numerics']['ok'] else 'FAILED'}",
        "",
        "## Search",
        "",
        f"- states {s['states']} in {s['seconds']} s ({s['states_per_second']} states/s), stop reason: {s['stop_reason']}",
        f"- candidates verified: {s['verified']}, rejected: {s['rejected']}, time to first {s['time_to_first']} s, "
        f"to best {s['time_to_best']} s",
        f"- pruned: {', '.join(f'{k} {v}' for k, v in s['pruned'].items()) or 'nothing'}",
        "",
        "## The winner",
        "",
        "```",
        render_text(winner),
        "```",
        "",
    ]
    return "\n".join(lines)


def _write_out(
    out: Path, spec: KernelGraph, winner: KernelGraph, report: dict[str, Any], result: SearchResult, target: str
) -> None:
    out = Path(out)
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        (tmp / "spec.json").write_text(dumps(spec) + "\n")
        (tmp / "mugraph.json").write_text(dumps(winner) + "\n")
        (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        (tmp / "report.md").write_text(_report_md(spec, winner, report))
        # The runnable program: kernels/*.cu, runtime/*.cuh, launch.json, and module.py.
        emit_program(winner, tmp, target=target)
        write_module(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
