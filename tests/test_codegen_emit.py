"""Emitted CUDA, run on the CPU under the emulation header and built by nvcc.

Every program here is emitted with its own kernel-name prefix and all of them are built
into one emulation executable (one g++ run), then each is run on its benchmark's inputs and
compared with the float64 reference at the per-dtype tolerance. The emulation runs every
warp instruction lane by lane and checks every shared-memory access for races.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from codegen_cases import FEATURE_CASES  # tests/ is on sys.path (rootdir-relative import)

from mirage_py.benchmarks import get_benchmark
from mirage_py.codegen import nvcc as nv
from mirage_py.codegen.emit import emit_program
from mirage_py.codegen.run import EmulatedPrograms, _combined_source, check_outputs, random_inputs, read_launch
from mirage_py.ir import KernelGraph, new_block_graph, new_kernel_graph
from mirage_py.ir.ops import BINARY, UNARY
from mirage_py.verify.numerics import retype

NAMES = ["rmsnorm", "gated_mlp", "gqa", "qknorm", "lora", "ntrans"]
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE_GOLDEN = os.environ.get("MIRAGE_PY_UPDATE_GOLDEN") == "1"

Inputs = Callable[[KernelGraph], dict[str, np.ndarray]]


def _bench_inputs(name: str) -> Inputs:
    return lambda g: get_benchmark(name).inputs(g, 0)


def _ops_graph(customized: bool) -> KernelGraph:
    """Every unary and binary op (and reduce, transpose, concat, rms_norm), on positive
    float32 inputs so sqrt, reciprocal and fractional powers are defined. As kernel ops
    (each lowered to its own kernel) or all in one customized kernel."""
    g = new_kernel_graph()
    x = g.new_input((8, 64), "float32", "x")
    y = g.new_input((8, 64), "float32", "y")
    row = g.new_input((64,), "float32", "row")
    z = g.new_input((2, 2048), "float32", "z")  # long rows: block-wide reductions
    attrs: dict[str, dict[str, object]] = {
        "mul_scalar": {"c": Fraction(-3, 7)},
        "add_scalar": {"c": Fraction(5, 4)},
        "pow_scalar": {"c": Fraction(-1, 2)},
        "gelu": {"approximate": "tanh"},
    }
    results: list[tuple[str, str, tuple[object, ...], dict[str, object]]] = []
    for op in sorted(UNARY):
        results.append((op, op, ("x",), attrs.get(op, {})))
    results += [("gelu_erf", "gelu", ("x",), {}), ("pow3", "pow_scalar", ("x",), {"c": 3})]
    for op in sorted(BINARY):
        results.append((op, op, ("x", "y"), {}))
        results.append((op + "_bcast", op, ("x", "row"), {}))
    results += [
        ("sum0", "reduce_sum", ("x",), {"dim": 0}),
        ("sum1", "reduce_sum", ("y",), {"dim": 1}),
        ("sum1_split", "reduce_sum", ("x",), {"dim": 1, "size": 16}),
        ("xt", "transpose", ("x",), {}),
        ("cat", "concat", ("x", "y"), {"dim": 1}),
        ("rms", "rms_norm", ("y",), {"eps": Fraction(1, 100)}),
        ("zsum", "reduce_sum", ("z",), {"dim": 1}),
        ("zrms", "rms_norm", ("z",), {"eps": Fraction(1, 100)}),
    ]
    if not customized:
        named = {"x": x, "y": y, "row": row, "z": z}
        for out, op, args, a in results:
            g.mark_output(g.add_op(op, [named[n] for n in args], **a), out)
        return g
    bg = new_block_graph((1, 1, 1), 1)
    bx, by, brow, bz = (bg.new_input(t, (-1, -1, -1)) for t in (x, y, row, z))
    named_b = {"x": bx, "y": by, "row": brow, "z": bz}
    for _, op, args, a in results:
        bg.new_output(bg.add_op(op, [named_b[n] for n in args], **a), (-1, -1, -1))
    outs = g.customized([x, y, row, z], bg)
    for (name, *_), t in zip(results, outs):
        g.mark_output(t, name)
    return g


def _positive_inputs(g: KernelGraph) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {n: rng.uniform(0.5, 1.5, g.types[t].dims).astype(np.float32) for t, n in zip(g.inputs, g.input_names)}


def _golden_graphs() -> dict[str, KernelGraph]:
    """Golden-file graphs (also run in CASES): a fused RMSNorm + matmul (tensor cores,
    for-loop, row accumulators, epilogue) and a softmax as predefined kernels (exp, row sum,
    broadcast division)."""
    g = get_benchmark("rmsnorm").expert("small", 1)
    s = new_kernel_graph()
    x = s.new_input((4, 64), "float16", "X")
    e = s.exp(x)
    s.mark_output(s.div(e, s.reduce_sum(e, 1)), "P")
    return {"rmsnorm_fused": g, "softmax_kernels": s}


def _cases() -> dict[str, tuple[KernelGraph, Inputs]]:
    cases: dict[str, tuple[KernelGraph, Inputs]] = {}
    for name in NAMES:
        b = get_benchmark(name)
        cases[f"{name}_expert"] = (b.expert("small", 1), _bench_inputs(name))
        cases[f"{name}_spec"] = (b.spec("small", 1), _bench_inputs(name))
    # Other element types: bfloat16 on tensor cores, float32 on the CUDA-core path.
    cases["gated_mlp_bf16"] = (
        retype(get_benchmark("gated_mlp").expert("small", 1), "bfloat16"),
        _bench_inputs("gated_mlp"),
    )
    cases["lora_f32"] = (retype(get_benchmark("lora").expert("small", 1), "float32"), _bench_inputs("lora"))
    cases["rmsnorm_f32"] = (retype(get_benchmark("rmsnorm").expert("small", 1), "float32"), _bench_inputs("rmsnorm"))
    cases["softmax_kernels"] = (_golden_graphs()["softmax_kernels"], lambda g: random_inputs(g, 1))
    cases["ops_kernels"] = (_ops_graph(False), _positive_inputs)
    for name, make in FEATURE_CASES.items():
        cases[name] = (make(), lambda g: random_inputs(g, 0))
    cases["ops_block"] = (_ops_graph(True), _positive_inputs)
    return cases


CASES = _cases()
# Barriers the race test removes from rms_long_loop (the comment names each one).
RACE_MUTANTS = {
    "raw": "the previous level's shared-memory writes are visible",  # spill -> epilogue
    "war": "done with this iteration's shared memory before it is refilled",  # prefetch overwrites
}


def drop_barrier(source: Path, why: str) -> None:
    text = source.read_text()
    line = f"__syncthreads();  // {why}"
    assert text.count(line) >= 1, why
    source.write_text(text.replace(line, "// (barrier removed by the test)", 1))


@pytest.fixture(scope="module")
def emitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("emit")
    outs = {}
    for name, (g, _) in CASES.items():
        outs[name] = root / name
        emit_program(g, outs[name], "sm_90", prefix=f"{name}_")
    for name, why in RACE_MUTANTS.items():
        out = root / f"race_{name}"
        prog = emit_program(FEATURE_CASES["rms_long_loop"](), out, prefix=f"race_{name}_")
        drop_barrier(out / prog.kernels[0].source, why)
        outs[f"race_{name}"] = out
    return outs


@pytest.fixture(scope="module")
def built(emitted: dict[str, Path]) -> EmulatedPrograms:
    return EmulatedPrograms.build(list(emitted.values()))


@pytest.mark.parametrize("case", list(CASES))
def test_emulated_program_matches_reference(case: str, emitted: dict[str, Path], built: EmulatedPrograms) -> None:
    graph, make_inputs = CASES[case]
    inputs = make_inputs(graph)
    outputs, res = built.run(emitted[case], inputs)
    assert res.races == 0 and res.errors == 0
    checks = check_outputs(graph, inputs, outputs)
    assert len(checks) == len(graph.outputs)
    bad = [(c.name, c.scaled, c.tolerance) for c in checks if not c.ok]
    assert not bad, bad


@pytest.mark.parametrize("case", list(CASES))
def test_launch_json_follows_the_graph(case: str, emitted: dict[str, Path]) -> None:
    """One kernel per kernel op, in order; a customized kernel's grid is its block graph's;
    args are the node's inputs then outputs, with their dtypes; sources exist."""
    graph, _ = CASES[case]
    spec = read_launch(emitted[case])
    assert spec["format"] == "mirage-py.launch.v1" and spec["include_dirs"] == ["runtime"]
    assert (emitted[case] / "runtime" / "mp_runtime.cuh").is_file()
    assert len(spec["kernels"]) == len(graph.nodes)
    buffers = {b["name"]: b for b in spec["buffers"]}
    for node, k in zip(graph.nodes, spec["kernels"]):
        assert (emitted[case] / k["source"]).is_file()
        assert k["customized"] == (node.op == "customized") and k["op"] == node.op
        if node.op == "customized":
            assert tuple(k["grid"]) == node.attrs["block_graph"].grid_dims
        assert k["args"] == k["reads"] + k["writes"] and len(k["reads"]) == len(node.inputs)
        assert k["dtypes"] == [graph.types[t].dtype for t in (*node.inputs, *node.outputs)]
        for a, t in zip(k["args"], (*node.inputs, *node.outputs)):
            assert buffers[a]["shape"] == list(graph.types[t].dims)
        assert k["shared_bytes"] <= 227 * 1024 and k["block"] == [128, 1, 1]
    assert [i["name"] for i in spec["inputs"]] == graph.input_names
    assert [o["name"] for o in spec["outputs"]] == graph.output_names


