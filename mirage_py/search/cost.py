"""A first ranking cost: DRAM bytes moved plus a per-launch cost.

It stands in until the codegen cost model (issue 5) exists; the pipeline, not the search,
chooses which ranking to use. Bytes: a customized kernel reads each input tile once per
block and iteration that loads it (replicated tiles are re-read: no L2 credit here) and
writes its outputs once; a predefined kernel reads its inputs and writes its output.
Constants are H100 SXM's public figures (3.35 TB/s HBM3) and a typical launch gap.
"""

from __future__ import annotations

import math

from ..ir.dtypes import ITEMSIZE
from ..ir.graph import BlockGraph, KernelGraph

HBM_BYTES_PER_US = 3.35e6  # 3.35 TB/s
LAUNCH_US = 2.0


def _bytes(dims: tuple[int, ...], dtype: str) -> int:
    return math.prod(dims) * ITEMSIZE[dtype]


def block_graph_bytes(bg: BlockGraph) -> int:
    blocks = math.prod(bg.grid_dims)
    total = 0
    for tid, bi in zip(bg.inputs, bg.block_inputs):
        tile = _bytes(bg.types[tid].dims, bi.dtype)
        iters = bg.forloop_range if bi.forloop_dim >= 0 else 1
        total += tile * blocks * iters
    for k in range(len(bg.block_outputs)):
        t = bg.output_type(k)
        total += _bytes(t.dims, t.dtype)
    return total


def dram_bytes(kg: KernelGraph) -> int:
    total = 0
    for node in kg.nodes:
        if node.op == "customized":
            total += block_graph_bytes(node.attrs["block_graph"])
        else:
            total += sum(_bytes(kg.types[i].dims, kg.types[i].dtype) for i in set(node.inputs))
            total += sum(_bytes(kg.types[o].dims, kg.types[o].dtype) for o in node.outputs)
    return total


def simple_cost_us(kg: KernelGraph) -> float:
    """Modelled microseconds: DRAM time plus launches (no compute term yet)."""
    return dram_bytes(kg) / HBM_BYTES_PER_US + LAUNCH_US * len(kg.nodes)
