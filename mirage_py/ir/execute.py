"""One graph walker, and the float reference interpreter on top of it.

Block graphs run vectorized: every block tensor carries four leading axes (grid x, y, z,
for-loop iteration) in front of its tile dims, so pre-accumulation ops run for all blocks
and iterations at once, an accumulator sums the iteration axis, and outputs are the inverse
reshape. There is no Python loop over blocks. `split_tiles` / `merge_tiles` hold that
layout logic; other interpreters (the finite-field one) reuse them per array.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

import numpy as np

from .dtypes import round_to
from .graph import BlockGraph, BlockInput, BlockOutput, Graph, KernelGraph, Node
from .ops import BLOCK_LEAD, get_op, numpy_attrs

V = TypeVar("V")
F32_KINDS = frozenset({"accum", "reduce", "matmul"})
Mode = Literal["float64", "float32", "dtype"]


def walk(graph: Graph, inputs: Sequence[V], apply: Callable[[Node, list[V]], list[V]]) -> list[V]:
    """Evaluate `graph` on `inputs` (one value per graph input) with one rule per node."""
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"graph takes {len(graph.inputs)} inputs, got {len(inputs)}")
    env: dict[int, V] = dict(zip(graph.inputs, inputs))
    for node in graph.nodes:
        env.update(zip(node.outputs, apply(node, [env[i] for i in node.inputs])))
    return [env[o] for o in graph.outputs]


def split_tiles(x: np.ndarray, bi: BlockInput, grid: Sequence[int], forloop_range: int) -> np.ndarray:
    """Kernel tensor -> (gx, gy, gz, iter, *tile), size-1 lead axes where not split.
    Split order (DESIGN.md): a dim split by grid dim g and by the loop is (G, F, tile)."""
    shape: list[int] = []
    lead: list[int | None] = [None] * BLOCK_LEAD
    tile_axes: list[int] = []
    for d, n in enumerate(x.shape):
        for g in range(3):
            if bi.imap[g] == d:
                lead[g] = len(shape)
                shape.append(grid[g])
                n //= grid[g]
        if bi.forloop_dim == d:
            lead[3] = len(shape)
            shape.append(forloop_range)
            n //= forloop_range
        tile_axes.append(len(shape))
        shape.append(n)
    missing = [k for k in range(BLOCK_LEAD) if lead[k] is None]
    y = x.reshape(shape + [1] * len(missing))
    for j, k in enumerate(missing):
        lead[k] = len(shape) + j
    return y.transpose([a for a in lead if a is not None] + tile_axes)


def merge_tiles(y: np.ndarray, bo: BlockOutput, grid: Sequence[int]) -> np.ndarray:
    """(gx|1, gy|1, gz|1, 1, *tile) -> kernel tensor, tiles laid side by side per omap."""
    tile = y.shape[BLOCK_LEAD:]
    y = np.broadcast_to(y, tuple(grid) + (1,) + tile)
    mapped = [g for g in range(3) if bo.omap[g] >= 0]
    rest = [a for a in range(BLOCK_LEAD) if a not in mapped]
    order: list[int] = []
    for j in range(len(tile)):
        order += [g for g in mapped if bo.omap[g] == j] + [BLOCK_LEAD + j]
    dims = [n * (grid[bo.omap.index(j)] if j in bo.omap else 1) for j, n in enumerate(tile)]
    return np.ascontiguousarray(y.transpose(rest + order)).reshape(dims)


def align(args: list[np.ndarray], ranks: list[int], lead: int) -> list[np.ndarray]:
    """Give every argument the same logical rank by inserting size-1 dims right after the
    lead axes (so a tile of rank 2 broadcasts against rank 3 as the IR says, not NumPy's
    right alignment across lead axes)."""
    top = max(ranks)
    return [
        a if r == top else a.reshape(a.shape[:lead] + (1,) * (top - r) + a.shape[lead:]) for a, r in zip(args, ranks)
    ]


class FloatInterpreter:
    """Runs a kernel graph in float64, float32, or each tensor's own dtype ("dtype": values
    rounded to float16/bfloat16 after every op, computed in float32)."""

    def __init__(self, mode: Mode = "float64") -> None:
        self.mode = mode
        self.np_dtype = np.float64 if mode == "float64" else np.float32

    def run(self, kg: KernelGraph, inputs: Sequence[np.ndarray] | dict[str, np.ndarray]) -> list[np.ndarray]:
        if isinstance(inputs, dict):
            missing = [n for n in kg.input_names if n not in inputs]
            if missing:
                raise ValueError(f"missing inputs: {', '.join(missing)}")
            inputs = [inputs[n] for n in kg.input_names]
        vals = []
        for tid, x in zip(kg.inputs, inputs):
            x = np.asarray(x)
            if x.shape != kg.types[tid].dims:
                raise ValueError(f"input t{tid} has shape {list(x.shape)}, expected {list(kg.types[tid].dims)}")
            vals.append(self._store(x, kg.types[tid].dtype))
        return walk(kg, vals, lambda n, a: self._apply(kg, n, a, lead=0))

    def _store(self, x: np.ndarray, dtype: str) -> np.ndarray:
        if self.mode == "dtype":
            return round_to(x, dtype)
        return np.asarray(x, dtype=self.np_dtype)

    def _apply(self, g: Graph, node: Node, args: list[np.ndarray], lead: int) -> list[np.ndarray]:
        if node.op == "customized":
            return self._run_block(node.attrs["block_graph"], args)
        op = get_op(node.op)
        assert op.numpy is not None
        ranks = [len(g.types[i].dims) for i in node.inputs]
        with np.errstate(all="ignore"):
            y = op.numpy(*align(args, ranks, lead), **numpy_attrs(op, node.attrs, max(ranks)))
        # Inside a kernel, exp results, reductions and accumulators stay in float32, as the
        # emitted kernels keep them (DESIGN.md); kernel-level tensors are stored in their dtype.
        dtype = g.types[node.outputs[0]].dtype
        if lead and (op.kind in F32_KINDS or node.op == "exp"):
            dtype = "float32"
        return [self._store(y, dtype)]

    def _run_block(self, bg: BlockGraph, args: list[np.ndarray]) -> list[np.ndarray]:
        tiles = [split_tiles(x, bi, bg.grid_dims, bg.forloop_range) for x, bi in zip(args, bg.block_inputs)]
        outs = walk(bg, tiles, lambda n, a: self._apply(bg, n, a, lead=BLOCK_LEAD))
        return [
            self._store(merge_tiles(y, bo, bg.grid_dims), bg.types[bo.tensor].dtype)
            for y, bo in zip(outs, bg.block_outputs)
        ]


def run_float(
    kg: KernelGraph, inputs: Sequence[np.ndarray] | dict[str, np.ndarray], mode: Mode = "float64"
) -> list[np.ndarray]:
    return FloatInterpreter(mode).run(kg, inputs)
