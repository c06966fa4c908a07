"""ONNX frontend: a model, or the subgraph between chosen inputs and outputs, as a spec
KernelGraph plus the weights (initializers) it binds at run time.

While converting, every ONNX value is one of two things:

* `Const`: an array known at load time (an initializer, a `Constant` node, a node whose
  inputs are all constant, the static shape of a tensor). Where an op takes a scalar, a
  one-element constant folds into an exact rational attribute (`Fraction` of the float's
  exact value). Where it is used as a tensor, it becomes a graph input whose array goes in
  `FrontendResult.weights`.
* `Val`: an IR tensor plus its ONNX shape. The IR has no reshape op, but a row-major reshape
  never moves data, so Reshape, Squeeze, Unsqueeze and Flatten only relabel: the ONNX shape
  changes and the IR tensor stays. Every op that consumes a relabelled value checks that the
  IR op on the tensor's dims reads the same elements in the same order as the ONNX op on its
  shape (the `_read_map` / `_span` helpers), and reports the node when it cannot.

The IR also has no cast: a `Cast` between float types keeps the tensor (and its dtype), so
the value is the same real number and only its storage precision differs from the model's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..ir.dtypes import round_to
from ..ir.errors import GraphError, InputError
from ..ir.graph import KernelGraph, Tensor
from ..ir.ops import MAX_RANK, broadcast_dims
from . import FrontendResult, InputShapes

Shape = tuple[int, ...]

IR_DTYPES: dict[int, str] = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16",
}
_STORE = {"float32": np.float32, "float16": np.float16, "bfloat16": np.float32}  # bfloat16 travels in float32

# Largest constant a folded node may create: folding runs at load time, so a model asking for
# a billion-element Range or ConstantOfShape is refused instead of exhausting memory.
MAX_FOLD_ELEMENTS = 1 << 24


@dataclass(frozen=True, eq=False)
class Const:
    array: np.ndarray
    name: str  # the ONNX value name, which names the weight input it may become


@dataclass(frozen=True, eq=False)
class Val:
    tensor: Tensor
    shape: Shape  # the ONNX shape; tensor.dims hold the same elements in the same order

    @property
    def dims(self) -> Shape:
        return self.tensor.dims


Value = Const | Val


def _shape_of(v: Value) -> Shape:
    return tuple(v.array.shape) if isinstance(v, Const) else v.shape


# ---------------------------------------------------------------------------------------
# Layout: do an IR op on `dims` and the ONNX op on `shape` read the same elements?


def _row_major(shape: Sequence[int]) -> list[int]:
    st, acc = [0] * len(shape), 1
    for k in range(len(shape) - 1, -1, -1):
        st[k] = acc
        acc *= shape[k]
    return st


def _canon(pairs: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """(extent, stride) per output dim, size-1 dims dropped and contiguous runs merged: two
    walks with the same canonical form visit the same input offsets in the same order."""
    out: list[tuple[int, int]] = []
    for e, s in pairs:
        if e == 1:
            continue
        if out and out[-1][1] == e * s:
            out[-1] = (out[-1][0] * e, s)
        else:
            out.append((e, s))
    return tuple(out)


def _read_map(out: Shape, shape: Shape) -> tuple[tuple[int, int], ...]:
    """How an elementwise op over `out` reads an operand of `shape` broadcast to it."""
    st, pad = _row_major(shape), len(out) - len(shape)
    return _canon((e, 0 if k < pad or shape[k - pad] == 1 else st[k - pad]) for k, e in enumerate(out))


def _span(dims: Shape, shape: Shape, axis: int) -> tuple[int, int] | None:
    """The IR dims [i, j) that hold ONNX axis `axis` (same elements before and after it)."""
    outer, inner = math.prod(shape[:axis]), math.prod(shape[axis + 1 :])
    lo = [i for i in range(len(dims) + 1) if math.prod(dims[:i]) == outer]
    hi = [j for j in range(len(dims) + 1) if math.prod(dims[j:]) == inner]
    if not lo or not hi or max(lo) > min(hi):
        return None
    return max(lo), min(hi)


def _broadcast(a: Shape, b: Shape) -> Shape | None:
    """ONNX (NumPy) multidirectional broadcasting of two shapes, or None."""
    n = max(len(a), len(b))
    pa, pb = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    if any(x != y and 1 not in (x, y) for x, y in zip(pa, pb)):
        return None
    return tuple(max(x, y) for x, y in zip(pa, pb))


def _ir_dims(shape: Shape) -> Shape | None:
    """The IR dims for an ONNX shape: rank 0 becomes (1,), leading 1s go past rank 4."""
    dims = shape or (1,)
    while len(dims) > MAX_RANK and dims[0] == 1:
        dims = dims[1:]
    return dims if len(dims) <= MAX_RANK else None


def _strip_lead(shape: Shape) -> Shape:
    k = 0
    while k < len(shape) and shape[k] == 1:
        k += 1
    return shape[k:]


# ---------------------------------------------------------------------------------------
# Attributes and constants


def _label(node: onnx.NodeProto) -> str:
    name = node.name or (node.output[0] if node.output else "")
    return f"{node.op_type} node {name!r}"


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in node.attribute:
        try:
            out[a.name] = helper.get_attribute_value(a)
        except Exception as e:  # a malformed AttributeProto: onnx raises several types
            raise InputError(f"{_label(node)}: bad attribute {a.name!r} ({type(e).__name__})") from None
    return out


def _int(node: onnx.NodeProto, attrs: dict[str, Any], name: str, default: int) -> int:
    v = attrs.get(name, default)
    if not isinstance(v, int) or isinstance(v, bool):
        raise InputError(f"{_label(node)}: attribute {name!r} must be an integer")
    return v


def _float(node: onnx.NodeProto, attrs: dict[str, Any], name: str, default: float) -> Fraction:
    v = attrs.get(name, default)
    try:
        # ONNX float attributes are float32: take the exact value of that float32.
        f = float(np.float32(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
    except (OverflowError, ValueError):
        f = math.nan
    if not math.isfinite(f):
        raise InputError(f"{_label(node)}: attribute {name!r} must be a finite number")
    return Fraction(f)


def _ints(node: onnx.NodeProto, v: Any, what: str) -> list[int]:
    if isinstance(v, np.ndarray):
        if v.dtype.kind not in "iu" or v.ndim > 1:
            raise InputError(f"{_label(node)}: {what} must be a 1-D integer tensor")
        return [int(x) for x in v.reshape(-1)]
    if not isinstance(v, (list, tuple)) or any(not isinstance(x, int) or isinstance(x, bool) for x in v):
        raise InputError(f"{_label(node)}: {what} must be a list of integers")
    return list(v)


def _axis(node: onnx.NodeProto, a: int, rank: int) -> int:
    if not -rank <= a < rank:  # a rank-0 tensor has no axis at all
        raise InputError(f"{_label(node)}: axis {a} out of range for rank {rank}")
    return a % rank


def _to_array(t: onnx.TensorProto, what: str) -> np.ndarray:
    try:
        arr = numpy_helper.to_array(t)
    except Exception as e:  # malformed tensors raise ValueError, TypeError, KeyError, ...
        raise InputError(f"{what}: unreadable tensor data ({type(e).__name__}: {_first_line(e)})") from None
    return _numeric(arr, what)


def _numeric(arr: Any, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.name == "bfloat16":
        return arr.astype(np.float32)  # exact: every bfloat16 is a float32
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{what}: constant of dtype {arr.dtype} is not numeric")
    return arr


def _fold_limit(arrays: Iterable[np.ndarray | None]) -> int:
    """A fold may make as many elements as its largest input (a Cast of a big weight), or
    MAX_FOLD_ELEMENTS, whichever is more."""
    return max([MAX_FOLD_ELEMENTS] + [a.size for a in arrays if a is not None])


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:160] if text else ""


def _scalar(node: onnx.NodeProto, c: Const) -> Fraction:
    x = c.array.reshape(-1)[0].item()
    if isinstance(x, float) and not math.isfinite(x):
        raise InputError(f"{_label(node)}: constant {c.name!r} is {x}, not a finite number")
    return Fraction(x)


# ---------------------------------------------------------------------------------------
# The converter


@dataclass
class OnnxImport:
    """A converted model: the frontend result, and the ONNX shape of every runtime input and
    output (an IR tensor may carry the same elements under other dims, e.g. (1,) for a
    rank-0 value or without a size-1 dim a Squeeze removed)."""

    result: FrontendResult
    shapes: dict[str, Shape] = field(default_factory=dict)


Handler = Callable[["_Converter", onnx.NodeProto, list["Value | None"]], list[Value]]
HANDLERS: dict[str, Handler] = {}
# Ops that run at load time on constant inputs only (shape arithmetic that exporters emit).
FOLD_ONLY = frozenset({"Gather", "Range", "Slice", "ConstantOfShape", "CastLike", "Expand", "Where", "Equal"})


def _handles(*ops: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for op in ops:
            HANDLERS[op] = fn
        return fn

    return register


class _Converter:
    def __init__(self, model: onnx.ModelProto, source: str, shapes: InputShapes | None) -> None:
        self.model = model
        self.source = source
        self.shape_overrides = dict(shapes or {})
        self.opset = self._opset()
        self.g = KernelGraph()
        self.weights: dict[str, np.ndarray] = {}
        self.env: dict[str, Value] = {}
        # (id(const), dims, dtype) -> (const, tensor). The const is kept alive with its
        # tensor: a folded constant freed mid-conversion gave its id to a new one, which then
        # got the old one's weight (the chain fuzz test saw Neg(c)'s sign lost, now and then).
        self._made: dict[tuple[int, Shape, str], tuple[Const, Tensor]] = {}

    # -- model structure --------------------------------------------------------------
    def _opset(self) -> int:
        for imp in self.model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                return int(imp.version)
        return int(onnx.defs.onnx_opset_version())

    def convert(self, outputs: Sequence[str] | None, cuts: Sequence[str]) -> OnnxImport:
        graph = self.model.graph
        producer: dict[str, int] = {}
        for k, node in enumerate(graph.node):
            for o in node.output:
                if o in producer:
                    raise InputError(f"value {o!r} is produced twice")
                if o:
                    producer[o] = k
        inits = {t.name: t for t in graph.initializer}
        inputs = {vi.name: vi for vi in graph.input if vi.name not in inits}
        wanted = list(outputs) if outputs else [o.name for o in graph.output]
        if not wanted:
            raise InputError("the model has no outputs")
        for name in wanted:
            if name not in producer and name not in inputs and name not in inits and name not in cuts:
                known = ", ".join(o.name for o in graph.output) or "none"
                raise InputError(f"no value named {name!r} in the model (its outputs: {known})")
        cut_info = self._cut_types(cuts) if cuts else {}
        order = self._needed(wanted, producer, set(inputs) | set(inits) | set(cuts))
        self._inits = inits
        shapes: dict[str, Shape] = {}
        for vi in graph.input:
            if vi.name in inputs and vi.name in self._used and vi.name not in cuts:
                shapes[vi.name] = self._runtime_input(vi)
        for name in cuts:
            shapes[name] = self._runtime_input(cut_info[name])
        for k in order:
            self._run(graph.node[k])
        for name in wanted:
            v = self._lookup(name, "output")
            t = v.tensor if isinstance(v, Val) else self._weight(v, self._fit(v, "output"), self._const_dtype(v))
            self.g.mark_output(t, name)
            shapes[name] = _shape_of(v)
        self.g.validate()
        return OnnxImport(FrontendResult(self.g, self.weights, self.source), shapes)

    def _needed(self, wanted: list[str], producer: dict[str, int], leaves: set[str]) -> list[int]:
        """Nodes the outputs depend on, in a topological order (the file's order is not
        trusted); records the values used in `self._used`."""
        graph = self.model.graph
        self._used: set[str] = set()
        order: list[int] = []
        state: dict[int, int] = {}  # 1 = on the stack, 2 = done
        for root in wanted:
            stack: list[tuple[str, bool]] = [(root, False)]
            while stack:
                name, expanded = stack.pop()
                self._used.add(name)
                if name in leaves:
                    continue
                if name not in producer:
                    raise InputError(f"value {name!r} is not produced by any node, nor a graph input or initializer")
                k = producer[name]
                if expanded:
                    if state.get(k) != 2:
                        state[k] = 2
                        order.append(k)
                    continue
                if state.get(k) == 2:
                    continue
                if state.get(k) == 1:
                    raise InputError(f"the graph has a cycle through {name!r}")
                state[k] = 1
                stack.append((name, True))
                stack.extend((i, False) for i in reversed(graph.node[k].input) if i)
        # Keep the file's order when it is topological (it usually is): specs then read like
        # the model, and weights become inputs in the order the model uses them.
        in_file = sorted(order)
        defined = set(leaves)
        for k in in_file:
            if any(i and i not in defined for i in graph.node[k].input):
                return order
            defined.update(graph.node[k].output)
        return in_file

    def _cut_types(self, cuts: Sequence[str]) -> dict[str, onnx.ValueInfoProto]:
        try:
            inferred = onnx.shape_inference.infer_shapes(self.model)
        except Exception as e:  # onnx raises its own error types from C++
            raise InputError(f"shape inference failed, so cut inputs have no shapes ({_first_line(e)})") from None
        g = inferred.graph
        info = {vi.name: vi for vi in [*g.input, *g.value_info, *g.output]}
        missing = [c for c in cuts if c not in info]
        if missing:
            raise InputError(f"no shape known for cut input(s) {', '.join(map(repr, missing))}")
        return {c: info[c] for c in cuts}

    def _runtime_input(self, vi: onnx.ValueInfoProto) -> Shape:
        name = vi.name
        if not vi.type.HasField("tensor_type"):
            raise InputError(f"input {name!r} is not a tensor")
        tt = vi.type.tensor_type
        dtype = IR_DTYPES.get(tt.elem_type)
        if dtype is None:
            raise InputError(
                f"input {name!r} has dtype {_dtype_name(tt.elem_type)}; the IR holds float16, bfloat16 and float32"
            )
        if name in self.shape_overrides:
            shape, override = self.shape_overrides[name]
            shape = tuple(shape)
            if any(not isinstance(n, int) or isinstance(n, bool) for n in shape):
                raise InputError(f"input {name!r}: the shape given, {list(shape)}, is not a list of integers")
            if override is not None and override != dtype:
                raise InputError(f"input {name!r} is {dtype} in the model, not {override}")
        else:
            if not tt.HasField("shape"):
                raise InputError(f"input {name!r} has no shape; give it with --inputs")
            dims = []
            for d in tt.shape.dim:
                if not d.HasField("dim_value"):
                    sym = d.dim_param or "?"
                    raise InputError(f"input {name!r} has a symbolic dim {sym!r}; give its shape with --inputs")
                dims.append(int(d.dim_value))
            shape = tuple(dims)
        if any(n < 1 for n in shape):
            raise InputError(f"input {name!r} has shape {list(shape)}; the IR needs positive dims")
        ir = _ir_dims(shape)
        if ir is None:
            raise InputError(f"input {name!r} has rank {len(shape)}; the IR holds 1 to {MAX_RANK} dims")
        self.env[name] = Val(self.g.new_input(ir, dtype, name), shape)
        return shape

    # -- values -------------------------------------------------------------------------
    def _lookup(self, name: str, user: str) -> Value:
        if name in self.env:
            return self.env[name]
        if name in self._inits:
            c = Const(_to_array(self._inits[name], f"initializer {name!r}"), name)
            self.env[name] = c
            return c
        raise InputError(f"{user}: value {name!r} is not available (an output this frontend does not produce)")

    def _const_dtype(self, c: Const) -> str:
        kind = {np.dtype(np.float16): "float16", np.dtype(np.float32): "float32"}.get(c.array.dtype)
        if kind is None:
            raise InputError(f"constant {c.name!r} of dtype {c.array.dtype} cannot be a tensor of the IR")
        return kind

    def _fit(self, c: Const, user: str) -> Shape:
        dims = _ir_dims(tuple(c.array.shape))
        if dims is None or c.array.size == 0:
            raise InputError(f"{user}: constant {c.name!r} of shape {list(c.array.shape)} cannot be an IR tensor")
        return dims

    def _weight(self, c: Const, dims: Shape, dtype: str) -> Tensor:
        """Materialize a constant as a graph input (bound from `weights` at run time)."""
        key = (id(c), dims, dtype)
        if key in self._made:
            return self._made[key][1]
        if c.array.dtype.kind != "f":
            raise InputError(f"constant {c.name!r} has dtype {c.array.dtype}; the IR holds float tensors")
        name, k = c.name or "const", 1
        taken = set(self.g.input_names)
        while name in taken:
            k += 1
            name = f"{c.name or 'const'}.{k}"
        if math.prod(dims) != c.array.size:
            raise InputError(f"constant {c.name!r} of shape {list(c.array.shape)} cannot be held as {list(dims)}")
        t = self.g.new_input(dims, dtype, name)
        arr = c.array.reshape(dims)
        self.weights[name] = round_to(arr, dtype) if dtype == "bfloat16" else arr.astype(_STORE[dtype])
        self._made[key] = (c, t)
        return t

    # -- nodes --------------------------------------------------------------------------
    def _run(self, node: onnx.NodeProto) -> None:
        label = _label(node)
        args: list[Value | None] = [self._lookup(i, label) if i else None for i in node.input]
        op = node.op_type
        domain_ok = node.domain in ("", "ai.onnx") or (
            node.domain == "com.microsoft" and op == "SimplifiedLayerNormalization"
        )
        present = [a for a in args if a is not None]
        if not domain_ok:
            raise InputError(f"unsupported ONNX op {node.domain}.{op} ({label})")
        if op == "Constant":
            outs: list[Value] = [self._constant(node)]
        elif present and all(isinstance(a, Const) for a in present) and (op in HANDLERS or op in FOLD_ONLY):
            outs = self._fold(node, args)
        elif op in HANDLERS:
            try:
                outs = HANDLERS[op](self, node, args)
            except GraphError as e:
                raise InputError(f"{label}: {e}") from None
        else:
            raise InputError(f"unsupported ONNX op {op} ({label})")
        for name, v in zip(node.output, outs):
            if name:
                self.env[name] = v

    def _constant(self, node: onnx.NodeProto) -> Const:
        attrs = _attrs(node)
        if len(attrs) != 1:
            raise InputError(f"{_label(node)}: expected exactly one value attribute")
        key, v = next(iter(attrs.items()))
        name = node.output[0] if node.output else ""
        if key == "value" and isinstance(v, onnx.TensorProto):
            return Const(_to_array(v, _label(node)), name)
        if key in ("value_float", "value_floats"):
            return Const(_numeric(np.asarray(v, dtype=np.float32), _label(node)), name)
        if key in ("value_int", "value_ints"):
            return Const(_numeric(np.asarray(v, dtype=np.int64), _label(node)), name)
        raise InputError(f"{_label(node)}: unsupported constant attribute {key!r}")

    def _fold(self, node: onnx.NodeProto, args: list[Value | None]) -> list[Value]:
        """Evaluate a node whose inputs are all constant with ONNX's reference evaluator."""
        from onnx.reference import ReferenceEvaluator

        arrays = [a.array if isinstance(a, Const) else None for a in args]
        self._check_fold_size(node, arrays)
        feeds = {n: a for n, a in zip(node.input, arrays) if n and a is not None}
        try:
            ev = ReferenceEvaluator(node, opsets={"": self.opset})
            results = ev.run(None, feeds)
        except Exception as e:  # evaluating the model's own constants: any failure is the model's
            raise InputError(f"{_label(node)}: cannot evaluate on its constant inputs ({_first_line(e)})") from None
        outs: list[Value] = []
        for name, r in zip(node.output, results):
            arr = _numeric(r, _label(node))
            if arr.size > _fold_limit(arrays):
                raise InputError(f"{_label(node)}: folds to {arr.size} elements, more than {MAX_FOLD_ELEMENTS}")
            outs.append(Const(arr, name))
        return outs

    def _check_fold_size(self, node: onnx.NodeProto, arrays: list[np.ndarray | None]) -> None:
        """Refuse, before evaluating, a fold whose result would be huge (shape-making ops,
        broadcasts and products of constants)."""
        op, label = node.op_type, _label(node)
        try:
            present = [a for a in arrays if a is not None]
            size = 0
            shapes = [tuple(a.shape) for a in present]
            if op in ("ConstantOfShape", "Expand") and len(arrays) >= 1:
                dims = arrays[1 if op == "Expand" else 0] if len(arrays) > (op == "Expand") else None
                if dims is not None and dims.size:
                    size = max(size, math.prod(abs(int(d)) for d in dims.reshape(-1)))
            elif op == "Range" and len(present) == 3 and all(a.size == 1 for a in present):
                start, limit, delta = (float(a.reshape(-1)[0]) for a in present)
                if delta == 0 or not all(map(math.isfinite, (start, limit, delta))):
                    raise InputError(f"{label}: bad range ({start}, {limit}, {delta})")
                size = max(size, int(abs(limit - start) / abs(delta)))
            elif op == "Gather" and len(present) == 2:
                size = present[0].size * present[1].size  # a bound: every index picks a slice
            elif op in ("MatMul", "Gemm") and len(shapes) >= 2 and all(len(sh) >= 2 for sh in shapes[:2]):
                size = max(size, math.prod(shapes[0][:-1]) * shapes[1][-1])
            elif len(shapes) >= 2:
                out: Shape | None = shapes[0]
                for sh in shapes[1:]:
                    out = _broadcast(out, sh) if out is not None else None
                size = max(size, math.prod(out) if out is not None else 0)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"{label}: malformed constant inputs") from None
        if size > _fold_limit(arrays):
            raise InputError(f"{label}: folding it at load time would make {size} elements (limit {MAX_FOLD_ELEMENTS})")

    # -- helpers the handlers share -----------------------------------------------------
    def need(
        self, node: onnx.NodeProto, args: list[Value | None], lo: int, hi: int | None = None
    ) -> list[Value | None]:
        hi = lo if hi is None else hi
        if not lo <= len(args) <= hi or any(a is None for a in args[:lo]):
            raise InputError(f"{_label(node)}: expected {lo}{'' if hi == lo else f' to {hi}'} inputs, got {len(args)}")
        return args + [None] * (hi - len(args))

    def val(self, node: onnx.NodeProto, v: Value | None) -> Val:
        if not isinstance(v, Val):
            raise InputError(f"{_label(node)}: expected a tensor input")
        return v

    def const(self, node: onnx.NodeProto, v: Value | None, what: str) -> np.ndarray:
        if not isinstance(v, Const):
            raise InputError(f"{_label(node)}: {what} must be a constant (an initializer or Constant)")
        return v.array

    def axes(self, node: onnx.NodeProto, attrs: dict[str, Any], arg: Value | None, rank: int) -> list[int] | None:
        """Axes from the attribute (older opsets) or the second input (newer ones)."""
        if "axes" in attrs:
            raw = _ints(node, attrs["axes"], "axes")
        elif arg is not None:
            raw = _ints(node, self.const(node, arg, "axes"), "axes")
        else:
            return None
        axes = [_axis(node, a, rank) for a in raw]
        if len(set(axes)) != len(axes):
            raise InputError(f"{_label(node)}: repeated axes {raw}")
        return axes

    def reduce(self, node: onnx.NodeProto, v: Val, axes: Iterable[int]) -> Val:
        """Sum over ONNX axes, keeping them as size 1."""
        t, shape = v.tensor, list(v.shape)
        for a in sorted(set(axes)):
            if shape[a] == 1:
                continue
            sp = _span(t.dims, tuple(shape), a)
            if sp is None:
                raise InputError(
                    f"{_label(node)}: axis {a} of {list(v.shape)} is split across dims {list(v.dims)} by a reshape"
                )
            for d in range(*sp):
                if t.dims[d] > 1:
                    t = self.g.reduce_sum(t, d)
            shape[a] = 1
        return Val(t, tuple(shape))

    def elementwise(self, node: onnx.NodeProto, op: str, a: Value, b: Value) -> Val:
        """add/sub/mul/div with ONNX broadcasting; one-element constants become attributes."""
        sa, sb = _shape_of(a), _shape_of(b)
        out = _broadcast(sa, sb)
        if out is None:
            raise InputError(f"{_label(node)}: shapes {list(sa)} and {list(sb)} do not broadcast")
        for c, x, c_first in ((b, a, False), (a, b, True)):
            if isinstance(c, Const) and isinstance(x, Val) and c.array.size == 1:
                t = self._scalar_op(op, x.tensor, _scalar(node, c), c_first)
                if t is not None:
                    return Val(t, out)
        for c, x in ((b, a), (a, b)):
            if isinstance(c, Const) and isinstance(x, Val) and math.prod(out) == math.prod(x.shape):
                if (op in ("add", "sub") and not c.array.any()) or (op in ("mul", "div") and (c.array == 1).all()):
                    if c is b or op in ("add", "mul"):
                        return Val(x.tensor, out)  # x + 0, x - 0, x * 1, x / 1: exact identities
        ta, tb = self._operands(node, a, b, out)
        return Val(self.g.add_op(op, [ta, tb]), out)

    def _scalar_op(self, op: str, t: Tensor, c: Fraction, c_first: bool) -> Tensor | None:
        g = self.g
        if op == "add":
            return t if c == 0 else g.add_scalar(t, c)
        if op == "sub":
            if c_first:
                return g.neg(t) if c == 0 else g.add_scalar(g.neg(t), c)
            return t if c == 0 else g.add_scalar(t, -c)
        if op == "mul":
            return t if c == 1 else g.mul_scalar(t, c)
        if c_first:  # c / x
            r = g.reciprocal(t)
            return r if c == 1 else g.mul_scalar(r, c)
        if c == 0:
            return None  # x / 0 has no rational scale: divide by a materialized zero instead
        return t if c == 1 else g.mul_scalar(t, 1 / c)

    def _operands(self, node: onnx.NodeProto, a: Value, b: Value, out: Shape) -> tuple[Tensor, Tensor]:
        """The two operands as IR tensors whose broadcast reads what ONNX's does. A constant
        takes its own shape when that works, else the dims of the tensor it meets."""
        sa, sb = _shape_of(a), _shape_of(b)

        def ok(da: Shape, db: Shape) -> bool:
            try:
                d_out = broadcast_dims(da, db)
            except GraphError:
                return False
            return (
                math.prod(d_out) == math.prod(out)
                and _read_map(out, sa) == _read_map(d_out, da)
                and _read_map(out, sb) == _read_map(d_out, db)
            )

        if isinstance(a, Val) and isinstance(b, Val):
            da, db = a.dims, b.dims
        else:
            c, x = (a, b) if isinstance(a, Const) else (b, a)
            assert isinstance(c, Const) and isinstance(x, Val)
            cands = [self._fit(c, _label(node))]
            if math.prod(x.shape) == math.prod(out):
                mapped = self._mapped_dims(tuple(c.array.shape), out, x)
                cands += [mapped] if mapped is not None else []
            pairs = [(cd, x.dims) if c is a else (x.dims, cd) for cd in cands]
            da, db = next((p for p in pairs if ok(*p)), pairs[0])
        if not ok(da, db):
            raise InputError(
                f"{_label(node)}: operands {list(sa)} and {list(sb)} are held as IR dims {list(da)} and "
                f"{list(db)} after a reshape, and the IR has no reshape op"
            )
        dtype = next(v.tensor.dtype for v in (a, b) if isinstance(v, Val))
        return self.as_tensor(node, a, da, dtype), self.as_tensor(node, b, db, dtype)

    @staticmethod
    def _mapped_dims(cshape: Shape, out: Shape, ref: Val) -> Shape | None:
        """Dims for a constant broadcast against `ref`'s relabelled dims: each ONNX axis the
        constant spans takes `ref`'s IR dims for that axis."""
        aligned = (1,) * (len(out) - len(cshape)) + cshape
        dims = [1] * len(ref.dims)
        for k, e in enumerate(out):
            if e == 1 or aligned[k] == 1:
                continue
            sp = _span(ref.dims, out, k)
            if sp is None:
                return None
            dims[sp[0] : sp[1]] = ref.dims[sp[0] : sp[1]]
        return tuple(dims) if math.prod(dims) == math.prod(cshape) else None

    def reject_extra_outputs(self, node: onnx.NodeProto) -> None:
        extra = [o for o in node.output[1:] if o and o in self._used]
        if extra:
            raise InputError(f"{_label(node)}: output {extra[0]!r} (the inverse std) is not supported")

    def transpose(self, node: onnx.NodeProto, v: Val, perm: Sequence[int]) -> Val:
        s, d = v.shape, v.dims
        new = tuple(s[p] for p in perm)
        st = _row_major(s)
        want = _canon((s[p], st[p]) for p in perm)
        sd = _row_major(d)
        if _canon(zip(d, sd)) == want:
            return Val(v.tensor, new)  # moves only size-1 dims: a relabel
        if len(d) >= 2:
            swap = [*range(len(d) - 2), len(d) - 1, len(d) - 2]
            if _canon((d[p], sd[p]) for p in swap) == want:
                return Val(self.g.transpose(v.tensor), new)
        raise InputError(
            f"{_label(node)}: perm {list(perm)} of {list(s)} is not a swap of the last two dims, "
            "the only transpose the IR has"
        )

    def as_tensor(self, node: onnx.NodeProto, v: Value, dims: Shape, dtype: str) -> Tensor:
        return v.tensor if isinstance(v, Val) else self._weight(v, dims, dtype)


