"""Fuzzing the two loaders of user files: the ONNX frontend (`load_onnx`) and the JSON graph
reader (`mirage_py.ir.loads`). Inputs: valid files with their bytes mutated (flips,
truncation, insertions, deletions, splices), JSON trees with values replaced or removed, and
random small ONNX models (valid or not). The property: a loader either returns a graph that
round-trips through the JSON form, or raises one of the user-error types (GraphError,
SchemaError, InputError: exit 2 from the CLI). Any other exception, or an input that takes
more than TIMEOUT_S, fails the test. Random models that both the frontend and onnxruntime
accept must also compute the same outputs.

The fast tier runs FAST cases per property; the slow tier (-m slow) runs FULL cases each."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from mirage_py.benchmarks import all_benchmarks
from mirage_py.frontends.onnx import import_model, load_onnx
from mirage_py.ir import GraphError, SchemaError, dumps, loads, run_float
from mirage_py.ir.errors import InputError

USER_ERRORS = (GraphError, SchemaError, InputError)
FAST, FULL = 150, 1000
TIMEOUT_S = 10
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail an input that runs too long (a hang), instead of stalling the test run."""

    def fire(signum: int, frame: Any) -> None:
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def tiers(check: Callable[[Any], None], strategy: st.SearchStrategy[Any]) -> tuple[Any, Any]:
    """The property `check` over `strategy`, at FAST examples (default tier) and FULL
    examples (slow tier); deterministic (derandomized), no example database."""

    def with_examples(n: int) -> Any:
        @settings(
            max_examples=n,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
        )
        @given(strategy)
        def test(x: Any) -> None:
            check(x)

        return test

    return with_examples(FAST), pytest.mark.slow(with_examples(FULL))


# -- byte mutations ---------------------------------------------------------------------


@st.composite
def mutate(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite", "splice"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif kind == "overwrite" and data:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos : pos + len(chunk)] = chunk
        elif kind == "splice" and data:
            a = draw(st.integers(0, len(data) - 1))
            data[pos:pos] = data[a : a + draw(st.integers(1, 32))]
    return bytes(data)


# -- ONNX -------------------------------------------------------------------------------


def _seed_models() -> list[bytes]:
    """Small valid models that between them use every op the frontend maps."""
    rng = np.random.default_rng(0)

    def mk(
        nodes: list[onnx.NodeProto], inputs: dict[str, list[int]], inits: dict[str, np.ndarray], opset: int
    ) -> bytes:
        g = helper.make_graph(
            nodes,
            "seed",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, d) for n, d in inputs.items()],
            [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
            [numpy_helper.from_array(a, n) for n, a in inits.items()],
        )
        return bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString())

    f32 = np.float32
    a = mk(
        [
            helper.make_node("Gemm", ["X", "W", "b"], ["g"], transB=1, alpha=0.5),
            helper.make_node("Softmax", ["g"], ["s"], axis=1),
            helper.make_node("Constant", [], ["sh"], value=helper.make_tensor("sh", TensorProto.INT64, [3], [4, 1, 3])),
            helper.make_node("Reshape", ["s", "sh"], ["r"]),
            helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
            helper.make_node("ReduceSum", ["t", "ax"], ["y"], keepdims=0),
        ],
        {"X": [4, 5]},
        {"W": rng.standard_normal((3, 5)).astype(f32), "b": rng.standard_normal(3).astype(f32), "ax": np.array([1])},
        13,
    )
    b = mk(
        [
            helper.make_node("Constant", [], ["two"], value_float=2.0),
            helper.make_node("Pow", ["X", "two"], ["p"]),
            helper.make_node("ReduceMean", ["p"], ["m"], axes=[-1]),
            helper.make_node("Sqrt", ["m"], ["q"]),
            helper.make_node("Reciprocal", ["q"], ["rq"]),
            helper.make_node("Mul", ["X", "rq"], ["n"]),
            helper.make_node("Concat", ["n", "X"], ["c"], axis=0),
            helper.make_node("Unsqueeze", ["c"], ["u"], axes=[0]),
            helper.make_node("Squeeze", ["u"], ["sq"], axes=[0]),
            helper.make_node("Sub", ["sq", "one"], ["d"]),
            helper.make_node("Div", ["d", "one"], ["e"]),
            helper.make_node("Neg", ["e"], ["f"]),
            helper.make_node("Exp", ["f"], ["h"]),
            helper.make_node("Sigmoid", ["h"], ["i"]),
            helper.make_node("Relu", ["i"], ["j"]),
            helper.make_node("Cast", ["j"], ["k"], to=TensorProto.FLOAT),
            helper.make_node("Identity", ["k"], ["y"]),
        ],
        {"X": [2, 6]},
        {"one": np.array(1.0, f32)},
        11,
    )
    c = mk(
        [
            helper.make_node("Gelu", ["X"], ["g"], approximate="tanh"),
            helper.make_node("RMSNormalization", ["g", "s"], ["n"], epsilon=1e-5),
            helper.make_node("MatMul", ["n", "W"], ["y"]),
        ],
        {"X": [2, 3, 4]},
        {"s": np.ones(4, f32), "W": rng.standard_normal((4, 2)).astype(f32)},
        23,
    )
    examples = [(EXAMPLES / f"{n}.onnx").read_bytes() for n in ("gqa", "qknorm", "ntrans", "lora", "gated_mlp")]
    return [a, b, c, *examples]


