"""Registry-driven op tests: every row of the op table, its shape rule and its NumPy rule,
against references written here from the definitions in DESIGN.md (plain Python / `math`
loops, not the rules under test), at kernel level and inside a block graph."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

import mirage_py as mp
from mirage_py.ir import OPS, OpDef, run_float
from mirage_py.ir.ops import ACCUMULATORS, BINARY, ELEMENTWISE, STRUCTURAL, UNARY, normalize_attrs

# ---------------------------------------------------------------------------------------
# Independent references.


def elementwise(f: Callable[..., float]) -> Callable[..., np.ndarray]:
    """Apply a scalar Python function element by element, with size-1 broadcasting done by
    hand (right-aligned), so NumPy's broadcasting is not what is being compared against."""

    def run(*xs: np.ndarray) -> np.ndarray:
        rank = max(x.ndim for x in xs)
        padded = [x.reshape((1,) * (rank - x.ndim) + x.shape) for x in xs]
        shape = tuple(max(x.shape[d] for x in padded) for d in range(rank))
        out = np.empty(shape)
        for idx in np.ndindex(*shape):
            args = [float(x[tuple(i if n > 1 else 0 for i, n in zip(idx, x.shape))]) for x in padded]
            out[idx] = f(*args)
        return out

    return run


def ref_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched matmul; batch dims equal on both sides or absent on one."""
    batch = a.shape[:-2] or b.shape[:-2]
    (m, k), n = a.shape[-2:], b.shape[-1]
    out = np.empty(batch + (m, n))
    for idx in np.ndindex(*batch):
        aa = a[idx] if a.ndim > 2 else a
        bb = b[idx] if b.ndim > 2 else b
        for i in range(m):
            for j in range(n):
                out[idx + (i, j)] = math.fsum(float(aa[i, t]) * float(bb[t, j]) for t in range(k))
    return out


def ref_reduce_sum(x: np.ndarray, dim: int, size: int = 1) -> np.ndarray:
    """out[j] = sum_{i < m} x[i*size + j] along `dim` (m = n / size)."""
    dim %= x.ndim
    m = x.shape[dim] // size
    out = np.zeros(x.shape[:dim] + (size,) + x.shape[dim + 1 :])
    for i in range(m):
        for j in range(size):
            dst = (slice(None),) * dim + (j,)
            src = (slice(None),) * dim + (i * size + j,)
            out[dst] += x[src]
    return out


def ref_transpose(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape[:-2] + (x.shape[-1], x.shape[-2]))
    for idx in np.ndindex(*x.shape):
        out[idx[:-2] + (idx[-1], idx[-2])] = x[idx]
    return out


def ref_concat(a: np.ndarray, b: np.ndarray, dim: int) -> np.ndarray:
    dim %= a.ndim
    shape = list(a.shape)
    shape[dim] += b.shape[dim]
    out = np.full(shape, np.nan)
    for idx in np.ndindex(*a.shape):
        out[idx] = a[idx]
    for idx in np.ndindex(*b.shape):
        out[idx[:dim] + (idx[dim] + a.shape[dim],) + idx[dim + 1 :]] = b[idx]
    return out


def ref_rms_norm(x: np.ndarray, eps: Any) -> np.ndarray:
    out = np.empty(x.shape)
    n = x.shape[-1]
    for idx in np.ndindex(*x.shape[:-1]):
        row = [float(v) for v in x[idx]]
        ms = math.fsum(v * v for v in row) / n
        out[idx] = [v / math.sqrt(ms + float(eps)) for v in row]
    return out


def ref_gelu_erf(v: float) -> float:
    return 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))


def ref_gelu_tanh(v: float) -> float:
    return 0.5 * v * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))


def exact_scalar(fn: Callable[[Fraction, Fraction], Fraction], c: Any) -> Callable[..., np.ndarray]:
    """x (op) c computed exactly in rationals, then rounded once to float64."""
    return elementwise(lambda v: float(fn(Fraction(v), Fraction(c))))


def ref_pow(c: Any) -> Callable[..., np.ndarray]:
    c = Fraction(c)
    if c.denominator == 1:
        # Exact in rationals: x**k with a negative k is 1 / x**|k|.
        return elementwise(lambda v: float(Fraction(v) ** int(c)))
    return elementwise(lambda v: math.exp(float(c) * math.log(v)))


# ---------------------------------------------------------------------------------------
# Cases: one or more per op. `ranges` gives the input distribution per argument.

SIGNED = (-2.0, 2.0)
POSITIVE = (0.5, 2.0)


@dataclass
class Case:
    op: str
    shapes: list[tuple[int, ...]]
    attrs: dict[str, Any]
    ref: Callable[..., np.ndarray]
    ranges: list[tuple[float, float]] = field(default_factory=list)
    label: str = ""

    @property
    def id(self) -> str:
        return f"{self.op}-{self.label or 'x'.join(str(list(s)) for s in self.shapes)}"

    def inputs(self, rng: np.random.Generator, lead: tuple[int, ...] = ()) -> list[np.ndarray]:
        ranges = self.ranges or [SIGNED] * len(self.shapes)
        return [rng.uniform(lo, hi, size=lead + s) for s, (lo, hi) in zip(self.shapes, ranges)]


def _unary(op: str, f: Callable[[float], float], rng: tuple[float, float] = SIGNED, **attrs: Any) -> list[Case]:
    ref = elementwise(f)
    return [Case(op, [s], attrs, ref, [rng]) for s in [(7,), (3, 5), (2, 3, 4)]]


def _binary(op: str, f: Callable[[float, float], float], rng2: tuple[float, float] = SIGNED) -> list[Case]:
    ref = elementwise(f)
    shapes = [
        ((3, 4), (3, 4)),
        ((3, 4), (4,)),
        ((3, 1), (1, 4)),
        ((2, 3, 4), (3, 1)),
        ((1,), (2, 3)),
        ((4,), (2, 3, 4)),
    ]
    return [Case(op, [a, b], {}, ref, [SIGNED, rng2]) for a, b in shapes]


CASES: list[Case] = [
    # matmul: plain, batched, batch dims absent on one side (either), rank 4.
    *[
        Case("matmul", [a, b], {}, ref_matmul)
        for a, b in [
            ((3, 4), (4, 5)),
            ((2, 3, 4), (2, 4, 5)),
            ((2, 3, 4), (4, 5)),
            ((3, 4), (2, 4, 5)),
            ((2, 2, 3, 4), (4, 2)),
            ((1, 2), (2, 1)),
        ]
    ],
    *_unary("exp", math.exp),
    *_unary("square", lambda v: v**2),
    *_unary("sqrt", math.sqrt, POSITIVE),
    *_unary("sigmoid", lambda v: 1.0 / (1.0 + math.exp(-v))),
    *_unary("sigmoid", lambda v: 1.0 / (1.0 + math.exp(-v)), (-30.0, 30.0)),
    *_unary("silu", lambda v: v / (1.0 + math.exp(-v))),
    *_unary("silu", lambda v: v / (1.0 + math.exp(-v)), (-30.0, 30.0)),
    *_unary("gelu", ref_gelu_erf),  # the default is the erf form
    *_unary("gelu", ref_gelu_erf, (-6.0, 6.0), approximate="none"),
    *_unary("gelu", ref_gelu_tanh, (-6.0, 6.0), approximate="tanh"),
    *_unary("relu", lambda v: v if v > 0 else 0.0),
    *_unary("neg", lambda v: -v),
    *_unary("reciprocal", lambda v: 1.0 / v, POSITIVE),
    *_unary("reciprocal", lambda v: 1.0 / v, (-2.0, -0.5)),
    # Scalars are exact rationals: every spelling (Fraction, int, float, "p/q" string).
    *[
        Case("mul_scalar", [(3, 4)], {"c": c}, exact_scalar(lambda x, y: x * y, c), label=repr(c))
        for c in [Fraction(1, 3), Fraction(-7, 2), 3, 0, 0.1, "2/5", "-3"]
    ],
    *[
        Case("add_scalar", [(3, 4)], {"c": c}, exact_scalar(lambda x, y: x + y, c), label=repr(c))
        for c in [Fraction(1, 3), Fraction(-7, 2), 3, 0, 0.1, "2/5", "-3"]
    ],
    # pow_scalar: integer exponents on signed inputs; negative and fractional on positive ones.
    *[Case("pow_scalar", [(3, 4)], {"c": c}, ref_pow(c), [SIGNED], label=repr(c)) for c in [0, 1, 2, 3, 5]],
    *[Case("pow_scalar", [(3, 4)], {"c": c}, ref_pow(c), [(0.5, 2.0)], label=repr(c)) for c in [-1, -2, -3]],
    *[Case("pow_scalar", [(3, 4)], {"c": c}, ref_pow(c), [(-2.0, -0.5)], label=f"neg{c!r}") for c in [-1, -3, 2]],
    *[
        Case("pow_scalar", [(3, 4)], {"c": c}, ref_pow(c), [POSITIVE], label=repr(c))
        for c in [Fraction(1, 2), Fraction(3, 2), Fraction(-1, 2), Fraction(1, 3), 2.5, "-5/4"]
    ],
    *_binary("add", lambda a, b: a + b),
    *_binary("sub", lambda a, b: a - b),
    *_binary("mul", lambda a, b: a * b),
    *_binary("div", lambda a, b: a / b, POSITIVE),
    *_binary("div", lambda a, b: a / b, (-2.0, -0.5)),
    # reduce_sum: size 1 (plain sum) and size > 1 (sums m tiles laid side by side).
    *[
        Case(
            "reduce_sum",
            [s],
            {"dim": d, "size": k},
            lambda x, d=d, k=k: ref_reduce_sum(x, d, k),
            label=f"{list(s)}d{d}s{k}",
        )
        for s, d, k in [
            ((7,), 0, 1),
            ((4, 6), 1, 1),
            ((4, 6), 1, 3),
            ((4, 6), 1, 2),
            ((4, 6), 1, 6),
            ((4, 6), 0, 2),
            ((4, 6), -1, 3),
            ((2, 3, 8), 2, 4),
            ((2, 3, 8), 1, 1),
            ((2, 3, 8), -3, 1),
        ]
    ],
    *[Case("transpose", [s], {}, ref_transpose) for s in [(3, 4), (2, 3, 4), (1, 5), (2, 1, 3, 2)]],
    *[
        Case("concat", [a, b], {"dim": d}, lambda x, y, d=d: ref_concat(x, y, d), label=f"{list(a)}{list(b)}d{d}")
        for a, b, d in [
            ((5,), (3,), 0),
            ((2, 3), (2, 4), 1),
            ((2, 3), (5, 3), 0),
            ((2, 3, 4), (2, 1, 4), -2),
            ((2, 3, 4), (2, 3, 2), -1),
        ]
    ],
    *[
        Case("rms_norm", [s], {"eps": eps}, lambda x, eps=eps: ref_rms_norm(x, eps), label=f"{list(s)}eps{eps}")
        for s, eps in [((3, 8), Fraction(1, 10**6)), ((2, 3, 5), Fraction(1, 10)), ((6,), 1e-5), ((2, 4), 0)]
    ],
    *[
        Case(
            "concat_matmul",
            [a, b, c, d],
            {},
            lambda w, x, y, z: ref_matmul(ref_concat(w, x, -1), ref_concat(y, z, -2)),
        )
        for a, b, c, d in [
            ((3, 2), (3, 4), (2, 5), (4, 5)),
            ((2, 3, 2), (2, 3, 1), (2, 2, 4), (2, 1, 4)),
            ((3, 2), (3, 2), (2, 5), (2, 5)),
        ]
    ],
]

# Accumulators only exist inside a for-loop; they are tested below with their own graphs.
COVERED = {c.op for c in CASES} | set(ACCUMULATORS)


def _kernel_cases() -> list[Case]:
    return [c for c in CASES if OPS[c.op].allowed_at("kernel")]


def _block_cases() -> list[Case]:
    return [c for c in CASES if OPS[c.op].allowed_at("block")]


def _batched_block_cases() -> list[Case]:
    # Each input gets a leading batch dim split over the grid, so the ranks must stay <= 4
    # and a matmul must keep its batch dims equal (absent on one side would no longer hold).
    return [
        c
        for c in _block_cases()
        if max(map(len, c.shapes)) < 4 and (OPS[c.op].kind != "matmul" or len(set(map(len, c.shapes))) == 1)
    ]


def _seed(case: Case) -> int:
    return sum(map(ord, case.id))


# ---------------------------------------------------------------------------------------
# The registry itself.

# Fields that identify an op rather than give it a rule in some interpreter.
IDENTITY_FIELDS = {"name", "level", "arity", "kind", "attrs"}
RULE_SLOTS = [f.name for f in dataclasses.fields(OpDef) if f.name not in IDENTITY_FIELDS]


def test_rule_slots_found() -> None:
    # The generic slot test below is only meaningful if it sees the rule slots.
    assert {"shape", "numpy"} <= set(RULE_SLOTS)
    assert len(RULE_SLOTS) >= 6


@pytest.mark.parametrize("slot", RULE_SLOTS)
def test_no_op_lacks_a_rule_others_have(slot: str) -> None:
    """If any non-structural op fills a rule slot, every non-structural op must (an
    interpreter may not silently lack a rule for one op). `customized` is structural: its
    semantics is its block graph."""
    ops = [o for o in OPS.values() if o.kind != "graph"]
    filled = [o.name for o in ops if getattr(o, slot) is not None]
    if filled:
        missing = [o.name for o in ops if getattr(o, slot) is None]
        assert not missing, f"slot {slot!r} is filled for {filled} but missing for {missing}"


def test_shape_and_numpy_rules_exist() -> None:
    for o in OPS.values():
        if o.kind != "graph":
            assert callable(o.shape) and callable(o.numpy), o.name


def test_every_op_has_a_case() -> None:
    assert set(OPS) - STRUCTURAL == COVERED, "an op without a reference case in tests/test_ops.py"
    assert STRUCTURAL == {"customized"}


def test_rows_are_consistent() -> None:
    for name, o in OPS.items():
        assert o.name == name
        assert o.level in ("kernel", "block", "both")
        assert o.arity == -1 or o.arity >= 1
        assert len({a.name for a in o.attrs}) == len(o.attrs)
        for a in o.attrs:
            assert a.kind in ("dim", "int", "rational", "choice", "graph")
            if a.kind == "choice":
                assert a.default in a.choices
    assert UNARY | BINARY == ELEMENTWISE and not UNARY & BINARY
    assert {"exp", "silu", "gelu", "mul_scalar", "pow_scalar"} <= UNARY
    assert {"add", "sub", "mul", "div"} == BINARY
    assert {"accum_sum", "accum_sum_lastdim"} == ACCUMULATORS
    assert all(OPS[a].level == "block" for a in ACCUMULATORS)
    assert OPS["concat_matmul"].level == "block" and OPS["customized"].level == "kernel"


def test_every_op_has_a_dsl_method_at_its_levels() -> None:
    for name, o in OPS.items():
        assert hasattr(mp.KernelGraph, name) == o.allowed_at("kernel"), name
        assert hasattr(mp.BlockGraph, name) == o.allowed_at("block"), name


# ---------------------------------------------------------------------------------------
# Kernel level: a one-op kernel graph through run_float.


def _one_op_kernel(case: Case, dtype: str = "float32") -> mp.KernelGraph:
    g = mp.new_kernel_graph()
    xs = [g.new_input(s, dtype) for s in case.shapes]
    y = g.add_op(case.op, xs, **case.attrs)
    g.mark_output(y)
    return g


@pytest.mark.parametrize("case", _kernel_cases(), ids=lambda c: c.id)
def test_kernel_op_against_reference(case: Case) -> None:
    rng = np.random.default_rng(_seed(case))
    xs = case.inputs(rng)
    want = case.ref(*xs)
    g = _one_op_kernel(case)
    op = OPS[case.op]
    attrs = normalize_attrs(op, dict(case.attrs), list(case.shapes))
    assert op.shape is not None
    assert op.shape(list(case.shapes), attrs) == want.shape, "shape rule"
    assert g.types[g.outputs[0]].dims == want.shape
    (got,) = run_float(g, xs)
    assert got.dtype == np.float64 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    (got32,) = run_float(g, xs, mode="float32")
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, want, rtol=2e-5, atol=2e-5)


def test_rational_attributes_are_stored_exactly() -> None:
    g = mp.new_kernel_graph()
    x = g.new_input([2], "float32")
    for c, want in [
        ("1/3", Fraction(1, 3)),
        (0.1, Fraction(3602879701896397, 36028797018963968)),  # the float, not 1/10
        (Fraction(1) + Fraction(1, 2**60), Fraction(2**60 + 1, 2**60)),
        (-3, Fraction(-3)),
        ("2.5", Fraction(5, 2)),
    ]:
        y = g.mul_scalar(x, c)
        assert g.nodes[-1].attrs["c"] == want and isinstance(g.nodes[-1].attrs["c"], Fraction)
    g.mark_output(y)


def test_mul_scalar_one_third_is_not_a_rounded_constant() -> None:
    # 3 * (x * 1/3) in float64 recovers x to within an ulp or two; an attribute stored as a
    # low-precision decimal would not.
    g = mp.new_kernel_graph()
    x = g.new_input([64], "float32")
    g.mark_output(g.mul_scalar(g.mul_scalar(x, Fraction(1, 3)), 3))
    xs = np.random.default_rng(1).uniform(-1, 1, 64)
    (got,) = run_float(g, [xs])
    np.testing.assert_allclose(got, xs, rtol=4e-16, atol=0)


# ---------------------------------------------------------------------------------------
# Block level: the op inside a customized kernel. Every input gets a leading batch dim of 2
# split over grid x, so each block sees different data; the output tiles are laid side by
# side along that dim again.

BATCH = 2


def _shift_dims(case: Case) -> dict[str, Any]:
    """Dim attributes move by one for the leading batch dim (negative ones stay)."""
    kinds = {a.name: a.kind for a in OPS[case.op].attrs}
    return {k: (v + 1 if kinds[k] == "dim" and v >= 0 else v) for k, v in case.attrs.items()}


@pytest.mark.parametrize("case", _batched_block_cases(), ids=lambda c: c.id)
def test_block_op_against_reference(case: Case) -> None:
    rng = np.random.default_rng(_seed(case) + 1)
    xs = case.inputs(rng, lead=(BATCH,))
    want = np.stack([case.ref(*[x[b] for x in xs]) for b in range(BATCH)])
    g = mp.new_kernel_graph()
    ins = [g.new_input(x.shape, "float32") for x in xs]
    bg = mp.new_block_graph([BATCH, 1, 1], 1)
    tiles = [bg.new_input(t, [0, -1, -1], -1) for t in ins]
    y = bg.add_op(case.op, tiles, **_shift_dims(case))
    assert y.dims == (1,) + want.shape[1:]
    bg.new_output(y, [0, -1, -1])
    (out,) = g.customized(ins, bg)
    assert out.dims == want.shape
    g.mark_output(out)
    (got,) = run_float(g, xs)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("case", _block_cases(), ids=lambda c: c.id)
def test_block_op_on_replicated_inputs(case: Case) -> None:
    # Replicated (imap -1) inputs: every block of a 3-block grid computes the same tile
    # from whole tensors; the output lays the three copies side by side along dim 0.
    rng = np.random.default_rng(_seed(case) + 2)
    xs = case.inputs(rng)
    ref = case.ref(*xs)
    g = mp.new_kernel_graph()
    ins = [g.new_input(x.shape, "float32") for x in xs]
    bg = mp.new_block_graph([1, 3, 1], 1)
    y = bg.add_op(case.op, [bg.new_input(t, [-1, -1, -1]) for t in ins], **case.attrs)
    bg.new_output(y, [-1, 0, -1])
    (out,) = g.customized(ins, bg)
    g.mark_output(out)
    (got,) = run_float(g, xs)
    np.testing.assert_allclose(got, np.concatenate([ref] * 3, axis=0), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------
# Accumulators: F iterations over a loop dim, grid over a batch dim.


@pytest.mark.parametrize(
    "shape, loop_dim, F",
    [((2, 4, 6), 2, 3), ((2, 6, 4), 1, 3), ((2, 4, 8), 2, 4), ((2, 4, 6), 2, 1), ((2, 5, 2), 2, 2)],
)
def test_accumulators(shape: tuple[int, ...], loop_dim: int, F: int) -> None:
    x = np.random.default_rng(F + loop_dim).uniform(-1, 1, shape)
    n = shape[loop_dim]
    chunk = n // F
    g = mp.new_kernel_graph()
    t = g.new_input(shape, "float32")
    bg = mp.new_block_graph([shape[0], 1, 1], F)
    tile = bg.new_input(t, [0, -1, -1], loop_dim)
    tile_dims = list(shape)
    tile_dims[0], tile_dims[loop_dim] = 1, chunk
    assert tile.dims == tuple(tile_dims)
    s = bg.accum_sum(tile)
    s_last = bg.accum_sum_lastdim(tile)
    assert s.dims == tile.dims and s_last.dims == tile.dims[:-1] + (1,)
    bg.new_output(s, [0, -1, -1])
    bg.new_output(s_last, [0, -1, -1])
    outs = g.customized([t], bg)
    for o in outs:
        g.mark_output(o)
    got_sum, got_last = run_float(g, [x])

    # accum_sum: out[..., r, ...] = sum_i x[..., i*chunk + r, ...] along the loop dim;
    # accum_sum_lastdim also sums the last dim, which becomes 1.
    assert got_sum.shape == (shape[0],) + tuple(tile_dims[1:])
    assert got_last.shape == (shape[0],) + tuple(tile_dims[1:-1]) + (1,)
    for b in range(shape[0]):
        acc = np.zeros(tuple(tile_dims[1:]))
        for i in range(F):
            idx = [slice(None)] * (len(shape) - 1)
            idx[loop_dim - 1] = slice(i * chunk, (i + 1) * chunk)
            acc = acc + x[b][tuple(idx)]
        np.testing.assert_allclose(got_sum[b], acc, rtol=1e-12)
        for r in range(acc.shape[0]):
            assert got_last[b, r, 0] == pytest.approx(math.fsum(acc[r].tolist()), rel=1e-12)
