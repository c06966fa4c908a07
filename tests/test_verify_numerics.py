"""Numerics: the experts stay within tolerance in float32 and in 16-bit on the benchmarks'
input distributions; an algebraically equal but unstable graph is flagged."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from mirage_py.benchmarks import all_benchmarks
from mirage_py.ir import KernelGraph, new_kernel_graph
from mirage_py.verify import equivalent
from mirage_py.verify.numerics import TOLERANCES, numerics, retype


@pytest.mark.parametrize("name", ["rmsnorm", "gated_mlp", "gqa", "qknorm", "lora", "ntrans"])
def test_experts_within_tolerance(name):
    b = all_benchmarks()[name]
    spec = b.spec("small")
    for ex in b.experts("small").values():
        for dtype in (None, "bfloat16"):
            r = numerics(spec, ex, b.inputs(spec, 0), dtype=dtype)
            assert r.ok and not r.unstable, r.to_json()
            precisions = {row.precision for row in r.rows}
            assert precisions == {"float32", dtype or "float16"}
            assert all(row.scaled <= TOLERANCES[row.precision] for row in r.rows)


def _scaled(shift: Fraction | None, scale: Fraction | None) -> KernelGraph:
    g = new_kernel_graph()
    x, w = g.new_input((16, 64), "float16", "x"), g.new_input((64, 32), "float16", "w")
    if scale is not None:
        x = g.mul_scalar(x, scale)
    if shift is not None:
        x = g.add_scalar(g.add_scalar(x, shift), -shift)
    y = g.matmul(x, w)
    g.mark_output(g.mul_scalar(y, 1 / scale) if scale is not None else y, "y")
    return g


@pytest.mark.parametrize(
    "unstable",
    [_scaled(None, Fraction(2**15)), _scaled(Fraction(2**12), None)],
    ids=["fp16-overflow", "cancellation"],
)
def test_unstable_graph_flagged(unstable):
    spec = _scaled(None, None)
    assert equivalent(spec, unstable).equivalent  # algebraically equal...
    rng = np.random.default_rng(0)
    ins = {"x": rng.standard_normal((16, 64)), "w": rng.standard_normal((64, 32)) / 8}
    r = numerics(spec, unstable, ins)
    assert not r.ok and r.unstable and "y (float16)" in r.unstable_outputs  # ...but not numerically
    assert all(row.ok for row in r.rows if row.graph == "spec")


def test_retype():
    g = retype(_scaled(None, None), "bfloat16")
    assert {t.dtype for t in g.types} == {"bfloat16"}
