"""The op table: every kernel and block operator is one frozen row here.

A row holds what every part of the tool needs to know about an op: its level, arity,
typed attributes, shape rule and float (NumPy) rule, plus the slots that the verifier
(finite-field rule), the search (abstract expression), the cost model and the CUDA
renderer fill. Nothing outside this module keeps an `if op == ...` ladder: it looks the
row up and asks it.

Layout convention for NumPy rules: an argument may carry leading axes in front of its
logical dims (a block graph's tensors carry four: grid x, y, z and the for-loop
iteration, see `BLOCK_LEAD`). The interpreter aligns arguments to the same logical rank
and passes `dim` attributes as negative axes, so each rule is written once for both
levels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Literal

import numpy as np
from scipy.special import erf

from .cost_rules import RULES as COST_RULES
from .cuda_rules import RULES as CUDA_RULES
from .errors import GraphError
from .ff_rules import RULES as FF_RULES

Dims = tuple[int, ...]
Attrs = dict[str, Any]
Level = Literal["kernel", "block", "both"]
AttrKind = Literal["dim", "int", "rational", "choice", "graph"]

# Leading axes of a block tensor in the vectorized executor: (grid x, grid y, grid z,
# iteration). Loop-invariant and post-accumulation tensors have iteration extent 1.
BLOCK_LEAD = 4
ITER_AXIS = 3

MAX_RANK = 4


@dataclass(frozen=True)
class AttrSpec:
    name: str
    kind: AttrKind
    default: Any = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class OpDef:
    """One operator. `kind` groups ops the way passes need them (elementwise chains,
    reductions, ...); group sets below are derived from it, never listed by hand."""

    name: str
    level: Level
    arity: int
    kind: str
    attrs: tuple[AttrSpec, ...]
    shape: Callable[[list[Dims], Attrs], Dims] | None
    numpy: Callable[..., np.ndarray] | None
    # Slots filled by later subsystems (verifier, search, cost model, renderer).
    ff: Callable[..., Any] | None = None
    expr: Callable[..., Any] | None = None
    cost: Callable[..., Any] | None = None
    cuda: str | None = None

    def allowed_at(self, level: str) -> bool:
        return self.level == "both" or self.level == level


# ---------------------------------------------------------------------------------------
# Shape rules. Each takes the input dims and the normalized attributes and returns the
# output dims, or raises GraphError naming the rule.


def _same(dims: list[Dims], attrs: Attrs) -> Dims:
    return dims[0]


def broadcast_dims(a: Dims, b: Dims) -> Dims:
    """Size-1 broadcasting, right-aligned as in NumPy."""
    n = max(len(a), len(b))
    pa, pb = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    out = []
    for x, y in zip(pa, pb):
        if x != y and 1 not in (x, y):
            raise GraphError("broadcast", f"shapes {list(a)} and {list(b)} do not broadcast")
        out.append(max(x, y))
    return tuple(out)


def _broadcast(dims: list[Dims], attrs: Attrs) -> Dims:
    return broadcast_dims(dims[0], dims[1])


def matmul_dims(a: Dims, b: Dims) -> Dims:
    if len(a) < 2 or len(b) < 2:
        raise GraphError("matmul-rank", f"matmul needs two dims or more, got {list(a)} @ {list(b)}")
    if a[-1] != b[-2]:
        raise GraphError("matmul-inner", f"matmul inner dims differ: {list(a)} @ {list(b)}")
    ba, bb = a[:-2], b[:-2]
    if ba and bb and ba != bb:
        raise GraphError("matmul-batch", f"matmul batch dims differ: {list(a)} @ {list(b)}")
    return (ba or bb) + (a[-2], b[-1])


def _matmul(dims: list[Dims], attrs: Attrs) -> Dims:
    return matmul_dims(dims[0], dims[1])


def _reduce(dims: list[Dims], attrs: Attrs) -> Dims:
    d, size = attrs["dim"], attrs["size"]
    n = dims[0][d]
    if n % size:
        raise GraphError("reduce-size", f"reduce_sum size {size} does not divide dim {d} of length {n}")
    return dims[0][:d] + (size,) + dims[0][d + 1 :]


def _transpose(dims: list[Dims], attrs: Attrs) -> Dims:
    if len(dims[0]) < 2:
        raise GraphError("transpose-rank", f"transpose needs two dims or more, got {list(dims[0])}")
    return dims[0][:-2] + (dims[0][-1], dims[0][-2])


def concat_dims(a: Dims, b: Dims, d: int) -> Dims:
    if len(a) != len(b) or a[:d] + a[d + 1 :] != b[:d] + b[d + 1 :]:
        raise GraphError("concat-dims", f"concat along dim {d} of {list(a)} and {list(b)}: other dims differ")
    return a[:d] + (a[d] + b[d],) + a[d + 1 :]


def _concat(dims: list[Dims], attrs: Attrs) -> Dims:
    return concat_dims(dims[0], dims[1], attrs["dim"])


def _concat_matmul(dims: list[Dims], attrs: Attrs) -> Dims:
    a, b, c, d = dims
    left = concat_dims(a, b, len(a) - 1)
    right = concat_dims(c, d, len(c) - 2) if len(c) >= 2 else c
    return matmul_dims(left, right)


def _lastdim_to_one(dims: list[Dims], attrs: Attrs) -> Dims:
    return dims[0][:-1] + (1,)


# ---------------------------------------------------------------------------------------
# NumPy rules. Dims arrive as negative axes; see the module docstring.


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # The tanh form never overflows, unlike 1 / (1 + exp(-x)) for large negative x.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    if approximate == "tanh":
        c = math.sqrt(2.0 / math.pi)
        return 0.5 * x * (1.0 + np.tanh(c * (x + 0.044715 * x * x * x)))
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _pow(x: np.ndarray, c: Fraction) -> np.ndarray:
    if c.denominator == 1:
        return np.power(x, int(c)) if c >= 0 else 1.0 / np.power(x, -int(c))
    return np.power(x, float(c))


def _reduce_np(x: np.ndarray, dim: int, size: int) -> np.ndarray:
    ax = x.ndim + dim
    m = x.shape[ax] // size
    return x.reshape(x.shape[:ax] + (m, size) + x.shape[ax + 1 :]).sum(axis=ax)


def _concat_np(a: np.ndarray, b: np.ndarray, dim: int) -> np.ndarray:
    # Leading (grid/iteration) axes may be 1 on one side: broadcast all but `dim`.
    ax = a.ndim + dim
    shape = list(np.broadcast_shapes(a.shape[:ax] + (1,) + a.shape[ax + 1 :], b.shape[:ax] + (1,) + b.shape[ax + 1 :]))
    parts = []
    for x in (a, b):
        shape[ax] = x.shape[ax]
        parts.append(np.broadcast_to(x, tuple(shape)))
    return np.concatenate(parts, axis=ax)


def _rms_norm(x: np.ndarray, eps: Fraction) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + float(eps))


def _unary(name: str, fn: Callable[..., np.ndarray], *attrs: AttrSpec) -> OpDef:
    return OpDef(name, "both", 1, "unary", attrs, _same, fn)


def _binary(name: str, fn: Callable[..., np.ndarray]) -> OpDef:
    return OpDef(name, "both", 2, "binary", (), _broadcast, fn)


_DIM = AttrSpec("dim", "dim")
_C = AttrSpec("c", "rational")

OPS: dict[str, OpDef] = {
    op.name: op
    for op in [
        OpDef("matmul", "both", 2, "matmul", (), _matmul, np.matmul),
        _unary("exp", np.exp),
        _unary("square", lambda x: x * x),
        _unary("sqrt", np.sqrt),
        _unary("sigmoid", _sigmoid),
        _unary("silu", lambda x: x * _sigmoid(x)),
        _unary("gelu", _gelu, AttrSpec("approximate", "choice", "none", ("none", "tanh"))),
        _unary("relu", lambda x: np.maximum(x, 0)),
        _unary("neg", np.negative),
        _unary("reciprocal", lambda x: 1.0 / x),
        _unary("mul_scalar", lambda x, c: x * float(c), _C),
        _unary("add_scalar", lambda x, c: x + float(c), _C),
        _unary("pow_scalar", _pow, _C),
        _binary("add", np.add),
        _binary("sub", np.subtract),
        _binary("mul", np.multiply),
        _binary("div", np.divide),
        OpDef("reduce_sum", "both", 1, "reduce", (_DIM, AttrSpec("size", "int", 1)), _reduce, _reduce_np),
        OpDef("transpose", "both", 1, "layout", (), _transpose, lambda x: np.swapaxes(x, -1, -2)),
        OpDef("concat", "both", 2, "layout", (_DIM,), _concat, _concat_np),
        OpDef("rms_norm", "both", 1, "norm", (AttrSpec("eps", "rational"),), _same, _rms_norm),
        OpDef(
            "concat_matmul",
            "block",
            4,
            "matmul",
            (),
            _concat_matmul,
            lambda a, b, c, d: np.matmul(_concat_np(a, b, -1), _concat_np(c, d, -2)),
        ),
        OpDef("accum_sum", "block", 1, "accum", (), _same, lambda x: x.sum(axis=ITER_AXIS, keepdims=True)),
        OpDef(
            "accum_sum_lastdim",
            "block",
            1,
            "accum",
            (),
            _lastdim_to_one,
            lambda x: x.sum(axis=(ITER_AXIS, -1), keepdims=True),
        ),
        # A graph-defined kernel: its semantics is its block graph, which the interpreters
        # walk themselves; it therefore has no per-op rules of its own.
        OpDef("customized", "kernel", -1, "graph", (AttrSpec("block_graph", "graph"),), None, None),
    ]
}

# The `ff` slot of every row: finite-field rules live in ff_rules.py (the verifier's slot).
OPS = {name: replace(op, ff=FF_RULES.get(name, op.ff)) for name, op in OPS.items()}
# The `cost` slot: work rules (flops, matmul shape) live in cost_rules.py.
OPS = {name: replace(op, cost=COST_RULES.get(name, op.cost)) for name, op in OPS.items()}
# The `cuda` slot: float-expression and step templates of the emitter live in cuda_rules.py.
OPS = {name: replace(op, cuda=CUDA_RULES.get(name, op.cuda)) for name, op in OPS.items()}

# Group sets, derived from the rows (tinygrad's GroupOp idea).
UNARY = frozenset(n for n, o in OPS.items() if o.kind == "unary")
BINARY = frozenset(n for n, o in OPS.items() if o.kind == "binary")
ELEMENTWISE = UNARY | BINARY
ACCUMULATORS = frozenset(n for n, o in OPS.items() if o.kind == "accum")
STRUCTURAL = frozenset(n for n, o in OPS.items() if o.kind == "graph")


def get_op(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise GraphError("unknown-op", f"unknown op {name!r}") from None


def to_rational(value: Any) -> Fraction:
    """Scalars are exact rationals; a float converts exactly (it is a dyadic rational)."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, bool):
        raise GraphError("attr-type", f"expected a number, got {value!r}")
    if isinstance(value, (int, float, str)):
        try:
            r = Fraction(value)
        except (ValueError, ZeroDivisionError, OverflowError) as e:
            raise GraphError("attr-type", f"not an exact rational: {value!r} ({e})") from None
        return r
    raise GraphError("attr-type", f"expected a number, got {value!r}")


