"""Kernel graphs and block graphs, built through a small DSL and validated as they are built.

Tensors are integer ids into a graph's `types` list; nodes are appended in a topological
order. Every rule check raises a GraphError naming the rule, so a bad graph is one clear
message whether it came from the DSL, a JSON file or a frontend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from .dtypes import check_dtype
from .errors import GraphError
from .ops import ACCUMULATORS, MAX_RANK, Attrs, Dims, get_op, normalize_attrs

GRID = ("x", "y", "z")
Map3 = tuple[int, int, int]


@dataclass(frozen=True)
class TensorType:
    dims: Dims
    dtype: str


@dataclass
class Node:
    op: str
    inputs: tuple[int, ...]
    attrs: Attrs
    outputs: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class Tensor:
    """A DSL handle on one tensor of one graph."""

    graph: Graph
    id: int

    @property
    def dims(self) -> Dims:
        return self.graph.types[self.id].dims

    @property
    def dtype(self) -> str:
        return self.graph.types[self.id].dtype

    def __repr__(self) -> str:
        return f"Tensor(t{self.id}, {list(self.dims)}, {self.dtype})"


TensorLike = Tensor | int


def _check_dims(dims: Sequence[int], what: str) -> Dims:
    dims = tuple(dims)
    if not 1 <= len(dims) <= MAX_RANK:
        raise GraphError("rank", f"{what}: tensors have 1 to {MAX_RANK} dims, got {list(dims)}")
    if any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in dims):
        raise GraphError("dims", f"{what}: dims must be positive integers, got {list(dims)}")
    return dims


def _check_dtype(dtype: str, what: str) -> str:
    # check_dtype raises a plain ValueError; turn it into a rule error so an unknown dtype
    # (from the DSL or a JSON file) is reported like every other invalid graph.
    try:
        return check_dtype(dtype)
    except ValueError as e:
        raise GraphError("dtype-unknown", f"{what}: {e}") from None


def _check_map3(m: Sequence[int] | dict[str, int], rank: int, what: str) -> Map3:
    """imap/omap: for each grid dim x, y, z the tensor dim it maps (or -1)."""
    if isinstance(m, dict):
        bad = set(m) - set(GRID)
        if bad:
            raise GraphError("map-range", f"{what}: unknown grid dims {sorted(bad)}")
        m = [m.get(g, -1) for g in GRID]
    m = tuple(m)
    if len(m) != 3 or any(not isinstance(d, int) or isinstance(d, bool) for d in m):
        raise GraphError("map-range", f"{what}: expected three integers (grid x, y, z), got {list(m)}")
    for g, d in zip(GRID, m):
        if not -1 <= d < rank:
            raise GraphError(
                "map-range", f"{what}: grid dim {g} maps tensor dim {d}, which does not exist (rank {rank})"
            )
    used = [d for d in m if d >= 0]
    if len(used) != len(set(used)):
        raise GraphError("map-duplicate", f"{what}: two grid dims map the same tensor dim ({list(m)})")
    return m


class Graph:
    """What kernel and block graphs share: tensors, nodes, and the op-building DSL."""

    level: str = ""

    def __init__(self) -> None:
        self.types: list[TensorType] = []
        self.nodes: list[Node] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self._handles: dict[int, Tensor] = {}

    # -- plumbing ------------------------------------------------------------------------
    def tensor(self, tid: int) -> Tensor:
        if tid not in self._handles:
            self._handles[tid] = Tensor(self, tid)
        return self._handles[tid]

    def _id(self, t: TensorLike) -> int:
        if isinstance(t, Tensor):
            if t.graph is not self:
                raise GraphError("foreign-tensor", f"{t!r} belongs to another graph")
            return t.id
        if not isinstance(t, int) or not 0 <= t < len(self.types):
            raise GraphError("unknown-tensor", f"no tensor {t!r} in this graph")
        return t

    def _new_tensor(self, dims: Dims, dtype: str) -> int:
        self.types.append(TensorType(dims, dtype))
        return len(self.types) - 1

    def producer(self) -> dict[int, Node]:
        return {o: n for n in self.nodes for o in n.outputs}

    def add_op(self, name: str, inputs: Sequence[TensorLike], **attrs: Any) -> Tensor:
        """Append one op with a single output (all ops but `customized`)."""
        return self._add(name, [self._id(t) for t in inputs], attrs)[0]

    def _add(self, name: str, ins: list[int], attrs: Attrs) -> list[Tensor]:
        op = get_op(name)
        if not op.allowed_at(self.level):
            raise GraphError("op-level", f"{name} is not a {self.level}-level op")
        if op.arity >= 0 and len(ins) != op.arity:
            raise GraphError("arity", f"{name} takes {op.arity} input(s), got {len(ins)}")
        in_types = [self.types[i] for i in ins]
        dtypes = {t.dtype for t in in_types}
        if len(dtypes) > 1:
            raise GraphError("dtype", f"{name}: input dtypes differ ({', '.join(sorted(dtypes))})")
        norm = normalize_attrs(op, attrs, [t.dims for t in in_types])
        out_types = self._out_types(name, ins, norm, in_types)
        outs = tuple(self._new_tensor(t.dims, t.dtype) for t in out_types)
        try:
            self._after_node(name, ins, outs)
        except GraphError:
            del self.types[outs[0] :]  # leave the graph as it was
            raise
        self.nodes.append(Node(name, tuple(ins), norm, outs))
        return [self.tensor(o) for o in outs]

    def _out_types(self, name: str, ins: list[int], attrs: Attrs, in_types: list[TensorType]) -> list[TensorType]:
        op = get_op(name)
        assert op.shape is not None
        try:
            dims = op.shape([t.dims for t in in_types], attrs)
        except GraphError as e:
            raise GraphError(e.rule, f"{name}: {e.args[0]}") from None
        return [TensorType(_check_dims(dims, name), in_types[0].dtype)]

    def _after_node(self, name: str, ins: list[int], outs: tuple[int, ...]) -> None:
        """Hook for level-specific bookkeeping (block graphs track loop stages)."""

    def pop_node(self) -> Node:
        """Remove the last op and its output tensors (the search backtracks this way
        instead of copying graphs). Graph outputs must not refer to them."""
        node = self.nodes.pop()
        assert not set(node.outputs) & set(self.outputs), "pop_node: an output refers to the op"
        for o in reversed(node.outputs):
            assert o == len(self.types) - 1
            self.types.pop()
            self._handles.pop(o, None)
        return node

    # -- the DSL, one method per op (level checks come from the op table) ----------------
    def matmul(self, a: TensorLike, b: TensorLike) -> Tensor:
        return self.add_op("matmul", [a, b])

    def exp(self, x: TensorLike) -> Tensor:
        return self.add_op("exp", [x])

    def square(self, x: TensorLike) -> Tensor:
        return self.add_op("square", [x])

    def sqrt(self, x: TensorLike) -> Tensor:
        return self.add_op("sqrt", [x])

    def sigmoid(self, x: TensorLike) -> Tensor:
        return self.add_op("sigmoid", [x])

    def silu(self, x: TensorLike) -> Tensor:
        return self.add_op("silu", [x])

    def gelu(self, x: TensorLike, approximate: str = "none") -> Tensor:
        return self.add_op("gelu", [x], approximate=approximate)

    def relu(self, x: TensorLike) -> Tensor:
        return self.add_op("relu", [x])

    def neg(self, x: TensorLike) -> Tensor:
        return self.add_op("neg", [x])

    def reciprocal(self, x: TensorLike) -> Tensor:
        return self.add_op("reciprocal", [x])

    def mul_scalar(self, x: TensorLike, c: Fraction | int | float | str) -> Tensor:
        return self.add_op("mul_scalar", [x], c=c)

    def add_scalar(self, x: TensorLike, c: Fraction | int | float | str) -> Tensor:
        return self.add_op("add_scalar", [x], c=c)

    def pow_scalar(self, x: TensorLike, c: Fraction | int | float | str) -> Tensor:
        return self.add_op("pow_scalar", [x], c=c)

    def add(self, a: TensorLike, b: TensorLike) -> Tensor:
        return self.add_op("add", [a, b])

    def sub(self, a: TensorLike, b: TensorLike) -> Tensor:
        return self.add_op("sub", [a, b])

    def mul(self, a: TensorLike, b: TensorLike) -> Tensor:
        return self.add_op("mul", [a, b])

    def div(self, a: TensorLike, b: TensorLike) -> Tensor:
        return self.add_op("div", [a, b])

    def reduce_sum(self, x: TensorLike, dim: int, size: int = 1) -> Tensor:
        return self.add_op("reduce_sum", [x], dim=dim, size=size)

    def transpose(self, x: TensorLike) -> Tensor:
        return self.add_op("transpose", [x])

    def concat(self, a: TensorLike, b: TensorLike, dim: int) -> Tensor:
        return self.add_op("concat", [a, b], dim=dim)

    def rms_norm(self, x: TensorLike, eps: Fraction | int | float | str) -> Tensor:
        return self.add_op("rms_norm", [x], eps=eps)


class KernelGraph(Graph):
    """A program of kernels: predefined kernel ops and customized (block-graph) kernels."""

    level = "kernel"

    def __init__(self) -> None:
        super().__init__()
        self.input_names: list[str] = []
        self.output_names: list[str] = []

    def new_input(self, dims: Sequence[int], dtype: str = "float16", name: str | None = None) -> Tensor:
        dims = _check_dims(dims, "input")
        _check_dtype(dtype, "input")
        name = name or f"in{len(self.inputs)}"
        if name in self.input_names:
            raise GraphError("name-duplicate", f"two inputs are named {name!r}")
        tid = self._new_tensor(dims, dtype)
        self.inputs.append(tid)
        self.input_names.append(name)
        return self.tensor(tid)

    def mark_output(self, t: TensorLike, name: str | None = None) -> None:
        name = name or f"out{len(self.outputs)}"
        if name in self.output_names:
            raise GraphError("name-duplicate", f"two outputs are named {name!r}")
        self.outputs.append(self._id(t))
        self.output_names.append(name)

    def customized(self, inputs: Sequence[TensorLike], bg: BlockGraph) -> list[Tensor]:
        return self._add("customized", [self._id(t) for t in inputs], {"block_graph": bg})

    def _out_types(self, name: str, ins: list[int], attrs: Attrs, in_types: list[TensorType]) -> list[TensorType]:
        if name != "customized":
            return super()._out_types(name, ins, attrs, in_types)
        bg = attrs["block_graph"]
        if not isinstance(bg, BlockGraph):
            raise GraphError("attr-type", "customized: block_graph must be a BlockGraph")
        if len(in_types) != len(bg.block_inputs):
            raise GraphError(
                "customized-inputs",
                f"customized: {len(in_types)} inputs given, its block graph has {len(bg.block_inputs)}",
            )
        for k, (t, bi) in enumerate(zip(in_types, bg.block_inputs)):
            if (t.dims, t.dtype) != (bi.dims, bi.dtype):
                raise GraphError(
                    "customized-inputs",
                    f"customized: input {k} is {list(t.dims)} {t.dtype}, block graph expects {list(bi.dims)} {bi.dtype}",
                )
            if bi.source is not None and bi.source.graph is self and bi.source.id != ins[k]:
                raise GraphError(
                    "customized-inputs", f"customized: input {k} is not the tensor its block input was made from"
                )
        if not bg.outputs:
            raise GraphError("no-outputs", "customized: block graph has no outputs")
        return [bg.output_type(k) for k in range(len(bg.outputs))]

    def validate(self) -> None:
        if not self.outputs:
            raise GraphError("no-outputs", "kernel graph has no outputs")

    def __repr__(self) -> str:
        return f"KernelGraph({len(self.inputs)} inputs, {len(self.nodes)} ops, {len(self.outputs)} outputs)"


@dataclass
class BlockInput:
    """A kernel tensor streamed into a block graph: `dims`/`dtype` are the kernel tensor's."""

    dims: Dims
    dtype: str
    imap: Map3
    forloop_dim: int
    source: Tensor | None = field(default=None, compare=False, repr=False)


