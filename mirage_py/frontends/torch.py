"""PyTorch frontend: `file.py:NAME` (an nn.Module class or instance, or a function) to a spec
KernelGraph, captured with `torch.export` and mapped aten op by aten op.

How torch values become IR tensors
- User inputs come first, named by the forward's arguments; parameters, buffers and tensor
  constants follow as graph inputs whose arrays go to `FrontendResult.weights` (names
  sanitized: `mlp.w1` -> `mlp_w1`). A parameter that is only ever used transposed (nn.Linear's
  weight, `W.t()`) is stored transposed as `<name>_t`, so the spec is `x @ W_t` with no
  transpose op on a constant.
- Scalars (Python numbers in the graph, one-element tensor constants) become exact rationals.
- The IR holds one dtype per graph here: every tensor gets the runtime inputs' dtype (default
  float32), a module whose parameters have another float dtype is converted to it before
  export, and casts between float types are identities (kernels keep sums in float32).
- The IR has no reshape. A torch value is an IR tensor seen with a torch shape: views,
  squeezes and permutes that only move size-1 dims keep the IR tensor and change the shape
  (a `sum(-1)` without keepdim is the IR's `[n, 1]` seen as `[n]`); an `expand` is kept as a
  broadcast that elementwise consumers perform. Every op checks that its operands' IR dims
  say what torch's shapes say, and names the op and source line when they do not.

torch is imported only when a model is loaded: `parse_input_spec` and this module's import
cost nothing.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import inspect
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..ir.dtypes import DTYPES
from ..ir.errors import GraphError, InputError
from ..ir.graph import KernelGraph, Tensor
from ..ir.ops import MAX_RANK
from . import FrontendResult, InputShapes

DEFAULT_DTYPE = "float32"  # torch's default dtype; `--inputs x=8x64:float16` picks another

# ---------------------------------------------------------------------------------------
# `--inputs NAME=DxDxD[:dtype]`


def parse_input_spec(text: str) -> tuple[str, tuple[int, ...], str | None]:
    """`x=8x256:float16` -> ("x", (8, 256), "float16"); the dtype is None when absent."""
    name, eq, rest = text.partition("=")
    name = name.strip()
    if not eq or not name or any(c.isspace() for c in name):
        raise InputError(f"--inputs {text!r}: expected NAME=DxDxD[:dtype], e.g. x=8x256:float16")
    dims_text, colon, dtype = rest.partition(":")
    parts = dims_text.strip().lower().split("x")
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise InputError(f"--inputs {text!r}: dims must be positive integers joined by 'x', e.g. 8x256")
    dims = tuple(int(p) for p in parts)
    if len(dims) > MAX_RANK:
        raise InputError(f"--inputs {text!r}: tensors have 1 to {MAX_RANK} dims, got {len(dims)}")
    if not colon:
        return name, dims, None
    dtype = dtype.strip()
    if dtype not in DTYPES:
        raise InputError(f"--inputs {text!r}: unknown dtype {dtype!r} (expected one of {', '.join(DTYPES)})")
    return name, dims, dtype


def parse_input_specs(texts: Sequence[str]) -> dict[str, tuple[tuple[int, ...], str | None]]:
    """Several `--inputs` options as an InputShapes mapping; a name given twice is an error."""
    out: dict[str, tuple[tuple[int, ...], str | None]] = {}
    for text in texts:
        name, dims, dtype = parse_input_spec(text)
        if name in out:
            raise InputError(f"--inputs: {name!r} is given twice")
        out[name] = (dims, dtype)
    return out


# ---------------------------------------------------------------------------------------
# Loading `file.py:NAME`


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _split_spec(spec: str) -> tuple[Path, str]:
    path, sep, name = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not name.isidentifier():
        raise InputError(f"{spec}: expected file.py:NAME (a torch module class or instance, or a function)")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    return p, name


def _import_file(path: Path) -> Any:
    """Import a user's Python file as a fresh module; its failure is the user's (one line)."""
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    mod_name = f"_mirage_py_user_{path.stem}_{key}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses and pickling look the module up by name
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # so the file can import its neighbours
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:
        sys.modules.pop(mod_name, None)
        raise InputError(f"{path}: importing it raised {type(e).__name__}: {_one_line(e)}") from None
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def _resolve(spec: str, path: Path, name: str) -> tuple[Any, str]:
    """The callable to export (an nn.Module) and a description of what NAME was."""
    import torch

    module = _import_file(path)
    if not hasattr(module, name):
        found = sorted(k for k, v in vars(module).items() if not k.startswith("_") and _loadable(v, module.__name__))
        raise InputError(f"{path}: no {name!r} in it (modules and functions there: {', '.join(found) or 'none'})")
    obj = getattr(module, name)
    if inspect.isclass(obj):
        if not issubclass(obj, torch.nn.Module):
            raise InputError(f"{spec}: {name} is a class but not a torch.nn.Module")
        return _instantiate(spec, obj), "class"
    if isinstance(obj, torch.nn.Module):
        return obj, "instance"
    if callable(obj):
        return _FunctionModule.wrap(obj), "function"
    raise InputError(f"{spec}: {name} is a {type(obj).__name__}, not a torch module class, instance or function")


def _loadable(v: Any, module_name: str) -> bool:
    """Could NAME name this? (For the list in the "no such NAME" message.)"""
    import torch

    if isinstance(v, torch.nn.Module):
        return True
    is_module_class = inspect.isclass(v) and issubclass(v, torch.nn.Module)
    return (is_module_class or inspect.isfunction(v)) and getattr(v, "__module__", None) == module_name


def _instantiate(spec: str, cls: type) -> Any:
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        needed = [
            p.name
            for p in sig.parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if needed:
            raise InputError(
                f"{spec}: {cls.__name__}() needs constructor arguments ({', '.join(needed)}); "
                "name a class that builds with none, a module instance, or a function"
            )
    try:
        return cls()
    except Exception as e:
        raise InputError(f"{spec}: {cls.__name__}() raised {type(e).__name__}: {_one_line(e)}") from None


class _FunctionModule:
    """Wraps a plain function as an nn.Module (torch.export takes modules)."""

    @staticmethod
    def wrap(fn: Callable[..., Any]) -> Any:
        import torch

        class Function(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.fn = fn

            def forward(self, *args: Any) -> Any:
                return self.fn(*args)

        return Function()


def _argument_names(spec: str, module: Any, kind: str, inputs: InputShapes) -> list[str]:
    """The forward's positional arguments that `inputs` feeds, in order. Inputs must cover a
    prefix of them; the rest must have defaults."""
    fn = module.fn if kind == "function" else module.forward
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        raise InputError(f"{spec}: cannot read the signature of its forward") from None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = [p.name for p in positional]
    unknown = [n for n in inputs if n not in names]
    if unknown:
        raise InputError(f"{spec}: --inputs names {', '.join(unknown)}, but its arguments are ({', '.join(names)})")
    used: list[str] = []
    for p in positional:
        if p.name in inputs:
            if len(used) < positional.index(p):
                skipped = names[len(used)]
                raise InputError(f"{spec}: give --inputs for {skipped!r} too (a later argument, {p.name!r}, is given)")
            used.append(p.name)
        elif p.default is p.empty:
            raise InputError(f"{spec}: missing --inputs for argument {p.name!r} (e.g. {p.name}=8x64)")
    for p in params:
        if p.kind == p.KEYWORD_ONLY and p.default is p.empty:
            raise InputError(f"{spec}: its keyword-only argument {p.name!r} has no default")
    return used


def _graph_dtype(spec: str, inputs: InputShapes) -> str:
    dtypes = {dt or DEFAULT_DTYPE for _, dt in inputs.values()}
    if len(dtypes) > 1:
        raise InputError(f"{spec}: inputs have different dtypes ({', '.join(sorted(dtypes))}); give them one dtype")
    dtype = dtypes.pop() if dtypes else DEFAULT_DTYPE
    if dtype not in DTYPES:
        raise InputError(f"{spec}: unknown dtype {dtype!r} (expected one of {', '.join(DTYPES)})")
    return dtype


def _export(spec: str, module: Any, arg_names: list[str], inputs: InputShapes, dtype: str) -> Any:
    import torch

    tdtype = getattr(torch, dtype)
    floats = [t for t in list(module.parameters()) + list(module.buffers()) if t.is_floating_point()]
    if any(t.dtype != tdtype for t in floats):
        module = copy.deepcopy(module).to(tdtype)  # the user's instance stays as it was
    args = []
    for n in arg_names:
        dims = inputs[n][0]
        if not dims or any(not isinstance(d, int) or d < 1 for d in dims):
            raise InputError(f"{spec}: input {n!r} has dims {list(dims)}; expected positive integers")
        args.append(torch.zeros(tuple(dims), dtype=tdtype))
    was_training = module.training
    module.eval()  # dropout off, norms in inference form; put back below
    try:
        # torch.export warns about its own internals (pytree deprecations): not the user's news.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            ep = torch.export.export(module, tuple(args))
            return ep.run_decompositions(_decomposition_table())
    except Exception as e:
        raise InputError(f"{spec}: torch.export failed: {type(e).__name__}: {_one_line(e)[:400]}") from None
    finally:
        module.train(was_training)


def _decomposition_table() -> Any:
    """torch's core-ATen decompositions, minus the ops this frontend maps itself (so silu,
    linear, softmax, gelu stay whole instead of becoming their parts)."""
    from torch.export import default_decompositions

    table = default_decompositions()
    for op in list(table.keys()):
        if _aten_name(op) in ATEN:
            table.pop(op)
    return table


def _aten_name(target: Any) -> str | None:
    """`torch.ops.aten.add.Tensor` -> "add.Tensor"; None for anything else."""
    if getattr(target, "namespace", None) != "aten":
        return None
    return f"{target._overloadpacket.__name__}.{target._overloadname}"


def load_torch(spec: str, inputs: InputShapes, outputs: Sequence[str] | None = None) -> FrontendResult:
    """Load `file.py:NAME` and map its exported graph to a spec KernelGraph.

    `inputs` gives each forward argument's dims and dtype; `outputs` keeps only the named
    outputs (the outputs are named out0, out1, ... in the order forward returns them)."""
    path, name = _split_spec(spec)
    module, kind = _resolve(spec, path, name)
    arg_names = _argument_names(spec, module, kind, inputs)
    dtype = _graph_dtype(spec, inputs)
    ep = _export(spec, module, arg_names, inputs, dtype)
    try:
        graph, weights = _Converter(ep, arg_names, dtype, path).convert(outputs)
    except (InputError, GraphError) as e:  # e.g. a 5-D parameter: the IR's rank rule
        raise InputError(f"{spec}: {e}") from None
    return FrontendResult(graph, weights, source=spec)


# ---------------------------------------------------------------------------------------
# Values: how a torch tensor is held in the IR


@dataclass(frozen=True)
class _Val:
    """An IR tensor `t` seen by torch with shape `shape` (see the module docstring).
    `pre_t`: a weight stored transposed; only transposing consumers ever see it."""

    t: Tensor
    shape: tuple[int, ...]
    pre_t: bool = False

    @property
    def dims(self) -> tuple[int, ...]:
        return self.t.dims


Value = _Val | Fraction


def _nonones(dims: Sequence[int]) -> list[int]:
    return [d for d in dims if d != 1]


def _strip(dims: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(dims)
    while dims and dims[0] == 1:
        dims = dims[1:]
    return dims


def compatible(ir: Sequence[int], shape: Sequence[int]) -> bool:
    """IR broadcasting of `ir` gives what torch's tensor of `shape` holds: right-aligned,
    every IR dim is torch's or 1 (a broadcast), extra IR dims are leading 1s."""
    ir, shape = tuple(ir), tuple(shape)
    if len(ir) > len(shape) and any(d != 1 for d in ir[: len(ir) - len(shape)]):
        return False
    return all(a in (b, 1) for a, b in zip(reversed(ir), reversed(shape)))


