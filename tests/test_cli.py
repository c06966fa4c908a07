"""The command line: every command's help, show / benchmarks on exported graphs, and the
exit-code policy (2: one line, no traceback; 3: one line naming the traceback file)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

import mirage_py
import mirage_py.cli as cli_mod
from mirage_py.benchmarks import SIZES, all_benchmarks, get_benchmark
from mirage_py.cli import cli
from mirage_py.ir import OPS, SCHEMA, dumps, graph_hash, load, loads
from mirage_py.ir.show import ops_markdown

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["rmsnorm", "gated_mlp", "gqa", "qknorm", "lora", "ntrans"]
PRESETS = {"rmsnorm": "mlp", "gated_mlp": "mlp", "gqa": "attention", "qknorm": "attention", "lora": "lora"}
PRESETS["ntrans"] = "default"


def runner() -> CliRunner:
    try:  # click 8.1 mixes stderr into stdout unless asked not to; 8.2+ always keeps both
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def invoke(*args: str) -> Result:
    # catch_exceptions=False: anything escaping the policy handler fails the test loudly.
    return runner().invoke(cli, list(args), catch_exceptions=False)


def assert_user_error(r: Result) -> str:
    """Exit 2, exactly one line on stderr, nothing on stdout, no traceback anywhere."""
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    return lines[0]


def commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out += commands(cmd, path + (name,))
        else:
            out.append(path + (name,))
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("rmsnorm")
    spec, expert = d / "spec.json", d / "expert.json"
    r = invoke("benchmarks", "export", "rmsnorm", "--size", "small", "--spec", str(spec), "--expert", str(expert))
    assert r.exit_code == 0, r.stderr
    return {"spec": spec, "expert": expert, "dir": d}


# ---------------------------------------------------------------------------------------
# help and version


@pytest.mark.parametrize("path", commands(), ids=lambda p: " ".join(p) or "mirage-py")
def test_help(path: tuple[str, ...]) -> None:
    r = invoke(*path, "--help")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("Usage: mirage-py")
    assert r.stderr == ""


def test_commands_are_the_contracts() -> None:
    # Later commands (optimize, verify, ...) join as they are built; none exists as a stub.
    assert {" ".join(p) for p in commands()} >= {"", "show", "benchmarks", "benchmarks list", "benchmarks export"}


def test_version() -> None:
    r = invoke("--version")
    assert r.exit_code == 0
    assert r.stdout.strip() == f"mirage-py {mirage_py.__version__}"


def test_no_command_is_usage() -> None:
    r = invoke()
    assert r.exit_code == 2
    assert "Usage: mirage-py" in r.stderr and r.stdout == ""


# ---------------------------------------------------------------------------------------
# show


@pytest.mark.parametrize("which", ["spec", "expert"])
def test_show_text(exported: dict[str, Path], which: str) -> None:
    kg = load(exported[which])
    r = invoke("show", str(exported[which]))
    assert r.exit_code == 0, r.stderr
    assert graph_hash(kg) in r.stdout
    for n in kg.nodes:
        assert n.op in r.stdout
    if which == "expert":
        for word in (
            "customized",
            "grid [6, 1, 1]",
            "forloop_range 4",
            "accum_sum_lastdim",
            "imap",
            "omap",
            "accumulators",
        ):
            assert word in r.stdout
    else:
        assert "kernels 2 (0 customized)" in r.stdout
        assert "k0 rms_norm  eps=1/1000000" in r.stdout and "k1 matmul" in r.stdout


@pytest.mark.parametrize("which", ["spec", "expert"])
def test_show_json(exported: dict[str, Path], which: str, tmp_path: Path) -> None:
    r = invoke("show", str(exported[which]), "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)  # stdout is exactly one JSON object
    kg = load(exported[which])
    assert report["hash"] == graph_hash(kg)
    assert [k["kind"] for k in report["kernels"]] == [n.op for n in kg.nodes]
    assert report["version"] == mirage_py.__version__ and report["seed"] is None and report["machine"]["python"]
    assert [i["name"] for i in report["inputs"]] == ["X", "W"] and report["outputs"][0]["name"] == "Y"
    for k in report["kernels"]:
        assert k["ops"]
        if k["kind"] == "customized":
            assert len(k["grid"]) == 3 and k["forloop_range"] >= 1
    # The file written back and re-loaded hashes the same.
    again = tmp_path / "again.json"
    again.write_text(dumps(kg))
    assert graph_hash(load(again)) == report["hash"] == graph_hash(loads(exported[which].read_text()))


def test_show_dot(exported: dict[str, Path]) -> None:
    dot = exported["dir"] / "expert.dot"
    r = invoke("show", str(exported["expert"]), "--dot", str(dot))
    assert r.exit_code == 0, r.stderr
    text = dot.read_text()
    assert text.startswith("digraph ") and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    assert "subgraph cluster_k0" in text and "accum_sum" in text
    assert not [p for p in dot.parent.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------
# benchmarks


def test_benchmarks_list() -> None:
    r = invoke("benchmarks", "list")
    assert r.exit_code == 0, r.stderr
    for name in NAMES:
        assert name in r.stdout
    report = json.loads(invoke("benchmarks", "list", "--json").stdout)
    rows = {b["name"]: b for b in report["benchmarks"]}
    assert set(rows) == set(NAMES)
    assert {n: b["preset"] for n, b in rows.items()} == PRESETS
    assert all(b["sizes"] == list(SIZES) and b["batches"] and b["description"] for b in rows.values())
    assert "version" in report and "machine" in report


@pytest.mark.parametrize("size", ["small", "paper"])
@pytest.mark.parametrize("name", NAMES)
def test_export(name: str, size: str, tmp_path: Path) -> None:
    spec, expert = tmp_path / "spec.json", tmp_path / "expert.json"
    r = invoke("benchmarks", "export", name, "--size", size, "--spec", str(spec), "--expert", str(expert))
    assert r.exit_code == 0, r.stderr
    b = get_benchmark(name)
    assert graph_hash(load(spec)) == graph_hash(b.spec(size))  # type: ignore[arg-type]
    assert graph_hash(load(expert)) == graph_hash(b.expert(size))  # type: ignore[arg-type]
    assert json.loads(spec.read_text())["schema"] == SCHEMA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["expert.json", "spec.json"]


def test_export_batch_and_spec_only(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    r = invoke("benchmarks", "export", "rmsnorm", "--batch", "8", "--spec", str(spec))
    assert r.exit_code == 0, r.stderr
    kg = load(spec)
    assert kg.types[kg.inputs[0]].dims == (16, 4096)
    assert list(tmp_path.iterdir()) == [spec]


def test_export_writes_nothing_when_a_graph_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mirage_py.ir import GraphError

    def broken(*args: object, **kwargs: object) -> None:
        raise GraphError("tile-divide", "tiles do not divide")

    monkeypatch.setattr(type(get_benchmark("rmsnorm")), "expert", broken)
    spec, expert = tmp_path / "spec.json", tmp_path / "expert.json"
    r = invoke("benchmarks", "export", "rmsnorm", "--spec", str(spec), "--expert", str(expert))
    assert "tiles do not divide" in assert_user_error(r)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_rename(src: str, dst: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", no_rename)
    r = invoke("benchmarks", "export", "lora", "--size", "small", "--spec", str(tmp_path / "s.json"))
    assert "Permission denied" in assert_user_error(r)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------
# exit code 2: bad input or usage


def _write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "g.json"
    p.write_text(text)
    return str(p)


def _invalid_graph() -> str:
    d = {
        "schema": SCHEMA,
        "inputs": [{"id": 0, "name": "A", "dims": [4, 8], "dtype": "float16"}],
        "ops": [{"op": "matmul", "inputs": [0, 0], "outputs": [1]}],  # [4, 8] @ [4, 8]
        "outputs": [{"name": "Y", "tensor": 1}],
    }
    return json.dumps(d)


BAD_INPUTS = {
    "missing file": (lambda tmp: ["show", str(tmp / "nope.json")], "no such file"),
    "malformed json": (lambda tmp: ["show", _write(tmp, '{"schema": ')], "not valid JSON"),
    "unknown schema": (lambda tmp: ["show", _write(tmp, '{"schema": "mirage-py.graph.v99"}')], "unknown schema"),
    "invalid graph": (lambda tmp: ["show", _write(tmp, _invalid_graph())], "matmul inner dims differ"),
    "unknown benchmark": (
        lambda tmp: ["benchmarks", "export", "resnet", "--spec", str(tmp / "s.json")],
        "unknown benchmark",
    ),
    "bad size": (lambda tmp: ["benchmarks", "export", "lora", "--size", "huge", "--spec", str(tmp / "s.json")], "huge"),
    "bad batch": (lambda tmp: ["benchmarks", "export", "lora", "--batch", "0", "--spec", str(tmp / "s.json")], "batch"),
    "batch not a number": (lambda tmp: ["benchmarks", "export", "lora", "--batch", "x", "--spec", str(tmp / "s")], "x"),
    "missing --spec": (lambda tmp: ["benchmarks", "export", "lora"], "--spec"),
    "unknown command": (lambda tmp: ["optimise"], "optimise"),
    "unknown option": (lambda tmp: ["benchmarks", "list", "--fast"], "--fast"),
    "no output folder": (
        lambda tmp: ["benchmarks", "export", "lora", "--size", "small", "--spec", str(tmp / "no" / "s.json")],
        "s.json",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_exit_2(case: str, tmp_path: Path) -> None:
    args, expect = BAD_INPUTS[case]
    line = assert_user_error(invoke(*args(tmp_path)))
    assert expect in line
    assert line.startswith("mirage-py")
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------
# exit code 3: internal error


def test_exit_3(exported: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object) -> str:
        raise RuntimeError("boom in the renderer")

    monkeypatch.setattr(cli_mod, "render_text", boom)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    r = invoke("show", str(exported["expert"]))
    assert r.exit_code == 3
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "internal error" in lines[0] and "RuntimeError: boom in the renderer" in lines[0]
    m = re.search(r"written to (\S+)$", lines[0])
    assert m, lines[0]
    crash = Path(m.group(1))
    assert crash.parent == tmp_path and crash.is_file()
    text = crash.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom in the renderer" in text
    assert "def boom" in text or "boom" in text.split("Traceback")[1]


def test_main_returns_exit_code(exported: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_mod.main(["show", str(exported["spec"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hash"]
    assert cli_mod.main(["show", str(exported["dir"] / "missing.json")]) == 2


# ---------------------------------------------------------------------------------------
# real processes


def _console_script() -> str | None:
    beside = Path(sys.executable).parent / "mirage-py"
    return str(beside) if beside.exists() else shutil.which("mirage-py")


def test_console_script_quick_start(tmp_path: Path) -> None:
    """README quick start 1, run as a user would, through the installed console script."""
    exe = _console_script()
    if exe is None:
        pytest.skip("the mirage-py console script is not installed (pip install -e .)")
    export = [
        exe,
        "benchmarks",
        "export",
        "rmsnorm",
        "--size",
        "small",
        "--spec",
        "spec.json",
        "--expert",
        "expert.json",
    ]
    r = subprocess.run(export, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([exe, "show", "expert.json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert graph_hash(load(tmp_path / "expert.json")) in r.stdout and "customized" in r.stdout
    r = subprocess.run([exe, "show", "missing.json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_python_m_process(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    r = subprocess.run(
        [sys.executable, "-m", "mirage_py", "show", str(bad)], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 2, r.stderr
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------
# docs/schema.md stays in step with the code


def test_schema_doc_covers_every_op() -> None:
    doc = (ROOT / "docs" / "schema.md").read_text()
    assert SCHEMA in doc
    missing = [name for name in OPS if f"`{name}`" not in doc]
    assert not missing, f"docs/schema.md does not mention {missing}"
    attrs = {a.name for op in OPS.values() for a in op.attrs}
    assert not [a for a in attrs if f"`{a}`" not in doc]


def test_schema_doc_op_table_is_current() -> None:
    doc = (ROOT / "docs" / "schema.md").read_text()
    m = re.search(r"<!-- ops table:.*?-->\n(.*?)<!-- end of ops table -->", doc, flags=re.S)
    assert m, "docs/schema.md lost its ops table markers"
    assert m.group(1) == ops_markdown(), "regenerate the table with mirage_py.ir.show.ops_markdown()"


def test_schema_doc_example_loads() -> None:
    doc = (ROOT / "docs" / "schema.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", doc, flags=re.S)
    assert blocks, "docs/schema.md has no ```json example"
    for text in blocks:
        kg = loads(text)
        assert graph_hash(loads(dumps(kg))) == graph_hash(kg)


def test_benchmarks_registered() -> None:
    assert set(all_benchmarks()) == set(NAMES)


def test_readme_python_runs(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert re.fullmatch(r"[0-9a-f]{64}\n", capsys.readouterr().out)


def test_readme_quick_start_runs(tmp_path: Path) -> None:
    """The README's first quick-start command, run for real (minus the pip install, with
    `python -m mirage_py` for the console script, in a scratch folder where `examples/` is
    the repository's): it optimizes an ONNX example and reports."""
    readme = (ROOT / "README.md").read_text()
    assert 'pip install -e ".[test]" && python -m pytest -q' in readme
    block = readme.split("## Quick start", 1)[1].split("```", 2)[1].strip()
    steps = [c.strip() for c in block.split("&&")]
    assert steps[0] == 'pip install -e ".[onnx]"'
    assert steps[1].startswith("mirage-py optimize examples/")
    for cmd in steps[1:]:
        argv = [str(ROOT / a) if a.startswith("examples/") else a for a in cmd.split()]
        if argv[0] == "mirage-py":
            argv = [sys.executable, "-m", "mirage_py", *argv[1:]]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        p = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=env)
        assert p.returncode == 0, (cmd, p.stderr)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["found"] and report["verified"]
    assert "# mirage-py optimize report" in p.stdout
