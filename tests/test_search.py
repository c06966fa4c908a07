"""The search: abstract-expression oracle (egglog) and its z3 reference, the enumerator's
canonical order and order-aware dedup, budgets and stop reasons, parallel sub-spaces, and
finding expert-level μGraphs at small size. State budgets only (deterministic)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from clitools import default_sigint

import mirage_py as mp
from mirage_py.benchmarks import all_benchmarks, get_benchmark
from mirage_py.benchmarks._common import EPS
from mirage_py.ir import graph_hash
from mirage_py.ir.expr_rules import RULES, transpose
from mirage_py.pipeline import OptimizeOptions, run_search
from mirage_py.search import enumerate as search_enumerate
from mirage_py.search.absexpr import NARROW_AXIOMS, EgglogOracle, Z3Reference, all_terms, spec_terms
from mirage_py.search.config import get_config
from mirage_py.search.cost import simple_cost_us
from mirage_py.search.enumerate import Budget, Searcher
from mirage_py.search.evaluate import FFEvaluator
from mirage_py.verify import equivalent

BENCHES = list(all_benchmarks())


def _verify(spec: mp.KernelGraph, cand: mp.KernelGraph) -> bool:
    return equivalent(spec, cand).equivalent


def _search(spec: mp.KernelGraph, cfg, states: int | None = None, **kw) -> Searcher:
    return Searcher(spec, cfg, FFEvaluator(), _verify, simple_cost_us, Budget(max_states=states), **kw)


# ---------------------------------------------------------------------------------------
# The oracle


@pytest.fixture(scope="module")
def oracles() -> dict[str, tuple[mp.KernelGraph, EgglogOracle]]:
    out = {}
    for name in BENCHES:
        spec = get_benchmark(name).spec("small")
        out[name] = (spec, EgglogOracle(spec_terms(spec)))
    return out


@pytest.mark.parametrize("name", BENCHES)
def test_oracle_keeps_every_term_of_every_expert(name, oracles):
    spec, oracle = oracles[name]
    for label, expert in get_benchmark(name).experts("small").items():
        missing = [t for t in all_terms(expert) if not oracle.contains(t)]
        assert not missing, f"{name}/{label}: the oracle would prune {missing[:2]}"


@pytest.mark.parametrize("name", BENCHES)
def test_narrow_oracle_keeps_every_term_of_every_expert(name, oracles):
    """The search's first pass (no associativity or distributivity) still reaches every
    expert; on nTrans it is three orders of magnitude smaller than the full e-graph."""
    spec, wide = oracles[name]
    narrow = EgglogOracle(spec_terms(spec), axioms=NARROW_AXIOMS)
    assert len(narrow) <= len(wide)
    for label, expert in get_benchmark(name).experts("small").items():
        missing = [t for t in all_terms(expert) if not narrow.contains(t)]
        assert not missing, f"{name}/{label}: the narrow oracle would prune {missing[:2]}"
    if name == "ntrans":
        assert len(narrow) * 100 < len(wide)


NOT_SUBTERMS = {
    "rmsnorm": [
        ("mul", ("var", "W"), ("var", "W")),
        ("exp", ("var", "X")),
        ("red", 3, ("mul", ("var", "X"), ("var", "W"))),
    ],
    "gated_mlp": [
        ("mul", ("var", "W1"), ("var", "W2")),
        ("exp", ("var", "X")),
        ("sqrt", ("var", "X")),
        # A matmul's product is not the elementwise one, and it does not commute.
        ("mul", ("var", "X"), ("var", "W1")),
        ("bmul", ("var", "W1"), ("var", "X")),
    ],
    "gqa": [("exp", ("var", "V")), ("mul", ("var", "Q"), ("var", "V")), ("sqrt", ("var", "K"))],
    "qknorm": [("exp", ("var", "V")), ("red", 7, ("mul", ("var", "Q"), ("var", "K")))],
    "lora": [
        ("mul", ("var", "A"), ("var", "W")),
        ("exp", ("var", "X")),
        ("red", 5, ("mul", ("var", "X"), ("var", "A"))),
    ],
    "ntrans": [("exp", ("var", "H")), ("relu", ("var", "X")), ("sqrt", ("var", "alpha"))],
}


@pytest.mark.parametrize("name", BENCHES)
def test_oracle_rejects_non_subexpressions(name, oracles):
    _, oracle = oracles[name]
    for t in NOT_SUBTERMS[name]:
        assert not oracle.contains(t), t


@pytest.mark.parametrize("name", ["rmsnorm", "gqa", "lora"])
def test_hashcons_lookup_agrees_with_egglog_check(name, oracles):
    """`contains` reads the saturated e-graph out into a table; egglog's own `check` is the
    reference. Corpus: every term of every expert (positives), the known non-subterms, and
    each expert term wrapped in an op the spec never applies to it (negatives)."""
    _, oracle = oracles[name]
    terms = [t for e in get_benchmark(name).experts("small").values() for t in all_terms(e)]
    corpus = list(dict.fromkeys(terms + NOT_SUBTERMS[name] + [("exp", ("exp", t)) for t in terms[:20]]))
    answers = [oracle.contains(t) for t in corpus]
    assert answers == [oracle.contains_by_check(t) for t in corpus]
    assert any(answers) and not all(answers)


def test_transposes_reach_the_variables_and_a_wrong_layout_matmul_is_pruned(oracles):
    """A transpose's term is pushed down to the variables, so layout survives in terms:
    on qknorm's square 64 x 64 tiles, rms(Q) @ rms(K) (K untransposed) has the shape of
    the spec's rms(Q) @ rms(K)ᵀ and used to pass the oracle as the same term."""
    spec, oracle = oracles["qknorm"]
    d = spec.types[spec.inputs[0]].dims[-1]
    tile = (1, d, d)

    def rms(v: str) -> tuple:
        return RULES["rms_norm"]([("var", v)], [tile], {"eps": EPS}, 1)

    def matmul(a: tuple, b: tuple) -> tuple:
        return RULES["matmul"]([a, b], [tile, tile], {}, 1)

    q, k = rms("Q"), rms("K")
    assert transpose(transpose(k)) == k
    assert transpose(matmul(q, k)) == matmul(transpose(k), transpose(q))
    assert oracle.contains(k) and oracle.contains(transpose(k))  # normalized, then transposed
    assert oracle.contains(matmul(q, transpose(k)))
    assert not oracle.contains(matmul(q, k))
    assert not oracle.contains(matmul(k, transpose(q)))  # the scores transposed
    assert not oracle.contains(transpose(("var", "V")))