def exact(ir: Sequence[int], shape: Sequence[int]) -> bool:
    """Same dims up to leading 1s: the IR tensor is torch's tensor, dim for dim."""
    return _strip(ir) == _strip(shape)


def same_data(ir: Sequence[int], shape: Sequence[int]) -> bool:
    """Same elements in the same row-major order (only size-1 dims differ)."""
    return _nonones(ir) == _nonones(shape)


class _Unsupported(Exception):
    """Raised by a handler; the converter adds the op name and source line."""


# ---------------------------------------------------------------------------------------
# The converter


class _Converter:
    def __init__(self, ep: Any, arg_names: list[str], dtype: str, path: Path) -> None:
        self.ep = ep
        self.arg_names = arg_names
        self.dtype = dtype
        self.path = path.resolve()
        self.g = KernelGraph()
        self.weights: dict[str, np.ndarray] = {}
        self.env: dict[str, Value] = {}

    # -- entry ---------------------------------------------------------------------------
    def convert(self, outputs: Sequence[str] | None) -> tuple[KernelGraph, dict[str, np.ndarray]]:
        out_node = next(n for n in self.ep.graph.nodes if n.op == "output")
        results = self._user_outputs(out_node)
        names = [f"out{i}" for i in range(len(results))]
        keep = list(range(len(results)))
        if outputs:
            missing = [o for o in outputs if o not in names]
            if missing:
                raise InputError(f"no output named {', '.join(missing)} (outputs: {', '.join(names)})")
            keep = [names.index(o) for o in outputs]
        needed = self._ancestors([results[i] for i in keep])
        self._placeholders(needed)
        for node in self.ep.graph.nodes:
            if node.op == "call_function" and node in needed:
                self.env[node.name] = self._call(node)
        for i in keep:
            self._mark_output(results[i], names[i])
        return self.g, self.weights

    def _user_outputs(self, out_node: Any) -> list[Any]:
        from torch.export.graph_signature import OutputKind

        specs = self.ep.graph_signature.output_specs
        bad = [s for s in specs if s.kind != OutputKind.USER_OUTPUT]
        if bad:
            raise InputError(
                f"forward mutates {bad[0].target or bad[0].arg.name} ({bad[0].kind.name}); the spec must be pure"
            )
        results = list(out_node.args[0])
        for i, r in enumerate(results):
            if not hasattr(r, "op"):
                raise InputError(f"output {i} of forward is {r!r}, not a tensor")
        if not results:
            raise InputError("forward returns no tensors")
        return results

    @staticmethod
    def _ancestors(roots: list[Any]) -> set[Any]:
        seen: set[Any] = set()
        stack = list(roots)
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(n.all_input_nodes)
        return seen

    # -- inputs, weights, constants ------------------------------------------------------
    def _placeholders(self, needed: set[Any]) -> None:
        from torch.export.graph_signature import InputKind

        spec_of = {s.arg.name: s for s in self.ep.graph_signature.input_specs}
        nodes = [n for n in self.ep.graph.nodes if n.op == "placeholder"]
        users = [n for n in nodes if spec_of[n.name].kind == InputKind.USER_INPUT]
        for node, name in zip(users, self.arg_names):  # user inputs first: the runtime arguments
            t = self.g.new_input(tuple(node.meta["val"].shape), self.dtype, name)
            self.env[node.name] = _Val(t, tuple(node.meta["val"].shape))
        taken = set(self.arg_names)
        for node in nodes:
            s = spec_of[node.name]
            if s.kind == InputKind.USER_INPUT or node not in needed:
                continue
            if s.kind in (InputKind.PARAMETER, InputKind.BUFFER):
                value = self.ep.state_dict[s.target] if s.target in self.ep.state_dict else self.ep.constants[s.target]
            elif s.kind == InputKind.CONSTANT_TENSOR:
                value = self.ep.constants[s.target]
            else:
                raise InputError(f"unsupported graph input {node.name} ({s.kind.name})")
            self.env[node.name] = self._weight(node, s.target, value, s.kind == InputKind.CONSTANT_TENSOR, taken)

    def _weight(self, node: Any, target: str, value: Any, constant: bool, taken: set[str]) -> Value:
        value = value.detach()
        if not value.is_floating_point():
            raise InputError(f"{target} is a {value.dtype} tensor; the IR holds float tensors only")
        if constant and value.numel() == 1:
            return Fraction(value.item())  # a literal like torch.tensor(2.0): an exact scalar
        shape = tuple(value.shape)
        # NumPy has no bfloat16: such weights travel as float32 (exactly the same values).
        arr = value.float().numpy() if str(value.dtype) == "torch.bfloat16" else value.numpy()
        transposed = value.dim() == 2 and all(_transposes(u, node) for u in node.users)
        if transposed:
            arr = arr.T
        arr = np.ascontiguousarray(arr.reshape(arr.shape or (1,)))
        name = _unique(_sanitize(target) + ("_t" if transposed else ""), taken)
        self.weights[name] = arr
        return _Val(self.g.new_input(arr.shape, self.dtype, name), shape, pre_t=transposed)

    # -- ops -----------------------------------------------------------------------------
    def _call(self, node: Any) -> Value:
        op = _aten_name(node.target)
        label = str(node.target) if op is None else f"aten.{op}"
        handler = ATEN.get(op) if op else None
        if handler is None:
            raise InputError(f"{label} at {self._where(node)} is not supported by the mirage-py IR")
        try:
            out = handler(self, node)
        except (_Unsupported, GraphError) as e:
            raise InputError(f"{label} at {self._where(node)}: {e}") from None
        if isinstance(out, _Val):
            self._check_result(node, label, out)
        return out

    def _check_result(self, node: Any, label: str, out: _Val) -> None:
        val = node.meta.get("val")
        if val is not None and hasattr(val, "dtype") and not val.dtype.is_floating_point:
            raise InputError(
                f"{label} at {self._where(node)} makes a {val.dtype} tensor; the IR holds float tensors only"
            )
        assert compatible(out.dims, out.shape) or same_data(out.dims, out.shape), (label, out)

    def _where(self, node: Any) -> str:
        """The innermost frame in the user's file (else the innermost frame) of the node's
        stack trace, as file.py:LINE."""
        frames = re.findall(r'File "([^"]+)", line (\d+)', node.meta.get("stack_trace") or "")
        if not frames:
            return f"node {node.name}"
        mine = [f for f in frames if Path(f[0]).resolve() == self.path]
        file, line = (mine or frames)[-1]
        return f"{Path(file).name}:{line}"

    def _mark_output(self, node: Any, name: str) -> None:
        v = self.env.get(node.name)
        if not isinstance(v, _Val):
            raise InputError(f"output {name} is a constant, not a computed tensor")
        if v.pre_t or not same_data(v.dims, v.shape):
            raise InputError(
                f"output {name}: torch's shape {list(v.shape)} is a broadcast or relayout of the IR's "
                f"{list(v.dims)}, which the IR cannot materialize"
            )
        self.g.mark_output(v.t, name)

    # -- operand access ------------------------------------------------------------------
    def arg(self, node: Any, i: int, default: Any = None) -> Any:
        """Argument i (positional, else by schema name), with graph nodes replaced by values."""
        if i < len(node.args):
            a = node.args[i]
        else:
            schema = node.target._schema.arguments
            a = node.kwargs.get(schema[i].name, default) if i < len(schema) else default
        return self._value(a)

    def kwarg(self, node: Any, name: str, default: Any = None) -> Any:
        for i, a in enumerate(node.target._schema.arguments):
            if a.name == name:
                return self.arg(node, i, default)
        return default

    def _value(self, a: Any) -> Any:
        if hasattr(a, "op") and hasattr(a, "name"):
            return self.env[a.name]
        if isinstance(a, (list, tuple)):
            return type(a)(self._value(x) for x in a)
        return a

    def out_shape(self, node: Any) -> tuple[int, ...]:
        return tuple(int(d) for d in node.meta["val"].shape)