def test_bfloat16_inputs_may_be_given_as_bits(emitted: dict[str, Path], built: EmulatedPrograms) -> None:
    graph, make = CASES["gated_mlp_bf16"]
    inputs = make(graph)
    bits = {n: (np.asarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16) for n, x in inputs.items()}
    a, _ = built.run(emitted["gated_mlp_bf16"], bits, raw=True)
    # Truncated bits differ from rounded floats: compare with the run on the same bits.
    floats = {n: (b.astype(np.uint32) << 16).view(np.float32) for n, b in bits.items()}
    b, _ = built.run(emitted["gated_mlp_bf16"], floats)
    assert a["Y"].dtype == np.uint16
    np.testing.assert_array_equal((a["Y"].astype(np.uint32) << 16).view(np.float32), b["Y"])


# ---------------------------------------------------------------------------------------
# The race detector on an emitted kernel


@pytest.mark.parametrize("mutant", list(RACE_MUTANTS))
def test_removed_barrier_is_reported(mutant: str, emitted: dict[str, Path], built: EmulatedPrograms) -> None:
    """The fused RMSNorm + matmul (8 iterations, deeper than the prefetch pipeline) with one
    needed barrier removed: after the row sums are stored (read-after-write: the epilogue
    reads them), or at the end of an iteration (a later prefetch overwrites a tile this
    iteration still reads). The detector logs every access of an epoch, so the same reports
    come back every run; the intact kernel has none."""
    g, make = CASES["rms_long_loop"]
    inputs = make(g)
    runs = [built.launch(emitted[f"race_{mutant}"], inputs) for _ in range(2)]
    for res in runs:
        assert res.returncode == 1 and res.errors == 0 and res.races > 0
        assert all("read/write conflict" in r for r in res.race_reports)
    assert runs[0].race_reports == runs[1].race_reports
    intact = built.launch(emitted["rms_long_loop"], inputs)
    assert intact.races == 0 and intact.race_reports == [] and intact.returncode == 0


