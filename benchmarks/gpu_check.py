"""GPU check: emit the six benchmarks' experts (and specs, op by op, and search winners when
given), build them with CuPy (NVRTC), check them against PyTorch and the float64
reference, time them against PyTorch eager and torch.compile, run compute-sanitizer's
memcheck and racecheck once each at small size, and rank-correlate the cost model with the
measurements (Kendall tau).

    python benchmarks/gpu_check.py [--size paper] [--batch B] [--winners DIR] [--json-out F]
                                   [--reps N] [--no-compile] [--no-sanitizer] [--dry-run]

Meant for a GPU machine with CuPy (for CUDA 13), PyTorch and compute-sanitizer, with no
network and without z3 or egglog: nothing on this path imports them (checked at the end).
`--dry-run` does everything a machine without a GPU can: emits every program, prices it
with the cost model and lists what would be measured. `benchmarks/gpu_check.sh` is the
one-line entry point. Medians are of `--reps` runs with L2 flushed before each.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Run from a checkout without installing: the package sits one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mirage_py.benchmarks import Benchmark, all_benchmarks  # noqa: E402
from mirage_py.codegen import gpu as G  # noqa: E402
from mirage_py.codegen.cost import GPUS, modeled_us  # noqa: E402
from mirage_py.ir import KernelGraph, load  # noqa: E402
from mirage_py.ir.dtypes import round_to  # noqa: E402

T0 = time.monotonic()
SOFT_LIMIT_S = 360.0  # start no optional work (specs, torch.compile) past this
HARD_LIMIT_S = 450.0  # gpu_check.sh kills the run at 470 s; the whole check must end in < 8 min
SANITIZER_LIMIT_S = 120.0  # per compute-sanitizer run


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# What to run


@dataclass
class Case:
    bench: str
    label: str  # "spec" (op by op), an expert's name, or "winner"
    graph: KernelGraph
    out: Path | None = None
    modeled_us: float = math.nan
    measured_us: float | None = None
    error_ref: float | None = None  # scaled error vs the float64 reference
    error_torch: float | None = None  # scaled error vs PyTorch eager (float16)
    ok: bool | None = None
    note: str = ""
    kernels: int = 0


def cases(size: str, batch: int | None, winners: Path | None) -> list[tuple[Benchmark, Case]]:
    out = []
    for name, b in all_benchmarks().items():
        out.append((b, Case(name, "spec", b.spec(size, batch))))  # type: ignore[arg-type]
        for ename, g in b.experts(size, batch).items():  # type: ignore[arg-type]
            out.append((b, Case(name, ename, g)))
        w = winners / f"{name}.json" if winners else None
        if w is not None and w.is_file():
            out.append((b, Case(name, "winner", load(w))))
    return out


def emit(graph: KernelGraph, out: Path, target: str) -> Path:
    """Write OUT for `graph` with the emitter (launch.json, kernels/, runtime/)."""
    from mirage_py.codegen.emit import emit_program

    emit_program(graph, out, target=target)
    return out


def model_gpu(name: str) -> str:
    """The cost model's entry for a device name (H100 unless the name says otherwise)."""
    for key in ("H200", "A100", "H100"):
        if key in name.upper():
            return key
    return "H100"


# ---------------------------------------------------------------------------------------
# PyTorch: the spec op by op (eager), and torch.compile of the same function


def _torch_ops() -> dict[str, Callable[..., Any]]:
    import torch
    import torch.nn.functional as F

    def reduce_sum(x, dim, size):
        shape = list(x.shape)
        m = shape[dim] // size
        return x.reshape(shape[:dim] + [m, size] + shape[dim + 1 :]).sum(dim)

    def rms_norm(x, eps):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + float(eps))

    # The baseline PyTorch program: each kernel-level op of a spec as the PyTorch call a user
    # would write. Only specs run here (they have no customized ops).
    return {
        "matmul": lambda a, b: a @ b,
        "exp": torch.exp,
        "square": lambda x: x * x,
        "sqrt": torch.sqrt,
        "sigmoid": torch.sigmoid,
        "silu": F.silu,
        "gelu": lambda x, approximate: F.gelu(x, approximate=approximate),
        "relu": torch.relu,
        "neg": torch.neg,
        "reciprocal": torch.reciprocal,
        "mul_scalar": lambda x, c: x * float(c),
        "add_scalar": lambda x, c: x + float(c),
        "pow_scalar": lambda x, c: torch.pow(x, float(c)),
        "add": torch.add,
        "sub": torch.sub,
        "mul": torch.mul,
        "div": torch.div,
        "reduce_sum": reduce_sum,
        "transpose": lambda x: x.transpose(-1, -2),
        "concat": lambda a, b, dim: torch.cat((a, b), dim),
        "rms_norm": rms_norm,
    }