def _sanitize(name: str) -> str:
    s = re.sub(r"\W", "_", name)
    return s if s and not s[0].isdigit() else f"p_{s}"


def _unique(name: str, taken: set[str]) -> str:
    out, k = name, 2
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    taken.add(out)
    return out


def _transposes(user: Any, weight: Any) -> bool:
    """Does `user` consume the 2-D `weight` only through a transpose of its two dims?"""
    op = _aten_name(user.target)
    args = user.args
    if op == "linear.default":
        return args[1] is weight and args[0] is not weight and (len(args) < 3 or args[2] is not weight)
    if op == "t.default":
        return True
    if op == "transpose.int":
        return {args[1] % 2, args[2] % 2} == {0, 1}
    if op == "permute.default":
        return [d % 2 for d in args[1]] == [1, 0]
    return False


# ---------------------------------------------------------------------------------------
# Handlers, one per aten op (the table ATEN at the end). Each returns a Value.


def _scalar(x: Any) -> Fraction:
    if isinstance(x, Fraction):
        return x
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise _Unsupported(f"expected a number, got {x!r}")
    if isinstance(x, float) and not np.isfinite(x):
        raise _Unsupported(f"the constant {x} is not a finite number")
    return Fraction(x)


def _tensor(x: Any) -> _Val:
    if not isinstance(x, _Val):
        raise _Unsupported(f"expected a tensor operand, got the constant {x}")
    # _weight stores a weight transposed only when every consumer transposes it.
    assert not x.pre_t, "a weight stored transposed reached a non-transposing op"
    if not compatible(x.dims, x.shape):
        raise _Unsupported(
            f"an operand is torch shape {list(x.shape)} held as IR dims {list(x.dims)} "
            "(a squeeze or view of a reduced dim), which the IR cannot broadcast like torch"
        )
    return x


