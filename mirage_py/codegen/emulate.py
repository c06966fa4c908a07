"""Build and run CUDA kernels on the CPU under the runtime's emulation header.

A kernel file (``.cu``) written against ``runtime/mp_runtime.cuh`` is compiled by g++ as
C++20 with ``runtime/mp_emulate.h`` force-included: CUDA threads become host threads,
``__syncthreads`` a barrier, warp instructions are emulated lane by lane, and shared-memory
accesses are checked by the race detector (see ``docs/runtime.md``).

    prog = build([Path("k.cu")], ["my_kernel", "mm_f16=&matmul<mp::f16>"])
    res = prog.run([KernelLaunch("my_kernel", (4, 1, 1), (128, 1, 1), 4096, ("@x", "@y", 128))],
                   {"x": x, "y": np.zeros_like(x)})
    res.check()          # raises on races, errors or a crash
    y = res.buffers["y"]

Builds are cached by a hash of the compiler's version, the flags, the sources and every
runtime header, so a rebuild happens only when one of them changes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"

# -fno-strict-aliasing: kernels reinterpret shared memory between element and vector types.
EMULATION_FLAGS: tuple[str, ...] = ("-std=c++20", "-O1", "-pthread", "-fno-strict-aliasing")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BUFFER = re.compile(r"^[A-Za-z0-9_.-]+$")
_SUMMARY = re.compile(r"mp_emulate: launches=(\d+) races=(\d+) errors=(\d+)")


class EmulationError(RuntimeError):
    """A build failed, or an emulated run could not produce results."""


def _cache_root(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return cache_dir
    env = os.environ.get("MIRAGE_PY_EMULATE_CACHE")
    if env:
        return Path(env)
    return Path(tempfile.gettempdir()) / f"mirage-py-emulate-{os.getuid()}"


def compiler() -> str:
    """The C++ compiler used for emulation builds ($CXX, else g++)."""
    return os.environ.get("CXX", "g++")


@lru_cache(maxsize=4)
def _compiler_version(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise EmulationError(f"C++ compiler {cxx!r} is not usable: {exc}") from exc
    return out.stdout.splitlines()[0] if out.stdout else cxx


def _parse_kernel_spec(spec: str) -> tuple[str, str]:
    """'name' or 'name=expression' (e.g. 'mm_f16=&matmul<mp::f16, 64>')."""
    name, sep, expr = spec.partition("=")
    name = name.strip()
    expr = expr.strip() if sep else name
    if not _IDENT.match(name) or not expr:
        raise ValueError(f"bad kernel spec {spec!r}: expected NAME or NAME=EXPRESSION")
    return name, expr


def _header_digest(dirs: Sequence[Path]) -> list[bytes]:
    parts: list[bytes] = []
    for d in dirs:
        for f in sorted(Path(d).glob("*")):
            if f.is_file() and f.suffix in (".h", ".cuh", ".hpp", ".inc"):
                parts += [str(f.name).encode(), f.read_bytes()]
    return parts


@dataclass(frozen=True)
class KernelLaunch:
    """One launch: kernel<<<grid, block, shared_bytes>>>(args...). An argument that is a
    string names a buffer ('@x' or 'x'); numbers are passed as the kernel's parameter type."""

    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_bytes: int
    args: tuple[str | int | float, ...]

    def command(self) -> str:
        toks: list[str] = []
        for a in self.args:
            if isinstance(a, str):
                name = a[1:] if a.startswith("@") else a
                if not _BUFFER.match(name):
                    raise ValueError(f"bad buffer name {name!r}")
                toks.append("@" + name)
            elif isinstance(a, bool | np.bool_):
                toks.append(str(int(a)))
            elif isinstance(a, int | np.integer):
                toks.append(str(int(a)))
            elif isinstance(a, float | np.floating):
                toks.append(repr(float(a)))
            else:
                raise TypeError(f"kernel argument {a!r} is neither a buffer name nor a number")
        dims = [*self.grid, *self.block]
        if len(dims) != 6 or any(int(d) < 1 for d in dims):
            raise ValueError(f"bad launch dimensions grid={self.grid} block={self.block}")
        return " ".join(["launch", self.kernel, *map(str, dims), str(int(self.shared_bytes)), *toks])


@dataclass
class EmulationResult:
    """What an emulated run gave: every buffer after the last launch (same shapes and dtypes
    as given), the race and error counts, and the program's output."""

    buffers: dict[str, np.ndarray]
    races: int
    errors: int
    returncode: int
    stdout: str
    stderr: str
    launches: int = 0

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.races == 0 and self.errors == 0

    def check(self) -> EmulationResult:
        if not self.ok:
            raise EmulationError(
                f"emulated run failed (exit {self.returncode}, {self.races} races, {self.errors} errors):\n"
                + self.stderr[-4000:]
            )
        return self

    @property
    def race_reports(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.startswith("mp_emulate: race:")]

    @property
    def error_reports(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.startswith(("mp_emulate: error:", "mp_emulate: fatal:"))]


