"""ONNX frontend: ops and relabels against onnxruntime, exact constants, subgraph selection,
one-line InputErrors for bad input, and the six examples in examples/ (onnxruntime's outputs,
and equivalence with the benchmarks' small specs)."""

from __future__ import annotations

import functools
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from clitools import import_file
from onnx import TensorProto, helper, numpy_helper

from mirage_py.benchmarks import get_benchmark
from mirage_py.frontends import load_input
from mirage_py.frontends.onnx import import_model, load_onnx
from mirage_py.ir import run_float
from mirage_py.ir.errors import InputError
from mirage_py.verify import equivalent

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
NAMES = ("rmsnorm", "gated_mlp", "gqa", "qknorm", "lora", "ntrans")


def model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, list[Any]],  # dims: ints, or a str for a symbolic dim
    outputs: list[str],
    inits: dict[str, np.ndarray] | None = None,
    opset: int = 18,
    dtype: int = F32,
) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, dtype, d) for n, d in inputs.items()],
        [helper.make_tensor_value_info(n, dtype, None) for n in outputs],
        [numpy_helper.from_array(a, n) for n, a in (inits or {}).items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    return m


def node(op: str, ins: list[str], outs: list[str], **attrs: Any) -> onnx.NodeProto:
    return helper.make_node(op, ins, outs, name=f"{op.lower()}_{outs[0]}", **attrs)


def scalar(name: str, value: float, dtype: int = F32) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, dtype, [], [value]))


def ints(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(values)], values)
    )


def check_against_ort(m: onnx.ModelProto, seed: int = 0, rtol: float = 1e-5, atol: float = 1e-6) -> Any:
    """Load `m`, run the float executor and onnxruntime on the same random inputs, compare."""
    imp = import_model(m)
    rng = np.random.default_rng(seed)
    dt = {F32: np.float32, F16: np.float16}
    feeds = {
        vi.name: rng.standard_normal([d.dim_value for d in vi.type.tensor_type.shape.dim]).astype(
            dt[vi.type.tensor_type.elem_type]
        )
        for vi in m.graph.input
    }
    kg = imp.result.graph
    vals = dict(imp.result.weights)
    for name, tid in zip(kg.input_names, kg.inputs):
        if name in feeds:
            vals[name] = feeds[name].reshape(kg.types[tid].dims)
    got = run_float(kg, vals)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for name, g, w in zip(kg.output_names, got, want):
        assert imp.shapes[name] == w.shape
        np.testing.assert_allclose(g.reshape(w.shape), w, rtol=rtol, atol=atol)
    return imp


def ops(imp: Any) -> list[str]:
    return [n.op for n in imp.result.graph.nodes]


# -- ops --------------------------------------------------------------------------------


def test_exporter_style_rmsnorm_linear_folds_constants_exactly() -> None:
    w = np.random.default_rng(1).standard_normal((8, 5)).astype(np.float32)
    m = model(
        [
            node("Cast", ["X"], ["x32"], to=F32),
            scalar("two", 2.0),
            node("Pow", ["x32", "two"], ["sq"]),
            ints("axes", [-1]),
            node("ReduceMean", ["sq", "axes"], ["ms"]),
            scalar("eps", 1e-6),
            node("Add", ["ms", "eps"], ["mse"]),
            node("Sqrt", ["mse"], ["r"]),
            node("Div", ["x32", "r"], ["n"]),
            node("MatMul", ["n", "W"], ["Y"]),
        ],
        {"X": [4, 8]},
        ["Y"],
        {"W": w},
    )
    imp = check_against_ort(m)
    assert ops(imp) == ["square", "reduce_sum", "mul_scalar", "add_scalar", "sqrt", "div", "matmul"]
    attrs = [n.attrs for n in imp.result.graph.nodes]
    assert attrs[2]["c"] == Fraction(1, 8)  # the exact 1/n of ReduceMean
    assert attrs[3]["c"] == Fraction(float(np.float32(1e-6)))  # the float32's exact value
    assert imp.result.runtime_inputs == ["X"]
    assert set(imp.result.weights) == {"W"} and imp.result.weights["W"].dtype == np.float32
    np.testing.assert_array_equal(imp.result.weights["W"], w)