def _exact(x: Any, what: str) -> _Val:
    x = _tensor(x)
    if not exact(x.dims, x.shape):
        raise _Unsupported(f"{what} is torch shape {list(x.shape)} broadcast from IR dims {list(x.dims)} (an expand)")
    return x


def _ir_dim(x: _Val, d: int) -> int | None:
    """The IR dim under torch dim d of a compatible value (None: a leading torch dim the IR
    tensor does not have)."""
    d %= max(len(x.shape), 1)
    k = d - (len(x.shape) - len(x.dims))
    return k if k >= 0 else None


def _unary(ir_op: str) -> Callable[[_Converter, Any], Value]:
    def handler(c: _Converter, node: Any) -> Value:
        x = _tensor(c.arg(node, 0))
        return _Val(c.g.add_op(ir_op, [x.t]), c.out_shape(node))

    return handler


def _rsqrt(c: _Converter, node: Any) -> Value:
    x = _tensor(c.arg(node, 0))
    return _Val(c.g.reciprocal(c.g.sqrt(x.t)), c.out_shape(node))


def _gelu(c: _Converter, node: Any) -> Value:
    x = _tensor(c.arg(node, 0))
    return _Val(c.g.gelu(x.t, c.kwarg(node, "approximate", "none")), c.out_shape(node))