def _dtype_name(elem: int) -> str:
    try:
        return str(TensorProto.DataType.Name(elem))
    except ValueError:
        return f"#{elem}"


# ---------------------------------------------------------------------------------------
# Handlers, one per ONNX op (or family)

_UNARY = {"Exp": "exp", "Sqrt": "sqrt", "Sigmoid": "sigmoid", "Relu": "relu", "Neg": "neg", "Reciprocal": "reciprocal"}
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}


@_handles(*_UNARY)
def _unary(cv: _Converter, node: onnx.NodeProto, args: list[Value | None]) -> list[Value]:
    (x,) = cv.need(node, args, 1)
    v = cv.val(node, x)
    return [Val(cv.g.add_op(_UNARY[node.op_type], [v.tensor]), v.shape)]


@_handles("Gelu")
def _gelu(cv: _Converter, node: onnx.NodeProto, args: list[Value | None]) -> list[Value]:
    (x,) = cv.need(node, args, 1)
    v = cv.val(node, x)
    approx = _attrs(node).get("approximate", b"none")
    approx = approx.decode(errors="replace") if isinstance(approx, bytes) else approx
    if approx not in ("none", "tanh"):
        raise InputError(f"{_label(node)}: approximate must be 'none' or 'tanh', got {approx!r}")
    return [Val(cv.g.gelu(v.tensor, approx), v.shape)]


