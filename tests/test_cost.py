"""The analytic cost model (mirage_py/codegen/cost.py) and the op table's work rules."""

from __future__ import annotations

import json
import math
import time

import pytest

from mirage_py.benchmarks import all_benchmarks, get_benchmark
from mirage_py.codegen.cost import (
    GPUS,
    cost_report,
    describe,
    get_gpu,
    min_dram_bytes,
    modeled_us,
    occupancy,
)
from mirage_py.ir import OPS, KernelGraph, new_block_graph, new_kernel_graph
from mirage_py.ir.dtypes import ITEMSIZE

NAMES = ("rmsnorm", "gated_mlp", "gqa", "qknorm", "lora", "ntrans")


def _elementwise(rows: int, cols: int) -> KernelGraph:
    g = new_kernel_graph()
    x = g.new_input((rows, cols), "float16", "X")
    g.mark_output(g.exp(x), "Y")
    return g


def _row_scale(rows: int, cols: int, grid: int, f: int, dtype: str = "float16") -> KernelGraph:
    """One customized kernel: Y = X * s, s (1, cols) replicated over every block."""
    g = new_kernel_graph()
    X, S = g.new_input((rows, cols), dtype, "X"), g.new_input((1, cols), dtype, "S")
    bg = new_block_graph((grid, 1, 1), f)
    x = bg.new_input(X, (0, -1, -1))
    s = bg.new_input(S, (-1, -1, -1))
    bg.new_output(bg.mul(x, s), (0, -1, -1))
    (y,) = g.customized([X, S], bg)
    g.mark_output(y, "Y")
    return g


# -- the op table ----------------------------------------------------------------------


def test_every_op_has_a_work_rule():
    missing = [n for n, op in OPS.items() if op.kind != "graph" and op.cost is None]
    assert missing == []


def test_matmul_work_rule_counts_two_flops_per_multiply_add():
    w = OPS["matmul"].cost([(3, 5, 7), (3, 7, 11)], (3, 5, 11), {})
    assert w.flops == 2 * 3 * 5 * 11 * 7 and w.mnk == (3, 5, 11, 7)
    w = OPS["concat_matmul"].cost([(4, 6), (4, 2), (6, 9), (2, 9)], (4, 9), {})
    assert w.mnk == (1, 4, 9, 8) and w.flops == 2 * 4 * 9 * 8


# -- the GPU table ---------------------------------------------------------------------


def test_gpu_table_is_ordered_as_the_datasheets_say():
    a, h, h2 = GPUS["A100"], GPUS["H100"], GPUS["H200"]
    assert a.dram_bytes_per_s < h.dram_bytes_per_s < h2.dram_bytes_per_s
    assert a.tensor_flops < h.tensor_flops == h2.tensor_flops
    assert a.sms < h.sms == h2.sms and a.smem_per_sm < h.smem_per_sm
    for g in GPUS.values():  # the tensor cores are the fastest unit of each
        assert g.tensor_flops > g.fp16_flops > g.fp32_flops
        assert g.l2_bytes_per_s > g.dram_bytes_per_s
    assert get_gpu("h100") is h
    with pytest.raises(ValueError, match="unknown GPU"):
        get_gpu("V100")


# -- monotonic sanity --------------------------------------------------------------------


@pytest.mark.parametrize("gpu", list(GPUS))
def test_more_bytes_take_more_time(gpu):
    times = [modeled_us(_elementwise(rows, 4096), gpu) for rows in (64, 1024, 16384, 65536)]
    assert times == sorted(times) and times[-1] > times[0]
    times = [modeled_us(_row_scale(rows, 4096, 64, 1), gpu) for rows in (64, 1024, 8192)]
    assert times == sorted(times) and times[-1] > times[0]


def test_faster_memory_gives_a_faster_memory_bound_kernel():
    g = _elementwise(65536, 4096)
    a, h, h2 = (modeled_us(g, n) for n in ("A100", "H100", "H200"))
    assert a > h > h2


