"""What `mirage-py emit` and `mirage-py run` do (the CLI only parses arguments and prints).

emit: optionally prove GRAPH equivalent to SPEC, then write OUT (kernels, runtime,
launch.json, mugraph.json, spec.json, module.py) into a temporary folder beside OUT and
rename it at the end, so a failure leaves OUT as it was.

run: run an emitted OUT (or a graph, emitted into a temporary folder first) on random
inputs, under the CPU emulation or on a GPU, and with `check` compare every output with the
float64 reference.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..ir.dtypes import round_to
from ..ir.errors import InputError
from ..ir.graph import KernelGraph
from ..ir.serialize import dumps, load
from .emit import Program, emit_program
from .emulate import EmulationError
from .run import EmulatedPrograms, OutputCheck, check_outputs, read_launch


@dataclass
class EmitResult:
    program: Program
    verified: bool | None  # None: no spec given
    trials: int = 0
    error_bound: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.program.out),
            "target": self.program.target,
            "verified": self.verified,
            "trials": self.trials,
            "error_bound": self.error_bound,
            "kernels": [
                {k: getattr(kern, k) for k in ("name", "op", "grid", "block", "shared_bytes", "forloop", "barriers")}
                for kern in self.program.kernels
            ],
        }


class NotEquivalent(Exception):
    """GRAPH is not proven equivalent to SPEC (a negative answer: exit 1)."""


def _replace_dir(tmp: Path, out: Path) -> None:
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.resolve().parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def write_module_if_available(out: Path) -> None:
    """OUT/module.py, from the module template when that part of the package is present."""
    try:
        from .module_template import write_module
    except ImportError:
        return
    write_module(out)


def emit_to(graph: KernelGraph, out: Path, spec: KernelGraph | None = None, target: str = "sm_90") -> EmitResult:
    verified: bool | None = None
    trials, bound = 0, None
    if spec is not None:
        from ..verify import equivalent

        verdict = equivalent(spec, graph)
        if not verdict.equivalent:
            raise NotEquivalent(f"GRAPH is not proven equivalent to SPEC: {verdict.reason}. {verdict.detail}".strip())
        verified, trials, bound = True, verdict.trials, verdict.error_bound
    out = Path(out)
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        prog = emit_program(graph, tmp, target)
        (tmp / "mugraph.json").write_text(dumps(graph) + "\n")
        if spec is not None:
            (tmp / "spec.json").write_text(dumps(spec) + "\n")
        write_module_if_available(tmp)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prog.out = out
    return EmitResult(prog, verified, trials, bound)


# ---------------------------------------------------------------------------------------
# run


@dataclass
class RunResult:
    device: str
    outputs: dict[str, np.ndarray]
    checks: list[OutputCheck] = field(default_factory=list)
    seconds: float = 0.0
    kernels: int = 0
    error: str | None = None  # an emulated run that reported races or errors

    @property
    def ok(self) -> bool:
        return self.error is None and all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        rows = []
        for name, y in self.outputs.items():
            row: dict[str, Any] = {"name": name, "shape": list(y.shape), "finite": bool(np.all(np.isfinite(y)))}
            chk = next((c for c in self.checks if c.name == name), None)
            if chk is not None:
                row |= {"max_abs": chk.max_abs, "scaled": chk.scaled, "tolerance": chk.tolerance, "ok": chk.ok}
            rows.append(row)
        return {
            "device": self.device,
            "ok": self.ok,
            "checked": bool(self.checks),
            "kernels": self.kernels,
            "seconds": round(self.seconds, 3),
            "outputs": rows,
            "error": self.error,
        }


def launch_inputs(out: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for OUT's graph inputs: normal / sqrt(last dim), rounded to their
    dtypes (the same distribution the GPU runner draws)."""
    rng = np.random.default_rng(seed)
    res = {}
    for io in read_launch(out)["inputs"]:
        shape = tuple(io["shape"])
        x = rng.standard_normal(shape, dtype=np.float32) / np.float32(math.sqrt(shape[-1]))
        res[io["name"]] = round_to(x, io["dtype"])
    return res


def _graph_of(out: Path) -> KernelGraph | None:
    path = out / "mugraph.json"
    return load(path) if path.exists() else None


def run_path(
    path: Path, device: str = "emulate", check: bool = False, target: str = "sm_90", seed: int = 0
) -> RunResult:
    """Run GRAPH.json (emitted into a temporary folder) or an emitted OUT folder."""
    path = Path(path)
    if path.is_dir():
        if not (path / "launch.json").exists():
            raise InputError(f"{path}: a folder without launch.json (expected an emitted OUT)")
        return _run_out(path, _graph_of(path), device, check, seed)
    graph = load(path)
    with tempfile.TemporaryDirectory(prefix="mirage-py-run-") as tmp:
        out = Path(tmp) / "out"
        emit_program(graph, out, target)
        return _run_out(out, graph, device, check, seed)


def _run_out(out: Path, graph: KernelGraph | None, device: str, check: bool, seed: int) -> RunResult:
    if check and graph is None:
        raise InputError(f"{out}: --check needs the graph (OUT/mugraph.json is missing)")
    inputs = launch_inputs(out, seed)
    kernels = len(read_launch(out)["kernels"])
    t0 = time.perf_counter()
    if device == "gpu":
        outputs = _run_gpu(out, inputs)
    else:
        try:
            outputs, _ = EmulatedPrograms.build([out]).run(out, inputs)
        except EmulationError as e:
            return RunResult("emulate", {}, [], time.perf_counter() - t0, kernels, str(e).splitlines()[0])
    seconds = time.perf_counter() - t0
    checks = check_outputs(graph, inputs, outputs) if check and graph is not None else []
    return RunResult(device, outputs, checks, seconds, kernels)


def _run_gpu(out: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The CuPy runner (mirage_py.codegen.gpu), imported only when asked for."""
    try:
        from . import gpu
    except ImportError:
        raise InputError("--gpu: the GPU runner is not part of this installation; use --emulate") from None
    ok, why = gpu.gpu_available()
    if not ok:
        raise InputError(f"--gpu: no usable GPU here ({why}); use --emulate")
    prog = gpu.GpuProgram(out)
    spec = read_launch(out)
    dtypes = {io["name"]: io["dtype"] for io in spec["inputs"] + spec["outputs"]}
    import cupy

    dev = {
        n: cupy.asarray(gpu.to_bf16_bits(x) if dtypes[n] == "bfloat16" else x.astype(gpu.HOST_DTYPE[dtypes[n]]))
        for n, x in inputs.items()
    }
    res = prog.run(dev)
    return {n: gpu.to_host_float(a, dtypes[n]).astype(np.float32) for n, a in res.items()}
