"""Frontends: turn a user's model (ONNX file, PyTorch module or function, graph JSON) into a
spec KernelGraph plus the weights it binds at run time.

Every frontend returns a `FrontendResult`; `load_input` picks one by the INPUT's form, as the
command-line contract spells it: `model.onnx`, `file.py:NAME`, or `graph.json`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..ir.graph import KernelGraph


@dataclass
class FrontendResult:
    """A spec graph and the weights that feed some of its inputs.

    `weights` maps graph input names to arrays (ONNX initializers, module parameters); they
    go to OUT/weights.npz and are bound at run time, so they are not arguments of the
    generated callable. Every other graph input is a runtime argument."""

    graph: KernelGraph
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""  # what was loaded, for reports ("model.onnx", "mlp.py:GatedMLP", ...)

    @property
    def runtime_inputs(self) -> list[str]:
        return [n for n in self.graph.input_names if n not in self.weights]

    def retyped(self, dtype: str) -> FrontendResult:
        """The same program with every tensor in `dtype` (`--dtype`): the graph is rebuilt
        from its JSON form with each input's dtype replaced (ops take their dtype from their
        inputs, so that retypes every tensor, block graphs included) and the weights are
        rounded to `dtype` and stored as it is carried (bfloat16 in float32)."""
        from ..ir.dtypes import DTYPES, round_to
        from ..ir.errors import InputError
        from ..ir.serialize import from_dict, to_dict

        if dtype not in DTYPES:
            raise InputError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        d = to_dict(self.graph)
        for inp in d["inputs"]:
            inp["dtype"] = dtype
        store = np.float16 if dtype == "float16" else np.float32
        weights = {n: round_to(a, dtype).astype(store) for n, a in self.weights.items()}
        return FrontendResult(from_dict(d), weights, self.source)


# Shapes given on the command line: NAME -> (dims, dtype name or None for the default).
InputShapes = Mapping[str, tuple[tuple[int, ...], str | None]]


def load_input(
    spec: str,
    inputs: InputShapes | None = None,
    outputs: Sequence[str] | None = None,
    dtype: str | None = None,
) -> FrontendResult:
    """Load INPUT by its form. Imports of onnx and torch happen only when needed.

    `inputs` gives shapes (ONNX: the symbolic ones; PyTorch: every argument); `outputs`
    keeps only the named outputs and what they need; `dtype` retypes the spec (see
    `FrontendResult.retyped`)."""
    from pathlib import Path

    from ..ir.errors import InputError

    if spec.endswith(".onnx"):
        from .onnx import load_onnx

        res = load_onnx(spec, outputs=outputs, inputs=inputs)
    elif ".py:" in spec:
        from .torch import load_torch

        res = load_torch(spec, inputs=inputs or {}, outputs=outputs)
    elif spec.endswith(".json"):
        from ..ir import load

        if inputs:
            raise InputError(f"{spec}: --inputs is for ONNX and PyTorch inputs; a graph.json fixes its input shapes")
        graph = load(Path(spec))
        res = FrontendResult(select_outputs(graph, outputs) if outputs else graph, source=spec)
    else:
        raise InputError(f"{spec}: INPUT must be model.onnx, file.py:NAME or graph.json")
    return res.retyped(dtype) if dtype is not None else res


def select_outputs(graph: KernelGraph, names: Sequence[str]) -> KernelGraph:
    """The subgraph computing only the named outputs: ops and inputs they do not need are
    dropped (rebuilt through the JSON form, so the result is validated like a loaded file)."""
    from ..ir.errors import InputError
    from ..ir.serialize import from_dict, to_dict

    d = to_dict(graph)
    known = [o["name"] for o in d["outputs"]]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"--outputs: no output named {', '.join(map(repr, unknown))} (outputs: {', '.join(known)})")
    d["outputs"] = [o for o in d["outputs"] if o["name"] in names]
    needed = {o["tensor"] for o in d["outputs"]}
    kept = []
    for op in reversed(d["ops"]):  # ops are in topological order: walk back from the outputs
        if needed & set(op["outputs"]):
            needed |= set(op["inputs"])
            kept.append(op)
    d["ops"] = kept[::-1]
    d["inputs"] = [i for i in d["inputs"] if i["id"] in needed]
    return from_dict(d)
