"""Emit the six benchmarks (expert and, with --spec, the op-by-op spec) and report what each
kernel costs the GPU: grid, for-loop, dynamic shared memory from the planner, barriers, and
ptxas's registers and spills for sm_80 and sm_90 (nvcc -cubin -Xptxas -v). Nothing runs.

    python benchmarks/bench_codegen.py [--size paper|small] [--batch B] [--spec] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from mirage_py.benchmarks import NAMES, get_benchmark
from mirage_py.codegen import nvcc as nv
from mirage_py.codegen.emit import emit_program
from mirage_py.ir.show import render_table


def kernel_rows(name: str, which: str, graph: Any, root: Path) -> list[dict[str, Any]]:
    out = root / f"{name}_{which}"
    prog = emit_program(graph, out, "sm_90")
    rows = []
    for k in prog.kernels:
        row: dict[str, Any] = {
            "benchmark": name,
            "graph": which,
            "kernel": k.name,
            "op": k.op,
            "grid": k.grid,
            "threads": k.block[0],
            "forloop": k.forloop,
            "smem": k.shared_bytes,
            "barriers": k.barriers,
        }
        for arch in nv.TARGETS:
            res = nv.compile_cubin(out / k.source, arch, include_dirs=[out / "runtime"]).kernels[k.name]
            row[f"regs_{arch}"] = res.registers
            row[f"spill_{arch}"] = res.spill_stores + res.spill_loads
            row[f"stack_{arch}"] = res.stack_bytes
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("paper", "small"), default="paper")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--spec", action="store_true", help="also the op-by-op specs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if nv.find_nvcc() is None:
        print("nvcc not found: cannot report registers", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-codegen-") as tmp:
        for name in NAMES:
            b = get_benchmark(name)
            graphs = {"expert": b.expert(args.size, args.batch)}
            if args.spec:
                graphs["spec"] = b.spec(args.size, args.batch)
            for which, g in graphs.items():
                rows += kernel_rows(name, which, g, Path(tmp))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    cols = ["benchmark", "graph", "kernel", "grid", "forloop", "smem", "barriers"]
    cols += [f"regs_{a}" for a in nv.TARGETS] + [f"spill_{a}" for a in nv.TARGETS]
    print(f"size {args.size}, 128 threads per block; smem = dynamic shared memory per block (bytes)")
    print(render_table(cols, [[r[c] for c in cols] for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
