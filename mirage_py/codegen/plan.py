"""Plan one kernel (a block graph): placements, layouts, register tiles, steps, their order
and shared-memory offsets.

1. Expand: rms_norm becomes its definition (square, row sum, scale, sqrt, divide); with
   F = 1, accumulators are identities and accum_sum_lastdim a row sum (the canonical form).
2. Stages: per-iteration tensors run in the loop, accumulators after it; loop-invariant
   tensors before the loop when the loop needs them, else after it.
3. Placement: matmul operands live in shared memory (16-bit tiles for tensor cores, padded
   so ldmatrix rows stay 16-byte aligned and conflict-free, zero-padded to 16 rows); a
   transpose becomes a view (its consumer's load layout); other elementwise chains are
   computed where they are read (thread-level fusion) unless several consumers would repeat
   an expensive op; inputs nobody needs in shared memory are read from global memory.
4. Sinks: a value computed from a register tile (matmul accumulators, row sums, reductions)
   element for element is written inside that tile's loop (the epilogue); anything that
   reads a register tile otherwise gets it from shared memory.
5. Order: steps are levelled by their shared-memory dependencies (the fewest barriers: one
   per level), as soon or as late as possible, whichever needs less shared memory.
6. Offsets: tensors whose live ranges (in levels) do not overlap share bytes, first fit.

A plan over the target's shared-memory limit raises InputError.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ..ir.dtypes import ITEMSIZE
from ..ir.errors import InputError
from ..ir.execute import F32_KINDS
from ..ir.graph import GRID, BlockGraph
from ..ir.ops import ACCUMULATORS, ELEMENTWISE, get_op
from ..search.config import SMEM_LIMIT
from .expr import ExprBuilder
from .tiles import PT, Reg, Sink, Step, Tile, identity_coords, row_major_strides, tile_strides

THREADS = 128
# Prefetch depth of per-iteration tiles: up to MAX_STAGES buffers while the kernel's shared
# memory stays within PIPELINE_BUDGET (two blocks of that size still fit an A100 SM).
MAX_STAGES = 4
PIPELINE_BUDGET = 80 * 1024
# A sum this long over fewer outputs than warps is split over the whole block.
BLOCK_REDUCE_MIN = 1024
WARPS = THREADS // 32
ALIGN = 16
# Elementwise ops cheap enough to recompute for every consumer rather than store.
CHEAP = frozenset({"add", "sub", "mul", "neg", "mul_scalar", "add_scalar", "square", "relu", "transpose"})
SIXTEEN_BIT = frozenset({"float16", "bfloat16"})


@dataclass(frozen=True)
class Target:
    """What differs between GPU generations, as data (per-target overrides of one renderer)."""

    name: str
    smem_limit: int
    cp_async: bool = True  # cp.async exists from sm_80 on


TARGETS: dict[str, Target] = {
    "sm_80": Target("sm_80", SMEM_LIMIT["sm_80"]),
    "sm_90": Target("sm_90", SMEM_LIMIT["sm_90"]),
}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise InputError(f"unknown target {name!r} (known: {', '.join(TARGETS)})")
    return TARGETS[name]


@dataclass
class GlobalIO:
    """A kernel tensor a block reads (input) or writes (output): its tile in the grid."""

    tensor: int  # block tensor id
    param: str  # kernel parameter name
    dtype: str
    dims: tuple[int, ...]  # the kernel tensor's dims
    strides: tuple[int, ...]  # row-major strides of the kernel tensor
    block_terms: list[tuple[str, int]]  # (blockIdx component, element stride)
    iter_stride: int = 0  # elements between consecutive for-loop tiles (inputs)


@dataclass
class MatmulInfo:
    pairs: list[tuple[int, int]]  # (A, B) operands; concat_matmul has two
    m: int
    n: int
    ks: list[int]
    mma: bool
    batch: int


@dataclass
class KernelPlan:
    name: str
    op: str
    bg: BlockGraph
    target: Target
    tensors: dict[int, PT]
    inputs: list[GlobalIO]
    outputs: list[GlobalIO]
    output_tensors: list[int]
    steps: list[Step]
    matmuls: dict[int, MatmulInfo]
    smem_bytes: int = 0
    order: str = "asap"
    notes: list[str] = field(default_factory=list)

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.bg.grid_dims

    @property
    def forloop(self) -> int:
        return self.bg.forloop_range

    @property
    def threads(self) -> int:
        return THREADS

    def levels(self, stage: str) -> list[list[Step]]:
        steps = [s for s in self.steps if s.stage == stage and s.kind != "load"]
        if not steps:
            return []
        top = max(s.level for s in steps)
        lo = 1 if stage == "pre" else 0
        return [[s for s in steps if s.level == lv] for lv in range(lo, top + 1)]

    def loads(self, stage: str) -> list[Step]:
        return [s for s in self.steps if s.kind == "load" and s.stage == stage]


# ---------------------------------------------------------------------------------------
# 1-2. Expansion and stages


def _expand(bg: BlockGraph) -> tuple[dict[int, PT], list[int]]:
    """Plan tensors for the block graph's tensors (rms_norm expanded, F = 1 accumulators
    removed) and the tensor behind each block output."""
    f1 = bg.forloop_range == 1
    alias: dict[int, int] = {}
    ts: dict[int, PT] = {}
    next_id = len(bg.types)
    for k, tid in enumerate(bg.inputs):
        t = bg.types[tid]
        ts[tid] = PT(tid, t.dims, t.dtype, "input", input_index=k)
    for node in bg.nodes:
        ins = tuple(alias.get(i, i) for i in node.inputs)
        out = node.outputs[0]
        t = bg.types[out]
        if f1 and node.op == "accum_sum":
            alias[out] = ins[0]
        elif f1 and node.op == "accum_sum_lastdim":
            ts[out] = PT(out, t.dims, t.dtype, "reduce_sum", ins, {"dim": len(t.dims) - 1, "size": 1})
        elif node.op == "rms_norm":
            next_id = _expand_rms_norm(ts, ins[0], out, t.dims, t.dtype, node.attrs["eps"], next_id)
        else:
            ts[out] = PT(out, t.dims, t.dtype, node.op, ins, dict(node.attrs))
    for tid, p in ts.items():
        p.stage = _stage_of(bg, tid, p)
    outs = [alias.get(o.tensor, o.tensor) for o in bg.block_outputs]
    return ts, outs


def _expand_rms_norm(
    ts: dict[int, PT], x: int, out: int, dims: tuple[int, ...], dtype: str, eps: Fraction, nid: int
) -> int:
    """x / sqrt(sum(x^2) / n + eps): the definition every interpreter uses."""
    row = dims[:-1] + (1,)
    chain: list[tuple[str, tuple[int, ...] | None, dict[str, Any], tuple[int, ...]]] = [
        ("square", (x,), {}, dims),
        ("reduce_sum", None, {"dim": len(dims) - 1, "size": 1}, row),
        ("mul_scalar", None, {"c": Fraction(1, dims[-1])}, row),
        ("add_scalar", None, {"c": eps}, row),
        ("sqrt", None, {}, row),
    ]
    prev = x
    for op, args, attrs, d in chain:
        ts[nid] = PT(nid, d, dtype, op, args or (prev,), attrs)
        ts[nid].stage = "expanded"
        prev, nid = nid, nid + 1
    ts[out] = PT(out, dims, dtype, "div", (x, prev))
    return nid


def _stage_of(bg: BlockGraph, tid: int, p: PT) -> str:
    if p.stage == "expanded" or tid not in bg.stage:
        return "expanded"
    return {"loop": "loop", "post": "post", "invariant": "invariant"}[bg.stage[tid]]


def _link(ts: dict[int, PT], outs: list[int]) -> None:
    for p in ts.values():
        p.consumers = []
        p.outputs = []
    for tid, p in ts.items():
        for a in p.args:
            ts[a].consumers.append(tid)
    for k, o in enumerate(outs):
        ts[o].outputs.append(k)


def _topo(ts: dict[int, PT]) -> list[int]:
    order: list[int] = []
    seen: set[int] = set()

    def visit(t: int) -> None:
        if t in seen:
            return
        seen.add(t)
        for a in ts[t].args:
            visit(a)
        order.append(t)

    for t in sorted(ts):
        visit(t)
    return order


def _use_stage(ts: dict[int, PT], consumer: int) -> str:
    """The stage in which a consumer reads its arguments (an accumulator reads in the loop)."""
    c = ts[consumer]
    return "loop" if c.op in ACCUMULATORS else c.stage


def _assign_stages(ts: dict[int, PT], order: list[int], looped: bool) -> None:
    """Expanded tensors take their argument's stage; loop-invariant ones run before the loop
    when a loop step (or another pre step) needs them, else after it."""
    for t in order:
        p = ts[t]
        if p.stage == "expanded":
            stages = {ts[a].stage for a in p.args}
            p.stage = "loop" if "loop" in stages else "post" if "post" in stages else "invariant"
    for t in reversed(order):
        p = ts[t]
        if p.stage == "invariant":
            pre = looped and any(_use_stage(ts, c) in ("loop", "pre") for c in p.consumers)
            p.stage = "pre" if pre else "post"


# ---------------------------------------------------------------------------------------
# 3. Placement


def _matmul_info(ts: dict[int, PT], t: int) -> MatmulInfo:
    p = ts[t]
    a = p.args
    pairs = [(a[0], a[1])] if p.op == "matmul" else [(a[0], a[2]), (a[1], a[3])]
    ks = [ts[x].dims[-1] for x, _ in pairs]
    m, n = p.dims[-2], p.dims[-1]
    mma = p.dtype in SIXTEEN_BIT and n % 8 == 0 and all(k % 16 == 0 for k in ks)
    return MatmulInfo(pairs, m, n, ks, mma, math.prod(p.dims[:-2]))


@dataclass
class _Need:
    """What a matmul asks of a shared-memory base tensor."""

    store: str | None = None  # element type forced by a tensor-core operand
    rows_to: int = 1  # pad rows up to a multiple of this (with zeros)
    cols_to: int = 1
    mma: bool = False


def _require(ts: dict[int, PT], needs: dict[int, _Need], t: int, role: str, transposed: bool, info: MatmulInfo) -> None:
    p = ts[t]
    if p.op == "transpose":
        p.kind = "view"
        _require(ts, needs, p.args[0], role, not transposed, info)
        return
    need = needs.setdefault(t, _Need())
    if info.mma:
        need.mma = True
        need.store = ts[t].dtype
        if role == "A" and info.m % 16:
            if transposed:
                need.cols_to = 16
            else:
                need.rows_to = 16


def _place(ts: dict[int, PT], order: list[int], matmuls: dict[int, MatmulInfo], looped: bool) -> dict[int, _Need]:
    needs: dict[int, _Need] = {}
    for info in matmuls.values():
        for a, b in info.pairs:
            _require(ts, needs, a, "A", False, info)
            _require(ts, needs, b, "B", False, info)
    for t in order:
        p = ts[t]
        if p.kind == "view":
            continue
        required = t in needs
        if p.op == "input":
            # A per-iteration tile read by several steps is staged too: one cp.async copy,
            # prefetched during the previous iteration, instead of several global reads.
            reused = p.stage == "loop" and len(p.consumers) + len(p.outputs) > 1
            p.kind = "staged" if required or reused else "global"
        elif p.op == "transpose":
            p.kind = "inline"
        elif p.op in ELEMENTWISE:
            p.kind = "smem" if required or not _inlinable(ts, p) else "inline"
        elif p.op in ("matmul", "concat_matmul"):
            persistent = looped and len(p.consumers) == 1 and not p.outputs and ts[p.consumers[0]].op == "accum_sum"
            p.kind = "accsrc" if persistent else "reg"
        elif p.op in ("reduce_sum", "accum_sum", "accum_sum_lastdim"):
            p.kind = "reg"
        elif p.op == "concat":
            p.kind = "smem"
        else:
            raise InputError(f"codegen: no placement for block op {p.op!r}")
        if p.kind == "reg" and required:
            p.self_sink = True
    return needs


def _inlinable(ts: dict[int, PT], p: PT) -> bool:
    uses = len(p.consumers) + len(p.outputs)
    same_stage = all(_use_stage(ts, c) == p.stage for c in p.consumers)
    return same_stage and (uses <= 1 or p.op in CHEAP)


# ---------------------------------------------------------------------------------------
# Layouts


def _store_type(p: PT, need: _Need | None) -> str:
    if need is not None and need.store is not None:
        return need.store
    if p.op == "input":
        return p.dtype
    kind = get_op(p.op).kind
    return "float32" if kind in F32_KINDS or p.op == "exp" else p.dtype


def _round(n: int, m: int) -> int:
    return -(-n // m) * m


def _make_tile(p: PT, need: _Need | None) -> Tile:
    store = _store_type(p, need)
    dims = p.dims
    rows, cols = (dims[-2], dims[-1]) if p.rank >= 2 else (1, dims[-1])
    outer = math.prod(dims[:-2]) if p.rank > 2 else 1
    rows_p = _round(rows, need.rows_to) if need else rows
    cols_p = _round(cols, need.cols_to) if need else cols
    ld = cols_p
    if need is not None and need.mma:
        # ldmatrix reads 16-byte row segments: ld a multiple of 8 elements; +8 more moves
        # consecutive rows to different banks when a row is a multiple of 128 bytes.
        ld = _round(cols_p, 8)
        if (ld * ITEMSIZE[store]) % 128 == 0:
            ld += 8
    zero = rows_p > rows or cols_p > cols
    return Tile(store, outer, rows, cols, rows_p, cols_p, ld, zero_pad=zero)


def _layouts(ts: dict[int, PT], order: list[int], needs: dict[int, _Need], bg: BlockGraph) -> None:
    for t in order:
        p = ts[t]
        if p.kind == "global":
            p.strides = row_major_strides(bg.block_inputs[p.input_index].dims)
        elif p.kind in ("staged", "smem") or (p.kind == "reg" and p.self_sink):
            p.tile = _make_tile(p, needs.get(t))
            p.base = t
            p.strides = tile_strides(p.dims, p.tile)
            if p.kind == "staged" and p.stage == "loop":
                p.tile.copies = 2  # double buffered: the next iteration's copy lands meanwhile
        elif p.kind == "view":
            src = ts[p.args[0]]
            p.base = src.base
            p.strides = src.strides[:-2] + (src.strides[-1], src.strides[-2])


def _scratch(ts: dict[int, PT]) -> None:
    """A float per warp for each block-wide reduction (mp::block_sum's partial sums)."""
    for p in list(ts.values()):
        if p.reg is not None and p.reg.block_mode and p.scratch < 0:
            sid = max(ts) + 1
            ts[sid] = PT(sid, (WARPS,), "float32", "scratch", stage=p.stage, kind="smem", base=sid, strides=(1,))
            ts[sid].tile = Tile("float32", 1, 1, WARPS, 1, WARPS, WARPS)
            p.scratch = sid


# ---------------------------------------------------------------------------------------
# Register tiles


def _warp_grid(mp: int, n: int) -> tuple[int, int]:
    """Warps over a mp x n tile (16 x 8 fragments): as many warps busy as possible, then
    warp tiles as square as possible."""
    best: tuple[tuple[int, int], tuple[int, int]] | None = None
    for wm in (1, 2, 4):
        for wn in (1, 2, 4):
            if wm * wn > WARPS or (mp // 16) % wm or (n // 8) % wn:
                continue
            score = (wm * wn, -abs(mp // wm - n // wn))
            if best is None or score > best[0]:
                best = (score, (wm, wn))
    assert best is not None
    return best[1]


def _matmul_reg(info: MatmulInfo, key: tuple[object, ...] | None) -> Reg:
    if info.mma:
        mp = _round(info.m, 16)
        wm, wn = _warp_grid(mp, info.n)
        mt, nt = mp // 16 // wm, info.n // 8 // wn
        k = key or ("warp", info.batch, info.m, info.n, wm, wn, mt, nt)
        return Reg("warp", k, info.batch, info.m, mp, info.n, wm, wn, mt, nt)
    per = info.m * info.n
    nreg = -(-per // THREADS)
    return Reg("thread", key or ("thread", info.batch, per), info.batch, info.m, info.m, info.n, nreg=nreg)


def _regs(ts: dict[int, PT], matmuls: dict[int, MatmulInfo]) -> None:
    for t, p in ts.items():
        if p.kind != "reg":
            continue
        if p.op in ("matmul", "concat_matmul"):
            p.reg = _matmul_reg(matmuls[t], ("mm", t))
        elif p.op == "reduce_sum":
            x = ts[p.args[0]]
            d = p.attrs["dim"]
            m = x.dims[d] // p.attrs["size"]
            block = m >= BLOCK_REDUCE_MIN and p.numel < WARPS
            p.reg = Reg("loop", ("red", t), warp_mode=not block and d == x.rank - 1 and m >= 32, block_mode=block)
        elif p.op == "accum_sum":
            src = ts[p.args[0]]
            if src.kind == "accsrc":
                p.reg = _matmul_reg(matmuls[src.id], None)
            else:
                p.reg = Reg("thread", ("thread", 1, p.numel), 1, 1, 1, p.numel, nreg=-(-p.numel // THREADS))
        elif p.op == "accum_sum_lastdim":
            x = ts[p.args[0]]
            rows, length = p.numel, x.dims[-1]
            warp_mode = length >= 32
            nreg = -(-rows // (WARPS if warp_mode else THREADS))
            p.reg = Reg("rows", ("rows", rows, warp_mode), m=rows, n=length, nreg=nreg, warp_mode=warp_mode)


# ---------------------------------------------------------------------------------------
# 4. Sinks


def sink_value(ts: dict[int, PT], sink: Sink, eb: ExprBuilder, coords: tuple[str, ...]) -> str:
    """The float value a sink writes, at `coords` of its tensor."""
    p = ts[sink.tensor]
    if sink.kind == "smem" and p.kind == "smem" and p.op in ELEMENTWISE:
        return eb.op_text(p, coords)
    if sink.kind == "smem" and p.kind == "reg":
        return eb.regs[sink.tensor][1]
    return eb.value(sink.tensor, coords)


def _probe(ts: dict[int, PT], sink: Sink, regs: dict[int, tuple[tuple[str, ...], str]] | None = None) -> ExprBuilder:
    eb = ExprBuilder(ts, dict(regs or {}), probe=True)
    ident = identity_coords(ts[sink.tensor].dims)
    value = sink_value(ts, sink, eb, ident)
    eb.lines.append(value)
    return eb


def _early(ts: dict[int, PT], base: int, stage: str) -> bool:
    """Is shared-memory tensor `base` written before any step of `stage` runs (by a load,
    an accumulator spill, or an earlier stage)?"""
    p = ts[base]
    if p.kind == "staged":
        return p.stage != "loop" or stage == "loop"
    if p.kind == "reg" and p.op in ACCUMULATORS:
        return stage == "post"
    return _STAGE_RANK[p.stage] < _STAGE_RANK[stage]


_STAGE_RANK = {"pre": 0, "loop": 1, "post": 2}


Key = tuple[object, ...]


def _sinks(ts: dict[int, PT], outs: list[int]) -> tuple[dict[Key, list[Sink]], dict[Key, set[int]]]:
    """Assign each value computed from a register tile to that tile's loop when it reads the
    tile element for element; mark register tensors read any other way as stored. Returns
    the sinks of each register-tile key and the register tensors its loop reads."""
    cands = [Sink("smem", t) for t, p in ts.items() if p.kind == "smem" and p.op in ELEMENTWISE]
    cands += [Sink("out", t, k) for k, t in enumerate(outs)]
    groups: dict[Key, list[Sink]] = {}
    members: dict[Key, set[int]] = {}
    for s in cands:
        eb = _probe(ts, s)
        regs = eb.reg_leaves()
        if not regs:
            continue
        key = _fusable(ts, s, eb)
        if key is None:
            for leaf in regs:
                ts[leaf.tensor].self_sink = True
            continue
        groups.setdefault(key, []).append(s)
        for leaf in regs:
            if ts[leaf.tensor].reg.key != key:  # type: ignore[union-attr]
                ts[leaf.tensor].self_sink = True
            else:
                members.setdefault(key, set()).add(leaf.tensor)
    # Anything else that reads a register tile (reductions, accumulators, concat) reads it
    # from shared memory.
    for p in ts.values():
        if p.kind in ("reg", "smem") and p.op in ("reduce_sum", "accum_sum", "accum_sum_lastdim", "concat"):
            for a in p.args:
                if ts[a].kind == "accsrc":
                    continue
                eb = ExprBuilder(ts, probe=True)
                eb.value(a, identity_coords(ts[a].dims))
                for leaf in eb.reg_leaves():
                    ts[leaf.tensor].self_sink = True
    return groups, members


def _fusable(ts: dict[int, PT], s: Sink, eb: ExprBuilder) -> Key | None:
    p = ts[s.tensor]
    ident = identity_coords(p.dims)
    regs = eb.reg_leaves()
    driver = next(
        (
            ts[r.tensor]
            for r in regs
            if r.coords == ident and ts[r.tensor].dims == p.dims and ts[r.tensor].stage == p.stage
        ),
        None,
    )
    if driver is None or driver.reg is None:
        return None
    key = driver.reg.key
    shareable = driver.op in ACCUMULATORS
    for leaf in regs:
        r = ts[leaf.tensor]
        assert r.reg is not None
        if r.reg.key == key and (leaf.coords != ident or r.dims != p.dims or (not shareable and r.id != driver.id)):
            return None
        stored_before = (r.op in ACCUMULATORS and p.stage == "post") or _STAGE_RANK[r.stage] < _STAGE_RANK[p.stage]
        if r.reg.key != key and not stored_before:
            return None
    if any(not _early(ts, b, p.stage) for b in eb.smem_reads()):
        return None
    return key


# ---------------------------------------------------------------------------------------
# Steps


def _steps(
    ts: dict[int, PT], outs: list[int], groups: dict[Key, list[Sink]], members: dict[Key, set[int]]
) -> list[Step]:
    steps: list[Step] = []
    fused = {s for sinks in groups.values() for s in sinks}
    for t in _topo(ts):
        p = ts[t]
        if p.kind == "staged":
            steps.append(Step("load", "loop" if p.stage == "loop" else "pre", t, writes={t}))
        elif p.kind == "smem" and p.op in ELEMENTWISE and Sink("smem", t) not in fused:
            steps.append(Step("elt", p.stage, t, [Sink("smem", t)]))
        elif p.kind == "smem" and p.op == "concat":
            steps.append(Step("concat", p.stage, t, [Sink("smem", t)]))
        elif p.kind == "reg":
            steps += _reg_steps(ts, p, groups, members)
    for k, t in enumerate(outs):
        if Sink("out", t, k) not in fused:
            steps.append(Step("store", ts[t].stage if ts[t].stage != "loop" else "post", t, [Sink("out", t, k)]))
    for key, sinks in groups.items():
        if key[0] in ("mm", "red"):
            continue
        group = sorted(members[key])
        steps.append(Step("epilogue", "post", group[0], sinks, group=group))
    return steps


def _reg_steps(ts: dict[int, PT], p: PT, groups: dict[Key, list[Sink]], members: dict[Key, set[int]]) -> list[Step]:
    assert p.reg is not None
    own = list(groups.get(p.reg.key, [])) if p.op not in ACCUMULATORS else []
    if p.self_sink and p.op not in ACCUMULATORS:
        own.insert(0, Sink("smem", p.id))
    if p.op in ("matmul", "concat_matmul"):
        return [Step("matmul", p.stage, p.id, own, group=[p.id])] if own else []
    if p.op == "reduce_sum":
        return [Step("reduce", p.stage, p.id, own, group=[p.id])] if own else []
    used = p.self_sink or any(p.id in m for m in members.values())
    if not used:
        return []
    src = ts[p.args[0]]
    kind = "matmul" if src.kind == "accsrc" else "acc_elem" if p.op == "accum_sum" else "acc_rows"
    out = [Step(kind, "loop", p.id, group=[src.id] if kind == "matmul" else [])]
    if p.self_sink:
        out.append(Step("spill", "post", p.id, [Sink("smem", p.id)], group=[p.id]))
    return out


def step_regs(ts: dict[int, PT], step: Step) -> dict[int, tuple[tuple[str, ...], str]]:
    """Register values a step's loop holds for its sinks: tensor -> (coords, variable)."""
    if step.kind == "epilogue":
        members = step.group
    elif step.kind in ("reduce", "spill") or (step.kind == "matmul" and ts[step.target].op not in ACCUMULATORS):
        members = [step.target]
    else:
        return {}
    return {m: (identity_coords(ts[m].dims), f"r_t{m}") for m in members}


def _reads_writes(ts: dict[int, PT], matmuls: dict[int, MatmulInfo], step: Step) -> None:
    regs = step_regs(ts, step)
    for s in step.sinks:
        if s.kind == "smem":
            step.writes.add(s.tensor)
        if step.kind == "concat":
            continue
        eb = ExprBuilder(ts, dict(regs))
        sink_value(ts, s, eb, identity_coords(ts[s.tensor].dims))
        step.reads |= eb.smem_reads()
    p = ts[step.target]
    if step.kind == "matmul":
        src = ts[step.group[0]] if step.group else p
        info = matmuls[src.id]
        for a, b in info.pairs:
            step.reads |= {ts[a].base, ts[b].base}
    elif step.kind in ("reduce", "acc_elem", "acc_rows", "concat"):
        if p.scratch >= 0:
            step.reads.add(p.scratch)
            step.writes.add(p.scratch)
        for a in p.args:
            eb = ExprBuilder(ts)
            eb.value(a, identity_coords(ts[a].dims))
            step.reads |= eb.smem_reads()
    step.reads -= {-1}


# ---------------------------------------------------------------------------------------
# 5-6. Levels and offsets


def _level(steps: list[Step], late: bool) -> None:
    by_stage: dict[str, list[Step]] = {}
    for s in steps:
        if s.kind != "load":
            by_stage.setdefault(s.stage, []).append(s)
    for s in steps:
        if s.kind == "load":
            s.level = 0
    for stage, group in by_stage.items():
        lo = 1 if stage == "pre" else 0
        writers = {w: s for s in group for w in s.writes}
        deps = {id(s): [writers[r] for r in s.reads if r in writers and writers[r] is not s] for s in group}
        level: dict[int, int] = {}
        for s in group:
            s.level = _asap(s, deps, level, lo, frozenset())
        if late:
            top = max(s.level for s in group)
            users = {id(s): [u for u in group if s in deps[id(u)]] for s in group}
            for s in sorted(group, key=lambda x: -x.level):
                s.level = min((u.level - 1 for u in users[id(s)]), default=top)


def _asap(s: Step, deps: dict[int, list[Step]], level: dict[int, int], lo: int, seen: frozenset[int]) -> int:
    """The earliest level of `s`: one past the latest step whose shared memory it reads."""
    if id(s) in seen:
        raise InputError("codegen: the kernel's steps depend on each other in a cycle")
    if id(s) not in level:
        level[id(s)] = max((_asap(d, deps, level, lo, seen | {id(s)}) + 1 for d in deps[id(s)]), default=lo)
    return level[id(s)]


def _phase_index(plan: KernelPlan) -> dict[tuple[str, int], int]:
    """Global phase numbers: prologue loads 0, then pre levels, loop levels, post levels."""
    idx: dict[tuple[str, int], int] = {("pre", 0): 0}
    n = 1
    for stage in ("pre", "loop", "post"):
        for lv, _ in enumerate(plan.levels(stage)):
            idx[(stage, lv + (1 if stage == "pre" else 0))] = n
            n += 1
    return idx


def _live_ranges(plan: KernelPlan) -> dict[int, tuple[int, int]]:
    idx = _phase_index(plan)
    loop = [idx[k] for k in idx if k[0] == "loop"]
    loop_end = max(loop) if loop else 0
    ranges: dict[int, list[int]] = {}

    def touch(t: int, ph: int) -> None:
        ranges.setdefault(t, [ph, ph])
        r = ranges[t]
        r[0], r[1] = min(r[0], ph), max(r[1], ph)

    for s in plan.steps:
        ph = 0 if s.kind == "load" else idx[(s.stage, s.level)]
        for t in s.writes | s.reads:
            touch(t, ph)
        if s.kind == "load" and s.stage == "loop":
            touch(s.target, 0)
            touch(s.target, loop_end)
    for r in ranges.values():
        # Written before the loop and read inside it: live through the whole loop.
        if loop and r[0] < min(loop) <= r[1]:
            r[1] = max(r[1], loop_end)
    return {t: (r[0], r[1]) for t, r in ranges.items()}


def _allocate(plan: KernelPlan) -> int:
    ts = plan.tensors
    ranges = _live_ranges(plan)
    bufs = sorted(ranges, key=lambda t: (-ts[t].tile.nbytes, t))  # type: ignore[union-attr]
    placed: list[tuple[int, int, int]] = []  # (offset, end, tensor)
    for t in bufs:
        tile = ts[t].tile
        assert tile is not None
        size = _round(tile.nbytes, ALIGN)
        lo, hi = ranges[t]
        busy = sorted((o, e) for o, e, u in placed if not (ranges[u][1] < lo or hi < ranges[u][0]))
        off = 0
        for o, e in busy:
            if off + size <= o:
                break
            off = max(off, _round(e, ALIGN))
        tile.offset = off
        placed.append((off, off + size, t))
    return max((e for _, e, _ in placed), default=0)


# ---------------------------------------------------------------------------------------
# Global addressing


def _io(bg: BlockGraph, ts: dict[int, PT], outs: list[int], params: list[str]) -> tuple[list[GlobalIO], list[GlobalIO]]:
    ins = []
    for k, (tid, bi) in enumerate(zip(bg.inputs, bg.block_inputs)):
        strides = row_major_strides(bi.dims)
        tile = bg.types[tid].dims
        terms = []
        for g, d in enumerate(bi.imap):
            if d >= 0 and bg.grid_dims[g] > 1:
                span = tile[d] * (bg.forloop_range if bi.forloop_dim == d else 1)
                terms.append((f"blockIdx.{GRID[g]}", span * strides[d]))
        it = tile[bi.forloop_dim] * strides[bi.forloop_dim] if bi.forloop_dim >= 0 and bg.forloop_range > 1 else 0
        ins.append(GlobalIO(tid, params[k], bi.dtype, bi.dims, strides, terms, it))
    outputs = []
    for k, bo in enumerate(bg.block_outputs):
        t = bg.output_type(k)
        strides = row_major_strides(t.dims)
        tile = bg.types[bo.tensor].dims
        terms = [
            (f"blockIdx.{GRID[g]}", tile[d] * strides[d])
            for g, d in enumerate(bo.omap)
            if d >= 0 and bg.grid_dims[g] > 1
        ]
        outputs.append(GlobalIO(outs[k], params[len(ins) + k], t.dtype, t.dims, strides, terms))
    return ins, outputs


# ---------------------------------------------------------------------------------------
# The planner


def plan_kernel(
    bg: BlockGraph,
    name: str,
    params: list[str],
    target: str = "sm_90",
    op: str = "customized",
    orders: tuple[str, ...] = ("asap", "alap"),
) -> KernelPlan:
    """Plan block graph `bg` as kernel `name`; `params` names its inputs then outputs.
    Of the step `orders` tried, the one with the lower shared-memory peak wins."""
    tgt = get_target(target)
    ts, outs = _expand(bg)
    order = _topo(ts)
    _link(ts, outs)
    looped = bg.forloop_range > 1
    _assign_stages(ts, order, looped)
    matmuls = {t: _matmul_info(ts, t) for t in order if ts[t].op in ("matmul", "concat_matmul")}
    needs = _place(ts, order, matmuls, looped)
    _regs(ts, matmuls)
    _layouts(ts, order, needs, bg)  # views need their base before sinks are probed
    groups, members = _sinks(ts, outs)
    _layouts(ts, order, needs, bg)  # register tensors stored to shared memory get tiles
    _scratch(ts)
    _check_sizes(bg, ts)
    ins, outputs = _io(bg, ts, outs, params)
    best: KernelPlan | None = None
    for order_name in orders:
        steps = _steps(ts, outs, groups, members)
        for s in steps:
            _reads_writes(ts, matmuls, s)
        _level(steps, late=order_name == "alap")
        plan = KernelPlan(name, op, bg, tgt, ts, ins, outputs, outs, steps, matmuls, order=order_name)
        plan.smem_bytes = _allocate(plan)
        if best is None or plan.smem_bytes < best.smem_bytes:
            best = plan
    assert best is not None
    # Offsets live on the shared tiles: allocate the winner again so they are its own.
    best.smem_bytes = _allocate(best)
    _deepen_pipeline(best)
    if best.smem_bytes > tgt.smem_limit:
        raise InputError(
            f"kernel {name}: the plan needs {best.smem_bytes} bytes of shared memory per block, "
            f"over the {tgt.name} limit of {tgt.smem_limit}"
        )
    return best


def _deepen_pipeline(plan: KernelPlan) -> None:
    """More buffers per loop tile (prefetching further ahead keeps more bytes in flight per
    block, which a grid of one block per SM needs) while shared memory stays in budget."""
    tiles = [p.tile for p in plan.tensors.values() if p.kind == "staged" and p.stage == "loop" and p.tile]
    budget = min(PIPELINE_BUDGET, plan.target.smem_limit)
    for depth in range(min(MAX_STAGES, plan.forloop), 2, -1):
        if not tiles:
            return
        for t in tiles:
            t.copies = depth
        smem = _allocate(plan)
        if smem <= budget:
            plan.smem_bytes = smem
            return
    for t in tiles:
        t.copies = 2
    plan.smem_bytes = _allocate(plan)


def _check_sizes(bg: BlockGraph, ts: dict[int, PT]) -> None:
    dims = [bi.dims for bi in bg.block_inputs] + [bg.output_type(k).dims for k in range(len(bg.block_outputs))]
    for d in dims:
        if math.prod(d) >= 2**31:
            raise InputError(f"codegen: tensor {list(d)} has 2^31 elements or more (kernels index with 32 bits)")
    for g, n, lim in zip(GRID, bg.grid_dims, (2**31 - 1, 65535, 65535)):
        if n > lim:
            raise InputError(f"codegen: grid dim {g} of {n} blocks is over CUDA's limit of {lim}")
    for p in ts.values():
        if p.reg is not None and p.reg.kind == "warp" and p.reg.mt * p.reg.nt * 4 * p.reg.batch > 256:
            raise InputError(
                f"codegen: a {p.reg.mp} x {p.reg.n} matmul tile needs {p.reg.mt * p.reg.nt * 4 * p.reg.batch} "
                f"accumulators per thread with {THREADS} threads (at most 256)"
            )


def describe(plan: KernelPlan) -> Iterable[str]:
    """Lines for the kernel's header comment: tensors, placements, offsets, phases."""
    for t in _topo(plan.tensors):
        p = plan.tensors[t]
        where = p.kind
        if p.tile is not None and p.kind in ("staged", "smem", "reg"):
            tl = p.tile
            where += (
                f" @{tl.offset} {tl.store} [{tl.outer}x{tl.rows_p}x{tl.ld}]"
                + (f" x{tl.copies}" if tl.copies > 1 else "")
                + (" zero-padded" if tl.zero_pad else "")
            )
        if p.kind == "view":
            where += f" of t{p.base}"
        if p.reg is not None:
            r = p.reg
            where += f" {r.kind}" + (f" {r.wm}x{r.wn} warps of {r.mt}x{r.nt} fragments" if r.kind == "warp" else "")
        args = ", ".join(f"t{a}" for a in p.args)
        yield f"t{t} {list(p.dims)} {p.stage}: {p.op}({args}) -> {where}"