SEEDS = _seed_models()


def check_onnx_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.onnx"
        path.write_bytes(data)
        for ext in EXAMPLES.glob("*.bin"):  # gated_mlp's external data, for its mutants
            shutil.copy(ext, d)
        with time_limit(TIMEOUT_S):
            try:
                r = load_onnx(path)
            except USER_ERRORS:
                return
            loads(dumps(r.graph))  # what loaded is a valid graph


def test_seed_models_load() -> None:
    for data in SEEDS:
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "m.onnx").write_bytes(data)
            for ext in EXAMPLES.glob("*.bin"):
                shutil.copy(ext, d)
            assert load_onnx(Path(d) / "m.onnx").graph.nodes


test_mutated_onnx, test_mutated_onnx_full = tiers(check_onnx_file, st.sampled_from(SEEDS).flatmap(mutate))


# Random models: ops (mapped ones and a few others), arities and attributes, valid or not.
ARITY = {
    "Add": 2, "Sub": 2, "Mul": 2, "Div": 2, "MatMul": 2, "Gemm": 3, "Pow": 2, "Sqrt": 1, "Reciprocal": 1,
    "Neg": 1, "Exp": 1, "Sigmoid": 1, "Relu": 1, "Gelu": 1, "ReduceSum": 2, "ReduceMean": 2, "Softmax": 1,
    "RMSNormalization": 2, "Concat": 3, "Transpose": 1, "Reshape": 2, "Squeeze": 2, "Unsqueeze": 2, "Cast": 1,
    "Identity": 1, "Flatten": 1, "Shape": 1, "Size": 1, "Tanh": 1, "Gather": 2, "Expand": 2,
}  # fmt: skip
DTYPES = [TensorProto.FLOAT] * 6 + [TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.INT64, TensorProto.BFLOAT16]
INT_LIST = st.lists(st.integers(-5, 5), min_size=1, max_size=4)  # helper cannot type an empty list


def _attrs(draw: st.DrawFn, op: str) -> dict[str, Any]:
    pick: dict[str, st.SearchStrategy[Any]] = {
        "axis": st.integers(-4, 4),
        "keepdims": st.integers(0, 1),
        "noop_with_empty_axes": st.integers(0, 1),
        "perm": st.permutations(range(draw(st.integers(1, 4)))).map(list) | INT_LIST,
        "to": st.sampled_from(DTYPES),
        "epsilon": st.floats(1e-8, 1e-2),
        "transA": st.integers(0, 1),
        "transB": st.integers(0, 1),
        "alpha": st.floats(-2, 2, allow_subnormal=False),
        "beta": st.floats(-2, 2, allow_subnormal=False),
        "approximate": st.sampled_from(["none", "tanh", "bogus"]),
        "axes": INT_LIST,
        "allowzero": st.integers(0, 1),
    }
    names = draw(st.lists(st.sampled_from(sorted(pick)), max_size=3, unique=True))
    relevant = {
        "Softmax": ["axis"], "Concat": ["axis"], "Flatten": ["axis"], "Transpose": ["perm"], "Cast": ["to"],
        "Gemm": ["transA", "transB", "alpha", "beta"], "Gelu": ["approximate"], "RMSNormalization": ["axis", "epsilon"],
        "ReduceSum": ["keepdims", "noop_with_empty_axes"], "ReduceMean": ["keepdims", "axes"], "Squeeze": ["axes"],
        "Unsqueeze": ["axes"], "Reshape": ["allowzero"],
    }.get(op, [])  # fmt: skip
    names += [n for n in relevant if n not in names and draw(st.booleans())]
    return {n: draw(pick[n]) for n in names}


