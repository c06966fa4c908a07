"""The planner and the lowering of predefined kernel ops (pure Python: no compiler).

Lowered block graphs are checked with the float executor against the op itself; plans are
checked for what DESIGN.md asks of them: transposes folded into loads, the fewest barriers,
the lower peak of two orders, offsets that never overlap while both tensors live, and a
clear error over the shared-memory limit.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from mirage_py.benchmarks import get_benchmark
from mirage_py.codegen.emit import plan_program
from mirage_py.codegen.lower import lower_kernel_op, split_dims
from mirage_py.codegen.plan import _live_ranges, plan_kernel
from mirage_py.ir import BlockGraph, KernelGraph, new_block_graph, new_kernel_graph, run_float
from mirage_py.ir.errors import InputError
from mirage_py.ir.ops import ELEMENTWISE, OPS


def _as_customized(kg: KernelGraph) -> KernelGraph:
    """The same program with its one op replaced by the op's lowered block graph."""
    node = kg.nodes[0]
    bg = lower_kernel_op(kg, node)
    g = new_kernel_graph()
    ins = [g.new_input(kg.types[t].dims, kg.types[t].dtype, n) for t, n in zip(kg.inputs, kg.input_names)]
    (y,) = g.customized(ins, bg)
    g.mark_output(y, "Y")
    return g


def _one_op(dims: list[tuple[int, ...]], op: str, **attrs: object) -> KernelGraph:
    g = new_kernel_graph()
    ins = [g.new_input(d, "float32", f"x{k}") for k, d in enumerate(dims)]
    g.mark_output(g.add_op(op, ins, **attrs), "Y")
    return g


LOWER_CASES = [
    ([(64, 96), (96, 128)], "matmul", {}),
    ([(2, 64, 256), (2, 256, 128)], "matmul", {}),  # batched, K streamed by the for-loop
    ([(2, 3, 32, 64), (2, 3, 64, 48)], "matmul", {}),  # rank 4: one batch dim stays in the tile
    ([(40, 64), (3, 64, 16)], "matmul", {}),  # A broadcast over B's batch
    ([(4, 8, 256)], "reduce_sum", {"dim": 2}),
    ([(2, 64, 256)], "reduce_sum", {"dim": 2, "size": 64}),  # split-K partials combined
    ([(128, 32)], "reduce_sum", {"dim": 0}),
    ([(3, 40, 24)], "transpose", {}),
    ([(16, 24), (16, 40)], "concat", {"dim": 1}),
    ([(64, 512)], "rms_norm", {"eps": Fraction(1, 1000)}),
    ([(8, 64, 64), (1, 64)], "add", {}),  # broadcast
    ([(64,), (32, 64)], "mul", {}),  # rank broadcast
    ([(96, 300)], "gelu", {"approximate": "tanh"}),
]


@pytest.mark.parametrize(("dims", "op", "attrs"), LOWER_CASES, ids=[c[1] + str(c[0]) for c in LOWER_CASES])
def test_lowered_kernel_op_computes_the_op(dims: list[tuple[int, ...]], op: str, attrs: dict[str, object]) -> None:
    kg = _one_op(dims, op, **attrs)
    rng = np.random.default_rng(0)
    feed = {n: rng.standard_normal(kg.types[t].dims) for t, n in zip(kg.inputs, kg.input_names)}
    (want,) = run_float(kg, feed)
    (got,) = run_float(_as_customized(kg), feed)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_split_dims_divides_and_keeps_tiles_near_target() -> None:
    splits = split_dims((6, 4096), [0, 1], 4096)
    assert splits == [(0, 6)]
    splits = split_dims((8, 4096, 64), [0, 1, 2], 4096)
    tile = [8, 4096, 64]
    for d, f in splits:
        assert tile[d] % f == 0
        tile[d] //= f
    assert np.prod(tile) <= 4096 and len(splits) <= 3


def test_matmul_lowering_tiles_are_64x64_with_k_loop() -> None:
    kg = _one_op([(256, 512), (512, 384)], "matmul")
    bg = lower_kernel_op(kg, kg.nodes[0])
    assert bg.grid_dims == (6, 4, 1) and bg.forloop_range == 8
    assert [bg.types[t].dims for t in bg.inputs] == [(64, 64), (64, 64)]


# ---------------------------------------------------------------------------------------
# Plans of the benchmark experts


def _plans(name: str, size: str = "small"):
    return plan_program(get_benchmark(name).expert(size, 1), "sm_90")


def test_qknorm_transpose_is_a_view_folded_into_the_matmul_load() -> None:
    plan = _plans("qknorm")[0]
    views = [p for p in plan.tensors.values() if p.op == "transpose"]
    assert len(views) == 1 and views[0].kind == "view"
    base = plan.tensors[views[0].base]
    assert base.kind == "smem" and base.op == "div"  # the normalized K tile, stored once
    # The view's strides are its base's, swapped: the matmul reads B as [N][K].
    assert views[0].strides[-2:] == (base.strides[-1], base.strides[-2])


