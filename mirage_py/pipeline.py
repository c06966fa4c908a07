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
from .codegen.emit import Program, emit_program, plan_program
from .codegen.module_template import write_module
from .ir.canonical import graph_hash
from .ir.errors import InputError
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


def guess_preset(spec: KernelGraph) -> str:
    """The search preset the spec's structure calls for (`--config auto`), as the benchmarks
    name theirs: a matmul with an exp (softmax) is attention; a sum of a product and a
    product of products (x W + (x A) B) is lora; another matmul is mlp; else default."""
    ops = {n.op for n in spec.nodes}
    made = spec.producer()

    def by_matmul(t: int) -> bool:
        return t in made and made[t].op == "matmul"

    if {"matmul", "exp"} <= ops:
        return "attention"
    for n in spec.nodes:
        if n.op == "add" and all(by_matmul(t) for t in n.inputs):
            if any(by_matmul(i) for t in n.inputs for i in made[t].inputs):
                return "lora"
    return "mlp" if "matmul" in ops else "default"


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
    weights: Mapping[str, np.ndarray] | None = None,
    source: str = "",
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Search, choose the best verified and numerically sound graph (or the spec itself),
    write OUT, and return the report (the `--json` object).

    `weights` (spec input name -> array, from a frontend) go to OUT/weights.npz, bound by
    OUT/module.py, and feed the numerics check in place of random values; `source` names the
    INPUT in the reports; `on_stage` hears what happens after the search (progress)."""
    t0 = time.monotonic()
    stage = on_stage or (lambda _msg: None)
    result = run_search(spec, opts, on_states)
    baseline_us = modeled_us(spec)
    feed = dict(inputs) if inputs is not None else default_inputs(spec, opts.seed)
    feed |= {n: np.asarray(a, dtype=np.float64) for n, a in (weights or {}).items()}
    better = [c for c in result.candidates if c.cost < baseline_us]
    if better:
        stage(f"checking {len(better)} candidate(s) faster than the spec: verify, numerics, plan")
    winner, verdict, num = spec, None, None
    for cand in better:
        v = equivalent(spec, cand.graph, seed=opts.seed + 1000)  # fresh trials, not the search's
        if not v.equivalent:
            continue
        n = numerics(spec, cand.graph, feed)
        if _numerics_ok(n) and _plannable(cand.graph, opts.config.target):
            winner, verdict, num = cand.graph, v, n
            break
    found = winner is not spec
    if verdict is None:  # the spec itself: trivially equivalent, still checked end to end
        verdict = equivalent(spec, winner, seed=opts.seed + 1000)
        num = numerics(spec, winner, feed)
    report = _report(spec, winner, found, verdict, num, result, baseline_us, opts, time.monotonic() - t0)
    report["input"] = _input_json(spec, source, weights or {})
    stage(f"writing {out} ({len(winner.nodes)} kernel(s) for {opts.config.target})")
    _write_out(out, spec, winner, report, result, opts.config.target, weights or {})
    return report


def _numerics_ok(n: Any) -> bool:
    """Within tolerance, or failing only where the spec itself fails in the same precision
    (e.g. qknorm's softmax overflowing float16 without a max subtraction) and no worse: the
    winner must not be less accurate than the spec, not more accurate than it can be."""
    spec_ok = {(r.precision, r.output) for r in n.rows if r.graph == "spec" and r.ok}
    bad = [r for r in n.rows if r.graph == "candidate" and not r.ok]
    return not n.unstable and all((r.precision, r.output) not in spec_ok for r in bad)


def _plannable(graph: KernelGraph, target: str) -> bool:
    """Can codegen plan every kernel (tiles, shared memory within the target's limit)? A
    candidate it cannot emit is passed over, so OUT always holds a program that builds."""
    try:
        plan_program(graph, target)
    except InputError:
        return False
    return True


def _input_json(spec: KernelGraph, source: str, weights: Mapping[str, np.ndarray]) -> dict[str, Any]:
    def row(name: str, tid: int) -> dict[str, Any]:
        return {"name": name, "dims": list(spec.types[tid].dims), "dtype": spec.types[tid].dtype}

    pairs = list(zip(spec.input_names, spec.inputs))
    return {
        "source": source,
        "inputs": [row(n, t) for n, t in pairs if n not in weights],
        "weights": [row(n, t) for n, t in pairs if n in weights],
        "outputs": [row(n, t) for n, t in zip(spec.output_names, spec.outputs)],
    }


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


def _measure_on_gpu(tmp: Path, spec: KernelGraph, winner: KernelGraph, report: dict[str, Any], target: str) -> None:
    """On a usable GPU: check the emitted winner against the float64 reference and time it
    and the spec lowered op by op (CUDA events, median, L2 flushed between runs), into the
    report. Without a GPU the report keeps `measured_us: null`; a GPU failure (NVRTC, a
    launch) is recorded in the report rather than losing the CPU-side result."""
    from .codegen import gpu

    ok, device = gpu.gpu_available()
    report["baseline"].setdefault("measured_us", None)
    if not ok:
        return
    seed = report["seed"] or 0
    try:
        prog = gpu.GpuProgram(tmp)
        check = gpu.check_program(prog, winner, seed)
        best = gpu.time_program(prog, prog.random_inputs(seed)).median_us
        base = best
        if winner is not spec:
            with tempfile.TemporaryDirectory(prefix="mirage-py-spec-") as d:
                emit_program(spec, d, target=target)
                sp = gpu.GpuProgram(d)
                base = gpu.time_program(sp, sp.random_inputs(seed)).median_us
    except gpu.GpuError as e:
        report["gpu"] = {"device": device, "error": str(e).splitlines()[0]}
        return
    report["best"]["measured_us"] = round(best, 3)
    report["baseline"]["measured_us"] = round(base, 3)
    report["gpu"] = {"device": device, "check_ok": check.ok, "errors": check.errors}
    report["note"] = f"measured on {device} (CUDA events, median); modelled times from the cost model"


def _kernels_json(prog: Program) -> list[dict[str, Any]]:
    keys = ("name", "op", "grid", "block", "shared_bytes", "forloop", "barriers")
    return [{k: getattr(kern, k) for k in keys} for kern in prog.kernels]


def _report_md(spec: KernelGraph, winner: KernelGraph, report: dict[str, Any]) -> str:
    """report.md: what went in, what came out and why it can be trusted, for a person."""
    lines = ["# mirage-py optimize report", ""]
    lines += _md_input(report) + _md_result(report) + _md_evidence(report) + _md_search(report)
    lines += ["## The winner", "", "```", render_text(winner), "```", ""]
    lines += _md_kernels(report)
    m = report["machine"]
    lines += [
        f"_mirage-py {report['version']}, seed {report['seed']}, {m.get('system', '')} {m.get('arch', '')}, "
        f"{m.get('cpus', '')} CPUs, {report['seconds']} s in all._",
        "",
    ]
    return "\n".join(lines)


def _tensors_md(rows: list[dict[str, Any]]) -> str:
    return ", ".join(f"`{r['name']}` {r['dims']} {r['dtype']}" for r in rows) or "none"


def _md_input(report: dict[str, Any]) -> list[str]:
    inp = report.get("input")
    if not inp:
        return []
    return [
        "## Input",
        "",
        f"- source: `{inp['source'] or '(in memory)'}`",
        f"- runtime inputs: {_tensors_md(inp['inputs'])}",
        f"- weights (bound from weights.npz): {_tensors_md(inp['weights'])}",
        f"- outputs: {_tensors_md(inp['outputs'])}",
        "",
    ]


def _md_result(report: dict[str, Any]) -> list[str]:
    b, base = report["best"], report["baseline"]
    speed = base["modeled_us"] / b["modeled_us"] if b["modeled_us"] else float("nan")
    if report["found"]:
        verdict = f"**Found a faster μGraph**: {base['kernels']} → {b['kernels']} kernel(s), {speed:.2f}× (modelled)."
    else:
        verdict = "**Nothing faster than the spec was found**: OUT holds the spec, lowered op by op."
    measured = "not measured (no GPU was used)" if b["measured_us"] is None else f"{b['measured_us']}"
    base_measured = base.get("measured_us")
    g = report.get("gpu") or {}
    gpu_line = []
    if g.get("error"):
        gpu_line = [f"GPU ({g['device']}): not timed, {g['error']}", ""]
    elif g:
        gpu_line = [f"Measured on {g['device']}; output check on the GPU: {'ok' if g['check_ok'] else 'FAILED'}.", ""]
    return [
        "## Result",
        "",
        verdict,
        "",
        "| | kernels | modelled µs | measured µs |",
        "|---|---|---|---|",
        f"| spec (op by op) | {base['kernels']} | {base['modeled_us']} | {base_measured or '–'} |",
        f"| winner | {b['kernels']} | {b['modeled_us']} | {measured} |",
        "",
        f"Modelled times come from the {b['cost_model']}. Winner hash `{b['hash']}`.",
        "",
        *gpu_line,
    ]


def _md_evidence(report: dict[str, Any]) -> list[str]:
    bound = report["error_bound"]
    if report["verified"] and bound is not None:
        proof = f"proven equivalent to the spec in {report['trials']} finite-field trials (error bound {bound:.3g})"
    else:
        proof = f"NOT proven equivalent ({report.get('verify_reason')})"
    num = report["numerics"] or {"ok": False, "rows": []}
    rows = [
        f"| {r['graph']} | {r['precision']} | {r['output']} | {r['scaled']:.3g} | {r['tolerance']:g} | "
        f"{'ok' if r['ok'] else 'FAILED'} |"
        for r in num["rows"]
    ]
    spec_fails = sorted(
        {f"{r['output']} in {r['precision']}" for r in num["rows"] if r["graph"] == "spec" and not r["ok"]}
    )
    note = (
        [
            f"- the spec itself is beyond tolerance ({', '.join(spec_fails)}): a property of the program, not of the winner"
        ]
        if spec_fails
        else []
    )
    return [
        "## Evidence",
        "",
        f"- equivalence: {proof}",
        f"- numerics against the float64 reference (error scaled by max |reference|): "
        f"{'ok' if num['ok'] else 'FAILED'}",
        *note,
        "",
        "| graph | precision | output | scaled error | tolerance | verdict |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _md_search(report: dict[str, Any]) -> list[str]:
    s, cfg = report["search"], report["config"]
    pruned = ", ".join(f"{k} {v}" for k, v in s.get("pruned", {}).items()) or "nothing"
    return [
        "## Search",
        "",
        f"- preset `{cfg.get('preset')}`, target {cfg.get('target')}; cache hit: {'yes' if report['cache_hit'] else 'no'}",
        f"- {s['states']} states in {s['seconds']} s, stop reason: {s['stop_reason']}",
        f"- candidates: {s.get('candidates', 0)} (verified {s.get('verified')}, rejected {s.get('rejected')}); "
        f"time to first {s.get('time_to_first')} s, to best {s.get('time_to_best')} s",
        f"- pruned: {pruned}",
        "",
    ]


def _md_kernels(report: dict[str, Any]) -> list[str]:
    rows = [
        f"| `{k['name']}` | {k['op']} | {k['grid']} | {k['block']} | {k['shared_bytes']} | {k['forloop']} | "
        f"{k['barriers']} |"
        for k in report.get("kernels", [])
    ]
    return [
        "## Emitted kernels",
        "",
        "kernels/*.cu with runtime/*.cuh; launch.json says how to launch them, module.py runs them.",
        "",
        "| kernel | op | grid | block | shared bytes | loop | barriers |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _write_out(
    out: Path,
    spec: KernelGraph,
    winner: KernelGraph,
    report: dict[str, Any],
    result: SearchResult,
    target: str,
    weights: Mapping[str, np.ndarray],
) -> None:
    out = Path(out)
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        (tmp / "spec.json").write_text(dumps(spec) + "\n")
        (tmp / "mugraph.json").write_text(dumps(winner) + "\n")
        # The runnable program: kernels/*.cu, runtime/*.cuh, launch.json, weights.npz and
        # module.py (written last: it lists the inputs that weights.npz does not bind).
        prog = emit_program(winner, tmp, target=target)
        if weights:
            arrays: dict[str, Any] = {n: np.ascontiguousarray(a) for n, a in weights.items()}
            np.savez(tmp / "weights.npz", **arrays)
        write_module(tmp)
        report["kernels"] = _kernels_json(prog)
        _measure_on_gpu(tmp, spec, winner, report, target)
        (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        (tmp / "report.md").write_text(_report_md(spec, winner, report))
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