@pytest.mark.parametrize(
    "op,ir",
    [
        ("Exp", "exp"),
        ("Sqrt", "sqrt"),
        ("Sigmoid", "sigmoid"),
        ("Relu", "relu"),
        ("Neg", "neg"),
        ("Reciprocal", "reciprocal"),
    ],
)
def test_unary(op: str, ir: str) -> None:
    pre = [node("Mul", ["X", "X"], ["xx"]), scalar("one", 1.0), node("Add", ["xx", "one"], ["p"])]  # positive
    imp = check_against_ort(model([*pre, node(op, ["p"], ["Y"])], {"X": [3, 4]}, ["Y"]))
    assert ops(imp)[-1] == ir


@pytest.mark.parametrize("approx", ["none", "tanh"])
def test_gelu(approx: str) -> None:
    imp = check_against_ort(model([node("Gelu", ["X"], ["Y"], approximate=approx)], {"X": [3, 4]}, ["Y"], opset=20))
    assert imp.result.graph.nodes[0].attrs["approximate"] == approx


@pytest.mark.parametrize(
    "op,const_first,value,want",
    [
        ("Add", False, 0.5, ["add_scalar"]),
        ("Sub", False, 0.5, ["add_scalar"]),
        ("Sub", True, 0.5, ["neg", "add_scalar"]),
        ("Mul", True, 3.0, ["mul_scalar"]),
        ("Div", False, 4.0, ["mul_scalar"]),
        ("Div", True, 2.0, ["reciprocal", "mul_scalar"]),
        ("Div", False, 0.0, ["div"]),  # x / 0: no rational scale, a zero weight instead
        ("Mul", False, 1.0, []),  # exact identities vanish
        ("Add", True, 0.0, []),
    ],
)
def test_scalar_constants_become_attributes(op: str, const_first: bool, value: float, want: list[str]) -> None:
    ins = ["c", "X"] if const_first else ["X", "c"]
    m = model([scalar("c", value), node(op, ins, ["Y"])], {"X": [2, 3]}, ["Y"])
    imp = check_against_ort(m) if value != 0.0 or op != "Div" else import_model(m)
    assert ops(imp) == want


def test_scalar_attribute_is_the_exact_float() -> None:
    imp = import_model(model([scalar("c", 0.1), node("Mul", ["X", "c"], ["Y"])], {"X": [2]}, ["Y"]))
    assert imp.result.graph.nodes[0].attrs["c"] == Fraction(float(np.float32(0.1)))


@pytest.mark.parametrize(
    "exp,want", [(2.0, "square"), (0.5, "sqrt"), (-1.0, "reciprocal"), (3.0, "pow_scalar"), (-0.5, "pow_scalar")]
)
def test_pow_constant_exponent(exp: float, want: str) -> None:
    pre = [node("Mul", ["X", "X"], ["xx"]), scalar("one", 1.0), node("Add", ["xx", "one"], ["p"])]
    m = model([*pre, scalar("e", exp), node("Pow", ["p", "e"], ["Y"])], {"X": [3, 4]}, ["Y"])
    assert ops(check_against_ort(m))[-1] == want


def test_pow_runtime_exponent_is_refused() -> None:
    m = model([node("Pow", ["X", "E"], ["Y"])], {"X": [3], "E": [3]}, ["Y"])
    with pytest.raises(InputError, match="exponent must be a constant"):
        import_model(m)


def test_broadcasting_binary_ops_with_weights() -> None:
    rng = np.random.default_rng(2)
    inits = {"b": rng.standard_normal((5,)).astype(np.float32), "c": rng.standard_normal((3, 1, 5)).astype(np.float32)}
    m = model(
        [node("Add", ["X", "b"], ["t"]), node("Mul", ["c", "t"], ["u"]), node("Sub", ["u", "Z"], ["Y"])],
        {"X": [4, 5], "Z": [4, 1]},
        ["Y"],
        inits,
    )
    imp = check_against_ort(m)
    assert imp.shapes["Y"] == (3, 4, 5)
    assert {n: w.shape for n, w in imp.result.weights.items()} == {"b": (5,), "c": (3, 1, 5)}  # their own shapes


