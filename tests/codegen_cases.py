"""Small customized kernels that each exercise one planner/renderer path the benchmarks do not
(batched tiles, transposed and padded operands, the float32 path, odd sizes, concat, grid and
for-loop splitting the same dim, rank-1 tensors). Used by tests/test_codegen_emit.py."""

from __future__ import annotations

from collections.abc import Callable

from mirage_py.ir import KernelGraph, Tensor, new_block_graph, new_kernel_graph


def _one(g: KernelGraph, ins: list[Tensor], bg_out: list[Tensor]) -> KernelGraph:
    for k, t in enumerate(bg_out):
        g.mark_output(t, f"Y{k}")
    return g


def batched_mma() -> KernelGraph:
    """Two matrices per block (batch dim 2 inside the tile), K over a for-loop of 2."""
    g = new_kernel_graph()
    a = g.new_input((4, 32, 64), "float16", "A")
    b = g.new_input((4, 64, 32), "float16", "B")
    bg = new_block_graph((2, 1, 1), 2)
    ta = bg.new_input(a, (0, -1, -1), forloop_dim=2)  # (2, 32, 32)
    tb = bg.new_input(b, (0, -1, -1), forloop_dim=1)  # (2, 32, 32)
    bg.new_output(bg.accum_sum(bg.matmul(ta, tb)), (0, -1, -1))
    return _one(g, [a, b], g.customized([a, b], bg))


def transposed_padded_a() -> KernelGraph:
    """A = transpose of an (K, M) tile with M = 8: a column-major A operand whose columns
    are zero-padded to 16 for m16n8k16; bfloat16."""
    g = new_kernel_graph()
    xt = g.new_input((32, 16), "bfloat16", "XT")  # (K, M) with M split over the grid
    w = g.new_input((32, 24), "bfloat16", "W")
    bg = new_block_graph((2, 1, 1), 1)
    tx = bg.new_input(xt, (1, -1, -1))  # (32, 8)
    tw = bg.new_input(w, (-1, -1, -1))  # (32, 24)
    y = bg.matmul(bg.transpose(tx), tw)  # (8, 24)
    bg.new_output(bg.relu(y), (0, -1, -1))
    return _one(g, [xt, w], g.customized([xt, w], bg))


def simt_batched_transposed() -> KernelGraph:
    """float32: CUDA-core matmul of a batch of 2 with B read transposed, then a broadcast
    scale and the output laid out transposed over the grid."""
    g = new_kernel_graph()
    a = g.new_input((2, 12, 20), "float32", "A")
    bt = g.new_input((2, 10, 20), "float32", "BT")  # B^T: (N, K)
    s = g.new_input((1, 1, 10), "float32", "S")
    bg = new_block_graph((1, 2, 1), 1)
    ta = bg.new_input(a, (-1, 1, -1))  # (2, 6, 20)
    tb = bg.new_input(bt, (-1, -1, -1))
    ts = bg.new_input(s, (-1, -1, -1))
    y = bg.mul(bg.matmul(ta, bg.transpose(tb)), ts)  # (2, 6, 10)
    bg.new_output(bg.transpose(y), (-1, 2, -1))  # (2, 10, 6) tiles side by side on dim 2
    return _one(g, [a, bt, s], g.customized([a, bt, s], bg))


def concat_matmul_simt() -> KernelGraph:
    """concat_matmul with K parts of 8 (not a multiple of 16): the float path on float16."""
    g = new_kernel_graph()
    x = g.new_input((16, 8), "float16", "X")
    xa = g.new_input((16, 8), "float16", "XA")
    w = g.new_input((8, 32), "float16", "W")
    b = g.new_input((8, 32), "float16", "B")
    bg = new_block_graph((2, 1, 1), 1)
    tx, txa = bg.new_input(x, (-1, -1, -1)), bg.new_input(xa, (-1, -1, -1))
    tw, tb = bg.new_input(w, (1, -1, -1)), bg.new_input(b, (1, -1, -1))
    bg.new_output(bg.concat_matmul(tx, txa, tw, tb), (1, -1, -1))
    return _one(g, [x, xa, w, b], g.customized([x, xa, w, b], bg))


def short_rows_and_columns() -> KernelGraph:
    """accum_sum_lastdim over rows of 12 (a thread per row), a column sum (reduce over dim 0)
    and an elementwise accumulator over 5 x 12 elements (fewer than the block's threads)."""
    g = new_kernel_graph()
    x = g.new_input((5, 36), "float32", "X")
    bg = new_block_graph((1, 1, 1), 3)
    tx = bg.new_input(x, (-1, -1, -1), forloop_dim=1)  # (5, 12)
    rows = bg.accum_sum_lastdim(bg.exp(tx))  # (5, 1)
    acc = bg.accum_sum(bg.square(tx))  # (5, 12)
    cols = bg.reduce_sum(acc, 0)  # (1, 12)
    bg.new_output(bg.div(acc, rows), (-1, -1, -1))
    bg.new_output(bg.mul(acc, cols), (-1, -1, -1))
    return _one(g, [x], g.customized([x], bg))


