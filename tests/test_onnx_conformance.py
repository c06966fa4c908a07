"""ONNX conformance: the onnx package's own operator test cases (onnx.backend.test.case.node)
for every op the ONNX frontend supports, loaded by the frontend, run by the float executor,
and compared with the cases' expected outputs at the cases' own tolerances.

Integer graph inputs (axes, target shapes) and Pow's exponent are bound as initializers from
the case's data, since the frontend needs them constant. The cases the frontend cannot take
are skipped with a reason: by rule (a dtype the IR lacks, an op the frontend lacks, a zero-size
dim) or from the KNOWN table (what the IR cannot express). A skipped case still runs: the test
checks that it fails the way its reason says, so the list cannot go stale. docs/onnx.md holds
the same list; `python tests/test_onnx_conformance.py` prints it.
"""

from __future__ import annotations

import importlib
import re
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from mirage_py.frontends.onnx import FOLD_ONLY, HANDLERS, IR_DTYPES, import_model
from mirage_py.ir import run_float
from mirage_py.ir.errors import InputError

# The test-case modules of the supported ops (importing one registers its cases).
MODULES = (
    "add sub mul div matmul gemm pow sqrt reciprocal neg exp sigmoid relu gelu reducesum reducemean softmax "
    "rmsnormalization concat transpose reshape squeeze unsqueeze cast identity constant"
).split()
DOC = Path(__file__).resolve().parent.parent / "docs" / "onnx.md"

_MATMUL_1D = "a 1-D operand: the IR's matmul needs 2 dims, and the IR has no reshape to promote it"
_POW_TENSOR = "an exponent of several values: the IR's pow takes one scalar exponent"
_TRANSPOSE = "this permutation of a 3-D tensor is not a swap of the last two dims, the IR's only transpose"
# What the IR cannot express. "reject": the loader raises InputError; "differs": it loads, and
# the float executor's outputs differ from the expected ones.
KNOWN: dict[str, tuple[str, str]] = {
    "test_matmul_bcast": (
        "reject",
        "batch dims [3, 1] and [1, 2] broadcast: the IR's matmul takes equal batch dims or none",
    ),
    "test_matmul_1d_3d": ("reject", _MATMUL_1D),
    "test_matmul_4d_1d": ("reject", _MATMUL_1D),
    "test_matmul_1d_1d": ("reject", _MATMUL_1D),
    "test_pow_example": ("reject", _POW_TENSOR),
    "test_pow": ("reject", _POW_TENSOR),
    "test_pow_bcast_array": ("reject", _POW_TENSOR),
    "test_pow_types_float32_int64": ("reject", _POW_TENSOR),
    "test_softmax_large_number": (
        "differs",
        "exp(10000) overflows: the IR's softmax is exp / reduce_sum / div with no max subtraction (DESIGN.md)",
    ),
    "test_transpose_default": ("reject", _TRANSPOSE),
    **{f"test_transpose_all_permutations_{k}": ("reject", _TRANSPOSE) for k in (2, 3, 4, 5)},
    "test_cast_FLOAT_to_BFLOAT16": (
        "differs",
        "the IR has no cast op: a Cast keeps the tensor, so the bfloat16 rounding is not applied",
    ),
}
SUPPORTED = set(HANDLERS) | FOLD_ONLY | {"Constant"}


def _load_cases() -> list[Any]:
    """Run the export functions of our ops' case classes into a fresh list, as importing them
    does, so the set is the same whatever other onnx case modules were imported before."""
    from onnx.backend.test.case.base import Base

    nodes: Any = importlib.import_module("onnx.backend.test.case.node")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some case generators overflow on purpose (casts)
        mods = [importlib.import_module(f"onnx.backend.test.case.node.{m}") for m in MODULES]
        saved = nodes._NodeTestCases, nodes._existing_names
        nodes._NodeTestCases, nodes._existing_names = [], {}
        try:
            for mod in mods:
                for cls in vars(mod).values():
                    if isinstance(cls, type) and issubclass(cls, Base) and cls.__module__ == mod.__name__:
                        for name in sorted(k for k in vars(cls) if k.startswith("export")):
                            np.random.seed(0)  # as the registering metaclass does
                            getattr(cls, name)()
            return list(nodes._NodeTestCases)
        finally:
            nodes._NodeTestCases, nodes._existing_names = saved


CASES = sorted(_load_cases(), key=lambda tc: tc.name)


def _array(x: Any) -> np.ndarray:
    arr = numpy_helper.to_array(x) if isinstance(x, TensorProto) else np.asarray(x)
    return arr.astype(np.float32) if arr.dtype.name == "bfloat16" else arr


def _dtype_of(vi: onnx.ValueInfoProto) -> int | None:
    return vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else None


def rule_reason(tc: Any) -> str | None:
    """Why a case is outside the frontend by rule, read off the model (or None)."""
    g = tc.model.graph
    for vi in [*g.input, *g.output]:
        et = _dtype_of(vi)
        if et is None:
            return f"{vi.name!r} is not a tensor (a sequence or optional): the IR holds tensors"
        if et not in IR_DTYPES and not (et == TensorProto.INT64 and vi in g.input):
            return f"dtype {TensorProto.DataType.Name(et)}: the IR holds float16, bfloat16 and float32"
    for vi in g.input:
        if _dtype_of(vi) != TensorProto.INT64 and any(
            d.HasField("dim_value") and d.dim_value == 0 for d in vi.type.tensor_type.shape.dim
        ):
            return "a zero-size dim: IR dims are positive"
    missing = sorted({n.op_type for n in g.node} - SUPPORTED)
    if missing:
        return f"uses {', '.join(missing)}, which the frontend does not support"
    return None


