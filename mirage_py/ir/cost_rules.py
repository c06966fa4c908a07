"""Work rules, one per op (the op table's `cost` slot).

A rule takes the op's input dims, its output dims and its normalized attributes, and says
how much arithmetic one application does: `Work(flops, mnk)`. `mnk` is set for the matmul
family only: (batch, M, N, K), so a cost model can round it up to a tensor-core
instruction's shape. Bytes moved are not here: they follow from tensor sizes and from where
a tensor lives (global memory, shared memory, registers), which is the cost model's call.

Per-element counts are the arithmetic of each op's definition as the runtime computes it
(for example sigmoid = 1 / (1 + exp(-x)): negate, exp, add, reciprocal = 4). They are
counts, not timings, and they matter little: elementwise kernels are bound by memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

Dims = tuple[int, ...]


@dataclass(frozen=True)
class Work:
    flops: int
    mnk: tuple[int, int, int, int] | None = None  # (batch, M, N, K) of a matmul


WorkRule = Callable[[list[Dims], Dims, dict[str, Any]], Work]

# Operations per output element of each unary or binary op.
_PER_ELEMENT: dict[str, int] = {
    "exp": 2,  # x * log2(e), then ex2
    "square": 1,
    "sqrt": 1,
    "sigmoid": 4,
    "silu": 5,
    "gelu": 10,  # erf (or tanh) by a short polynomial, then two multiplies and an add
    "relu": 1,
    "neg": 1,
    "reciprocal": 1,
    "mul_scalar": 1,
    "add_scalar": 1,
    "add": 1,
    "sub": 1,
    "mul": 1,
    "div": 1,
}


def _elementwise(name: str) -> WorkRule:
    k = _PER_ELEMENT[name]
    return lambda ins, out, attrs: Work(k * math.prod(out))


def _pow(ins: list[Dims], out: Dims, attrs: dict[str, Any]) -> Work:
    c = Fraction(attrs["c"])
    # An integer power is repeated multiplication (plus one reciprocal when negative);
    # anything else is exp(c * log(x)).
    per = max(1, abs(int(c)) - 1) + (1 if c < 0 else 0) if c.denominator == 1 else 3
    return Work(per * math.prod(out))


def _matmul(ins: list[Dims], out: Dims, attrs: dict[str, Any]) -> Work:
    a = ins[0]
    k = a[-1]
    m, n = out[-2], out[-1]
    batch = math.prod(out[:-2])
    return Work(2 * batch * m * n * k, (batch, m, n, k))


def _concat_matmul(ins: list[Dims], out: Dims, attrs: dict[str, Any]) -> Work:
    k = ins[0][-1] + ins[1][-1]  # the concatenated inner dim
    m, n = out[-2], out[-1]
    batch = math.prod(out[:-2])
    return Work(2 * batch * m * n * k, (batch, m, n, k))


def _input_sum(ins: list[Dims], out: Dims, attrs: dict[str, Any]) -> Work:
    # Reductions and accumulators: one add per input element.
    return Work(math.prod(ins[0]))


def _free(ins: list[Dims], out: Dims, attrs: dict[str, Any]) -> Work:
    # transpose and concat move data; they do no arithmetic.
    return Work(0)


def _rms_norm(ins: list[Dims], out: Dims, attrs: dict[str, Any]) -> Work:
    # square and sum per element, then a divide per element; per row: scale, eps, sqrt.
    rows = math.prod(out[:-1])
    return Work(3 * math.prod(out) + 3 * rows)


RULES: dict[str, WorkRule] = {
    **{name: _elementwise(name) for name in _PER_ELEMENT},
    "pow_scalar": _pow,
    "matmul": _matmul,
    "concat_matmul": _concat_matmul,
    "reduce_sum": _input_sum,
    "accum_sum": _input_sum,
    "accum_sum_lastdim": _input_sum,
    "transpose": _free,
    "concat": _free,
    "rms_norm": _rms_norm,
}
