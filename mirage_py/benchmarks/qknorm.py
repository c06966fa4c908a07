"""qknorm: attention with QK-norm, O = softmax(rms_norm(Q) @ transpose(rms_norm(K))) @ V,
both norms over the head dim; K is sequence-major, as real models store it."""

from __future__ import annotations

import numpy as np

from ..ir import KernelGraph, new_kernel_graph
from . import Benchmark, Size, register
from ._attention import SHAPES, Shape, flash_decoding, softmax_av
from ._common import DTYPE, EPS, input_dims, normal, pick


def _inputs(g: KernelGraph, s: Shape, b: int):
    q = g.new_input((2 * b, s.q, s.d), DTYPE, "Q")
    return q, g.new_input((2 * b, s.kv, s.d), DTYPE, "K"), g.new_input((2 * b, s.kv, s.d), DTYPE, "V")


def build_spec(size: Size, b: int) -> KernelGraph:
    s = pick(SHAPES, size)
    g = new_kernel_graph()
    q, k, v = _inputs(g, s, b)
    scores = g.matmul(g.rms_norm(q, EPS), g.transpose(g.rms_norm(k, EPS)))
    g.mark_output(softmax_av(g, scores, v), "O")
    return g


def build_experts(size: Size, b: int) -> dict[str, KernelGraph]:
    """The gqa experts with both norms on the tiles of the first kernel: the head dim is
    whole in every Q and K tile, so a row's RMS needs nothing from other blocks."""
    s = pick(SHAPES, size)
    out = {}
    for name, fused in (("flash_decoding", True), ("split_kv_reduce", False)):
        g = new_kernel_graph()
        q, k, v = _inputs(g, s, b)
        g.mark_output(flash_decoding(g, q, k, v, s, qk_norm=True, fused=fused), "O")
        out[name] = g
    return out


def make_inputs(graph: KernelGraph, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Normalized rows have norm sqrt(d), so independent random Q and K would give scores
    of standard deviation sqrt(d) = 8 and exp would overflow float16. Instead Q lives mostly
    in the first half of the head dims and K in the second, each with a small component
    (eps) in the other half: normalized scores then have a standard deviation of about
    2 * sqrt(d) * eps / (1 + eps^2), which is 1 for d = 64 and eps = 1/16."""
    dims = input_dims(graph)
    d = dims["Q"][-1]
    eps = 1 / (d**0.5 + (d - 1) ** 0.5)  # the smaller root of 2 sqrt(d) eps = 1 + eps^2
    half = np.arange(d) < d // 2
    q_scale = np.where(half, 1.0, eps).astype(np.float32)
    k_scale = np.where(half, eps, 1.0).astype(np.float32)
    return {"Q": normal(rng, dims["Q"]) * q_scale, "K": normal(rng, dims["K"]) * k_scale, "V": normal(rng, dims["V"])}


register(
    Benchmark(
        name="qknorm",
        preset="attention",
        description="O = softmax(rms_norm(Q) @ transpose(rms_norm(K))) @ V; Q (2b, 256, 64), K, V (2b, 4096, 64)",
        batches=(1, 8),
        build_spec=build_spec,
        build_experts=build_experts,
        make_inputs=make_inputs,
    )
)