def _pow(c: _Converter, node: Any) -> Value:
    x, e = _tensor(c.arg(node, 0)), c.arg(node, 1)
    if isinstance(e, _Val):
        raise _Unsupported("the exponent must be a constant")
    e = _scalar(e)
    if e == 1:
        return _Val(x.t, c.out_shape(node))
    if e == 2:
        t = c.g.square(x.t)
    elif e == Fraction(1, 2):
        t = c.g.sqrt(x.t)
    else:
        t = c.g.pow_scalar(x.t, e)
    return _Val(t, c.out_shape(node))


def _mul_scalar(c: _Converter, t: Tensor, k: Fraction) -> Tensor:
    return t if k == 1 else c.g.mul_scalar(t, k)


def _add_scalar(c: _Converter, t: Tensor, k: Fraction) -> Tensor:
    return t if k == 0 else c.g.add_scalar(t, k)


def _arith(kind: str, reverse: bool = False) -> Callable[[_Converter, Any], Value]:
    """add/sub/mul/div with tensors or scalars on either side (`reverse`: rsub, b - a)."""

    def handler(c: _Converter, node: Any) -> Value:
        a, b = c.arg(node, 0), c.arg(node, 1)
        alpha = _scalar(c.kwarg(node, "alpha", 1)) if kind in ("add", "sub") else Fraction(1)
        if alpha != 1:
            b = _scaled(c, b, alpha) if isinstance(b, _Val) else _scalar(b) * alpha
        if reverse:
            a, b = b, a
        if not isinstance(a, _Val) and not isinstance(b, _Val):
            return _fold(kind, _scalar(a), _scalar(b))
        shape = c.out_shape(node)
        if isinstance(a, _Val) and isinstance(b, _Val):
            return _Val(c.g.add_op(kind, [_tensor(a).t, _tensor(b).t]), shape)
        if isinstance(a, _Val):
            x, k = _tensor(a).t, _scalar(b)
            if kind == "div" and k == 0:
                raise _Unsupported("division by the constant 0")
            ops = {
                "add": lambda: _add_scalar(c, x, k),
                "sub": lambda: _add_scalar(c, x, -k),
                "mul": lambda: _mul_scalar(c, x, k),
                "div": lambda: _mul_scalar(c, x, 1 / k),
            }
            return _Val(ops[kind](), shape)
        k, x = _scalar(a), _tensor(b).t
        ops = {
            "add": lambda: _add_scalar(c, x, k),
            "sub": lambda: _add_scalar(c, c.g.neg(x), k),
            "mul": lambda: _mul_scalar(c, x, k),
            "div": lambda: _mul_scalar(c, c.g.reciprocal(x), k),
        }
        return _Val(ops[kind](), shape)

    return handler


