"""Write the six benchmarks as small ONNX models in examples/, the way an exporter writes them.

Each model has the benchmark's `small` shapes at batch 1, float16 tensors (qknorm float32,
see DTYPE), the benchmark's
input names, and its weights as initializers drawn from the benchmark's own input
distribution (seed 0). The graphs use the ops exporters emit (Cast to float32 around a norm,
Constant scalars, Pow, ReduceMean, Sigmoid * x for SiLU, Softmax, Transpose,
RMSNormalization), so loading them exercises the frontend rather than mirroring the IR.
gated_mlp keeps its two weights as external data (one file each), which its 256 KiB of
weights need to keep every file under 200 KB, and which exercises external-data loading.

Run `python examples/make_examples.py` to regenerate; the output is deterministic.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, external_data_helper, helper, numpy_helper

from mirage_py.benchmarks import get_benchmark

HERE = Path(__file__).resolve().parent
F16 = TensorProto.FLOAT16
EPS = 1e-6  # stored as a float32 attribute / constant, as exporters do
OPSET = 23  # RMSNormalization needs opset 23
# Which benchmark inputs are weights (initializers); the rest are runtime inputs.
WEIGHTS: dict[str, tuple[str, ...]] = {
    "rmsnorm": ("W",),
    "gated_mlp": ("W1", "W2"),
    "gqa": (),
    "qknorm": (),
    "lora": ("W", "A", "B"),
    "ntrans": ("alpha",),
}
EXTERNAL = {"gated_mlp"}
# qknorm is float32: its softmax has no max subtraction (the IR has no max), and the scores
# of RMS-normalized q and k reach |q.k| = d = 64, whose exp overflows float16 (e^11 does)
# in the op-by-op spec that OUT holds when the search finds nothing better.
DTYPE = {"qknorm": (TensorProto.FLOAT, np.float32)}

Nodes = list[onnx.NodeProto]


def _const(name: str, value: float) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.FLOAT, [], [value]))


def _rmsnorm(nodes: Nodes) -> str:
    """Y = rms_norm(X) @ W, the norm in float32 between two Casts, as torch exports it."""
    nodes += [
        helper.make_node("Cast", ["X"], ["x32"], to=TensorProto.FLOAT),
        _const("two", 2.0),
        helper.make_node("Pow", ["x32", "two"], ["sq"]),
        helper.make_node("Constant", [], ["axes"], value=helper.make_tensor("axes", TensorProto.INT64, [1], [-1])),
        helper.make_node("ReduceMean", ["sq", "axes"], ["ms"], keepdims=1),
        _const("eps", EPS),
        helper.make_node("Add", ["ms", "eps"], ["mse"]),
        helper.make_node("Sqrt", ["mse"], ["rms"]),
        helper.make_node("Reciprocal", ["rms"], ["inv"]),
        helper.make_node("Mul", ["x32", "inv"], ["n32"]),
        helper.make_node("Cast", ["n32"], ["n"], to=F16),
        helper.make_node("MatMul", ["n", "W"], ["Y"]),
    ]
    return "Y"


def _gated_mlp(nodes: Nodes) -> str:
    """Y = silu(X @ W1) * (X @ W2), SiLU written as x * Sigmoid(x)."""
    nodes += [
        helper.make_node("MatMul", ["X", "W1"], ["h1"]),
        helper.make_node("Sigmoid", ["h1"], ["g"]),
        helper.make_node("Mul", ["h1", "g"], ["a"]),
        helper.make_node("MatMul", ["X", "W2"], ["h2"]),
        helper.make_node("Mul", ["a", "h2"], ["Y"]),
    ]
    return "Y"


def _attention(nodes: Nodes, q: str, k: str) -> str:
    nodes += [
        helper.make_node("MatMul", [q, k], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "V"], ["O"]),
    ]
    return "O"


def _gqa(nodes: Nodes) -> str:
    """O = softmax(Q @ K) @ V, K head-dim-major as the benchmark takes it."""
    return _attention(nodes, "Q", "K")


def _qknorm(nodes: Nodes) -> str:
    """O = softmax(rms_norm(Q) @ rms_norm(K)^T) @ V; the norms' scales are ones."""
    nodes += [
        helper.make_node("RMSNormalization", ["Q", "q_scale"], ["qn"], axis=-1, epsilon=EPS),
        helper.make_node("RMSNormalization", ["K", "k_scale"], ["kn"], axis=-1, epsilon=EPS),
        helper.make_node("Transpose", ["kn"], ["kt"], perm=[0, 2, 1]),
    ]
    return _attention(nodes, "qn", "kt")


