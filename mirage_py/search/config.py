"""Search configuration: presets and the candidate sets generated from a spec's shapes.

Knobs and defaults follow what Mirage's search uses (MIRAGE-FACTS.md): kernel/block op
limits, at most one customized op (two for attention), grids from the input dims, a few
for-loop ranges, imap/omap/for-loop-dim candidates. Everything is explicit data so a
search is reproducible from its config alone (and the config is part of the cache key).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from ..ir.graph import KernelGraph, Map3

# Shared memory per block that a kernel may request (bytes), from NVIDIA's public specs:
# A100 (sm_80) 163 KB opt-in, H100 (sm_90) 227 KB opt-in (CUDA C++ Programming Guide,
# "Compute capabilities", table of technical specifications).
SMEM_LIMIT = {"sm_80": 163 * 1024, "sm_90": 227 * 1024}
# Streaming multiprocessors: A100 108, H100 SXM 132 (the whitepapers cited in codegen/cost.py).
SM_COUNT = {"sm_80": 108, "sm_90": 132}

# Ops the search explores (the IR has more). As in Mirage, no reductions other than the
# accumulators: an abstract expression does not say which dim a reduction runs over, so a
# free reduce_sum would pass the oracle along every dim and flood the search.
KERNEL_OPS = ("matmul", "exp", "square", "sqrt", "silu", "add", "mul", "div")
BLOCK_OPS = (
    "matmul", "exp", "square", "sqrt", "silu", "add", "mul", "div",
    "mul_scalar", "add_scalar", "rms_norm", "accum_sum", "accum_sum_lastdim",
)  # fmt: skip

IMAPS: tuple[Map3, ...] = ((0, -1, 1), (0, 1, -1), (0, 2, -1), (-1, 1, -1), (-1, -1, -1), (1, -1, -1), (0, -1, -1))
OMAPS: tuple[Map3, ...] = (
    (0, 1, -1), (0, 2, 1), (0, 2, -1), (0, -1, -1), (-1, 2, 1), (-1, 1, -1), (-1, 2, -1), (-1, -1, -1), (1, -1, -1),
)  # fmt: skip


@dataclass(frozen=True)
class SearchConfig:
    preset: str = "default"
    max_kernel_ops: int = 4  # kernel ops added to the inputs (Mirage: 5 counting an input)
    max_block_ops: int = 9  # block ops, input ops not counted
    max_customized: int = 1
    max_block_outputs: int = 2
    forloop_ranges: tuple[int, ...] = (1, 4, 16, 64)
    tile_widths: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
    min_blocks: int = 32
    max_blocks: int = 4096
    attention_grids: bool = False
    kernel_ops: tuple[str, ...] = KERNEL_OPS
    block_ops: tuple[str, ...] = BLOCK_OPS
    imaps: tuple[Map3, ...] = IMAPS
    omaps: tuple[Map3, ...] = OMAPS
    forloop_dims: tuple[int, ...] = (-1, 0, 1, 2)
    target: str = "sm_90"
    # State dedup: "ordered" (fingerprints + what the canonical order still allows, the
    # default), "naive" (fingerprints alone: unsound, kept to measure what it loses) or "off".
    dedup: str = "ordered"

    @property
    def smem_limit(self) -> int:
        return SMEM_LIMIT[self.target]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


PRESETS: dict[str, SearchConfig] = {
    "default": SearchConfig(),
    "mlp": SearchConfig(preset="mlp"),
    "attention": SearchConfig(
        preset="attention",
        max_customized=2,
        attention_grids=True,
        # Attention kernels map a head/batch dim and split the KV length: Mirage's
        # attention preset drops the fully replicated imaps.
        imaps=((0, -1, 1), (0, 1, -1), (0, 2, -1), (-1, 1, -1), (0, -1, -1)),
        # Keys stored sequence-major need a transposed tile before q @ kᵀ.
        block_ops=BLOCK_OPS + ("transpose",),
    ),
    "lora": SearchConfig(preset="lora", block_ops=BLOCK_OPS + ("concat_matmul",)),
}


def get_config(name: str, **overrides: object) -> SearchConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown search config {name!r} (known: {', '.join(PRESETS)})")
    return dataclasses.replace(PRESETS[name], **overrides)  # type: ignore[arg-type]


def grid_candidates(spec: KernelGraph, cfg: SearchConfig) -> list[Map3]:
    """Grids generated from the spec's input dims, as Mirage does: for each distinct dim d,
    1-D grids of d/w blocks for tile widths w, within [min_blocks, max_blocks]; a
    (batch, 1, 1) grid; and for attention (batch, d/w) grids."""
    dims = sorted({d for t in spec.inputs for d in spec.types[t].dims})
    batch = spec.types[spec.inputs[0]].dims[0]
    out: list[Map3] = []

    def push(g: Map3) -> None:
        if g not in out:
            out.append(g)

    for d in dims:
        for w in cfg.tile_widths:
            if d % w == 0 and cfg.min_blocks <= d // w <= cfg.max_blocks:
                push((d // w, 1, 1))
    push((batch, 1, 1))
    if cfg.attention_grids:
        for d in dims:
            for w in (8, 64, 128, 256):
                if d % w == 0 and 1 < d // w and batch * (d // w) <= cfg.max_blocks:
                    push((batch, d // w, 1))
        push((batch, 16, 4))
    # Promising first: grids that fill the GPU about once (blocks near the SM count) before
    # those that leave SMs idle or run in waves. Depth first, the first grids take most of
    # a time-limited run; generated order put flash decoding's (2, 16, 4) last of 14.
    # Among grids of as many blocks, those that split more dims first: each input can then
    # be split along its own dim, with smaller tiles and less replicated loading (gqa's
    # (128, 1, 1), (2, 64, 1) and (2, 16, 4) tie at 128 blocks; the expert's opening was
    # the 2 362nd of the generated order, the 148th with (2, 16, 4) first).
    sms = SM_COUNT[cfg.target]
    return sorted(out, key=lambda g: (abs(math.log2(math.prod(g) / sms)), -sum(d > 1 for d in g)))
