"""Run an emitted program (OUT with launch.json) on the CPU under the emulation header, and
check its outputs against the float reference.

    outs = run_emulated(Path("out"), {"X": x, "W": w})       # outputs by name, float32
    report = check_outputs(graph, inputs, outs)               # per-dtype tolerances

Several programs can share one emulation build (`EmulatedPrograms`), which is how the tests
keep the C++ compile count low: kernel names must then differ (emit with a `prefix`).
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..ir.dtypes import round_to
from ..ir.errors import InputError
from ..ir.execute import FloatInterpreter
from ..ir.graph import KernelGraph

# Scaled-error tolerances (max |y - ref| / max |ref|) of an emitted program's outputs against
# the float64 reference, per output dtype: the verifier's numerics tolerances (which allow
# for K = 4096 reductions and softmax in 16-bit types).
from ..verify.numerics import TOLERANCES
from .emulate import EmulatedProgram, EmulationResult, KernelLaunch, build


def read_launch(out: Path) -> dict[str, Any]:
    path = Path(out) / "launch.json"
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read launch.json ({e})") from None
    if not isinstance(spec, dict) or "kernels" not in spec or "buffers" not in spec:
        raise InputError(f"{path}: not a mirage-py launch.json (no kernels/buffers)")
    return spec


def to_device_array(x: np.ndarray, dtype: str) -> np.ndarray:
    """A float array as the kernels' element type holds it: float16, bfloat16 bits (a uint16
    array is taken as bits already), float32."""
    x = np.asarray(x)
    if dtype == "bfloat16" and x.dtype == np.uint16:
        return np.ascontiguousarray(x)
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return np.ascontiguousarray(x, dtype=np.float32).astype(np.float16)
    if dtype == "bfloat16":
        return (round_to(x, "bfloat16").view(np.uint32) >> 16).astype(np.uint16)
    return np.ascontiguousarray(x, dtype=np.float32)


def from_device_array(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return (x.astype(np.uint32) << 16).view(np.float32)
    return x.astype(np.float32)


def _combined_source(outs: Sequence[Path]) -> Path:
    """One translation unit holding every kernel of every program (content-addressed)."""
    parts = []
    for out in outs:
        for k in read_launch(out)["kernels"]:
            parts.append(f"// ---- {out.name}/{k['source']}\n" + (Path(out) / k["source"]).read_text())
    text = "\n".join(parts)
    key = hashlib.sha256(text.encode()).hexdigest()[:20]
    path = Path(tempfile.gettempdir()) / f"mirage-py-units-{key}" / "kernels_all.cu"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


@dataclass
class EmulatedPrograms:
    """Emitted programs built into one emulation executable."""

    outs: list[Path]
    program: EmulatedProgram

    @classmethod
    def build(cls, outs: Sequence[Path | str]) -> EmulatedPrograms:
        paths = [Path(o) for o in outs]
        names = [k["name"] for o in paths for k in read_launch(o)["kernels"]]
        if len(set(names)) != len(names):
            raise ValueError("programs built together need distinct kernel names (emit with a prefix)")
        runtime = paths[0] / "runtime"
        return cls(paths, build([_combined_source(paths)], names, runtime_dir=runtime))

    def launch(self, out: Path | str, inputs: Mapping[str, np.ndarray]) -> EmulationResult:
        """Run program `out` on inputs (by graph input name: float arrays, or for bfloat16
        uint16 bit patterns) and return the raw result, races and errors included."""
        spec = read_launch(Path(out))
        bufs: dict[str, np.ndarray] = {}
        for b in spec["buffers"]:
            bufs[b["name"]] = to_device_array(np.zeros(tuple(b["shape"]), np.float32), b["dtype"])
        for io in spec["inputs"]:
            if io["name"] not in inputs:
                raise InputError(f"missing input {io['name']!r}")
            x = np.asarray(inputs[io["name"]])
            if tuple(x.shape) != tuple(io["shape"]):
                raise InputError(f"input {io['name']!r} has shape {list(x.shape)}, expected {io['shape']}")
            bufs[io["buffer"]] = to_device_array(x, io["dtype"])
        launches = [
            KernelLaunch(
                k["name"], tuple(k["grid"]), tuple(k["block"]), k["shared_bytes"], tuple("@" + a for a in k["args"])
            )
            for k in spec["kernels"]
        ]
        return self.program.run(launches, bufs)

    def run(
        self, out: Path | str, inputs: Mapping[str, np.ndarray], raw: bool = False
    ) -> tuple[dict[str, np.ndarray], EmulationResult]:
        """`launch`, checked (EmulationError on races or errors), with the outputs by name as
        float32, or with `raw` as the kernels hold them (float16, uint16 bfloat16 bits,
        float32)."""
        spec = read_launch(Path(out))
        dtypes = {b["name"]: b["dtype"] for b in spec["buffers"]}
        res = self.launch(out, inputs).check()
        outs = {}
        for io in spec["outputs"]:
            y = res.buffers[io["buffer"]]
            outs[io["name"]] = y.copy() if raw else from_device_array(y, dtypes[io["buffer"]])
        return outs, res


def run_emulated(out: Path | str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return EmulatedPrograms.build([out]).run(out, inputs)[0]


# ---------------------------------------------------------------------------------------
# Inputs and checks


def random_inputs(graph: KernelGraph, seed: int = 0) -> dict[str, np.ndarray]:
    """Normal inputs scaled by 1/sqrt(last dim), so sums and products over it stay of order
    one and 16-bit types do not overflow."""
    rng = np.random.default_rng(seed)
    out = {}
    for tid, name in zip(graph.inputs, graph.input_names):
        dims = graph.types[tid].dims
        x = rng.standard_normal(dims, dtype=np.float32) / np.float32(math.sqrt(dims[-1]))
        out[name] = round_to(x, graph.types[tid].dtype)
    return out


@dataclass
class OutputCheck:
    name: str
    dtype: str
    max_abs: float
    scaled: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(self.scaled <= self.tolerance)


def check_outputs(
    graph: KernelGraph, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
) -> list[OutputCheck]:
    """Each output against the float64 reference on the same inputs (rounded to their
    dtypes), as max |y - ref| / max |ref| within the dtype's tolerance."""
    feed = {n: round_to(np.asarray(inputs[n]), graph.types[t].dtype) for t, n in zip(graph.inputs, graph.input_names)}
    ref = FloatInterpreter("float64").run(graph, feed)
    rows = []
    for name, tid, r in zip(graph.output_names, graph.outputs, ref):
        dtype = graph.types[tid].dtype
        y = np.asarray(outputs[name], dtype=np.float64)
        err = float(np.max(np.abs(y - r), initial=0.0)) if np.all(np.isfinite(y)) else math.inf
        scale = float(np.max(np.abs(r), initial=0.0))
        rows.append(OutputCheck(name, dtype, err, err / scale if scale > 0 else err, TOLERANCES[dtype]))
    return rows
