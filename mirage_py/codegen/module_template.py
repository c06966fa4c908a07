"""OUT/module.py: the Python entry point of an emitted program, and the code behind it.

`write_module(out)` writes a small OUT/module.py that finds its own folder and calls
`load_program` here, so the logic is tested once, in this package, not copied into every
OUT. `load_program(out, device)` returns a `Program`: call it with the spec's non-weight
inputs by name (NumPy arrays, CuPy arrays or torch tensors), optionally `out=` (output
arrays by name) and `stream=` (a CuPy stream, a torch.cuda.Stream or a raw cudaStream_t);
it checks every array (shape, dtype, C-contiguity, 16-byte alignment) with a clear error,
binds the weights from OUT/weights.npz, runs the kernels and returns the outputs by name,
as the same kind of array as the inputs.

Devices: "gpu" runs the kernels with CuPy (mirage_py.codegen.gpu); "cpu" runs the same .cu
files built under the CPU emulation header (the emitter's host runner); "auto" takes the GPU
when one is usable, else the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .gpu import HOST_DTYPE, LaunchPlan, from_bf16_bits, gpu_available, read_launch, to_bf16_bits

DEVICES = ("auto", "gpu", "cpu")

MODULE_TEMPLATE = '''"""A program emitted by mirage-py: {kernels} kernel(s); inputs {inputs}; outputs {outputs}.

    import module
    f = module.load("auto")      # "gpu" (CuPy), "cpu" (CPU emulation of the same .cu files) or "auto"
    outs = f({call})             # NumPy arrays, CuPy arrays or torch tensors; out=..., stream=...

