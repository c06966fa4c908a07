"""`mirage-py check`: re-run a manifest of optimize cases and compare with a baseline (CI).

A manifest (TOML or JSON) lists cases: an INPUT as `optimize` takes it, the subgraph
(`outputs`), input shapes, preset, dtype, a **state** budget (deterministic, unlike a time
limit) and expectations. Paths are relative to the manifest. Example:

    [defaults]
    max_states = 200        # per case unless the case says otherwise
    tolerance = 0.05        # the modelled time may be 5% worse than the baseline's
    build = "auto"          # auto | emit | nvcc | emulate

    [[case]]
    name = "rmsnorm"
    input = "rmsnorm.onnx"
    max_states = 5000
    expect = { found = true, max_kernels = 1 }

Each case runs the pipeline's `optimize` into a temporary OUT (no result cache: a hit would
skip the search being checked), then is judged on:
  expectations  found, verified (required unless `expect.verified = false`), max_kernels,
                max_modeled_us;
  the baseline  found and verified must not turn false, the best modelled time must stay
                within `tolerance` of the baseline's;
  the build     `emit`: every kernel was emitted; `nvcc`: every .cu compiles with
                `nvcc -cubin` for the target; `emulate`: the program is built under the CPU
                emulation header (g++, some seconds per program), run, and checked against
                the float64 reference; `auto`: nvcc when it is installed, else emit.
A case that raises (bad input, unsupported op) is an error. Any failure or error is exit 1.
Results go to a Markdown summary, JUnit XML (`--junit`) and, with `--update-baseline`, the
baseline file (written only when no expectation failed or case errored).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ir.errors import GraphError, InputError, SchemaError

BASELINE_FORMAT = "mirage-py.check-baseline.v1"
BUILDS = ("auto", "emit", "nvcc", "emulate")
DEFAULT_TOLERANCE = 0.05
CASE_KEYS = {
    "name", "input", "inputs", "outputs", "config", "dtype", "max_states", "seed", "target", "build", "tolerance",
    "expect",
}  # fmt: skip
DEFAULT_KEYS = {"max_states", "config", "target", "build", "tolerance", "seed", "dtype"}
EXPECT_KEYS = {"found", "verified", "max_kernels", "max_modeled_us"}


# ---------------------------------------------------------------------------------------
# The manifest


@dataclass(frozen=True)
class Case:
    name: str
    input: str  # as optimize takes it, paths resolved against the manifest's folder
    inputs: tuple[str, ...] = ()  # NAME=DxDxD[:dtype]
    outputs: tuple[str, ...] = ()
    config: str = "auto"
    dtype: str | None = None
    max_states: int = 200
    seed: int = 0
    target: str = "sm_90"
    build: str = "auto"
    tolerance: float = DEFAULT_TOLERANCE
    expect: dict[str, Any] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        """What the result depends on (stored with the baseline, to say when it is stale)."""
        return {k: getattr(self, k) for k in ("config", "dtype", "max_states", "seed", "target")} | {
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
        }


def _fail(where: str, what: str) -> InputError:
    return InputError(f"{where}: {what}")


def _typed(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    v = d[key]
    if not isinstance(v, kind) or (isinstance(v, bool) and kind in (int, float, (int, float))):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _fail(where, f"{key} must be a {want}, got {v!r}")
    return v


def _inputs(v: Any, where: str) -> tuple[str, ...]:
    """`inputs = ["x=8x256"]` or `inputs = { x = "8x256" }`."""
    if isinstance(v, Mapping):
        v = [f"{k}={s}" for k, s in v.items()]
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise _fail(where, 'inputs must be a list of "NAME=DxDxD[:dtype]" strings or a table NAME = "DxD"')
    return tuple(v)


def _outputs(v: Any, where: str) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [s.strip() for s in v.split(",") if s.strip()]
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise _fail(where, "outputs must be a list of output names")
    return tuple(v)


def _resolve_input(text: str, base: Path) -> str:
    """Paths in a manifest are relative to it; `file.py:NAME` keeps its NAME."""
    path, sep, name = text.rpartition(":") if ".py:" in text else (text, "", "")
    p = Path(path)
    return str(p if p.is_absolute() else base / p) + sep + name


def _case(d: Any, k: int, defaults: Mapping[str, Any], base: Path) -> Case:
    where = f"case {k + 1}"
    if not isinstance(d, dict):
        raise _fail(where, "must be a table")
    unknown = set(d) - CASE_KEYS
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(CASE_KEYS))})")
    for req in ("name", "input"):
        if req not in d:
            raise _fail(where, f"needs {req!r}")
    name = _typed(d, "name", str, where)
    where = f"case {name!r}"
    merged = {**defaults, **d}
    kw: dict[str, Any] = {"name": name, "input": _resolve_input(_typed(d, "input", str, where), base)}
    for key, kind in (("config", str), ("dtype", str), ("target", str), ("build", str)):
        if key in merged:
            kw[key] = _typed(merged, key, kind, where)
    for key in ("max_states", "seed"):
        if key in merged:
            kw[key] = _typed(merged, key, int, where)
    if "tolerance" in merged:
        kw["tolerance"] = float(_typed(merged, "tolerance", (int, float), where))
    if "inputs" in d:
        kw["inputs"] = _inputs(d["inputs"], where)
    if "outputs" in d:
        kw["outputs"] = _outputs(d["outputs"], where)
    kw["expect"] = _expect(d.get("expect", {}), where)
    case = Case(**kw)
    _check_values(case, where)
    return case


def _expect(e: Any, where: str) -> dict[str, Any]:
    if not isinstance(e, dict):
        raise _fail(where, "expect must be a table")
    unknown = set(e) - EXPECT_KEYS
    if unknown:
        raise _fail(
            where, f"unknown expectation(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(EXPECT_KEYS))})"
        )
    for key, kind in (("found", bool), ("verified", bool), ("max_kernels", int), ("max_modeled_us", (int, float))):
        if key in e:
            _typed(e, key, kind, f"{where}: expect")
    return dict(e)


def _check_values(case: Case, where: str) -> None:
    from .ir.dtypes import DTYPES
    from .search.config import PRESETS, SMEM_LIMIT

    if case.config != "auto" and case.config not in PRESETS:
        raise _fail(where, f"config {case.config!r} is not auto or one of {', '.join(PRESETS)}")
    if case.target not in SMEM_LIMIT:
        raise _fail(where, f"target {case.target!r} is not one of {', '.join(sorted(SMEM_LIMIT))}")
    if case.build not in BUILDS:
        raise _fail(where, f"build {case.build!r} is not one of {', '.join(BUILDS)}")
    if case.dtype is not None and case.dtype not in DTYPES:
        raise _fail(where, f"dtype {case.dtype!r} is not one of {', '.join(DTYPES)}")
    if case.max_states < 1 or not 0 <= case.tolerance < 10:
        raise _fail(where, "max_states must be positive and tolerance in [0, 10)")


def _toml() -> Any:
    """tomllib (Python 3.11+), or tomli, its backport, on 3.10."""
    try:
        import tomllib

        return tomllib
    except ModuleNotFoundError:
        pass
    try:
        import tomli

        return tomli
    except ModuleNotFoundError:
        raise InputError(
            "TOML manifests need Python 3.11 or the tomli package; or write the manifest as JSON"
        ) from None


def load_manifest(path: Path) -> list[Case]:
    """The cases of a TOML or JSON manifest; any mistake is one InputError line."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read it ({e})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else _toml().loads(text)
    except ValueError as e:  # json's and tomllib's decode errors are ValueErrors
        raise InputError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a manifest is one table (defaults and a list of cases)")
    unknown = set(data) - {"defaults", "case"}
    if unknown:
        raise InputError(f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))} (expected defaults, case)")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict) or set(defaults) - DEFAULT_KEYS:
        raise InputError(f"{path}: [defaults] takes only {', '.join(sorted(DEFAULT_KEYS))}")
    raw = data.get("case", [])
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{path}: no cases (add [[case]] tables)")
    cases = [_case(d, k, defaults, path.resolve().parent) for k, d in enumerate(raw)]
    names = [c.name for c in cases]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"{path}: case name(s) {', '.join(dup)} used twice")
    return cases