@_handles(*_BINARY)
def _binary(cv: _Converter, node: onnx.NodeProto, args: list[Value | None]) -> list[Value]:
    a, b = cv.need(node, args, 2)
    assert a is not None and b is not None
    return [cv.elementwise(node, _BINARY[node.op_type], a, b)]


@_handles("Pow")
def _pow(cv: _Converter, node: onnx.NodeProto, args: list[Value | None]) -> list[Value]:
    x, y = cv.need(node, args, 2)
    v = cv.val(node, x)
    e = cv.const(node, y, "the exponent")
    if e.size != 1:
        raise InputError(f"{_label(node)}: the exponent must be one number (the IR has pow with a scalar exponent)")
    assert isinstance(y, Const)
    c = _scalar(node, y)
    out = _broadcast(v.shape, tuple(e.shape))
    assert out is not None  # a one-element exponent broadcasts against anything
    g, t = cv.g, v.tensor
    special: dict[Fraction, Callable[[], Tensor]] = {
        Fraction(1): lambda: t,
        Fraction(2): lambda: g.square(t),
        Fraction(1, 2): lambda: g.sqrt(t),
        Fraction(-1): lambda: g.reciprocal(t),
    }
    return [Val(special[c]() if c in special else g.pow_scalar(t, c), out)]