def test_fusion_removes_launches_and_time():
    for name in NAMES:
        b = get_benchmark(name)
        spec, expert = cost_report(b.spec("paper")), cost_report(b.expert("paper"))
        assert expert.launches < spec.launches, name
        assert expert.launches == len(b.expert("paper").nodes)


def test_launch_overhead_is_paid_once_per_kernel():
    g = _elementwise(16, 16)
    r = cost_report(g)
    assert r.launches == 1 and r.kernels[0].bound == "launch"
    assert r.total_us >= GPUS["H100"].launch_us
    two = new_kernel_graph()
    x = two.new_input((16, 16), "float16", "X")
    two.mark_output(two.exp(two.exp(x)), "Y")
    assert modeled_us(two) > modeled_us(g) + 0.99 * GPUS["H100"].launch_us


def test_bigger_shared_memory_lowers_occupancy():
    for gpu in GPUS.values():
        occ = [occupancy(gpu, 128, kb * 1024) for kb in (8, 16, 32, 64, 100, 160)]
        assert occ == sorted(occ, reverse=True) and occ[0] > occ[-1] >= 1
        assert occupancy(gpu, 128, gpu.smem_per_block + 1) == 0
        assert occupancy(gpu, 256, 0) == gpu.max_threads_per_sm // 256  # threads limit


def test_fewer_resident_blocks_do_not_speed_a_kernel_up():
    # Same work, tiles 4x longer per block: more shared memory, fewer blocks per SM.
    small, big = _row_scale(16384, 1024, 4096, 1), _row_scale(16384, 4096, 1024, 1)
    r_small, r_big = cost_report(small).kernels[0], cost_report(big).kernels[0]
    assert r_big.shared_bytes > r_small.shared_bytes
    assert r_big.blocks_per_sm < r_small.blocks_per_sm


def test_a_block_over_the_shared_memory_limit_cannot_launch():
    g = _row_scale(1024, 65536, 8, 1, "float32")  # 128 x 65536 x 4 bytes per block
    r = cost_report(g, "A100")
    assert math.isinf(r.total_us) and r.kernels[0].bound == "infeasible"
    assert r.to_json()["total_us"] is None


def test_more_blocks_than_one_wave_add_waves():
    r = cost_report(_row_scale(8192, 1024, 8192, 1)).kernels[0]
    gpu = GPUS["H100"]
    assert r.waves == math.ceil(8192 / (gpu.sms * r.blocks_per_sm)) and r.waves > 1


# -- DRAM bytes and the L2 term --------------------------------------------------------


def test_dram_bytes_never_below_the_minimum_and_fused_experts_reach_it():
    for name in NAMES:
        b = get_benchmark(name)
        spec = b.spec("paper")
        rs = cost_report(spec)
        assert rs.min_dram_bytes == min_dram_bytes(spec)
        assert rs.dram_bytes > rs.min_dram_bytes, name  # op by op writes intermediates
        for ename, e in b.experts("paper").items():
            re_ = cost_report(e)
            assert re_.dram_bytes >= re_.min_dram_bytes, (name, ename)
            if len(e.nodes) == 1:  # one kernel: each input read once, the output written once
                assert re_.dram_bytes == re_.min_dram_bytes, (name, ename)


def test_min_dram_bytes_is_inputs_plus_outputs():
    g = get_benchmark("lora").spec("paper")
    expect = sum(math.prod(g.types[t].dims) * ITEMSIZE[g.types[t].dtype] for t in [*g.inputs, *g.outputs])
    assert min_dram_bytes(g) == expect


def test_replicated_small_input_is_read_from_l2():
    g = _row_scale(4096, 4096, 128, 1)
    k = cost_report(g).kernels[0]
    s_bytes = 4096 * 2
    assert k.l2_bytes == s_bytes * 127  # 127 re-reads of S hit L2
    assert k.dram_bytes == min_dram_bytes(g)


