"""Predefined kernel ops as one-op block graphs, so that every kernel goes through one planner
and one renderer.

A kernel op is tiled over its output: grid dims split output dims (largest split on x, whose
limit is 2^31 - 1; y and z stop at 65535), each input follows through the dims it shares
with the output (broadcast dims are replicated), and a matmul streams K through a for-loop
with an accumulator, as a hand-written GEMM would. Tile sizes are chosen here, not searched:
64 x 64 output tiles with K steps of 64 for matmuls (the tiles Mirage's own predefined
kernels use), and a few thousand elements for memory-bound ops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ..ir.graph import BlockGraph, KernelGraph, Map3, Node, TensorType
from ..ir.ops import get_op

GRID_LIMITS = (2**31 - 1, 65535, 65535)

# Elements of output per block for memory-bound ops; input elements per block for reductions.
ELEMENTWISE_TILE = 4096
REDUCE_TILE = 16384
ROWS_TILE = 8192
CONCAT_TILE = 8192

# A dim map: for output dim d of rank r, the dim of input k that follows it (or None).
DimMap = Callable[[int, int, int], int | None]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def split_dims(dims: Sequence[int], splittable: Sequence[int], target: int) -> list[tuple[int, int]]:
    """(dim, factor) pairs, at most three, that cut `dims` into tiles of about `target`
    elements, splitting leading dims first (each factor divides its dim)."""
    tile = list(dims)
    out: list[tuple[int, int]] = []
    for d in splittable:
        size = math.prod(tile)
        if len(out) == 3 or size <= target:
            break
        want = -(-size // target)
        f = next((x for x in _divisors(tile[d]) if x >= want), tile[d])
        if f > 1:
            out.append((d, f))
            tile[d] //= f
    return out


def _assign_grid(splits: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Order splits onto grid x, y, z: the largest factor on x (the only large limit)."""
    order = sorted(splits, key=lambda s: -s[1])
    for g, (_, f) in enumerate(order):
        if f > GRID_LIMITS[g]:
            raise ValueError(f"grid dim of {f} blocks exceeds the limit {GRID_LIMITS[g]}")
    return order


def _map3(entries: dict[int, int]) -> Map3:
    return (entries.get(0, -1), entries.get(1, -1), entries.get(2, -1))


def _tiled(
    kg: KernelGraph,
    node: Node,
    splittable: Sequence[int],
    target: int,
    dim_map: DimMap,
) -> BlockGraph:
    """A block graph applying `node`'s op to tiles of its output, F = 1."""
    out_t = kg.types[node.outputs[0]]
    rank = len(out_t.dims)
    grid_splits = _assign_grid(split_dims(out_t.dims, splittable, target))
    grid = tuple(f for _, f in grid_splits) + (1,) * (3 - len(grid_splits))
    bg = BlockGraph(grid, 1)
    ins = []
    for k, tid in enumerate(node.inputs):
        t = kg.types[tid]
        imap: dict[int, int] = {}
        for g, (d, _) in enumerate(grid_splits):
            j = dim_map(k, d, rank)
            if j is not None and t.dims[j] == out_t.dims[d]:
                imap[g] = j
        ins.append(bg.new_input(TensorType(t.dims, t.dtype), _map3(imap)))
    y = bg.add_op(node.op, ins, **node.attrs)
    bg.new_output(y, _map3({g: d for g, (d, _) in enumerate(grid_splits)}))
    return bg


def _right_aligned(kg: KernelGraph, node: Node) -> DimMap:
    ranks = [len(kg.types[t].dims) for t in node.inputs]

    def dim_map(k: int, d: int, rank: int) -> int | None:
        j = d - (rank - ranks[k])
        return j if j >= 0 else None

    return dim_map


def _lower_elementwise(kg: KernelGraph, node: Node) -> BlockGraph:
    rank = len(kg.types[node.outputs[0]].dims)
    return _tiled(kg, node, range(rank), ELEMENTWISE_TILE, _right_aligned(kg, node))


def _lower_transpose(kg: KernelGraph, node: Node) -> BlockGraph:
    def dim_map(k: int, d: int, rank: int) -> int | None:
        return {rank - 1: rank - 2, rank - 2: rank - 1}.get(d, d)

    rank = len(kg.types[node.outputs[0]].dims)
    return _tiled(kg, node, range(rank), ELEMENTWISE_TILE, dim_map)