@dataclass(frozen=True)
class EmulatedProgram:
    """A built emulation program: runs launches over named host buffers."""

    path: Path
    kernels: tuple[str, ...] = field(default=())

    def run(
        self,
        launches: Sequence[KernelLaunch],
        buffers: Mapping[str, np.ndarray],
        *,
        timeout: float = 600.0,
        env: Mapping[str, str] | None = None,
    ) -> EmulationResult:
        with tempfile.TemporaryDirectory(prefix="mp-emu-run-") as tmp:
            work = Path(tmp)
            lines: list[str] = []
            arrays: dict[str, np.ndarray] = {}
            for name, value in buffers.items():
                if not _BUFFER.match(name):
                    raise ValueError(f"bad buffer name {name!r}")
                arr = np.ascontiguousarray(value)
                arrays[name] = arr
                arr.tofile(work / f"{name}.in")
                lines.append(f"buffer {name} {arr.nbytes} {name}.in")
            lines += [launch.command() for launch in launches]
            (work / "launches.txt").write_text("\n".join(lines) + "\n")
            run_env = dict(os.environ)
            if env:
                run_env.update(env)
            try:
                proc = subprocess.run(
                    [str(self.path), str(work)], capture_output=True, text=True, timeout=timeout, env=run_env
                )
            except subprocess.TimeoutExpired as exc:
                raise EmulationError(f"emulated run timed out after {timeout} s") from exc
            m = _SUMMARY.search(proc.stdout)
            if proc.returncode == 2 or (m is None and proc.returncode in (0, 1)):
                raise EmulationError(f"emulated run could not start (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
            out: dict[str, np.ndarray] = {}
            if m is not None:
                for name, arr in arrays.items():
                    data = np.fromfile(work / f"{name}.out", dtype=arr.dtype)
                    out[name] = data.reshape(arr.shape)
            races = (
                int(m.group(2))
                if m
                else len([ln for ln in proc.stderr.splitlines() if ln.startswith("mp_emulate: race:")])
            )
            errors = int(m.group(3)) if m else 1
            return EmulationResult(
                buffers=out,
                races=races,
                errors=errors,
                returncode=proc.returncode,
                stdout=proc.stdout,
                stderr=proc.stderr,
                launches=int(m.group(1)) if m else 0,
            )


def build(
    sources: Sequence[Path | str],
    kernels: Sequence[str],
    *,
    include_dirs: Sequence[Path | str] = (),
    defines: Mapping[str, str | int] | None = None,
    extra_flags: Sequence[str] = (),
    cache_dir: Path | None = None,
    runtime_dir: Path | str | None = None,
) -> EmulatedProgram:
    """Compile kernel sources into one emulation program, registering `kernels` (each 'name'
    or 'name=expression', e.g. 'mm=&matmul<mp::f16>') in the first source's unit. Each
    source is its own translation unit. `runtime_dir` is where the runtime headers are
    (default: this package's; an emitted OUT/runtime works too). Cached by content."""
    if not sources:
        raise ValueError("no sources to build")
    specs = [_parse_kernel_spec(k) for k in kernels]
    srcs = [Path(s).resolve() for s in sources]
    incs = [Path(d).resolve() for d in include_dirs]
    rt = Path(runtime_dir).resolve() if runtime_dir is not None else RUNTIME_DIR
    if not (rt / "mp_emulate.h").is_file():
        raise EmulationError(f"no mp_emulate.h in runtime directory {rt}")
    cxx = compiler()
    flags = [*EMULATION_FLAGS, *(f"-D{k}={v}" for k, v in sorted((defines or {}).items())), *extra_flags]

    h = hashlib.sha256()
    for part in [_compiler_version(cxx).encode(), " ".join(flags).encode(), repr(specs).encode()]:
        h.update(part + b"\0")
    for s in srcs:
        h.update(s.read_bytes() + b"\0")
    for part in _header_digest([rt, *incs]):
        h.update(part + b"\0")
    key = h.hexdigest()[:24]

    root = _cache_root(cache_dir)
    final = root / key
    exe = final / "program"
    if exe.exists():
        return EmulatedProgram(exe, tuple(n for n, _ in specs))

    root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=root))
    try:
        units: list[Path] = []
        for i, src in enumerate(srcs):
            text = [f'#include "{src}"']
            if i == 0:
                text += [f"MP_EMU_REGISTER_AS({name}, {expr})" for name, expr in specs]
                text.append('#include "mp_emulate_main.h"')
            unit = stage / f"unit{i}.cpp"
            unit.write_text("\n".join(text) + "\n")
            units.append(unit)
        cmd = [
            cxx,
            *flags,
            f"-I{rt}",
            *(f"-I{d}" for d in incs),
            *(f"-I{s.parent}" for s in srcs),
            "-include",
            "mp_emulate.h",
            *map(str, units),
            "-o",
            str(stage / "program"),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise EmulationError(f"emulation build failed ({' '.join(cmd)}):\n{proc.stderr[-8000:]}")
        try:
            stage.rename(final)
        except OSError:
            # Another process finished the same build first; use its result.
            if not exe.exists():
                raise
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return EmulatedProgram(exe, tuple(n for n, _ in specs))


def run_kernel(
    source: Path | str,
    kernel: str,
    grid: tuple[int, int, int],
    block: tuple[int, int, int],
    shared_bytes: int,
    args: Sequence[np.ndarray | int | float],
    *,
    include_dirs: Sequence[Path | str] = (),
    defines: Mapping[str, str | int] | None = None,
    cache_dir: Path | None = None,
    runtime_dir: Path | str | None = None,
    env: Mapping[str, str] | None = None,
) -> EmulationResult:
    """Build `source` (cached) and launch `kernel` once. Array arguments become buffers
    named arg0, arg1, ... (their final contents are in the result's buffers)."""
    prog = build(
        [source], [kernel], include_dirs=include_dirs, defines=defines, cache_dir=cache_dir, runtime_dir=runtime_dir
    )
    buffers: dict[str, np.ndarray] = {}
    launch_args: list[str | int | float] = []
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray):
            buffers[f"arg{i}"] = a
            launch_args.append(f"@arg{i}")
        else:
            launch_args.append(a)
    name = _parse_kernel_spec(kernel)[0]
    return prog.run([KernelLaunch(name, grid, block, shared_bytes, tuple(launch_args))], buffers, env=env)