@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("bias", ["none", "scalar", "row", "matrix", "runtime"])
def test_gemm(trans_a: int, trans_b: int, bias: str) -> None:
    rng = np.random.default_rng(3)
    m_, k, n = 4, 6, 5
    a_shape = [k, m_] if trans_a else [m_, k]
    inits = {"B": rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)}
    inputs = {"A": a_shape}
    ins = ["A", "B"]
    if bias in ("scalar", "row", "matrix"):
        inits["C"] = rng.standard_normal({"scalar": (), "row": (n,), "matrix": (m_, n)}[bias]).astype(np.float32)
        ins.append("C")
    elif bias == "runtime":
        inputs["C"] = [m_, 1]
        ins.append("C")
    g = node("Gemm", ins, ["Y"], transA=trans_a, transB=trans_b, alpha=0.5, beta=2.0)
    imp = check_against_ort(model([g], inputs, ["Y"], inits))
    assert "transpose" in ops(imp) if trans_a else "transpose" not in ops(imp)  # B's transpose is folded
    assert imp.result.graph.nodes[ops(imp).index("mul_scalar")].attrs["c"] == Fraction(1, 2)


@pytest.mark.parametrize(
    "op,attrs,axes,shape",
    [
        ("ReduceSum", {"keepdims": 1}, [1], [2, 3, 4]),
        ("ReduceSum", {"keepdims": 0}, [0, 2], [2, 3, 4]),
        ("ReduceMean", {"keepdims": 0}, [-1], [2, 3, 4]),
        ("ReduceMean", {"keepdims": 1}, None, [2, 3, 4]),  # no axes: all of them
    ],
)
def test_reductions(op: str, attrs: dict[str, int], axes: list[int] | None, shape: list[int]) -> None:
    nodes = [ints("axes", axes), node(op, ["X", "axes"], ["Y"], **attrs)] if axes else [node(op, ["X"], ["Y"], **attrs)]
    imp = check_against_ort(model(nodes, {"X": shape}, ["Y"]))
    if op == "ReduceMean":
        n = int(np.prod([shape[a] for a in (axes or range(len(shape)))]))
        assert imp.result.graph.nodes[-1].attrs["c"] == Fraction(1, n)


@pytest.mark.parametrize("opset,axis", [(13, -1), (13, 1), (11, 1), (11, 0)])
def test_softmax(opset: int, axis: int) -> None:
    imp = check_against_ort(model([node("Softmax", ["X"], ["Y"], axis=axis)], {"X": [2, 3, 4]}, ["Y"], opset=opset))
    assert ops(imp)[0] == "exp" and ops(imp)[-1] == "div"


@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_rms_normalization(axis: int) -> None:
    rng = np.random.default_rng(4)
    shape = [2, 3, 8]
    scale = rng.standard_normal(shape[axis:]).astype(np.float32)
    m = model(
        [node("RMSNormalization", ["X", "s"], ["Y"], axis=axis, epsilon=1e-5)],
        {"X": shape},
        ["Y"],
        {"s": scale},
        opset=23,
    )
    imp = check_against_ort(m)
    assert ("rms_norm" in ops(imp)) == (axis == -1)  # other axes: the exact composition


def test_simplified_layer_normalization_with_ones_scale() -> None:
    m = model(
        [node("SimplifiedLayerNormalization", ["X", "s"], ["Y"], axis=-1, epsilon=1e-6)],
        {"X": [4, 16]},
        ["Y"],
        {"s": np.ones(16, np.float32)},
        opset=17,
    )
    imp = check_against_ort(m)
    assert ops(imp) == ["rms_norm"] and imp.result.weights == {}  # the ones scale is dropped


