"""OUT/module.py (mirage_py/codegen/module_template.py): the file it writes, argument
checks with clear errors, weights from weights.npz, device choice, and running."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clitools import import_file

from mirage_py.codegen.gpu import GpuError, gpu_available, to_bf16_bits
from mirage_py.codegen.module_template import (
    ModuleInputError,
    Program,
    check_array,
    load_program,
    load_weights,
    write_module,
)

HAVE_GPU, WHY = gpu_available()


def write_out(root: Path, weights: dict[str, np.ndarray] | None = None, w_dtype: str = "float16") -> Path:
    """A minimal OUT by the launch.json contract: Y = X @ W, X (2, 8), W (8, 16)."""
    (root / "kernels").mkdir(parents=True, exist_ok=True)
    (root / "runtime").mkdir(exist_ok=True)
    (root / "kernels" / "k0.cu").write_text('#include "mp_runtime.cuh"\n')

    def buf(name, shape, dtype, role):
        return {"name": name, "shape": shape, "dtype": dtype, "bytes": 0, "role": role}

    launch = {
        "format": "mirage-py.launch.v1",
        "target": "sm_80",
        "include_dirs": ["runtime"],
        "inputs": [
            {"name": "X", "buffer": "X", "shape": [2, 8], "dtype": "float16"},
            {"name": "W", "buffer": "W", "shape": [8, 16], "dtype": w_dtype},
        ],
        "outputs": [{"name": "Y", "buffer": "Y", "shape": [2, 16], "dtype": "float16"}],
        "buffers": [
            buf("X", [2, 8], "float16", "input"),
            buf("W", [8, 16], w_dtype, "input"),
            buf("Y", [2, 16], "float16", "output"),
        ],
        "kernels": [
            {
                "name": "k0",
                "source": "kernels/k0.cu",
                "grid": [1, 1, 1],
                "block": [128, 1, 1],
                "shared_bytes": 0,
                "args": ["X", "W", "Y"],
                "dtypes": ["float16", w_dtype, "float16"],
            }
        ],
    }
    (root / "launch.json").write_text(json.dumps(launch))
    if weights is not None:
        np.savez(root / "weights.npz", **weights)
    return root


def test_write_module_writes_a_loadable_file(tmp_path):
    out = write_out(tmp_path, {"W": np.ones((8, 16), np.float32)})
    path = write_module(out)
    text = path.read_text()
    assert "mirage_py" in text and "installed" in text  # says what it needs
    assert "inputs X;" in text and "f(X=x)" in text  # the weight is not a call argument
    mod = import_file(path, "emitted_module")
    prog = mod.load("cpu")
    assert isinstance(prog, Program) and prog.out == out.resolve() and prog.device == "cpu"
    assert prog.input_names == ["X"] and prog.output_names == ["Y"]


def test_weights_are_rounded_to_the_buffer_dtype(tmp_path):
    w = np.linspace(-1, 1, 128, dtype=np.float32).reshape(8, 16)
    plan_out = write_out(tmp_path, {"W": w})
    got = load_weights(plan_out, Program(plan_out, "cpu").plan)["W"]
    assert got.dtype == np.float16 and np.array_equal(got, w.astype(np.float16))
    bf = write_out(tmp_path / "bf", {"W": w}, w_dtype="bfloat16")
    got = load_weights(bf, Program(bf, "cpu").plan)["W"]
    assert got.dtype == np.uint16 and np.array_equal(got, to_bf16_bits(w))


def test_weights_of_the_wrong_shape_or_name_are_refused(tmp_path):
    with pytest.raises(ModuleInputError, match="weight W has shape"):
        Program(write_out(tmp_path, {"W": np.ones((16, 8), np.float32)}), "cpu")
    with pytest.raises(ModuleInputError, match="not an input"):
        Program(write_out(tmp_path / "b", {"Z": np.ones(3)}), "cpu")


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((2, 9), np.float16), r"input X: expected shape \[2, 8\], got \[2, 9\]"),
        (np.zeros((2, 8), np.float32), "input X: expected dtype float16, got float32"),
        (np.zeros((8, 2), np.float16).T, "C-contiguous"),
        (np.frombuffer(np.zeros(40, np.uint8).data, np.float16, 16, 2).reshape(2, 8), "16-byte aligned"),
        ([[0.0] * 8] * 2, "expected a NumPy array"),
    ],
)
def test_bad_arrays_get_clear_errors(tmp_path, x, message):
    prog = load_program(write_out(tmp_path, {"W": np.ones((8, 16), np.float32)}), "cpu")
    with pytest.raises(ModuleInputError, match=message):
        prog(X=x)


def test_missing_and_unexpected_names(tmp_path):
    prog = load_program(write_out(tmp_path, {"W": np.ones((8, 16), np.float32)}), "cpu")
    with pytest.raises(ModuleInputError, match=r"missing \['X'\]"):
        prog()
    with pytest.raises(ModuleInputError, match="unexpected.*weights.npz"):
        prog(X=np.zeros((2, 8), np.float16), W=np.zeros((8, 16), np.float16))
    with pytest.raises(ModuleInputError, match="unknown outputs"):
        prog(X=np.zeros((2, 8), np.float16), out={"Z": np.zeros(3)})
    with pytest.raises(ModuleInputError, match=r"out Y: expected shape"):
        prog(X=np.zeros((2, 8), np.float16), out={"Y": np.zeros((2, 8), np.float16)})
    with pytest.raises(ModuleInputError, match="only the GPU"):
        prog(X=np.zeros((2, 8), np.float16), stream=1)


def test_without_weights_every_input_is_an_argument(tmp_path):
    prog = load_program(write_out(tmp_path), "cpu")
    assert prog.input_names == ["X", "W"]


def test_torch_tensors_are_checked_too(tmp_path):
    torch = pytest.importorskip("torch")
    assert check_array("x", torch.zeros(2, 8, dtype=torch.float16), (2, 8), "float16") == "torch"
    assert check_array("x", torch.zeros(2, 8, dtype=torch.bfloat16), (2, 8), "bfloat16") == "torch"
    with pytest.raises(ModuleInputError, match="expected dtype bfloat16.*uint16 bits"):
        check_array("x", torch.zeros(2, 8, dtype=torch.float32), (2, 8), "bfloat16")
    with pytest.raises(ModuleInputError, match="C-contiguous"):
        check_array("x", torch.zeros(8, 2, dtype=torch.float16).t(), (2, 8), "float16")


def test_device_choice(tmp_path):
    out = write_out(tmp_path)
    with pytest.raises(ModuleInputError, match="device must be one of"):
        load_program(out, "tpu")
    auto = load_program(out, "auto")
    assert auto.device == ("gpu" if HAVE_GPU else "cpu")
    if not HAVE_GPU:
        with pytest.raises(GpuError, match="no GPU present"):
            load_program(out, "gpu")


# -- the CPU path, for real: an emitted expert under the emulation ---------------------


@pytest.fixture(scope="module")
def rmsnorm_out(tmp_path_factory):
    from mirage_py.benchmarks import get_benchmark
    from mirage_py.codegen.emit import emit_program

    b = get_benchmark("rmsnorm")
    g = b.expert("small")
    out = tmp_path_factory.mktemp("rmsnorm_out")
    emit_program(g, out, target="sm_90")
    host = {n: a.astype(np.float16) for n, a in b.inputs(g, seed=0).items()}
    np.savez(out / "weights.npz", W=host["W"])
    write_module(out)
    return out, g, host


def _reference(g, host):
    from mirage_py.ir import run_float

    return run_float(g, {n: a.astype(np.float64) for n, a in host.items()})[0]


def test_cpu_module_runs_the_emitted_kernels(rmsnorm_out):
    out, g, host = rmsnorm_out
    mod = import_file(out / "module.py", "rms_module")
    f = mod.load("cpu")
    assert f.input_names == ["X"]  # W is bound from weights.npz
    y = f(X=host["X"])["Y"]
    assert y.dtype == np.float16 and y.shape == (host["X"].shape[0], host["W"].shape[1])
    ref = _reference(g, host)
    assert np.max(np.abs(y - ref)) / np.max(np.abs(ref)) < 1e-2
    buf = np.empty_like(y)
    res = f(X=host["X"], out={"Y": buf})
    assert res["Y"] is buf and np.array_equal(buf, y)


def test_cpu_module_takes_and_returns_torch_tensors(rmsnorm_out):
    torch = pytest.importorskip("torch")
    out, g, host = rmsnorm_out
    f = load_program(out, "cpu")
    y_np = f(X=host["X"])["Y"]
    y_t = f(X=torch.from_numpy(host["X"].copy()))["Y"]
    assert isinstance(y_t, torch.Tensor) and y_t.dtype == torch.float16
    assert np.array_equal(y_t.numpy(), y_np)
    buf = torch.empty(y_np.shape, dtype=torch.float16)
    assert f(X=torch.from_numpy(host["X"].copy()), out={"Y": buf})["Y"] is buf
    assert np.array_equal(buf.numpy(), y_np)


@pytest.mark.slow  # a search, verification and an emulation build: about 8 s
def test_optimize_writes_a_runnable_module(tmp_path):
    from mirage_py.benchmarks import get_benchmark
    from mirage_py.ir import run_float
    from mirage_py.pipeline import OptimizeOptions, optimize
    from mirage_py.search.config import get_config
    from mirage_py.search.enumerate import Budget

    b = get_benchmark("ntrans")
    spec = b.spec("small")
    out = tmp_path / "OUT"
    optimize(spec, out, OptimizeOptions(get_config("default"), Budget(max_states=20)))
    assert (out / "module.py").is_file() and (out / "launch.json").is_file()
    f = load_program(out, "cpu")
    host = {n: a.astype(np.float16) for n, a in b.inputs(spec, seed=1).items()}
    y = f(**host)["Y"]
    ref = run_float(spec, {n: a.astype(np.float64) for n, a in host.items()})[0]
    assert np.max(np.abs(y - ref)) / np.max(np.abs(ref)) < 1e-2
