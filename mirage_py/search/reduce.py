"""Search on reduced shapes that keep the tiling structure, then lift to full shape.

Fingerprinting every state at the paper's shapes means finite-field matmuls of 4096 x 6144
per state. The search instead runs on a *reduced spec*: each input dim n becomes the
smallest size that every grid size and for-loop range the config may split it by still
divides (at least one element per tile), so every μGraph the search can build at full size
has the same structure at reduced size, with smaller tiles. A candidate found there is
*lifted*: rebuilt from the full-size inputs with the same grids, maps, loops and ops (dims
follow from the inputs; scalars the reduced spec derived from its dims, such as rms_norm's
1/n, are mapped back). The lifted graph is then checked at full shape (validation, shared
memory, finite-field equivalence), so a reduced-shape coincidence can cost a candidate but
never admit a wrong one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from ..ir.graph import BlockGraph, KernelGraph, TensorType
from .config import SearchConfig, grid_candidates

# A split whose full-size tile is narrower than this is never a real kernel's; ignoring it
# lets the reduced dims be smaller.
MIN_TILE = 8


@dataclass
class Reduction:
    spec: KernelGraph  # the reduced spec the search runs on
    dims: dict[int, int]  # full dim size -> reduced size
    constants: dict[Fraction, Fraction]  # reduced-spec scalar -> full-spec scalar

    @property
    def identity(self) -> bool:
        return all(k == v for k, v in self.dims.items())


def _splits(cfg: SearchConfig, spec: KernelGraph) -> set[int]:
    sizes = {g for grid in grid_candidates(spec, cfg) for g in grid} | {1}
    return {g * f for g in sizes for f in set(cfg.forloop_ranges) | {1}}


# Dims up to this size are kept: they are cheap, and small dims (a batch, a head dim) are
# where a reduced shape would otherwise degenerate to tiles of one element.
KEEP = 64


def reduced_size(n: int, splits: set[int]) -> int:
    """The lcm of every split of n that leaves full-size tiles of at least MIN_TILE, grown
    by doubling to at least min(n, KEEP)."""
    m = 1
    for s in splits:
        if n % s == 0 and n // s >= MIN_TILE:
            m = math.lcm(m, s)
    while m < min(n, KEEP) and n % (2 * m) == 0:
        m *= 2
    return m if m >= min(n, KEEP) and n % m == 0 else n


def _distinct(dims: dict[int, int]) -> dict[int, int]:
    """Reduced sizes made distinct, smallest dim first, by doubling a size another dim
    already took (while it still divides its dim). Two dims of one reduced size make shapes
    that differ at full size equal (gqa's 256 query rows and 64-wide heads both 64): a
    square tile then admits transposed layouts that fail to lift, and dedup can keep the
    unliftable one of two states with equal fingerprints. Doubling keeps every split the
    size was a multiple of. A dim that cannot get a free size is not reduced."""
    out: dict[int, int] = {}
    for n in sorted(dims):
        m = dims[n]
        while m in out.values() and m < n and n % (2 * m) == 0:
            m *= 2
        out[n] = n if m in out.values() else m
    return out


def dim_constants(spec: KernelGraph) -> list[Fraction]:
    """Scalars a spec derives from its dims (in a fixed walk order)."""
    return [Fraction(1, spec.types[n.inputs[0]].dims[-1]) for n in spec.nodes if n.op == "rms_norm"]


def reduce_spec(spec: KernelGraph, cfg: SearchConfig) -> Reduction:
    splits = _splits(cfg, spec)
    full = sorted({d for t in spec.inputs for d in spec.types[t].dims})
    dims = _distinct({n: reduced_size(n, splits) for n in full})
    small = rebuild(spec, {tid: tuple(dims[d] for d in spec.types[tid].dims) for tid in spec.inputs})
    constants = {r: f for r, f in zip(dim_constants(small), dim_constants(spec)) if r != f}
    own = {v for n in spec.nodes for v in n.attrs.values() if isinstance(v, Fraction)}
    if own & set(constants) or len(set(constants.values())) < len(constants):
        # A reduced 1/n would be mistaken for a scalar of the spec's own: do not reduce.
        return Reduction(spec, {n: n for n in full}, {})
    return Reduction(small, dims, constants)


def rebuild(
    kg: KernelGraph, input_dims: dict[int, tuple[int, ...]], constants: dict[Fraction, Fraction] | None = None
) -> KernelGraph:
    """`kg` rebuilt on inputs of other dims: same ops, grids, maps and loops; scalar
    attributes mapped through `constants`. Raises GraphError if the structure does not fit."""
    cmap = constants or {}
    out = KernelGraph()
    ids: dict[int, int] = {}
    for tid, name in zip(kg.inputs, kg.input_names):
        ids[tid] = out.new_input(input_dims[tid], kg.types[tid].dtype, name).id
    for n in kg.nodes:
        ins = [ids[i] for i in n.inputs]
        if n.op == "customized":
            bg = _rebuild_block(n.attrs["block_graph"], [out.types[i] for i in ins], cmap)
            made = out.customized(ins, bg)
        else:
            made = [out.add_op(n.op, ins, **_map_attrs(n.attrs, cmap))]
        ids.update(zip(n.outputs, (m.id for m in made)))
    for o, name in zip(kg.outputs, kg.output_names):
        out.mark_output(ids[o], name)
    return out


def _map_attrs(attrs: dict, cmap: dict[Fraction, Fraction]) -> dict:
    return {k: (cmap.get(v, v) if isinstance(v, Fraction) else v) for k, v in attrs.items()}


def _rebuild_block(bg: BlockGraph, in_types: list[TensorType], cmap: dict[Fraction, Fraction]) -> BlockGraph:
    out = BlockGraph(bg.grid_dims, bg.forloop_range, bg.block_dims)
    ids: dict[int, int] = {}
    for tid, bi, t in zip(bg.inputs, bg.block_inputs, in_types):
        ids[tid] = out.new_input(t, bi.imap, bi.forloop_dim).id
    for n in bg.nodes:
        made = out.add_op(n.op, [ids[i] for i in n.inputs], **_map_attrs(n.attrs, cmap))
        ids[n.outputs[0]] = made.id
    for bo in bg.block_outputs:
        out.new_output(ids[bo.tensor], bo.omap)
    return out


def lift(cand: KernelGraph, full_spec: KernelGraph, red: Reduction) -> KernelGraph:
    """A reduced-shape candidate rebuilt at the full spec's shapes."""
    dims = {tid: full_spec.types[ft].dims for tid, ft in zip(cand.inputs, full_spec.inputs)}
    return rebuild(cand, dims, red.constants)