def test_concat_transpose_and_relabels() -> None:
    rng = np.random.default_rng(5)
    m = model(
        [
            ints("shape", [2, 4, 3]),
            node("Reshape", ["X", "shape"], ["r"]),  # a no-op reshape
            node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),  # (2, 3, 4)
            node("Concat", ["t", "C", "Z"], ["c"], axis=1),  # (2, 3+1+2, 4)
            ints("ax", [0]),
            node("Unsqueeze", ["c", "ax"], ["u"]),  # (1, 2, 6, 4)
            node("Squeeze", ["u", "ax"], ["s"]),
            node("Flatten", ["s"], ["f"], axis=2),  # (12, 4)
            node("Identity", ["f"], ["Y"]),
        ],
        {"X": [2, 4, 3], "Z": [2, 2, 4]},
        ["Y"],
        {"C": rng.standard_normal((2, 1, 4)).astype(np.float32)},
    )
    imp = check_against_ort(m)
    assert ops(imp) == ["transpose", "concat", "concat"] and imp.shapes["Y"] == (12, 4)


def test_reshape_around_a_linear_regroups_rows() -> None:
    """(2, 3, 8) viewed as (6, 8) for a matmul and a bias: the IR keeps (2, 3, ·)."""
    rng = np.random.default_rng(6)
    m = model(
        [
            ints("s", [6, 8]),
            node("Reshape", ["X", "s"], ["x2"]),
            node("MatMul", ["x2", "W"], ["h"]),
            node("Add", ["h", "b"], ["Y"]),
        ],
        {"X": [2, 3, 8]},
        ["Y"],
        {"W": rng.standard_normal((8, 5)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32)},
    )
    imp = check_against_ort(m)
    kg = imp.result.graph
    assert kg.types[kg.outputs[0]].dims == (2, 3, 5) and imp.shapes["Y"] == (6, 5)


def test_reshape_that_needs_regrouping_is_refused_not_miscomputed() -> None:
    m = model(
        [
            ints("s", [16, 4]),
            node("Reshape", ["X", "s"], ["x2"]),
            node("Exp", ["x2"], ["e"]),
            node("Add", ["e", "Z"], ["Y"]),
        ],
        {"X": [2, 8, 4], "Z": [16, 4]},
        ["Y"],
    )
    with pytest.raises(InputError, match="Add node 'add_Y'.*no reshape op"):
        import_model(m)


def test_transpose_other_permutations_are_refused() -> None:
    m = model([node("Transpose", ["X"], ["Y"], perm=[1, 0, 2])], {"X": [2, 3, 4]}, ["Y"])
    with pytest.raises(InputError, match="perm \\[1, 0, 2\\].*last two dims"):
        import_model(m)
    # A swap of the last two ONNX dims of a tensor that the IR holds as one dim is refused too.
    m = model(
        [ints("s", [4, 6]), node("Reshape", ["X", "s"], ["r"]), node("Transpose", ["r"], ["Y"])], {"X": [24]}, ["Y"]
    )
    with pytest.raises(InputError, match="perm \\[1, 0\\]"):
        import_model(m)


def test_float16_model_with_casts_keeps_float16() -> None:
    m = model(
        [node("Cast", ["X"], ["x32"], to=F32), node("Exp", ["x32"], ["e"]), node("Cast", ["e"], ["Y"], to=F16)],
        {"X": [2, 3]},
        ["Y"],
        dtype=F16,
    )
    imp = check_against_ort(m, rtol=2e-3, atol=1e-3)
    kg = imp.result.graph
    assert ops(imp) == ["exp"] and {t.dtype for t in kg.types} == {"float16"}


def test_shape_arithmetic_is_folded() -> None:
    """Exporters compute target shapes from Shape/Gather/Concat: all constant here."""
    m = model(
        [
            node("Shape", ["X"], ["sh"]),
            ints("i0", [0]),
            node("Gather", ["sh", "i0"], ["b"], axis=0),
            ints("m1", [-1]),
            node("Concat", ["b", "m1"], ["target"], axis=0),
            node("Reshape", ["X", "target"], ["Y"]),
        ],
        {"X": [2, 3, 4]},
        ["Y"],
    )
    imp = check_against_ort(m)
    assert ops(imp) == [] and imp.shapes["Y"] == (2, 12)


# -- subgraphs --------------------------------------------------------------------------