def test_egglog_and_z3_agree_on_a_corpus():
    """z3 states the same axioms; on the rmsnorm corpus it confirms what the oracle keeps
    and never confirms what the oracle rejects (z3 may only give up: unknown)."""
    spec = get_benchmark("rmsnorm").spec("small")
    terms = spec_terms(spec)
    oracle, ref = EgglogOracle(terms), Z3Reference(terms, timeout_ms=3000)
    positives = list(dict.fromkeys(all_terms(get_benchmark("rmsnorm").expert("small"))))
    for t in positives:
        assert oracle.contains(t)
        assert ref.is_subexpr(t) is True, t
    for t in NOT_SUBTERMS["rmsnorm"]:
        assert not oracle.contains(t)
        assert ref.is_subexpr(t) is not True, t


# ---------------------------------------------------------------------------------------
# Enumeration


def _square_add_spec() -> mp.KernelGraph:
    g = mp.new_kernel_graph()
    x = g.new_input((8, 8), "float32", "X")
    g.mark_output(g.square(x), "Y1")
    g.mark_output(g.add(x, x), "Y2")
    return g


def test_order_aware_dedup_keeps_the_route_naive_dedup_loses():
    """From [X], mul(X, X) is explored first and reaches the same tensors as square(X),
    but with a larger last-op key: add(X, X) may no longer follow it. Deduplicating on
    fingerprints alone prunes the square(X) state, and with it the only route to the
    graph {square(X), add(X, X)}; keying dedup on the canonical order as well keeps it.
    (The spec spells X² as mul(X, X): the search tries the spec's own ops first.)"""
    spec = mp.new_kernel_graph()
    x = spec.new_input((8, 8), "float32", "X")
    spec.mark_output(spec.mul(x, x), "Y1")
    spec.mark_output(spec.add(x, x), "Y2")
    cfg = get_config("default", max_customized=0, kernel_ops=("mul", "square", "add"), max_kernel_ops=2)
    target = mp.new_kernel_graph()
    x = target.new_input((8, 8), "float32", "X")
    target.mark_output(target.square(x), "Y1")
    target.mark_output(target.add(x, x), "Y2")
    want = graph_hash(target)

    ours = _search(spec, cfg).run()
    naive = _search(spec, dataclasses.replace(cfg, dedup="naive")).run()
    assert ours.stats.stop_reason == naive.stats.stop_reason == "exhausted"
    assert want in ours.matched
    assert want not in naive.matched
    assert set(naive.matched) < set(ours.matched)