def _scaled(c: _Converter, v: _Val, k: Fraction) -> _Val:
    return _Val(_mul_scalar(c, _tensor(v).t, k), v.shape)


def _fold(kind: str, a: Fraction, b: Fraction) -> Fraction:
    if kind == "div":
        if b == 0:
            raise _Unsupported("division by the constant 0")
        return a / b
    return {"add": a + b, "sub": a - b, "mul": a * b}[kind]


def _reduce(mean: bool) -> Callable[[_Converter, Any], Value]:
    """sum/mean over dims: reduce_sum per IR dim; a dim torch broadcasts (IR size 1) sums n
    equal values, a factor n; mean divides by the count exactly."""

    def handler(c: _Converter, node: Any) -> Value:
        x = _tensor(c.arg(node, 0))
        dims = c.arg(node, 1) if node.target._overloadname != "default" else None
        rank = len(x.shape)
        if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
            dims = list(range(rank))
        elif isinstance(dims, int):
            dims = [dims]
        t, factor, count = x.t, Fraction(1), 1
        for d in sorted({int(d) % max(rank, 1) for d in dims}):
            n, k = x.shape[d], _ir_dim(x, d)
            count *= n
            if k is None or t.dims[k] == 1:
                factor *= n  # broadcast (or size-1) dim: n copies of the same value
            else:
                t = c.g.reduce_sum(t, k)
        if mean:
            factor /= count
        return _Val(_mul_scalar(c, t, factor), c.out_shape(node))

    return handler


