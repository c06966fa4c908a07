"""gated_mlp: Y = silu(X @ W1) * (X @ W2), the gated MLP of LLaMA-style models."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import KernelGraph, new_block_graph, new_kernel_graph
from . import Benchmark, Size, register
from ._common import DTYPE, input_dims, normal, pick


@dataclass(frozen=True)
class Shape:
    k: int  # X is (8b, k), W1 and W2 are (k, n)
    n: int
    grid: int  # expert: blocks over the weights' columns
    forloop: int  # expert: iterations over k


SHAPES = {
    "paper": Shape(k=4096, n=4096, grid=64, forloop=64),
    # Same 64 x 64 weight tiles as the paper size, fewer of them.
    "small": Shape(k=256, n=256, grid=4, forloop=4),
}


def _inputs(g: KernelGraph, s: Shape, b: int):
    x = g.new_input((8 * b, s.k), DTYPE, "X")
    return x, g.new_input((s.k, s.n), DTYPE, "W1"), g.new_input((s.k, s.n), DTYPE, "W2")


def build_spec(size: Size, b: int) -> KernelGraph:
    s = pick(SHAPES, size)
    g = new_kernel_graph()
    x, w1, w2 = _inputs(g, s, b)
    g.mark_output(g.mul(g.silu(g.matmul(x, w1)), g.matmul(x, w2)), "Y")
    return g


def build_fused(size: Size, b: int) -> KernelGraph:
    """One kernel: each block owns a column slice of W1 and W2, accumulates both products
    over one for-loop that streams X once, and applies silu(a1) * a2 as the epilogue."""
    s = pick(SHAPES, size)
    g = new_kernel_graph()
    X, W1, W2 = _inputs(g, s, b)
    bg = new_block_graph((s.grid, 1, 1), s.forloop)
    x = bg.new_input(X, (-1, -1, -1), forloop_dim=1)  # (8b, k/F), shared by all blocks
    w1 = bg.new_input(W1, (1, -1, -1), forloop_dim=0)  # (k/F, n/grid)
    w2 = bg.new_input(W2, (1, -1, -1), forloop_dim=0)
    a1 = bg.accum_sum(bg.matmul(x, w1))
    a2 = bg.accum_sum(bg.matmul(x, w2))
    bg.new_output(bg.mul(bg.silu(a1), a2), (1, -1, -1))
    (y,) = g.customized([X, W1, W2], bg)
    g.mark_output(y, "Y")
    return g


def make_inputs(graph: KernelGraph, rng: np.random.Generator) -> dict[str, np.ndarray]:
    dims = input_dims(graph)
    std = dims["W1"][0] ** -0.5  # unit-variance products, as with a scaled init
    return {"X": normal(rng, dims["X"]), "W1": normal(rng, dims["W1"], std), "W2": normal(rng, dims["W2"], std)}


register(
    Benchmark(
        name="gated_mlp",
        preset="mlp",
        description="Y = silu(X @ W1) * (X @ W2); X (8b, 4096), W1, W2 (4096, 4096)",
        batches=(1, 8),
        build_spec=build_spec,
        build_experts=lambda size, b: {"fused": build_fused(size, b)},
        make_inputs=make_inputs,
    )
)
