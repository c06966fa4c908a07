"""Render a kernel plan as one readable `__global__` function (C++17 for nvcc/NVRTC, C++20
under the emulation header).

One renderer for every kernel: a table maps each step kind to its template function
(`STEP_TEMPLATES`); elementwise values come from the op table's `cuda` slot through
`expr.ExprBuilder`. Per-target differences are data on `plan.Target`, not copies of this file.

The kernel's shape:
    prologue   loop-invariant inputs -> shared memory (cp.async), first loop tiles prefetched,
               accumulators zeroed, steps that only need invariant tensors
    for-loop   next tiles prefetched into the other buffer while this iteration's steps run
    epilogue   accumulators turned into the block's outputs
with one __syncthreads between levels of steps that hand shared memory to each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .expr import ExprBuilder, broadcast_coords
from .plan import THREADS, WARPS, KernelPlan, MatmulInfo, describe, sink_value, step_regs
from .tiles import CTYPE, PT, Coords, Sink, Step, identity_coords, offset_expr, ptr_name, reg_name, smem_name


class Code:
    """Lines of C++ with indentation."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def __call__(self, *lines: str) -> None:
        for line in lines:
            self.lines.append(("  " * self.depth + line) if line else "")

    def mark(self) -> tuple[int, int]:
        return len(self.lines), self.depth

    def insert(self, mark: tuple[int, int], lines: list[str]) -> None:
        """Insert lines where `mark` was taken (hoisted values go before their loop)."""
        at, depth = mark
        self.lines[at:at] = [("  " * depth + line) if line else "" for line in lines]

    @contextmanager
    def block(self, head: str) -> Iterator[None]:
        self(head + " {" if head else "{")
        self.depth += 1
        yield
        self.depth -= 1
        self("}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _unravel(c: Code, index: str, dims: tuple[int, ...], prefix: str = "c", first: int = 0) -> Coords:
    """Declare the coordinates of linear index `index` over `dims` (row-major), named after
    their position (`first` is the position of dims[0] in the whole tensor)."""
    coords = tuple(f"{prefix}{first + d}" if n > 1 else "0" for d, n in enumerate(dims))
    parts = []
    for d, n in enumerate(dims):
        if n == 1:
            continue
        stride = math.prod(dims[d + 1 :])
        q = index if stride == 1 else f"{index} / {stride}"
        if math.prod(dims[:d]) > 1:
            q = f"{q} % {n}" if stride == 1 else f"({q}) % {n}"
        parts.append(f"{coords[d]} = {q}")
    if parts:
        c(f"const int {', '.join(parts)};")
    return coords


Scope = Callable[[Coords], ExprBuilder]


class Renderer:
    def __init__(self, plan: KernelPlan) -> None:
        self.plan = plan
        self.ts = plan.tensors
        self.c = Code()
        self.names = iter(range(10**9))
        self.dirty = False  # shared memory touched since the last barrier
        # Per-target override: cp.async where the target has it, else synchronous copies
        # (commit and wait are then no-ops).
        self.copy = "mp::copy_g2s_async" if plan.target.cp_async else "mp::copy_g2s"

    # -- helpers -------------------------------------------------------------------------
    def builder(self, regs: dict[int, tuple[Coords, str]] | None = None) -> ExprBuilder:
        return ExprBuilder(self.ts, dict(regs or {}), names=self.names)

    def flush(self, eb: ExprBuilder) -> None:
        self.c(*eb.lines)
        eb.lines.clear()

    @contextmanager
    def hoisting(self, eb: ExprBuilder) -> Iterator[ExprBuilder]:
        """Lines `eb` gains inside the `with` (values hoisted out of a loop opened inside it)
        go where the `with` began."""
        mark = self.c.mark()
        yield eb
        self.c.insert(mark, eb.lines)
        eb.lines.clear()

    def barrier(self, why: str) -> None:
        self.c(f"__syncthreads();  // {why}")
        self.dirty = False

    def smem_type(self, t: int) -> str:
        tile = self.ts[t].tile
        assert tile is not None
        return CTYPE[tile.store]

    def write_sinks(self, sinks: list[Sink], eb: ExprBuilder, coords: Coords) -> None:
        """Compute and store every sink's value at `coords` (its tensor's coordinates)."""
        for s in sinks:
            v = sink_value(self.ts, s, eb, coords)
            self.flush(eb)
            if s.kind == "smem":
                p = self.ts[s.tensor]
                self.c(
                    f"{smem_name(s.tensor)}.store({offset_expr(coords, p.strides)}, mp::from_float<{self.smem_type(s.tensor)}>({v}));"
                )
            else:
                io = self.plan.outputs[s.output]
                self.c(f"o{s.output}[{offset_expr(coords, io.strides)}] = mp::from_float<{CTYPE[io.dtype]}>({v});")

    def zero_pads(self, sinks: list[Sink]) -> None:
        for s in sinks:
            tile = self.ts[s.tensor].tile if s.kind == "smem" else None
            if tile is not None and tile.zero_pad:
                self.c(
                    f"mp::zero_pad({smem_name(s.tensor)}, {tile.outer}, {tile.rows}, {tile.cols}, {tile.rows_p}, {tile.cols_p}, {tile.ld});"
                )

    def touches(self, step: Step) -> bool:
        return bool(step.reads or step.writes)

    # -- the kernel ----------------------------------------------------------------------
    def render(self) -> str:
        c, plan = self.c, self.plan
        self.header()
        c('#include "mp_runtime.cuh"', "")
        params = [f"const {CTYPE[io.dtype]}* __restrict__ g_{io.param}" for io in plan.inputs]
        params += [f"{CTYPE[io.dtype]}* __restrict__ g_{io.param}" for io in plan.outputs]
        c(f'extern "C" __global__ void __launch_bounds__({THREADS}) {plan.name}(')
        c(*[f"    {p}{',' if k + 1 < len(params) else ') {'}" for k, p in enumerate(params)])
        self.c.depth += 1
        self.body()
        self.c.depth -= 1
        c("}")
        return c.text()

    def header(self) -> None:
        p, c = self.plan, self.c
        what = (
            "graph-defined kernel (customized op)"
            if p.op == "customized"
            else f"predefined `{p.op}`, tiled over its output"
        )
        c(f"// {p.name}: {what}, generated by mirage-py for {p.target.name}.")
        c(
            f"// grid {list(p.grid)}, {THREADS} threads, for-loop of {p.forloop} iteration(s), "
            f"{p.smem_bytes} bytes of dynamic shared memory ({p.order} step order)."
        )
        for io in p.inputs:
            c(f"//   in  {io.param}: {io.dtype} {list(io.dims)} -> tile t{io.tensor} {list(p.tensors[io.tensor].dims)}")
        for k, io in enumerate(p.outputs):
            c(f"//   out {io.param}: {io.dtype} {list(io.dims)} <- tile t{io.tensor} (output {k})")
        c("// Plan (tensor [dims] stage: op -> placement):")
        for line in describe(p):
            c(f"//   {line}")
        for note in p.notes:
            c(f"// {note}")

    def body(self) -> None:
        c, plan = self.c, self.plan
        c(f"constexpr int kThreads = {THREADS}, kWarps = {WARPS};")
        c("(void)kThreads;", "(void)kWarps;")
        if plan.smem_bytes:
            c("MP_SHARED_BASE(smem);")
        self.globals_()
        self.tiles(looped=False)
        self.accumulators()
        self.prologue()
        if plan.forloop > 1:
            self.loop()
        self.post()

    def globals_(self) -> None:
        c = self.c
        for io in self.plan.inputs + self.plan.outputs:
            p = self.ts[io.tensor]
            if io in self.plan.inputs and (p.kind not in ("global", "staged") or not (p.consumers or p.outputs)):
                continue
            terms = " + ".join(f"{g} * {s}" for g, s in io.block_terms) or "0"
            c(f"const int b_{io.param} = {terms};  // this block's tile")
        for k, io in enumerate(self.plan.outputs):
            c(f"{CTYPE[io.dtype]}* const o{k} = g_{io.param} + b_{io.param};")
        for io in self.plan.inputs:
            p = self.ts[io.tensor]
            if p.kind == "global" and p.stage != "loop" and (p.consumers or p.outputs):
                c(f"const {CTYPE[io.dtype]}* const {ptr_name(io.tensor)} = g_{io.param} + b_{io.param};")

    def tiles(self, looped: bool) -> None:
        """Shared-memory tile handles (loop-input buffers rotate through their copies)."""
        for t in sorted(self.ts):
            p = self.ts[t]
            if p.tile is None or p.tile.offset < 0 or (p.tile.copies > 1) != looped:
                continue
            off = str(p.tile.offset) + (f" + (it % {p.tile.copies}) * {p.tile.copy_bytes}" if looped else "")
            self.c(
                f"const mp::Smem<{CTYPE[p.tile.store]}> {smem_name(t)} = mp::smem_at<{CTYPE[p.tile.store]}>(smem, {off});"
            )

    def accumulators(self) -> None:
        for s in self.plan.steps:
            if (
                s.stage == "loop"
                and s.kind in ("matmul", "acc_elem", "acc_rows")
                and self.ts[s.target].op.startswith("accum")
            ):
                self.declare_reg(self.ts[s.target], reg_name(s.target))

    def declare_reg(self, p: PT, name: str) -> None:
        r = p.reg
        assert r is not None
        if r.kind == "warp":
            self.c(
                f"mp::WarpAcc<{r.mt}, {r.nt}> {name}[{r.batch}];  // {r.mp} x {r.n} per batch, {r.wm} x {r.wn} warps"
            )
            self.c(f"for (int b = 0; b < {r.batch}; ++b) {name}[b].zero();")
        elif r.kind == "thread":
            self.c(f"mp::ThreadAcc<{r.nreg}> {name}[{r.batch}];  // element rank + j * kThreads")
            self.c(f"for (int b = 0; b < {r.batch}; ++b) {name}[b].zero();")
        else:
            self.c(
                f"float {name}[{r.nreg}] = {{}};  // one sum per row, row {'warp' if r.warp_mode else 'rank'} + k * {'kWarps' if r.warp_mode else 'kThreads'}"
            )

    # -- phases --------------------------------------------------------------------------
    def stages(self) -> int:
        """Buffers of each per-iteration tile: the pipeline depth of the prefetch."""
        return max(
            (s_.tile.copies for s_ in (self.ts[x.target] for x in self.plan.loads("loop")) if s_.tile), default=1
        )

    def prologue(self) -> None:
        c, plan = self.c, self.plan
        pre_loads, loop_loads = plan.loads("pre"), plan.loads("loop")
        depth = self.stages()
        if pre_loads:
            c("// Loop-invariant inputs -> shared memory.")
            for s in pre_loads:
                self.load(s, None, None)
            c("mp::cp_async_commit();")
            self.dirty = True
        if loop_loads:
            c(f"// Prefetch the first {depth - 1} iteration(s) of the for-loop tiles, one group each.")
            for s in loop_loads:
                self.zero_pad_buffers(s, depth)
            with c.block(f"for (int s = 0; s < {depth - 1}; ++s)"):
                for s in loop_loads:
                    self.load(s, "s", "s")
                c("mp::cp_async_commit();")
            self.dirty = True
        self.pending = bool(pre_loads or loop_loads)
        levels = plan.levels("pre")
        if levels:
            c(f"mp::cp_async_wait<{depth - 1 if loop_loads else 0}>();")
            self.barrier("invariant tiles landed")
            self.pending = bool(loop_loads)
            self.run_levels(levels)

    def loop(self) -> None:
        c, plan = self.c, self.plan
        loop_loads = plan.loads("loop")
        levels = plan.levels("loop")
        depth = self.stages()
        touches = bool(loop_loads) or any(self.touches(s) for lv in levels for s in lv)
        if self.pending and not loop_loads:
            c("mp::cp_async_wait<0>();")
            self.pending = False
        with c.block(f"for (int it = 0; it < {plan.forloop}; ++it)"):
            for io in plan.inputs:
                p = self.ts[io.tensor]
                if p.kind == "global" and p.stage == "loop" and (p.consumers or p.outputs):
                    c(
                        f"const {CTYPE[io.dtype]}* const {ptr_name(io.tensor)} = g_{io.param} + b_{io.param} + it * {io.iter_stride};"
                    )
            self.tiles(looped=True)
            if loop_loads:
                ahead = f"it + {depth - 1}"
                with c.block(f"if ({ahead} < {plan.forloop})"):
                    c(f"// Prefetch iteration {ahead} into the buffer iteration it - 1 used.")
                    for s in loop_loads:
                        self.load(s, f"({ahead}) % {depth}", f"({ahead})")
                c("mp::cp_async_commit();  // one group per iteration (empty at the end)")
                c(f"mp::cp_async_wait<{depth - 1}>();  // this iteration's tiles have landed")
            if touches or self.dirty:
                self.barrier("this iteration's tiles are visible to every thread")
            self.run_levels(levels)
            if touches:
                self.barrier("done with this iteration's shared memory before it is refilled")
        if loop_loads:
            c("mp::cp_async_wait<0>();  // only empty groups are left")
        self.pending = False

    def post(self) -> None:
        c = self.c
        levels = self.plan.levels("post")
        if self.pending:
            c("mp::cp_async_wait<0>();")
            self.pending = False
        if levels and self.plan.forloop > 1:
            c("// After the for-loop: accumulators -> outputs.")
        self.run_levels(levels)

    def run_levels(self, levels: list[list[Step]]) -> None:
        for lv in levels:
            if self.dirty:
                self.barrier("the previous level's shared-memory writes are visible")
            for s in lv:
                self.c(f"// -- {s.kind} t{s.target}" + (f" (level {s.level})" if len(levels) > 1 else ""))
                STEP_TEMPLATES[s.kind](self, s)
                self.dirty |= self.touches(s)

    # -- step templates ------------------------------------------------------------------
    def load(self, s: Step, buf: str | None, it: str | None) -> None:
        """A block input's tile -> shared memory (cp.async where 16-byte vectors fit): for
        iteration `it` into buffer `buf` (C++ expressions), or a loop-invariant tile."""
        p = self.ts[s.target]
        io = self.plan.inputs[p.input_index]
        tile = p.tile
        assert tile is not None
        dst = smem_name(s.target) if buf is None else self.buffer(s.target, buf)
        src = f"g_{io.param} + b_{io.param}" + (f" + {it} * {io.iter_stride}" if it and io.iter_stride else "")
        rows, cols = tile.rows, tile.cols
        ld_src = io.strides[-2] if p.rank >= 2 and rows > 1 else tile.ld
        self.c(f"// t{s.target} <- {io.param}: {tile.outer} x {rows} x {cols} {io.dtype}")
        if tile.outer == 1:
            self.c(f"{self.copy}({dst}, {tile.ld}, {src}, {ld_src}, {rows}, {cols});")
        else:
            with self.c.block(f"for (int q = 0; q < {tile.outer}; ++q)"):
                oc = _unravel(self.c, "q", p.dims[:-2], "q")
                goff = offset_expr(oc, io.strides[: p.rank - 2])
                self.c(
                    f"{self.copy}({dst} + q * {tile.rows_p * tile.ld}, {tile.ld}, {src} + {goff}, {ld_src}, {rows}, {cols});"
                )
        if buf is None and tile.zero_pad:
            self.c(f"mp::zero_pad({dst}, {tile.outer}, {rows}, {cols}, {tile.rows_p}, {tile.cols_p}, {tile.ld});")

    def buffer(self, t: int, index: str) -> str:
        tile = self.ts[t].tile
        assert tile is not None
        ctype = CTYPE[tile.store]
        return f"mp::smem_at<{ctype}>(smem, {tile.offset} + {index} * {tile.copy_bytes})"

    def zero_pad_buffers(self, s: Step, depth: int) -> None:
        """The padding of every buffer of a per-iteration tile, once (copies never touch it)."""
        tile = self.ts[s.target].tile
        assert tile is not None
        if tile.zero_pad:
            with self.c.block(f"for (int s = 0; s < {depth}; ++s)"):
                dst = self.buffer(s.target, "s")
                self.c(
                    f"mp::zero_pad({dst}, {tile.outer}, {tile.rows}, {tile.cols}, {tile.rows_p}, {tile.cols_p}, {tile.ld});"
                )

    def elt(self, s: Step) -> None:
        p = self.ts[s.target]
        with (
            self.hoisting(self.builder()) as top,
            self.c.block(f"for (int i = mp::thread_rank(); i < {p.numel}; i += kThreads)"),
        ):
            coords = _unravel(self.c, "i", p.dims)
            self.write_sinks(s.sinks, top.scope(coords), coords)
        self.zero_pads(s.sinks)

    def store(self, s: Step) -> None:
        self.elt(s)

    def concat(self, s: Step) -> None:
        p = self.ts[s.target]
        d = p.attrs["dim"]
        shift = 0
        for a in p.args:
            ap = self.ts[a]
            with (
                self.hoisting(self.builder()) as top,
                self.c.block(f"for (int i = mp::thread_rank(); i < {ap.numel}; i += kThreads)"),
            ):
                coords = _unravel(self.c, "i", ap.dims)
                eb = top.scope(coords)
                v = eb.value(a, coords)
                self.flush(eb)
                out = list(coords)
                if shift:
                    self.c(f"const int x{d} = {coords[d]} + {shift};")
                    out[d] = f"x{d}"
                ctype = self.smem_type(s.target)
                self.c(
                    f"{smem_name(s.target)}.store({offset_expr(tuple(out), p.strides)}, mp::from_float<{ctype}>({v}));"
                )
            shift += ap.dims[d]
        self.zero_pads(s.sinks)

    def matmul(self, s: Step) -> None:
        p = self.ts[s.target]
        persistent = p.op.startswith("accum")
        mm = self.ts[s.group[0]]
        info = self.plan.matmuls[mm.id]
        reg = p.reg
        assert reg is not None
        acc = reg_name(s.target)
        shape = f"{info.m} x {info.n}, K = {' + '.join(map(str, info.ks))}"
        path = (
            f"tensor cores ({reg.wm} x {reg.wn} warps of {reg.mt} x {reg.nt} m16n8k16 tiles)"
            if info.mma
            else "CUDA cores (float)"
        )
        self.c(f"// {'accumulate ' if persistent else ''}t{mm.id} = {mm.op}: {shape}, {path}")
        with self.c.block(""):
            if not persistent:
                self.declare_reg(p, acc)
            if info.mma:
                self.c(
                    f"const int wm0 = (mp::warp_id() / {reg.wn}) * {16 * reg.mt}, wn0 = (mp::warp_id() % {reg.wn}) * {8 * reg.nt};"
                )
            active = reg.wm * reg.wn
            guard = info.mma and active < WARPS
            with self._maybe(guard, f"if (mp::warp_id() < {active})"):
                self.mma_calls(mm, info, acc)
                if s.sinks:
                    self.reg_loop(s, [s.target], lambda eb, coords: self.write_sinks(s.sinks, eb, coords))
            self.zero_pads(s.sinks)

    @contextmanager
    def _maybe(self, cond: bool, head: str) -> Iterator[None]:
        if cond:
            with self.c.block(head):
                yield
        else:
            yield

    def mma_calls(self, mm: PT, info: MatmulInfo, acc: str) -> None:
        batch_dims = mm.dims[:-2]
        with self._batch_loop(batch_dims) as (bcoords, bidx):
            for (a, b), k in zip(info.pairs, info.ks):
                pa, pb = self.ts[a], self.ts[b]
                la, lda = (
                    ("mp::kRowMajor", pa.strides[-2]) if pa.strides[-1] == 1 else ("mp::kColMajor", pa.strides[-1])
                )
                lb, ldb = (
                    ("mp::kRowMajor", pb.strides[-2]) if pb.strides[-1] == 1 else ("mp::kColMajor", pb.strides[-1])
                )
                oa = self._batch_offset(bcoords, mm.dims, pa)
                ob = self._batch_offset(bcoords, mm.dims, pb)
                sa = smem_name(pa.base) + (f" + ({oa})" if oa != "0" else "")
                sb = smem_name(pb.base) + (f" + ({ob})" if ob != "0" else "")
                if info.mma:
                    t = CTYPE[self.ts[pa.base].tile.store]  # type: ignore[union-attr]
                    self.c(f"mp::warp_mma<{t}, {la}, {lb}>({acc}[{bidx}], {sa}, {lda}, {sb}, {ldb}, wm0, wn0, {k});")
                else:
                    self.c(
                        f"mp::simt_mma<{la}, {lb}>({acc}[{bidx}], {sa}, {lda}, {sb}, {ldb}, {info.m}, {info.n}, {k});"
                    )

    def _batch_offset(self, bcoords: Coords, out_dims: tuple[int, ...], p: PT) -> str:
        nb = p.rank - 2
        if nb <= 0:
            return "0"
        coords = broadcast_coords(bcoords, out_dims[:-2], p.dims[:-2])
        return offset_expr(coords, p.strides[:nb])

    @contextmanager
    def _batch_loop(self, batch_dims: tuple[int, ...]) -> Iterator[tuple[Coords, str]]:
        nb = math.prod(batch_dims)
        if nb == 1:
            yield tuple("0" for _ in batch_dims), "0"
            return
        with self.c.block(f"MP_UNROLL for (int bi = 0; bi < {nb}; ++bi)"):
            coords = _unravel(self.c, "bi", batch_dims)
            yield coords, "bi"

    def reg_loop(self, s: Step, members: list[int], body: Callable[[ExprBuilder, Coords], None]) -> None:
        """Loop over the elements of the register tile of `members[0]`, with every member's
        element in `r_t<id>`, and call `body` with the element's coordinates."""
        p = self.ts[members[0]]
        reg = p.reg
        assert reg is not None
        regs = step_regs(self.ts, s)
        with self.hoisting(self.builder()) as top:
            loop = {"warp": self._warp_loop, "thread": self._thread_loop, "rows": self._rows_loop}[reg.kind]
            loop(p, members, lambda coords: top.scope(coords, regs), body)

    def _bind(self, members: list[int], index: str) -> None:
        for m in members:
            self.c(f"const float r_t{m} = {reg_name(m)}{index};")

    def _warp_loop(self, p: PT, members: list[int], eb: Scope, body: Callable[[ExprBuilder, Coords], None]) -> None:
        reg = p.reg
        assert reg is not None
        with (
            self._batch_loop(p.dims[:-2]) as (bcoords, bidx),
            self.c.block(f"MP_UNROLL for (int i = 0; i < {reg.mt}; ++i)"),
            self.c.block(f"MP_UNROLL for (int j = 0; j < {reg.nt}; ++j)"),
            self.c.block("MP_UNROLL for (int e = 0; e < 4; ++e)"),
        ):
            self.c("const mp::layout::RowCol rc = mp::layout::mma_c(mp::lane_id(), e);")
            self.c("const int row = wm0 + 16 * i + rc.row, col = wn0 + 8 * j + rc.col;")
            with self._maybe(reg.mp > reg.m, f"if (row < {reg.m})"):
                coords = self._name_rc(p.dims, bcoords)
                self._bind(members, f"[{bidx}].c[i][j].v[e]")
                body(eb(coords), coords)

    def _name_rc(self, dims: tuple[int, ...], bcoords: Coords) -> Coords:
        ident = identity_coords(dims)
        decl = [f"{ident[-2]} = row"] if dims[-2] > 1 else []
        decl += [f"{ident[-1]} = col"] if dims[-1] > 1 else []
        if decl:
            self.c(f"const int {', '.join(decl)};")
        return tuple(bcoords) + ident[-2:]

    def _thread_loop(self, p: PT, members: list[int], eb: Scope, body: Callable[[ExprBuilder, Coords], None]) -> None:
        reg = p.reg
        assert reg is not None
        inner = p.dims if reg.batch == 1 else p.dims[-2:]
        with self._batch_loop(p.dims[:-2] if reg.batch > 1 else ()) as (bcoords, bidx):
            with self.c.block(f"MP_UNROLL for (int j = 0; j < {reg.nreg}; ++j)"):
                self.c("const int i = mp::thread_rank() + j * kThreads;")
                with self.c.block(f"if (i < {math.prod(inner)})"):
                    coords = _unravel(self.c, "i", inner, first=p.rank - len(inner))
                    if reg.batch > 1:
                        coords = tuple(bcoords) + coords
                    self._bind(members, f"[{bidx}].v[j]")
                    body(eb(coords), coords)

    def _rows_loop(self, p: PT, members: list[int], eb: Scope, body: Callable[[ExprBuilder, Coords], None]) -> None:
        reg = p.reg
        assert reg is not None
        who = "mp::warp_id() + k * kWarps" if reg.warp_mode else "mp::thread_rank() + k * kThreads"
        with self.c.block(f"MP_UNROLL for (int k = 0; k < {reg.nreg}; ++k)"):
            self.c(f"const int o = {who};")
            cond = f"o < {reg.m}" + (" && mp::lane_id() == 0" if reg.warp_mode else "")
            with self.c.block(f"if ({cond})"):
                coords = _unravel(self.c, "o", p.dims[:-1]) + ("0",)
                self._bind(members, "[k]")
                body(eb(coords), coords)

    def epilogue(self, s: Step) -> None:
        reg = self.ts[s.group[0]].reg
        assert reg is not None
        with self.c.block(""):
            if reg.kind == "warp":
                self.c(
                    f"const int wm0 = (mp::warp_id() / {reg.wn}) * {16 * reg.mt}, wn0 = (mp::warp_id() % {reg.wn}) * {8 * reg.nt};"
                )
            with self._maybe(reg.kind == "warp" and reg.wm * reg.wn < WARPS, f"if (mp::warp_id() < {reg.wm * reg.wn})"):
                self.reg_loop(s, s.group, lambda eb, coords: self.write_sinks(s.sinks, eb, coords))
            self.zero_pads(s.sinks)

    def spill(self, s: Step) -> None:
        self.epilogue(s)

    def acc_elem(self, s: Step) -> None:
        p = self.ts[s.target]
        reg = p.reg
        assert reg is not None
        x = p.args[0]
        with self.hoisting(self.builder()) as top, self.c.block(f"MP_UNROLL for (int j = 0; j < {reg.nreg}; ++j)"):
            self.c("const int i = mp::thread_rank() + j * kThreads;")
            with self.c.block(f"if (i < {p.numel})"):
                coords = _unravel(self.c, "i", p.dims)
                eb = top.scope(coords)
                v = eb.value(x, coords)
                self.flush(eb)
                self.c(f"{reg_name(s.target)}[0].v[j] += {v};")

    def acc_rows(self, s: Step) -> None:
        p = self.ts[s.target]
        reg = p.reg
        assert reg is not None
        x = self.ts[p.args[0]]
        who = "mp::warp_id() + k * kWarps" if reg.warp_mode else "mp::thread_rank() + k * kThreads"
        with self.hoisting(self.builder()) as top, self.c.block(f"MP_UNROLL for (int k = 0; k < {reg.nreg}; ++k)"):
            self.c(f"const int o = {who};")
            with self.c.block(f"if (o < {reg.m})"):
                coords = _unravel(self.c, "o", x.dims[:-1])
                self.c("float sum = 0.0f;")
                first, step_ = ("mp::lane_id()", "32") if reg.warp_mode else ("0", "1")
                with (
                    self.hoisting(top.scope(coords)) as outer,
                    self.c.block(f"for (int r = {first}; r < {x.dims[-1]}; r += {step_})"),
                ):
                    eb = outer.scope(coords + ("r",))
                    v = eb.value(x.id, coords + ("r",))
                    self.flush(eb)
                    self.c(f"sum += {v};")
                self.c(f"{reg_name(s.target)}[k] += {'mp::warp_sum(sum)' if reg.warp_mode else 'sum'};")

    def reduce(self, s: Step) -> None:
        p = self.ts[s.target]
        reg = p.reg
        assert reg is not None
        x = self.ts[p.args[0]]
        d, size = p.attrs["dim"], p.attrs["size"]
        m = x.dims[d] // size
        mode = "warp" if reg.warp_mode else "block" if reg.block_mode else "thread"
        head, first, step_ = _REDUCE_LOOPS[mode]
        stride = f" of stride {size}" if size > 1 else ""
        self.c(f"// t{p.id} = reduce_sum over dim {d} ({m} terms{stride}), {_REDUCE_WHO[mode]} per output")
        with self.hoisting(self.builder()) as top, self.c.block(head.format(n=p.numel)):
            coords = _unravel(self.c, "o", p.dims)
            self.c("float sum = 0.0f;")
            outer = top.scope(coords, step_regs(self.ts, s))
            with self.hoisting(outer), self.c.block(f"for (int r = {first}; r < {m}; r += {step_})"):
                xc = list(coords)
                if size > 1:
                    self.c(f"const int x{d} = r * {size} + {coords[d]};")
                    xc[d] = f"x{d}"
                else:
                    xc[d] = "r"
                eb = outer.scope(xc)
                v = eb.value(x.id, tuple(xc))
                self.flush(eb)
                self.c(f"sum += {v};")
            if reg.warp_mode:
                self.c("sum = mp::warp_sum(sum);")
            elif reg.block_mode:
                self.c(f"sum = mp::block_sum(sum, {smem_name(p.scratch)});  // two barriers inside")
            first_thread = "if (mp::lane_id() == 0)" if reg.warp_mode else "if (mp::thread_rank() == 0)"
            with self._maybe(reg.warp_mode or reg.block_mode, first_thread):
                self.c(f"const float r_t{p.id} = sum;")
                self.write_sinks(s.sinks, outer, coords)
        self.zero_pads(s.sinks)


# Reductions: the loop over outputs, the first index and the stride of the loop over terms.
_REDUCE_LOOPS = {
    "warp": ("for (int o = mp::warp_id(); o < {n}; o += kWarps)", "mp::lane_id()", "32"),
    "block": ("for (int o = 0; o < {n}; ++o)", "mp::thread_rank()", "kThreads"),
    "thread": ("for (int o = mp::thread_rank(); o < {n}; o += kThreads)", "0", "1"),
}
_REDUCE_WHO = {"warp": "a warp", "block": "the block", "thread": "a thread"}

STEP_TEMPLATES: dict[str, Callable[[Renderer, Step], None]] = {
    "elt": Renderer.elt,
    "store": Renderer.store,
    "concat": Renderer.concat,
    "matmul": Renderer.matmul,
    "reduce": Renderer.reduce,
    "acc_elem": Renderer.acc_elem,
    "acc_rows": Renderer.acc_rows,
    "spill": Renderer.spill,
    "epilogue": Renderer.epilogue,
}


def render_kernel(plan: KernelPlan) -> str:
    return Renderer(plan).render()


__all__ = ["render_kernel"]
