"""`mirage-py emit` and `mirage-py run`: the contract's exit codes, files and JSON fields."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
from clitools import invoke, save_over_smem_graph

from mirage_py.benchmarks import get_benchmark
from mirage_py.ir import dumps, new_kernel_graph, save


def _softmax(scale: str = "1") -> str:
    g = new_kernel_graph()
    x = g.new_input((4, 64), "float16", "X")
    e = g.exp(g.mul_scalar(x, scale))
    g.mark_output(g.div(e, g.reduce_sum(e, 1)), "P")
    return dumps(g)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    paths = {"softmax": d / "softmax.json", "softmax2": d / "softmax2.json"}
    paths["softmax"].write_text(_softmax())
    paths["softmax2"].write_text(_softmax("2"))  # a different function with the same interface
    b = get_benchmark("rmsnorm")
    for name, g in (("spec", b.spec("small", 1)), ("expert", b.expert("small", 1))):
        paths[name] = d / f"rms_{name}.json"
        save(g, paths[name])
    wrong = b.expert("small", 1)
    wrong.nodes[0].attrs["block_graph"].nodes[4].attrs["c"] = Fraction(1, 7)  # mean -> wrong scale
    paths["wrong"] = d / "rms_wrong.json"
    save(wrong, paths["wrong"])
    return paths


def test_emit_with_spec_writes_out(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = invoke("emit", str(files["expert"]), "-o", str(out), "--spec", str(files["spec"]), "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["verified"] is True and rep["trials"] >= 1 and rep["target"] == "sm_90"
    assert [k["grid"] for k in rep["kernels"]] == [[6, 1, 1]]
    for f in ("launch.json", "mugraph.json", "spec.json", "runtime/mp_runtime.cuh", "kernels/k0_customized.cu"):
        assert (out / f).is_file(), f
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temporary left


def test_emit_rejects_a_graph_not_equivalent_to_its_spec(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = invoke("emit", str(files["wrong"]), "-o", str(out), "--spec", str(files["spec"]))
    assert r.exit_code == 1
    assert "not proven equivalent" in r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_emit_over_the_shared_memory_limit_is_a_usage_error(tmp_path: Path) -> None:
    save_over_smem_graph(tmp_path / "big.json")
    r = invoke("emit", str(tmp_path / "big.json"), "-o", str(tmp_path / "out"), "--target", "sm_80")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "shared memory" in lines[0] and "sm_80" in lines[0]
    assert not (tmp_path / "out").exists()


def test_run_check_passes_and_a_wrong_reference_fails(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert invoke("emit", str(files["softmax"]), "-o", str(out)).exit_code == 0
    r = invoke("run", str(out), "--check", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["checked"] and rep["device"] == "emulate" and rep["kernels"] == 4
    assert rep["outputs"][0]["name"] == "P" and rep["outputs"][0]["scaled"] <= 1e-2
    # The same kernels checked against a graph computing something else: exit 1.
    (out / "mugraph.json").write_text(files["softmax2"].read_text())
    r = invoke("run", str(out), "--check")
    assert r.exit_code == 1 and "MISMATCH" in r.stdout


def test_run_a_graph_file_directly(files: dict[str, Path]) -> None:
    r = invoke("run", str(files["softmax"]), "--check")
    assert r.exit_code == 0 and "ok" in r.stdout


def test_run_gpu_without_one_says_so(files: dict[str, Path]) -> None:
    pytest.importorskip("numpy")
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is installed: this checks the message on machines without a GPU")
    except ImportError:
        pass
    r = invoke("run", str(files["softmax"]), "--gpu")
    assert r.exit_code == 2
    assert "no usable GPU" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_run_needs_an_emitted_folder(tmp_path: Path) -> None:
    r = invoke("run", str(tmp_path))
    assert r.exit_code == 2 and "launch.json" in r.stderr
