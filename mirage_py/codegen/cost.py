"""An analytic cost model of a kernel graph on a GPU: what ranks candidates without a GPU.

Every figure it gives is *modelled*, not measured, and says so. It reads the graph only
(grid dims, for-loop range, tile sizes from the imaps, the op table's work rules), so it
prices search candidates that are never emitted; it does not run the planner.

Per kernel:
- **traffic**: a kernel reads each input tile once per block that loads it (a tensor
  replicated over grid dims is read once per replica) and writes each output once. A
  predefined kernel op is priced as the block graph the emitter lowers it to
  (codegen/lower.py: a matmul's operands are re-read once per output tile column or row);
  an op it cannot tile cannot be emitted, and its time is infinite.
- **DRAM vs L2**: the first read of a graph input costs DRAM bandwidth. Re-reads of a
  replicated tensor cost L2 bandwidth when the kernel's replicated tensors fit in L2
  together. A tensor written by an earlier kernel is read from L2 when the bytes that went
  through L2 since it was written (itself included) fit in L2: least-recently-used
  eviction. Writes cost DRAM bandwidth.
- **bandwidth achieved** (Little's law): a block has the bytes of one for-loop iteration in
  flight; an SM holds `min(occupancy, blocks per SM)` blocks; the machine moves
  `busy SMs x in-flight bytes per SM / latency`, capped at the SM's share of L2 bandwidth
  and at the memory's peak.
- **occupancy**: resident blocks per SM, limited by shared memory per block (estimated by
  liveness over the block graph, `_block_smem`), threads per block and the resident-block
  limit. A block that needs more shared memory than the GPU allows has no valid launch:
  its time is infinite.
- **waves**: blocks run in `ceil(blocks / (SMs x occupancy))` waves; a partly filled last
  wave leaves SMs idle, so busy SMs = blocks / waves, at most all of them.
- **compute**: matmuls of 16-bit types at tensor-core peak (m16n8k16 instructions: M, K
  rounded up to 16 and N to 8), every other flop at the CUDA cores' float32 peak (the
  runtime computes elementwise math in float32), both scaled by the busy SMs.
- kernel time = launch overhead + max(memory time, compute time).

Constants are public figures for each GPU, each cited where it is defined: NVIDIA's
datasheets and whitepapers, the CUDA programming guide, and one published table for what
NVIDIA does not publish (memory latencies, Hopper's L2 bandwidth). Launch overhead is an
assumption, stated as such. Nothing here was fitted to measured results.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Any

from ..ir.dtypes import ITEMSIZE
from ..ir.graph import BlockGraph, KernelGraph, Node
from ..ir.ops import ACCUMULATORS, get_op
from .lower import lower_kernel_op

MiB = 1 << 20
KiB = 1 << 10

# ---------------------------------------------------------------------------------------
# GPUs


@dataclass(frozen=True)
class GpuSpec:
    name: str
    sms: int
    dram_bytes_per_s: float
    l2_bytes: int
    l2_bytes_per_s: float
    tensor_flops: float  # dense 16-bit (fp16/bf16) tensor-core peak, float32 accumulate
    fp32_flops: float  # CUDA-core float32 peak
    fp16_flops: float  # CUDA-core (non-tensor) fp16 peak; kernels do elementwise math in float32
    smem_per_sm: int
    smem_per_block: int  # the most one block may request (opt-in above 48 KB)
    max_threads_per_sm: int
    max_blocks_per_sm: int
    clock_hz: float  # the clock the latency figures (in cycles) are counted at
    dram_latency_cycles: int
    l2_latency_cycles: int
    launch_us: float


# Sources (public):
# [A100-DS]  NVIDIA A100 Tensor Core GPU datasheet (A100 80GB SXM column): 2,039 GB/s HBM2e,
#            FP16 Tensor Core 312 TFLOPS (dense; 624 with sparsity), FP32 19.5 TFLOPS.
# [A100-WP]  NVIDIA A100 Tensor Core GPU Architecture whitepaper (2020): 108 SMs, 40 MB L2,
#            L2 read bandwidth 5120 bytes/clk, boost clock 1410 MHz, FP16 (non-tensor) 78
#            TFLOPS, up to 164 KB shared memory per SM.
# [H100-DS]  NVIDIA H100 Tensor Core GPU datasheet (H100 SXM column): 3.35 TB/s HBM3, FP16
#            Tensor Core 1,979 TFLOPS with sparsity (989.4 dense), FP32 67 TFLOPS.
# [H100-WP]  NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022): 132 SMs on H100
#            SXM5, 50 MB L2, 228 KB shared memory per SM, FP16 (non-tensor) 133.8 TFLOPS.
# [H200-DS]  NVIDIA H200 Tensor Core GPU datasheet (H200 SXM column): 4.8 TB/s HBM3e, FP16
#            Tensor Core 1,979 TFLOPS with sparsity, FP32 67 TFLOPS; the same GH100 chip as
#            H100 SXM (132 SMs, 50 MB L2, 228 KB shared memory per SM).
# [CUDA-PG]  CUDA C++ Programming Guide, "Technical Specifications per Compute Capability":
#            2048 threads and 32 resident blocks per SM (cc 8.0 and 9.0); shared memory per
#            block at most 163 KB (cc 8.0) and 227 KB (cc 9.0).
# [PMC-T3]   "Hardware features of different Nvidia GPU architectures", Table 3 of
#            https://pmc.ncbi.nlm.nih.gov/articles/PMC10448217/ : global memory latency 400
#            cycles, L2 latency 200 cycles (V100, A100 and H100), L2 bandwidth 7219 GB/s
#            (A100) and 8986 GB/s (H100 = 5120 B/clk at 1755 MHz). NVIDIA publishes no L2
#            bandwidth for Hopper; this is the A100 per-clock figure at that clock.
# Launch overhead is not a datasheet figure: 2 us stands for the usual gap between
# dependent kernel launches on one stream without CUDA graphs (a few microseconds).
LAUNCH_US = 2.0

GPUS: dict[str, GpuSpec] = {
    "A100": GpuSpec(
        name="NVIDIA A100-SXM4-80GB",
        sms=108,  # [A100-WP]
        dram_bytes_per_s=2039e9,  # [A100-DS]
        l2_bytes=40 * MiB,  # [A100-WP]
        l2_bytes_per_s=5120 * 1410e6,  # [A100-WP] 5120 B/clk x 1410 MHz = 7.2 TB/s
        tensor_flops=312e12,  # [A100-DS]
        fp32_flops=19.5e12,  # [A100-DS]
        fp16_flops=78e12,  # [A100-WP]
        smem_per_sm=164 * KiB,  # [A100-WP], [CUDA-PG]
        smem_per_block=163 * KiB,  # [CUDA-PG]
        max_threads_per_sm=2048,  # [CUDA-PG]
        max_blocks_per_sm=32,  # [CUDA-PG]
        clock_hz=1410e6,  # [A100-WP]
        dram_latency_cycles=400,  # [PMC-T3]
        l2_latency_cycles=200,  # [PMC-T3]
        launch_us=LAUNCH_US,
    ),
    "H100": GpuSpec(
        name="NVIDIA H100 SXM5 80GB",
        sms=132,  # [H100-WP]
        dram_bytes_per_s=3.35e12,  # [H100-DS]
        l2_bytes=50 * MiB,  # [H100-WP]
        l2_bytes_per_s=5120 * 1755e6,  # [PMC-T3] 8986 GB/s
        tensor_flops=989.4e12,  # [H100-DS] 1,979 with sparsity, halved
        fp32_flops=67e12,  # [H100-DS]
        fp16_flops=133.8e12,  # [H100-WP]
        smem_per_sm=228 * KiB,  # [H100-WP], [CUDA-PG]
        smem_per_block=227 * KiB,  # [CUDA-PG]
        max_threads_per_sm=2048,  # [CUDA-PG]
        max_blocks_per_sm=32,  # [CUDA-PG]
        clock_hz=1755e6,  # [PMC-T3]
        dram_latency_cycles=400,  # [PMC-T3]
        l2_latency_cycles=200,  # [PMC-T3]
        launch_us=LAUNCH_US,
    ),
    "H200": GpuSpec(
        name="NVIDIA H200 SXM 141GB",
        sms=132,  # [H200-DS] (GH100, as H100 SXM)
        dram_bytes_per_s=4.8e12,  # [H200-DS]
        l2_bytes=50 * MiB,  # [H100-WP]
        l2_bytes_per_s=5120 * 1755e6,  # [PMC-T3], as H100
        tensor_flops=989.4e12,  # [H200-DS] 1,979 with sparsity, halved
        fp32_flops=67e12,  # [H200-DS]
        fp16_flops=133.8e12,  # [H100-WP], same SMs and clocks
        smem_per_sm=228 * KiB,  # [H100-WP], [CUDA-PG]
        smem_per_block=227 * KiB,  # [CUDA-PG]
        max_threads_per_sm=2048,  # [CUDA-PG]
        max_blocks_per_sm=32,  # [CUDA-PG]
        clock_hz=1755e6,  # [PMC-T3]
        dram_latency_cycles=400,  # [PMC-T3]
        l2_latency_cycles=200,  # [PMC-T3]
        launch_us=LAUNCH_US,
    ),
}


def get_gpu(gpu: str | GpuSpec) -> GpuSpec:
    if isinstance(gpu, GpuSpec):
        return gpu
    key = gpu.upper()
    if key not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r} (known: {', '.join(GPUS)})")
    return GPUS[key]


# ---------------------------------------------------------------------------------------
# What one kernel does, independent of the GPU


@dataclass(frozen=True)
class Read:
    tensor: int  # kernel-graph tensor id
    bytes: int  # the whole tensor
    times: int  # how many times the kernel reads all of it (replicas)


@dataclass
class KernelWork:
    """One launch as the model sees it."""

    kind: str  # "customized" or the predefined op's name
    blocks: int
    threads: int
    shared_bytes: int
    inflight_bytes: int  # bytes one block has in flight per load phase
    reads: list[Read]
    write_bytes: int
    tensor_flops: int  # padded to the tensor-core instruction shape
    cuda_flops: int
    grid: tuple[int, int, int] = (1, 1, 1)
    forloop_range: int = 1


MMA_M, MMA_N, MMA_K = 16, 8, 16  # mma.sync.m16n8k16, the runtime's tensor-core instruction


def _ceil_to(x: int, m: int) -> int:
    return -(-x // m) * m


def _nbytes(dims: Sequence[int], dtype: str) -> int:
    return math.prod(dims) * ITEMSIZE[dtype]


def _op_flops(
    name: str, in_dims: list[tuple[int, ...]], out_dims: tuple[int, ...], attrs: dict[str, Any], dtype: str
) -> tuple[int, int]:
    """(tensor-core flops, CUDA-core flops) of one op application, from the op table."""
    rule = get_op(name).cost
    assert rule is not None, f"op {name} has no work rule"
    w = rule(in_dims, out_dims, attrs)
    if w.mnk is not None and ITEMSIZE[dtype] == 2:
        b, m, n, k = w.mnk
        return 2 * b * _ceil_to(m, MMA_M) * _ceil_to(n, MMA_N) * _ceil_to(k, MMA_K), 0
    return 0, w.flops


def _block_smem(bg: BlockGraph) -> int:
    """Peak shared memory of a block graph by liveness in node order: input tiles for the
    whole kernel, accumulators (float32) from the start, every other tensor from its op to
    its last use. An upper bound of what `plan` allocates (it may fuse elementwise chains
    into registers)."""
    size = {t: _nbytes(bg.types[t].dims, bg.types[t].dtype) for t in range(len(bg.types))}
    accum = {o for n in bg.nodes if n.op in ACCUMULATORS for o in n.outputs}
    for o in accum:
        size[o] = math.prod(bg.types[o].dims) * 4
    last = {t: i for i, n in enumerate(bg.nodes) for t in n.inputs}
    for t in bg.outputs:
        last[t] = len(bg.nodes)
    pinned = set(bg.inputs) | accum
    live = sum(size[t] for t in pinned)
    peak = live
    for i, n in enumerate(bg.nodes):
        live += sum(size[o] for o in n.outputs if o not in pinned)
        peak = max(peak, live)
        live -= sum(size[t] for t in set(n.inputs) if last.get(t) == i and t not in pinned)
    return peak


def block_work(bg: BlockGraph, node: Node, kg: KernelGraph, kind: str = "customized") -> KernelWork:
    """The work of one launch of block graph `bg`, whose inputs are `node`'s inputs."""
    blocks = math.prod(bg.grid_dims)
    f = bg.forloop_range
    reads, block_load = [], 0
    for src, tid, bi in zip(node.inputs, bg.inputs, bg.block_inputs):
        rep = math.prod(g for g, d in zip(bg.grid_dims, bi.imap) if d < 0)
        reads.append(Read(src, _nbytes(bi.dims, bi.dtype), rep))
        tile = _nbytes(bg.types[tid].dims, bi.dtype)
        block_load += tile * (f if bi.forloop_dim >= 0 else 1)
    tc = cc = 0
    for n in bg.nodes:
        per = f if all(bg.stage[o] == "loop" for o in n.outputs) else 1
        dtype = bg.types[n.outputs[0]].dtype
        t, c = _op_flops(n.op, [bg.types[i].dims for i in n.inputs], bg.types[n.outputs[0]].dims, n.attrs, dtype)
        tc, cc = tc + t * per * blocks, cc + c * per * blocks
    writes = sum(_nbytes(kg.types[o].dims, kg.types[o].dtype) for o in node.outputs)
    return KernelWork(
        kind=kind,
        blocks=blocks,
        threads=math.prod(bg.block_dims),
        shared_bytes=_block_smem(bg),
        inflight_bytes=max(1, block_load // f),
        reads=reads,
        write_bytes=writes,
        tensor_flops=tc,
        cuda_flops=cc,
        grid=bg.grid_dims,
        forloop_range=f,
    )


def kernel_works(kg: KernelGraph) -> Iterator[tuple[Node, KernelWork | str]]:
    """Each kernel-level op with its work, or the reason it cannot be emitted. A predefined
    op is priced as the block graph the emitter lowers it to (codegen/lower.py), so the
    model and the emitted code agree on grids and tiles."""
    for node in kg.nodes:
        if node.op == "customized":
            yield node, block_work(node.attrs["block_graph"], node, kg)
            continue
        key = (node.op, tuple((kg.types[i].dims, kg.types[i].dtype) for i in node.inputs), tuple(node.attrs.items()))
        w = _lowered_work(key)
        if isinstance(w, str):
            yield node, w
        else:  # the cached work names its inputs by position: point them at this graph's tensors
            yield node, replace(w, reads=[Read(node.inputs[k], r.bytes, r.times) for k, r in enumerate(w.reads)])


@lru_cache(maxsize=4096)
def _lowered_work(key: tuple[Any, ...]) -> KernelWork | str:
    """The work of a predefined op on inputs of these types (lowering is the slow part of
    pricing a spec; the search prices the same ops over and over)."""
    op, in_types, attrs = key
    g = KernelGraph()
    ins = [g.new_input(dims, dtype, f"in{k}") for k, (dims, dtype) in enumerate(in_types)]
    g.add_op(op, ins, **dict(attrs))
    node = g.nodes[0]
    try:
        bg = lower_kernel_op(g, node)
    except (ValueError, AssertionError) as exc:
        return f"no tiling for {op}: {exc}"
    return block_work(bg, node, g, kind=op)


# ---------------------------------------------------------------------------------------
# Pricing on a GPU


@dataclass
class KernelCost:
    kind: str
    grid: tuple[int, int, int]
    forloop_range: int
    blocks: int
    threads: int
    shared_bytes: int
    blocks_per_sm: int  # occupancy (0: does not fit)
    waves: int
    busy_sms: float
    dram_bytes: int
    l2_bytes: int
    tensor_flops: int
    cuda_flops: int
    memory_us: float
    compute_us: float
    launch_us: float
    us: float
    bound: str  # memory | compute | launch | infeasible
    note: str = ""


def occupancy(gpu: GpuSpec, threads: int, shared_bytes: int) -> int:
    """Resident blocks per SM (0 when one block cannot be launched at all)."""
    if shared_bytes > gpu.smem_per_block or threads > 1024 or threads < 1:
        return 0
    by_smem = gpu.smem_per_sm // shared_bytes if shared_bytes else gpu.max_blocks_per_sm
    return max(0, min(gpu.max_blocks_per_sm, gpu.max_threads_per_sm // threads, by_smem))


def _bandwidth(gpu: GpuSpec, peak: float, latency_cycles: int, busy: float, resident: float, inflight: int) -> float:
    """Little's law: bytes in flight / latency, per busy SM at most its share of the L2
    bandwidth (every DRAM or L2 byte reaches an SM through L2), overall at most `peak`."""
    latency_s = latency_cycles / gpu.clock_hz
    per_sm = min(gpu.l2_bytes_per_s / gpu.sms, resident * inflight / latency_s)
    return min(peak, busy * per_sm)


def _infeasible(kind: str, why: str, gpu: GpuSpec) -> KernelCost:
    inf = math.inf
    return KernelCost(
        kind, (0, 0, 0), 0, 0, 0, 0, 0, 0, 0.0, 0, 0, 0, 0, inf, inf, gpu.launch_us, inf, "infeasible", why
    )


def price(w: KernelWork, dram: int, l2: int, gpu: GpuSpec) -> KernelCost:
    row = KernelCost(
        kind=w.kind,
        grid=w.grid,
        forloop_range=w.forloop_range,
        blocks=w.blocks,
        threads=w.threads,
        shared_bytes=w.shared_bytes,
        blocks_per_sm=0,
        waves=0,
        busy_sms=0.0,
        dram_bytes=dram,
        l2_bytes=l2,
        tensor_flops=w.tensor_flops,
        cuda_flops=w.cuda_flops,
        memory_us=0.0,
        compute_us=0.0,
        launch_us=gpu.launch_us,
        us=0.0,
        bound="",
    )
    occ = occupancy(gpu, w.threads, w.shared_bytes)
    if occ == 0:
        why = f"{w.shared_bytes} B of shared memory or {w.threads} threads per block do not fit"
        inf = math.inf
        return replace(
            row, memory_us=inf, compute_us=inf, launch_us=gpu.launch_us, us=inf, bound="infeasible", note=why
        )
    waves = -(-w.blocks // (gpu.sms * occ))
    per_wave = w.blocks / waves
    busy = min(float(gpu.sms), per_wave)
    resident = min(float(occ), per_wave / busy)
    bw_dram = _bandwidth(gpu, gpu.dram_bytes_per_s, gpu.dram_latency_cycles, busy, resident, w.inflight_bytes)
    bw_l2 = _bandwidth(gpu, gpu.l2_bytes_per_s, gpu.l2_latency_cycles, busy, resident, w.inflight_bytes)
    mem = (dram / bw_dram + l2 / bw_l2) * 1e6
    comp = (w.tensor_flops / gpu.tensor_flops + w.cuda_flops / gpu.fp32_flops) * gpu.sms / busy * 1e6
    body = max(mem, comp)
    bound = "launch" if body < gpu.launch_us else "memory" if mem >= comp else "compute"
    return replace(
        row,
        blocks_per_sm=occ,
        waves=waves,
        busy_sms=round(busy, 2),
        memory_us=mem,
        compute_us=comp,
        launch_us=gpu.launch_us,
        us=gpu.launch_us + body,
        bound=bound,
        note="",
    )


@dataclass
class CostReport:
    gpu: str
    kernels: list[KernelCost]
    total_us: float
    dram_bytes: int
    min_dram_bytes: int
    launches: int
    label: str = "modelled"
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["total_us"] = _num(self.total_us)
        for k in d["kernels"]:
            for key in ("memory_us", "compute_us", "us"):
                k[key] = _num(k[key])
        return d


def _num(x: float) -> float | None:
    return None if math.isinf(x) else round(x, 3)


def min_dram_bytes(kg: KernelGraph) -> int:
    """The least global-memory traffic any implementation needs: each graph input read
    once and each graph output written once."""
    tensors = list(dict.fromkeys(kg.inputs)) + [t for t in dict.fromkeys(kg.outputs) if t not in kg.inputs]
    return sum(_nbytes(kg.types[t].dims, kg.types[t].dtype) for t in tensors)


def cost_report(kg: KernelGraph, gpu: str | GpuSpec = "H100") -> CostReport:
    spec = get_gpu(gpu)
    through_l2 = 0  # bytes that went through L2 so far (its LRU clock)
    written_at: dict[int, int] = {}  # tensor -> the clock before it was written
    rows: list[KernelCost] = []
    for node, w in kernel_works(kg):
        if isinstance(w, str):
            rows.append(_infeasible(node.op, w, spec))
            continue
        dram = l2 = 0
        replicated = sum(r.bytes for r in w.reads if r.times > 1)
        for r in w.reads:
            cached = r.tensor in written_at and through_l2 - written_at[r.tensor] <= spec.l2_bytes
            first_dram = 0 if cached else r.bytes
            again = r.bytes * (r.times - 1)
            if replicated <= spec.l2_bytes:
                dram, l2 = dram + first_dram, l2 + (r.bytes - first_dram) + again
            else:
                dram, l2 = dram + first_dram + again, l2 + (r.bytes - first_dram)
        for o in node.outputs:
            written_at[o] = through_l2 + dram
        through_l2 += dram + w.write_bytes
        rows.append(price(w, dram + w.write_bytes, l2, spec))
    return CostReport(
        gpu=spec.name,
        kernels=rows,
        total_us=sum(r.us for r in rows),
        dram_bytes=sum(r.dram_bytes for r in rows),
        min_dram_bytes=min_dram_bytes(kg),
        launches=len(rows),
        notes=[
            "modelled, not measured: analytic model from public GPU specs (mirage_py/codegen/cost.py)",
        ],
    )


def modeled_us(kg: KernelGraph, gpu: str | GpuSpec = "H100") -> float:
    """The modelled time of a whole kernel graph in microseconds (inf if a kernel cannot be
    launched on `gpu`). Cheap enough to rank every search candidate."""
    return cost_report(kg, gpu).total_us


def dram_bytes(kg: KernelGraph, gpu: str | GpuSpec = "H100") -> int:
    """Modelled DRAM traffic of a kernel graph (L2 hits excluded)."""
    return cost_report(kg, gpu).dram_bytes


def summary(kg: KernelGraph, gpu: str | GpuSpec = "H100") -> dict[str, Any]:
    """The model's figures for a report: total and per-kernel microseconds (None where a
    kernel cannot launch), DRAM bytes against the minimum, and what produced them."""
    r = cost_report(kg, gpu)
    return {
        "modeled_us": _num(r.total_us),
        "modeled_kernels_us": [_num(k.us) for k in r.kernels],
        "dram_bytes": r.dram_bytes,
        "min_dram_bytes": r.min_dram_bytes,
        "cost_model": describe(gpu),
    }


def describe(gpu: str | GpuSpec = "H100") -> str:
    """One line for reports: which model, which GPU, and that the figure is modelled."""
    return f"analytic cost model, {get_gpu(gpu).name} (modelled, not measured)"


__all__ = [
    "GPUS",
    "CostReport",
    "GpuSpec",
    "KernelCost",
    "KernelWork",
    "cost_report",
    "describe",
    "dram_bytes",
    "get_gpu",
    "min_dram_bytes",
    "modeled_us",
    "occupancy",
    "summary",
]
