"""Check the GPU build of kernel files with nvcc (and NVRTC) and read their resource use.

``compile_cubin`` runs ``nvcc -cubin -arch=sm_XX -Xptxas -v`` on a .cu file (C++17, the
runtime headers on the include path) and parses ptxas's report into registers, static
shared memory, stack and spills per kernel. Nothing it builds is run. Dynamic shared memory
(``MP_SHARED_BASE``) is a launch parameter and is not in ptxas's figure.

``nvrtc_compile`` compiles the same source with NVRTC, as CuPy's RawModule does, when a
libnvrtc can be found (CUDA toolkit, CuPy's wheels, or $MIRAGE_PY_NVRTC).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from mirage_py.codegen.emulate import RUNTIME_DIR

TARGETS: tuple[str, ...] = ("sm_80", "sm_90")

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
_PROPS = re.compile(r"Function properties for (\S+)")
_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_BARRIERS = re.compile(r"used (\d+) barriers")
_SMEM = re.compile(r"(\d+) bytes smem")
_CMEM = re.compile(r"(\d+) bytes cmem\[0\]")


class NvccError(RuntimeError):
    """nvcc is missing or failed."""


@dataclass(frozen=True)
class KernelResources:
    """ptxas's figures for one kernel (entry function) on one architecture."""

    name: str  # as ptxas prints it (mangled for C++ names)
    arch: str
    registers: int
    shared_bytes: int  # static shared memory only
    stack_bytes: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    barriers: int = 0
    constant_bytes: int | None = None
    demangled: str = ""

    @property
    def display_name(self) -> str:
        return self.demangled or self.name


@dataclass(frozen=True)
class CubinBuild:
    arch: str
    cubin: Path
    kernels: dict[str, KernelResources]
    log: str

    def find(self, fragment: str) -> KernelResources:
        """The one kernel whose (demangled) name contains `fragment`."""
        hits = [k for k in self.kernels.values() if fragment in k.display_name or fragment == k.name]
        if len(hits) != 1:
            raise KeyError(f"{len(hits)} kernels match {fragment!r}: {sorted(self.kernels)}")
        return hits[0]