def torch_function(spec: KernelGraph) -> Callable[..., Any]:
    ops = _torch_ops()

    def fn(*args: Any) -> Any:
        vals = dict(zip(spec.inputs, args))
        for node in spec.nodes:
            attrs = {k: v for k, v in node.attrs.items()}
            vals[node.outputs[0]] = ops[node.op](*(vals[i] for i in node.inputs), **attrs)
        return tuple(vals[o] for o in spec.outputs)

    return fn


# ---------------------------------------------------------------------------------------
# Measuring


def scaled_error(y: np.ndarray, ref: np.ndarray) -> float:
    scale = float(np.max(np.abs(ref))) or 1.0
    return float(np.max(np.abs(y.astype(np.float64) - ref))) / scale


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b of two equally long lists (ties counted in neither pair count)."""
    conc = disc = ties_a = ties_b = 0
    n = len(a)
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + ties_a) * (conc + disc + ties_b))
    return (conc - disc) / denom if denom else math.nan


@dataclass
class BenchTimes:
    eager_us: float | None = None
    compile_us: float | None = None
    eager_out: list[np.ndarray] = field(default_factory=list, repr=False)
    notes: list[str] = field(default_factory=list)


def _torch_args(spec: KernelGraph, host: dict[str, np.ndarray]) -> tuple[list[Any], Any]:
    import cupy
    import torch

    args = [torch.from_numpy(host[n].astype(np.float16)).cuda() for n in spec.input_names]
    # Time on torch's current stream (CuPy events recorded on the same stream).
    return args, cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)


def measure_eager(spec: KernelGraph, host: dict[str, np.ndarray], reps: int) -> BenchTimes:
    import torch

    fn = torch_function(spec)
    args, stream = _torch_args(spec, host)
    with torch.no_grad():
        out = fn(*args)
        t = G.time_callable(lambda: fn(*args), reps=reps, stream=stream)
    return BenchTimes(eager_us=t.median_us, eager_out=[o.float().cpu().numpy() for o in out])


def measure_compiled(spec: KernelGraph, host: dict[str, np.ndarray], reps: int, times: BenchTimes) -> None:
    import torch

    args, stream = _torch_args(spec, host)
    try:
        cfn = torch.compile(torch_function(spec))
        with torch.no_grad():
            cfn(*args)
            times.compile_us = G.time_callable(lambda: cfn(*args), reps=reps, stream=stream).median_us
    except Exception as exc:  # report, do not stop the whole check
        times.notes.append(f"torch.compile failed: {type(exc).__name__}: {str(exc)[:160]}")


def device_inputs(prog: G.GpuProgram, host: dict[str, np.ndarray]) -> dict[str, Any]:
    """Float32 host inputs as device arrays of each buffer's dtype (bfloat16 as bits)."""
    import cupy

    dev = {}
    for n, b in prog.plan.inputs:
        dtype, a = prog.plan.buffers[b].dtype, host[n]
        dev[n] = cupy.asarray(G.to_bf16_bits(a) if dtype == "bfloat16" else a.astype(G.HOST_DTYPE[dtype]))
    return dev


def measure_ours(case: Case, host: dict[str, np.ndarray], torch_out: Any, reps: int) -> None:
    import cupy

    from mirage_py.ir.execute import FloatInterpreter
    from mirage_py.verify.numerics import TOLERANCES

    assert case.out is not None
    prog = G.GpuProgram(case.out)
    dtypes = {n: prog.plan.buffers[b].dtype for n, b in prog.plan.inputs + prog.plan.outputs}
    dev = device_inputs(prog, host)
    got = prog.run(dev)
    cupy.cuda.get_current_stream().synchronize()
    # The reference sees the inputs as the kernels do: rounded to their dtype.
    ref_in = {n: round_to(a, dtypes[n]).astype(np.float64) for n, a in host.items()}
    ref = FloatInterpreter("float64").run(case.graph, ref_in)
    names = case.graph.output_names
    ys = [G.to_host_float(got[n], dtypes[n]) for n in names]
    case.error_ref = max(scaled_error(y, r) for y, r in zip(ys, ref))
    if torch_out:
        case.error_torch = max(scaled_error(y, t.astype(np.float64)) for y, t in zip(ys, torch_out))
    tol = max(TOLERANCES[dtypes[n]] for n in names)
    case.ok = case.error_ref <= tol
    case.measured_us = G.time_program(prog, dev, reps=reps).median_us


# ---------------------------------------------------------------------------------------
# compute-sanitizer