def test_rmsnorm_expert_plan() -> None:
    """X@W accumulates in mma registers, sum(x^2) in row registers, the division runs in the
    accumulators' loop; X's 2 rows are zero-padded to 16 for the m16n8k16 tiles."""
    plan = _plans("rmsnorm")[0]
    kinds = {p.op: p.kind for p in plan.tensors.values()}
    assert kinds["matmul"] == "accsrc" and kinds["accum_sum"] == "reg" and kinds["square"] == "inline"
    x = plan.tensors[plan.bg.inputs[0]]
    assert x.kind == "staged" and x.tile is not None and x.tile.zero_pad and x.tile.rows_p == 16
    assert x.tile.copies == 4  # four buffers: the prefetch runs three iterations ahead (F = 4)
    assert [s.kind for s in plan.steps if s.stage == "post"] == ["spill", "epilogue"]
    assert len(plan.levels("loop")) == 1  # one level: matmul and the row sums side by side


def test_levels_are_the_longest_shared_memory_chain() -> None:
    """gqa's first kernel: q@k (epilogue exp into shared memory) then e@v and the row sums:
    two loop levels, so one barrier between them (plus the top and end of the iteration)."""
    plan = _plans("gqa")[0]
    levels = plan.levels("loop")
    assert [sorted(s.kind for s in lv) for lv in levels] == [["matmul"], ["acc_rows", "matmul"]]


def test_offsets_never_overlap_while_both_tensors_live() -> None:
    for name in ("rmsnorm", "gated_mlp", "gqa", "qknorm", "lora", "ntrans"):
        for plan in _plans(name, "paper"):
            ranges = _live_ranges(plan)
            tiles = {t: plan.tensors[t].tile for t in ranges}
            for a in ranges:
                for b in ranges:
                    if a >= b:
                        continue
                    ta, tb = tiles[a], tiles[b]
                    assert ta is not None and tb is not None
                    overlap_time = not (ranges[a][1] < ranges[b][0] or ranges[b][1] < ranges[a][0])
                    overlap_bytes = ta.offset < tb.offset + tb.nbytes and tb.offset < ta.offset + ta.nbytes
                    assert not (overlap_time and overlap_bytes), (name, a, b)
            assert plan.smem_bytes >= max((t.offset + t.nbytes for t in tiles.values() if t), default=0)


def test_the_lower_peak_order_is_chosen() -> None:
    """Two chains from X: a long one whose first stored tile (exp(X), 64 x 64) is big and the
    rest small (64 x 16), and a short one (sqrt(X), 64 x 64, then a matmul) needed only at the
    end. As soon as possible both big tiles live at level 0; as late as possible sqrt(X) is
    made when exp(X) is dead."""
    bg = new_block_graph((1, 1, 1), 1)
    x = bg.new_input(_kernel_tensor((64, 64)), (-1, -1, -1))
    w1 = bg.new_input(_kernel_tensor((64, 16)), (-1, -1, -1))
    w2 = bg.new_input(_kernel_tensor((16, 16)), (-1, -1, -1))
    long = bg.matmul(bg.exp(x), w1)
    for _ in range(3):
        long = bg.matmul(bg.exp(long), w2)
    short = bg.matmul(bg.sqrt(x), w1)
    bg.new_output(bg.add(long, short), (-1, -1, -1))
    params = ["X", "W1", "W2", "Y"]
    asap = plan_kernel(bg, "k", params, orders=("asap",))
    alap = plan_kernel(bg, "k", params, orders=("alap",))
    best = plan_kernel(bg, "k", params)
    assert alap.smem_bytes < asap.smem_bytes
    assert (best.order, best.smem_bytes) == ("alap", alap.smem_bytes)
    # Both orders have the same number of levels: the fewest barriers either way.
    # exp(X); three matmuls with exp fused into their epilogues; the last matmul; the store.
    assert len(alap.levels("post")) == len(asap.levels("post")) == 6


def _kernel_tensor(dims: tuple[int, ...], dtype: str = "float16"):
    from mirage_py.ir import TensorType

    return TensorType(dims, dtype)


def test_plan_over_the_shared_memory_limit_is_rejected() -> None:
    bg = BlockGraph((1, 1, 1), 1)
    x = bg.new_input(_kernel_tensor((64, 4096)), (-1, -1, -1))
    w = bg.new_input(_kernel_tensor((4096, 64)), (-1, -1, -1))
    bg.new_output(bg.matmul(x, w), (-1, -1, -1))
    with pytest.raises(InputError, match=r"needs \d+ bytes of shared memory per block, over the sm_80 limit of 166912"):
        plan_kernel(bg, "k", ["X", "W", "Y"], "sm_80")
    msg = ""
    try:
        plan_kernel(bg, "k", ["X", "W", "Y"], "sm_80")
    except InputError as e:
        msg = str(e)
    assert "\n" not in msg


def test_every_elementwise_op_has_a_float_template() -> None:
    for name in ELEMENTWISE:
        t = OPS[name].cuda
        assert t is not None and not t.startswith("@"), name
    for name, op in OPS.items():
        if name not in ELEMENTWISE and op.kind != "graph":
            assert op.cuda is not None and op.cuda.startswith("@"), name