def find_nvcc() -> str | None:
    """nvcc from $NVCC, PATH, $CUDA_HOME/bin or /usr/local/cuda/bin; None if absent."""
    candidates = [os.environ.get("NVCC"), shutil.which("nvcc")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(str(Path(os.environ[var]) / "bin" / "nvcc"))
    candidates.append("/usr/local/cuda/bin/nvcc")
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return None


@lru_cache(maxsize=4)
def _nvcc_version(nvcc: str) -> str:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else nvcc


def _demangle(names: Sequence[str]) -> dict[str, str]:
    mangled = [n for n in names if n.startswith("_Z")]
    tool = shutil.which("cu++filt") or shutil.which("c++filt")
    if not mangled or tool is None:
        return {}
    out = subprocess.run([tool], input="\n".join(mangled), capture_output=True, text=True)
    lines = out.stdout.splitlines()
    return dict(zip(mangled, lines)) if len(lines) == len(mangled) else {}


def parse_ptxas_verbose(log: str) -> dict[str, KernelResources]:
    """Per-kernel resources from `-Xptxas -v` output (entry functions only)."""
    arch: dict[str, str] = {}
    nums: dict[str, dict[str, int]] = {}
    current: str | None = None
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            current = m.group(1)
            arch[current] = m.group(2)
            nums[current] = {}
            continue
        if m := _PROPS.search(line):
            current = m.group(1) if m.group(1) in nums else None
            continue
        if current is None:
            continue
        rec = nums[current]
        if m := _STACK.search(line):
            rec["stack"], rec["spill_stores"], rec["spill_loads"] = (int(g) for g in m.groups())
        if m := _USED.search(line):
            rec["registers"] = int(m.group(1))
            for key, pattern in (("barriers", _BARRIERS), ("smem", _SMEM), ("cmem", _CMEM)):
                if found := pattern.search(line):
                    rec[key] = int(found.group(1))
    names = _demangle(list(nums))
    return {
        name: KernelResources(
            name=name,
            arch=arch[name],
            registers=rec["registers"],
            shared_bytes=rec.get("smem", 0),
            stack_bytes=rec.get("stack", 0),
            spill_stores=rec.get("spill_stores", 0),
            spill_loads=rec.get("spill_loads", 0),
            barriers=rec.get("barriers", 0),
            constant_bytes=rec.get("cmem"),
            demangled=names.get(name, ""),
        )
        for name, rec in nums.items()
        if "registers" in rec
    }


def compile_cubin(
    source: Path | str,
    arch: str = "sm_80",
    *,
    include_dirs: Sequence[Path | str] = (),
    defines: Mapping[str, str | int] | None = None,
    extra_flags: Sequence[str] = (),
    cache_dir: Path | None = None,
    nvcc: str | None = None,
) -> CubinBuild:
    """`nvcc -cubin -arch=ARCH -std=c++17 -Xptxas -v` on `source`; cached by content."""
    if not re.fullmatch(r"sm_\d+a?", arch):
        raise ValueError(f"bad architecture {arch!r} (e.g. sm_80, sm_90)")
    tool = nvcc or find_nvcc()
    if tool is None:
        raise NvccError("nvcc not found (set $NVCC or $CUDA_HOME, or put nvcc on PATH)")
    src = Path(source).resolve()
    incs = [RUNTIME_DIR, *(Path(d).resolve() for d in include_dirs)]
    flags = [
        "-cubin",
        f"-arch={arch}",
        "-std=c++17",
        "-Xptxas",
        "-v",
        *(f"-D{k}={v}" for k, v in sorted((defines or {}).items())),
        *extra_flags,
    ]
    h = hashlib.sha256()
    for part in [_nvcc_version(tool), " ".join(flags), src.read_text()]:
        h.update(part.encode() + b"\0")
    for d in incs:
        for f in sorted(d.glob("*.cuh")) + sorted(d.glob("*.h")):
            h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    key = h.hexdigest()[:24]
    root = cache_dir or Path(
        os.environ.get("MIRAGE_PY_NVCC_CACHE", Path(tempfile.gettempdir()) / f"mirage-py-nvcc-{os.getuid()}")
    )
    out_dir = root / key
    cubin, log_file = out_dir / "out.cubin", out_dir / "ptxas.log"
    if cubin.exists() and log_file.exists():
        log = log_file.read_text()
        return CubinBuild(arch, cubin, parse_ptxas_verbose(log), log)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_cubin = out_dir / f"out.{os.getpid()}.cubin"
    cmd = [tool, *flags, *(f"-I{d}" for d in incs), str(src), "-o", str(tmp_cubin)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise NvccError(f"nvcc failed for {arch} ({' '.join(cmd)}):\n{log[-8000:]}")
    log_file.write_text(log)
    tmp_cubin.replace(cubin)
    return CubinBuild(arch, cubin, parse_ptxas_verbose(log), log)


def compile_ptx(
    source: Path | str,
    arch: str = "sm_80",
    *,
    include_dirs: Sequence[Path | str] = (),
    nvcc: str | None = None,
) -> str:
    """The PTX nvcc makes of `source` for `arch` (to check which instructions a build uses)."""
    tool = nvcc or find_nvcc()
    if tool is None:
        raise NvccError("nvcc not found (set $NVCC or $CUDA_HOME, or put nvcc on PATH)")
    incs = [RUNTIME_DIR, *(Path(d).resolve() for d in include_dirs)]
    with tempfile.TemporaryDirectory(prefix="mp-ptx-") as tmp:
        out = Path(tmp) / "out.ptx"
        cmd = [tool, "-ptx", f"-arch={arch}", "-std=c++17", *(f"-I{d}" for d in incs), str(source), "-o", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise NvccError(f"nvcc -ptx failed for {arch}:\n{(proc.stdout + proc.stderr)[-8000:]}")
        return out.read_text()


def resource_table(builds: Sequence[CubinBuild]) -> str:
    """A plain-text table: kernel, arch, registers, static smem, stack, spills."""
    rows = [("kernel", "arch", "regs", "smem", "stack", "spill st/ld")]
    for b in builds:
        for k in sorted(b.kernels.values(), key=lambda r: r.display_name):
            rows.append(
                (
                    k.display_name,
                    k.arch,
                    str(k.registers),
                    str(k.shared_bytes),
                    str(k.stack_bytes),
                    f"{k.spill_stores}/{k.spill_loads}",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def find_nvrtc() -> str | None:
    """A libnvrtc shared library: $MIRAGE_PY_NVRTC, the CUDA toolkit's, the loader's, or one
    from NVIDIA's Python wheels on sys.path; None if there is none."""
    import sys

    if os.environ.get("MIRAGE_PY_NVRTC"):
        return os.environ["MIRAGE_PY_NVRTC"]
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    patterns = [str(Path(r) / "lib64" / "libnvrtc.so*") for r in roots if r]
    patterns += [str(Path(p) / "nvidia" / "*" / "lib" / "libnvrtc.so*") for p in sys.path if p]
    for pattern in patterns:
        hits = sorted(h for h in glob.glob(pattern) if "alt" not in Path(h).name)
        if hits:
            return hits[0]
    return ctypes.util.find_library("nvrtc")


@dataclass(frozen=True)
class NvrtcResult:
    ok: bool
    log: str
    ptx: str
    lowered_names: dict[str, str]


def nvrtc_compile(
    source: str,
    arch: str = "sm_80",
    *,
    include_dirs: Sequence[Path | str] = (),
    name_expressions: Sequence[str] = (),
    options: Sequence[str] = (),
    library: str | None = None,
    cuda_roots: Sequence[str] = ("/usr/local/cuda",),
) -> NvrtcResult:
    """Compile CUDA source text with NVRTC (C++17, runtime headers on the include path).
    `name_expressions` (e.g. '&matmul<__half>') instantiate template kernels, as CuPy's
    name_expressions do; their lowered (mangled) names come back."""
    lib_path = library or find_nvrtc()
    if lib_path is None:
        raise NvccError("libnvrtc not found (set $MIRAGE_PY_NVRTC to its path)")
    lib = ctypes.CDLL(lib_path)
    prog = ctypes.c_void_p()

    def check(status: int, what: str) -> None:
        if status != 0:
            lib.nvrtcGetErrorString.restype = ctypes.c_char_p
            raise NvccError(f"{what}: {lib.nvrtcGetErrorString(status).decode()}")

    check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"kernel.cu", 0, None, None), "create")
    try:
        for expr in name_expressions:
            check(lib.nvrtcAddNameExpression(prog, expr.encode()), f"name expression {expr!r}")
        # cuda_fp16.h / cuda_bf16.h are not built into NVRTC: they come from a toolkit's include
        # directory (CuPy passes the one it found, or its own copy).
        cuda_inc = [str(Path(r) / "include") for r in cuda_roots if (Path(r) / "include" / "cuda_fp16.h").is_file()]
        opts = [
            f"--gpu-architecture={arch}",
            "-std=c++17",
            *(f"-I{d}" for d in [RUNTIME_DIR, *include_dirs, *cuda_inc]),
            *options,
        ]
        arr = (ctypes.c_char_p * len(opts))(*(o.encode() for o in opts))
        status = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, buf)
        log = buf.value.decode(errors="replace")
        if status != 0:
            return NvrtcResult(False, log, "", {})
        lowered: dict[str, str] = {}
        for expr in name_expressions:
            out = ctypes.c_char_p()
            check(lib.nvrtcGetLoweredName(prog, expr.encode(), ctypes.byref(out)), f"lowered name of {expr!r}")
            lowered[expr] = (out.value or b"").decode()
        ptx_text = ""
        # sm_XX targets give CUBIN rather than PTX; compute_XX gives PTX.
        if arch.startswith("compute_"):
            lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
            ptx_buf = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetPTX(prog, ptx_buf)
            ptx_text = ptx_buf.value.decode(errors="replace")
        return NvrtcResult(True, log, ptx_text, lowered)
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