def _softmax(c: _Converter, node: Any) -> Value:
    """softmax as exp / sum / div (DESIGN.md: no running max in the IR)."""
    x = _tensor(c.arg(node, 0))
    d = int(c.arg(node, 1))
    k = _ir_dim(x, d)
    if k is None or x.dims[k] != x.shape[d % len(x.shape)]:
        raise _Unsupported("softmax over a broadcast dim")
    e = c.g.exp(x.t)
    return _Val(c.g.div(e, c.g.reduce_sum(e, k)), c.out_shape(node))


def _matmul(c: _Converter, node: Any) -> Value:
    a, b = _exact(c.arg(node, 0), "the left operand"), _exact(c.arg(node, 1), "the right operand")
    return _Val(c.g.matmul(a.t, b.t), c.out_shape(node))


def _weight_t(c: _Converter, w: Any) -> Tensor:
    """W.T for linear: the stored transposed weight, or a transpose op."""
    if isinstance(w, _Val) and w.pre_t:
        return w.t
    w = _exact(w, "the weight")
    return c.g.transpose(w.t)


def _linear(c: _Converter, node: Any) -> Value:
    x, w, bias = _exact(c.arg(node, 0), "the input"), c.arg(node, 1), c.arg(node, 2)
    y = c.g.matmul(x.t, _weight_t(c, w))
    if bias is not None:
        y = c.g.add(y, _tensor(bias).t)
    return _Val(y, c.out_shape(node))


def _addmm(c: _Converter, node: Any) -> Value:
    bias = _tensor(c.arg(node, 0))
    a, b = _exact(c.arg(node, 1), "mat1"), _exact(c.arg(node, 2), "mat2")
    beta, alpha = _scalar(c.kwarg(node, "beta", 1)), _scalar(c.kwarg(node, "alpha", 1))
    y = _mul_scalar(c, c.g.matmul(a.t, b.t), alpha)
    if beta != 0:
        y = c.g.add(y, _mul_scalar(c, bias.t, beta))
    return _Val(y, c.out_shape(node))


def _permute_handler(perm_of: Callable[[_Converter, Any, int], list[int]]) -> Callable[[_Converter, Any], Value]:
    def handler(c: _Converter, node: Any) -> Value:
        x = c.arg(node, 0)
        if not isinstance(x, _Val):
            raise _Unsupported("expected a tensor operand")
        return _permute(c, x, perm_of(c, node, len(x.shape)), c.out_shape(node))

    return handler


def _permute(c: _Converter, x: _Val, perm: list[int], out: tuple[int, ...]) -> Value:
    """A permutation that keeps the order of the non-1 dims is a relabel; one that swaps the
    last two dims (both non-1) is the IR's transpose; any other moves data the IR cannot."""
    if x.pre_t:  # the weight is stored transposed already (see _weight)
        return _Val(x.t, out)
    n = len(x.shape)
    keep = [i for i in range(n) if x.shape[i] != 1]
    order = [p for p in perm if x.shape[p] != 1]
    if order == keep and same_data(x.dims, x.shape):
        return _Val(x.t, out)
    swapped = keep[:-2] + keep[-2:][::-1]
    if len(keep) >= 2 and order == swapped and keep[-2:] == [n - 2, n - 1]:
        x = _exact(x, "the transposed operand")
        return _Val(c.g.transpose(x.t), out)
    raise _Unsupported(f"permutation {perm} of shape {list(x.shape)} moves data; the IR only swaps the last two dims")


def _transpose_perm(c: _Converter, node: Any, n: int) -> list[int]:
    perm = list(range(n))
    a, b = int(node.args[1]) % n, int(node.args[2]) % n
    perm[a], perm[b] = perm[b], perm[a]
    return perm


def _t_perm(c: _Converter, node: Any, n: int) -> list[int]:
    return list(range(n))[::-1]