def _matmul_shapes(node: onnx.NodeProto, sa: Shape, sb: Shape) -> tuple[Shape, Shape, Shape]:
    if not sa or not sb:
        raise InputError(f"{_label(node)}: MatMul operands need at least one dim")
    pa = (1,) + sa if len(sa) == 1 else sa
    pb = sb + (1,) if len(sb) == 1 else sb
    batch = _broadcast(pa[:-2], pb[:-2])
    if pa[-1] != pb[-2] or batch is None:
        raise InputError(f"{_label(node)}: cannot multiply {list(sa)} by {list(sb)}")
    out = batch + (pa[-2],) * (len(sa) > 1) + (pb[-1],) * (len(sb) > 1)
    return pa, pb, out


def matmul(cv: _Converter, node: onnx.NodeProto, a: Value, b: Value) -> Val:
    """ONNX MatMul on the IR's matmul, whose batch dims must match or be absent on one side.
    A side with no batch lets the other side's rows be regrouped freely."""
    pa, pb, out = _matmul_shapes(node, _shape_of(a), _shape_of(b))
    dtype = (
        next(v.tensor.dtype for v in (a, b) if isinstance(v, Val)) if any(isinstance(v, Val) for v in (a, b)) else ""
    )

    def mat_dims(p: Shape) -> Shape:
        dims = _strip_lead(p[:-2]) + p[-2:]
        if len(dims) > MAX_RANK:
            raise InputError(f"{_label(node)}: a constant operand of rank {len(p)} exceeds the IR's {MAX_RANK} dims")
        return dims

    ta = a.tensor if isinstance(a, Val) else cv.as_tensor(node, a, mat_dims(pa), dtype)
    tb = b.tensor if isinstance(b, Val) else cv.as_tensor(node, b, mat_dims(pb), dtype)
    da, db = ta.dims, tb.dims
    ok = False
    if math.prod(pb[:-2]) == 1 and db == pb[-2:]:
        ok = len(da) >= 2 and da[-1] == pa[-1] and math.prod(da) == math.prod(pa)
    elif math.prod(pa[:-2]) == 1 and da == pa[-2:]:
        ok = len(db) >= 2 and db[-2:] == pb[-2:]
    else:
        ok = (
            len(da) >= 2
            and len(db) >= 2
            and da[-2:] == pa[-2:]
            and db[-2:] == pb[-2:]
            and da[:-2] == db[:-2]
            and _strip_lead(pa[:-2]) == _strip_lead(pb[:-2])
        )
    if not ok:
        raise InputError(
            f"{_label(node)}: {list(_shape_of(a))} @ {list(_shape_of(b))} held as IR dims {list(da)} @ {list(db)} "
            "needs a reshape or a batch broadcast the IR's matmul lacks"
        )
    return Val(cv.g.matmul(ta, tb), out)


