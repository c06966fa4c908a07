"""`mirage-py check`: manifests (TOML and JSON), a passing run against its own baseline, a
regression against a baseline that demands a better time (exit 1, JUnit failure), an
unmet expectation, a case that errors, --update-baseline, and the committed CI manifest."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from clitools import invoke

from mirage_py.check import BASELINE_FORMAT, Case, CaseResult, judge, load_baseline, load_manifest
from mirage_py.codegen.nvcc import find_nvcc

pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# Two cheap cases (small budgets, emission only): a few seconds a run.
MANIFEST = f"""
[defaults]
max_states = 40
build = "emit"

[[case]]
name = "lora"
input = "{EXAMPLES / "lora.onnx"}"
expect = {{ verified = true }}

[[case]]
name = "ntrans"
input = "{EXAMPLES / "ntrans.onnx"}"
max_states = 30
tolerance = 0.1
"""


def junit(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None
    return suite


@pytest.fixture(scope="module")
def baselined(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A manifest and the baseline --update-baseline wrote for it."""
    d = tmp_path_factory.mktemp("check")
    (d / "m.toml").write_text(MANIFEST)
    base = d / "base.json"
    r = invoke("check", str(d / "m.toml"), "--baseline", str(base), "--update-baseline")
    assert r.exit_code == 0, r.stderr
    assert "Baseline written" in r.stdout
    return {"dir": d, "manifest": d / "m.toml", "baseline": base}


def test_update_baseline_writes_the_file(baselined: dict[str, Path]) -> None:
    data = json.loads(baselined["baseline"].read_text())
    assert data["format"] == BASELINE_FORMAT and set(data["cases"]) == {"lora", "ntrans"}
    lora = data["cases"]["lora"]
    assert lora["verified"] is True and lora["modeled_us"] > 0 and type(lora["kernels"]) is int
    assert lora["settings"]["max_states"] == 40 and data["cases"]["ntrans"]["settings"]["max_states"] == 30
    assert lora["states"] == 40 or lora["stop_reason"] == "exhausted"


def test_a_run_against_its_own_baseline_passes(baselined: dict[str, Path], tmp_path: Path) -> None:
    xml = tmp_path / "junit.xml"
    md = tmp_path / "summary.md"
    r = invoke(
        "check", str(baselined["manifest"]), "--baseline", str(baselined["baseline"]),
        "--junit", str(xml), "--summary", str(md),
    )  # fmt: skip
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "2 of 2 case(s) passed" in r.stdout and md.read_text() == r.stdout
    suite = junit(xml)
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "0", "0")
    assert [tc.get("name") for tc in suite.iter("testcase")] == ["lora", "ntrans"]
    assert suite.find("testcase/failure") is None
    assert "[1/2] lora" in r.stderr  # progress on stderr


def test_a_baseline_demanding_a_better_time_is_a_regression(baselined: dict[str, Path], tmp_path: Path) -> None:
    data = json.loads(baselined["baseline"].read_text())
    us = data["cases"]["ntrans"]["modeled_us"]
    data["cases"]["ntrans"]["modeled_us"] = round(us / 1.2, 3)  # 20% better than reality; tolerance 10%
    edited = tmp_path / "better.json"
    edited.write_text(json.dumps(data))
    xml = tmp_path / "junit.xml"
    r = invoke("check", str(baselined["manifest"]), "--baseline", str(edited), "--junit", str(xml), "--json")
    assert r.exit_code == 1, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    by_name = {c["name"]: c for c in rep["cases"]}
    assert by_name["lora"]["ok"] and not by_name["ntrans"]["ok"]
    assert "regression: modelled" in by_name["ntrans"]["failures"][0]
    suite = junit(xml)
    assert (suite.get("failures"), suite.get("errors")) == ("1", "0")
    failure = suite.find("testcase[@name='ntrans']/failure")
    assert failure is not None and "regression" in (failure.get("message") or "")


def test_within_tolerance_passes_and_found_lost_fails() -> None:
    case = Case("c", "x.onnx", tolerance=0.05, expect={"found": True})
    report = {
        "found": True,
        "verified": True,
        "best": {"kernels": 1, "modeled_us": 10.4, "hash": "h"},
        "search": {"states": 10, "stop_reason": "states"},
    }
    res = CaseResult(case, report=report)
    judge(res, {"found": True, "verified": True, "modeled_us": 10.0})
    assert res.ok, res.failures  # 4% worse: within 5%
    res = CaseResult(case, report=report)
    judge(res, {"found": True, "verified": True, "modeled_us": 9.8})
    assert not res.ok and "regression: modelled" in res.failures[0]  # 6% worse
    lost = {**report, "found": False}
    res = CaseResult(case, report=lost)
    judge(res, {"found": True, "verified": True, "modeled_us": 10.4})
    assert any("expected found = true" in f for f in res.failures)
    assert any("found was true in the baseline" in f for f in res.failures)
    res = CaseResult(case, report=report)
    judge(res, {"found": True, "verified": True, "modeled_us": 20.0})
    assert res.ok and any("better than the baseline" in n for n in res.notes)
    # --update-baseline compares too, but a change is a note, not a failure.
    res = CaseResult(case, report=report)
    judge(res, {"found": True, "verified": True, "modeled_us": 9.0}, compare=False)
    assert res.ok and any("regression" in n for n in res.notes)