def _chain() -> onnx.ModelProto:
    return model(
        [
            node("Exp", ["X"], ["a"]),
            node("Neg", ["a"], ["b"]),
            node("Relu", ["b"], ["Y"]),
            node("Sigmoid", ["X"], ["Z"]),
        ],
        {"X": [2, 3]},
        ["Y", "Z"],
    )


def test_outputs_select_a_subgraph() -> None:
    imp = import_model(_chain(), outputs=["b"])
    assert ops(imp) == ["exp", "neg"] and imp.result.graph.output_names == ["b"]
    assert ops(import_model(_chain(), outputs="Z")) == ["sigmoid"]


def test_inputs_cut() -> None:
    imp = import_model(_chain(), outputs=["Y"], inputs_cut=["a"])
    assert ops(imp) == ["neg", "relu"] and imp.result.graph.input_names == ["a"]
    assert imp.shapes["a"] == (2, 3)


def test_unknown_output_is_one_line() -> None:
    with pytest.raises(InputError, match="no value named 'nope' in the model \\(its outputs: Y, Z\\)"):
        import_model(_chain(), outputs=["nope"])


# -- bad input --------------------------------------------------------------------------


def _one_line(e: pytest.ExceptionInfo[InputError]) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_unsupported_op_names_type_and_node(tmp_path: Path) -> None:
    m = model([node("Exp", ["X"], ["a"]), helper.make_node("Tanh", ["a"], ["Y"], name="act1")], {"X": [2]}, ["Y"])
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    with pytest.raises(InputError) as e:
        load_onnx(p)
    assert _one_line(e) == f"{p}: unsupported ONNX op Tanh (Tanh node 'act1')"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_input(str(tmp_path / "absent.onnx"))


@pytest.mark.parametrize("cut", [1, 10, 40, 100])
def test_truncated_file(tmp_path: Path, cut: int) -> None:
    data = (EXAMPLES / "lora.onnx").read_bytes()
    p = tmp_path / "t.onnx"
    p.write_bytes(data[:cut])
    with pytest.raises(InputError) as e:
        load_onnx(p)
    _one_line(e)


def test_garbage_file(tmp_path: Path) -> None:
    p = tmp_path / "g.onnx"
    p.write_bytes(b"\xff\xfe not a protobuf \x00\x01" * 10)
    with pytest.raises(InputError, match="not a readable ONNX model"):
        load_onnx(p)


def test_unsupported_dtype_and_symbolic_dim() -> None:
    m = model([node("Exp", ["X"], ["Y"])], {"X": [2]}, ["Y"], dtype=TensorProto.DOUBLE)
    with pytest.raises(InputError, match="input 'X' has dtype DOUBLE"):
        import_model(m)
    m = model([node("Exp", ["X"], ["Y"])], {"X": ["batch", 4]}, ["Y"])
    with pytest.raises(InputError, match="symbolic dim 'batch'"):
        import_model(m)
    imp = import_model(m, inputs={"X": ((3, 4), None)})
    assert imp.result.graph.types[imp.result.graph.inputs[0]].dims == (3, 4)


def test_external_data_and_its_absence(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "gated_mlp.onnx", tmp_path)
    with pytest.raises(InputError, match="cannot load external data"):
        load_onnx(tmp_path / "gated_mlp.onnx")
    for w in ("W1", "W2"):
        shutil.copy(EXAMPLES / f"gated_mlp.{w}.bin", tmp_path)
    r = load_onnx(tmp_path / "gated_mlp.onnx")
    assert set(r.weights) == {"W1", "W2"} and r.weights["W1"].shape == (256, 256)


# -- the examples -----------------------------------------------------------------------


def _make_examples() -> Any:
    return import_file(EXAMPLES / "make_examples.py", "make_examples")


def test_examples_are_up_to_date_and_small(tmp_path: Path) -> None:
    written = [p for name in NAMES for p in _make_examples().write(name, tmp_path)]
    for p in written:
        assert p.read_bytes() == (EXAMPLES / p.name).read_bytes(), f"examples/{p.name} is stale: run make_examples.py"
        assert p.stat().st_size < 200_000


