"""Numerics: equivalence in the field says nothing about rounding. A winner also runs in
float32 and in its target dtype against the float64 reference of the spec, on the
benchmark's input distribution; its error is compared with a per-dtype tolerance and with
the spec's own error in the same precision, so an algebraically equal but unstable graph
(cancellation, overflow of an intermediate) is flagged.

The error of an output is scaled by the reference's largest magnitude: max|y - ref| /
max|ref|, robust to entries near zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..ir.execute import FloatInterpreter
from ..ir.graph import KernelGraph
from ..ir.serialize import from_dict, to_dict

# Scaled-error tolerances per precision: float32 and each 16-bit type, with room for a
# K = 4096 reduction and a softmax (measured on the six benchmarks: float32 ≤ 2e-6,
# float16 ≤ 3e-3, bfloat16 ≤ 2e-2; docs/verification.md).
TOLERANCES: dict[str, float] = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 5e-2}
# A candidate is unstable when it is beyond tolerance and this much worse than the spec.
UNSTABLE_FACTOR = 4.0


@dataclass
class ErrorRow:
    graph: str  # "spec" | "candidate"
    precision: str  # "float32" or a 16-bit dtype
    output: str
    max_abs: float
    scaled: float  # max_abs / max|ref|
    tolerance: float
    ok: bool


@dataclass
class NumericsReport:
    rows: list[ErrorRow] = field(default_factory=list)
    unstable: bool = False
    unstable_outputs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows if r.graph == "candidate")

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


def retype(kg: KernelGraph, dtype: str) -> KernelGraph:
    """The same graph with every input (and so every tensor) in `dtype`."""
    d = to_dict(kg)
    for inp in d["inputs"]:
        inp["dtype"] = dtype
    return from_dict(d)


def _error(y: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    y64 = np.asarray(y, dtype=np.float64)
    if not np.all(np.isfinite(y64)):
        return float("inf"), float("inf")
    err = float(np.max(np.abs(y64 - ref), initial=0.0))
    scale = float(np.max(np.abs(ref), initial=0.0))
    return err, err / scale if scale > 0 else err


def numerics(
    spec: KernelGraph,
    candidate: KernelGraph,
    inputs: Mapping[str, np.ndarray],
    dtype: str | None = None,
    permutation: Mapping[str, str] | None = None,
    tolerances: Mapping[str, float] | None = None,
) -> NumericsReport:
    """`inputs` by spec input name (e.g. `get_benchmark(name).inputs(spec, seed)`); `dtype`
    the target dtype (default: each graph's own); `permutation` spec output -> candidate
    output (default: by name, else by position)."""
    tol = {**TOLERANCES, **(tolerances or {})}
    ref = dict(zip(spec.output_names, FloatInterpreter("float64").run(spec, dict(inputs))))
    if permutation is None:
        same = set(spec.output_names) == set(candidate.output_names)
        permutation = {s: (s if same else c) for s, c in zip(spec.output_names, candidate.output_names)}
    report = NumericsReport()
    for label, g, names in (
        ("spec", spec, {s: s for s in spec.output_names}),
        ("candidate", candidate, permutation),
    ):
        feed = dict(zip(g.input_names, (inputs[n] for n in spec.input_names)))
        if set(g.input_names) == set(spec.input_names):
            feed = {n: inputs[n] for n in g.input_names}
        typed = retype(g, dtype) if dtype else g
        target = dtype or g.types[g.inputs[0]].dtype
        for mode, precision in (("float32", "float32"), ("dtype", target)):
            if mode == "dtype" and precision == "float32":
                continue
            outs = dict(zip(g.output_names, FloatInterpreter(mode).run(typed, feed)))  # type: ignore[arg-type]
            for s_name, c_name in names.items():
                err, scaled = _error(outs[c_name], ref[s_name])
                report.rows.append(
                    ErrorRow(label, precision, s_name, err, scaled, tol[precision], scaled <= tol[precision])
                )
    spec_err = {(r.precision, r.output): r.scaled for r in report.rows if r.graph == "spec"}
    for r in report.rows:
        if r.graph == "candidate" and not r.ok and r.scaled > UNSTABLE_FACTOR * spec_err[(r.precision, r.output)]:
            report.unstable = True
            report.unstable_outputs.append(f"{r.output} ({r.precision})")
    return report
