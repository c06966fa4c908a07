"""The finite-field rules and executor: every op has a rule; exact ops agree with exact
rational arithmetic mapped into the field; exp, keyed functions, zero divisors, nested exp,
matmul chunking and the block executor behave as DESIGN.md says."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from mirage_py.benchmarks import all_benchmarks
from mirage_py.ir import KernelGraph, new_block_graph, new_kernel_graph
from mirage_py.ir.ops import OPS
from mirage_py.verify.degree import degrees
from mirage_py.verify.ffexec import (
    FFTensor,
    FieldOps,
    OutsideFragment,
    Res,
    _bmm,
    _exp_index,
    _matmul,
    _mul_reduce,
    _Pool,
    _reduce,
    canon,
    residues,
    run_ff,
    sample_inputs,
)
from mirage_py.verify.fields import DEFAULT_FIELD, FIELDS

P, Q, W = DEFAULT_FIELD.p, DEFAULT_FIELD.q, DEFAULT_FIELD.omega


def test_every_op_has_an_ff_rule():
    missing = [n for n, op in OPS.items() if op.ff is None and op.kind != "graph"]
    assert missing == []


def _lifted(a: np.ndarray) -> FFTensor:
    a = np.asarray(a, dtype=np.float64)
    return FFTensor(Res(a, float(np.max(np.abs(a), initial=0)), bool(np.all(a >= 0))), lift=True)


def _to_field(x: np.ndarray, m: int) -> np.ndarray:
    """Exact rationals (object array) -> residues mod m."""
    return np.vectorize(lambda r: Fraction(r).numerator * pow(Fraction(r).denominator, -1, m) % m, otypes=[np.int64])(x)


# Exact ops: the NumPy rule on Fractions (or, where the rule converts its constant to a
# float, the same formula on Fractions), mapped into the field, is the ff rule's result.
RATIONAL = {
    "reciprocal": lambda x: Fraction(1) / x,
    "mul_scalar": lambda x, c: x * c,
    "add_scalar": lambda x, c: x + c,
    "pow_scalar": lambda x, c: x**c,
}
EXACT = {
    "matmul": ([(3, 4), (4, 5)], {}),
    "square": ([(3, 4)], {}),
    "neg": ([(3, 4)], {}),
    "reciprocal": ([(3, 4)], {}),
    "mul_scalar": ([(3, 4)], {"c": Fraction(-7, 3)}),
    "add_scalar": ([(3, 4)], {"c": Fraction(5, 11)}),
    "pow_scalar": ([(3, 4)], {"c": Fraction(-3)}),
    "add": ([(3, 4), (1, 4)], {}),
    "sub": ([(3, 4), (3, 1)], {}),
    "mul": ([(3, 4), (3, 4)], {}),
    "div": ([(3, 4), (3, 4)], {}),
    "reduce_sum": ([(3, 8)], {"dim": -1, "size": 2}),
    "transpose": ([(3, 4)], {}),
    "concat": ([(3, 4), (3, 2)], {"dim": -1}),
}


@pytest.mark.parametrize("name", sorted(EXACT))
@pytest.mark.parametrize("f", FIELDS[:2], ids=str)
def test_exact_ops_match_rationals(name, f):
    shapes, attrs = EXACT[name]
    rng = np.random.default_rng(1)
    ints = [rng.integers(1, 60, s) for s in shapes]
    op = OPS[name]
    fr = [np.vectorize(Fraction, otypes=[object])(a) for a in ints]
    if name in RATIONAL:
        expect = np.vectorize(lambda x: RATIONAL[name](x, **attrs), otypes=[object])(fr[0])
    else:
        expect = op.numpy(*fr, **attrs)
    F = FieldOps(f, key=0)
    got = op.ff(F, *[_lifted(a) for a in ints], **attrs)
    assert np.array_equal(canon(got.p, f.p), _to_field(expect, f.p))
    if got.has_q:
        assert np.array_equal(canon(got.qres(), f.q), _to_field(expect, f.q))


def test_exp_sigmoid_silu_tanh_gelu_residues():
    x = np.array([[0.0, 1, 2, 5, 605_392, 123_456]])
    F = FieldOps(DEFAULT_FIELD)
    t = _lifted(x)
    exp = [pow(W, int(v) % Q, P) for v in x[0]]
    assert canon(OPS["exp"].ff(F, t).p, P)[0].tolist() == exp
    sig = [pow(1 + pow(W, -int(v) % Q, P), -1, P) for v in x[0]]
    assert canon(OPS["sigmoid"].ff(F, t).p, P)[0].tolist() == sig
    assert canon(OPS["silu"].ff(F, t).p, P)[0].tolist() == [int(v) * s % P for v, s in zip(x[0], sig)]
    # tanh-gelu is x·sigmoid(2u), u = k(x + a x³), with the NumPy rule's float constants.
    k, a = Fraction(np.sqrt(2 / np.pi)), Fraction(0.044715)
    two_u = [(2 * k * (int(v) + a * int(v) ** 3)) for v in x[0]]
    expect = [
        int(v) * pow(1 + pow(W, -(u.numerator * pow(u.denominator, -1, Q)) % Q, P), -1, P) % P
        for v, u in zip(x[0], two_u)
    ]
    assert canon(OPS["gelu"].ff(F, t, approximate="tanh").p, P)[0].tolist() == expect
    # exp results have no q-residue; exp of one is nested exp.
    e = F.exp(t)
    assert not e.has_q
    with pytest.raises(OutsideFragment):
        F.exp(F.add(e, t))


def test_silu_equals_x_times_sigmoid_in_a_graph():
    def graph(fused: bool) -> KernelGraph:
        g = new_kernel_graph()
        x = g.new_input((4, 8), name="x")
        g.mark_output(g.silu(x) if fused else g.mul(x, g.sigmoid(x)), "y")
        return g

    ins = sample_inputs(["x"], [(4, 8)], 3)
    a, b = (residues(run_ff(graph(f), ins, FieldOps(key=3))[0], P) for f in (True, False))
    assert np.array_equal(a, b)


def test_keyed_functions():
    x = _lifted(np.arange(12.0).reshape(3, 4))
    y = _lifted(np.arange(12.0).reshape(3, 4) + 1)
    F, G = FieldOps(key=1), FieldOps(key=2)
    sqrt = canon(F.opaque("sqrt", x).p, P)
    # Keyed by op, attributes and value only: the same call elsewhere gives the same values,
    # pow_scalar(1/2) is the same function, a new trial key gives a fresh function.
    assert np.array_equal(sqrt, canon(OPS["sqrt"].ff(F, x).p, P))
    assert np.array_equal(sqrt, canon(OPS["pow_scalar"].ff(F, x, c=Fraction(1, 2)).p, P))
    assert not np.array_equal(sqrt, canon(G.opaque("sqrt", x).p, P))
    assert not np.array_equal(sqrt, canon(F.opaque("relu", x).p, P))
    assert not np.array_equal(sqrt, canon(F.opaque("sqrt", y).p, P))
    p3 = canon(OPS["pow_scalar"].ff(F, x, c=Fraction(1, 3)).p, P)
    assert not np.array_equal(p3, canon(OPS["pow_scalar"].ff(F, x, c=Fraction(2, 3)).p, P))
    erf_gelu = F.opaque("gelu", x, approximate="none")
    assert np.array_equal(canon(erf_gelu.p, P), canon(OPS["gelu"].ff(F, x).p, P))
    # Equal values in different positions map equally (a function of the value).
    z = _lifted(np.array([5.0, 9.0, 5.0]))
    r = canon(F.opaque("relu", z).p, P)
    assert r[0] == r[2] != r[1]
    # Keyed outputs carry a q-residue: exp(sqrt(x)) is inside the fragment.
    assert F.opaque("sqrt", F.exp(x)).has_q
    F.exp(F.opaque("sqrt", F.exp(x)))


def test_zero_divisors_counted():
    F = FieldOps()
    x = _lifted(np.array([[0.0, 3.0, 0.0, P]]))  # P ≡ 0 as well
    inv = canon(F.div(F.const(Fraction(1)), x).p, P)
    assert inv.tolist() == [[0, pow(3, -1, P), 0, 0]]
    assert F.zero_divisors == 3


def test_matmul_chunks_beyond_the_float64_bound():
    k = 3 * 6144 + 5
    a = Res(np.full((2, k), P - 1.0), P - 1.0, True)
    b = Res(np.full((k, 3), P - 2.0), P - 2.0, True)
    r, reduced = _matmul(a, b, P)
    assert reduced and r.b < 2**53
    assert np.all(np.mod(r.a, P) == (k * (P - 1) * (P - 2)) % P)
    # Within the bound: one BLAS call, no reduction.
    r, reduced = _matmul(Res(a.a[:, :4096], P - 1.0, True), Res(b.a[:4096], P - 2.0, True), P)
    assert not reduced and np.all(np.mod(r.a, P) == (4096 * (P - 1) * (P - 2)) % P)


def test_lazy_q_matches_direct_q():
    """A q-residue computed lazily after a mod-p reduction equals the exact value mod q."""
    rng = np.random.default_rng(0)
    xs = rng.integers(0, 1 << 20, (4, 64)).astype(np.float64)
    ws = rng.integers(0, 1 << 20, (64, 8)).astype(np.float64)
    F = FieldOps()
    y = F.mul(F.matmul(_lifted(xs), _lifted(ws)), F.matmul(_lifted(xs), _lifted(ws)))
    assert not y.lift  # the product overflowed 2^53 and was reduced mod p
    exact = np.array([[int(v) for v in row] for row in (xs.astype(object) @ ws.astype(object))], dtype=object)
    exact = exact * exact
    assert np.array_equal(canon(y.qres(), Q), (exact % Q).astype(np.int64))
    assert np.array_equal(canon(y.p, P), (exact % P).astype(np.int64))


def _tiled(f: int, grid: int) -> KernelGraph:
    g = new_kernel_graph()
    x, w = g.new_input((8, 64), name="x"), g.new_input((64, 32), name="w")
    bg = new_block_graph((grid, 1, 1), f)
    bx, bw = bg.new_input(x, (-1, -1, -1), 1), bg.new_input(w, (1, -1, -1), 0)
    acc = bg.accum_sum(bg.matmul(bx, bw))
    ss = bg.accum_sum_lastdim(bg.square(bx))
    bg.new_output(bg.div(bg.exp(acc), ss), (1, -1, -1))
    (o,) = g.customized([x, w], bg)
    g.mark_output(o, "y")
    return g


def test_block_executor_matches_kernel_ops():
    k = new_kernel_graph()
    x, w = k.new_input((8, 64), name="x"), k.new_input((64, 32), name="w")
    k.mark_output(k.div(k.exp(k.matmul(x, w)), k.reduce_sum(k.square(x), 1)), "y")
    ins = sample_inputs(["x", "w"], [(8, 64), (64, 32)], 7)
    ref = residues(run_ff(k, ins, FieldOps(key=7))[0], P)
    for f, grid in ((1, 1), (4, 2), (16, 4), (64, 32)):
        got = residues(run_ff(_tiled(f, grid), ins, FieldOps(key=7))[0], P)
        assert np.array_equal(got, ref), (f, grid)


@pytest.mark.parametrize("name", ["rmsnorm", "gated_mlp", "gqa", "qknorm", "lora", "ntrans"])
def test_experts_give_the_specs_residues(name):
    b = all_benchmarks()[name]
    spec = b.spec("small")
    ins = sample_inputs(spec.input_names, [spec.types[t].dims for t in spec.inputs], 11)
    ref = [residues(y, P) for y in run_ff(spec, ins, FieldOps(key=11))]
    for ex in b.experts("small").values():
        got = [residues(y, P) for y in run_ff(ex, ins, FieldOps(key=11))]
        assert all(np.array_equal(a, c) for a, c in zip(ref, got))


def test_degrees():
    g = new_kernel_graph()
    x, w = g.new_input((4, 8), name="x"), g.new_input((8, 8), name="w")
    h = g.matmul(x, w)  # 2
    g.mark_output(g.mul(g.silu(h), h), "a")  # silu: 2 + 1 (the inverse atom); times h: 5
    g.mark_output(g.pow_scalar(g.add_scalar(x, 1), 3), "b")  # 3
    g.mark_output(g.rms_norm(x, Fraction(1, 10**6)), "c")  # x · (sqrt atom)⁻¹: 2
    r = degrees(g)
    assert r.degrees == [5, 3, 2]
    assert (r.exps, r.opaques, r.inverses) == (1, 1, 2)


def test_fit_is_exact_near_the_float64_limit():
    rng = np.random.default_rng(5)
    big = rng.integers(-(2**53) + 1, 2**53, 20_000, dtype=np.int64)
    edge = np.array([0, 1, -1, P, -P, P - 1, 2**53 - 1, -(2**53) + 1, P * 12345, P * 12345 - 1], dtype=np.int64)
    vals = np.concatenate([big, edge])
    near = rng.integers(-(2**53) + 2**22, 2**53 - 2**22, 20_000, dtype=np.int64)
    for m in (P, Q):
        for v, bound in ((vals, 2.0**53), (near, 2.0**53 - 2**22)):  # the integer and the float path
            got = canon(Res(v.astype(np.float64), bound, False), m)
            assert np.array_equal(got, np.array([int(x) % m for x in v], dtype=np.int64))


def test_exp_index_reduces_exactly():
    rng = np.random.default_rng(6)
    v = np.concatenate([rng.integers(-(2**52), 2**52, 20_000), [0, Q, -Q, 2 * Q - 1, 2**53 - 1]])
    for bound in (2.0**52, 2.0**53):
        ok = v[np.abs(v) <= bound]
        idx = _exp_index(Res(ok.astype(np.float64), bound, False), Q)
        assert np.all((idx >= 0) & (idx < 3 * Q))
        assert np.array_equal((idx - Q) % Q, ok % Q)


# -- the fast paths (docs/verification.md, "Speed"): same residues as the plain arithmetic


def test_centered_reduction_is_exact_and_within_its_bound():
    rng = np.random.default_rng(8)
    for m in (P, Q):
        for bound in (2.0**40, 2.0**52, 2.0**53 - 2 * m):
            v = rng.integers(-int(bound), int(bound), 50_000, dtype=np.int64)  # more than a block
            v[:4] = [0, int(bound), -int(bound), m * 12345]
            r = _reduce(Res(v.astype(np.float64), bound, False), m)
            assert r.b <= m // 2 + 5 and np.all(np.abs(r.a) <= r.b)
            assert np.array_equal(r.a.astype(np.int64) % m, v % m)


@pytest.mark.parametrize("xs, ys", [((3, 700, 50), (3, 700, 1)), ((2, 1, 40_000), (2, 5, 1)), ((), ())])
def test_mul_reduce_broadcasts_exactly(xs, ys):
    rng = np.random.default_rng(9)
    x, y = rng.integers(-(2**26), 2**26, xs), rng.integers(0, P, ys)
    r, reduced = _mul_reduce(Res(x.astype(np.float64), 2.0**26, False), Res(y.astype(np.float64), P - 1.0, True), P)
    exact = (x.astype(object) * y.astype(object)) % P
    assert reduced and np.all(np.abs(r.a) <= r.b) and np.array_equal(np.asarray(r.a).astype(np.int64) % P, exact)


def test_blocked_exp_matches_powers():
    rng = np.random.default_rng(10)
    f = FIELDS[1]
    v = rng.integers(-(2**50), 2**50, 40_000)
    got = canon(FieldOps(f).exp(FFTensor(Res(v.astype(np.float64), 2.0**50, False), lift=True)).p, f.p)
    assert got.tolist() == [pow(f.omega, int(x) % f.q, f.p) for x in v]


def test_quotient_taken_out_of_a_matmul():
    """(a/s) @ v and v' @ (b/t) with s constant along the summed axis: the factored path
    (scale after the matmul) gives the residues of the quotient multiplied out first."""
    rng = np.random.default_rng(11)
    a, s, v = (
        rng.integers(1, 2**20, (2, 8, 300)),
        rng.integers(1, 2**20, (2, 8, 1)),
        rng.integers(0, 2**20, (2, 300, 3)),
    )
    F = FieldOps()
    quotient = F.div(_lifted(a), _lifted(s))
    fast = F.matmul(quotient, _lifted(v))
    assert quotient._p._value is None  # never multiplied out: the scale went after the matmul
    slow = F.matmul(F.mul(_lifted(a), F.div(F.const(Fraction(1)), _lifted(s))), _lifted(v))
    exact = np.einsum("bmk,bkn->bmn", a.astype(object), v.astype(object))
    exact = np.vectorize(lambda e, d: e * pow(int(d), -1, P) % P, otypes=[object])(exact, s)
    assert np.array_equal(canon(fast.p, P), canon(slow.p, P)) and np.array_equal(
        canon(fast.p, P), exact.astype(np.int64)
    )
    assert np.array_equal(canon(fast.qres(), Q), canon(slow.qres(), Q))
    # The right operand: x @ (b / t) with t of shape (1, n), constant along the summed axis.
    x, b, t = rng.integers(0, 2**20, (3, 400)), rng.integers(1, 2**20, (400, 5)), rng.integers(1, 2**20, (1, 5))
    fast = F.matmul(_lifted(x), F.div(_lifted(b), _lifted(t)))
    slow = F.matmul(_lifted(x), F.mul(_lifted(b), F.div(F.const(Fraction(1)), _lifted(t))))
    assert np.array_equal(canon(fast.p, P), canon(slow.p, P))
    # A transposed quotient is still a quotient, with the transposed residues.
    quotient = F.div(_lifted(b), _lifted(t))
    flipped = F.transpose(quotient)
    assert flipped.factors is not None and flipped.shape == (5, 400)
    assert np.array_equal(canon(flipped.p, P), canon(quotient.p, P).T)
    assert np.array_equal(canon(flipped.qres(), Q), canon(quotient.qres(), Q).T)
    # Factors of lower rank broadcast: a constant numerator or divisor, a row vector.
    xb = _lifted(b)
    for q in (F.div(F.const(Fraction(1)), xb), F.div(xb, F.const(Fraction(3))), F.div(xb, _lifted(t[0]))):
        assert np.array_equal(canon(F.transpose(q).p, P), canon(q.p, P).T)
    assert F.zero_divisors == 0


def test_pool_hands_out_only_unreferenced_buffers():
    pool = _Pool()
    assert pool.empty((10,)) is None  # small: NumPy allocates
    a = pool.empty((4, 1 << 18))
    assert a is not None
    view = a[1:]
    b = pool.empty((4, 1 << 18))
    assert b is not None and not np.shares_memory(a, b)
    del a
    c = pool.empty((1 << 20,))  # `view` still holds the first buffer
    assert c is not None and not np.shares_memory(c, view)
    del view, b
    d = pool.empty((1 << 18, 4))
    assert d is not None and len(pool._bufs) == 3  # a free buffer reused, none allocated


def _laid_out(rng: np.random.Generator, shape: tuple[int, ...], order: list[int]) -> np.ndarray:
    """Small integers of `shape`, stored with its axes in memory order `order` (a view)."""
    base = rng.integers(0, 1 << 10, [shape[i] for i in order]).astype(np.float64)
    return base.transpose(np.argsort(order))


def test_bmm_folds_batch_axes_and_the_loop_axis():
    """Batched products with broadcast axes merged into rows/columns, and a summed axis
    merged into K, in any memory layout: equal to np.matmul (and its sum) or declined."""
    rng = np.random.default_rng(12)
    sa, sb = (2, 1, 3, 4, 5, 6), (2, 7, 1, 4, 6, 8)  # axis 1 only in b, 2 only in a, 3 summed
    folded = 0
    for _ in range(40):
        a = _laid_out(rng, sa, list(rng.permutation(6)) if rng.random() < 0.5 else list(range(6)))
        b = _laid_out(rng, sb, list(rng.permutation(6)) if rng.random() < 0.5 else list(range(6)))
        got = _bmm(a, b)
        assert got is not None and np.array_equal(got, np.matmul(a, b))
        summed = _bmm(a, b, summed=3)
        if summed is not None:
            folded += 1
            assert np.array_equal(summed, np.matmul(a, b).sum(axis=3, keepdims=True))
    assert folded >= 1
    # The for-loop axis joins K when it lies right outside K in a's memory (…, m, it, k), as
    # in a tiled kernel's scores, and right outside K's rows in b's (…, it, k, n).
    a, b = _laid_out(rng, sa, [0, 1, 2, 4, 3, 5]), _laid_out(rng, sb, list(range(6)))
    summed = _bmm(a, b, summed=3)
    assert summed is not None and np.array_equal(summed, np.matmul(a, b).sum(axis=3, keepdims=True))


def _same(x: Res, y: Res) -> bool:
    return np.array_equal(x.a, y.a) and x.b == y.b and x.nn == y.nn


def test_sum_of_squares_by_row_dots():
    """Σ_last x·x (an RMS norm's) taken as row dot products of x: the residues, bounds and
    lift of the square's sum, for a lifted input, a reduced one with a lazy q-residue, one
    without a q-residue (from an exp), and bounds where the square or the sum reduces."""
    from mirage_py.verify.ffexec import Lazy, _mul

    rng = np.random.default_rng(13)
    F = FieldOps()
    small = rng.integers(0, 2**20, (3, 5, 64)).astype(np.float64)
    signed = rng.integers(-(P // 2), P // 2, (3, 5, 64)).astype(np.float64)
    big = rng.integers(-(2**40), 2**40, (3, 5, 64)).astype(np.float64)
    cases = [
        FFTensor(Res(small, 2.0**20 - 1, True), lift=True),
        FFTensor(Res(signed, P / 2, False), Lazy(value=Res(signed, P / 2, False))),
        FFTensor(Res(big, 2.0**40, False), Lazy(value=Res(big, 2.0**40, False))),  # the square reduces
        FFTensor(Res(big, 2.0**40, False), lift=True),
        FFTensor(Res(signed, P / 2, False)),  # no q-residue
        FFTensor(Res(small[..., :1], 2.0**20 - 1, True), lift=True),  # a last axis of one
    ]
    for i, x in enumerate(cases):
        square = F.mul(x, x)
        fused = F.reduce_sum(square, -1, 1)
        assert square._p.done == (i in (2, 3))  # the square multiplied out only where it reduces
        plain = F.reduce_sum(F._combine(_mul, (x, x)), -1, 1)
        assert fused.has_q == plain.has_q and fused.lift == plain.lift and fused.shape == plain.shape
        assert _same(fused.p, plain.p)
        if plain.has_q:
            assert _same(fused.qres(), plain.qres())
        sq = F.mul(x, x)  # a square used as it is: its residues on demand
        ref = F._combine(_mul, (x, x))
        assert sq.shape == ref.shape and _same(sq.p, ref.p) and sq.has_q == ref.has_q and sq.lift == ref.lift
        if ref.has_q:
            assert _same(sq.qres(), ref.qres())