@pytest.mark.parametrize("name", NAMES)
def test_example_matches_onnxruntime_and_the_benchmark(name: str) -> None:
    path = EXAMPLES / f"{name}.onnx"
    r = load_onnx(path)
    bench = get_benchmark(name)
    spec = bench.spec("small", 1)
    values = bench.inputs(spec, seed=1)  # the benchmark's input distribution, fresh draws
    dtype = np.float32 if name == "qknorm" else np.float16  # see DTYPE in make_examples.py
    feeds = {n: values[n].astype(dtype) for n in r.runtime_inputs}
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0].astype(np.float64)
    got = run_float(r.graph, {**feeds, **r.weights}, mode="dtype")[0]
    assert got.shape == want.shape
    # One dtype end to end on both sides, rounded at different points: a few float16 ulps.
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-3 * np.abs(want).max())
    # The benchmark's spec with the model's eps: ONNX holds 1e-6 as a float32.
    eps = Fraction(float(np.float32(1e-6)))
    for n in spec.nodes:
        if "eps" in n.attrs:
            n.attrs["eps"] = eps
    verdict = equivalent(spec, r.graph)
    assert verdict.equivalent, verdict.detail


def test_huge_constant_folds_are_refused_before_evaluating() -> None:
    """A few bytes of model may ask the load-time folding for gigabytes: refused up front."""
    big = [scalar("s", 0.0), scalar("l", 1e9), scalar("d", 1.0), node("Range", ["s", "l", "d"], ["r"])]
    m = model([*big, node("Add", ["X", "r"], ["Y"])], {"X": [1]}, ["Y"])
    with pytest.raises(InputError, match="Range node 'range_r': folding it at load time would make"):
        import_model(m)
    cos = [ints("shape", [1 << 20, 1 << 20]), node("ConstantOfShape", ["shape"], ["z"]), node("Mul", ["X", "z"], ["Y"])]
    with pytest.raises(InputError, match="ConstantOfShape node 'constantofshape_z'"):
        import_model(model(cos, {"X": [1]}, ["Y"]))


def test_models_as_the_torch_exporter_writes_them() -> None:
    """torch.onnx.export's graphs (Cast, Pow, ReduceMean, Sqrt/Reciprocal for rsqrt,
    Transpose, Softmax, MatMul with transposed weights) load and compute what torch does."""
    torch = pytest.importorskip("torch")
    import io
    import warnings

    class RMSLinear(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.rand(64) + 0.5)
            self.lin = torch.nn.Linear(64, 32, bias=False)

        def forward(self, x: Any) -> Any:
            v = x.float().pow(2).mean(-1, keepdim=True)
            return self.lin(self.w * (x * torch.rsqrt(v + 1e-6)))

    class Attention(torch.nn.Module):  # type: ignore[name-defined]
        def forward(self, q: Any, k: Any, v: Any) -> Any:
            return torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v

    torch.manual_seed(0)
    cases: list[tuple[Any, tuple[Any, ...]]] = [
        (RMSLinear(), (torch.randn(2, 4, 64),)),
        (Attention(), (torch.randn(2, 8, 16), torch.randn(2, 32, 16), torch.randn(2, 32, 16))),
    ]
    for mod, args in cases:
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(mod, args, buf, dynamo=False, opset_version=18)
        m = onnx.load_from_string(buf.getvalue())
        imp = import_model(m)
        kg = imp.result.graph
        vals = dict(imp.result.weights)
        for vi, a in zip(m.graph.input, args):
            vals[vi.name] = a.numpy().reshape(kg.types[kg.inputs[kg.input_names.index(vi.name)]].dims)
        want = mod(*args).detach().numpy()
        got = run_float(kg, vals)[0]
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-4, atol=1e-5)


def test_cli_policy_turns_frontend_errors_into_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI's exit-code policy (run_guarded) on the frontend's errors: 2, one line."""
    from mirage_py.cli import EXIT_USAGE, run_guarded

    bad = tmp_path / "bad.onnx"
    bad.write_bytes((EXAMPLES / "lora.onnx").read_bytes()[:50])
    for path in (bad, tmp_path / "absent.onnx"):
        assert run_guarded(functools.partial(load_input, str(path))) == EXIT_USAGE
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err
