"""The paper's benchmark suite: every spec and expert builds, each expert is a real fusion
(fewer kernels, tiles that fit an H100 block) and computes what its spec computes."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from mirage_py import run_float
from mirage_py.benchmarks import SIZES, Benchmark, all_benchmarks, get_benchmark
from mirage_py.benchmarks._common import count_kernels
from mirage_py.ir import BlockGraph, KernelGraph, dumps, graph_hash, loads
from mirage_py.ir.dtypes import ITEMSIZE

NAMES = ("rmsnorm", "gated_mlp", "gqa", "qknorm", "lora", "ntrans")
PRESETS = {
    "rmsnorm": "mlp",
    "gated_mlp": "mlp",
    "gqa": "attention",
    "qknorm": "attention",
    "lora": "lora",
    "ntrans": "default",
}

# Expert and spec compute the same real function with sums reassociated (split over blocks,
# for-loop iterations and splits). In float64 each output's rounding error is at most about
# n * 2^-53 * sum|terms| with n <= 4096 terms, i.e. ~5e-13 * sum|terms|; sum|terms| is a few
# times max|Y| for these inputs, so errors stay below ~1e-11 of max|Y| (observed: ~1e-15).
# A tiling or indexing mistake moves outputs by O(max|Y|), eight orders above this bound.
REL_TOL = 1e-9

# Shared memory an H100 thread block can use (227 KB).
H100_SMEM = 227 * 1024

PAPER_SHAPES = {
    "rmsnorm": {"X": (2, 4096), "W": (4096, 6144)},
    "gated_mlp": {"X": (8, 4096), "W1": (4096, 4096), "W2": (4096, 4096)},
    "gqa": {"Q": (2, 256, 64), "K": (2, 64, 4096), "V": (2, 4096, 64)},
    "qknorm": {"Q": (2, 256, 64), "K": (2, 4096, 64), "V": (2, 4096, 64)},
    "lora": {"X": (16, 256), "W": (256, 4096), "A": (256, 16), "B": (16, 4096)},
    "ntrans": {"H": (1, 4096), "X": (1, 4096), "alpha": (1, 4096)},
}

ACTIVATIONS = {
    "rmsnorm": {"X"},
    "gated_mlp": {"X"},
    "gqa": {"Q", "K", "V"},
    "qknorm": {"Q", "K", "V"},
    "lora": {"X"},
    "ntrans": {"H", "X", "alpha"},
}

CASES = [(n, s) for n in NAMES for s in SIZES]


def rel_err(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(y - ref).max() / np.abs(ref).max())


def shapes(g: KernelGraph) -> dict[str, tuple[int, ...]]:
    return {n: g.types[t].dims for t, n in zip(g.inputs, g.input_names)}


def block_graphs(g: KernelGraph) -> list[BlockGraph]:
    return [n.attrs["block_graph"] for n in g.nodes if n.op == "customized"]


@functools.cache
def reference(name: str, size: str, batch: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Inputs and the spec's float64 output, computed once per case (paper size is slow)."""
    bm = get_benchmark(name)
    spec = bm.spec(size, batch)
    inputs = bm.inputs(spec, seed=0)
    (ref,) = run_float(spec, inputs, "float64")
    return inputs, ref


def test_registry_names_presets_batches() -> None:
    bms = all_benchmarks()
    assert tuple(bms) == NAMES, "listed in DESIGN.md's order"
    for name in NAMES:
        bm = get_benchmark(name)
        assert isinstance(bm, Benchmark) and bm.name == name
        assert bm.preset == PRESETS[name]
        assert bm.batches == (1, 8)


def test_unknown_benchmark_size_and_batch_are_errors() -> None:
    with pytest.raises(KeyError):
        get_benchmark("mha")
    bm = get_benchmark("rmsnorm")
    with pytest.raises(ValueError, match="size"):
        bm.spec("huge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch"):
        bm.spec("paper", 0)


@pytest.mark.parametrize("name", NAMES)
def test_paper_shapes_are_the_papers(name: str) -> None:
    bm = get_benchmark(name)
    assert shapes(bm.spec("paper")) == PAPER_SHAPES[name]
    # Batch 8 scales the leading (row / head) dim of the activations by 8, not the weights.
    scaled = {k: (v[0] * 8,) + v[1:] if k in ACTIVATIONS[name] else v for k, v in PAPER_SHAPES[name].items()}
    assert shapes(bm.spec("paper", 8)) == scaled


@pytest.mark.parametrize("name,size", CASES)
def test_spec_and_experts_build_with_fewer_kernels(name: str, size: str) -> None:
    bm = get_benchmark(name)
    spec = bm.spec(size)
    assert all(n.op != "customized" for n in spec.nodes), "a spec is one predefined kernel per op"
    experts = bm.experts(size)
    assert experts and bm.expert(size) is not None
    for key, ex in experts.items():
        assert shapes(ex) == shapes(spec), key
        assert ex.output_names == spec.output_names
        assert [ex.types[t].dims for t in ex.outputs] == [spec.types[t].dims for t in spec.outputs]
        assert block_graphs(ex), f"{name}/{key} has no customized kernel"
        assert count_kernels(ex) < count_kernels(spec), f"{name}/{key}"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [1, 8])