# ---------------------------------------------------------------------------------------
# The baseline


def load_baseline(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such baseline (create it with --update-baseline)") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable baseline ({e})") from None
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT or not isinstance(data.get("cases"), dict):
        raise InputError(f"{path}: not a baseline of format {BASELINE_FORMAT!r}")
    return data["cases"]


def baseline_json(results: list[CaseResult]) -> str:
    from . import __version__

    cases = {r.case.name: r.baseline_entry() for r in results}
    return json.dumps({"format": BASELINE_FORMAT, "version": __version__, "cases": cases}, indent=1) + "\n"


# ---------------------------------------------------------------------------------------
# Running a case


@dataclass
class CaseResult:
    case: Case
    seconds: float = 0.0
    report: dict[str, Any] | None = None  # optimize's report (None: the case raised)
    error: str | None = None
    build: str = ""  # the build check that ran: emit, nvcc or emulate
    failures: list[str] = field(default_factory=list)  # regressions and unmet expectations
    notes: list[str] = field(default_factory=list)  # improvements, new or stale baselines
    baseline: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failures

    def value(self, key: str) -> Any:
        if self.report is None:
            return None
        r = self.report
        return {
            "found": r["found"],
            "verified": r["verified"],
            "kernels": r["best"]["kernels"],
            "modeled_us": r["best"]["modeled_us"],
            "hash": r["best"]["hash"],
            "states": r["search"]["states"],
            "stop_reason": r["search"]["stop_reason"],
        }[key]

    def baseline_entry(self) -> dict[str, Any]:
        keys = ("found", "verified", "kernels", "modeled_us", "hash", "states", "stop_reason")
        return {k: self.value(k) for k in keys} | {"settings": self.case.settings()}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.case.name,
            "input": self.case.input,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "build": self.build,
            "failures": self.failures,
            "notes": self.notes,
            "result": None if self.report is None else self.baseline_entry(),
            "baseline": self.baseline,
        }