# ---------------------------------------------------------------------------------------
# Golden files: the emitted source of two small graphs, reviewed when it changes


def _program_text(out: Path) -> str:
    spec = read_launch(out)
    parts = [json.dumps(spec, indent=1)]
    parts += [f"// ==== {k['source']}\n" + (out / k["source"]).read_text() for k in spec["kernels"]]
    return "\n".join(parts)


@pytest.mark.parametrize("name", ["rmsnorm_fused", "softmax_kernels"])
def test_golden_source(name: str, tmp_path: Path) -> None:
    """Set MIRAGE_PY_UPDATE_GOLDEN=1 to rewrite the files after a reviewed change."""
    emit_program(_golden_graphs()[name], tmp_path, "sm_90")
    text = _program_text(tmp_path)
    path = GOLDEN / f"{name}.cu.txt"
    if UPDATE_GOLDEN:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"missing golden file {path} (run with MIRAGE_PY_UPDATE_GOLDEN=1)"
    assert text == path.read_text(), f"emitted source of {name} changed; review and update the golden file"


# ---------------------------------------------------------------------------------------
# nvcc: every emitted kernel builds for sm_80 and sm_90


needs_nvcc = pytest.mark.skipif(nv.find_nvcc() is None, reason="nvcc not found: the GPU build is not checked")


