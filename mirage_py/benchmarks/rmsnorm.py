"""rmsnorm: Y = rms_norm(X) @ W, the paper's RMSNorm followed by a linear layer."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..ir import KernelGraph, new_block_graph, new_kernel_graph
from . import Benchmark, Size, register
from ._common import DTYPE, EPS, input_dims, normal, pick


@dataclass(frozen=True)
class Shape:
    k: int  # hidden size: X is (2b, k), W is (k, n)
    n: int
    grid: int  # expert: blocks over W's columns
    forloop: int  # expert: iterations over k


SHAPES = {
    "paper": Shape(k=4096, n=6144, grid=96, forloop=64),
    # Same 64 x 64 W tiles as the paper size, fewer of them.
    "small": Shape(k=256, n=384, grid=6, forloop=4),
}


def _inputs(g: KernelGraph, s: Shape, b: int):
    return g.new_input((2 * b, s.k), DTYPE, "X"), g.new_input((s.k, s.n), DTYPE, "W")


def build_spec(size: Size, b: int) -> KernelGraph:
    s = pick(SHAPES, size)
    g = new_kernel_graph()
    x, w = _inputs(g, s, b)
    g.mark_output(g.matmul(g.rms_norm(x, EPS), w), "Y")
    return g


def build_fused(size: Size, b: int) -> KernelGraph:
    """One kernel: X@W and sum(x^2) accumulate over the same for-loop over k; since
    rms_norm(X) @ W = (X @ W) / rms(X), the division happens once, after the loop."""
    s = pick(SHAPES, size)
    g = new_kernel_graph()
    X, W = _inputs(g, s, b)
    bg = new_block_graph((s.grid, 1, 1), s.forloop)
    x = bg.new_input(X, (-1, -1, -1), forloop_dim=1)  # (2b, k/F), shared by all blocks
    w = bg.new_input(W, (1, -1, -1), forloop_dim=0)  # (k/F, n/grid)
    xw = bg.accum_sum(bg.matmul(x, w))
    ss = bg.accum_sum_lastdim(bg.square(x))
    rms = bg.sqrt(bg.add_scalar(bg.mul_scalar(ss, Fraction(1, s.k)), EPS))
    bg.new_output(bg.div(xw, rms), (1, -1, -1))
    (y,) = g.customized([X, W], bg)
    g.mark_output(y, "Y")
    return g


def make_inputs(graph: KernelGraph, rng: np.random.Generator) -> dict[str, np.ndarray]:
    dims = input_dims(graph)
    k = dims["W"][0]
    # W scaled by 1/sqrt(k) so Y has unit variance once X is normalized.
    return {"X": normal(rng, dims["X"]), "W": normal(rng, dims["W"], k**-0.5)}


register(
    Benchmark(
        name="rmsnorm",
        preset="mlp",
        description="Y = rms_norm(X) @ W; X (2b, 4096), W (4096, 6144)",
        batches=(1, 8),
        build_spec=build_spec,
        build_experts=lambda size, b: {"fused": build_fused(size, b)},
        make_inputs=make_inputs,
    )
)