def _perm_arg(c: _Converter, node: Any, n: int) -> list[int]:
    return [int(d) % n for d in node.args[1]]


def _relabel(c: _Converter, node: Any) -> Value:
    """view/reshape/squeeze/unsqueeze/flatten/expand: fine when only size-1 dims change (or,
    for expand, when it is a broadcast that elementwise consumers perform)."""
    x = c.arg(node, 0)
    if not isinstance(x, _Val):
        return x
    out = c.out_shape(node)
    if not x.pre_t and same_data(x.dims, x.shape) and _nonones(out) == _nonones(x.shape):
        return _Val(x.t, out)
    if node.target._overloadpacket.__name__ == "expand" and not x.pre_t and compatible(x.dims, out):
        return _Val(x.t, out)
    raise _Unsupported(
        f"reshape {list(x.shape)} -> {list(out)} moves data; the IR has no reshape and only relabels size-1 dims"
    )


def _cat(c: _Converter, node: Any) -> Value:
    xs = [_exact(x, "a concatenated tensor") for x in c.arg(node, 0)]
    d = int(c.arg(node, 1, 0))
    ks = {_ir_dim(x, d) for x in xs}
    if len(ks) != 1 or None in ks or len({len(x.dims) for x in xs}) != 1:
        raise _Unsupported("the tensors' IR dims do not line up along the concat dim")
    (k,) = ks
    assert k is not None
    t = xs[0].t
    for x in xs[1:]:
        t = c.g.concat(t, x.t, k)
    return _Val(t, c.out_shape(node))


def _identity(c: _Converter, node: Any) -> Value:
    return c.arg(node, 0)


def _dropout(c: _Converter, node: Any) -> Value:
    if c.arg(node, 2):
        raise _Unsupported("dropout in training mode is random; call it with training=False (module.eval())")
    return c.arg(node, 0)


def _convert(c: _Converter, node: Any) -> Value:
    """A cast: float to float is an identity (one dtype per graph, see the docstring)."""
    dtype = c.kwarg(node, "dtype")
    if dtype is not None and not getattr(dtype, "is_floating_point", False):
        raise _Unsupported(f"a cast to {dtype}; the IR holds float tensors only")
    return c.arg(node, 0)


def _scalar_tensor(c: _Converter, node: Any) -> Value:
    return _scalar(c.arg(node, 0))


ATEN: dict[str, Callable[[_Converter, Any], Value]] = {
    **{
        f"{op}.default": _unary(ir)
        for op, ir in [
            ("exp", "exp"),
            ("sigmoid", "sigmoid"),
            ("silu", "silu"),
            ("relu", "relu"),
            ("neg", "neg"),
            ("reciprocal", "reciprocal"),
            ("sqrt", "sqrt"),
        ]
    },
    "rsqrt.default": _rsqrt,
    "gelu.default": _gelu,
    "pow.Tensor_Scalar": _pow,
    "pow.Tensor_Tensor": _pow,
    **{f"{op}.{ov}": _arith(op) for op in ("add", "sub", "mul", "div") for ov in ("Tensor", "Scalar")},
    "rsub.Scalar": _arith("sub", reverse=True),
    "rsub.Tensor": _arith("sub", reverse=True),
    "sum.dim_IntList": _reduce(mean=False),
    "sum.default": _reduce(mean=False),
    "mean.dim": _reduce(mean=True),
    "mean.default": _reduce(mean=True),
    "softmax.int": _softmax,
    "_softmax.default": _softmax,
    "matmul.default": _matmul,
    "mm.default": _matmul,
    "bmm.default": _matmul,
    "linear.default": _linear,
    "addmm.default": _addmm,
    "t.default": _permute_handler(_t_perm),
    "transpose.int": _permute_handler(_transpose_perm),
    "permute.default": _permute_handler(_perm_arg),
    **{
        name: _relabel
        for name in (
            "view.default",
            "reshape.default",
            "_unsafe_view.default",
            "unsqueeze.default",
            "squeeze.default",
            "squeeze.dim",
            "squeeze.dims",
            "expand.default",
            "flatten.using_ints",
        )
    },
    "cat.default": _cat,
    **{
        name: _identity
        for name in (
            "clone.default",
            "detach.default",
            "alias.default",
            "lift_fresh_copy.default",
            "contiguous.default",
        )
    },
    "dropout.default": _dropout,
    "_to_copy.default": _convert,
    "to.dtype": _convert,
    "to.dtype_layout": _convert,
    "scalar_tensor.default": _scalar_tensor,
}