def test_unmet_expectation_and_erroring_case_fail(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [4, 8])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4, 8])
    graph = helper.make_graph([helper.make_node("Sin", ["X"], ["Y"])], "g", [x], [y])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "sine.onnx"))
    manifest = {
        "defaults": {"max_states": 20, "build": "emit"},
        "case": [
            {"name": "too_slow", "input": str(EXAMPLES / "ntrans.onnx"), "expect": {"max_modeled_us": 0.001}},
            {"name": "sine", "input": "sine.onnx"},  # relative to the manifest
        ],
    }
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    xml = tmp_path / "j.xml"
    base = tmp_path / "b.json"
    r = invoke("check", str(tmp_path / "m.json"), "--junit", str(xml), "--baseline", str(base), "--update-baseline")
    assert r.exit_code == 1
    assert "0 of 2 case(s) passed" in r.stdout and "NOT written" in r.stdout and not base.exists()
    suite = junit(xml)
    assert (suite.get("failures"), suite.get("errors")) == ("1", "1")
    err = suite.find("testcase[@name='sine']/error")
    assert err is not None and "Sin" in (err.get("message") or "")
    fail = suite.find("testcase[@name='too_slow']/failure")
    assert fail is not None and "at most 0.001 us" in (fail.get("message") or "")


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[[case]]\nname = 'a'\ninput = 'x.onnx'\nmax_state = 3\n", "unknown key(s) max_state"),
        ("[[case]]\nname = 'a'\n", "needs 'input'"),
        ("[defaults]\nmax_states = 3\n", "no cases"),
        ("[[case]]\nname = 'a'\ninput = 'x.onnx'\nbuild = 'fast'\n", "build 'fast'"),
        ("[[case]]\nname = 'a'\ninput = 'x.onnx'\nexpect = { faster = true }\n", "unknown expectation"),
        ("[[case]]\nname = 'a'\ninput = 'x.onnx'\n[[case]]\nname = 'a'\ninput = 'y.onnx'\n", "used twice"),
        ("[[case]\n", "not valid TOML"),
        ("[[case]]\nname = 'a'\ninput = 'x.onnx'\nmax_states = true\n", "max_states must be a int"),
    ],
)
def test_manifest_mistakes_are_exit_2(text: str, needle: str, tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(text)
    r = invoke("check", str(tmp_path / "m.toml"))
    assert r.exit_code == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_missing_manifest_or_baseline_is_exit_2(tmp_path: Path) -> None:
    assert invoke("check", str(tmp_path / "none.toml")).exit_code == 2
    (tmp_path / "m.toml").write_text(MANIFEST)
    r = invoke("check", str(tmp_path / "m.toml"), "--baseline", str(tmp_path / "none.json"))
    assert r.exit_code == 2 and "--update-baseline" in r.stderr
    r = invoke("check", str(tmp_path / "m.toml"), "--update-baseline")
    assert r.exit_code == 2 and "--baseline" in r.stderr


@pytest.mark.skipif(find_nvcc() is None, reason="nvcc is not installed")
def test_nvcc_build_check(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(f'[[case]]\nname = "lora"\ninput = "{EXAMPLES / "lora.onnx"}"\n'
                                     'max_states = 20\nbuild = "nvcc"\n')  # fmt: skip
    r = invoke("check", str(tmp_path / "m.toml"), "--json")
    assert r.exit_code == 0, r.stderr
    (case,) = json.loads(r.stdout)["cases"]
    assert case["ok"] and case["build"] == "nvcc"


@pytest.mark.slow  # an emulation build (g++) of the emitted program: about 10 s
def test_emulate_build_check(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(f'[[case]]\nname = "gm"\ninput = "{EXAMPLES / "gated_mlp.onnx"}"\n'
                                     'max_states = 2000\nbuild = "emulate"\nexpect = { found = true }\n')  # fmt: skip
    r = invoke("check", str(tmp_path / "m.toml"), "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["cases"][0]["build"] == "emulate"


def test_the_ci_manifest_and_its_baseline_agree() -> None:
    """Every case of examples/check.toml has a baseline entry taken with its settings, and
    .ci/run runs the check."""
    cases = load_manifest(EXAMPLES / "check.toml")
    base = load_baseline(EXAMPLES / "check-baseline.json")
    assert {c.name for c in cases} == set(base)
    for c in cases:
        assert base[c.name]["settings"] == c.settings(), c.name
        if c.expect.get("found"):
            assert base[c.name]["found"], c.name
    ci = (ROOT / ".ci" / "run").read_text()
    assert "mirage-py check examples/check.toml --baseline examples/check-baseline.json --junit" in ci