def run_case(case: Case, log: Callable[[str], None] = lambda _m: None) -> CaseResult:
    """Optimize the case into a temporary OUT and check its build; errors are recorded."""
    from .frontends import load_input
    from .frontends.torch import parse_input_specs
    from .pipeline import OptimizeOptions, guess_preset, optimize
    from .search.config import get_config
    from .search.enumerate import Budget

    res = CaseResult(case)
    t0 = time.monotonic()
    try:
        loaded = load_input(case.input, parse_input_specs(case.inputs), list(case.outputs) or None, case.dtype)
        preset = guess_preset(loaded.graph) if case.config == "auto" else case.config
        opts = OptimizeOptions(
            get_config(preset, target=case.target), Budget(max_states=case.max_states), seed=case.seed
        )
        with tempfile.TemporaryDirectory(prefix="mirage-py-check-") as tmp:
            out = Path(tmp) / "out"
            res.report = optimize(loaded.graph, out, opts, weights=loaded.weights, source=case.input)
            res.build = _build(out, res.report, case, res.failures, log)
    except (InputError, GraphError, SchemaError) as e:
        res.error = " ".join(str(e).split())
    res.seconds = time.monotonic() - t0
    return res


def _build(out: Path, report: dict[str, Any], case: Case, failures: list[str], log: Callable[[str], None]) -> str:
    """Check that the emitted kernels build; returns which check ran."""
    from .codegen.nvcc import NvccError, compile_cubin, find_nvcc

    mode = case.build
    if mode == "auto":
        mode = "nvcc" if find_nvcc() else "emit"
    sources = sorted((out / "kernels").glob("*.cu"))
    if len(sources) != report["best"]["kernels"]:
        failures.append(f"build: {len(sources)} kernel file(s) emitted for {report['best']['kernels']} kernel(s)")
        return mode
    if mode == "nvcc":
        log(f"  nvcc -cubin {len(sources)} kernel(s) for {case.target}")
        for src in sources:
            try:
                compile_cubin(src, case.target, include_dirs=[out / "runtime"])
            except NvccError as e:
                failures.append(f"build: nvcc failed on {src.name}: {str(e).splitlines()[0]}")
    elif mode == "emulate":
        from .codegen.commands import run_path

        log("  building and running under the CPU emulation")
        run = run_path(out, "emulate", check=True, seed=case.seed)
        if not run.ok:
            bad = [c.name for c in run.checks if not c.ok]
            failures.append(f"build: emulated run failed ({run.error or 'mismatch in ' + ', '.join(bad)})")
    return mode


