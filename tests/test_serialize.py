"""JSON schema v1: random small kernel graphs (customized ops with random valid block graphs
included) round-trip through dumps/loads with the same hash and the same float64 outputs;
rationals stay exact; every op of the table round-trips."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mirage_py as mp
from mirage_py.ir import OPS, GraphError, canonical, dumps, graph_hash, load, loads, run_float, save
from mirage_py.ir.dtypes import DTYPES
from mirage_py.ir.graph import Graph, Tensor
from mirage_py.ir.serialize import SCHEMA

SETTINGS = settings(
    derandomize=True,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)

UNARY = [
    "exp",
    "square",
    "sqrt",
    "sigmoid",
    "silu",
    "gelu",
    "relu",
    "neg",
    "reciprocal",
    "mul_scalar",
    "add_scalar",
    "pow_scalar",
]
BINARY = ["add", "sub", "mul", "div"]
RATIONALS = st.one_of(
    st.sampled_from([Fraction(1, 3), Fraction(1) + Fraction(1, 2**60), Fraction(-7, 2), 0, 2, -1, Fraction(1, 2), 0.1]),
    st.fractions(min_value=-10, max_value=10, max_denominator=10**9),
    st.integers(-4, 4),
    st.floats(-8, 8, allow_nan=False),
)
# Names exercise JSON escaping and the list-compacting pretty printer.
NAMES = st.text(alphabet='ab[], 1-"\\é\n', min_size=1, max_size=6)

# ---------------------------------------------------------------------------------------
# Random graphs. Each op is tried through the DSL; one the rules reject is skipped, so every
# graph drawn is valid by construction.


def _attrs(draw: Any, op: str, x: Tensor) -> dict[str, Any]:
    rank = len(x.dims)
    if op in ("mul_scalar", "add_scalar", "pow_scalar"):
        return {"c": draw(RATIONALS)}
    if op == "gelu":
        return {"approximate": draw(st.sampled_from(["none", "tanh"]))}
    if op == "reduce_sum":
        d = draw(st.integers(-rank, rank - 1))
        n = x.dims[d]
        return {"dim": d, "size": draw(st.sampled_from([s for s in range(1, n + 1) if n % s == 0]))}
    if op == "rms_norm":
        return {"eps": draw(st.sampled_from([Fraction(1, 10**6), 1e-5, 0]))}
    return {}


def _partner(draw: Any, op: str, x: Tensor, pool: list[Tensor]) -> Tensor | None:
    """A second argument that has a chance of fitting `x` (the DSL still decides)."""
    fits = [
        t
        for t in pool
        if (op == "matmul" and len(t.dims) >= 2 and len(x.dims) >= 2 and t.dims[-2] == x.dims[-1])
        or (op == "concat" and len(t.dims) == len(x.dims))
        or (op in BINARY and (t.dims == x.dims or len(t.dims) != len(x.dims) or 1 in t.dims))
    ]
    return draw(st.sampled_from(fits)) if fits else None


def _random_op(draw: Any, g: Graph, pool: list[Tensor], ops: list[str]) -> Tensor | None:
    # Draw a family first, then the op: hypothesis favours early list entries, and the
    # structural ops (matmul, reduce_sum, ...) must not be starved by the many unary ones.
    families = [[o] for o in ops if o not in UNARY + BINARY] + [
        [o for o in ops if o in UNARY],
        [o for o in ops if o in BINARY],
    ]
    op = draw(st.sampled_from(draw(st.sampled_from([f for f in families if f]))))
    x = draw(st.sampled_from(pool))
    try:
        if op in UNARY or op in ("reduce_sum", "transpose", "rms_norm", "accum_sum", "accum_sum_lastdim"):
            return g.add_op(op, [x], **_attrs(draw, op, x))
        if op == "concat_matmul":
            ins = [draw(st.sampled_from(pool)) for _ in range(3)]
            return g.add_op(op, [x, *ins])
        y = _partner(draw, op, x, pool)
        if y is None:
            return None
        if op == "concat":
            return g.concat(x, y, draw(st.integers(0, len(x.dims) - 1)))
        return g.add_op(op, [x, y])
    except GraphError:
        return None


BLOCK_OPS = UNARY + BINARY + ["matmul", "reduce_sum", "transpose", "concat", "rms_norm", "concat_matmul"]


def _random_map(draw: Any, grid: tuple[int, ...], rank: int, prob_unit: bool) -> list[int]:
    """For each grid dim, a distinct tensor dim or -1; grid dims > 1 are mapped when
    possible (an omap must map them), dims of size 1 sometimes (canonical form drops them)."""
    free = list(draw(st.permutations(list(range(rank)))))
    m = []
    for size in grid:
        want = (size > 1 and (prob_unit or draw(st.booleans()))) or (size == 1 and draw(st.booleans()))
        m.append(free.pop() if want and free else -1)
    return m


def _random_block(draw: Any, ins: list[Tensor]) -> mp.BlockGraph | None:
    grid = tuple(draw(st.sampled_from([2, 1])) for _ in range(3))
    F = draw(st.sampled_from([2, 1, 4]))
    bg = mp.new_block_graph(grid, F, block_dims=draw(st.sampled_from([(128, 1, 1), (64, 2, 1), (32, 4, 2)])))
    tiles = []
    for t in ins:
        imap = _random_map(draw, grid, len(t.dims), prob_unit=False)
        fdim = draw(st.integers(-1, len(t.dims) - 1))
        try:
            tiles.append(bg.new_input(t, imap, fdim))
        except GraphError:
            tiles.append(bg.new_input(t, [-1, -1, -1], -1))  # replicated: always valid
    pool = list(tiles)
    for _ in range(draw(st.integers(1, 5))):
        y = _random_op(draw, bg, pool, BLOCK_OPS + ["accum_sum", "accum_sum_lastdim"])
        if y is not None:
            pool.append(y)
    looped = [t for t in pool if bg.stage[t.id] == "loop"]
    if looped and (draw(st.booleans()) or all(bg.stage[t.id] == "loop" for t in pool)):
        acc = bg.accum_sum if draw(st.booleans()) else bg.accum_sum_lastdim
        y = acc(draw(st.sampled_from(looped)))
        pool.append(y)
        if draw(st.booleans()):
            z = _random_op(
                draw, bg, [y] + [t for t in pool if bg.stage[t.id] != "loop"], UNARY + BINARY + ["reduce_sum"]
            )
            if z is not None:
                pool.append(z)
    done = [t for t in pool if bg.stage[t.id] != "loop"]
    for t in draw(st.lists(st.sampled_from(done), min_size=1, max_size=2)) if done else []:
        try:
            bg.new_output(t, _random_map(draw, grid, len(t.dims), prob_unit=True))
        except GraphError:
            pass
    return bg if bg.outputs else None


@st.composite
def kernel_graphs(draw: Any, customized: bool = True) -> mp.KernelGraph:
    g = mp.new_kernel_graph()
    dtype = draw(st.sampled_from(DTYPES))
    pool: list[Tensor] = []
    for k in range(draw(st.integers(1, 3))):
        dims = draw(st.lists(st.sampled_from([4, 2, 8, 1]), min_size=1, max_size=3))
        name = draw(NAMES)
        pool.append(g.new_input(dims, dtype, name if name not in g.input_names else f"x{k}"))
    kernel_ops = UNARY + BINARY + ["matmul", "reduce_sum", "transpose", "concat", "rms_norm"]
    made: list[Tensor] = []
    for _ in range(draw(st.integers(1, 5))):
        if customized and draw(st.integers(0, 2)) == 0:
            ins = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
            bg = _random_block(draw, ins)
            ys = g.customized(ins, bg) if bg is not None else []
        else:
            y = _random_op(draw, g, pool, kernel_ops)
            ys = [y] if y is not None else []
        pool += ys
        made += ys
    outs = draw(st.lists(st.sampled_from(made or pool), min_size=1, max_size=3))
    for k, t in enumerate(outs):
        g.mark_output(t, f"y{k}")
    return g


def _inputs(g: mp.KernelGraph, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-2, 2, g.types[t].dims) for t in g.inputs]


def _all_ops(g: mp.KernelGraph) -> set[str]:
    ops = set()
    for n in g.nodes:
        ops.add(n.op)
        if n.op == "customized":
            ops |= {m.op for m in n.attrs["block_graph"].nodes}
    return ops


# ---------------------------------------------------------------------------------------


@SETTINGS
@given(kernel_graphs())
def test_round_trip(g: mp.KernelGraph) -> None:
    text = dumps(g)
    h = loads(text)
    assert graph_hash(h) == graph_hash(g)
    assert dumps(h) == text  # the text form is a fixed point
    assert h.input_names == g.input_names and h.output_names == g.output_names
    assert [h.types[t] for t in h.inputs] == [g.types[t] for t in g.inputs]
    assert [h.types[t] for t in h.outputs] == [g.types[t] for t in g.outputs]
    xs = _inputs(g)
    for a, b in zip(run_float(g, xs), run_float(h, xs)):
        np.testing.assert_array_equal(a, b)  # same ops in the same order: bit for bit


@SETTINGS
@given(kernel_graphs())
def test_canonical_form_keeps_hash_and_values(g: mp.KernelGraph) -> None:
    c = canonical(g)
    assert graph_hash(c) == graph_hash(g)
    assert dumps(canonical(c)) == dumps(c)  # idempotent
    xs = _inputs(g, seed=1)
    for a, b in zip(run_float(g, xs), run_float(c, xs)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_generator_reaches_block_graphs_with_loops() -> None:
    # The round-trip property is only as strong as the graphs drawn: make sure they include
    # customized kernels with for-loops, accumulators and grids.
    seen: set[str] = set()
    loops = grids = 0

    @settings(derandomize=True, max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(kernel_graphs())
    def collect(g: mp.KernelGraph) -> None:
        nonlocal loops, grids
        seen.update(_all_ops(g))
        for n in g.nodes:
            if n.op == "customized":
                bg = n.attrs["block_graph"]
                loops += bg.forloop_range > 1 and any(m.op.startswith("accum") for m in bg.nodes)
                grids += max(bg.grid_dims) > 1

    collect()
    assert {"customized", "accum_sum", "accum_sum_lastdim", "matmul", "reduce_sum"} <= seen
    assert loops >= 3 and grids >= 3


@SETTINGS
@given(st.one_of(st.fractions(), st.floats(allow_nan=False, allow_infinity=False), st.integers(-(10**30), 10**30)))
def test_rationals_stay_exact(c: Any) -> None:
    g = mp.new_kernel_graph()
    x = g.new_input([2], "float32")
    g.mark_output(g.pow_scalar(g.add_scalar(x, c), c))
    h = loads(dumps(g))
    assert [n.attrs["c"] for n in h.nodes] == [Fraction(c), Fraction(c)]
    assert graph_hash(h) == graph_hash(g)


def test_rational_spellings_in_the_file() -> None:
    g = mp.new_kernel_graph()
    x = g.new_input([2], "float32", "x")
    a = g.mul_scalar(x, Fraction(1, 3))
    b = g.add_scalar(a, Fraction(1) + Fraction(1, 2**60))
    c = g.mul_scalar(b, 0.1)
    g.mark_output(g.pow_scalar(c, -2), "y")
    d = json.loads(dumps(g))
    cs = [op["attrs"]["c"] for op in d["ops"]]
    assert cs == ["1/3", f"{2**60 + 1}/{2**60}", "3602879701896397/36028797018963968", "-2"]
    h = loads(dumps(g))
    assert [n.attrs["c"] for n in h.nodes] == [
        Fraction(1, 3),
        Fraction(2**60 + 1, 2**60),
        Fraction(0.1),
        Fraction(-2),
    ]
    # Different rationals that round to the same float hash differently.
    g2 = mp.new_kernel_graph()
    g2.mark_output(g2.add_scalar(g2.new_input([2], "float32", "x"), 1), "y")
    g3 = mp.new_kernel_graph()
    g3.mark_output(g3.add_scalar(g3.new_input([2], "float32", "x"), Fraction(1) + Fraction(1, 2**60)), "y")
    assert graph_hash(g2) != graph_hash(g3)
    # A file may also write a rational as a JSON number or a decimal string.
    d2 = json.loads(dumps(g3))
    for spelling, want in [
        (0.5, Fraction(1, 2)),
        ("0.25", Fraction(1, 4)),
        (3, Fraction(3)),
        ("-5/10", Fraction(-1, 2)),
    ]:
        d2["ops"][0]["attrs"]["c"] = spelling
        assert loads(json.dumps(d2)).nodes[0].attrs["c"] == want


def every_op_graph() -> mp.KernelGraph:
    """One graph holding every op of the table (kernel and block level)."""
    g = mp.new_kernel_graph()
    x = g.new_input([4, 8], "bfloat16", "x")
    w = g.new_input([8, 4], "bfloat16", "w")
    y = g.matmul(x, w)
    for op in UNARY:
        y = g.add_op(op, [y], **({"c": Fraction(3, 7)} if op.endswith("_scalar") else {}))
    y = g.gelu(y, "tanh")
    for op in BINARY:
        y = g.add_op(op, [y, g.reduce_sum(g.transpose(w), 1, 4)]) if op == "add" else g.add_op(op, [y, y])
    y = g.rms_norm(g.reduce_sum(g.concat(y, y, 1), 1, 2), 1e-6)
    bg = mp.new_block_graph([2, 1, 1], 2, block_dims=(64, 1, 1))
    tx = bg.new_input(x, [0, -1, -1], 1)
    tw = bg.new_input(w, [-1, -1, -1], 0)
    ty = bg.new_input(y, [0, -1, -1], -1)
    t = tx
    for op in UNARY:
        t = bg.add_op(op, [t], **({"c": Fraction(-1, 3)} if op.endswith("_scalar") else {}))
    for op in BINARY:
        t = bg.add_op(op, [t, tx])
    m = bg.accum_sum(bg.concat_matmul(t, tx, tw, tw))
    s = bg.accum_sum_lastdim(bg.reduce_sum(bg.matmul(bg.transpose(tx), tx), 0))
    out = bg.rms_norm(bg.concat(bg.mul(m, s), ty, 1), Fraction(1, 1000))
    bg.new_output(out, [0, -1, -1])
    (z,) = g.customized([x, w, y], bg)
    g.mark_output(z, "z")
    g.mark_output(y, "y")
    return g


def test_every_op_round_trips(tmp_path: Path) -> None:
    g = every_op_graph()
    assert _all_ops(g) == set(OPS)
    p = tmp_path / "g.json"
    save(g, p)
    h = load(p)
    assert json.loads(p.read_text())["schema"] == SCHEMA
    assert dumps(h) == dumps(g) and graph_hash(h) == graph_hash(g)
    assert h.nodes[-1].attrs["block_graph"].block_dims == (64, 1, 1)  # kept, though not hashed
    xs = [np.random.default_rng(2).uniform(0.1, 1.0, g.types[t].dims) for t in g.inputs]
    for mode in ("float64", "float32", "dtype"):
        for a, b in zip(run_float(g, xs, mode), run_float(h, xs, mode)):  # type: ignore[arg-type]
            np.testing.assert_array_equal(a, b)


def test_file_uses_names_not_numbers() -> None:
    d = json.loads(dumps(every_op_graph()))
    assert d["schema"] == SCHEMA
    assert all(isinstance(op["op"], str) and op["op"] in OPS for op in d["ops"])
    assert {i["dtype"] for i in d["inputs"]} == {"bfloat16"}
    bgd = d["ops"][-1]["attrs"]["block_graph"]
    assert {op["op"] for op in bgd["ops"]} >= {"concat_matmul", "accum_sum", "accum_sum_lastdim"}
    assert bgd["grid_dims"] == [2, 1, 1] and bgd["forloop_range"] == 2
    assert [(b["imap"], b["forloop_dim"]) for b in bgd["inputs"]] == [
        ([0, -1, -1], 1),
        ([-1, -1, -1], 0),
        ([0, -1, -1], -1),
    ]
    gelu = [op for op in d["ops"] if op["op"] == "gelu"]
    assert [op["attrs"]["approximate"] for op in gelu] == ["none", "tanh"]


def test_names_survive_pretty_printing() -> None:
    # The pretty printer compacts lists of numbers; it must not touch text inside strings.
    g = mp.new_kernel_graph()
    x = g.new_input([2, 3], "float16", 'in[1,  2]\n"[3,\t4]"')
    g.mark_output(g.exp(x), "out [ 5 ]")
    h = loads(dumps(g))
    assert h.input_names == ['in[1,  2]\n"[3,\t4]"'] and h.output_names == ["out [ 5 ]"]
    assert '"dims": [2, 3]' in dumps(g)
