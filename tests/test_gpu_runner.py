"""The CuPy runner (mirage_py/codegen/gpu.py): the no-GPU path for real, launch.json
reading, bfloat16 bits and the output comparison. Tests that need a GPU are marked `gpu`
and skip with the runner's own reason when there is none."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from clitools import import_file

from mirage_py.codegen import gpu
from mirage_py.codegen.gpu import (
    NO_GPU,
    GpuError,
    compare,
    from_bf16_bits,
    gpu_available,
    host_random_inputs,
    read_launch,
    to_bf16_bits,
)
from mirage_py.ir.dtypes import round_to

HAVE_GPU, WHY = gpu_available()


def write_out(root: Path, **over) -> Path:
    """A minimal OUT folder by the launch.json contract: Y = exp(X), one kernel."""
    (root / "kernels").mkdir(parents=True, exist_ok=True)
    (root / "runtime").mkdir(exist_ok=True)
    (root / "kernels" / "k0_exp.cu").write_text('#include "mp_runtime.cuh"\n')
    launch = {
        "format": "mirage-py.launch.v1",
        "target": "sm_80",
        "include_dirs": ["runtime"],
        "inputs": [{"name": "X", "buffer": "X", "shape": [4, 8], "dtype": "float16"}],
        "outputs": [{"name": "Y", "buffer": "Y", "shape": [4, 8], "dtype": "float16"}],
        "buffers": [
            {"name": "X", "shape": [4, 8], "dtype": "float16", "bytes": 64, "role": "input"},
            {"name": "Y", "shape": [4, 8], "dtype": "float16", "bytes": 64, "role": "output"},
        ],
        "kernels": [
            {
                "name": "k0_exp",
                "source": "kernels/k0_exp.cu",
                "customized": False,
                "op": "exp",
                "grid": [1, 1, 1],
                "block": [128, 1, 1],
                "shared_bytes": 0,
                "args": ["X", "Y"],
                "dtypes": ["float16", "float16"],
            }
        ],
    }
    launch.update(over)
    (root / "launch.json").write_text(json.dumps(launch))
    return root


# -- no GPU ----------------------------------------------------------------------------


@pytest.mark.skipif(HAVE_GPU, reason="this machine has a GPU")
def test_no_gpu_is_said_plainly():
    ok, why = gpu_available()
    assert not ok
    assert why.startswith("no GPU present (") and why.endswith(NO_GPU)


@pytest.mark.skipif(HAVE_GPU, reason="this machine has a GPU")
def test_gpu_program_refuses_without_a_gpu(tmp_path):
    with pytest.raises(GpuError, match="no GPU present"):
        gpu.GpuProgram(write_out(tmp_path))


def test_importing_the_runner_loads_no_gpu_or_solver_packages():
    code = (
        "import sys, mirage_py.codegen.gpu, mirage_py.codegen.module_template, mirage_py.codegen.cost;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'cupy', 'torch', 'z3', 'egglog'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- launch.json -------------------------------------------------------------------------


def test_read_launch(tmp_path):
    plan = read_launch(write_out(tmp_path))
    assert plan.target_cc == 80 and plan.inputs == (("X", "X"),) and plan.outputs == (("Y", "Y"),)
    (k,) = plan.kernels
    assert (k.name, k.grid, k.block, k.args) == ("k0_exp", (1, 1, 1), (128, 1, 1), ("X", "Y"))
    assert plan.buffers["Y"].shape == (4, 8)


@pytest.mark.parametrize(
    "over, message",
    [
        ({"format": "other.v9"}, "unknown format"),
        ({"kernels": [{"name": "k"}]}, "malformed"),
        ({"buffers": []}, "malformed|unknown buffers"),
    ],
)
def test_read_launch_rejects_bad_files(tmp_path, over, message):
    with pytest.raises(GpuError, match=message):
        read_launch(write_out(tmp_path, **over))


def test_read_launch_rejects_missing_sources_and_files(tmp_path):
    with pytest.raises(GpuError, match="cannot read"):
        read_launch(tmp_path)
    out = write_out(tmp_path)
    (out / "kernels" / "k0_exp.cu").unlink()
    with pytest.raises(GpuError, match="missing"):
        read_launch(out)


def test_nvrtc_options_include_the_runtime_and_cuda(tmp_path):
    opts = gpu.nvrtc_options(read_launch(write_out(tmp_path)))
    assert opts[0] == "-std=c++17"
    assert f"-I{(tmp_path / 'runtime').resolve()}" in opts
    inc = gpu.cuda_include_dir()
    if inc is not None:  # this machine has a CUDA toolkit: its header is found
        assert (Path(inc) / "cuda_fp16.h").is_file() and f"-I{inc}" in opts
    assert not any(o.startswith(("-arch", "--gpu-architecture")) for o in opts)  # CuPy adds it


# -- bfloat16 bits and comparison --------------------------------------------------------


def test_bf16_bits_round_to_nearest_even_as_the_ir_does():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(1000).astype(np.float32) * 100, [0.0, -0.0, 1.0, 65504.0, 1e-30]])
    x = x.astype(np.float32)
    bits = to_bf16_bits(x)
    assert bits.dtype == np.uint16
    np.testing.assert_array_equal(from_bf16_bits(bits), round_to(x, "bfloat16"))
    assert np.isnan(from_bf16_bits(to_bf16_bits(np.array([np.nan], np.float32))))[0]


def test_compare_uses_scaled_error_and_dtype_tolerance():
    ref = {"Y": np.array([1.0, -2.0, 4.0])}
    good = compare({"Y": ref["Y"] * (1 + 1e-3)}, ref, {"Y": "float16"})
    assert good.ok and good.errors["Y"] == pytest.approx(1e-3, rel=1e-6)
    bad = compare({"Y": ref["Y"] + 0.2}, ref, {"Y": "float16"})
    assert not bad.ok and bad.errors["Y"] == pytest.approx(0.05)
    nan = compare({"Y": np.array([1.0, np.nan, 4.0])}, ref, {"Y": "float32"})
    assert not nan.ok


def test_host_random_inputs_have_the_buffer_dtypes(tmp_path):
    out = write_out(
        tmp_path,
        inputs=[{"name": "X", "buffer": "X", "shape": [4, 8], "dtype": "bfloat16"}],
        buffers=[
            {"name": "X", "shape": [4, 8], "dtype": "bfloat16", "bytes": 64, "role": "input"},
            {"name": "Y", "shape": [4, 8], "dtype": "float16", "bytes": 64, "role": "output"},
        ],
    )
    x = host_random_inputs(read_launch(out), seed=3)["X"]
    assert x.dtype == np.uint16 and x.shape == (4, 8)
    again = host_random_inputs(read_launch(out), seed=3)["X"]
    np.testing.assert_array_equal(x, again)


# -- on a GPU ----------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_GPU, reason=WHY)
def test_gpu_timing_flushes_l2_and_reports_a_median():
    import cupy

    a = cupy.ones(1 << 20, dtype=cupy.float32)
    t = gpu.time_callable(lambda: a.__imul__(1.0), warmup=2, reps=5)
    assert t.l2_flushed and len(t.samples_us) == 5 and 0 < t.min_us <= t.median_us


# -- benchmarks/gpu_check.py: the parts a CPU can run ------------------------------------


@functools.cache
def _gpu_check():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
    return import_file(path, "gpu_check")


def test_kendall_tau_matches_scipy():
    from scipy.stats import kendalltau

    tau = _gpu_check().kendall_tau
    rng = np.random.default_rng(1)
    a, b = list(rng.standard_normal(12)), list(rng.standard_normal(12))
    assert tau(a, b) == pytest.approx(kendalltau(a, b).statistic)
    assert tau([1, 2, 3], [10, 20, 30]) == 1.0 and tau([1, 2, 3], [3, 2, 1]) == -1.0
    b[3] = b[4]  # a tie
    assert tau(a, b) == pytest.approx(kendalltau(a, b).statistic)


@pytest.mark.parametrize("name", ["rmsnorm", "gated_mlp", "gqa", "qknorm", "lora", "ntrans"])
def test_pytorch_baseline_computes_each_spec(name):
    torch = pytest.importorskip("torch")
    from mirage_py.benchmarks import get_benchmark
    from mirage_py.ir import run_float

    b = get_benchmark(name)
    spec = b.spec("small")
    host = b.inputs(spec, seed=0)
    fn = _gpu_check().torch_function(spec)
    got = fn(*(torch.from_numpy(host[n]).double() for n in spec.input_names))
    ref = run_float(spec, host)
    for y, r in zip(got, ref):
        np.testing.assert_allclose(y.numpy(), r, rtol=1e-9, atol=1e-9 * np.max(np.abs(r)))


def test_model_gpu_names():
    pick = _gpu_check().model_gpu
    assert pick("NVIDIA H100 80GB HBM3") == "H100" and pick("NVIDIA H200") == "H200"
    assert pick("NVIDIA A100-SXM4-80GB") == "A100" and pick("some other GPU") == "H100"


def test_gpu_check_dry_run_emits_everything_without_solvers(tmp_path):
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
    from mirage_py.benchmarks import get_benchmark
    from mirage_py.ir import save

    report, winners = tmp_path / "r.json", tmp_path / "winners"
    winners.mkdir()
    save(get_benchmark("lora").expert("small"), winners / "lora.json")  # stands for a search winner
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            "--dry-run",
            "--size",
            "small",
            "--winners",
            str(winners),
            "--json-out",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    d = json.loads(report.read_text())
    assert d["measured"] is False and d["solvers_imported"] == []
    labels = {(r["bench"], r["label"]) for r in d["rows"]}
    assert ("rmsnorm", "spec") in labels and ("gqa", "flash_decoding") in labels and ("lora", "winner") in labels
    assert len(labels) == 15
    assert all(r["kernels"] >= 1 and r["modeled_us"] > 0 and r["ok"] is None for r in d["rows"])
    assert "DRY RUN" in proc.stdout
