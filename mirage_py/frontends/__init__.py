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


# Shapes given on the command line: NAME -> (dims, dtype name or None for the default).
InputShapes = Mapping[str, tuple[tuple[int, ...], str | None]]


def load_input(
    spec: str,
    inputs: InputShapes | None = None,
    outputs: Sequence[str] | None = None,
) -> FrontendResult:
    """Load INPUT by its form. Imports of onnx and torch happen only when needed."""
    from pathlib import Path

    from ..ir.errors import InputError

    if spec.endswith(".onnx"):
        from .onnx import load_onnx

        return load_onnx(spec, outputs=outputs)
    if ".py:" in spec:
        from .torch import load_torch

        return load_torch(spec, inputs=inputs or {}, outputs=outputs)
    if spec.endswith(".json"):
        from ..ir import load

        return FrontendResult(load(Path(spec)), source=spec)
    raise InputError(f"{spec}: INPUT must be model.onnx, file.py:NAME or graph.json")