@st.composite
def random_model(draw: st.DrawFn) -> onnx.ModelProto:
    shape = st.lists(st.integers(1, 4), min_size=0, max_size=4)
    inputs, inits, pool = [], [], []
    for k in range(draw(st.integers(1, 2))):
        dims: list[Any] = draw(shape)
        if dims and draw(st.integers(0, 20)) == 0:
            dims[0] = draw(st.sampled_from([0, "batch"]))
        inputs.append(helper.make_tensor_value_info(f"in{k}", draw(st.sampled_from(DTYPES)), dims))
        pool.append(f"in{k}")
    for k in range(draw(st.integers(0, 3))):
        arr = draw(st.sampled_from(["float", "int", "scalar"]))
        dims = draw(shape)
        if arr == "int":
            a = np.array(draw(st.lists(st.integers(-4, 8), min_size=1, max_size=4)), np.int64)
        else:
            a = np.asarray(
                draw(st.floats(-3, 3)) if arr == "scalar" else np.full(dims, draw(st.floats(-3, 3))), np.float32
            )
        inits.append(numpy_helper.from_array(a, f"w{k}"))
        pool.append(f"w{k}")
    nodes = []
    for k in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(sorted(ARITY)))
        n_in = draw(st.sampled_from([ARITY[op], ARITY[op], ARITY[op] - 1, ARITY[op] + 1]))
        ins = [draw(st.sampled_from(pool)) if draw(st.integers(0, 9)) else "" for _ in range(max(n_in, 0))]
        nodes.append(helper.make_node(op, ins, [f"v{k}"], name=f"n{k}", **_attrs(draw, op)))
        pool.append(f"v{k}")
    outs = draw(st.lists(st.sampled_from(pool[-3:]), min_size=1, max_size=2, unique=True))
    graph = helper.make_graph(
        nodes, "fuzz", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], inits
    )
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", draw(st.sampled_from([11, 13, 17, 18, 20, 23])))]
    )
    m.ir_version = 9
    return m


def _ort_outputs(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray] | None:
    """onnxruntime's outputs, or None when it rejects the model (an invalid random model)."""
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # no warnings about the random models' unused initializers
        sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return [np.asarray(x) for x in sess.run(None, feeds)]
    except Exception:  # onnxruntime's own error types: the model is not valid ONNX
        return None


def check_random_model(m: onnx.ModelProto) -> None:
    with time_limit(TIMEOUT_S):
        try:
            imp = import_model(m)
        except USER_ERRORS:
            return
        kg = imp.result.graph
        loads(dumps(kg))
    # Both loaded it: the outputs must agree with onnxruntime's wherever it runs the model.
    rng = np.random.default_rng(0)
    npt = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16}
    feeds = {}
    for vi in m.graph.input:
        tt = vi.type.tensor_type
        if tt.elem_type not in npt:
            return  # bfloat16 inputs: onnxruntime's CPU kernels mostly lack them
        dims = imp.shapes.get(vi.name) or tuple(d.dim_value or 1 for d in tt.shape.dim)  # unused: any shape
        feeds[vi.name] = rng.uniform(-2, 2, dims).astype(npt[tt.elem_type])
    narrowing = any(
        n.op_type == "Cast" and any(a.name == "to" and a.i != TensorProto.FLOAT for a in n.attribute)
        for n in m.graph.node
    )
    if narrowing or any(vi.type.tensor_type.elem_type != TensorProto.FLOAT for vi in m.graph.input):
        return  # a dropped Cast rounds differently (docs/onnx.md): not comparable to 1e-3
    want = _ort_outputs(m, feeds)
    if want is None:
        return
    vals = dict(imp.result.weights)
    for name, tid in zip(kg.input_names, kg.inputs):
        if name in feeds:
            vals[name] = feeds[name].reshape(kg.types[tid].dims)
    got = run_float(kg, vals)
    softmax = any(n.op_type == "Softmax" for n in m.graph.node)
    COMPARED[0] += 1
    for name, g, w in zip(kg.output_names, got, want):
        assert g.size == w.size and imp.shapes[name] == w.shape, (name, g.shape, w.shape, imp.shapes[name])
        g, w = g.reshape(w.shape).astype(np.float64), w.astype(np.float64)
        if not np.isfinite(w).all() or (softmax and not np.isfinite(g).all()):
            continue  # float32 overflow in onnxruntime; exp overflow in the IR's softmax (no max)
        scale = max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4 * scale, equal_nan=True, err_msg=f"output {name}")


COMPARED = [0]  # models compared with onnxruntime, for the tests' own statistics


test_random_onnx, test_random_onnx_full = tiers(check_random_model, random_model())