# ---------------------------------------------------------------------------------------
# Judging


def judge(res: CaseResult, base: Mapping[str, Any] | None, compare: bool = True) -> None:
    """Fill `failures` and `notes` from the expectations and, when `compare`, the baseline."""
    if res.report is None:
        return
    e = res.case.expect
    found, verified, kernels, us = (res.value(k) for k in ("found", "verified", "kernels", "modeled_us"))
    if "found" in e and found != e["found"]:
        res.failures.append(f"expected found = {str(e['found']).lower()}, got {str(found).lower()}")
    if e.get("verified", True) and not verified:
        res.failures.append("the winner is not verified")
    if "max_kernels" in e and kernels > e["max_kernels"]:
        res.failures.append(f"expected at most {e['max_kernels']} kernel(s), got {kernels}")
    if "max_modeled_us" in e and us > e["max_modeled_us"]:
        res.failures.append(f"expected a modelled time of at most {e['max_modeled_us']} us, got {us}")
    if base is None:
        res.notes.append("no baseline entry for this case")
        return
    res.baseline = dict(base)
    if base.get("settings") not in (None, res.case.settings()):
        res.notes.append("the baseline was taken with other settings (update it)")
    problems = _against_baseline(res, base)
    (res.failures if compare else res.notes).extend(problems)
    old = base.get("modeled_us")
    if isinstance(old, int | float) and us < old * (1 - res.case.tolerance):
        res.notes.append(f"better than the baseline: {us} us < {old} us (update it)")


def _against_baseline(res: CaseResult, base: Mapping[str, Any]) -> list[str]:
    out = []
    for key in ("found", "verified"):
        if base.get(key) is True and res.value(key) is False:
            out.append(f"regression: {key} was true in the baseline, now false")
    old, us = base.get("modeled_us"), res.value("modeled_us")
    if isinstance(old, int | float) and us > old * (1 + res.case.tolerance):
        out.append(
            f"regression: modelled {us} us, baseline {old} us (+{100 * (us / old - 1):.1f}%, "
            f"tolerance {100 * res.case.tolerance:g}%)"
        )
    return out


# ---------------------------------------------------------------------------------------
# The whole run


@dataclass
class CheckRun:
    manifest: Path
    results: list[CaseResult]
    seconds: float
    baseline: Path | None = None
    update_baseline: bool = False  # asked for
    baseline_written: bool = False  # done (only when every case passed)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "manifest": str(self.manifest),
            "baseline": None if self.baseline is None else str(self.baseline),
            "baseline_written": self.baseline_written,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "cases": [r.to_json() for r in self.results],
        }