def skip_of(tc: Any) -> tuple[str, str] | None:
    if tc.name in KNOWN:
        return KNOWN[tc.name]
    reason = rule_reason(tc)
    return ("reject", reason) if reason else None


def bind(tc: Any, data: tuple[list[Any], list[Any]]) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The case's model with its int64 inputs and Pow exponents made initializers; the
    remaining feeds."""
    model = onnx.ModelProto()
    model.CopyFrom(tc.model)
    g = model.graph
    exponents = {n.input[1] for n in g.node if n.op_type == "Pow" and len(n.input) > 1}
    feeds, keep = {}, []
    for vi, x in zip(list(g.input), data[0]):
        arr = _array(x)
        if _dtype_of(vi) == TensorProto.INT64 or vi.name in exponents:
            g.initializer.append(numpy_helper.from_array(arr, vi.name))
        else:
            feeds[vi.name] = arr
            keep.append(vi)
    del g.input[:]
    g.input.extend(keep)
    return model, feeds


def run_case(tc: Any, data: tuple[list[Any], list[Any]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(got, expected) per output; got is reshaped to the expected shape (same size)."""
    model, feeds = bind(tc, data)
    imp = import_model(model)
    kg = imp.result.graph
    vals = dict(imp.result.weights)
    for name, tid in zip(kg.input_names, kg.inputs):
        if name in feeds:
            vals[name] = feeds[name].reshape(kg.types[tid].dims)  # rank-0 inputs are (1,) in the IR
    got = run_float(kg, vals)
    want = [_array(x) for x in data[1]]
    assert len(got) == len(want)
    pairs = []
    for gv, wv in zip(got, want):
        assert gv.size == wv.size, f"output has {gv.size} elements, expected {wv.size}"
        pairs.append((gv.reshape(wv.shape), wv.astype(np.float64)))
    return pairs


def _close(pairs: list[tuple[np.ndarray, np.ndarray]], tc: Any) -> bool:
    return all(np.allclose(g, w, rtol=tc.rtol, atol=tc.atol, equal_nan=True) for g, w in pairs)


@pytest.mark.parametrize("tc", CASES, ids=[tc.name for tc in CASES])
def test_onnx_case(tc: Any) -> None:
    skip = skip_of(tc)
    if skip is None:
        for data in tc.data_sets:
            for got, want in run_case(tc, data):
                np.testing.assert_allclose(got, want, rtol=tc.rtol, atol=tc.atol)
        return
    kind, reason = skip
    if kind == "reject":
        with pytest.raises(InputError):
            run_case(tc, tc.data_sets[0])
    else:
        assert not _close(run_case(tc, tc.data_sets[0]), tc), "listed as differing, but it passes now"
    pytest.skip(reason)


def test_every_supported_op_has_passing_cases() -> None:
    """Each op the frontend maps (not the load-time-only folds) passes at least one case."""
    passing = Counter(op for tc in CASES if skip_of(tc) is None for op in {n.op_type for n in tc.model.graph.node})
    lacking = sorted(op for op in _CASE_OPS if passing[op] == 0)
    assert not lacking, f"no passing conformance case for {lacking}"


# The supported ops that have cases of their own in the onnx package.
_CASE_OPS = (
    "Add Sub Mul Div MatMul Gemm Pow Sqrt Reciprocal Neg Exp Sigmoid Relu Gelu ReduceSum ReduceMean Softmax "
    "RMSNormalization Concat Transpose Reshape Squeeze Unsqueeze Cast Identity Constant"
).split()


def markdown() -> str:
    """The list docs/onnx.md keeps: counts, then every skipped case with its reason."""
    skips = {tc.name: skip_of(tc) for tc in CASES}
    n_skip = sum(1 for s in skips.values() if s)
    lines = [
        f"{len(CASES)} cases, {len(CASES) - n_skip} pass, {n_skip} skipped.",
        "",
        "| case | reason |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {s[1]} |" for name, s in skips.items() if s]
    return "\n".join(lines)


_BEGIN, _END = "<!-- conformance: begin -->", "<!-- conformance: end -->"


def test_docs_list_the_skipped_cases() -> None:
    text = DOC.read_text()
    m = re.search(re.escape(_BEGIN) + r"\n(.*)\n" + re.escape(_END), text, re.S)
    assert m, f"{DOC} lacks the conformance markers"
    assert m.group(1) == markdown(), "docs/onnx.md is stale: run `python tests/test_onnx_conformance.py`"


if __name__ == "__main__":
    # Rewrite the list in docs/onnx.md.
    text = DOC.read_text()
    new = re.sub(
        re.escape(_BEGIN) + r"\n.*\n" + re.escape(_END), lambda _: f"{_BEGIN}\n{markdown()}\n{_END}", text, flags=re.S
    )
    DOC.write_text(new)
    sys.stdout.write(markdown() + "\n")
