"""The PyTorch frontend: modules and functions captured with torch.export compute what torch
computes (float executor vs torch in float64 and float32), benchmark mirrors are proven
equivalent to the benchmarks' specs, and every bad input is one InputError line."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from clitools import import_file  # noqa: E402

from mirage_py.benchmarks import get_benchmark  # noqa: E402
from mirage_py.frontends import FrontendResult, load_input  # noqa: E402
from mirage_py.frontends.torch import load_torch, parse_input_spec, parse_input_specs  # noqa: E402
from mirage_py.ir import new_kernel_graph, run_float  # noqa: E402
from mirage_py.ir.errors import InputError  # noqa: E402
from mirage_py.verify import equivalent  # noqa: E402

HERE = Path(__file__).parent
MODULES = HERE / "torch_modules.py"
EXAMPLES = HERE.parent / "examples" / "models.py"


def _import(path: Path) -> ModuleType:
    return import_file(path, f"_test_{path.stem}")


def load(name: str, path: Path = MODULES, dtype: str | None = None, **dims: tuple[int, ...]) -> FrontendResult:
    return load_torch(f"{path}:{name}", {k: (d, dtype) for k, d in dims.items()})


def torch_outputs(path: Path, name: str, feeds: dict[str, np.ndarray], dtype: Any) -> list[np.ndarray]:
    """Run NAME from a fresh import of the file (same seeds, so the same weights)."""
    obj = getattr(_import(path), name)
    fn = obj() if isinstance(obj, type) else obj
    if isinstance(fn, torch.nn.Module):
        fn = fn.to(dtype).eval()
    with torch.no_grad():
        out = fn(*[torch.from_numpy(x).to(dtype) for x in feeds.values()])
    return [
        o.float().numpy() if dtype != torch.float64 else o.numpy() for o in (out if isinstance(out, tuple) else (out,))
    ]


def feeds_for(dims: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(d) for k, d in dims.items()}


def assert_matches_torch(name: str, dims: dict[str, tuple[int, ...]], path: Path = MODULES) -> FrontendResult:
    """The spec in float64 equals torch in float64; in float32, torch in float32."""
    res = load_torch(f"{path}:{name}", {k: (d, None) for k, d in dims.items()})
    feeds = feeds_for(dims)
    for mode, tdtype, rtol, atol in (("float64", torch.float64, 1e-9, 1e-12), ("float32", torch.float32, 2e-4, 2e-5)):
        ours = run_float(res.graph, {**feeds, **res.weights}, mode=mode)  # type: ignore[arg-type]
        ref = torch_outputs(path, name, feeds, tdtype)
        assert len(ours) == len(ref)
        for k, (o, r) in enumerate(zip(ours, ref)):
            # Outputs keep the IR's dims: a dim torch dropped (sum without keepdim) stays 1.
            assert o.size == r.size, (name, k, o.shape, r.shape)
            np.testing.assert_allclose(o.reshape(r.shape), r, rtol=rtol, atol=atol, err_msg=f"{name} out{k} {mode}")
    return res


CASES: list[tuple[str, dict[str, tuple[int, ...]]]] = [
    ("RMSNormWeightLinear", {"x": (2, 4, 32)}),
    ("FunctionalRMSNorm", {"x": (4, 32)}),
    ("GatedMLPDown", {"x": (8, 32)}),
    ("LinearBias", {"x": (4, 16)}),
    ("NoOps", {"x": (4, 16)}),
    ("Elementwise", {"x": (4, 8), "y": (4, 8)}),
    ("Reductions", {"x": (2, 4, 8), "s": (2, 4, 1)}),
    ("Attention", {"q": (2, 8, 16), "k": (2, 12, 16), "v": (2, 12, 16)}),
    ("Concat", {"x": (8, 8), "y": (8, 4)}),
    ("MatmulForms", {"x": (4, 8), "y": (2, 4, 8)}),
    ("TwoOutputs", {"x": (4, 8)}),
    ("SharedWeight", {"x": (4, 8)}),
    ("scaled_gated", {"x": (4, 8), "w1": (8, 16), "w2": (8, 16)}),
    ("optional_bias", {"x": (4, 8)}),
    ("optional_bias", {"x": (4, 8), "scale": (4, 1), "bias": (8,)}),
    ("instance", {"x": (8, 32)}),
]


@pytest.mark.parametrize("name,dims", CASES, ids=[f"{c[0]}-{len(c[1])}" for c in CASES])
def test_matches_torch(name: str, dims: dict[str, tuple[int, ...]]) -> None:
    assert_matches_torch(name, dims)


EXAMPLE_CASES: list[tuple[str, dict[str, tuple[int, ...]]]] = [
    ("RMSNormLinear", {"x": (2, 256)}),
    ("GatedMLP", {"x": (8, 256)}),
    ("LlamaMLP", {"x": (8, 256)}),
    ("LoRALinear", {"x": (16, 64)}),
    ("Attention", {"q": (2, 64, 64), "k": (2, 256, 64), "v": (2, 256, 64)}),
]


@pytest.mark.parametrize("name,dims", EXAMPLE_CASES, ids=[c[0] for c in EXAMPLE_CASES])
def test_examples_match_torch(name: str, dims: dict[str, tuple[int, ...]]) -> None:
    assert_matches_torch(name, dims, EXAMPLES)


def ops(res: FrontendResult) -> list[str]:
    return [n.op for n in res.graph.nodes]


# -- what the spec looks like ---------------------------------------------------------------


def test_linear_weight_stored_transposed_with_bias() -> None:
    res = load("LinearBias", x=(4, 16))
    assert ops(res) == ["matmul", "add"]  # no transpose: the weight is stored as W.T
    assert res.graph.input_names == ["x", "lin_weight_t", "lin_bias"]
    assert res.runtime_inputs == ["x"]
    lin = _import(MODULES).LinearBias().lin
    np.testing.assert_array_equal(res.weights["lin_weight_t"], lin.weight.detach().numpy().T)
    np.testing.assert_array_equal(res.weights["lin_bias"], lin.bias.detach().numpy())


def test_weight_used_plainly_and_transposed_keeps_a_transpose() -> None:
    res = load("SharedWeight", x=(4, 8))
    assert res.graph.input_names == ["x", "W"]
    assert sorted(ops(res)) == ["add", "matmul", "matmul", "transpose"]


def test_attention_transposes_the_key_and_softmax_is_exp_sum_div() -> None:
    res = load("Attention", q=(2, 8, 16), k=(2, 12, 16), v=(2, 12, 16))
    assert ops(res) == ["transpose", "matmul", "mul_scalar", "exp", "reduce_sum", "div", "matmul"]
    assert res.graph.nodes[2].attrs["c"] == Fraction(1, 8)
    assert res.graph.nodes[4].attrs["dim"] == 2


def test_no_op_aten_ops_vanish() -> None:
    assert ops(load("NoOps", x=(4, 16))) == ["matmul"]


def test_scalars_are_exact_rationals_of_the_float() -> None:
    res = load("RMSNormWeightLinear", x=(2, 4, 32))
    (eps,) = [n.attrs["c"] for n in res.graph.nodes if n.op == "add_scalar"]
    assert eps == Fraction(1e-5) and eps != Fraction(1, 10**5)  # the float's exact value
    (mean,) = [n.attrs["c"] for n in res.graph.nodes if n.op == "mul_scalar"]
    assert mean == Fraction(1, 32)
    assert ops(res)[:5] == ["square", "reduce_sum", "mul_scalar", "add_scalar", "sqrt"]
    consts = {n.attrs["c"] for n in load("Elementwise", x=(4, 8), y=(4, 8)).graph.nodes if "c" in n.attrs}
    # x / 4 -> * 1/4, torch.tensor(0.75) folded, 2 - x -> -x + 2, alpha=0.5, pow(-1.5).
    assert {Fraction(1, 4), Fraction(3, 4), Fraction(2), Fraction(1, 2), Fraction(-3, 2)} <= consts


def test_function_takes_every_argument_at_run_time() -> None:
    res = load("scaled_gated", x=(4, 8), w1=(8, 16), w2=(8, 16))
    assert res.weights == {} and res.runtime_inputs == ["x", "w1", "w2"]
    assert ops(res) == ["matmul", "silu", "matmul", "mul", "mul_scalar"]


def test_outputs_selects_and_drops_unused_weights() -> None:
    both = load("TwoOutputs", x=(4, 8))
    assert both.graph.output_names == ["out0", "out1"]
    res = load_torch(f"{MODULES}:TwoOutputs", {"x": ((4, 8), None)}, outputs=["out1"])
    assert res.graph.output_names == ["out1"] and list(res.weights) == ["B"]
    assert ops(res) == ["matmul", "relu"]
    with pytest.raises(InputError, match="no output named out7"):
        load_torch(f"{MODULES}:TwoOutputs", {"x": ((4, 8), None)}, outputs=["out7"])


def test_float16_inputs_convert_the_module_not_the_users_instance() -> None:
    res = load("instance", dtype="float16", x=(8, 32))
    assert {t.dtype for t in res.graph.types} == {"float16"}
    assert {w.dtype for w in res.weights.values()} == {np.dtype(np.float16)}
    feeds = feeds_for({"x": (8, 32)})
    ours = run_float(res.graph, {**feeds, **res.weights}, mode="dtype")[0]
    ref = torch_outputs(MODULES, "instance", feeds, torch.float32)[0]
    np.testing.assert_allclose(ours, ref, rtol=0.05, atol=0.02)
    # Converting for the export left the file's instance alone (a fresh import would hide
    # that, so load the module object the frontend saw: the same file, imported again).
    assert all(p.dtype == torch.float32 for p in _import(MODULES).instance.parameters())


@pytest.mark.parametrize("dtype,tdtype,tol", [("float32", torch.float32, 1e-5), ("float16", torch.float16, 1e-2)])
def test_float_casts_are_identities_in_a_one_dtype_graph(dtype: str, tdtype: Any, tol: float) -> None:
    res = load("UpcastRMSNorm", dtype=dtype, x=(4, 32))
    assert {t.dtype for t in res.graph.types} == {dtype}
    assert ops(res) == ["square", "reduce_sum", "mul_scalar", "add_scalar", "sqrt", "reciprocal", "mul", "mul"]
    feeds = {"x": feeds_for({"x": (4, 32)})["x"].astype(np.float16).astype(np.float64)}
    ours = run_float(res.graph, {**feeds, **res.weights}, mode="dtype")[0]
    ref = torch_outputs(MODULES, "UpcastRMSNorm", feeds, tdtype)[0]
    np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol)


def test_load_input_dispatches_py_specs() -> None:
    res = load_input(f"{EXAMPLES}:GatedMLP", {"x": ((8, 256), None)})
    assert res.source.endswith("models.py:GatedMLP") and ops(res) == ["matmul", "silu", "matmul", "mul"]


# -- benchmark mirrors ----------------------------------------------------------------------


@pytest.mark.parametrize("name,bench,x", [("GatedMLP", "gated_mlp", (8, 256)), ("LoRALinear", "lora", (16, 64))])
def test_example_is_equivalent_to_benchmark_spec(name: str, bench: str, x: tuple[int, ...]) -> None:
    res = load_torch(f"{EXAMPLES}:{name}", {"x": (x, None)})
    verdict = equivalent(get_benchmark(bench).build_spec("small", 1), res.graph)
    assert verdict.equivalent, verdict.detail


def test_rmsnorm_example_matches_benchmark_structure_with_the_floats_eps() -> None:
    """rms_norm(X) @ W with eps = the float 1e-6 exactly: proven equivalent. The benchmark's
    own spec uses eps = 1/10^6, a different rational, so it is (rightly) not proven."""
    res = load_torch(f"{EXAMPLES}:RMSNormLinear", {"x": ((2, 256), None)})
    bench = get_benchmark("rmsnorm").build_spec("small", 1)
    g = new_kernel_graph()
    x, w = g.new_input((2, 256), "float16", "X"), g.new_input((256, 384), "float16", "W")
    g.mark_output(g.matmul(g.rms_norm(x, Fraction(1e-6)), w), "Y")
    verdict = equivalent(g, res.graph)
    assert verdict.equivalent, verdict.detail
    assert [n.op for n in bench.nodes] == [n.op for n in g.nodes]
    assert not equivalent(bench, res.graph).equivalent


# -- bad input --------------------------------------------------------------------------------


def _bad(spec: str, inputs: dict[str, tuple[int, ...]] | None = None, dtype: str | None = None) -> str:
    with pytest.raises(InputError) as e:
        load_torch(spec, {k: (d, dtype) for k, d in ({"x": (4, 8)} if inputs is None else inputs).items()})
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_file() -> None:
    assert "no such file" in _bad("nowhere/models.py:GatedMLP")


def test_no_such_name() -> None:
    msg = _bad(f"{MODULES}:Nope")
    assert "no 'Nope'" in msg and "GatedMLPDown" in msg


def test_file_that_raises_on_import(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import torch\nVALUE = 1 / 0\n")
    msg = _bad(f"{tmp_path / 'broken.py'}:VALUE")
    assert "raised ZeroDivisionError: division by zero" in msg
    (tmp_path / "exits.py").write_text("import sys\nsys.exit('bye')\n")
    assert "raised SystemExit: bye" in _bad(f"{tmp_path / 'exits.py'}:M")


def test_module_needing_constructor_args() -> None:
    assert "needs constructor arguments (width)" in _bad(f"{MODULES}:NeedsArgs")


@pytest.mark.parametrize("spec", ["models.py", f"{MODULES}", f"{MODULES}:", f"{MODULES}:1x", "models.txt:M"])
def test_malformed_spec(spec: str) -> None:
    assert _bad(spec)


@pytest.mark.parametrize(
    "name,inputs,needle",
    [
        ("NotAModule", None, "not a torch.nn.Module"),
        ("GatedMLPDown", {}, "missing --inputs for argument 'x'"),
        ("GatedMLPDown", {"x": (8, 32), "z": (2,)}, "--inputs names z"),
        ("scaled_gated", {"x": (4, 8), "w2": (8, 16)}, "missing --inputs for argument 'w1'"),
        ("optional_bias", {"x": (4, 8), "bias": (8,)}, "give --inputs for 'scale' too"),
        ("GatedMLPDown", {"x": (8, 31)}, "torch.export failed"),
        ("Raises", None, "RuntimeError: broken forward"),
        ("Tanh", None, "aten.tanh.default at torch_modules.py:"),
        ("MergeDims", {"x": (8, 8)}, "aten.view.default at torch_modules.py:"),
        ("SwapBatch", {"x": (2, 4, 8)}, "aten.transpose.int at torch_modules.py:"),
        ("SqueezedSum", {"x": (4, 8), "y": (4,)}, "aten.mul.Tensor at torch_modules.py:"),
        ("ArgMax", None, "aten.argmax.default"),
        ("CountsCalls", None, "forward mutates calls"),
        ("TrainingDropout", None, "aten."),
    ],
)
def test_unsupported_or_bad_module(name: str, inputs: dict[str, tuple[int, ...]] | None, needle: str) -> None:
    msg = _bad(f"{MODULES}:{name}", inputs)
    assert needle in msg, msg


def test_unsupported_op_names_the_source_line() -> None:
    line = next(i for i, t in enumerate(MODULES.read_text().splitlines(), 1) if "torch.tanh(x)" in t)
    assert f"torch_modules.py:{line}" in _bad(f"{MODULES}:Tanh")


def test_inputs_of_different_dtypes() -> None:
    with pytest.raises(InputError, match="different dtypes"):
        load_torch(f"{MODULES}:scaled_gated", {"x": ((4, 8), "float16"), "w1": ((8, 16), None), "w2": ((8, 16), None)})


# -- --inputs text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("x=8x256", ("x", (8, 256), None)),
        ("x=8x256:float16", ("x", (8, 256), "float16")),
        ("input:0=2X3x4x5:bfloat16", ("input:0", (2, 3, 4, 5), "bfloat16")),
        ("q=64", ("q", (64,), None)),
    ],
)
def test_parse_input_spec(text: str, expected: tuple[str, tuple[int, ...], str | None]) -> None:
    assert parse_input_spec(text) == expected


@pytest.mark.parametrize("text", ["x", "=8", "x=", "x=8xa", "x=0x8", "x=8x-1", "x=8x8:float64", "x=1x2x3x4x5", "a b=8"])
def test_parse_input_spec_rejects(text: str) -> None:
    with pytest.raises(InputError, match="--inputs"):
        parse_input_spec(text)


def test_parse_input_specs_rejects_a_name_given_twice() -> None:
    assert parse_input_specs(["x=2x3", "y=4:float32"]) == {"x": ((2, 3), None), "y": ((4,), "float32")}
    with pytest.raises(InputError, match="given twice"):
        parse_input_specs(["x=2x3", "x=4"])
