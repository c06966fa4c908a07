"""ntrans: the nGPT residual update H' = rms_norm(H + alpha * (rms_norm(X) - H)), rows of
the hidden states H, the block output X and the per-channel step sizes alpha."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..ir import BlockGraph, KernelGraph, Tensor, new_block_graph, new_kernel_graph
from . import Benchmark, Size, register
from ._common import DTYPE, EPS, input_dims, normal, pick


@dataclass(frozen=True)
class Shape:
    n: int  # hidden size: H, X and alpha are (b, n)


SHAPES = {"paper": Shape(n=4096), "small": Shape(n=256)}


def _inputs(g: KernelGraph, s: Shape, b: int):
    return tuple(g.new_input((b, s.n), DTYPE, name) for name in ("H", "X", "alpha"))


def build_spec(size: Size, b: int) -> KernelGraph:
    s = pick(SHAPES, size)
    g = new_kernel_graph()
    h, x, alpha = _inputs(g, s, b)
    step = g.mul(alpha, g.sub(g.rms_norm(x, EPS), h))
    g.mark_output(g.rms_norm(g.add(h, step), EPS), "Y")
    return g


def _block_rms_norm(bg: BlockGraph, x: Tensor, n: int) -> Tensor:
    """rms_norm of whole rows from exact ops, as the search would build it."""
    ms = bg.mul_scalar(bg.reduce_sum(bg.square(x), -1), Fraction(1, n))
    return bg.div(x, bg.sqrt(bg.add_scalar(ms, EPS)))


def build_fused(size: Size, b: int) -> KernelGraph:
    """One kernel, one block per row and no for-loop: the second row reduction needs the
    first one's result, so both run on the whole row held by the block."""
    s = pick(SHAPES, size)
    g = new_kernel_graph()
    H, X, A = _inputs(g, s, b)
    bg = new_block_graph((b, 1, 1), 1)
    h, x, alpha = (bg.new_input(t, (0, -1, -1)) for t in (H, X, A))  # (1, n) each
    step = bg.mul(alpha, bg.sub(_block_rms_norm(bg, x, s.n), h))
    bg.new_output(_block_rms_norm(bg, bg.add(h, step), s.n), (0, -1, -1))
    (y,) = g.customized([H, X, A], bg)
    g.mark_output(y, "Y")
    return g


def make_inputs(graph: KernelGraph, rng: np.random.Generator) -> dict[str, np.ndarray]:
    dims = input_dims(graph)
    # nGPT keeps hidden states on the sphere (unit RMS here) and learns small step sizes.
    alpha = rng.uniform(0.0, 0.5, dims["alpha"]).astype(np.float32)
    return {"H": normal(rng, dims["H"]), "X": normal(rng, dims["X"], 3.0), "alpha": alpha}


register(
    Benchmark(
        name="ntrans",
        preset="default",
        description="H' = rms_norm(H + alpha * (rms_norm(X) - H)); H, X, alpha (b, 4096)",
        batches=(1, 8),
        build_spec=build_spec,
        build_experts=lambda size, b: {"fused": build_fused(size, b)},
        make_inputs=make_inputs,
    )
)
