"""One-change edits of a graph, for testing verifiers: mutants that change what a graph
computes and rewrites that do not.

An `Edit` names a site (a kernel node, a node inside a customized op's block graph, or a
block graph's inputs/outputs/tiling) and a change; `Edit.apply` rebuilds the graph through
the DSL with that one change, so every validation rule applies (an edit that makes the graph
invalid raises GraphError and is skipped by `edits`). `expect` is what the edit is meant to
be; a caller that needs ground truth (a re-tiling that happens to change the result, a
mutant that happens not to) checks it in float64; a `constant` edit's change (a factor
1 + 2⁻⁶⁰) no float comparison can see, so its `twin` (the same edit by a visible factor)
stands in for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from ..ir.errors import GraphError
from ..ir.graph import BlockGraph, Graph, KernelGraph, Node, Tensor, TensorType

Expect = Literal["equivalent", "different"]
TINY = Fraction(1, 2**60)

UNARY_SWAPS = ("exp", "square", "neg", "sigmoid", "silu", "relu", "sqrt", "reciprocal")
BINARY_SWAPS = ("add", "sub", "mul", "div")


@dataclass
class Ctx:
    """What a node edit sees: the graph being built, the old graph and node, the node's new
    inputs, and the new tensors made so far (old id -> new tensor)."""

    g: Graph
    old: Graph
    node: Node
    ins: list[Tensor]
    m: dict[int, Tensor]

    def default(self) -> Tensor:
        return self.g.add_op(self.node.op, self.ins, **self.node.attrs)

    def producer(self, k: int) -> Node | None:
        tid = self.node.inputs[k]
        return next((n for n in self.old.nodes if tid in n.outputs), None)


NodeFn = Callable[[Ctx, Any], Tensor]


@dataclass(frozen=True)
class Edit:
    kind: str
    expect: Expect
    site: tuple[int, ...]  # (kernel node,) or (kernel node, block node); see BLOCK_KINDS
    param: Any = None

    def __str__(self) -> str:
        return f"{self.kind}@{'.'.join(map(str, self.site))}({self.param})"

    def apply(self, kg: KernelGraph) -> KernelGraph:
        return _rebuild(kg, self)

    def twin(self, factor: Fraction = Fraction(4, 3)) -> Edit:
        """A `constant` edit with a factor float64 can see: if the twin changes the
        result, the output depends on the constant, and so does the 1 + 2⁻⁶⁰ edit (the
        output is analytic in it). Other edits are their own twin."""
        if self.kind == "constant":
            return Edit(self.kind, self.expect, self.site, factor)
        if self.kind == "constant-inserted":
            return Edit(self.kind, self.expect, self.site, (self.param[0], factor))
        return self


# ---------------------------------------------------------------------------------------
# Node edits: kind -> (expected, applicable params for a node, how to build it).


def _same_shape(a: Tensor, b: Tensor) -> bool:
    return a.dims == b.dims


def _drop(c: Ctx, k: int) -> Tensor:
    out = c.default()
    if not _same_shape(c.ins[k], out):
        raise GraphError("edit", "dropped term has another shape")
    return c.ins[k]


def _reassoc(c: Ctx, k: int) -> Tensor:
    prod = c.producer(k)
    if prod is None or prod.op != c.node.op:
        raise GraphError("edit", "no same-op producer")
    a, b = (c.m[i] for i in prod.inputs)
    other = c.ins[1 - k]
    inner = c.g.add_op(c.node.op, [b, other] if k == 0 else [other, a])
    return c.g.add_op(c.node.op, [a, inner] if k == 0 else [inner, b])


def _distribute(c: Ctx, k: int) -> Tensor:
    prod = c.producer(k)
    if prod is None or prod.op not in ("add", "sub"):
        raise GraphError("edit", "no add/sub producer")
    a, b = (c.m[i] for i in prod.inputs)
    other = c.ins[1 - k]
    if c.node.op in ("mul_scalar",):
        parts = [c.g.add_op(c.node.op, [t], **c.node.attrs) for t in (a, b)]
    else:
        parts = [c.g.add_op(c.node.op, [t, other] if k == 0 else [other, t]) for t in (a, b)]
    return c.g.add_op(prod.op, parts)


def _split_reduce(c: Ctx, k: int) -> Tensor:
    dim, size = c.node.attrs["dim"], c.node.attrs["size"]
    n = c.ins[0].dims[dim]
    if (n // size) % k or k == 1:
        raise GraphError("edit", "split does not divide")
    inner = c.g.add_op("reduce_sum", c.ins, dim=dim, size=size * k)
    return c.g.add_op("reduce_sum", [inner], dim=dim, size=size)


def _expand(c: Ctx, _: Any) -> Tensor:
    """Spell the op with other ops (exactly equal in the field)."""
    g, x, op = c.g, c.ins[0], c.node.op
    if op == "silu":
        return g.mul(x, g.sigmoid(x))
    if op == "square":
        return g.mul(x, x)
    if op == "sub":
        return g.add(x, g.neg(c.ins[1]))
    if op == "div":
        return g.mul(x, g.reciprocal(c.ins[1]))
    if op == "sqrt":
        return g.pow_scalar(x, Fraction(1, 2))
    if op == "neg":
        return g.mul_scalar(x, -1)
    if op == "reciprocal":
        return g.pow_scalar(x, -1)
    if op == "sigmoid":
        return g.reciprocal(g.add_scalar(g.exp(g.neg(x)), 1))
    if op == "exp":
        half = g.exp(g.mul_scalar(x, Fraction(1, 2)))
        return g.mul(half, half)
    if op == "mul_scalar":
        return g.mul_scalar(g.mul_scalar(x, 2), c.node.attrs["c"] / 2)
    if op == "add_scalar":
        return g.add_scalar(g.add_scalar(x, c.node.attrs["c"] / 2), c.node.attrs["c"] / 2)
    if op == "rms_norm":
        n = x.dims[-1]
        ms = g.mul_scalar(g.reduce_sum(g.square(x), len(x.dims) - 1), Fraction(1, n))
        return g.div(x, g.sqrt(g.add_scalar(ms, c.node.attrs["eps"])))
    if op == "matmul":
        return g.transpose(g.matmul(g.transpose(c.ins[1]), g.transpose(x)))
    if op == "concat_matmul":
        assert isinstance(g, BlockGraph)
        return g.add(g.matmul(x, c.ins[2]), g.matmul(c.ins[1], c.ins[3]))
    raise GraphError("edit", f"no expansion of {op}")


EXPANDABLE = (
    "silu", "square", "sub", "div", "sqrt", "neg", "reciprocal", "sigmoid", "exp", "mul_scalar", "add_scalar",
    "rms_norm", "matmul", "concat_matmul",
)  # fmt: skip


def _wrap(c: Ctx, param: tuple[Fraction, Fraction]) -> Tensor:
    """y -> y·s·(f/s): equivalent for f = 1; f = 1 + 2⁻⁶⁰ is the `constant-inserted` mutant."""
    s, f = param
    y = c.default()
    return c.g.mul_scalar(c.g.mul_scalar(y, s), f / s)


def _rational_attr(node: Node) -> str | None:
    return next((k for k in ("c", "eps") if k in node.attrs), None)


def _nudge(c: Ctx, f: Fraction) -> Tensor:
    """The node's rational attribute times f (plus f - 1 if it is 0)."""
    key = _rational_attr(c.node)
    assert key is not None
    v = c.node.attrs[key]
    return c.g.add_op(c.node.op, c.ins, **{**c.node.attrs, key: v * f if v else f - 1})