def _lower_concat(kg: KernelGraph, node: Node) -> BlockGraph:
    rank = len(kg.types[node.outputs[0]].dims)
    keep = [d for d in range(rank) if d != node.attrs["dim"]]
    return _tiled(kg, node, keep, CONCAT_TILE, lambda k, d, r: d)


def _lower_reduce(kg: KernelGraph, node: Node) -> BlockGraph:
    x = kg.types[node.inputs[0]]
    dim = node.attrs["dim"]
    per_out = x.dims[dim] // node.attrs["size"]  # input elements summed into each output
    keep = [d for d in range(len(x.dims)) if d != dim]
    return _tiled(kg, node, keep, max(1, REDUCE_TILE // per_out), lambda k, d, r: d)


def _lower_rows(kg: KernelGraph, node: Node) -> BlockGraph:
    """Ops over whole rows of the last dim (rms_norm): split the leading dims only."""
    x = kg.types[node.inputs[0]]
    rank = len(x.dims)
    return _tiled(kg, node, range(rank - 1), max(x.dims[-1], ROWS_TILE), lambda k, d, r: d)


def _pick(n: int, choices: Sequence[int]) -> int:
    return next((c for c in choices if n % c == 0), n)


def matmul_tiles(m: int, n: int, k: int) -> tuple[int, int, int]:
    """(BM, BN, BK): 64 x 64 output tiles and K steps of 64 where the dims allow."""
    bn = _pick(n, (64, 32, 16, 8))
    bm = m if m <= 64 else _pick(m, (64, 32, 16, 48, 8))
    bk = k if k <= 64 else _pick(k, (64, 32, 16))
    return bm, bn, bk


def _lower_matmul(kg: KernelGraph, node: Node) -> BlockGraph:
    a_t, b_t = (kg.types[t] for t in node.inputs)
    out = kg.types[node.outputs[0]]
    ra, rb, r = len(a_t.dims), len(b_t.dims), len(out.dims)
    m, kk, n = a_t.dims[-2], a_t.dims[-1], b_t.dims[-1]
    bm, bn, bk = matmul_tiles(m, n, kk)
    batch = out.dims[0] if r >= 3 else 1
    grid = (n // bn, m // bm, batch)
    if any(g > lim for g, lim in zip(grid, GRID_LIMITS)):
        raise ValueError(f"matmul grid {list(grid)} exceeds the grid limits")
    f = kk // bk
    bg = BlockGraph(grid, f)

    def used(g: int, dim: int) -> int:
        return dim if grid[g] > 1 else -1

    a_map = (-1, used(1, ra - 2), used(2, 0) if ra == r and r >= 3 else -1)
    b_map = (used(0, rb - 1), -1, used(2, 0) if rb == r and r >= 3 else -1)
    a = bg.new_input(TensorType(a_t.dims, a_t.dtype), a_map, ra - 1 if f > 1 else -1)
    b = bg.new_input(TensorType(b_t.dims, b_t.dtype), b_map, rb - 2 if f > 1 else -1)
    y = bg.matmul(a, b)
    if f > 1:
        y = bg.accum_sum(y)
    bg.new_output(y, (used(0, r - 1), used(1, r - 2), used(2, 0) if r >= 3 else -1))
    return bg


LOWERINGS: dict[str, Callable[[KernelGraph, Node], BlockGraph]] = {
    "matmul": _lower_matmul,
    "reduce_sum": _lower_reduce,
    "transpose": _lower_transpose,
    "concat": _lower_concat,
    "rms_norm": _lower_rows,
}
# Every other kernel op is elementwise (unary or binary): one rule for all of them.
_BY_KIND: dict[str, Callable[[KernelGraph, Node], BlockGraph]] = {
    "unary": _lower_elementwise,
    "binary": _lower_elementwise,
}


def lower_kernel_op(kg: KernelGraph, node: Node) -> BlockGraph:
    """The block graph of a predefined kernel op (its inputs in the node's order)."""
    rule = LOWERINGS.get(node.op) or _BY_KIND.get(get_op(node.op).kind)
    if rule is None:
        raise ValueError(f"no lowering for kernel op {node.op!r}")
    return rule(kg, node)