def test_canonical_order_builds_each_graph_once():
    spec = _square_add_spec()
    cfg = get_config("default", max_customized=0, kernel_ops=("mul", "square", "add"), max_kernel_ops=2, dedup="off")
    s = _search(spec, cfg)
    r = s.run()
    assert r.stats.stop_reason == "exhausted"
    # Four graphs give (X², 2X): {mul|square} x add, in one order each.
    assert len(r.matched) == 2 and s.stats.matches == 2


def test_value_memo_does_not_change_the_search(monkeypatch):
    """Op values are memoized on the op and its inputs' fingerprints: the same states,
    prunings and matches as with the memo off, with fewer values computed."""
    spec, cfg = get_benchmark("rmsnorm").spec("small"), _restricted_rmsnorm_cfg()
    memo = _search(spec, cfg, states=600).run()
    monkeypatch.setattr(search_enumerate, "MEMO_BYTES", 0)
    plain = _search(spec, cfg, states=600).run()
    assert memo.matched and memo.matched == plain.matched
    assert memo.stats.states == plain.stats.states and memo.stats.pruned == plain.stats.pruned
    assert memo.stats.fingerprints < plain.stats.fingerprints


def test_a_pass_cut_short_leaves_the_next_pass_a_clean_graph(monkeypatch):
    """Under a time limit a pass ends when its share is spent, deep in a branch (see
    Searcher._deadline); the next pass must start from the bare inputs, not from the
    graph the cut left behind."""
    spec, cfg = get_benchmark("rmsnorm").spec("small"), get_config("mlp", min_blocks=1)
    kernel, starts = Searcher._kernel, []

    def cut(self: Searcher, st, top: bool = False) -> None:
        if top:
            starts.append(len(st.g.nodes))
        elif self.stats.passes == 1 and st.g.nodes:  # a customized op was just closed
            raise search_enumerate._PassOver
        kernel(self, st, top)

    monkeypatch.setattr(Searcher, "_kernel", cut)
    r = _search(spec, cfg, states=1500).run()
    assert starts == [0, 0]
    assert r.stats.passes == 2 and r.stats.stop_reason == "states"
    assert r.best is not None and r.best.kernels == 1


def test_broadening_grows_the_prefix_and_retries_the_capped_actions(monkeypatch):
    """Under a time limit (never reached here: the state budget stops the run) a pass runs
    rounds of iterative broadening: round r runs the first FIRST_ACTIONS * 2^r top-level
    actions for at most FIRST_CAP * 2^r states each; the next round retries exactly the
    actions cut short and runs the new ones, each from the bare inputs (a cut leaves the
    graph mid-branch)."""
    monkeypatch.setattr(search_enumerate, "FIRST_CAP", 4)
    monkeypatch.setattr(search_enumerate, "FIRST_ACTIONS", 1)
    spec, cfg = get_benchmark("rmsnorm").spec("small"), _restricted_rmsnorm_cfg()
    kernel, rounds = Searcher._kernel, []

    def watch(self: Searcher, st, top: bool = False) -> None:
        if not top:
            return kernel(self, st, top)
        assert not st.g.nodes
        kernel(self, st, top)
        rounds.append(dataclasses.replace(self._round, retry=set(self._round.retry), capped=set(self._round.capped)))

    monkeypatch.setattr(Searcher, "_kernel", watch)
    s = Searcher(spec, cfg, FFEvaluator(), _verify, simple_cost_us, Budget(max_states=4000, time_limit=1e9))
    r = s.run()
    assert r.stats.stop_reason == "states" and len(rounds) >= 4
    assert (rounds[0].cap, rounds[0].prefix, rounds[0].done_below, rounds[0].retry) == (4, 1, 0, set())
    for a, b in zip(rounds, rounds[1:]):
        assert a.more and (b.cap, b.prefix, b.done_below, b.retry) == (2 * a.cap, 2 * a.prefix, a.prefix, a.capped)
        assert all(j < a.prefix for j in a.capped)
    assert any(rnd.capped for rnd in rounds)
    assert r.best is not None and r.best.kernels == 1


def test_state_budget_stops_with_a_report():
    b = get_benchmark("rmsnorm")
    r = _search(b.spec("small"), get_config("mlp", min_blocks=1), states=50).run()
    assert r.stats.stop_reason == "states"
    assert r.stats.states == 50


def _restricted_rmsnorm_cfg():
    return get_config(
        "mlp", min_blocks=1, tile_widths=(64,), forloop_ranges=(1, 4), imaps=((-1, -1, -1), (1, -1, -1)),
        forloop_dims=(-1, 0, 1), block_ops=("matmul", "square", "accum_sum", "accum_sum_lastdim", "mul_scalar",
                                            "add_scalar", "sqrt", "div"), kernel_ops=("matmul",),
    )  # fmt: skip