# Mostly valid random models: a chain of mapped ops on float32 tensors whose ONNX shapes the
# generator tracks, so most are valid ONNX and the comparison with onnxruntime runs.
CHAIN_UNARY = ["Exp", "Sqrt", "Sigmoid", "Relu", "Neg", "Reciprocal", "Gelu", "Identity", "Cast"]
CHAIN_OPS = [*CHAIN_UNARY, "Add", "Sub", "Mul", "Div", "Pow", "ReduceSum", "ReduceMean", "Softmax", "Transpose",
             "Reshape", "Flatten", "Squeeze", "Unsqueeze", "MatMul", "Gemm", "Concat", "RMSNormalization"]  # fmt: skip


def _reshape_target(draw: st.DrawFn, shape: list[int]) -> list[int]:
    """Merge two neighbours, split a dim, or insert a 1: a reshape that exporters write."""
    how = draw(st.sampled_from(["merge", "split", "one"]))
    if how == "merge" and len(shape) >= 2:
        k = draw(st.integers(0, len(shape) - 2))
        return shape[:k] + [shape[k] * shape[k + 1]] + shape[k + 2 :]
    splittable = [k for k, n in enumerate(shape) if n in (4, 6, 8, 9, 12, 16)]
    if how == "split" and splittable:
        k = draw(st.sampled_from(splittable))
        f = 2 if shape[k] % 2 == 0 else 3
        return shape[:k] + [f, shape[k] // f] + shape[k + 1 :]
    k = draw(st.integers(0, len(shape)))
    return shape[:k] + [1] + shape[k:]


@st.composite
def chain_model(draw: st.DrawFn) -> onnx.ModelProto:
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    x_shape = list(shape)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    cur = "X"

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(arr, name))
        return name

    for k in range(draw(st.integers(1, 6))):
        op, out, rank = draw(st.sampled_from(CHAIN_OPS)), f"v{k}", len(shape)
        ins: list[str] = [cur]
        attrs: dict[str, Any] = {}
        if op == "Gelu":
            attrs["approximate"] = draw(st.sampled_from(["none", "tanh"]))
        elif op == "Cast":
            attrs["to"] = TensorProto.FLOAT
        elif op in ("Add", "Sub", "Mul", "Div", "Pow"):
            if op == "Pow":
                other = init(f"c{k}", np.array(draw(st.sampled_from([2.0, 0.5, 3.0, -1.0, 1.5])), np.float32))
            elif draw(st.booleans()):
                other = init(f"c{k}", np.array(draw(st.sampled_from([0.0, 1.0, -2.5, 0.1])), np.float32))
            else:  # a suffix of the shape with some dims 1: it broadcasts without growing
                suffix = shape[draw(st.integers(0, rank)) :]
                dims = [n if draw(st.booleans()) else 1 for n in suffix]
                other = init(f"c{k}", rng.standard_normal(dims).astype(np.float32) + 3.0)
            ins = [cur, other] if op == "Pow" or draw(st.booleans()) else [other, cur]
        elif op in ("ReduceSum", "ReduceMean"):
            axes = draw(st.lists(st.integers(0, rank - 1), min_size=1, unique=True))
            ins.append(init(f"a{k}", np.array([a - rank if draw(st.booleans()) else a for a in axes], np.int64)))
            attrs["keepdims"] = draw(st.integers(0, 1))
            shape = [1 if i in axes else n for i, n in enumerate(shape)]
            shape = shape if attrs["keepdims"] else [n for i, n in enumerate(shape) if i not in axes]
        elif op == "Softmax":
            attrs["axis"] = draw(st.integers(-rank, rank - 1))
        elif op == "Transpose":
            perm = draw(st.permutations(range(rank)))
            attrs["perm"] = list(perm)
            shape = [shape[p] for p in perm]
        elif op in ("Reshape", "Flatten", "Unsqueeze", "Squeeze"):
            if op == "Flatten":
                axis = draw(st.integers(0, rank))
                attrs["axis"] = axis
                shape = [math.prod(shape[:axis]), math.prod(shape[axis:])]
            elif op == "Squeeze":
                ones = [i for i, n in enumerate(shape) if n == 1]
                if not ones:
                    continue
                ins.append(init(f"a{k}", np.array(ones, np.int64)))
                shape = [n for n in shape if n != 1]
            else:
                target = _reshape_target(draw, shape)
                if op == "Unsqueeze":
                    at = draw(st.integers(0, rank))
                    target = shape[:at] + [1] + shape[at:]
                    ins.append(init(f"a{k}", np.array([at], np.int64)))
                else:
                    ins.append(init(f"s{k}", np.array(target, np.int64)))
                shape = target
        elif op in ("MatMul", "Gemm"):
            n = draw(st.integers(1, 4))
            if op == "Gemm" and rank != 2:
                continue
            if op == "Gemm":
                attrs["transB"] = 1
                ins.append(init(f"w{k}", rng.standard_normal((n, shape[-1])).astype(np.float32)))
                ins.append(init(f"b{k}", rng.standard_normal((n,)).astype(np.float32)))
                attrs["alpha"] = draw(st.sampled_from([1.0, 0.5]))
            else:
                ins.append(init(f"w{k}", rng.standard_normal((shape[-1], n)).astype(np.float32)))
            shape = shape[:-1] + [n]
        elif op == "Concat":
            axis = draw(st.integers(-rank, rank - 1))
            ins.append(cur if draw(st.booleans()) else init(f"k{k}", rng.standard_normal(shape).astype(np.float32)))
            attrs["axis"] = axis
            shape = [2 * m if i == axis % rank else m for i, m in enumerate(shape)]
        elif op == "RMSNormalization":
            axis = draw(st.integers(-rank, rank - 1))
            attrs["axis"], attrs["epsilon"] = axis, 1e-5
            ins.append(init(f"g{k}", rng.standard_normal(shape[axis:]).astype(np.float32)))
        if not shape:
            shape = []  # rank 0 after a full reduction: only unary ops fit now
        nodes.append(helper.make_node(op, ins, [out], name=f"n{k}", **attrs))
        cur = out
        if not shape and k < 5:
            break
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, None)],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    m.ir_version = 10
    return m