def test_expert_tiles_fit_h100_shared_memory(name: str, batch: int) -> None:
    # Upper bound: every tile of the block graph alive at once, at its dtype's width.
    for key, ex in get_benchmark(name).experts("paper", batch).items():
        for bg in block_graphs(ex):
            nbytes = sum(math.prod(t.dims) * ITEMSIZE[t.dtype] for t in bg.types)
            assert nbytes <= H100_SMEM, f"{name}/{key}: {nbytes} bytes of tiles in one block"


@pytest.mark.parametrize("name,size", CASES)
def test_json_round_trip_keeps_hash(name: str, size: str) -> None:
    bm = get_benchmark(name)
    for g in [bm.spec(size), *bm.experts(size).values()]:
        back = loads(dumps(g))
        assert graph_hash(back) == graph_hash(g)
        assert dumps(back) == dumps(g)
    hashes = {graph_hash(g) for g in [bm.spec(size), *bm.experts(size).values()]}
    assert len(hashes) == 1 + len(bm.experts(size)), "spec and experts are distinct graphs"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [1, 8])
def test_experts_equal_spec_small(name: str, batch: int) -> None:
    bm = get_benchmark(name)
    inputs, ref = reference(name, "small", batch)
    for key, ex in bm.experts("small", batch).items():
        (y,) = run_float(ex, inputs, "float64")
        assert y.shape == ref.shape
        assert rel_err(y, ref) <= REL_TOL, f"{name}/{key}"


@pytest.mark.parametrize("name", NAMES)
def test_experts_equal_spec_paper(name: str) -> None:
    bm = get_benchmark(name)
    inputs, ref = reference(name, "paper", 1)
    for key, ex in bm.experts("paper").items():
        (y,) = run_float(ex, inputs, "float64")
        assert rel_err(y, ref) <= REL_TOL, f"{name}/{key}"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_experts_equal_spec_paper_batch8(name: str) -> None:
    bm = get_benchmark(name)
    inputs, ref = reference(name, "paper", 8)
    for key, ex in bm.experts("paper", 8).items():
        (y,) = run_float(ex, inputs, "float64")
        assert rel_err(y, ref) <= REL_TOL, f"{name}/{key}"


@pytest.mark.parametrize("name", NAMES)
def test_inputs_are_deterministic_float32(name: str) -> None:
    bm = get_benchmark(name)
    spec = bm.spec("small")
    a, b, c = bm.inputs(spec, seed=0), bm.inputs(spec, seed=0), bm.inputs(spec, seed=1)
    assert list(a) == spec.input_names
    for k, v in a.items():
        assert v.dtype == np.float32 and v.shape == shapes(spec)[k]
        assert np.array_equal(v, b[k]) and not np.array_equal(v, c[k])


@pytest.mark.parametrize("name,size", CASES)
def test_spec_float16_run_is_finite_and_close(name: str, size: str) -> None:
    bm = get_benchmark(name)
    spec = bm.spec(size)
    inputs, ref = reference(name, size, 1)
    (y,) = run_float(spec, inputs, "dtype")
    assert np.isfinite(y).all(), f"{name}: the spec overflows in float16"
    # Rounding every op's result to float16 (unit roundoff 2^-11) stays at that scale.
    assert rel_err(y, ref) < 1e-2


def test_qknorm_inputs_give_moderate_scores() -> None:
    # The qknorm distribution is built so normalized scores have unit standard deviation.
    bm = get_benchmark("qknorm")
    inputs = bm.inputs(bm.spec("paper"))
    q, k = inputs["Q"].astype(np.float64), inputs["K"].astype(np.float64)
    qn = q / np.sqrt((q * q).mean(-1, keepdims=True))
    kn = k / np.sqrt((k * k).mean(-1, keepdims=True))
    scores = qn @ kn.transpose(0, 2, 1)
    assert 0.8 < scores.std() < 1.2


@pytest.mark.parametrize("name", NAMES)
def test_experts_float16_run_is_finite_and_close(name: str) -> None:
    # Every block tensor is float16 in "dtype" mode, accumulators included: a stricter
    # setting than the kernels' float32 accumulators, and still no overflow.
    bm = get_benchmark(name)
    inputs, ref = reference(name, "paper", 1)
    for key, ex in bm.experts("paper").items():
        (y,) = run_float(ex, inputs, "dtype")
        assert np.isfinite(y).all(), f"{name}/{key}"
        assert rel_err(y, ref) < 1e-2, f"{name}/{key}"
