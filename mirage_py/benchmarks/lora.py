"""lora: Y = X @ W + (X @ A) @ B, a linear layer with a low-rank adapter."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import KernelGraph, new_block_graph, new_kernel_graph
from . import Benchmark, Size, register
from ._common import DTYPE, input_dims, normal, pick


@dataclass(frozen=True)
class Shape:
    k: int  # X is (16b, k), W is (k, n), A is (k, r), B is (r, n)
    n: int
    r: int
    grid: int  # expert: blocks over the columns of W and B


SHAPES = {
    "paper": Shape(k=256, n=4096, r=16, grid=64),
    # Same 64-column slices as the paper size, fewer of them, and a shorter k.
    "small": Shape(k=64, n=256, r=16, grid=4),
}


def _inputs(g: KernelGraph, s: Shape, b: int):
    x = g.new_input((16 * b, s.k), DTYPE, "X")
    w = g.new_input((s.k, s.n), DTYPE, "W")
    return x, w, g.new_input((s.k, s.r), DTYPE, "A"), g.new_input((s.r, s.n), DTYPE, "B")


def build_spec(size: Size, b: int) -> KernelGraph:
    s = pick(SHAPES, size)
    g = new_kernel_graph()
    x, w, a, bb = _inputs(g, s, b)
    g.mark_output(g.add(g.matmul(x, w), g.matmul(g.matmul(x, a), bb)), "Y")
    return g


def build_fused(size: Size, b: int) -> KernelGraph:
    """One kernel, no for-loop (k fits in one tile): every block computes the small X@A
    itself, then one matmul of [X | X@A] by its column slice of [W ; B] adds both terms."""
    s = pick(SHAPES, size)
    g = new_kernel_graph()
    X, W, A, B = _inputs(g, s, b)
    bg = new_block_graph((s.grid, 1, 1), 1)
    x = bg.new_input(X, (-1, -1, -1))  # (16b, k)
    w = bg.new_input(W, (1, -1, -1))  # (k, n/grid)
    a = bg.new_input(A, (-1, -1, -1))  # (k, r)
    bb = bg.new_input(B, (1, -1, -1))  # (r, n/grid)
    xa = bg.matmul(x, a)
    bg.new_output(bg.concat_matmul(x, xa, w, bb), (1, -1, -1))
    (y,) = g.customized([X, W, A, B], bg)
    g.mark_output(y, "Y")
    return g


def make_inputs(graph: KernelGraph, rng: np.random.Generator) -> dict[str, np.ndarray]:
    dims = input_dims(graph)
    k, r = dims["A"]
    # Scaled so X@W, X@A and (X@A)@B all have unit variance.
    return {
        "X": normal(rng, dims["X"]),
        "W": normal(rng, dims["W"], k**-0.5),
        "A": normal(rng, dims["A"], k**-0.5),
        "B": normal(rng, dims["B"], r**-0.5),
    }


register(
    Benchmark(
        name="lora",
        preset="lora",
        description="Y = X @ W + (X @ A) @ B; X (16b, 256), W (256, 4096), A (256, 16), B (16, 4096)",
        batches=(1, 8),
        build_spec=build_spec,
        build_experts=lambda size, b: {"fused": build_fused(size, b)},
        make_inputs=make_inputs,
    )
)