def concat_then_matmul() -> KernelGraph:
    """A concat materialized in shared memory, then used as a tensor-core operand."""
    g = new_kernel_graph()
    p = g.new_input((16, 16), "float16", "P")
    q = g.new_input((16, 16), "float16", "Q")
    w = g.new_input((32, 16), "float16", "W")
    bg = new_block_graph((1, 1, 1), 1)
    tp, tq, tw = (bg.new_input(t, (-1, -1, -1)) for t in (p, q, w))
    bg.new_output(bg.matmul(bg.concat(bg.sigmoid(tp), tq, 1), tw), (-1, -1, -1))
    return _one(g, [p, q, w], g.customized([p, q, w], bg))


def grid_and_loop_split_one_dim() -> KernelGraph:
    """Grid dim x and the for-loop both split X's dim 1 (block b, iteration i: the i-th
    sub-chunk of chunk b), with an invariant exp(Q) computed before the loop."""
    g = new_kernel_graph()
    x = g.new_input((16, 256), "float16", "X")
    q = g.new_input((16, 16), "float16", "Q")
    w = g.new_input((256, 16), "float16", "W")
    bg = new_block_graph((2, 1, 1), 4)
    tx = bg.new_input(x, (1, -1, -1), forloop_dim=1)  # (16, 32)
    tq = bg.new_input(q, (-1, -1, -1))
    tw = bg.new_input(w, (0, -1, -1), forloop_dim=0)  # (32, 16)
    eq = bg.exp(tq)  # loop-invariant, needed in the loop: computed once
    part = bg.accum_sum(bg.matmul(bg.mul(tx, bg.reduce_sum(eq, 1)), tw))  # (16, 16)
    bg.new_output(part, (1, -1, -1))  # partial sums side by side: (16, 32)
    return _one(g, [x, q, w], g.customized([x, q, w], bg))


def rank_one() -> KernelGraph:
    """Rank-1 tensors: a vector plus a broadcast scalar sum."""
    g = new_kernel_graph()
    v = g.new_input((96,), "float16", "V")
    bg = new_block_graph((3, 1, 1), 1)
    tv = bg.new_input(v, (0, -1, -1))  # (32,)
    bg.new_output(bg.sub(tv, bg.mul_scalar(bg.reduce_sum(tv, 0), "1/32")), (0, -1, -1))
    return _one(g, [v], g.customized([v], bg))


def kernel_matmuls() -> KernelGraph:
    """Predefined matmuls: rank 4 (one batch dim inside the tile), A broadcast over B's
    batch, and M = 40 (not a multiple of 16) with K streamed by the for-loop."""
    g = new_kernel_graph()
    a = g.new_input((2, 3, 32, 64), "float16", "A")
    b = g.new_input((2, 3, 64, 16), "float16", "B")
    c = g.new_input((40, 128), "float16", "C")
    d = g.new_input((2, 128, 24), "float16", "D")
    g.mark_output(g.matmul(a, b), "AB")
    g.mark_output(g.matmul(c, d), "CD")
    return g


def rms_long_loop() -> KernelGraph:
    """The fused RMSNorm + matmul with a for-loop longer than the prefetch pipeline (8
    iterations), so per-iteration buffers are refilled."""
    from fractions import Fraction

    g = new_kernel_graph()
    x = g.new_input((2, 512), "float16", "X")
    w = g.new_input((512, 128), "float16", "W")
    bg = new_block_graph((2, 1, 1), 8)
    tx = bg.new_input(x, (-1, -1, -1), forloop_dim=1)  # (2, 64)
    tw = bg.new_input(w, (1, -1, -1), forloop_dim=0)  # (64, 64)
    xw = bg.accum_sum(bg.matmul(tx, tw))
    ss = bg.accum_sum_lastdim(bg.square(tx))
    rms = bg.sqrt(bg.add_scalar(bg.mul_scalar(ss, Fraction(1, 512)), Fraction(1, 10**6)))
    bg.new_output(bg.div(xw, rms), (1, -1, -1))
    return _one(g, [x, w], g.customized([x, w], bg))


FEATURE_CASES: dict[str, Callable[[], KernelGraph]] = {
    "rms_long_loop": rms_long_loop,
    "kernel_matmuls": kernel_matmuls,
    "batched_mma": batched_mma,
    "transposed_padded_a": transposed_padded_a,
    "simt_batched_transposed": simt_batched_transposed,
    "concat_matmul_simt": concat_matmul_simt,
    "short_rows_and_columns": short_rows_and_columns,
    "concat_then_matmul": concat_then_matmul,
    "grid_and_loop_split_one_dim": grid_and_loop_split_one_dim,
    "rank_one": rank_one,
}
