"""Abstract-expression rules, one per op (the op table's `expr` slot).

An abstract expression forgets indices and keeps the algebra: inputs are variables, a
matmul is red(k, bmul(a, b)), an accumulator is red over the loop extent. Layout is
kept only as far as transposes go: `transpose(t)` pushes the transposition down to the
variables (T(a + b) = T a + T b, T(a @ b) = T b @ T a, T(T a) = a), so equal layouts give
equal terms and a matmul of an untransposed square tile does not pass for the spec's
a @ bᵀ. A reduction does not say which dim it runs over, so T goes through every `red`
(sound: it can only make more terms equal). The search keeps a new op only if its term is a subexpression of the spec's term under the axioms in
mirage_py/search/absexpr.py. Terms are plain nested tuples (hashable, cheap to intern):

    ("var", name)  ("const", "p/q")  ("red", n, t)  (op, t1, ..., tk) for add/mul/bmul/
    div/exp/sqrt/sigmoid/relu/gelu:<approx>/pow:<p/q>/concat, and ("transpose", t) with t
    a variable or a concat (the only places a transposition stops).

Rules are written so that equal computations get equal terms: square is mul(x, x), silu
is mul(x, sigmoid(x)), sub is add(a, mul(b, -1)), rms_norm is its composition.
A rule takes (args, in_dims, attrs, forloop_range).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

Term = tuple[Any, ...]


def const(c: Fraction | int) -> Term:
    c = Fraction(c)
    return ("const", f"{c.numerator}/{c.denominator}")


def red(n: int, t: Term) -> Term:
    return t if n == 1 else ("red", n, t)


def mul(a: Term, b: Term) -> Term:
    return ("mul", a, b)


def add(a: Term, b: Term) -> Term:
    return ("add", a, b)


def div(a: Term, b: Term) -> Term:
    return ("div", a, b)


def matmul(a: Term, b: Term, k: int) -> Term:
    # The product inside a matmul is its own constructor, not the elementwise mul: it does
    # not commute (X @ W is not W @ X) and an elementwise X * W is not part of it. With
    # one `mul` for both, every elementwise product of a matmul's operands (and the
    # swapped matmul) passed the oracle and flooded the block-level search.
    return red(k, ("bmul", a, b))


def transpose(t: Term) -> Term:
    """T(t) in normal form: the transposition is pushed to the leaves (see the docstring)."""
    head = t[0]
    if head == "const":  # a scalar
        return t
    if head == "transpose":
        return t[1]
    if head in ("var", "concat"):  # concat joins along the last dim: T of it has no other spelling
        return ("transpose", t)
    if head == "red":
        return ("red", t[1], transpose(t[2]))
    if head == "bmul":
        return ("bmul", transpose(t[2]), transpose(t[1]))
    return (head, *(transpose(x) for x in t[1:]))


def rms(x: Term, n: int, eps: Fraction) -> Term:
    mean_sq = mul(red(n, mul(x, x)), const(Fraction(1, n)))
    return ("sqrt", add(mean_sq, const(eps)))


def pow_term(x: Term, c: Fraction) -> Term:
    if c == 2:
        return mul(x, x)
    if c == 1:
        return x
    if c == Fraction(1, 2):
        return ("sqrt", x)
    if c == -1:
        return div(const(1), x)
    return (f"pow:{c.numerator}/{c.denominator}", x)


# The rule signature: (args, in_dims, attrs, forloop_range) -> Term.
RULES: dict[str, Any] = {
    "matmul": lambda a, d, at, f: matmul(a[0], a[1], d[0][-1]),
    "exp": lambda a, d, at, f: ("exp", a[0]),
    "square": lambda a, d, at, f: mul(a[0], a[0]),
    "sqrt": lambda a, d, at, f: ("sqrt", a[0]),
    "sigmoid": lambda a, d, at, f: ("sigmoid", a[0]),
    "silu": lambda a, d, at, f: mul(a[0], ("sigmoid", a[0])),
    "gelu": lambda a, d, at, f: (f"gelu:{at['approximate']}", a[0]),
    "relu": lambda a, d, at, f: ("relu", a[0]),
    "neg": lambda a, d, at, f: mul(a[0], const(-1)),
    "reciprocal": lambda a, d, at, f: div(const(1), a[0]),
    "mul_scalar": lambda a, d, at, f: mul(a[0], const(at["c"])),
    "add_scalar": lambda a, d, at, f: add(a[0], const(at["c"])),
    "pow_scalar": lambda a, d, at, f: pow_term(a[0], at["c"]),
    "add": lambda a, d, at, f: add(a[0], a[1]),
    "sub": lambda a, d, at, f: add(a[0], mul(a[1], const(-1))),
    "mul": lambda a, d, at, f: mul(a[0], a[1]),
    "div": lambda a, d, at, f: div(a[0], a[1]),
    "reduce_sum": lambda a, d, at, f: red(d[0][at["dim"]] // at["size"], a[0]),
    "transpose": lambda a, d, at, f: transpose(a[0]),
    "concat": lambda a, d, at, f: ("concat", a[0], a[1]),
    "rms_norm": lambda a, d, at, f: div(a[0], rms(a[0], d[0][-1], at["eps"])),
    "concat_matmul": lambda a, d, at, f: add(matmul(a[0], a[2], d[0][-1]), matmul(a[1], a[3], d[1][-1])),
    "accum_sum": lambda a, d, at, f: red(f, a[0]),
    "accum_sum_lastdim": lambda a, d, at, f: red(f * d[0][-1], a[0]),
}