@_handles("MatMul")
def _matmul(cv: _Converter, node: onnx.NodeProto, args: list[Value | None]) -> list[Value]:
    a, b = cv.need(node, args, 2)
    assert a is not None and b is not None
    return [matmul(cv, node, a, b)]


@_handles("Gemm")
def _gemm(cv: _Converter, node: onnx.NodeProto, args: list[Value | None]) -> list[Value]:
    """alpha * A' @ B' + beta * C, alpha and beta exact scalars."""
    a, b, c = cv.need(node, args, 2, 3)
    assert a is not None and b is not None
    attrs = _attrs(node)
    alpha, beta = _float(node, attrs, "alpha", 1.0), _float(node, attrs, "beta", 1.0)
    ops: list[Value] = []
    for v, flag in ((a, "transA"), (b, "transB")):
        if len(_shape_of(v)) != 2:
            raise InputError(f"{_label(node)}: Gemm operands must be 2-D, got {list(_shape_of(v))}")
        if _int(node, attrs, flag, 0):
            v = Const(v.array.T, v.name) if isinstance(v, Const) else cv.transpose(node, v, (1, 0))
        ops.append(v)
    if not any(isinstance(v, Val) for v in ops):
        raise InputError(f"{_label(node)}: a product of two constants plus a tensor bias is not supported")
    y = matmul(cv, node, ops[0], ops[1])
    if alpha != 1:
        y = Val(cv.g.mul_scalar(y.tensor, alpha), y.shape)
    if c is None or beta == 0:
        return [y]
    if _broadcast(_shape_of(c), y.shape) != y.shape:
        raise InputError(f"{_label(node)}: bias {list(_shape_of(c))} does not broadcast to {list(y.shape)}")
    if isinstance(c, Const) and c.array.size == 1:
        bias = beta * _scalar(node, c)
        return [y if bias == 0 else Val(cv.g.add_scalar(y.tensor, bias), y.shape)]
    if beta != 1:
        t = cv.as_tensor(node, c, cv._fit(c, _label(node)) if isinstance(c, Const) else (), y.tensor.dtype)
        c = Val(cv.g.mul_scalar(t, beta), _shape_of(c))
    return [cv.elementwise(node, "add", y, c)]


