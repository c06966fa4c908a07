"""Canonical form and graph_hash: invariant under what does not affect results (op order,
block_dims, F = 1 accumulators, size-1 grid dims, dead and duplicate ops), sensitive to
everything that does, and stable across processes."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serialize import kernel_graphs  # the random-graph strategy

import mirage_py as mp
from mirage_py.ir import canonical, dumps, graph_hash, loads, run_float
from mirage_py.ir.graph import BlockGraph, KernelGraph, Node, TensorType

# ---------------------------------------------------------------------------------------
# A base graph and its variants. Every keyword changes one thing.


def base(
    *,
    order: str = "ab",
    block_dims: tuple[int, int, int] = (128, 1, 1),
    c: Any = Fraction(1, 3),
    approximate: str = "none",
    imap_w: tuple[int, int, int] = (1, -1, -1),
    fdim_x: int = 1,
    grid: tuple[int, int, int] = (2, 1, 1),
    F: int = 4,
    omap: tuple[int, int, int] = (1, -1, -1),
    n: int = 8,
    dtype: str = "float32",
    names: tuple[str, str, str] = ("X", "W", "V"),
    out_order: str = "yz",
    reduce_dim: int = 1,
    reduce_size: int = 1,
    accum: str = "accum_sum",
    op2: str = "sigmoid",
) -> KernelGraph:
    g = mp.new_kernel_graph()
    x = g.new_input([4, 16], dtype, names[0])
    w = g.new_input([16, n], dtype, names[1])
    v = g.new_input([4, n], dtype, names[2])
    bg = mp.new_block_graph(grid, F, block_dims)
    tx = bg.new_input(x, [-1, -1, -1], fdim_x)
    tw = bg.new_input(w, imap_w, 0)
    mm = bg.add_op(accum, [bg.matmul(tx, tw)])
    bg.new_output(bg.mul_scalar(mm, c), omap)
    (y,) = g.customized([x, w], bg)
    # Two independent branches, built in either order.
    branches: dict[str, Callable[[], Any]] = {
        "a": lambda: g.gelu(v, approximate),
        "b": lambda: g.add_op(op2, [y]),
    }
    made = {k: branches[k]() for k in order}
    z = g.add(made["a"], made["b"]) if made["a"].dims == made["b"].dims else made["b"]
    r = g.reduce_sum(z, reduce_dim, reduce_size)
    outs = {"y": (y, "Y"), "z": (r, "Z")}
    for k in out_order:
        g.mark_output(*outs[k])
    return g


def test_base_graph_runs() -> None:
    g = base()
    rng = np.random.default_rng(0)
    x, w, v = (rng.standard_normal(g.types[t].dims) for t in g.inputs)
    y, z = run_float(g, [x, w, v])
    np.testing.assert_allclose(y, x @ w / 3, rtol=1e-12)
    assert z.shape == (4, 1)


def test_op_order_does_not_change_the_hash() -> None:
    assert graph_hash(base(order="ab")) == graph_hash(base(order="ba"))


def test_block_op_order_and_tensor_ids_do_not_change_the_hash() -> None:
    def build(swap: bool) -> KernelGraph:
        g = mp.new_kernel_graph()
        a = g.new_input([4, 8], "float16", "a")
        if swap:
            ea = g.exp(a)  # an op before the second input: tensor ids shift
        b = g.new_input([4, 8], "float16", "b")
        if not swap:
            ea = g.exp(a)
        bg = mp.new_block_graph([2], 2)
        ta, tb = bg.new_input(a, [0, -1, -1], 1), bg.new_input(b, [0, -1, -1], 1)
        if swap:
            s2 = bg.accum_sum_lastdim(bg.square(tb))
            s1 = bg.accum_sum(bg.exp(ta))
        else:
            s1 = bg.accum_sum(bg.exp(ta))
            s2 = bg.accum_sum_lastdim(bg.square(tb))
        bg.new_output(bg.div(s1, s2), [0, -1, -1])
        bg.new_output(s2, [0, -1, -1])
        outs = g.customized([a, b], bg)
        g.mark_output(g.mul(outs[1], ea), "o")
        g.mark_output(outs[0], "s")
        return g

    g1, g2 = build(False), build(True)
    assert [n.outputs for n in g1.nodes] != [n.outputs for n in g2.nodes]
    assert graph_hash(g1) == graph_hash(g2)
    assert dumps(canonical(g1)) == dumps(canonical(g2))


def test_block_dims_do_not_change_the_hash() -> None:
    a, b = base(block_dims=(128, 1, 1)), base(block_dims=(32, 4, 1))
    assert dumps(a) != dumps(b)  # stored ...
    assert graph_hash(a) == graph_hash(b)  # ... but not hashed


def test_dead_and_duplicate_ops_do_not_change_the_hash() -> None:
    def build(extra: bool) -> KernelGraph:
        g = mp.new_kernel_graph()
        x = g.new_input([4, 4], "float32", "x")
        e1 = g.exp(x)
        e2 = g.exp(x) if extra else e1
        if extra:
            g.sqrt(g.neg(x))  # dead
        g.mark_output(g.mul(e1, e2), "y")
        return g

    assert graph_hash(build(True)) == graph_hash(build(False))


def _f1_block(with_accum: str | None, post: bool = True) -> KernelGraph:
    g = mp.new_kernel_graph()
    x = g.new_input([4, 8], "float32", "x")
    bg = mp.new_block_graph([2], 1)
    t = bg.new_input(x, [0, -1, -1])
    s = bg.square(t)
    if with_accum == "accum_sum":
        s = bg.accum_sum(s)
    if with_accum in ("accum_sum_lastdim", "reduce_sum"):
        s = bg.accum_sum_lastdim(s) if with_accum == "accum_sum_lastdim" else bg.reduce_sum(s, 1)
    out = bg.add(bg.sqrt(s), t) if post else s
    bg.new_output(out, [0, -1, -1])
    (y,) = g.customized([x], bg)
    g.mark_output(y, "y")
    return g


def test_f1_accumulators_are_the_identity() -> None:
    assert graph_hash(_f1_block("accum_sum")) == graph_hash(_f1_block(None))
    assert graph_hash(_f1_block("accum_sum", post=False)) == graph_hash(_f1_block(None, post=False))
    assert graph_hash(_f1_block("accum_sum_lastdim")) == graph_hash(_f1_block("reduce_sum"))
    assert graph_hash(_f1_block("accum_sum_lastdim")) != graph_hash(_f1_block(None))
    for a, b in [("accum_sum", None), ("accum_sum_lastdim", "reduce_sum")]:
        x = np.random.default_rng(0).uniform(-1, 1, (4, 8))
        np.testing.assert_allclose(run_float(_f1_block(a), [x])[0], run_float(_f1_block(b), [x])[0], rtol=1e-14)
    # An F = 1 accumulator used next to its own input: aliasing keeps the graph valid.
    g = mp.new_kernel_graph()
    x = g.new_input([4, 8], "float32", "x")
    bg = mp.new_block_graph([1], 1)
    t = bg.new_input(x, [-1, -1, -1], 1)
    bg.new_output(bg.add(bg.accum_sum(bg.exp(t)), bg.exp(t)), [-1, -1, -1])
    g.mark_output(g.customized([x], bg)[0], "y")
    h = mp.new_kernel_graph()
    xh = h.new_input([4, 8], "float32", "x")
    bh = mp.new_block_graph([1], 1)
    e = bh.exp(bh.new_input(xh, [-1, -1, -1]))
    bh.new_output(bh.add(e, e), [-1, -1, -1])
    h.mark_output(h.customized([xh], bh)[0], "y")
    assert graph_hash(g) == graph_hash(h)


def test_accumulators_stay_when_f_is_above_one() -> None:
    assert graph_hash(base(accum="accum_sum")) != graph_hash(base(accum="accum_sum_lastdim"))
    assert graph_hash(base(F=4)) != graph_hash(base(F=2))


def test_size_one_grid_dims_normalize() -> None:
    def build(imap: list[int], omap: list[int], fdim: int = -1, grid: tuple[int, ...] = (2, 1, 1)) -> KernelGraph:
        g = mp.new_kernel_graph()
        x = g.new_input([4, 6, 2], "float32", "x")
        bg = mp.new_block_graph(grid, 1)
        bg.new_output(bg.exp(bg.new_input(x, imap, fdim)), omap)
        g.mark_output(g.customized([x], bg)[0], "y")
        return g

    plain = graph_hash(build([0, -1, -1], [0, -1, -1]))
    assert graph_hash(build([0, 1, -1], [0, -1, -1])) == plain
    assert graph_hash(build([0, -1, 2], [0, 1, 2])) == plain
    assert graph_hash(build([0, 1, 2], [0, 2, 1])) == plain
    assert graph_hash(build([0, -1, -1], [0, -1, -1], fdim=1)) == plain  # F = 1: no loop dim
    assert graph_hash(build([0, -1, -1], [0, -1, -1], grid=(2,))) == plain
    # Mapping a dim of size > 1 is not a normalization.
    assert graph_hash(build([1, -1, -1], [1, -1, -1], grid=(2, 1, 1))) != plain


def test_canonical_form_is_valid_and_equivalent() -> None:
    g = base(order="ba")
    c = canonical(g)
    assert graph_hash(c) == graph_hash(g) and graph_hash(loads(dumps(c))) == graph_hash(g)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(g.types[t].dims) for t in g.inputs]
    for a, b in zip(run_float(g, xs), run_float(c, xs)):
        np.testing.assert_allclose(a, b, rtol=1e-13)


@pytest.mark.parametrize("name", ["gqa", "qknorm"])
def test_a_consumer_of_two_outputs_of_one_node_is_kept_once(name: str) -> None:
    # Flash decoding's combine kernel reads both outputs of the split-KV kernel; the
    # canonical form once listed it twice (released once per edge), and the search then
    # costed every two-kernel attention graph with a third, duplicate kernel.
    from mirage_py.benchmarks import get_benchmark

    expert = get_benchmark(name).experts("small")["flash_decoding"]
    c = canonical(expert)
    assert [n.op for n in c.nodes] == ["customized", "customized"]
    assert c.nodes[1].inputs == c.nodes[0].outputs
    assert graph_hash(canonical(c)) == graph_hash(expert)


# ---------------------------------------------------------------------------------------
# What affects results changes the hash.

VARIANTS: dict[str, dict[str, Any]] = {
    "attr-c": {"c": Fraction(1, 3) + Fraction(1, 2**60)},
    "attr-c-int": {"c": 3},
    "attr-approximate": {"approximate": "tanh"},
    "attr-reduce-dim": {"reduce_dim": 0},
    "attr-reduce-size": {"reduce_size": 2},
    "op": {"op2": "silu"},
    "accum-kind": {"accum": "accum_sum_lastdim"},
    "imap": {"imap_w": (-1, 1, -1), "grid": (1, 2, 1), "omap": (-1, 1, -1)},
    "imap-replicate": {"imap_w": (-1, -1, -1), "omap": (1, -1, -1)},
    "no-loop": {"fdim_x": -1, "F": 1},
    "forloop-range": {"F": 2},
    "grid": {"grid": (4, 1, 1)},
    "omap": {"grid": (1, 1, 1), "omap": (-1, -1, -1), "imap_w": (-1, -1, -1)},
    "dim": {"n": 4},
    "dtype": {"dtype": "float16"},
    "input-name": {"names": ("X", "W", "v")},
    "input-order": {"names": ("W", "X", "V")},
    "output-order": {"out_order": "zy"},
}


def test_every_change_changes_the_hash() -> None:
    hashes = {"base": graph_hash(base())}
    for name, kw in VARIANTS.items():
        hashes[name] = graph_hash(base(**kw))
    collisions = {h for h in hashes.values() if list(hashes.values()).count(h) > 1}
    assert not collisions, {k: v for k, v in hashes.items() if v in collisions}


def test_output_names_and_customized_input_order_matter() -> None:
    h = base()
    h.output_names[0] = "Y2"
    assert graph_hash(h) != graph_hash(base())

    def build(swap: bool) -> KernelGraph:
        g = mp.new_kernel_graph()
        x, y = g.new_input([4, 4], "float32", "x"), g.new_input([4, 4], "float32", "y")
        bg = mp.new_block_graph([1], 2)
        a, b = (
            bg.new_input(TensorType((4, 4), "float32"), [-1, -1, -1], 1),
            bg.new_input(TensorType((4, 4), "float32"), [-1, -1, -1], 1),
        )
        bg.new_output(bg.accum_sum(bg.div(a, b)), [-1, -1, -1])
        g.mark_output(g.customized([y, x] if swap else [x, y], bg)[0], "o")
        return g

    assert graph_hash(build(False)) != graph_hash(build(True))


def test_forloop_dim_changes_the_hash() -> None:
    def build(fdim: int) -> KernelGraph:
        g = mp.new_kernel_graph()
        x = g.new_input([4, 4], "float32", "x")
        bg = mp.new_block_graph([1], 2)
        bg.new_output(bg.accum_sum_lastdim(bg.exp(bg.new_input(x, [-1, -1, -1], fdim))), [-1, -1, -1])
        g.mark_output(g.customized([x], bg)[0], "o")
        return g

    assert graph_hash(build(0)) != graph_hash(build(1))


# ---------------------------------------------------------------------------------------
# Stable across processes.


def test_hash_is_stable_across_processes() -> None:
    graphs = [base(), base(order="ba", block_dims=(64, 2, 1)), _f1_block("accum_sum_lastdim")]
    texts = [dumps(g) for g in graphs]
    root = str(Path(mp.__file__).resolve().parent.parent)
    script = (
        "import sys\n"
        "from mirage_py.ir import graph_hash, loads\n"
        "for text in sys.stdin.read().split('\\x00'):\n"
        "    print(graph_hash(loads(text)))\n"
    )
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        res = subprocess.run(
            [sys.executable, "-c", script],
            input="\x00".join(texts),
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == [graph_hash(g) for g in graphs]
    assert len({graph_hash(g) for g in graphs[:2]}) == 1


# ---------------------------------------------------------------------------------------
# Random graphs rebuilt in another order (with dead and duplicate ops, other block_dims).


def _shuffled_order(nodes: list[Node], rnd: random.Random, available: set[int]) -> list[Node]:
    """A random topological order of `nodes` given the tensors already `available`."""
    left, order, have = list(nodes), [], set(available)
    while left:
        ready = [n for n in left if all(i in have for i in n.inputs)]
        n = rnd.choice(ready)
        left.remove(n)
        order.append(n)
        have.update(n.outputs)
    return order


def _rebuilt_block(bg: BlockGraph, rnd: random.Random) -> BlockGraph:
    out = mp.new_block_graph(bg.grid_dims, bg.forloop_range, block_dims=(rnd.choice([32, 64, 256]), 1, 1))
    new = {}
    for tid, bi in zip(bg.inputs, bg.block_inputs):
        new[tid] = out.new_input(TensorType(bi.dims, bi.dtype), bi.imap, bi.forloop_dim).id
    for n in _shuffled_order(bg.nodes, rnd, set(bg.inputs)):
        made = out.add_op(n.op, [new[i] for i in n.inputs], **n.attrs)
        new[n.outputs[0]] = made.id
        if rnd.random() < 0.3:  # a duplicate (same op, same inputs) or a dead op
            out.add_op(n.op, [new[i] for i in n.inputs], **n.attrs)
    for bo in bg.block_outputs:
        out.new_output(new[bo.tensor], bo.omap)
    return out


def _rebuilt(g: KernelGraph, rnd: random.Random) -> KernelGraph:
    h = mp.new_kernel_graph()
    new: dict[int, int] = {}
    pending = list(zip(g.inputs, g.input_names))

    def add_inputs(upto: int) -> None:
        # Inputs keep their order; ops may be interleaved with them (tensor ids shift).
        while pending and (len(h.inputs) <= upto):
            tid, name = pending.pop(0)
            new[tid] = h.new_input(g.types[tid].dims, g.types[tid].dtype, name).id

    order = _shuffled_order(g.nodes, rnd, set(g.inputs))
    for n in order:
        needed = max([g.inputs.index(i) for i in n.inputs if i in g.inputs], default=-1)
        add_inputs(max(needed, rnd.randrange(-1, len(g.inputs))))
        ins = [new[i] for i in n.inputs]
        if n.op == "customized":
            made = h.customized(ins, _rebuilt_block(n.attrs["block_graph"], rnd))
        else:
            made = [h.add_op(n.op, ins, **n.attrs)]
        for o, m in zip(n.outputs, made):
            new[o] = m.id
    add_inputs(len(g.inputs))
    for o, name in zip(g.outputs, g.output_names):
        h.mark_output(new[o], name)
    return h


@settings(derandomize=True, max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(kernel_graphs(), st.integers(0, 2**32 - 1))
def test_random_graph_rebuilt_in_another_order_hashes_the_same(g: KernelGraph, seed: int) -> None:
    h = _rebuilt(g, random.Random(seed))
    assert h.input_names == g.input_names
    assert graph_hash(h) == graph_hash(g)
    xs = [np.random.default_rng(seed).uniform(-1, 1, g.types[t].dims) for t in g.inputs]
    for a, b in zip(run_float(g, xs), run_float(h, xs)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_is_valid_and_canonical_is_stable(name: str) -> None:
    g = base(**VARIANTS[name])
    assert dumps(canonical(canonical(g))) == dumps(canonical(g))
