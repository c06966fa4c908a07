"""`equivalent`: the six experts are accepted with the bound, counterexamples are reported and
reproducible, outputs match in any order, nested exp and trials that all met zero divisors are
"not proven", and fingerprints are equal exactly for graphs that compute the same tensors."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest

from mirage_py.benchmarks import all_benchmarks
from mirage_py.ir import KernelGraph, canonical, loads, new_kernel_graph
from mirage_py.ir.serialize import dumps
from mirage_py.verify import DEFAULT_TRIALS, FIELDS, Verdict, equivalent, fingerprint
from mirage_py.verify.equivalence import TARGET_BOUND

NAMES = ("rmsnorm", "gated_mlp", "gqa", "qknorm", "lora", "ntrans")


def _mlp(order: str = "ab", scale: Fraction = Fraction(1), names=("x", "w")) -> KernelGraph:
    g = new_kernel_graph()
    x, w = g.new_input((4, 16), name=names[0]), g.new_input((16, 8), name=names[1])
    h = g.matmul(x, w)
    a, b = g.silu(g.mul_scalar(h, scale)), g.exp(h)
    for o in order:
        g.mark_output(a if o == "a" else b, o)
    return g


@pytest.mark.parametrize("name", NAMES)
def test_experts_accepted_small(name):
    b = all_benchmarks()[name]
    for ex in b.experts("small").values():
        v = equivalent(b.spec("small"), ex)
        assert v.equivalent and v.reason is None and v.trials == DEFAULT_TRIALS
        assert v.error_bound is not None and v.error_bound <= TARGET_BOUND
        assert v.zero_divisors == 0 and v.permutation == {n: n for n in ex.output_names}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_experts_accepted_paper(name):
    b = all_benchmarks()[name]
    for ename, ex in b.experts("paper").items():
        v = equivalent(b.spec("paper"), ex)
        print(f"{name}/{ename}: equivalent={v.equivalent} trials={v.trials} bound=2^{v.bound_log2:.1f}")
        assert v.equivalent and v.error_bound is not None and v.error_bound <= TARGET_BOUND


def test_bound_formula():
    v = equivalent(_mlp(), _mlp(), trials=3, seed=0)
    # degree 3 (x·w = 2, silu adds its inverse atom), exp present: each trial ≤ 3/q; two
    # outputs of one shape: two matchings in the union bound.
    assert v.degree == 3 and v.permutations == 2
    expect = 2 * math.prod(3 / FIELDS[s % len(FIELDS)].q for s in range(3))
    assert v.error_bound == pytest.approx(expect)
    assert [f for f in v.fields] == [str(FIELDS[s]) for s in range(3)]
    pinned = equivalent(_mlp(), _mlp(), trials=2, field=FIELDS[2])
    assert pinned.fields == [str(FIELDS[2])] * 2


def test_mismatch_reports_output_and_reproducible_seed():
    v = equivalent(_mlp(), _mlp(scale=1 + Fraction(1, 2**60)), seed=5)
    assert not v.equivalent and v.reason == "mismatch" and v.output == "a"
    assert v.error_bound is None and v.counterexample_seed == 5
    again = equivalent(_mlp(), _mlp(scale=1 + Fraction(1, 2**60)), trials=1, seed=v.counterexample_seed)
    assert not again.equivalent and again.output == "a"


def test_outputs_match_in_any_order():
    v = equivalent(_mlp("ab"), _mlp("ba"))
    assert v.equivalent and v.permutation == {"a": "a", "b": "b"}  # by name... names moved with values
    g = _mlp("ab")
    h = _mlp("ba")
    h.output_names = ["a", "b"]  # the same names on swapped values
    v = equivalent(g, h)
    assert v.equivalent and v.permutation == {"a": "b", "b": "a"}
    # Each output is (4, 8): two shape-compatible matchings, both counted in the bound.
    assert v.permutations == 2
    assert v.error_bound == pytest.approx(2 * equivalent(g, g).error_bound)


def test_shape_and_count_mismatch():
    g = new_kernel_graph()
    x, w = g.new_input((4, 16), name="x"), g.new_input((16, 8), name="w")
    g.mark_output(g.transpose(g.matmul(x, w)), "a")
    g.mark_output(g.exp(g.matmul(x, w)), "b")
    v = equivalent(_mlp(), g)
    assert not v.equivalent and v.reason == "mismatch" and v.trials == 0
    one = new_kernel_graph()
    x, w = one.new_input((4, 16), name="x"), one.new_input((16, 8), name="w")
    one.mark_output(one.matmul(x, w), "a")
    assert equivalent(_mlp(), one).reason == "mismatch"


def test_inputs_matched_by_position_when_names_differ():
    assert equivalent(_mlp(), _mlp(names=("u", "v"))).equivalent
    g = new_kernel_graph()
    g.mark_output(g.exp(g.new_input((4, 4), name="x")), "a")
    with pytest.raises(ValueError, match="different inputs"):
        equivalent(_mlp(), g)


def test_nested_exp_is_outside_the_fragment():
    def g(nested: bool) -> KernelGraph:
        k = new_kernel_graph()
        x = k.new_input((4, 4), name="x")
        e = k.exp(x)
        k.mark_output(k.exp(k.mul_scalar(e, 2)) if nested else k.exp(e), "y")
        return k

    for a, b in ((g(False), g(False)), (g(False), g(True))):
        v = equivalent(a, b)
        assert not v.equivalent and v.reason == "outside-fragment" and v.error_bound is None
    # exp of a keyed function of an exp is fine: the keyed output has a q-residue.
    k = new_kernel_graph()
    x = k.new_input((4, 4), name="x")
    k.mark_output(k.exp(k.sqrt(k.exp(x))), "y")
    assert equivalent(k, k).equivalent


def _divides_by_zero() -> KernelGraph:
    k = new_kernel_graph()
    x = k.new_input((4, 4), name="x")
    k.mark_output(k.div(x, k.sub(x, x)), "y")  # x - x is 0 in every field: inv(0) = 0 everywhere
    return k


def test_all_trials_at_zero_divisors_are_inconclusive():
    v = equivalent(_divides_by_zero(), _divides_by_zero())
    # Both graphs output 0 in every trial, so every trial passes; none proves anything.
    assert not v.equivalent and v.reason == "inconclusive" and v.error_bound is None
    assert v.trials == DEFAULT_TRIALS and v.zero_divisors == 2 * DEFAULT_TRIALS * 16  # 2 graphs, 16 elements
    assert "every trial met a zero divisor" in v.detail and not v
    # 3·x/(x - x) is another expression, but it too is 0 wherever it is computed: no accept.
    g = new_kernel_graph()
    x = g.new_input((4, 4), name="x")
    g.mark_output(g.mul_scalar(g.div(x, g.sub(x, x)), 3), "y")
    assert equivalent(_divides_by_zero(), g).reason == "inconclusive"


def _scaled(c: Fraction) -> KernelGraph:
    k = new_kernel_graph()
    k.mark_output(k.mul_scalar(k.new_input((4, 4), name="x"), c), "y")
    return k


def test_zero_divisors_weaken_the_bound():
    # 1/p₁ has no inverse in the field of p₁ (FIELDS[1], used by seed 1), only there: one
    # constant per graph meets a zero divisor in that trial, the other three are clean.
    c = Fraction(1, FIELDS[1].p)
    v = equivalent(_scaled(c), _scaled(c), trials=4, seed=0)
    assert v.equivalent and v.zero_divisors == 2 and v.degree == 1
    assert v.error_bound == pytest.approx(math.comb(4, 3) * 2.0**-60)  # 3 clean trials of 1/2^20
    one = equivalent(_scaled(c), _scaled(c), trials=1, seed=1)
    assert not one.equivalent and one.reason == "inconclusive" and one.zero_divisors == 2
    assert equivalent(_scaled(c), _scaled(c), trials=1, seed=2).equivalent


def test_a_bound_of_one_is_inconclusive():
    def g() -> KernelGraph:
        k = new_kernel_graph()
        k.mark_output(k.pow_scalar(k.new_input((4, 4), name="x"), 1 << 21), "y")  # degree 2^21 > 2^20
        return k

    v = equivalent(g(), g(), trials=3)
    assert not v.equivalent and v.reason == "inconclusive" and v.zero_divisors == 0 and v.degree == 1 << 21
    assert "bound the error only by 1" in v.detail


def test_cli_verify_says_inconclusive(tmp_path):
    from click.testing import CliRunner

    from mirage_py.cli import cli

    a = tmp_path / "a.json"
    a.write_text(dumps(_divides_by_zero()))
    r = CliRunner().invoke(cli, ["verify", str(a), str(a)])
    assert r.exit_code == 1 and r.output.startswith("not proven equivalent: inconclusive")
    assert len(r.output.strip().splitlines()) == 1
    d = json.loads(CliRunner().invoke(cli, ["verify", str(a), str(a), "--json"]).output)
    assert d["equivalent"] is False and d["reason"] == "inconclusive" and d["error_bound"] is None


def test_verdict_json():
    v = equivalent(_mlp(), _mlp(scale=Fraction(3)), seed=2)
    d = v.to_json()
    json.dumps(d)
    for key in ("equivalent", "trials", "error_bound", "reason", "output", "counterexample_seed"):
        assert key in d
    assert d["equivalent"] is False and d["reason"] == "mismatch" and d["counterexample_seed"] == 2
    ok = equivalent(_mlp(), _mlp()).to_json()
    assert ok["equivalent"] is True and ok["error_bound_log2"] < -50
    assert isinstance(v, Verdict) and not v


def test_fingerprints():
    b = all_benchmarks()["gqa"]
    spec, experts = b.spec("small"), list(b.experts("small").values())
    fp = fingerprint(spec)
    assert hash(fp) == hash(fingerprint(spec))
    assert all(fingerprint(e) == fp for e in experts)
    assert fingerprint(canonical(spec)) == fp and fingerprint(loads(dumps(spec))) == fp
    assert fingerprint(spec, seed=1) != fp
    assert fingerprint(spec, samples=16) == fingerprint(experts[0], samples=16) != fp
    assert fingerprint(_mlp(scale=1 + Fraction(1, 2**60))) != fingerprint(_mlp())