def run_check(
    manifest: Path,
    baseline: Path | None = None,
    update_baseline: bool = False,
    log: Callable[[str], None] = lambda _m: None,
) -> CheckRun:
    """Run every case, judge it, and with `update_baseline` write the baseline file."""
    from .ir.show import write_atomic

    if update_baseline and baseline is None:
        raise InputError("--update-baseline needs --baseline FILE (where to write it)")
    cases = load_manifest(manifest)
    # With --update-baseline an old baseline, if any, is compared for the notes only.
    has_old = baseline is not None and (baseline.exists() or not update_baseline)
    stored = load_baseline(baseline) if baseline is not None and has_old else {}
    t0 = time.monotonic()
    results = []
    for k, case in enumerate(cases):
        log(f"[{k + 1}/{len(cases)}] {case.name}: optimize {case.input} ({case.max_states} states)")
        res = run_case(case, log)
        judge(res, stored.get(case.name) if baseline is not None else None, compare=not update_baseline)
        log(f"  {_verdict(res)} in {res.seconds:.1f} s" + "".join(f"; {m}" for m in res.failures))
        results.append(res)
    run = CheckRun(manifest, results, time.monotonic() - t0, baseline, update_baseline)
    if update_baseline and baseline is not None and run.ok:
        write_atomic(baseline, baseline_json(results))
        run.baseline_written = True
    return run


def _verdict(r: CaseResult) -> str:
    return "ERROR" if r.error is not None else "FAIL" if r.failures else "ok"


# ---------------------------------------------------------------------------------------
# Reports: Markdown and JUnit XML


def _num(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def summary_markdown(run: CheckRun) -> str:
    failed = sum(not r.ok for r in run.results)
    head = f"**{len(run.results) - failed} of {len(run.results)} case(s) passed**" + (
        f", {failed} failed" if failed else ""
    )
    lines = [
        f"## mirage-py check: {run.manifest.name}",
        "",
        f"{head} in {run.seconds:.1f} s. Times are modelled (analytic cost model), not measured.",
        "",
        "| case | verdict | found | verified | kernels | modelled µs | baseline µs | build | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in run.results:
        base = r.baseline or {}
        lines.append(
            f"| {r.case.name} | {_verdict(r)} | {_num(r.value('found'))} | {_num(r.value('verified'))} | "
            f"{_num(r.value('kernels'))} | {_num(r.value('modeled_us'))} | {_num(base.get('modeled_us'))} | "
            f"{r.build or '–'} | {r.seconds:.1f} |"
        )
    details = [(r.case.name, m) for r in run.results for m in ([r.error] if r.error else []) + r.failures]
    notes = [(r.case.name, m) for r in run.results for m in r.notes]
    if details:
        lines += ["", "Failures:", ""] + [f"- {n}: {m}" for n, m in details]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}: {m}" for n, m in notes]
    if run.baseline_written:
        lines += ["", f"Baseline written to `{run.baseline}`."]
    elif run.update_baseline:
        lines += ["", f"Baseline `{run.baseline}` NOT written: a case failed its expectations or errored."]
    return "\n".join(lines) + "\n"


def junit_xml(run: CheckRun) -> str:
    failures = sum(1 for r in run.results if r.error is None and r.failures)
    errors = sum(1 for r in run.results if r.error is not None)
    suite = ET.Element(
        "testsuite",
        name="mirage-py check",
        tests=str(len(run.results)),
        failures=str(failures),
        errors=str(errors),
        skipped="0",
        time=f"{run.seconds:.3f}",
    )
    for r in run.results:
        tc = ET.SubElement(suite, "testcase", classname=f"mirage-py.check.{run.manifest.stem}", name=r.case.name)
        tc.set("time", f"{r.seconds:.3f}")
        if r.error is not None:
            ET.SubElement(tc, "error", message=r.error, type="InputError").text = r.error
        elif r.failures:
            ET.SubElement(tc, "failure", message=r.failures[0], type="regression").text = "\n".join(r.failures)
        out = json.dumps(r.to_json(), indent=1)
        ET.SubElement(tc, "system-out").text = out
    root = ET.Element("testsuites", name="mirage-py check", tests=suite.get("tests", "0"))
    root.set("failures", str(failures))
    root.set("errors", str(errors))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


__all__ = [
    "BASELINE_FORMAT",
    "Case",
    "CaseResult",
    "CheckRun",
    "judge",
    "junit_xml",
    "load_baseline",
    "load_manifest",
    "run_case",
    "run_check",
    "summary_markdown",
]
