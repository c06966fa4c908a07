"""One test per validation rule: every `rule` the IR raises is triggered here from the DSL
(or the JSON loader), and every error is one clear line that names its rule. The JSON
loader's SchemaError cases follow."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

import mirage_py as mp
from mirage_py.ir import GraphError, SchemaError, dumps, load, loads
from mirage_py.ir.graph import TensorType

IR_DIR = Path(mp.__file__).parent / "ir"


def rules_in_source() -> set[str]:
    """Every rule name written as GraphError("...") anywhere in mirage_py/ir."""
    found: set[str] = set()
    for f in IR_DIR.glob("*.py"):
        found |= set(re.findall(r'GraphError\(\s*"([^"]+)"', f.read_text()))
    return found


def raises(rule: str, fn: Callable[[], Any], *words: str) -> GraphError:
    """Run `fn`, expect a GraphError for `rule` whose message is one non-empty line that
    names the rule and contains `words`."""
    with pytest.raises(GraphError) as info:
        fn()
    e = info.value
    assert e.rule == rule, f"expected rule {rule!r}, got {e.rule!r}: {e}"
    text = str(e)
    assert "\n" not in text and text.strip() == text
    assert text.endswith(f"[{rule}]") and len(e.args[0]) > 10
    for w in words:
        assert w in text, f"{w!r} not in {text!r}"
    return e


def kg_with(*shapes: tuple[int, ...], dtype: str = "float32") -> tuple[mp.KernelGraph, list[mp.ir.Tensor]]:
    g = mp.new_kernel_graph()
    return g, [g.new_input(s, dtype) for s in shapes]


# ---------------------------------------------------------------------------------------
# Triggers, one per rule. Each builds what it needs and performs the one bad step.


def _looped_block(F: int = 2) -> tuple[mp.BlockGraph, mp.ir.Tensor, mp.ir.Tensor]:
    """A block graph with a per-iteration tensor and a loop-invariant one."""
    g, (x, y) = kg_with((4, 8), (4, 8 // F))
    bg = mp.new_block_graph([1, 1, 1], F)
    return bg, bg.new_input(x, [-1, -1, -1], 1), bg.new_input(y, [-1, -1, -1], -1)


def t_rank() -> None:
    mp.new_kernel_graph().new_input([2, 2, 2, 2, 2], "float32")


def t_dims() -> None:
    mp.new_kernel_graph().new_input([2, 0], "float32")


def t_dtype_unknown() -> None:
    mp.new_kernel_graph().new_input([2], "float64")


def t_dtype() -> None:
    g = mp.new_kernel_graph()
    g.add(g.new_input([2], "float16"), g.new_input([2], "float32"))


def t_op_level() -> None:
    g, (x,) = kg_with((4, 4))
    g.add_op("accum_sum", [x])


def t_arity() -> None:
    g, (x,) = kg_with((4,))
    g.add_op("add", [x])


def t_unknown_op() -> None:
    g, (x,) = kg_with((4,))
    g.add_op("conv2d", [x])


def t_attr_missing() -> None:
    g, (x,) = kg_with((4,))
    g.add_op("reduce_sum", [x])


def t_attr_unknown() -> None:
    g, (x,) = kg_with((4,))
    g.add_op("exp", [x], axis=0)


def t_attr_type() -> None:
    g, (x,) = kg_with((4,))
    g.mul_scalar(x, "one third")


def t_dim_range() -> None:
    g, (x,) = kg_with((4, 4))
    g.reduce_sum(x, 2)


def t_broadcast() -> None:
    g, (a, b) = kg_with((3, 4), (3,))
    g.add(a, b)


def t_matmul_rank() -> None:
    g, (a, b) = kg_with((4,), (4, 2))
    g.matmul(a, b)


def t_matmul_inner() -> None:
    g, (a, b) = kg_with((3, 4), (5, 2))
    g.matmul(a, b)


def t_matmul_batch() -> None:
    g, (a, b) = kg_with((2, 3, 4), (3, 4, 5))
    g.matmul(a, b)


def t_reduce_size() -> None:
    g, (x,) = kg_with((4, 6))
    g.reduce_sum(x, 1, 4)


def t_transpose_rank() -> None:
    g, (x,) = kg_with((4,))
    g.transpose(x)


def t_concat_dims() -> None:
    g, (a, b) = kg_with((2, 3), (3, 3))
    g.concat(a, b, 1)


def t_name_duplicate() -> None:
    g = mp.new_kernel_graph()
    g.new_input([2], "float32", "x")
    g.new_input([2], "float32", "x")


def t_foreign_tensor() -> None:
    g1, (x,) = kg_with((2,))
    g2, _ = kg_with((2,))
    g2.exp(x)


def t_unknown_tensor() -> None:
    g, _ = kg_with((2,))
    g.exp(7)


def t_no_outputs() -> None:
    g, (x,) = kg_with((2,))
    g.exp(x)
    g.validate()


def t_grid_dims() -> None:
    mp.new_block_graph([2, 0, 1])


def t_forloop_range() -> None:
    mp.new_block_graph([2], 0)


def t_forloop_dim() -> None:
    g, (x,) = kg_with((4, 4))
    mp.new_block_graph([1], 2).new_input(x, [-1, -1, -1], 2)


def t_map_range() -> None:
    g, (x,) = kg_with((4, 4))
    mp.new_block_graph([2]).new_input(x, [2, -1, -1])


def t_map_duplicate() -> None:
    g, (x,) = kg_with((4, 4))
    mp.new_block_graph([2, 2]).new_input(x, [0, 0, -1])


def t_tile_divide() -> None:
    g, (x,) = kg_with((6, 4))
    mp.new_block_graph([4]).new_input(x, [0, -1, -1])


def t_accum_stage() -> None:
    bg, _, inv = _looped_block()
    bg.accum_sum(inv)


def t_stage_mix() -> None:
    bg, loop, _ = _looped_block()
    post = bg.accum_sum(loop)
    bg.add(loop, post)


def t_output_stage() -> None:
    bg, loop, _ = _looped_block()
    bg.new_output(bg.exp(loop), [-1, -1, -1])


def t_omap_unmapped() -> None:
    g, (x,) = kg_with((4, 4))
    bg = mp.new_block_graph([2, 1, 1])
    bg.new_output(bg.new_input(x, [0, -1, -1]), [-1, -1, -1])


def t_customized_inputs() -> None:
    g, (x, y) = kg_with((4, 4), (4, 8))
    bg = mp.new_block_graph([1])
    bg.new_output(bg.new_input(x, [-1, -1, -1]), [-1, -1, -1])
    g.customized([y], bg)


TRIGGERS: dict[str, Callable[[], None]] = {
    "rank": t_rank,
    "dims": t_dims,
    "dtype-unknown": t_dtype_unknown,
    "dtype": t_dtype,
    "op-level": t_op_level,
    "arity": t_arity,
    "unknown-op": t_unknown_op,
    "attr-missing": t_attr_missing,
    "attr-unknown": t_attr_unknown,
    "attr-type": t_attr_type,
    "dim-range": t_dim_range,
    "broadcast": t_broadcast,
    "matmul-rank": t_matmul_rank,
    "matmul-inner": t_matmul_inner,
    "matmul-batch": t_matmul_batch,
    "reduce-size": t_reduce_size,
    "transpose-rank": t_transpose_rank,
    "concat-dims": t_concat_dims,
    "name-duplicate": t_name_duplicate,
    "foreign-tensor": t_foreign_tensor,
    "unknown-tensor": t_unknown_tensor,
    "no-outputs": t_no_outputs,
    "grid-dims": t_grid_dims,
    "forloop-range": t_forloop_range,
    "forloop-dim": t_forloop_dim,
    "map-range": t_map_range,
    "map-duplicate": t_map_duplicate,
    "tile-divide": t_tile_divide,
    "accum-stage": t_accum_stage,
    "stage-mix": t_stage_mix,
    "output-stage": t_output_stage,
    "omap-unmapped": t_omap_unmapped,
    "customized-inputs": t_customized_inputs,
}


def test_every_rule_in_the_source_has_a_trigger() -> None:
    src = rules_in_source()
    assert len(src) >= 30
    assert src == set(TRIGGERS), f"untested rules: {sorted(src - set(TRIGGERS))}; stale: {sorted(set(TRIGGERS) - src)}"


@pytest.mark.parametrize("rule", sorted(TRIGGERS))
def test_rule(rule: str) -> None:
    raises(rule, TRIGGERS[rule])


# ---------------------------------------------------------------------------------------
# The rules DESIGN.md names, case by case.


def test_tiles_divide_grid() -> None:
    g, (x,) = kg_with((6, 8))
    raises("tile-divide", lambda: mp.new_block_graph([1, 4]).new_input(x, [-1, 0, -1]), "grid dim y", "6")
    raises("tile-divide", lambda: mp.new_block_graph([1, 1, 3]).new_input(x, {"z": 1}), "grid dim z", "8")
    # Divides: fine.
    assert mp.new_block_graph([3, 4]).new_input(x, [0, 1, -1]).dims == (2, 2)


def test_tiles_divide_forloop_after_grid() -> None:
    # Split order: the grid splits first, the for-loop splits each block's chunk. 12 / 2 = 6
    # divides by F = 3 but 6 / 3 = 2 does not divide by F = 4 even though 12 does.
    g, (x,) = kg_with((12, 4))
    assert mp.new_block_graph([2], 3).new_input(x, [0, -1, -1], 0).dims == (2, 4)
    assert mp.new_block_graph([1], 4).new_input(x, [-1, -1, -1], 0).dims == (3, 4)
    raises("tile-divide", lambda: mp.new_block_graph([2], 4).new_input(x, [0, -1, -1], 0), "for-loop", "6 by 4")
    raises("tile-divide", lambda: mp.new_block_graph([1], 5).new_input(x, [-1, -1, -1], 1), "for-loop")
    # Split by grid x and for-loop on different dims: each divides on its own.
    assert mp.new_block_graph([4], 2).new_input(x, [1, -1, -1], 0).dims == (6, 1)


def test_imap_omap_forloop_dims_out_of_range() -> None:
    g, (x,) = kg_with((4, 4))
    bg = mp.new_block_graph([2, 2, 2])
    raises("map-range", lambda: bg.new_input(x, [0, 1, 2]), "grid dim z", "rank 2")
    raises("map-range", lambda: bg.new_input(x, [-2, -1, -1]), "grid dim x")
    raises("map-range", lambda: bg.new_input(x, [0, 1]), "three integers")
    raises("map-range", lambda: bg.new_input(x, {"w": 0}), "unknown grid dims")
    raises("map-range", lambda: bg.new_input(x, [0.0, -1, -1]), "three integers")
    raises("forloop-dim", lambda: bg.new_input(x, [0, 1, -1], 2), "rank 2")
    raises("forloop-dim", lambda: bg.new_input(x, [0, 1, -1], -2))
    raises("forloop-dim", lambda: bg.new_input(x, [0, 1, -1], True))
    t = mp.new_block_graph([2, 1, 1]).new_input(x, [0, -1, -1])
    raises("map-range", lambda: t.graph.new_output(t, [2, -1, -1]), "omap")


def test_two_grid_dims_on_one_tensor_dim() -> None:
    g, (x,) = kg_with((4, 4))
    raises("map-duplicate", lambda: mp.new_block_graph([2, 2]).new_input(x, [1, 1, -1]), "imap")
    bg = mp.new_block_graph([2, 2])
    t = bg.new_input(x, [0, 1, -1])
    raises("map-duplicate", lambda: bg.new_output(t, {"x": 0, "y": 0}), "omap")


def test_accumulator_on_loop_invariant_or_post_tensor() -> None:
    bg, loop, inv = _looped_block()
    raises("accum-stage", lambda: bg.accum_sum(inv), "invariant")
    raises("accum-stage", lambda: bg.accum_sum_lastdim(bg.exp(inv)), "invariant")
    post = bg.accum_sum(loop)
    raises("accum-stage", lambda: bg.accum_sum(post), "post")
    raises("accum-stage", lambda: bg.accum_sum_lastdim(bg.mul(post, inv)), "post")
    # With F = 1 there is no loop: an accumulator is allowed anywhere (it is the identity).
    bg1, a, b = _looped_block(F=1)
    bg1.accum_sum(bg1.accum_sum(b))


def test_output_of_per_iteration_tensor() -> None:
    bg, loop, inv = _looped_block()
    raises("output-stage", lambda: bg.new_output(loop, [-1, -1, -1]), "per iteration")
    raises("output-stage", lambda: bg.new_output(bg.add(loop, inv), [-1, -1, -1]))
    # Post-accumulation and loop-invariant tensors may be outputs.
    bg.new_output(bg.accum_sum(loop), [-1, -1, -1])
    bg.new_output(bg.exp(inv), [-1, -1, -1])


def test_mixing_per_iteration_and_post_accumulation() -> None:
    bg, loop, inv = _looped_block()
    post = bg.accum_sum_lastdim(loop)
    raises("stage-mix", lambda: bg.mul(loop, post), "mixes")
    raises("stage-mix", lambda: bg.concat(post, bg.exp(loop), 1))
    raises("stage-mix", lambda: bg.matmul(bg.transpose(loop), post))
    # Loop-invariant tensors mix with either.
    bg.add(loop, inv)
    bg.mul(post, bg.reduce_sum(inv, 1))


def test_grid_dim_missing_from_omap() -> None:
    g, (x,) = kg_with((4, 6))
    bg = mp.new_block_graph([2, 3, 1])
    t = bg.new_input(x, [0, 1, -1])
    raises("omap-unmapped", lambda: bg.new_output(t, [0, -1, -1]), "grid dim y", "size 3")
    raises("omap-unmapped", lambda: bg.new_output(t, {"y": 1}), "grid dim x")
    # A grid dim of size 1 need not be mapped.
    bg.new_output(t, [0, 1, -1])


def test_dtype_mismatch() -> None:
    g = mp.new_kernel_graph()
    a, b = g.new_input([2, 2], "float16"), g.new_input([2, 2], "bfloat16")
    raises("dtype", lambda: g.matmul(a, b), "bfloat16", "float16")
    bg = mp.new_block_graph([1])
    ta, tb = bg.new_input(a, [-1, -1, -1]), bg.new_input(b, [-1, -1, -1])
    raises("dtype", lambda: bg.sub(ta, tb))
    raises("dtype-unknown", lambda: bg.new_input(TensorType((2,), "int8"), [-1, -1, -1]), "int8")
    raises("dtype-unknown", lambda: g.new_input([2], "fp16"), "fp16")


def test_op_at_the_wrong_level() -> None:
    g, (x, y) = kg_with((4, 4), (4, 4))
    for op, ins in [("accum_sum", [x]), ("accum_sum_lastdim", [x]), ("concat_matmul", [x, x, y, y])]:
        raises("op-level", lambda op=op, ins=ins: g.add_op(op, ins), op, "kernel")
    bg = mp.new_block_graph([1])
    t = bg.new_input(x, [-1, -1, -1])
    raises("op-level", lambda: bg.add_op("customized", [t], block_graph=bg), "customized", "block")
    assert not hasattr(g, "accum_sum") and not hasattr(bg, "customized")


def test_arity() -> None:
    g, (x, y) = kg_with((4, 4), (4, 4))
    raises("arity", lambda: g.add_op("exp", [x, y]), "1 input")
    raises("arity", lambda: g.add_op("matmul", [x]), "2 input")
    bg = mp.new_block_graph([1])
    t = bg.new_input(x, [-1, -1, -1])
    raises("arity", lambda: bg.add_op("concat_matmul", [t, t, t]), "4 input")


def test_rank_above_four() -> None:
    raises("rank", lambda: mp.new_kernel_graph().new_input([1] * 5, "float32"), "1 to 4")
    raises("rank", lambda: mp.new_kernel_graph().new_input([], "float32"), "1 to 4")
    raises("dims", lambda: mp.new_kernel_graph().new_input([2, -1], "float32"))
    raises("dims", lambda: mp.new_kernel_graph().new_input([2.0], "float32"))
    g = mp.new_kernel_graph()
    x = g.new_input([2, 2, 2, 2], "float32")
    g.exp(x)  # rank 4 is fine


def test_customized_inputs_must_match_block_graph() -> None:
    g, (x, y, z) = kg_with((4, 4), (4, 4), (4, 8))
    bg = mp.new_block_graph([2])
    tx = bg.new_input(x, [0, -1, -1])
    bg.new_output(bg.exp(tx), [0, -1, -1])
    raises("customized-inputs", lambda: g.customized([], bg), "0 inputs", "has 1")
    raises("customized-inputs", lambda: g.customized([x, y], bg), "2 inputs")
    raises("customized-inputs", lambda: g.customized([z], bg), "[4, 8]", "[4, 4]")
    # Same type but not the tensor the block input was made from.
    raises("customized-inputs", lambda: g.customized([y], bg), "not the tensor")
    g16 = mp.new_kernel_graph()
    h = g16.new_input([4, 4], "float16")
    raises("customized-inputs", lambda: g16.customized([h], bg), "float16", "float32")
    # A block graph built from a bare TensorType accepts any tensor of that type.
    bg2 = mp.new_block_graph([2])
    bg2.new_output(bg2.new_input(TensorType((4, 4), "float32"), [0, -1, -1]), [0, -1, -1])
    assert g.customized([y], bg2)[0].dims == (4, 4)
    (out,) = g.customized([x], bg)
    assert out.dims == (4, 4)
    raises("no-outputs", lambda: g.customized([], mp.new_block_graph([1])), "no outputs")
    raises("attr-type", lambda: g.add_op("customized", [x], block_graph="bg"), "BlockGraph")


def test_attribute_rules() -> None:
    g, (x,) = kg_with((4, 6))
    raises("attr-type", lambda: g.mul_scalar(x, True), "number")
    raises("attr-type", lambda: g.add_scalar(x, [1]), "number")
    raises("attr-type", lambda: g.add_scalar(x, "1/0"), "rational")
    raises("attr-type", lambda: g.pow_scalar(x, float("inf")), "rational")
    raises("attr-type", lambda: g.pow_scalar(x, float("nan")), "rational")
    raises("attr-type", lambda: g.reduce_sum(x, 1, 0), "positive integer")
    raises("attr-type", lambda: g.reduce_sum(x, 1, 2.0), "positive integer")
    raises("attr-type", lambda: g.gelu(x, "fast"), "approximate")
    raises("attr-missing", lambda: g.add_op("mul_scalar", [x]), "'c'")
    raises("attr-unknown", lambda: g.add_op("gelu", [x], approx="tanh"), "approx")
    raises("dim-range", lambda: g.concat(x, x, -3), "rank 2")
    raises("dim-range", lambda: g.reduce_sum(x, True), "rank 2")
    assert g.rms_norm(x, Fraction(1, 10**6)).dims == (4, 6)


def test_block_graph_shape_rules() -> None:
    raises("grid-dims", lambda: mp.new_block_graph([1, 1, 1, 1]), "1 to 3")
    raises("grid-dims", lambda: mp.new_block_graph([2.0]))
    raises("forloop-range", lambda: mp.new_block_graph([1], 1.5))
    raises("forloop-range", lambda: mp.new_block_graph([1], True))


def test_errors_from_a_file_keep_their_rule_and_say_where() -> None:
    g, (x, y) = kg_with((2, 3), (2, 3))
    g.mark_output(g.add(x, y))
    d = json.loads(dumps(g))
    d["inputs"][1]["dims"] = [4]
    e = raises("broadcast", lambda: loads(json.dumps(d)), "graph.ops[0]")
    assert "do not broadcast" in str(e)
    d["inputs"][1]["dims"] = [2, 3]
    d["inputs"][1]["dtype"] = "float64"
    raises("dtype-unknown", lambda: loads(json.dumps(d)), "float64")


# ---------------------------------------------------------------------------------------
# The JSON loader's SchemaError cases.


def _graph_json() -> dict[str, Any]:
    g, (x, w) = kg_with((4, 8), (8, 6))
    bg = mp.new_block_graph([2], 2)
    tx, tw = bg.new_input(x, [-1, -1, -1], 1), bg.new_input(w, [1, -1, -1], 0)
    bg.new_output(bg.accum_sum(bg.matmul(tx, tw)), [1, -1, -1])
    (y,) = g.customized([x, w], bg)
    g.mark_output(g.exp(y), "y")
    d = json.loads(dumps(g))
    assert loads(json.dumps(d)).output_names == ["y"]  # the unmodified file loads
    return d


def schema_error(d: Any, *words: str) -> SchemaError:
    text = d if isinstance(d, str) else json.dumps(d)
    with pytest.raises(SchemaError) as info:
        loads(text)
    msg = str(info.value)
    assert "\n" not in msg and msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return info.value


def test_schema_unknown_or_missing() -> None:
    d = _graph_json()
    schema_error({**d, "schema": "mirage-py.graph.v2"}, "unknown schema", "v2", "mirage-py.graph.v1")
    schema_error({k: v for k, v in d.items() if k != "schema"}, "unknown schema", "None")
    schema_error({**d, "schema": 1}, "unknown schema")


def test_schema_missing_field() -> None:
    for key in ["inputs", "ops", "outputs"]:
        d = _graph_json()
        del d[key]
        schema_error(d, "missing field", repr(key))
    d = _graph_json()
    del d["inputs"][0]["dtype"]
    schema_error(d, "inputs[0]", "'dtype'")
    d = _graph_json()
    del d["ops"][0]["attrs"]["block_graph"]["forloop_range"]
    schema_error(d, "graph.ops[0]", "'forloop_range'")
    d = _graph_json()
    del d["ops"][0]["attrs"]["block_graph"]["inputs"][1]["imap"]
    schema_error(d, "block_graph.inputs[1]", "'imap'")
    d = _graph_json()
    del d["ops"][1]["op"]
    schema_error(d, "graph.ops[1]", "'op'")


def test_schema_wrong_type() -> None:
    d = _graph_json()
    d["inputs"][0]["dims"] = "4x8"
    schema_error(d, "wrong type", "'dims'")
    d = _graph_json()
    d["inputs"][0]["dims"] = [4, "8"]
    schema_error(d, "list of integers")
    d = _graph_json()
    d["inputs"][0]["dims"] = [4, True]
    schema_error(d, "list of integers")
    d = _graph_json()
    d["inputs"][1]["name"] = 7
    schema_error(d, "wrong type", "'name'")
    d = _graph_json()
    d["ops"][1]["attrs"] = [1]
    schema_error(d, "'attrs' must be an object")
    d = _graph_json()
    d["ops"] = {}
    schema_error(d, "wrong type", "'ops'")
    d = _graph_json()
    d["outputs"][0] = "y"
    schema_error(d, "expected an object")
    d = _graph_json()
    d["ops"][0]["attrs"]["block_graph"]["forloop_range"] = True
    schema_error(d, "wrong type")
    schema_error([d], "one JSON object")
    d = _graph_json()
    d["ops"][0]["attrs"]["block_graph"]["block_dims"] = "abc"
    schema_error(d, "wrong type", "'block_dims'")
    d = _graph_json()
    d["ops"][0]["attrs"]["block_graph"]["block_dims"] = [64, 1.5, 1]
    schema_error(d, "list of integers")
    d = _graph_json()
    del d["ops"][0]["attrs"]["block_graph"]["block_dims"]  # optional: a default is used
    assert loads(json.dumps(d)).nodes[0].attrs["block_graph"].block_dims == (128, 1, 1)


def test_unknown_attributes_in_a_file() -> None:
    d = _graph_json()
    d["ops"][0]["attrs"]["grid"] = [2, 1, 1]
    raises("attr-unknown", lambda: loads(json.dumps(d)), "customized", "grid")
    d = _graph_json()
    d["ops"][1]["attrs"] = {"dim": 0}
    raises("attr-unknown", lambda: loads(json.dumps(d)), "exp", "dim")
    d = _graph_json()
    d["ops"][1]["op"] = "expm1"
    raises("unknown-op", lambda: loads(json.dumps(d)), "expm1")


def test_schema_tensor_used_before_defined() -> None:
    d = _graph_json()
    d["ops"][0], d["ops"][1] = d["ops"][1], d["ops"][0]
    schema_error(d, "graph.ops[0]", "used before it is defined")
    d = _graph_json()
    d["outputs"][0]["tensor"] = 99
    schema_error(d, "tensor 99", "used before it is defined")
    d = _graph_json()
    bgd = d["ops"][0]["attrs"]["block_graph"]
    bgd["outputs"][0]["tensor"] = 1234
    schema_error(d, "block_graph.outputs[0]", "1234")


def test_schema_id_defined_twice() -> None:
    d = _graph_json()
    d["inputs"][1]["id"] = d["inputs"][0]["id"]
    schema_error(d, "inputs[1]", "defined twice")
    d = _graph_json()
    d["ops"][1]["outputs"] = [d["inputs"][0]["id"]]
    schema_error(d, "graph.ops[1]", "defined twice")
    d = _graph_json()
    bgd = d["ops"][0]["attrs"]["block_graph"]
    bgd["ops"][1]["outputs"] = [bgd["inputs"][0]["id"]]
    schema_error(d, "block_graph.ops[1]", "defined twice")


def test_schema_output_count_and_block_inputs() -> None:
    d = _graph_json()
    d["ops"][1]["outputs"] = [40, 41]
    schema_error(d, "lists 2 outputs", "makes 1")
    d = _graph_json()
    d["ops"][0]["attrs"]["block_graph"]["inputs"].pop()
    schema_error(d, "1 block inputs for 2 kernel inputs")


def test_not_json(tmp_path: Path) -> None:
    schema_error("{not json", "not valid JSON")
    schema_error("", "not valid JSON")
    p = tmp_path / "g.json"
    p.write_text("[1, 2")
    with pytest.raises(SchemaError, match=r"g\.json: not valid JSON"):
        load(p)
    with pytest.raises(SchemaError, match="no such file"):
        load(tmp_path / "missing.json")
    with pytest.raises(SchemaError, match="cannot read"):
        load(tmp_path)
    p.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SchemaError, match="cannot read"):
        load(p)
    # A GraphError from a file keeps its rule and gains the path.
    d = _graph_json()
    d["inputs"][0]["dims"] = [4, 7]
    p.write_text(json.dumps(d))
    with pytest.raises(GraphError) as info:
        load(p)
    assert info.value.rule == "tile-divide" and "g.json" in str(info.value)
    d = _graph_json()
    d["outputs"] = []
    raises("no-outputs", lambda: loads(json.dumps(d)), "no outputs")