@needs_nvcc
@pytest.mark.slow
@pytest.mark.parametrize("arch", nv.TARGETS)
def test_nvcc_builds_every_emitted_kernel(arch: str, emitted: dict[str, Path]) -> None:
    outs = [p for n, p in emitted.items() if not n.startswith("race_")]
    unit = _combined_source(outs)
    build = nv.compile_cubin(unit, arch, include_dirs=[outs[0] / "runtime"])
    names = [k["name"] for o in outs for k in read_launch(o)["kernels"]]
    assert sorted(k.name for k in build.kernels.values()) == sorted(names)
    assert "warning" not in build.log.lower(), build.log
    for k in build.kernels.values():
        assert k.arch == arch and 0 < k.registers <= 255
    print(f"\n{nv.resource_table([build])}")


@needs_nvcc
def test_nvcc_builds_golden_programs(tmp_path: Path) -> None:
    """Fast tier: the two golden programs build for both targets, with no warning."""
    for name, g in _golden_graphs().items():
        emit_program(g, tmp_path / name, "sm_80")
        for k in read_launch(tmp_path / name)["kernels"]:
            for arch in nv.TARGETS:
                b = nv.compile_cubin(tmp_path / name / k["source"], arch, include_dirs=[tmp_path / name / "runtime"])
                assert list(b.kernels) == [k["name"]] and "warning" not in b.log.lower(), b.log


def test_tensor_cores_and_transposed_loads_in_source(emitted: dict[str, Path]) -> None:
    """16-bit matmuls use warp_mma (ldmatrix + mma.sync); qknorm's K^T is read in place
    (a column-major B operand), float32 matmuls use the CUDA-core path."""
    qk = (emitted["qknorm_expert"] / read_launch(emitted["qknorm_expert"])["kernels"][0]["source"]).read_text()
    assert re.search(r"mp::warp_mma<mp::f16, mp::kRowMajor, mp::kColMajor>", qk)
    f32 = (emitted["lora_f32"] / read_launch(emitted["lora_f32"])["kernels"][0]["source"]).read_text()
    assert "mp::simt_mma<" in f32 and "warp_mma" not in f32
    bf = (emitted["gated_mlp_bf16"] / read_launch(emitted["gated_mlp_bf16"])["kernels"][0]["source"]).read_text()
    assert "mp::warp_mma<mp::bf16," in bf and "mp::copy_g2s_async" in bf


def test_shared_runtime_is_a_copy(emitted: dict[str, Path]) -> None:
    from mirage_py.codegen.emulate import RUNTIME_DIR

    for f in RUNTIME_DIR.glob("*.cuh"):
        assert (emitted["rmsnorm_expert"] / "runtime" / f.name).read_bytes() == f.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gqa", "qknorm"])
def test_other_experts_emulate(name: str, tmp_path: Path) -> None:
    """The split-KV experts whose combine step is predefined kernels."""
    b = get_benchmark(name)
    g = b.experts("small", 1)["split_kv_reduce"]
    emit_program(g, tmp_path, prefix=f"{name}_split_")
    inputs = b.inputs(g, 0)
    outputs, _ = EmulatedPrograms.build([tmp_path]).run(tmp_path, inputs)
    assert all(c.ok for c in check_outputs(g, inputs, outputs))


def test_out_can_be_moved(emitted: dict[str, Path], tmp_path: Path) -> None:
    """launch.json's paths are relative: a copied OUT still describes its files."""
    dst = tmp_path / "moved"
    shutil.copytree(emitted["lora_expert"], dst)
    for k in read_launch(dst)["kernels"]:
        assert (dst / k["source"]).is_file()