# memcheck ends with "ERROR SUMMARY: N errors", racecheck with "RACECHECK SUMMARY: N hazards".
_SUMMARY = re.compile(r"(?:ERROR|RACECHECK) SUMMARY: (\d+)")


def sanitize(tool: str, args: argparse.Namespace) -> dict[str, Any]:
    exe = shutil.which("compute-sanitizer")
    if exe is None:
        return {"tool": tool, "ran": False, "note": "compute-sanitizer not found"}
    cmd = [exe, "--tool", tool, "--error-exitcode", "9", sys.executable, __file__, "--sanitize-run", "--size", "small"]
    t = time.monotonic()
    limit = max(30.0, min(SANITIZER_LIMIT_S, HARD_LIMIT_S - (t - T0)))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"tool": tool, "ran": False, "note": f"timed out after {limit:.0f} s"}
    m = _SUMMARY.search(proc.stdout + proc.stderr)
    return {
        "tool": tool,
        "ran": True,
        "exit": proc.returncode,
        "errors": int(m.group(1)) if m else None,
        "seconds": round(time.monotonic() - t, 1),
        "tail": (proc.stdout + proc.stderr)[-1500:] if proc.returncode else "",
    }


def sanitize_run(args: argparse.Namespace) -> int:
    """Inside compute-sanitizer: every expert at small size, built and run once."""
    import cupy

    tmp = Path(tempfile.mkdtemp(prefix="mp-sanitize-"))
    try:
        for b, case in cases("small", None, None):
            if case.label == "spec":
                continue
            out = emit(case.graph, tmp / f"{case.bench}_{case.label}", args.target)
            prog = G.GpuProgram(out)
            prog.run(device_inputs(prog, b.inputs(case.graph, seed=0)))
            cupy.cuda.runtime.deviceSynchronize()
            print(f"sanitized {case.bench}/{case.label}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


# ---------------------------------------------------------------------------------------
# Report


def render(rows: list[Case], times: dict[str, BenchTimes], gpu_name: str, measured: bool) -> str:
    head = ["benchmark", "program", "kernels", "modelled us", "ours us", "eager us", "compile us",
            "x eager", "x compile", "err vs f64", "err vs torch", "ok"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(x: float | None, d: int = 2) -> str:
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"

    for c in rows:
        t = times.get(c.bench, BenchTimes())
        xe = t.eager_us / c.measured_us if t.eager_us and c.measured_us else None
        xc = t.compile_us / c.measured_us if t.compile_us and c.measured_us else None
        err = [
            f(c.error_ref, 5) if c.error_ref is not None else "-",
            f(c.error_torch, 5) if c.error_torch is not None else "-",
        ]
        ok = "-" if c.ok is None else ("yes" if c.ok else "NO")
        lines.append("| " + " | ".join([c.bench, c.label, str(c.kernels), f(c.modeled_us), f(c.measured_us),
                     f(t.eager_us), f(t.compile_us), f(xe), f(xc), *err, ok]) + " |")  # fmt: skip
    title = f"GPU: {gpu_name}" if measured else "DRY RUN (no GPU): modelled times only"
    return title + "\n\n" + "\n".join(lines)


def prepare(case: Case, key: str, tmp: Path, target: str) -> None:
    """Model and emit one program."""
    case.modeled_us = modeled_us(case.graph, key)
    case.kernels = len(case.graph.nodes)
    try:
        case.out = emit(case.graph, tmp / f"{case.bench}_{case.label}", target)
        case.kernels = len(G.read_launch(case.out).kernels)  # launches as emitted
        log(f"{case.bench}/{case.label}: emitted {case.kernels} kernel(s), modelled {case.modeled_us:.2f} us")
    except Exception as exc:
        case.note, case.ok = f"emit failed: {type(exc).__name__}: {exc}", False
        log(f"{case.bench}/{case.label}: {case.note}")


def run_cases(
    todo: list[tuple[Benchmark, Case]], times: dict[str, BenchTimes], args: argparse.Namespace, budget: bool
) -> None:
    """Build, check and time each emitted case (and PyTorch eager once per benchmark)."""
    for b, case in todo:
        if case.out is None:
            continue
        if budget and time.monotonic() - T0 > SOFT_LIMIT_S:
            case.note = "not measured: time budget"
            continue
        spec = b.spec(args.size, args.batch)
        host = b.inputs(spec, seed=0)
        if b.name not in times:
            try:
                times[b.name] = measure_eager(spec, host, args.reps)
            except Exception as exc:  # no PyTorch baseline: ours is still checked and timed
                times[b.name] = BenchTimes(notes=[f"PyTorch eager failed: {type(exc).__name__}: {str(exc)[:160]}"])
        try:
            measure_ours(case, host, times[b.name].eager_out, args.reps)
        except Exception as exc:
            case.note, case.ok = f"{type(exc).__name__}: {str(exc)[:300]}", False
        log(f"{case.bench}/{case.label}: {case.measured_us} us, err {case.error_ref}, ok {case.ok} {case.note}")


def compile_all(todo: list[tuple[Benchmark, Case]], times: dict[str, BenchTimes], args: argparse.Namespace) -> None:
    """torch.compile of each benchmark's spec, while the time budget lasts."""
    for b in {b.name: b for b, _ in todo}.values():
        if b.name not in times:
            continue
        if time.monotonic() - T0 > SOFT_LIMIT_S:
            times[b.name].notes.append("torch.compile skipped: time budget")
            continue
        spec = b.spec(args.size, args.batch)
        measure_compiled(spec, b.inputs(spec, seed=0), args.reps, times[b.name])


ROW_KEYS = ("bench", "label", "kernels", "modeled_us", "measured_us", "error_ref", "error_torch", "ok", "note")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="paper", choices=["paper", "small"])
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--winners", type=Path, default=None, help="folder of <benchmark>.json search winners")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--target", default=None, help="sm_80 or sm_90 (default: the GPU's, else sm_90)")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--no-sanitizer", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="no GPU: emit and model only")
    ap.add_argument("--sanitize-run", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    have_gpu, why = G.gpu_available()
    if args.target is None:
        args.target = f"sm_{min(G.compute_capability(), 90)}" if have_gpu else "sm_90"
    if args.sanitize_run:
        return sanitize_run(args)
    measured = have_gpu and not args.dry_run
    if not have_gpu and not args.dry_run:
        print(f"{why}. Nothing to measure; run with --dry-run to emit and model only.", file=sys.stderr)
        return 2
    gpu_name = G.device_name() if measured else why
    key = model_gpu(gpu_name) if measured else "H100"
    log(f"{'GPU ' + gpu_name if measured else 'dry run'}; cost model: {GPUS[key].name}; size {args.size}")

    tmp = Path(tempfile.mkdtemp(prefix="mp-gpu-check-"))
    todo = cases(args.size, args.batch, args.winners)
    rows = [c for _, c in todo]
    times: dict[str, BenchTimes] = {}
    report: dict[str, Any] = {"gpu": gpu_name if measured else None, "size": args.size, "measured": measured}
    try:
        for _, case in todo:
            prepare(case, key, tmp, args.target)
        if measured:
            # The essentials first (experts vs eager), then the sanitizers, then what only
            # adds to the picture (specs op by op for tau, torch.compile), within the budget.
            run_cases([t for t in todo if t[1].label != "spec"], times, args, budget=False)
            if not args.no_sanitizer:
                report["sanitizer"] = [sanitize(t, args) for t in ("memcheck", "racecheck")]
            run_cases([t for t in todo if t[1].label == "spec"], times, args, budget=True)
            if not args.no_compile:
                compile_all(todo, times, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    failures = sum(1 for c in rows if c.ok is False)
    failures += sum(1 for s in report.get("sanitizer", []) if s.get("ran") and s.get("exit") != 0)
    pairs = [(c.modeled_us, c.measured_us) for c in rows if c.measured_us is not None]
    tau = kendall_tau([p[0] for p in pairs], [p[1] for p in pairs]) if len(pairs) > 1 else math.nan
    print(render(rows, times, gpu_name, measured))
    print()
    if measured:
        print(f"Kendall tau, modelled ({GPUS[key].name}) vs measured ranking over {len(pairs)} programs: {tau:.3f}")
        for s in report.get("sanitizer", []):
            print(
                f"compute-sanitizer {s['tool']}: "
                + (f"{s['errors']} errors (exit {s['exit']})" if s["ran"] else s["note"])
            )
        for name, t in times.items():
            for n in t.notes:
                print(f"{name}: {n}")
    solvers = sorted({m.split(".")[0] for m in sys.modules} & {"z3", "egglog"})
    print(f"solver packages imported on this path: {solvers or 'none'}")
    print(f"total {time.monotonic() - T0:.0f} s")
    report.update(
        kendall_tau=None if math.isnan(tau) else round(tau, 4),
        solvers_imported=solvers,
        seconds=round(time.monotonic() - T0, 1),
        rows=[
            {k: getattr(c, k) for k in ROW_KEYS}
            | {
                "eager_us": times.get(c.bench, BenchTimes()).eager_us,
                "compile_us": times.get(c.bench, BenchTimes()).compile_us,
            }
            for c in rows
        ],
    )
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 1 if failures or solvers else 0


if __name__ == "__main__":
    sys.exit(main())
