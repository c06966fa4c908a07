"""Emit a kernel graph as CUDA: OUT/kernels/*.cu (one `__global__` per kernel op),
OUT/runtime/*.cuh (the device library) and OUT/launch.json (how to launch them).

Every kernel op becomes one block graph (customized ops have theirs; predefined ops are
lowered by `lower.py`), planned by `plan.py` and rendered by `render.py`. launch.json's
fields are described in docs/codegen.md.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..ir.dtypes import ITEMSIZE
from ..ir.errors import InputError
from ..ir.graph import BlockGraph, KernelGraph
from .emulate import RUNTIME_DIR
from .lower import lower_kernel_op
from .plan import KernelPlan, plan_kernel
from .render import render_kernel

LAUNCH_FORMAT = "mirage-py.launch.v1"
_IDENT = re.compile(r"[^A-Za-z0-9_]")


@dataclass
class KernelInfo:
    """One emitted kernel, as launch.json lists it."""

    name: str
    source: str
    customized: bool
    op: str
    grid: list[int]
    block: list[int]
    shared_bytes: int
    args: list[str]
    dtypes: list[str]
    reads: list[str]
    writes: list[str]
    forloop: int = 1
    barriers: int = 0  # __syncthreads in the source (static count)


@dataclass
class Program:
    """What emit_program wrote: the kernels and buffers of launch.json, and the plans."""

    out: Path
    target: str
    kernels: list[KernelInfo]
    buffers: list[dict[str, Any]]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    plans: list[KernelPlan] = field(default_factory=list, repr=False)

    def launch_json(self) -> dict[str, Any]:
        return {
            "format": LAUNCH_FORMAT,
            "target": self.target,
            "include_dirs": ["runtime"],
            "inputs": self.inputs,
            "outputs": self.outputs,
            "buffers": self.buffers,
            "kernels": [_kernel_json(k) for k in self.kernels],
        }


def _kernel_json(k: KernelInfo) -> dict[str, Any]:
    d = asdict(k)
    return d


def _sanitize(name: str, fallback: str) -> str:
    s = _IDENT.sub("_", name) or fallback
    return "x" + s if s[0].isdigit() else s


def buffer_names(kg: KernelGraph) -> dict[int, str]:
    """A buffer name (a C identifier) for every kernel tensor: inputs and outputs keep their
    names, intermediates are buf<id>."""
    names: dict[int, str] = {}
    used: set[str] = set()

    def claim(tid: int, want: str) -> None:
        if tid in names:
            return
        name, n = want, 1
        while name in used:
            name, n = f"{want}_{n}", n + 1
        names[tid] = name
        used.add(name)

    for tid, name in zip(kg.inputs, kg.input_names):
        claim(tid, _sanitize(name, f"in{tid}"))
    for tid, name in zip(kg.outputs, kg.output_names):
        claim(tid, _sanitize(name, f"out{tid}"))
    for tid in range(len(kg.types)):
        # Not t<id>: that is how kernels name their block tensors.
        claim(tid, f"buf{tid}")
    return names


def kernel_block_graph(kg: KernelGraph, k: int) -> tuple[BlockGraph, bool]:
    node = kg.nodes[k]
    if node.op == "customized":
        return node.attrs["block_graph"], True
    try:
        return lower_kernel_op(kg, node), False
    except (ValueError, AssertionError) as e:
        raise InputError(f"kernel {k} ({node.op}): cannot tile it for codegen: {e}") from None


def plan_program(kg: KernelGraph, target: str = "sm_90", prefix: str = "") -> list[KernelPlan]:
    names = buffer_names(kg)
    plans = []
    for k, node in enumerate(kg.nodes):
        bg, _ = kernel_block_graph(kg, k)
        params = [names[t] for t in node.inputs] + [names[t] for t in node.outputs]
        plans.append(plan_kernel(bg, f"{prefix}k{k}_{node.op}", params, target, node.op))
    return plans


def emit_program(graph: KernelGraph, out: Path | str, target: str = "sm_90", prefix: str = "") -> Program:
    """Write OUT/kernels/*.cu, OUT/runtime/*.cuh and OUT/launch.json for `graph`. Kernel
    names start with `prefix` (so several programs can share one build). OUT is created;
    files already in it are overwritten. Raises InputError when a kernel cannot be planned
    (e.g. it needs more shared memory than the target has)."""
    graph.validate()
    out = Path(out)
    names = buffer_names(graph)
    plans = plan_program(graph, target, prefix)
    (out / "kernels").mkdir(parents=True, exist_ok=True)
    runtime = out / "runtime"
    runtime.mkdir(exist_ok=True)
    for f in sorted(RUNTIME_DIR.iterdir()):
        if f.suffix in (".cuh", ".h"):
            shutil.copyfile(f, runtime / f.name)
    kernels = []
    for node, plan in zip(graph.nodes, plans):
        src = render_kernel(plan)
        rel = f"kernels/{plan.name}.cu"
        (out / rel).write_text(src)
        ins = [names[t] for t in node.inputs]
        outs = [names[t] for t in node.outputs]
        kernels.append(
            KernelInfo(
                name=plan.name,
                source=rel,
                customized=node.op == "customized",
                op=node.op,
                grid=list(plan.grid),
                block=[plan.threads, 1, 1],
                shared_bytes=plan.smem_bytes,
                args=ins + outs,
                dtypes=[graph.types[t].dtype for t in (*node.inputs, *node.outputs)],
                reads=ins,
                writes=outs,
                forloop=plan.forloop,
                barriers=src.count("__syncthreads()"),
            )
        )
    prog = Program(
        out,
        target,
        kernels,
        _buffers(graph, names),
        [_io(graph, t, n, names) for t, n in zip(graph.inputs, graph.input_names)],
        [_io(graph, t, n, names) for t, n in zip(graph.outputs, graph.output_names)],
        plans,
    )
    (out / "launch.json").write_text(json.dumps(prog.launch_json(), indent=1) + "\n")
    return prog


def _io(kg: KernelGraph, tid: int, name: str, names: dict[int, str]) -> dict[str, Any]:
    t = kg.types[tid]
    return {"name": name, "buffer": names[tid], "shape": list(t.dims), "dtype": t.dtype}


def _buffers(kg: KernelGraph, names: dict[int, str]) -> list[dict[str, Any]]:
    used = set(kg.inputs) | set(kg.outputs) | {o for n in kg.nodes for o in (*n.inputs, *n.outputs)}
    out = []
    for tid in sorted(used):
        t = kg.types[tid]
        role = "input" if tid in kg.inputs else "output" if tid in kg.outputs else "intermediate"
        numel = 1
        for d in t.dims:
            numel *= d
        out.append(
            {
                "name": names[tid],
                "shape": list(t.dims),
                "dtype": t.dtype,
                "bytes": numel * ITEMSIZE[t.dtype],
                "role": role,
            }
        )
    return out