def test_merged_parts_add_up_their_statistics():
    from mirage_py.search.enumerate import SearchResult, SearchStats
    from mirage_py.search.executors import merge_results

    parts = [
        SearchResult([], SearchStats(states=s, passes=p, stop_reason=r))
        for s, p, r in ((5, 2, "exhausted"), (7, 3, "time"))
    ]
    m = merge_results(parts).stats
    assert (m.states, m.passes, m.stop_reason) == (12, 5, "time")


@pytest.mark.slow
def test_jobs_2_equals_jobs_1_when_exhausted():
    spec = get_benchmark("rmsnorm").spec("small")
    cfg = _restricted_rmsnorm_cfg()
    one = run_search(spec, OptimizeOptions(cfg, Budget(), jobs=1))
    two = run_search(spec, OptimizeOptions(cfg, Budget(), jobs=2))
    assert one.stats.stop_reason == two.stats.stop_reason == "exhausted"
    assert one.matched and one.matched == two.matched
    assert one.best is not None and two.best is not None
    assert one.best.cost == two.best.cost


def test_finds_a_fused_rmsnorm_kernel_at_small_size():
    """With the full preset and 1500 states: one kernel, within 1% of the expert's
    modelled cost (the expert's exact for-loop takes more states; see the slow test)."""
    b = get_benchmark("rmsnorm")
    spec, expert = b.spec("small"), b.expert("small")
    r = _search(spec, get_config("mlp", min_blocks=1), states=1500).run()
    assert r.best is not None
    assert r.best.kernels <= len(expert.nodes)
    assert r.best.cost <= 1.01 * simple_cost_us(expert)
    assert equivalent(spec, r.best.graph).equivalent


@pytest.mark.slow
def test_exhausted_restricted_search_matches_the_expert():
    b = get_benchmark("rmsnorm")
    spec, expert = b.spec("small"), b.expert("small")
    r = _search(spec, _restricted_rmsnorm_cfg()).run()
    assert r.stats.stop_reason == "exhausted"
    assert r.best is not None and r.best.kernels == 1
    assert r.best.cost <= simple_cost_us(expert) + 1e-9


# ---------------------------------------------------------------------------------------
# The CLI's stops: time limit and Ctrl-C


def _export(tmp_path: Path, name: str = "rmsnorm") -> Path:
    spec = tmp_path / "spec.json"
    mp.save(get_benchmark(name).spec("small"), spec)
    return spec


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mirage_py", *args]


def test_time_limit_stops_cleanly_with_a_report(tmp_path):
    spec = _export(tmp_path)
    out = tmp_path / "out"
    p = subprocess.run(
        _cli("optimize", str(spec), "-o", str(out), "--time-limit", "3", "--json"), capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["search"]["stop_reason"] == "time"
    assert report["verified"] is True
    assert json.loads((out / "report.json").read_text())["best"]["hash"] == report["best"]["hash"]


def test_sigint_returns_the_best_so_far(tmp_path):
    spec = _export(tmp_path)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen(
        _cli("optimize", str(spec), "-o", str(out), "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=default_sigint,
    )
    assert p.stderr is not None
    for line in p.stderr:  # wait until the search itself runs
        if line.startswith("searching"):
            break
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["search"]["stop_reason"] == "interrupted"
    assert (out / "mugraph.json").exists()


# ---------------------------------------------------------------------------------------
# Fingerprints of search values


@pytest.mark.parametrize("shape", [(3, 100), (64, 8, 130)])  # below and above the sample size
def test_fingerprint_ignores_representative_and_layout(shape):
    """The key is a function of the residues mod p only: another representative (±p) and
    another memory layout of the same values give the same key; one changed element (at a
    sampled position for big tensors) gives another."""
    from mirage_py.search.evaluate import FFEvaluator
    from mirage_py.verify.ffexec import FFTensor, Res

    ev = FFEvaluator()
    p = ev.field.p
    a = np.random.default_rng(1).integers(0, p, size=shape).astype(np.float64)
    shifted = a + p * np.random.default_rng(2).integers(-3, 4, size=shape)
    perm = tuple(reversed(range(len(shape))))
    strided = np.ascontiguousarray(shifted.transpose(perm)).transpose(perm)
    base = ev.key(FFTensor(Res(a, float(p), True)))
    assert ev.key(FFTensor(Res(shifted, float(4 * p), False))) == base
    assert ev.key(FFTensor(Res(strided, float(4 * p), False))) == base
    changed = a.copy()
    flat_pos = ev._positions(shape)[0][7] if a.size > 1 << 15 else 7
    changed.reshape(-1)[flat_pos] = (changed.reshape(-1)[flat_pos] + 1) % p
    assert ev.key(FFTensor(Res(changed, float(p), True))) != base
