"""How a graph is shown to people and tools: a text view, a JSON summary, Graphviz dot, and
the header every report carries (tool version, seed, machine).

Also the one way the tool writes a file it produces: atomically (a temporary file in the same
folder, renamed into place), so a failure never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from .canonical import graph_hash
from .graph import GRID, BlockGraph, Graph, KernelGraph, Node
from .ops import ACCUMULATORS, OPS, AttrSpec
from .serialize import SCHEMA

# ---------------------------------------------------------------------------------------
# Report plumbing


def machine_info() -> dict[str, Any]:
    """What a report says about the machine it was made on (no host name: reports get shared)."""
    return {
        "system": platform.system(),
        "release": platform.release(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def report_header(version: str, seed: int | None) -> dict[str, Any]:
    return {"version": version, "seed": seed, "machine": machine_info()}


def write_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename, so
    readers see the old file or the whole new one, never a part."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent if str(p.parent) else ".")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns; the last column is not padded."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[k]) for r in cells) for k in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) if k < len(r) - 1 else c for k, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in cells
    )


# ---------------------------------------------------------------------------------------
# Small formatting helpers


def _attr(v: Any) -> Any:
    """An attribute as JSON shows it: rationals as exact "p/q" strings, as in the schema."""
    if isinstance(v, Fraction):
        return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"
    return v


def _plain_attrs(n: Node) -> dict[str, Any]:
    return {k: _attr(v) for k, v in n.attrs.items() if not isinstance(v, BlockGraph)}


def _attrs_text(n: Node) -> str:
    attrs = _plain_attrs(n)
    return ", ".join(f"{k}={v}" for k, v in attrs.items())


def _dims(d: Sequence[int]) -> str:
    return "[" + ", ".join(str(x) for x in d) + "]"


def _map_text(m: Sequence[int]) -> str:
    """imap/omap as `x->1 y->- z->-` (grid dim -> tensor dim, '-' replicates)."""
    return " ".join(f"{g}->{d if d >= 0 else '-'}" for g, d in zip(GRID, m, strict=True))


def _loop_text(forloop_dim: int) -> str:
    return f"forloop_dim {forloop_dim}" if forloop_dim >= 0 else "loop-invariant"


def _kernel_tensor_name(kg: KernelGraph, tid: int) -> str:
    if tid in kg.inputs:
        return f"t{tid} ({kg.input_names[kg.inputs.index(tid)]})"
    if tid in kg.outputs:
        return f"t{tid} ({kg.output_names[kg.outputs.index(tid)]})"
    return f"t{tid}"


def _tensor_json(g: Graph, tid: int) -> dict[str, Any]:
    t = g.types[tid]
    return {"tensor": tid, "dims": list(t.dims), "dtype": t.dtype}


def _named_json(kg: KernelGraph, ids: list[int], names: list[str]) -> list[dict[str, Any]]:
    return [{"name": name, **_tensor_json(kg, tid)} for tid, name in zip(ids, names, strict=True)]


# ---------------------------------------------------------------------------------------
# JSON summary (`show --json`)


def _block_ops_json(bg: BlockGraph) -> list[dict[str, Any]]:
    out = []
    for n in bg.nodes:
        d: dict[str, Any] = {"op": n.op, "inputs": list(n.inputs), "output": n.outputs[0]}
        d["tile"] = list(bg.types[n.outputs[0]].dims)
        d["stage"] = bg.stage.get(n.outputs[0], "post")
        if n.attrs:
            d["attrs"] = _plain_attrs(n)
        out.append(d)
    return out


def kernel_json(kg: KernelGraph, n: Node) -> dict[str, Any]:
    d: dict[str, Any] = {"kind": n.op}
    if n.op == "customized":
        bg: BlockGraph = n.attrs["block_graph"]
        d["grid"] = list(bg.grid_dims)
        d["forloop_range"] = bg.forloop_range
        d["block_dims"] = list(bg.block_dims)
        d["inputs"] = [
            {
                **_tensor_json(kg, src),
                "block_tensor": tid,
                "tile": list(bg.types[tid].dims),
                "imap": list(bi.imap),
                "forloop_dim": bi.forloop_dim,
            }
            for src, tid, bi in zip(n.inputs, bg.inputs, bg.block_inputs, strict=True)
        ]
        d["ops"] = _block_ops_json(bg)
        d["accumulators"] = [o["op"] for o in d["ops"] if o["op"] in ACCUMULATORS]
        d["outputs"] = [
            {
                **_tensor_json(kg, dst),
                "block_tensor": bo.tensor,
                "tile": list(bg.types[bo.tensor].dims),
                "omap": list(bo.omap),
            }
            for dst, bo in zip(n.outputs, bg.block_outputs, strict=True)
        ]
    else:
        d["inputs"] = [_tensor_json(kg, i) for i in n.inputs]
        d["outputs"] = [_tensor_json(kg, o) for o in n.outputs]
        op: dict[str, Any] = {"op": n.op}
        if n.attrs:
            op["attrs"] = _plain_attrs(n)
        d["ops"] = [op]
    return d


def graph_json(kg: KernelGraph) -> dict[str, Any]:
    """The graph part of `show --json`: hash, inputs, outputs and one object per kernel."""
    return {
        "hash": graph_hash(kg),
        "schema": SCHEMA,
        "inputs": _named_json(kg, kg.inputs, kg.input_names),
        "outputs": _named_json(kg, kg.outputs, kg.output_names),
        "kernels": [kernel_json(kg, n) for n in kg.nodes],
    }


# ---------------------------------------------------------------------------------------
# Text view (`show`)


def _tensor_text(g: Graph, tid: int) -> str:
    t = g.types[tid]
    return f"{_dims(t.dims)} {t.dtype}"


def _block_text(kg: KernelGraph, n: Node, lines: list[str]) -> None:
    bg: BlockGraph = n.attrs["block_graph"]
    lines.append(f"    grid {_dims(bg.grid_dims)}  forloop_range {bg.forloop_range}  block_dims {_dims(bg.block_dims)}")
    for src, tid, bi in zip(n.inputs, bg.inputs, bg.block_inputs, strict=True):
        loop = _loop_text(bi.forloop_dim)
        lines.append(
            f"    in   b{tid} {_dims(bg.types[tid].dims)} <- {_kernel_tensor_name(kg, src)} "
            f"{_tensor_text(kg, src)}  imap {_map_text(bi.imap)}  {loop}"
        )
    for b in bg.nodes:
        args = ", ".join(f"b{i}" for i in b.inputs)
        attrs = _attrs_text(b)
        call = f"{b.op}({args}{', ' + attrs if attrs else ''})"
        stage = bg.stage.get(b.outputs[0], "post")
        mark = "  accumulator" if b.op in ACCUMULATORS else ""
        lines.append(f"    op   b{b.outputs[0]} = {call}  {_dims(bg.types[b.outputs[0]].dims)}  {stage}{mark}")
    for dst, bo in zip(n.outputs, bg.block_outputs, strict=True):
        lines.append(
            f"    out  b{bo.tensor} {_dims(bg.types[bo.tensor].dims)} -> {_kernel_tensor_name(kg, dst)} "
            f"{_tensor_text(kg, dst)}  omap {_map_text(bo.omap)}"
        )
    accs = [f"b{b.outputs[0]} {b.op}" for b in bg.nodes if b.op in ACCUMULATORS]
    lines.append(f"    accumulators: {', '.join(accs) if accs else 'none'}")


def render_text(kg: KernelGraph) -> str:
    custom = sum(1 for n in kg.nodes if n.op == "customized")
    lines = [f"hash    {graph_hash(kg)}", f"schema  {SCHEMA}", "inputs"]
    lines += [f"  {_kernel_tensor_name(kg, t)} {_tensor_text(kg, t)}" for t in kg.inputs]
    lines.append("outputs")
    lines += [f"  {_kernel_tensor_name(kg, t)} {_tensor_text(kg, t)}" for t in kg.outputs]
    lines.append(f"kernels {len(kg.nodes)} ({custom} customized)")
    for k, n in enumerate(kg.nodes):
        if n.op == "customized":
            lines.append(f"  k{k} customized")
            _block_text(kg, n, lines)
            continue
        attrs = _attrs_text(n)
        ins = ", ".join(f"{_kernel_tensor_name(kg, i)} {_tensor_text(kg, i)}" for i in n.inputs)
        outs = ", ".join(f"{_kernel_tensor_name(kg, o)} {_tensor_text(kg, o)}" for o in n.outputs)
        lines.append(f"  k{k} {n.op}{'  ' + attrs if attrs else ''}")
        lines.append(f"    {ins} -> {outs}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Graphviz dot (`show --dot FILE`)


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_dot(kg: KernelGraph) -> str:
    """Kernel tensors are ellipses, predefined kernels boxes, customized kernels clusters
    holding their block ops."""
    out = ["digraph mugraph {", "  rankdir=TB;", '  node [fontname="monospace", fontsize=10];']
    for tid in range(len(kg.types)):
        label = f"{_kernel_tensor_name(kg, tid)}\n{_tensor_text(kg, tid)}"
        out.append(f"  t{tid} [shape=ellipse, label={_q(label)}];")
    for k, n in enumerate(kg.nodes):
        if n.op != "customized":
            attrs = _attrs_text(n)
            out.append(f"  k{k} [shape=box, label={_q(n.op + (chr(10) + attrs if attrs else ''))}];")
            out += [f"  t{i} -> k{k};" for i in n.inputs] + [f"  k{k} -> t{o};" for o in n.outputs]
            continue
        bg: BlockGraph = n.attrs["block_graph"]
        title = f"k{k} customized grid {_dims(bg.grid_dims)} forloop_range {bg.forloop_range}"
        out += [f"  subgraph cluster_k{k} {{", f"    label={_q(title)};", "    style=rounded;"]
        for tid, bi in zip(bg.inputs, bg.block_inputs, strict=True):
            label = f"in b{tid} {_dims(bg.types[tid].dims)}\nimap {_map_text(bi.imap)} {_loop_text(bi.forloop_dim)}"
            out.append(f"    k{k}_b{tid} [shape=invhouse, label={_q(label)}];")
        for b in bg.nodes:
            attrs = _attrs_text(b)
            label = f"{b.op}{' ' + attrs if attrs else ''}\nb{b.outputs[0]} {_dims(bg.types[b.outputs[0]].dims)}"
            shape = "doubleoctagon" if b.op in ACCUMULATORS else "box"
            out.append(f"    k{k}_b{b.outputs[0]} [shape={shape}, label={_q(label)}];")
            out += [f"    k{k}_b{i} -> k{k}_b{b.outputs[0]};" for i in b.inputs]
        for j, bo in enumerate(bg.block_outputs):
            out.append(f"    k{k}_out{j} [shape=house, label={_q('out omap ' + _map_text(bo.omap))}];")
            out.append(f"    k{k}_b{bo.tensor} -> k{k}_out{j};")
        out.append("  }")
        out += [f"  t{src} -> k{k}_b{tid};" for src, tid in zip(n.inputs, bg.inputs, strict=True)]
        out += [f"  k{k}_out{j} -> t{dst};" for j, dst in enumerate(n.outputs)]
    out.append("}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------
# The op table as Markdown (docs/schema.md embeds it; a test keeps the two equal)


def _attr_doc(a: AttrSpec) -> str:
    kind = {
        "dim": "dim",
        "int": "positive int",
        "rational": "rational",
        "choice": "choice: " + " \\| ".join(f'"{c}"' for c in a.choices),
        "graph": "block graph object",
    }[a.kind]
    default = f", default {json.dumps(_attr(a.default))}" if a.default is not None else ""
    return f"`{a.name}` ({kind}{default})"


def ops_markdown() -> str:
    """One row per op of the table: name, level, arity, kind, attributes."""
    rows = ["| op | level | inputs | kind | attributes |", "|---|---|---|---|---|"]
    for op in OPS.values():
        level = "kernel, block" if op.level == "both" else op.level
        arity = str(op.arity) if op.arity >= 0 else "any"
        attrs = ", ".join(_attr_doc(a) for a in op.attrs) or "none"
        rows.append(f"| `{op.name}` | {level} | {arity} | {op.kind} | {attrs} |")
    return "\n".join(rows) + "\n"