def _lora(nodes: Nodes) -> str:
    """Y = X @ W + (X @ A) @ B."""
    nodes += [
        helper.make_node("MatMul", ["X", "W"], ["xw"]),
        helper.make_node("MatMul", ["X", "A"], ["xa"]),
        helper.make_node("MatMul", ["xa", "B"], ["xab"]),
        helper.make_node("Add", ["xw", "xab"], ["Y"]),
    ]
    return "Y"


def _ntrans(nodes: Nodes) -> str:
    """Y = rms_norm(H + alpha * (rms_norm(X) - H)), the scales ones."""
    nodes += [
        helper.make_node("RMSNormalization", ["X", "scale"], ["xn"], axis=-1, epsilon=EPS),
        helper.make_node("Sub", ["xn", "H"], ["d"]),
        helper.make_node("Mul", ["alpha", "d"], ["step"]),
        helper.make_node("Add", ["H", "step"], ["h2"]),
        helper.make_node("RMSNormalization", ["h2", "scale"], ["Y"], axis=-1, epsilon=EPS),
    ]
    return "Y"


BUILDERS: dict[str, Callable[[Nodes], str]] = {
    "rmsnorm": _rmsnorm,
    "gated_mlp": _gated_mlp,
    "gqa": _gqa,
    "qknorm": _qknorm,
    "lora": _lora,
    "ntrans": _ntrans,
}
# Scales of ones for the RMSNormalization nodes: name -> benchmark input whose last dim it has.
ONES: dict[str, dict[str, str]] = {"qknorm": {"q_scale": "Q", "k_scale": "K"}, "ntrans": {"scale": "X"}}


def build(name: str) -> onnx.ModelProto:
    bench = get_benchmark(name)
    spec = bench.spec("small", 1)
    values = bench.inputs(spec, seed=0)
    dims = {n: spec.types[t].dims for n, t in zip(spec.input_names, spec.inputs)}
    onnx_type, np_type = DTYPE.get(name, (F16, np.float16))
    inits = [numpy_helper.from_array(values[w].astype(np_type), w) for w in WEIGHTS[name]]
    for scale, like in ONES.get(name, {}).items():
        inits.append(numpy_helper.from_array(np.ones(dims[like][-1:], np_type), scale))
    inputs = [
        helper.make_tensor_value_info(n, onnx_type, list(dims[n])) for n in spec.input_names if n not in WEIGHTS[name]
    ]
    nodes: Nodes = []
    out = BUILDERS[name](nodes)
    out_dims = spec.types[spec.outputs[0]].dims
    outputs = [helper.make_tensor_value_info(out, onnx_type, list(out_dims))]
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mirage-py examples")
    model.ir_version = 10  # what onnxruntime 1.18+ reads
    onnx.checker.check_model(model)
    return model


def write(name: str, folder: Path = HERE) -> list[Path]:
    """Write examples/<name>.onnx (and its external data files); returns the paths written."""
    model = build(name)
    path = folder / f"{name}.onnx"
    if name not in EXTERNAL:
        onnx.save_model(model, path)
        return [path]
    # One file per weight, next to the model: <name>.<weight>.bin. onnx appends to an
    # existing data file, so old ones go first.
    data = [folder / f"{name}.{w}.bin" for w in WEIGHTS[name]]
    for p in data:
        p.unlink(missing_ok=True)
    for t in model.graph.initializer:
        external_data_helper.set_external_data(t, location=f"{name}.{t.name}.bin")
    onnx.save_model(model, path)
    return [path, *data]


def main(argv: list[str]) -> int:
    folder = Path(argv[1]) if len(argv) > 1 else HERE
    for name in BUILDERS:
        for p in write(name, folder):
            sys.stdout.write(f"{p} ({p.stat().st_size} bytes)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