This file needs the mirage_py package installed (pip install mirage-py): it only finds its
own folder and hands it to mirage_py.codegen.module_template.load_program. Weights, if any,
come from weights.npz beside it.
"""

from pathlib import Path

from mirage_py.codegen.module_template import load_program

HERE = Path(__file__).resolve().parent


def load(device: str = "auto"):
    """A callable running this program on `device` ("auto", "gpu" or "cpu")."""
    return load_program(HERE, device)
'''


class ModuleInputError(ValueError):
    """A call with a missing, unexpected or malformed array."""


def write_module(out: Path | str) -> Path:
    """Write OUT/module.py for the program described by OUT/launch.json."""
    out = Path(out)
    plan = read_launch(out)
    weights = _weight_names(out)
    free = [n for n, _ in plan.inputs if n not in weights]
    text = MODULE_TEMPLATE.format(
        kernels=len(plan.kernels),
        inputs=", ".join(free) or "none",
        outputs=", ".join(n for n, _ in plan.outputs),
        call=", ".join(f"{n}={n.lower()}" for n in free),
    )
    path = out / "module.py"
    path.write_text(text)
    return path


def _weight_names(out: Path) -> set[str]:
    path = out / "weights.npz"
    if not path.is_file():
        return set()
    with np.load(path) as z:
        return set(z.files)


# ---------------------------------------------------------------------------------------
# Array kinds: NumPy, CuPy, torch


def _kind(x: Any) -> str:
    mod = type(x).__module__
    if isinstance(x, np.ndarray):
        return "numpy"
    if mod.startswith("cupy"):
        return "cupy"
    if mod.startswith("torch"):
        return "torch"
    raise ModuleInputError(f"expected a NumPy array, a CuPy array or a torch tensor, got {type(x).__name__}")


# What each IR dtype accepts, per kind (bfloat16: its bits as uint16, or torch.bfloat16).
_ACCEPT = {
    "float16": {"numpy": ("float16",), "cupy": ("float16",), "torch": ("torch.float16",)},
    "bfloat16": {"numpy": ("uint16",), "cupy": ("uint16",), "torch": ("torch.bfloat16",)},
    "float32": {"numpy": ("float32",), "cupy": ("float32",), "torch": ("torch.float32",)},
}


def _facts(x: Any, kind: str) -> tuple[tuple[int, ...], str, bool, int]:
    """(shape, dtype name, C-contiguous, data address)."""
    if kind == "torch":
        return tuple(x.shape), str(x.dtype), bool(x.is_contiguous()), int(x.data_ptr())
    addr = int(x.ctypes.data) if kind == "numpy" else int(x.data.ptr)
    return tuple(x.shape), str(x.dtype), bool(x.flags.c_contiguous), addr


def check_array(what: str, x: Any, shape: tuple[int, ...], dtype: str) -> str:
    """Check one argument against its buffer; return its kind. Errors name the argument
    and say what was expected."""
    kind = _kind(x)
    got_shape, got_dtype, contiguous, addr = _facts(x, kind)
    if got_shape != tuple(shape):
        raise ModuleInputError(f"{what}: expected shape {list(shape)}, got {list(got_shape)}")
    accepted = _ACCEPT[dtype][kind]
    if got_dtype not in accepted:
        hint = " (bfloat16 is passed as its uint16 bits; see to_bf16_bits)" if dtype == "bfloat16" else ""
        raise ModuleInputError(f"{what}: expected dtype {dtype}{hint}, got {got_dtype}")
    if not contiguous:
        raise ModuleInputError(f"{what}: must be C-contiguous (row-major); pass a contiguous copy")
    if addr % 16:
        raise ModuleInputError(f"{what}: data must be 16-byte aligned (address {addr:#x}); pass a fresh copy")
    return kind


# ---------------------------------------------------------------------------------------
# Conversions between kinds


def _to_numpy(x: Any, kind: str) -> np.ndarray:
    if kind == "numpy":
        return x
    if kind == "cupy":
        return x.get()
    t = x.detach().cpu()
    import torch

    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def _to_cupy(x: Any, kind: str) -> Any:
    import cupy

    if kind == "cupy":
        return x
    if kind == "numpy":
        return cupy.asarray(x)
    import torch

    t = x if x.is_cuda else x.cuda()
    if t.dtype == torch.bfloat16:  # DLPack has no bfloat16 in CuPy: move the bits
        return cupy.from_dlpack(t.view(torch.int16)).view(cupy.uint16)
    return cupy.from_dlpack(t)


def _from_numpy(a: np.ndarray, kind: str, dtype: str) -> Any:
    if kind != "torch":
        return a
    import torch

    if dtype == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _from_cupy(a: Any, kind: str, dtype: str) -> Any:
    if kind == "cupy":
        return a
    if kind == "numpy":
        return a.get()
    import torch

    if dtype == "bfloat16":
        return torch.from_dlpack(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_dlpack(a)


def _cupy_stream(stream: Any) -> Any:
    import cupy

    if stream is None or isinstance(stream, cupy.cuda.Stream | cupy.cuda.ExternalStream):
        return stream
    if hasattr(stream, "cuda_stream"):  # torch.cuda.Stream
        return cupy.cuda.ExternalStream(int(stream.cuda_stream))
    if isinstance(stream, int):
        return cupy.cuda.ExternalStream(stream)
    raise ModuleInputError(
        f"stream: expected a CuPy stream, a torch.cuda.Stream or an int, got {type(stream).__name__}"
    )


def load_weights(out: Path, plan: LaunchPlan) -> dict[str, np.ndarray]:
    """weights.npz as host arrays in each buffer's carrying dtype (float arrays are rounded
    to float16 or to bfloat16 bits as the buffer needs)."""
    path = out / "weights.npz"
    if not path.is_file():
        return {}
    buffers = dict(plan.inputs)
    weights = {}
    with np.load(path) as z:
        for name in z.files:
            if name not in buffers:
                raise ModuleInputError(f"{path}: weight {name!r} is not an input of the program")
            spec = plan.buffers[buffers[name]]
            a = z[name]
            if tuple(a.shape) != spec.shape:
                raise ModuleInputError(f"{path}: weight {name} has shape {list(a.shape)}, expected {list(spec.shape)}")
            if spec.dtype == "bfloat16" and a.dtype != np.uint16:
                a = to_bf16_bits(a.astype(np.float32))
            weights[name] = np.ascontiguousarray(a, dtype=HOST_DTYPE[spec.dtype])
    return weights


# ---------------------------------------------------------------------------------------
# Programs


Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
Args = dict[str, Any]
Kinds = dict[str, str]


class Program:
    """An emitted program bound to a device. Call it with the non-weight inputs by name."""

    def __init__(self, out: Path, device: str) -> None:
        self.out = Path(out)
        self.plan = read_launch(self.out)
        self.device = _resolve(device)
        self.weights = load_weights(self.out, self.plan)
        self.input_names = [n for n, _ in self.plan.inputs if n not in self.weights]
        self.output_names = [n for n, _ in self.plan.outputs]
        self._gpu: Any = None
        self._gpu_weights: dict[str, Any] = {}
        self._cpu: Runner | None = None

    def __repr__(self) -> str:
        return f"Program({self.out}, device={self.device!r}, inputs={self.input_names}, outputs={self.output_names})"

    def spec(self, name: str) -> tuple[tuple[int, ...], str]:
        b = self.plan.buffers[dict(self.plan.inputs + self.plan.outputs)[name]]
        return b.shape, b.dtype

    def __call__(self, out: Mapping[str, Any] | None = None, stream: Any = None, **inputs: Any) -> dict[str, Any]:
        missing = [n for n in self.input_names if n not in inputs]
        extra = sorted(set(inputs) - set(self.input_names))
        if missing or extra:
            raise ModuleInputError(
                f"expected inputs {self.input_names}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unexpected {extra}" if extra else "")
                + (" (weights come from weights.npz)" if set(extra) & set(self.weights) else "")
            )
        kinds = {n: check_array(f"input {n}", x, *self.spec(n)) for n, x in inputs.items()}
        out = dict(out or {})
        bad = sorted(set(out) - set(self.output_names))
        if bad:
            raise ModuleInputError(f"out: unknown outputs {bad} (outputs are {self.output_names})")
        out_kinds = {n: check_array(f"out {n}", x, *self.spec(n)) for n, x in out.items()}
        kind = next(iter(kinds.values()), "cupy" if self.device == "gpu" else "numpy")
        if self.device == "gpu":
            return self._call_gpu(inputs, kinds, out, out_kinds, kind, stream)
        if stream is not None:
            raise ModuleInputError("stream: only the GPU device takes a stream")
        return self._call_cpu(inputs, kinds, out, out_kinds, kind)

    # -- GPU ---------------------------------------------------------------------------
    def _call_gpu(
        self, inputs: Args, kinds: Kinds, out: Args, out_kinds: Kinds, kind: str, stream: Any
    ) -> dict[str, Any]:
        from .gpu import GpuProgram

        if self._gpu is None:
            self._gpu = GpuProgram(self.out)
            self._gpu_weights = {n: _to_cupy(a, "numpy") for n, a in self.weights.items()}
        dev_in = {n: _to_cupy(x, kinds[n]) for n, x in inputs.items()} | self._gpu_weights
        dev_out = {n: _to_cupy(x, out_kinds[n]) for n, x in out.items()}
        res = self._gpu.run(dev_in, out=dev_out or None, stream=_cupy_stream(stream))
        result = {}
        for n, a in res.items():
            if n in out:
                # CuPy arrays and CUDA tensors were written in place (shared memory); host
                # arrays went through a device copy and get the result back.
                if out_kinds[n] == "numpy" or (out_kinds[n] == "torch" and not out[n].is_cuda):
                    _write_back(out[n], a.get(), out_kinds[n], self.spec(n)[1])
                result[n] = out[n]
            else:
                result[n] = _from_cupy(a, kind, self.spec(n)[1])
        return result

    # -- CPU ---------------------------------------------------------------------------
    def _call_cpu(self, inputs: Args, kinds: Kinds, out: Args, out_kinds: Kinds, kind: str) -> dict[str, Any]:
        if self._cpu is None:
            self._cpu = cpu_runner(self.out, self.plan)
        host = {n: _to_numpy(x, kinds[n]) for n, x in inputs.items()} | self.weights
        res = self._cpu(host)
        result = {}
        for n in self.output_names:
            a = res[n]
            if n in out:
                _write_back(out[n], a, out_kinds[n], self.spec(n)[1])
                result[n] = out[n]
            else:
                result[n] = _from_numpy(a, kind, self.spec(n)[1])
        return result


def _write_back(dst: Any, a: np.ndarray, kind: str, dtype: str) -> None:
    if kind == "numpy":
        dst[...] = a
    elif kind == "cupy":
        dst.set(a)
    else:
        dst.copy_(_from_numpy(np.ascontiguousarray(a), "torch", dtype))


def _resolve(device: str) -> str:
    if device not in DEVICES:
        raise ModuleInputError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return "cpu"
    ok, why = gpu_available()
    if device == "gpu" and not ok:
        from .gpu import GpuError

        raise GpuError(f"device='gpu': {why.split(';')[0]}")
    return "gpu" if ok else "cpu"


def cpu_runner(out: Path, plan: LaunchPlan) -> Runner:
    """Run OUT's kernels under the CPU emulation (the emitter's host runner, built once and
    cached by content): host arrays in each buffer's carrying dtype in, the same out."""
    from .run import EmulatedPrograms

    programs = EmulatedPrograms.build([out])

    def run(host: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs, _ = programs.run(out, host, raw=True)  # raises on races or emulation errors
        return outs

    return run


def load_program(out: Path | str, device: str = "auto") -> Program:
    """The callable behind OUT/module.py's `load`."""
    return Program(Path(out), device)


__all__ = [
    "MODULE_TEMPLATE",
    "ModuleInputError",
    "Program",
    "check_array",
    "from_bf16_bits",
    "load_program",
    "load_weights",
    "to_bf16_bits",
    "write_module",
]
