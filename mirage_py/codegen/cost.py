"""An analytic cost model of a kernel graph on a GPU: what ranks candidates without a GPU.

Every figure it gives is *modelled*, not measured, and says so. It reads the graph only
(grid dims, for-loop range, tile sizes from the imaps, the op table's work rules), so it
prices search candidates that are never emitted.

Per kernel:
- **traffic**: a customized kernel reads each input tile once per block that loads it (a
  tensor replicated over grid dims is read once per replica) and writes each output once.
  A predefined kernel op is priced as the op-by-op kernel it lowers to, with the tiling in
  `_predefined` (a matmul re-reads its operands once per output tile row or column).
- **DRAM vs L2**: the first read of a graph input costs DRAM bandwidth. Re-reads of a
  replicated tensor cost L2 bandwidth when the kernel's replicated tensors fit in L2
  together. A tensor written by an earlier kernel is read from L2 when the bytes that went
  through L2 since it was written (itself included) fit in L2: least-recently-used
  eviction. Writes cost DRAM bandwidth.
- **bandwidth achieved** (Little's law): a block has the bytes of one for-loop iteration in
  flight; an SM holds `min(occupancy, blocks per SM)` blocks; the machine moves
  `busy SMs x in-flight bytes per SM / latency`, capped at the SM's share of L2 bandwidth
  and at the memory's peak.
- **occupancy**: resident blocks per SM, limited by shared memory per block, threads per
  block and the resident-block limit. A block that needs more shared memory than the GPU
  allows has no valid launch: its time is infinite.
- **waves**: blocks run in `ceil(blocks / (SMs x occupancy))` waves; a partly filled last
  wave leaves SMs idle, so busy SMs = blocks / waves, at most all of them.
- **compute**: matmuls of 16-bit types at tensor-core peak (m16n8k16 instructions: M, K
  rounded up to 16 and N to 8), every other flop at the CUDA cores' float32 peak (the
  runtime computes elementwise math in float32), both scaled by the busy SMs.
- kernel time = launch overhead + max(memory time, compute time).

Constants are public figures for each GPU (each cited where it is defined), plus two that
NVIDIA does not publish per product: memory latency and launch overhead (stated as such).
Nothing here was fitted to measured results.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..ir.dtypes import ITEMSIZE
from ..ir.graph import BlockGraph, KernelGraph, Node
from ..ir.ops import ACCUMULATORS, get_op

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
    """One launch as the model sees it (or no launch, for a folded transpose)."""

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
    launches: int = 1  # 0: folded into the consumers' loads


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


def customized_work(node: Node, kg: KernelGraph) -> KernelWork:
    bg: BlockGraph = node.attrs["block_graph"]
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
        kind="customized",
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


# The op-by-op lowering of a predefined kernel op, as the model prices it: 128 threads per
# block; a matmul computes TILE x TILE output tiles (fewer rows when M is small), streaming
# K in TILE-wide chunks through shared memory; other ops give each block ELEMS_PER_BLOCK
# elements of their largest tensor (rms_norm: one row per block, for the row's sum).
THREADS = 128
TILE = 64
ELEMS_PER_BLOCK = 1024


def _matmul_work(node: Node, kg: KernelGraph) -> KernelWork:
    a, b = (kg.types[i] for i in node.inputs)
    out = kg.types[node.outputs[0]]
    m, k, n = a.dims[-2], a.dims[-1], b.dims[-1]
    batch = math.prod(out.dims[:-2])
    tm, tn, tk = min(TILE, _ceil_to(m, MMA_M)), min(TILE, _ceil_to(n, MMA_N)), min(TILE, k)
    rows, cols = -(-m // tm), -(-n // tn)
    # An operand without the batch dims is shared by every batch: re-read once per batch.
    a_times = cols * (batch if len(a.dims) == 2 and batch > 1 else 1)
    b_times = rows * (batch if len(b.dims) == 2 and batch > 1 else 1)
    isz = ITEMSIZE[out.dtype]
    tc, cc = _op_flops("matmul", [a.dims, b.dims], out.dims, node.attrs, out.dtype)
    return KernelWork(
        kind="matmul",
        blocks=batch * rows * cols,
        threads=THREADS,
        shared_bytes=(tm * tk + tk * tn) * isz,
        inflight_bytes=(min(m, tm) * tk + tk * min(n, tn)) * isz,
        reads=[
            Read(node.inputs[0], _nbytes(a.dims, a.dtype), a_times),
            Read(node.inputs[1], _nbytes(b.dims, b.dtype), b_times),
        ],
        write_bytes=_nbytes(out.dims, out.dtype),
        tensor_flops=tc,
        cuda_flops=cc,
        grid=(cols, rows, batch),
        forloop_range=-(-k // tk),
    )


def _predefined(node: Node, kg: KernelGraph) -> KernelWork:
    if node.op == "matmul":
        return _matmul_work(node, kg)
    ins = [kg.types[i] for i in dict.fromkeys(node.inputs)]
    out = kg.types[node.outputs[0]]
    largest = max([math.prod(t.dims) for t in ins] + [math.prod(out.dims)])
    if node.op == "rms_norm":
        blocks, per_block = math.prod(out.dims[:-1]), out.dims[-1]
    else:
        blocks, per_block = -(-largest // ELEMS_PER_BLOCK), ELEMS_PER_BLOCK
    tc, cc = _op_flops(node.op, [kg.types[i].dims for i in node.inputs], out.dims, node.attrs, out.dtype)
    isz = ITEMSIZE[out.dtype]
    return KernelWork(
        kind=node.op,
        blocks=blocks,
        threads=THREADS,
        shared_bytes=0,
        inflight_bytes=per_block * isz * len(ins),
        reads=[Read(i, _nbytes(kg.types[i].dims, kg.types[i].dtype), 1) for i in dict.fromkeys(node.inputs)],
        write_bytes=_nbytes(out.dims, out.dtype),
        tensor_flops=tc,
        cuda_flops=cc,
        grid=(blocks, 1, 1),
    )


def kernel_works(kg: KernelGraph) -> Iterator[tuple[Node, KernelWork]]:
    """Each kernel-level op with its work. A transpose that is not a graph output is folded
    into its consumers' loads (DESIGN.md): no launch, and they read its input instead."""
    alias: dict[int, int] = {}
    outputs = set(kg.outputs)
    for node in kg.nodes:
        if node.op == "transpose" and node.outputs[0] not in outputs:
            alias[node.outputs[0]] = alias.get(node.inputs[0], node.inputs[0])
            yield node, KernelWork("transpose", 0, 0, 0, 1, [], 0, 0, 0, launches=0)
            continue
        w = customized_work(node, kg) if node.op == "customized" else _predefined(node, kg)
        w.reads = [Read(alias.get(r.tensor, r.tensor), r.bytes, r.times) for r in w.reads]
        yield node, w


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
    bound: str  # memory | compute | launch | infeasible | folded
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
        launch_us=0.0,
        us=0.0,
        bound="folded",
        note="folded into its consumers' loads",
    )
    if w.launches == 0:
        return row
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
        launches=sum(1 for r in rows if r.bound != "folded"),
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