def test_replicated_input_larger_than_l2_is_read_from_dram():
    g = new_kernel_graph()
    X = g.new_input((4, 8192), "float32", "X")
    S = g.new_input((2048, 8192), "float32", "S")  # 64 MiB: larger than every L2 here
    bg = new_block_graph((4, 1, 1), 64)
    x = bg.new_input(X, (0, -1, -1), forloop_dim=1)
    s = bg.new_input(S, (-1, -1, -1), forloop_dim=1)
    bg.new_output(bg.accum_sum(bg.matmul(x, bg.transpose(s))), (0, -1, -1))
    (y,) = g.customized([X, S], bg)
    g.mark_output(y, "Y")
    k = cost_report(g).kernels[0]
    s_bytes = 2048 * 8192 * 4
    assert k.dram_bytes >= 4 * s_bytes and k.l2_bytes == 0


def test_intermediate_that_fits_in_l2_is_read_from_l2():
    r = cost_report(_elementwise_chain(256, 1024))
    first, second = r.kernels
    assert second.l2_bytes == 256 * 1024 * 2 and second.dram_bytes == 256 * 1024 * 2  # its write only
    big = cost_report(_elementwise_chain(65536, 1024))  # 128 MiB intermediate: evicted
    assert big.kernels[1].l2_bytes == 0


def _elementwise_chain(rows: int, cols: int) -> KernelGraph:
    g = new_kernel_graph()
    x = g.new_input((rows, cols), "float16", "X")
    g.mark_output(g.exp(g.exp(x)), "Y")
    return g


# -- the benchmarks ----------------------------------------------------------------------


@pytest.mark.parametrize("gpu", list(GPUS))
@pytest.mark.parametrize("name", NAMES)
def test_experts_beat_their_specs_at_paper_size(name, gpu):
    b = get_benchmark(name)
    spec_us = modeled_us(b.spec("paper"), gpu)
    for ename, e in b.experts("paper").items():
        assert modeled_us(e, gpu) < spec_us, (name, ename, gpu)


def test_report_is_labelled_modelled_and_serializes():
    r = cost_report(get_benchmark("gqa").expert("paper"), "H200")
    d = json.loads(json.dumps(r.to_json()))
    assert d["label"] == "modelled" and d["gpu"] == GPUS["H200"].name
    assert len(d["kernels"]) == 2 and all(k["us"] > 0 for k in d["kernels"])
    assert "modelled" in describe("A100") and GPUS["A100"].name in describe("A100")
    assert math.isclose(d["total_us"], round(sum(k.us for k in r.kernels), 3), abs_tol=2e-3)


def test_model_is_fast_enough_for_the_search():
    graphs = [g for b in all_benchmarks().values() for g in (b.spec("paper"), *b.experts("paper").values())]
    t0 = time.perf_counter()
    for g in graphs * 5:
        modeled_us(g)
    per_graph_ms = (time.perf_counter() - t0) * 1e3 / (5 * len(graphs))
    assert per_graph_ms < 2.0  # measured about 0.1 ms; the search also lifts and hashes each match


def test_show_json_carries_the_modelled_time(tmp_path):
    from click.testing import CliRunner

    from mirage_py.cli import cli
    from mirage_py.ir import save

    g = get_benchmark("ntrans").expert("small")
    save(g, tmp_path / "g.json")
    res = CliRunner().invoke(cli, ["show", str(tmp_path / "g.json"), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["modeled_us"] == round(modeled_us(g), 3) and "modelled" in d["cost_model"]
    assert d["dram_bytes"] == d["min_dram_bytes"] == min_dram_bytes(g)


def test_model_prices_the_grids_the_emitter_launches():
    from mirage_py.codegen.emit import plan_program

    for name in NAMES:
        b = get_benchmark(name)
        for g in (b.spec("paper"), *b.experts("paper").values()):
            model = [k.grid for k in cost_report(g).kernels]
            emitted = [p.grid for p in plan_program(g)]
            assert model == emitted, name


def test_an_op_the_emitter_cannot_tile_cannot_run():
    g = new_kernel_graph()
    x = g.new_input((1 << 22, 64), "float16", "X")  # 65536 row tiles: over grid y's limit
    w = g.new_input((64, 64), "float16", "W")
    g.mark_output(g.matmul(x, w), "Y")
    r = cost_report(g)
    assert math.isinf(r.total_us) and r.kernels[0].bound == "infeasible" and "no tiling" in r.kernels[0].note
