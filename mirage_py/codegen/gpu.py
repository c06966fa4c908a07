"""Run an emitted program (OUT: launch.json, kernels/*.cu, runtime/*.cuh) on a GPU with CuPy.

CuPy is imported lazily, only by what needs a GPU: importing this module works everywhere,
and `gpu_available()` says plainly why there is no GPU when there is none.

    ok, why = gpu_available()
    prog = GpuProgram(Path("OUT"))               # NVRTC builds every kernel file once
    outs = prog.run({"X": x, "W": w})            # CuPy arrays in, CuPy arrays out
    check = check_program(prog, graph)           # against the float64 reference
    t = time_program(prog, prog.random_inputs()) # CUDA events, warm-up, L2 flushed, median

Compilation: each kernel file is a CuPy `RawModule` (NVRTC) with `-std=c++17`, launch.json's
include dirs and a CUDA include dir (cuda_fp16.h, cuda_bf16.h). CuPy adds the
`-arch=compute_XX` of the device itself; the device must be at least launch.json's target.
CuPy's kernel cache is keyed by the source text, not by the headers it includes, so the
source handed to it starts with a digest of the runtime headers.

bfloat16 buffers are carried as uint16 arrays holding the bits (NumPy and CuPy have no
bfloat16); `to_bf16_bits` / `from_bf16_bits` convert.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import statistics
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

LAUNCH_FORMAT = "mirage-py.launch.v1"
NO_GPU = "using CPU emulation and the cost model"
STATIC_SMEM_LIMIT = 48 * 1024  # above this a launch needs the opt-in attribute
ALIGN = 16  # bytes: the runtime's vector copies need it

# NumPy dtype that carries each IR dtype (bfloat16 as its bits).
HOST_DTYPE: dict[str, Any] = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}


class GpuError(RuntimeError):
    """No usable GPU, a bad OUT folder, a failed build, or a failed check."""


# ---------------------------------------------------------------------------------------
# Is there a GPU?


def _cupy() -> Any:
    import cupy  # lazy on purpose: most machines have none

    return cupy


def gpu_available() -> tuple[bool, str]:
    """(True, "<name> (sm_XY)") when CuPy sees a GPU of compute capability 8.0 or newer,
    else (False, "no GPU present (<why>); using CPU emulation and the cost model")."""
    if importlib.util.find_spec("cupy") is None:
        return False, f"no GPU present (CuPy is not installed); {NO_GPU}"
    try:
        cp = _cupy()
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CuPy raises its own CUDA errors, or ImportError without a driver
        return False, f"no GPU present ({type(exc).__name__}: {str(exc).strip() or 'no CUDA driver'}); {NO_GPU}"
    if count < 1:
        return False, f"no GPU present (the CUDA driver reports no device); {NO_GPU}"
    name, cc = device_name(), compute_capability()
    if cc < 80:
        return False, f"no usable GPU ({name} is sm_{cc}; kernels need sm_80 or newer); {NO_GPU}"
    return True, f"{name} (sm_{cc})"


def device_name(device: int | None = None) -> str:
    cp = _cupy()
    dev = cp.cuda.runtime.getDevice() if device is None else device
    name = cp.cuda.runtime.getDeviceProperties(dev)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def compute_capability(device: int | None = None) -> int:
    cp = _cupy()
    dev = cp.cuda.Device() if device is None else cp.cuda.Device(device)
    return int(dev.compute_capability)


def l2_bytes(device: int | None = None) -> int:
    cp = _cupy()
    dev = cp.cuda.runtime.getDevice() if device is None else device
    return int(cp.cuda.runtime.getDeviceProperties(dev)["l2CacheSize"])


# ---------------------------------------------------------------------------------------
# launch.json


@dataclass(frozen=True)
class BufferSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str
    role: str  # input | output | intermediate


@dataclass(frozen=True)
class KernelSpec:
    name: str
    source: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_bytes: int
    args: tuple[str, ...]
    dtypes: tuple[str, ...]
    customized: bool = False
    op: str = ""


@dataclass(frozen=True)
class LaunchPlan:
    out: Path
    target: str
    include_dirs: tuple[str, ...]
    inputs: tuple[tuple[str, str], ...]  # (graph input name, buffer)
    outputs: tuple[tuple[str, str], ...]
    buffers: dict[str, BufferSpec]
    kernels: tuple[KernelSpec, ...]

    @property
    def target_cc(self) -> int:
        return int(self.target.removeprefix("sm_"))


def _dims3(v: Any, what: str) -> tuple[int, int, int]:
    if not isinstance(v, list) or len(v) != 3 or not all(isinstance(x, int) and x >= 1 for x in v):
        raise GpuError(f"launch.json: {what} must be three positive integers, got {v!r}")
    return (v[0], v[1], v[2])


def read_launch(out: Path | str) -> LaunchPlan:
    """Read and check OUT/launch.json (format in /docs/codegen.md, contract in DESIGN.md)."""
    out = Path(out)
    path = out / "launch.json"
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GpuError(f"cannot read {path}: {exc}") from None
    fmt = d.get("format", LAUNCH_FORMAT)
    if fmt != LAUNCH_FORMAT:
        raise GpuError(f"{path}: unknown format {fmt!r} (expected {LAUNCH_FORMAT})")
    try:
        buffers = {
            b["name"]: BufferSpec(b["name"], tuple(b["shape"]), b["dtype"], b.get("role", "intermediate"))
            for b in d["buffers"]
        }
        kernels = tuple(
            KernelSpec(
                name=k["name"],
                source=k["source"],
                grid=_dims3(k["grid"], f"kernel {k['name']} grid"),
                block=_dims3(k["block"], f"kernel {k['name']} block"),
                shared_bytes=int(k["shared_bytes"]),
                args=tuple(k["args"]),
                dtypes=tuple(k["dtypes"]),
                customized=bool(k.get("customized", False)),
                op=k.get("op", ""),
            )
            for k in d["kernels"]
        )
        plan = LaunchPlan(
            out=out,
            target=d.get("target", "sm_80"),
            include_dirs=tuple(d["include_dirs"]),
            inputs=tuple((i["name"], i["buffer"]) for i in d["inputs"]),
            outputs=tuple((o["name"], o["buffer"]) for o in d["outputs"]),
            buffers=buffers,
            kernels=kernels,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise GpuError(f"{path}: malformed ({type(exc).__name__}: {exc})") from None
    for k in plan.kernels:
        unknown = [a for a in k.args if a not in plan.buffers]
        if unknown:
            raise GpuError(f"{path}: kernel {k.name} uses unknown buffers {unknown}")
        if not (out / k.source).is_file():
            raise GpuError(f"{path}: kernel source {k.source} is missing")
    for b in plan.buffers.values():
        if b.dtype not in HOST_DTYPE:
            raise GpuError(f"{path}: buffer {b.name} has unknown dtype {b.dtype!r}")
    return plan


# ---------------------------------------------------------------------------------------
# bfloat16 bits


def to_bf16_bits(x: Any) -> Any:
    """float32 values -> uint16 bfloat16 bits, rounded to nearest even (NumPy or CuPy)."""
    xp = _array_module(x)
    bits = xp.ascontiguousarray(x, dtype=xp.float32).view(xp.uint32)
    rounded = (bits + xp.uint32(0x7FFF) + ((bits >> 16) & 1)) >> 16
    nan = xp.isnan(x)
    return xp.where(nan, xp.uint16(0x7FC0), rounded.astype(xp.uint16))


def from_bf16_bits(b: Any) -> Any:
    xp = _array_module(b)
    return (xp.asarray(b, dtype=xp.uint16).astype(xp.uint32) << 16).view(xp.float32)


def _array_module(x: Any) -> Any:
    if type(x).__module__.startswith("cupy"):
        return _cupy()
    return np


# ---------------------------------------------------------------------------------------
# Building


def cuda_include_dir() -> str | None:
    """A folder holding cuda_fp16.h for NVRTC: $CUDA_PATH, CuPy's CUDA, the pip wheels of
    the CUDA runtime, then /usr/local/cuda."""
    roots: list[str] = []
    for env in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(env):
            roots.append(os.path.join(os.environ[env], "include"))
    try:
        cuda_path = _cupy().cuda.get_cuda_path()
        if cuda_path:
            roots.append(os.path.join(cuda_path, "include"))
    except Exception:  # no CuPy or no CUDA: fall through to the other places
        pass
    for site in sys.path:
        for rel in ("nvidia/cu13/include", "nvidia/cuda_runtime/include", "nvidia/cuda_nvrtc/include"):
            roots.append(os.path.join(site, rel))
    roots.append("/usr/local/cuda/include")
    for r in roots:
        if os.path.isfile(os.path.join(r, "cuda_fp16.h")):
            return r
    return None


@lru_cache(maxsize=16)
def _headers_digest(dirs: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for d in dirs:
        for f in sorted(Path(d).glob("*")):
            if f.is_file() and f.suffix in (".h", ".cuh", ".hpp"):
                h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def nvrtc_options(plan: LaunchPlan) -> tuple[str, ...]:
    incs = [str((plan.out / d).resolve()) for d in plan.include_dirs]
    cuda_inc = cuda_include_dir()
    if cuda_inc:
        incs.append(cuda_inc)
    return ("-std=c++17", *(f"-I{d}" for d in incs))


class GpuProgram:
    """An OUT folder built for the current GPU: every kernel file compiled once by NVRTC."""

    def __init__(self, out: Path | str) -> None:
        ok, why = gpu_available()
        if not ok:
            raise GpuError(why)
        cp = _cupy()
        self.plan = read_launch(out)
        cc = compute_capability()
        if cc < self.plan.target_cc:
            raise GpuError(f"{out} was emitted for {self.plan.target}; this GPU is sm_{cc}")
        options = nvrtc_options(self.plan)
        digest = _headers_digest(tuple(str((self.plan.out / d).resolve()) for d in self.plan.include_dirs))
        modules: dict[str, Any] = {}
        self.functions: list[tuple[KernelSpec, Any]] = []
        for k in self.plan.kernels:
            if k.source not in modules:
                code = f"// mirage-py runtime headers {digest}\n" + (self.plan.out / k.source).read_text()
                try:
                    modules[k.source] = cp.RawModule(code=code, options=options, backend="nvrtc")
                    modules[k.source].compile()
                except Exception as exc:  # CuPy's CompileException carries NVRTC's log
                    raise GpuError(f"NVRTC failed on {k.source} (options {' '.join(options)}):\n{exc}") from None
            fn = modules[k.source].get_function(k.name)
            if k.shared_bytes > STATIC_SMEM_LIMIT:
                fn.max_dynamic_shared_size_bytes = k.shared_bytes
            self.functions.append((k, fn))
        self._scratch: dict[str, Any] = {}

    # -- running -----------------------------------------------------------------------
    def empty(self, buffer: str) -> Any:
        b = self.plan.buffers[buffer]
        return _cupy().empty(b.shape, dtype=HOST_DTYPE[b.dtype])

    def random_inputs(self, seed: int = 0) -> dict[str, Any]:
        """Device arrays for every graph input: normal / sqrt(last dim), as the pipeline's
        numerics check draws them, so products and sums stay of order one."""
        return {name: _cupy().asarray(a) for name, a in host_random_inputs(self.plan, seed).items()}

    def run(
        self, inputs: Mapping[str, Any], out: Mapping[str, Any] | None = None, stream: Any = None
    ) -> dict[str, Any]:
        """Launch every kernel in order on `stream` (a cupy Stream; default: the current
        one). `inputs` are device arrays by graph input name; `out` optionally gives the
        output arrays. Returns the outputs by name."""
        cp = _cupy()
        buf: dict[str, Any] = {}
        for name, b in self.plan.inputs:
            buf[b] = inputs[name]
        for name, b in self.plan.outputs:
            if out is not None and name in out and b not in buf:
                buf[b] = out[name]
        for name in self.plan.buffers:
            if name not in buf:
                if name not in self._scratch:
                    self._scratch[name] = self.empty(name)
                buf[name] = self._scratch[name]
        with stream if stream is not None else cp.cuda.get_current_stream():
            for k, fn in self.functions:
                fn(k.grid, k.block, tuple(buf[a] for a in k.args), shared_mem=k.shared_bytes)
            result = self._results(buf, out)
        return result

    def _results(self, buf: dict[str, Any], out: Mapping[str, Any] | None) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name, b in self.plan.outputs:
            arr = buf[b]
            # An output that is an input buffer (or is shared by two outputs) is copied, so
            # callers get distinct arrays; a scratch buffer is reused by the next run.
            if out is not None and name in out:
                if out[name] is not arr:
                    out[name][...] = arr
                result[name] = out[name]
            else:
                result[name] = arr.copy()
        return result


def host_random_inputs(plan: LaunchPlan, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    outs = {}
    for name, b in plan.inputs:
        spec = plan.buffers[b]
        x = (rng.standard_normal(spec.shape, dtype=np.float32) / math.sqrt(spec.shape[-1])).astype(np.float32)
        outs[name] = to_bf16_bits(x) if spec.dtype == "bfloat16" else x.astype(HOST_DTYPE[spec.dtype])
    return outs


# ---------------------------------------------------------------------------------------
# Checking and timing


@dataclass
class CheckResult:
    ok: bool
    errors: dict[str, float]  # scaled error per output: max|y - ref| / max|ref|
    tolerance: dict[str, float]


def to_host_float(x: Any, dtype: str) -> np.ndarray:
    """A device or host array of an IR dtype as float64 on the host."""
    a = x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else np.asarray(x)
    if dtype == "bfloat16":
        a = from_bf16_bits(a)
    return a.astype(np.float64)


def compare(
    outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], dtypes: Mapping[str, str]
) -> CheckResult:
    from ..verify.numerics import TOLERANCES

    errs, tols = {}, {}
    for name, ref in reference.items():
        y = outputs[name]
        scale = float(np.max(np.abs(ref))) or 1.0
        errs[name] = float(np.max(np.abs(y - ref))) / scale if y.size else 0.0
        tols[name] = TOLERANCES[dtypes[name]]
    ok = all(np.isfinite(e) and e <= tols[n] for n, e in errs.items())
    return CheckResult(ok, errs, tols)


def check_program(prog: GpuProgram, graph: Any, seed: int = 0) -> CheckResult:
    """Run `prog` on random inputs and compare every output with the float64 reference
    of `graph` (the KernelGraph it was emitted from, or any equivalent one)."""
    from ..ir.execute import FloatInterpreter

    host = host_random_inputs(prog.plan, seed)
    dev = {n: _cupy().asarray(a) for n, a in host.items()}
    got = prog.run(dev)
    _cupy().cuda.get_current_stream().synchronize()
    dtypes = {n: prog.plan.buffers[b].dtype for n, b in prog.plan.inputs + prog.plan.outputs}
    ref_in = {n: to_host_float(a, dtypes[n]) for n, a in host.items()}
    ref = FloatInterpreter("float64").run(graph, ref_in)
    reference = dict(zip(graph.output_names, ref))
    outs = {n: to_host_float(got[n], dtypes[n]) for n in reference}
    return compare(outs, reference, dtypes)


@dataclass
class Timing:
    median_us: float
    min_us: float
    samples_us: list[float] = field(repr=False)
    warmup: int = 0
    l2_flushed: bool = True


def time_callable(fn: Any, warmup: int = 10, reps: int = 50, flush_l2: bool = True, stream: Any = None) -> Timing:
    """Time `fn()` (which enqueues GPU work on `stream`) with CUDA events: `warmup` untimed
    calls, then `reps` timed ones; before each, a buffer twice the L2 size is written so
    no input is still in L2 (a 48 MB weight would fit in an H100's 50 MB)."""
    cp = _cupy()
    stream = stream if stream is not None else cp.cuda.get_current_stream()
    flush = cp.empty(2 * l2_bytes(), dtype=cp.uint8) if flush_l2 else None
    start, end = cp.cuda.Event(), cp.cuda.Event()
    with stream:
        for _ in range(warmup):
            fn()
        stream.synchronize()
        samples = []
        for i in range(reps):
            if flush is not None:
                flush.fill(i & 0xFF)
            start.record(stream)
            fn()
            end.record(stream)
            end.synchronize()
            samples.append(cp.cuda.get_elapsed_time(start, end) * 1e3)
    return Timing(statistics.median(samples), min(samples), samples, warmup, flush_l2)


def time_program(
    prog: GpuProgram, inputs: Mapping[str, Any], warmup: int = 10, reps: int = 50, flush_l2: bool = True
) -> Timing:
    """Median time of one run of every kernel of `prog` (outputs into reused buffers)."""
    outs = {name: prog.empty(b) for name, b in prog.plan.outputs}
    return time_callable(lambda: prog.run(inputs, out=outs), warmup, reps, flush_l2)