@dataclass
class BlockOutput:
    tensor: int
    omap: Map3


class BlockGraph(Graph):
    """One CUDA kernel: a grid of blocks, each running a for-loop of `forloop_range`
    iterations over tiles of its inputs, then a post-accumulation epilogue."""

    level = "block"

    def __init__(
        self, grid_dims: Sequence[int], forloop_range: int = 1, block_dims: Sequence[int] = (128, 1, 1)
    ) -> None:
        super().__init__()
        grid = tuple(grid_dims) + (1,) * (3 - len(tuple(grid_dims)))
        if len(grid) != 3 or any(not isinstance(g, int) or isinstance(g, bool) or g < 1 for g in grid):
            raise GraphError("grid-dims", f"grid_dims must be 1 to 3 positive integers, got {list(grid_dims)}")
        if not isinstance(forloop_range, int) or isinstance(forloop_range, bool) or forloop_range < 1:
            raise GraphError("forloop-range", f"forloop_range must be a positive integer, got {forloop_range!r}")
        self.grid_dims: Map3 = grid
        self.forloop_range = forloop_range
        self.block_dims = tuple(block_dims)  # a codegen choice: not part of the hash
        self.block_inputs: list[BlockInput] = []
        self.block_outputs: list[BlockOutput] = []
        # Loop stage of every tensor: "invariant" (from loop-invariant inputs only),
        # "loop" (once per iteration) or "post" (after an accumulator).
        self.stage: dict[int, str] = {}

    def new_input(self, t: Tensor | TensorType, imap: Sequence[int] | dict[str, int], forloop_dim: int = -1) -> Tensor:
        """Stream kernel tensor `t` in: `imap` says which tensor dim each grid dim splits,
        `forloop_dim` which dim the for-loop splits (-1: loaded once, loop-invariant)."""
        source = t if isinstance(t, Tensor) else None
        dims, dtype = _check_dims(t.dims, "block input"), _check_dtype(t.dtype, "block input")
        rank = len(dims)
        m = _check_map3(imap, rank, "imap")
        # bool is an int subclass: reject it, as the other integer fields do.
        if not isinstance(forloop_dim, int) or isinstance(forloop_dim, bool) or not -1 <= forloop_dim < rank:
            raise GraphError("forloop-dim", f"forloop_dim {forloop_dim!r} does not exist (rank {rank})")
        tile = list(dims)
        for g, d in enumerate(m):
            if d >= 0:
                tile[d] = self._divide(tile[d], self.grid_dims[g], f"tensor dim {d} ({dims[d]}) by grid dim {GRID[g]}")
        if forloop_dim >= 0:
            tile[forloop_dim] = self._divide(
                tile[forloop_dim],
                self.forloop_range,
                f"tensor dim {forloop_dim} by the for-loop range {self.forloop_range}",
            )
        self.block_inputs.append(BlockInput(dims, dtype, m, forloop_dim, source))
        tid = self._new_tensor(tuple(tile), dtype)
        self.inputs.append(tid)
        looped = forloop_dim >= 0 and self.forloop_range > 1
        self.stage[tid] = "loop" if looped else "invariant"
        return self.tensor(tid)

    @staticmethod
    def _divide(n: int, k: int, what: str) -> int:
        if n % k:
            raise GraphError("tile-divide", f"tiles do not divide: {what} (size {n} by {k})")
        return n // k

    def new_output(self, t: TensorLike, omap: Sequence[int] | dict[str, int]) -> None:
        """Lay the blocks' tiles of `t` side by side: grid dim g along tensor dim omap[g]."""
        tid = self._id(t)
        m = _check_map3(omap, len(self.types[tid].dims), "omap")
        for g, d in enumerate(m):
            if self.grid_dims[g] > 1 and d < 0:
                raise GraphError(
                    "omap-unmapped", f"omap {list(m)} leaves grid dim {GRID[g]} (size {self.grid_dims[g]}) unmapped"
                )
        if self.stage[tid] == "loop":
            raise GraphError(
                "output-stage",
                f"t{tid} is computed once per iteration; an output must be accumulated or loop-invariant",
            )
        self.block_outputs.append(BlockOutput(tid, m))
        self.outputs.append(tid)

    def output_type(self, k: int) -> TensorType:
        out = self.block_outputs[k]
        t = self.types[out.tensor]
        dims = list(t.dims)
        for g, d in enumerate(out.omap):
            if d >= 0:
                dims[d] *= self.grid_dims[g]
        return TensorType(_check_dims(dims, "block output"), t.dtype)

    def _after_node(self, name: str, ins: list[int], outs: tuple[int, ...]) -> None:
        stages = {self.stage[i] for i in ins}
        if name in ACCUMULATORS:
            if self.forloop_range > 1 and stages != {"loop"}:
                raise GraphError(
                    "accum-stage", f"{name} takes a per-iteration tensor, got a {'/'.join(sorted(stages))} one"
                )
            stage = "post"
        elif {"loop", "post"} <= stages:
            raise GraphError("stage-mix", f"{name} mixes per-iteration and post-accumulation tensors")
        else:
            stage = "loop" if "loop" in stages else "post" if "post" in stages else "invariant"
        for o in outs:
            self.stage[o] = stage

    def pop_node(self) -> Node:
        node = super().pop_node()
        for o in node.outputs:
            del self.stage[o]
        return node

    def concat_matmul(self, a: TensorLike, b: TensorLike, c: TensorLike, d: TensorLike) -> Tensor:
        return self.add_op("concat_matmul", [a, b, c, d])

    def accum_sum(self, x: TensorLike) -> Tensor:
        return self.add_op("accum_sum", [x])

    def accum_sum_lastdim(self, x: TensorLike) -> Tensor:
        return self.add_op("accum_sum_lastdim", [x])

    def __repr__(self) -> str:
        return f"BlockGraph(grid={list(self.grid_dims)}, forloop={self.forloop_range}, {len(self.nodes)} ops)"


def new_kernel_graph() -> KernelGraph:
    return KernelGraph()


def new_block_graph(
    grid_dims: Sequence[int], forloop_range: int = 1, block_dims: Sequence[int] = (128, 1, 1)
) -> BlockGraph:
    return BlockGraph(grid_dims, forloop_range, block_dims)