test_chain_onnx, test_chain_onnx_full = tiers(check_random_model, chain_model())


# -- JSON -------------------------------------------------------------------------------


def _json_seeds() -> list[str]:
    out = []
    for b in all_benchmarks().values():
        out.append(dumps(b.spec("small", 1)))
        out.append(dumps(b.expert("small", 1)))
    return out


JSON_SEEDS = _json_seeds()
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.sampled_from([-1, 0, 1, 2, 10**30, 2**63])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["exp", "matmul", "customized", "float16", "1/0", "1e99999", "x", "", "1/3", "-0.5"])
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(["id", "op", "dims", "name", "inputs", "attrs", "dim", "c"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=8,
)


@st.composite
def mutate_tree(draw: st.DrawFn, text: str) -> str:
    """Replace, drop or duplicate one value somewhere in the graph's JSON tree."""
    tree = json.loads(text)
    for _ in range(draw(st.integers(1, 3))):
        node, path = tree, []
        while isinstance(node, (dict, list)) and node and draw(st.integers(0, 4)):
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
            path.append((node, key))
            node = node[key]
        if not path:
            continue
        parent, key = path[-1]
        how = draw(st.sampled_from(["replace", "drop", "dup"]))
        if how == "replace":
            parent[key] = draw(JSON_VALUES)
        elif how == "drop":
            del parent[key]
        elif isinstance(parent, list):
            parent.insert(key, parent[key])
    return json.dumps(tree)


def check_json(text: str) -> None:
    with time_limit(TIMEOUT_S):
        try:
            kg = loads(text)
        except USER_ERRORS:
            return
        loads(dumps(kg))


def _mutated_text(text: str) -> st.SearchStrategy[str]:
    return mutate_tree(text) | mutate(text.encode()).map(lambda b: b.decode("utf-8", "replace"))


test_mutated_json, test_mutated_json_full = tiers(check_json, st.sampled_from(JSON_SEEDS).flatmap(_mutated_text))


def test_json_edge_cases() -> None:
    """Inputs a mutation rarely reaches: deep nesting, huge literals, colliding names."""
    base = json.loads(JSON_SEEDS[0])
    op = {"op": "mul_scalar", "inputs": [base["inputs"][0]["id"]], "outputs": [99], "attrs": {"c": "1e999999999"}}
    cases = [
        "[" * 100_000,
        "1" * 5000,
        json.dumps({**base, "ops": [op], "outputs": [{"name": "y", "tensor": 99}]}),
        json.dumps({**base, "ops": [{**op, "attrs": {"c": 1, "name": "n"}}], "outputs": [{"name": "y", "tensor": 99}]}),
        json.dumps({**base, "ops": [{**op, "attrs": {"c": math.inf}}], "outputs": [{"name": "y", "tensor": 99}]}),
    ]
    for text in cases:
        with pytest.raises(USER_ERRORS):
            check_json_strict(text)


def check_json_strict(text: str) -> None:
    with time_limit(TIMEOUT_S):
        loads(text)