def _reduce_args(cv: _Converter, node: onnx.NodeProto, args: list[Value | None]) -> tuple[Val, list[int], bool]:
    x, ax = cv.need(node, args, 1, 2)
    v = cv.val(node, x)
    attrs = _attrs(node)
    rank = len(v.shape)
    axes = cv.axes(node, attrs, ax, rank)
    keep = bool(_int(node, attrs, "keepdims", 1))
    if not axes:
        axes = [] if _int(node, attrs, "noop_with_empty_axes", 0) else list(range(rank))
    return v, axes, keep


def _drop(shape: Shape, axes: Iterable[int]) -> Shape:
    gone = set(axes)
    return tuple(n for k, n in enumerate(shape) if k not in gone)


@_handles("ReduceSum", "ReduceMean")
def _reduce(cv: _Converter, node: onnx.NodeProto, args: list[Value | None]) -> list[Value]:
    v, axes, keep = _reduce_args(cv, node, args)
    r = cv.reduce(node, v, axes)
    t = r.tensor
    n = math.prod(v.shape[a] for a in axes)
    if node.op_type == "ReduceMean" and n > 1:
        t = cv.g.mul_scalar(t, Fraction(1, n))  # the exact 1/n
    return [Val(t, r.shape if keep else _drop(r.shape, axes))]