def normalize_attrs(op: OpDef, attrs: Attrs, in_dims: list[Dims]) -> Attrs:
    """Check and normalize attributes against the row: dims become non-negative, scalars
    exact rationals, defaults filled in, unknown names rejected."""
    known = {a.name for a in op.attrs}
    extra = set(attrs) - known
    if extra:
        raise GraphError("attr-unknown", f"{op.name}: unknown attribute(s) {sorted(extra)}")
    out: Attrs = {}
    for spec in op.attrs:
        if spec.name not in attrs and spec.default is None:
            raise GraphError("attr-missing", f"{op.name}: missing attribute {spec.name!r}")
        v = attrs.get(spec.name, spec.default)
        if spec.kind == "dim":
            rank = len(in_dims[0])
            if not isinstance(v, int) or isinstance(v, bool) or not -rank <= v < rank:
                raise GraphError("dim-range", f"{op.name}: dim {v!r} out of range for rank {rank}")
            v = v % rank
        elif spec.kind == "int":
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise GraphError("attr-type", f"{op.name}: {spec.name} must be a positive integer, got {v!r}")
        elif spec.kind == "rational":
            v = to_rational(v)
        elif spec.kind == "choice" and v not in spec.choices:
            raise GraphError("attr-type", f"{op.name}: {spec.name} must be one of {list(spec.choices)}, got {v!r}")
        out[spec.name] = v
    return out


def numpy_attrs(op: OpDef, attrs: Attrs, rank: int) -> Attrs:
    """Attributes as a NumPy rule takes them: dims as negative axes."""
    return {s.name: (attrs[s.name] - rank if s.kind == "dim" else attrs[s.name]) for s in op.attrs}
