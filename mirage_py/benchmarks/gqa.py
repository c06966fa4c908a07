"""gqa: grouped-query decode attention O = softmax(Q @ K) @ V: each of 2b KV groups has 256
query rows sharing one K and V (K stored head-dim-major, as the paper's benchmark takes it)."""

from __future__ import annotations

import numpy as np

from ..ir import KernelGraph, new_kernel_graph
from . import Benchmark, Size, register
from ._attention import SHAPES, Shape, flash_decoding, softmax_av
from ._common import DTYPE, input_dims, normal, pick


def _inputs(g: KernelGraph, s: Shape, b: int):
    q = g.new_input((2 * b, s.q, s.d), DTYPE, "Q")
    return q, g.new_input((2 * b, s.d, s.kv), DTYPE, "K"), g.new_input((2 * b, s.kv, s.d), DTYPE, "V")


def build_spec(size: Size, b: int) -> KernelGraph:
    s = pick(SHAPES, size)
    g = new_kernel_graph()
    q, k, v = _inputs(g, s, b)
    g.mark_output(softmax_av(g, g.matmul(q, k), v), "O")
    return g


def build_experts(size: Size, b: int) -> dict[str, KernelGraph]:
    """flash_decoding: two customized kernels. split_kv_reduce: the same first kernel, its
    splits combined by predefined reduce_sum and div kernels."""
    s = pick(SHAPES, size)
    out = {}
    for name, fused in (("flash_decoding", True), ("split_kv_reduce", False)):
        g = new_kernel_graph()
        q, k, v = _inputs(g, s, b)
        g.mark_output(flash_decoding(g, q, k, v, s, qk_norm=False, fused=fused), "O")
        out[name] = g
    return out


def make_inputs(graph: KernelGraph, rng: np.random.Generator) -> dict[str, np.ndarray]:
    dims = input_dims(graph)
    d = dims["Q"][-1]
    # Scores q.k of unit variance: exp stays far from float16's limit, and a row sum of
    # exp over the KV length (about kv * e^0.5) too.
    return {"Q": normal(rng, dims["Q"]), "K": normal(rng, dims["K"], d**-0.5), "V": normal(rng, dims["V"])}


register(
    Benchmark(
        name="gqa",
        preset="attention",
        description="O = softmax(Q @ K) @ V; Q (2b, 256, 64), K (2b, 64, 4096), V (2b, 4096, 64)",
        batches=(1, 8),
        build_spec=build_spec,
        build_experts=build_experts,
        make_inputs=make_inputs,
    )
)