@_handles("Softmax")
def _softmax(cv: _Converter, node: onnx.NodeProto, args: list[Value | None]) -> list[Value]:
    """exp / reduce_sum / div, as DESIGN.md defines softmax (no max subtraction)."""
    (x,) = cv.need(node, args, 1)
    v = cv.val(node, x)
    rank = len(v.shape)
    new = cv.opset >= 13
    axis = _axis(node, _int(node, _attrs(node), "axis", -1 if new else 1), rank)
    # Before opset 13 Softmax flattened the input at `axis` and normalized over all later dims.
    axes = [axis] if new else list(range(axis, rank))
    e = Val(cv.g.exp(v.tensor), v.shape)
    s = cv.reduce(node, e, axes)
    return [Val(cv.g.div(e.tensor, s.tensor), v.shape)]


def rms_normalize(cv: _Converter, node: onnx.NodeProto, v: Val, axis: int, eps: Fraction) -> Val:
    """x / sqrt(mean(x^2 over axes [axis, rank)) + eps): the IR's rms_norm when those axes
    are its last dim, else the same composition from exact ops."""
    axes = list(range(axis, len(v.shape)))
    n = math.prod(v.shape[a] for a in axes)
    if n == v.dims[-1]:  # each normalized group is one row of the IR tensor
        return Val(cv.g.rms_norm(v.tensor, eps), v.shape)
    sq = Val(cv.g.square(v.tensor), v.shape)
    ms = cv.reduce(node, sq, axes).tensor
    if n > 1:
        ms = cv.g.mul_scalar(ms, Fraction(1, n))
    return Val(cv.g.div(v.tensor, cv.g.sqrt(cv.g.add_scalar(ms, eps))), v.shape)


@_handles("RMSNormalization", "SimplifiedLayerNormalization")
def _rms(cv: _Converter, node: onnx.NodeProto, args: list[Value | None]) -> list[Value]:
    x, scale = cv.need(node, args, 2)
    v = cv.val(node, x)
    assert scale is not None
    attrs = _attrs(node)
    axis = _axis(node, _int(node, attrs, "axis", -1), len(v.shape))
    eps = _float(node, attrs, "epsilon", 1e-5)
    if len(node.output) > 1 and any(node.output[1:]):
        cv.reject_extra_outputs(node)
    y = rms_normalize(cv, node, v, axis, eps)
    return [cv.elementwise(node, "mul", y, scale)]


@_handles("Concat")
def _concat(cv: _Converter, node: onnx.NodeProto, args: list[Value | None]) -> list[Value]:
    if not args or any(a is None for a in args):
        raise InputError(f"{_label(node)}: needs one input or more")
    vals = [a for a in args if a is not None]
    shapes = [_shape_of(a) for a in vals]
    rank = len(shapes[0])
    axis = _axis(node, _int(node, _attrs(node), "axis", 0), rank)
    if any(len(s) != rank or _drop(s, [axis]) != _drop(shapes[0], [axis]) for s in shapes):
        raise InputError(f"{_label(node)}: shapes {[list(s) for s in shapes]} differ off axis {axis}")
    out = shapes[0][:axis] + (sum(s[axis] for s in shapes),) + shapes[0][axis + 1 :]
    ref = next(v for v in vals if isinstance(v, Val))
    outer, inner = math.prod(ref.shape[:axis]), math.prod(ref.shape[axis + 1 :])
    rd = ref.dims
    dim = next(
        (
            k
            for k in range(len(rd))
            if math.prod(rd[:k]) == outer and rd[k] == ref.shape[axis] and math.prod(rd[k + 1 :]) == inner
        ),
        None,
    )
    if dim is None:
        raise InputError(f"{_label(node)}: axis {axis} of {list(ref.shape)} is not one IR dim of {list(rd)}")
    tensors = []
    for v, s in zip(vals, shapes):
        want = rd[:dim] + (s[axis],) + rd[dim + 1 :]
        t = cv.as_tensor(node, v, want, ref.tensor.dtype)
        if t.dims != want:
            raise InputError(f"{_label(node)}: input {list(s)} is held as IR dims {list(t.dims)}, not {list(want)}")
        tensors.append(t)
    t = tensors[0]
    for u in tensors[1:]:
        t = cv.g.concat(t, u, dim)
    return [Val(t, out)]


@_handles("Transpose")
def _transpose(cv: _Converter, node: onnx.NodeProto, args: list[Value | None]) -> list[Value]:
    (x,) = cv.need(node, args, 1)
    v = cv.val(node, x)
    rank = len(v.shape)
    attrs = _attrs(node)
    perm = _ints(node, attrs["perm"], "perm") if "perm" in attrs else list(range(rank))[::-1]
    if sorted(perm) != list(range(rank)):
        raise InputError(f"{_label(node)}: perm {perm} is not a permutation of {rank} axes")
    return [cv.transpose(node, v, perm)]


def _relabel(node: onnx.NodeProto, v: Val, shape: Sequence[int]) -> list[Value]:
    shape = tuple(shape)
    if math.prod(shape) != math.prod(v.shape) or any(n < 1 for n in shape):
        raise InputError(f"{_label(node)}: cannot view {list(v.shape)} as {list(shape)}")
    return [Val(v.tensor, shape)]


