"""Finite-field rules, one per op (the op table's `ff` slot).

A rule is written against an abstract field-arithmetic object `F` that it receives first,
followed by the op's arguments and its attributes exactly as the NumPy rule gets them (dims
as negative axes). The concrete fields live in mirage_py/verify: residue pairs for
verification, degrees for the error bound. Rules say *what* an op is in the field; how a
residue is stored, reduced or keyed is the field's business.

DESIGN.md, "Verification": the LAX fragment is exact (sigmoid, silu and tanh-gelu are built
from exp and division, so a `silu` op and `x * sigmoid(x)` give the same residues); sqrt,
relu, erf-gelu and non-integer powers are per-trial keyed random functions (`F.opaque`),
keyed by op name, attributes and argument value, so pow_scalar(1/2) and sqrt share one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any, Protocol, TypeVar

V = TypeVar("V")


class FieldOps(Protocol[V]):
    """What a rule may ask of a field. Values are opaque to the rules."""

    def const(self, c: Fraction) -> V: ...
    def add(self, a: V, b: V) -> V: ...
    def sub(self, a: V, b: V) -> V: ...
    def mul(self, a: V, b: V) -> V: ...
    def div(self, a: V, b: V) -> V: ...
    def neg(self, a: V) -> V: ...
    def exp(self, a: V) -> V: ...
    def opaque(self, name: str, a: V, **attrs: Any) -> V: ...
    def matmul(self, a: V, b: V) -> V: ...
    def reduce_sum(self, a: V, dim: int, size: int) -> V: ...
    def accum(self, a: V, lastdim: bool) -> V: ...
    def transpose(self, a: V) -> V: ...
    def concat(self, a: V, b: V, dim: int) -> V: ...
    def last_dim(self, a: V) -> int: ...


# The float constants the NumPy tanh-gelu uses, taken exactly (every float is a dyadic
# rational), so a frontend that spells the formula with the same floats gets equal residues.
GELU_K = Fraction(math.sqrt(2.0 / math.pi))
GELU_A = Fraction(0.044715)


def sigmoid(F: Any, x: Any) -> Any:
    one = F.const(Fraction(1))
    return F.div(one, F.add(one, F.exp(F.neg(x))))


def gelu(F: Any, x: Any, approximate: str = "none") -> Any:
    if approximate != "tanh":
        return F.opaque("gelu", x, approximate=approximate)
    # 0.5·x·(1 + tanh(u)) = x·sigmoid(2u), u = k·(x + a·x³): exact through exp.
    x3 = F.mul(F.mul(x, x), x)
    two_u = F.mul(F.add(x, F.mul(x3, F.const(GELU_A))), F.const(2 * GELU_K))
    return F.mul(x, sigmoid(F, two_u))


def int_pow(F: Any, x: Any, n: int) -> Any:
    """x**n for n >= 1 by square-and-multiply (exact)."""
    result, base = None, x
    while n:
        if n & 1:
            result = base if result is None else F.mul(result, base)
        n >>= 1
        if n:
            base = F.mul(base, base)
    return result


def pow_scalar(F: Any, x: Any, c: Fraction) -> Any:
    if c == Fraction(1, 2):
        return F.opaque("sqrt", x)
    if c.denominator != 1:
        return F.opaque("pow_scalar", x, c=c)
    n = int(c)
    if n == 0:
        return F.add(F.mul(x, F.const(Fraction(0))), F.const(Fraction(1)))
    p = int_pow(F, x, abs(n))
    return p if n > 0 else F.div(F.const(Fraction(1)), p)


def rms_norm(F: Any, x: Any, eps: Fraction) -> Any:
    # x / sqrt(mean(x²) + eps): exact square, sum, 1/n and eps, the keyed sqrt, exact div.
    n = F.last_dim(x)
    mean = F.mul(F.reduce_sum(F.mul(x, x), -1, 1), F.const(Fraction(1, n)))
    return F.div(x, F.opaque("sqrt", F.add(mean, F.const(eps))))


RULES: dict[str, Callable[..., Any]] = {
    "matmul": lambda F, a, b: F.matmul(a, b),
    "exp": lambda F, x: F.exp(x),
    "square": lambda F, x: F.mul(x, x),
    "sqrt": lambda F, x: F.opaque("sqrt", x),
    "sigmoid": sigmoid,
    "silu": lambda F, x: F.mul(x, sigmoid(F, x)),
    "gelu": gelu,
    "relu": lambda F, x: F.opaque("relu", x),
    "neg": lambda F, x: F.neg(x),
    "reciprocal": lambda F, x: F.div(F.const(Fraction(1)), x),
    "mul_scalar": lambda F, x, c: F.mul(x, F.const(c)),
    "add_scalar": lambda F, x, c: F.add(x, F.const(c)),
    "pow_scalar": pow_scalar,
    "add": lambda F, a, b: F.add(a, b),
    "sub": lambda F, a, b: F.sub(a, b),
    "mul": lambda F, a, b: F.mul(a, b),
    "div": lambda F, a, b: F.div(a, b),
    "reduce_sum": lambda F, x, dim, size: F.reduce_sum(x, dim, size),
    "transpose": lambda F, x: F.transpose(x),
    "concat": lambda F, a, b, dim: F.concat(a, b, dim),
    "rms_norm": rms_norm,
    # [a | b] @ [c ; d] = a @ c + b @ d: no concatenated copy of the (large) c, and a @ c can
    # be one GEMM across blocks (the expression rule says the same).
    "concat_matmul": lambda F, a, b, c, d: F.add(F.matmul(a, c), F.matmul(b, d)),
    "accum_sum": lambda F, x: F.accum(x, lastdim=False),
    "accum_sum_lastdim": lambda F, x: F.accum(x, lastdim=True),
}