def _rewire(c: Ctx, param: tuple[int, int]) -> Tensor:
    k, tid = param
    if tid not in c.m or c.node.inputs[k] == tid:
        raise GraphError("edit", "no such tensor")
    ins = list(c.ins)
    ins[k] = c.m[tid]
    return c.g.add_op(c.node.op, ins, **c.node.attrs)


def _attr(c: Ctx, param: tuple[str, Any]) -> Tensor:
    key, v = param
    return c.g.add_op(c.node.op, c.ins, **{**c.node.attrs, key: v})


def _op(c: Ctx, op: str) -> Tensor:
    attrs = c.node.attrs if op == c.node.op else {}
    return c.g.add_op(op, c.ins, **attrs)


def _transpose_operand(c: Ctx, k: int) -> Tensor:
    ins = list(c.ins)
    ins[k] = c.g.transpose(ins[k])
    return c.g.add_op(c.node.op, ins)


# Kinds whose parameter is a free choice (a factor), not one of an enumerated few.
FREE_PARAM = frozenset({"constant", "constant-inserted", "scale"})

NODE_KINDS: dict[str, tuple[Expect, Callable[[Node, Graph], list[Any]], NodeFn]] = {
    # -- rewrites (equivalent) ------------------------------------------------------------
    "commute": ("equivalent", lambda n, g: [None] if n.op in ("add", "mul") else [], lambda c, _: c.g.add_op(c.node.op, c.ins[::-1])),
    "reassociate": ("equivalent", lambda n, g: [0, 1] if n.op in ("add", "mul") else [], _reassoc),
    "distribute": (
        "equivalent",
        lambda n, g: [0, 1] if n.op in ("mul", "matmul") else [0] if n.op == "mul_scalar" else [],
        _distribute,
    ),
    "split-reduce": ("equivalent", lambda n, g: [2, 4] if n.op == "reduce_sum" else [], _split_reduce),
    "expand": ("equivalent", lambda n, g: [None] if n.op in EXPANDABLE else [], _expand),
    "scale": ("equivalent", lambda n, g: [(Fraction(3, 7), Fraction(1)), (Fraction(-5, 2), Fraction(1))], _wrap),
    "double-transpose": (
        "equivalent",
        lambda n, g: [None] if len(g.types[n.outputs[0]].dims) >= 2 else [],
        lambda c, _: c.g.transpose(c.g.transpose(c.default())),
    ),
    # -- mutants (different) --------------------------------------------------------------
    "swap-operands": ("different", lambda n, g: [None] if n.op in ("sub", "div", "matmul") else [], lambda c, _: c.g.add_op(c.node.op, c.ins[::-1])),
    "constant": ("different", lambda n, g: [1 + TINY] if _rational_attr(n) else [], _nudge),
    "constant-inserted": ("different", lambda n, g: [(Fraction(3, 7), 1 + TINY)], _wrap),
    "wrong-op": (
        "different",
        lambda n, g: [o for o in (UNARY_SWAPS if n.op in UNARY_SWAPS else BINARY_SWAPS if n.op in BINARY_SWAPS else ()) if o != n.op],
        _op,
    ),
    "drop-term": ("different", lambda n, g: [0, 1] if n.op in ("add", "sub", "mul", "div") else [], _drop),
    "duplicate-term": ("different", lambda n, g: [None], lambda c, _: c.g.add(c.default(), c.default())),
    "transpose-operand": ("different", lambda n, g: [0, 1] if n.op == "matmul" else [], _transpose_operand),
    "rewire": (
        "different",
        lambda n, g: [(k, t) for k in range(len(n.inputs)) for t in range(len(g.types)) if t != n.inputs[k]],
        _rewire,
    ),
    "reduce-dim": (
        "different",
        lambda n, g: [("dim", d) for d in range(len(g.types[n.inputs[0]].dims)) if d != n.attrs["dim"]] + [("size", s) for s in (1, 2, 4, 8, 64) if s != n.attrs["size"]] if n.op == "reduce_sum" else [],
        _attr,
    ),
    "accum-kind": (
        "different",
        lambda n, g: ["accum_sum_lastdim" if n.op == "accum_sum" else "accum_sum"] if n.op.startswith("accum") else [],
        _op,
    ),
}  # fmt: skip