@_handles("Reshape")
def _reshape(cv: _Converter, node: onnx.NodeProto, args: list[Value | None]) -> list[Value]:
    x, s = cv.need(node, args, 2)
    v = cv.val(node, x)
    target = _ints(node, cv.const(node, s, "the shape"), "the shape")
    allowzero = _int(node, _attrs(node), "allowzero", 0)
    dims = [v.shape[k] if n == 0 and not allowzero and k < len(v.shape) else n for k, n in enumerate(target)]
    if dims.count(-1) > 1 or any(n < -1 for n in dims):
        raise InputError(f"{_label(node)}: bad target shape {target}")
    if -1 in dims:
        known = math.prod(n for n in dims if n != -1)
        if known == 0 or math.prod(v.shape) % known:
            raise InputError(f"{_label(node)}: cannot view {list(v.shape)} as {target}")
        dims[dims.index(-1)] = math.prod(v.shape) // known
    return _relabel(node, v, dims)


@_handles("Squeeze", "Unsqueeze")
def _squeeze(cv: _Converter, node: onnx.NodeProto, args: list[Value | None]) -> list[Value]:
    x, ax = cv.need(node, args, 1, 2)
    v = cv.val(node, x)
    attrs = _attrs(node)
    shape = list(v.shape)
    if node.op_type == "Squeeze":
        axes = cv.axes(node, attrs, ax, len(shape))
        axes = [k for k, n in enumerate(shape) if n == 1] if axes is None else axes
        if any(shape[a] != 1 for a in axes):
            raise InputError(f"{_label(node)}: axes {axes} of {shape} are not all of size 1")
        return _relabel(node, v, _drop(tuple(shape), axes))
    if "axes" in attrs:
        raw = _ints(node, attrs["axes"], "axes")
    elif ax is not None:
        raw = _ints(node, cv.const(node, ax, "axes"), "axes")
    else:
        raise InputError(f"{_label(node)}: Unsqueeze needs axes")
    rank = len(shape) + len(raw)
    axes = sorted(_axis(node, a, rank) for a in raw)
    if len(set(axes)) != len(axes):
        raise InputError(f"{_label(node)}: repeated axes {raw}")
    for a in axes:
        shape.insert(a, 1)
    return _relabel(node, v, shape)


@_handles("Flatten")
def _flatten(cv: _Converter, node: onnx.NodeProto, args: list[Value | None]) -> list[Value]:
    (x,) = cv.need(node, args, 1)
    v = cv.val(node, x)
    rank = len(v.shape)
    axis = _int(node, _attrs(node), "axis", 1)
    if not -rank <= axis <= rank:
        raise InputError(f"{_label(node)}: axis {axis} out of range for rank {rank}")
    axis %= rank + 1
    return _relabel(node, v, (math.prod(v.shape[:axis]), math.prod(v.shape[axis:])))


@_handles("Cast")
def _cast(cv: _Converter, node: onnx.NodeProto, args: list[Value | None]) -> list[Value]:
    (x,) = cv.need(node, args, 1)
    v = cv.val(node, x)
    to = _int(node, _attrs(node), "to", 0)
    if to not in IR_DTYPES:
        raise InputError(f"{_label(node)}: cast to {_dtype_name(to)}; the IR holds float16, bfloat16 and float32")
    # The IR has no cast op: the tensor (and its dtype) stays, the value is the same number.
    return [v]


@_handles("Identity")
def _identity(cv: _Converter, node: onnx.NodeProto, args: list[Value | None]) -> list[Value]:
    (x,) = cv.need(node, args, 1)
    assert x is not None
    return [x]


@_handles("Shape", "Size")
def _shape(cv: _Converter, node: onnx.NodeProto, args: list[Value | None]) -> list[Value]:
    """Static shapes: the shape of a tensor is a constant."""
    (x,) = cv.need(node, args, 1)
    v = cv.val(node, x)
    name = node.output[0] if node.output else ""
    if node.op_type == "Size":
        return [Const(np.array(math.prod(v.shape), dtype=np.int64), name)]
    attrs = _attrs(node)
    rank = len(v.shape)
    start = _int(node, attrs, "start", 0)
    end = _int(node, attrs, "end", rank)
    return [Const(np.array(v.shape[slice(start, end)], dtype=np.int64), name)]


# ---------------------------------------------------------------------------------------
# Entry points


def _read_model(path: str | Path) -> onnx.ModelProto:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():
        raise InputError(f"{p}: not a file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf DecodeError, OSError, ...: the file is not a model
        raise InputError(f"{p}: not a readable ONNX model ({type(e).__name__}: {_first_line(e)})") from None
    if not isinstance(model, onnx.ModelProto):
        raise InputError(f"{p}: not an ONNX model")
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(p.parent))
    except Exception as e:  # a missing or unreadable external-data file
        raise InputError(f"{p}: cannot load external data ({type(e).__name__}: {_first_line(e)})") from None
    return model


def import_model(
    model: onnx.ModelProto,
    outputs: Sequence[str] | str | None = None,
    inputs_cut: Sequence[str] | str | None = None,
    inputs: InputShapes | None = None,
    source: str = "",
) -> OnnxImport:
    """Convert an in-memory model. `outputs` picks the values to compute (default: the
    graph's outputs), `inputs_cut` the values where to cut (they become runtime inputs, with
    shapes from ONNX shape inference), `inputs` fills in shapes the model leaves symbolic."""
    outs = _names(outputs)
    cuts = _names(inputs_cut) or []
    try:
        return _Converter(model, source, inputs).convert(outs, cuts)
    except InputError as e:
        raise InputError(f"{source}: {e}" if source else str(e)) from None
    except GraphError as e:
        raise InputError(f"{source}: {e}" if source else str(e)) from None


def load_onnx(
    path: str | Path,
    outputs: Sequence[str] | str | None = None,
    inputs_cut: Sequence[str] | str | None = None,
    inputs: InputShapes | None = None,
) -> FrontendResult:
    """Load `path` (external data too) and convert it; see `import_model`."""
    return import_model(_read_model(path), outputs, inputs_cut, inputs, source=str(path)).result


def _names(v: Sequence[str] | str | None) -> list[str] | None:
    if v is None:
        return None
    names = [n.strip() for n in v.split(",")] if isinstance(v, str) else [str(n) for n in v]
    return [n for n in names if n] or None