# ---------------------------------------------------------------------------------------
# Block-structure edits: the site is (kernel node, -1) and the param says what changes.
#   imap:        (input k, new imap)          forloop-dim: (input k, new dim)
#   omap:        (output k, new omap)         retile:      (new grid dims, new forloop range)
BLOCK_KINDS: dict[str, Expect] = {
    "imap": "different",
    "forloop-dim": "different",
    "omap": "different",
    "retile": "equivalent",
}


def _maps(rank: int) -> list[tuple[int, int, int]]:
    opts = range(-1, rank)
    return [
        (x, y, z)
        for x in opts
        for y in opts
        for z in opts
        if len({d for d in (x, y, z) if d >= 0}) == len([d for d in (x, y, z) if d >= 0])
    ]


def _block_params(bg: BlockGraph) -> Iterator[tuple[str, Any]]:
    for k, bi in enumerate(bg.block_inputs):
        for m in _maps(len(bi.dims)):
            if m != bi.imap:
                yield "imap", (k, m)
        for d in range(-1, len(bi.dims)):
            if d != bi.forloop_dim:
                yield "forloop-dim", (k, d)
    for k, bo in enumerate(bg.block_outputs):
        for m in _maps(len(bg.types[bo.tensor].dims)):
            if m != bo.omap:
                yield "omap", (k, m)
    gx, gy, gz = bg.grid_dims
    f = bg.forloop_range
    for grid, fr in (
        ((gx, gy, gz), f * 2), ((gx, gy, gz), max(1, f // 2)), ((gx * 2, gy, gz), f), ((max(1, gx // 2), gy, gz), f),
        ((gx, gy * 2, gz), f), ((gx, max(1, gy // 2), gz), f), ((gx, gy, gz * 2), f), ((gx, gy, max(1, gz // 2)), f),
    ):  # fmt: skip
        if (grid, fr) != ((gx, gy, gz), f):
            yield "retile", (grid, fr)


def _rebuild_block(bg: BlockGraph, ins: list[Tensor], edit: Edit | None, ni: int) -> BlockGraph:
    here = edit is not None and edit.site[0] == ni
    grid, fr = bg.grid_dims, bg.forloop_range
    if here and edit is not None and edit.kind == "retile":
        grid, fr = edit.param
    out = BlockGraph(grid, fr, bg.block_dims)
    m: dict[int, Tensor] = {}
    for k, (tid, bi, t) in enumerate(zip(bg.inputs, bg.block_inputs, ins)):
        imap, fdim = bi.imap, bi.forloop_dim
        if here and edit is not None and edit.kind == "imap" and edit.param[0] == k:
            imap = edit.param[1]
        if here and edit is not None and edit.kind == "forloop-dim" and edit.param[0] == k:
            fdim = edit.param[1]
        m[tid] = out.new_input(t, imap, fdim)
    _replay_nodes(bg, out, m, edit, (ni,))
    for k, bo in enumerate(bg.block_outputs):
        omap = bo.omap
        if here and edit is not None and edit.kind == "omap" and edit.param[0] == k:
            omap = edit.param[1]
        out.new_output(m[bo.tensor], omap)
    return out


def _replay_nodes(old: Graph, new: Graph, m: dict[int, Tensor], edit: Edit | None, prefix: tuple[int, ...]) -> None:
    for j, node in enumerate(old.nodes):
        ins = [m[i] for i in node.inputs]
        if node.op == "customized":
            assert isinstance(new, KernelGraph)
            made = new.customized(ins, _rebuild_block(node.attrs["block_graph"], ins, edit, j))
        elif edit is not None and edit.site == prefix + (j,) and edit.kind in NODE_KINDS:
            _, params, fn = NODE_KINDS[edit.kind]
            ok = params(node, old)
            if not ok or (edit.kind not in FREE_PARAM and edit.param not in ok):
                raise GraphError("edit-site", f"{edit} does not apply to {node.op}")
            made = [fn(Ctx(new, old, node, ins, m), edit.param)]
        else:
            made = [new.add_op(node.op, ins, **node.attrs)]
        for o, t in zip(node.outputs, made):
            m[o] = t


def _rebuild(kg: KernelGraph, edit: Edit | None) -> KernelGraph:
    out = KernelGraph()
    m: dict[int, Tensor] = {}
    for tid, name in zip(kg.inputs, kg.input_names):
        t: TensorType = kg.types[tid]
        m[tid] = out.new_input(t.dims, t.dtype, name)
    _replay_nodes(kg, out, m, edit, ())
    for tid, name in zip(kg.outputs, kg.output_names):
        out.mark_output(m[tid], name)
    return out


def all_edits(kg: KernelGraph) -> Iterator[Edit]:
    """Every edit this module knows for `kg`, valid or not."""

    def node_edits(g: Graph, prefix: tuple[int, ...]) -> Iterator[Edit]:
        for j, node in enumerate(g.nodes):
            if node.op == "customized":
                bg = node.attrs["block_graph"]
                for kind, param in _block_params(bg):
                    yield Edit(kind, BLOCK_KINDS[kind], (j, -1), param)
                yield from node_edits(bg, (j,))
                continue
            for kind, (expect, params, _) in NODE_KINDS.items():
                for p in params(node, g):
                    yield Edit(kind, expect, prefix + (j,), p)

    yield from node_edits(kg, ())


def edits(kg: KernelGraph) -> list[tuple[Edit, KernelGraph]]:
    """The valid edits of `kg` with the graphs they make."""
    out = []
    for e in all_edits(kg):
        try:
            out.append((e, e.apply(kg)))
        except GraphError:
            continue
    return out
