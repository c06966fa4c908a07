"""The JSON form of graphs, schema v1 (documented in docs/schema.md).

Ops, dtypes and attributes are written by *name*; rationals as exact "p/q" strings.
Loading rebuilds the graph through the DSL, so every validation rule applies to files too.
"""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

from .errors import GraphError, SchemaError
from .graph import BlockGraph, Graph, KernelGraph, TensorType

SCHEMA = "mirage-py.graph.v1"


def _attr_to_json(v: Any, block_dims: bool) -> Any:
    if isinstance(v, Fraction):
        return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"
    if isinstance(v, BlockGraph):
        return block_to_dict(v, block_dims)
    return v


def _ops_to_json(g: Graph, block_dims: bool) -> list[dict[str, Any]]:
    return [
        {
            "op": n.op,
            "inputs": list(n.inputs),
            "outputs": list(n.outputs),
            **({"attrs": {k: _attr_to_json(v, block_dims) for k, v in n.attrs.items()}} if n.attrs else {}),
        }
        for n in g.nodes
    ]


def block_to_dict(bg: BlockGraph, block_dims: bool = True) -> dict[str, Any]:
    d: dict[str, Any] = {"grid_dims": list(bg.grid_dims), "forloop_range": bg.forloop_range}
    if block_dims:
        d["block_dims"] = list(bg.block_dims)
    d["inputs"] = [
        {"id": tid, "imap": list(bi.imap), "forloop_dim": bi.forloop_dim} for tid, bi in zip(bg.inputs, bg.block_inputs)
    ]
    d["ops"] = _ops_to_json(bg, block_dims)
    d["outputs"] = [{"tensor": o.tensor, "omap": list(o.omap)} for o in bg.block_outputs]
    return d


def to_dict(kg: KernelGraph, block_dims: bool = True) -> dict[str, Any]:
    """`block_dims=False` drops what does not affect results (used for hashing)."""
    return {
        "schema": SCHEMA,
        "inputs": [
            {"id": tid, "name": name, "dims": list(kg.types[tid].dims), "dtype": kg.types[tid].dtype}
            for tid, name in zip(kg.inputs, kg.input_names)
        ],
        "ops": _ops_to_json(kg, block_dims),
        "outputs": [{"name": name, "tensor": tid} for tid, name in zip(kg.outputs, kg.output_names)],
    }


def dumps(kg: KernelGraph) -> str:
    """Indented JSON with short lists of numbers kept on one line, for reading and diffing."""
    text = json.dumps(to_dict(kg), indent=1)
    # Match JSON strings first and keep them as they are: a name such as "a[1,  2]" must not
    # be rewritten (the list pattern alone also matched inside strings).
    return re.sub(
        r'"(?:[^"\\]|\\.)*"|\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]',
        lambda m: m.group(0) if m.group(1) is None else "[" + re.sub(r"\s+", " ", m.group(1)) + "]",
        text,
    )


def save(kg: KernelGraph, path: str | Path) -> None:
    Path(path).write_text(dumps(kg) + "\n")


# ---------------------------------------------------------------------------------------
# Loading


def _field(d: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(d, dict):
        raise SchemaError(f"{where}: expected an object, got {type(d).__name__}")
    if key not in d:
        raise SchemaError(f"{where}: missing field {key!r}")
    v = d[key]
    if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
        raise SchemaError(f"{where}: field {key!r} has the wrong type ({type(v).__name__})")
    return v


def _int_list(d: Any, key: str, where: str) -> list[int]:
    v = _field(d, key, list, where)
    if any(not isinstance(x, int) or isinstance(x, bool) for x in v):
        raise SchemaError(f"{where}: field {key!r} must be a list of integers")
    return v


def _lookup(ids: dict[int, int], tid: int, where: str) -> int:
    if tid not in ids:
        raise SchemaError(f"{where}: tensor {tid} is used before it is defined")
    return ids[tid]


def _define(ids: dict[int, int], tid: int, new: int, where: str) -> None:
    if tid in ids:
        raise SchemaError(f"{where}: tensor id {tid} is defined twice")
    ids[tid] = new


def _load_ops(g: Graph, ops: Any, ids: dict[int, int], where: str) -> None:
    if not isinstance(ops, list):
        raise SchemaError(f"{where}: 'ops' must be a list")
    for k, od in enumerate(ops):
        w = f"{where}.ops[{k}]"
        name = _field(od, "op", str, w)
        ins = [_lookup(ids, t, w) for t in _int_list(od, "inputs", w)]
        outs = _int_list(od, "outputs", w)
        attrs = dict(od.get("attrs", {})) if isinstance(od.get("attrs", {}), dict) else None
        if attrs is None:
            raise SchemaError(f"{w}: 'attrs' must be an object")
        _check_attr_values(attrs, w)
        try:
            if name == "customized" and isinstance(g, KernelGraph):
                # Only block_graph is passed on below: report any other attribute, as the
                # op table does for every other op, instead of dropping it silently.
                extra = sorted(set(attrs) - {"block_graph"})
                if extra:
                    raise GraphError("attr-unknown", f"customized: unknown attribute(s) {extra}")
                bg = block_from_dict(
                    _field(attrs, "block_graph", dict, w), [g.types[i] for i in ins], f"{w}.block_graph"
                )
                made = g.customized(ins, bg)
            else:
                # Not add_op(name, ins, **attrs): an attribute called "name" or "inputs" would
                # collide with add_op's own parameters (a TypeError, not a clear error).
                made = g._add(name, ins, attrs)
        except GraphError as e:
            raise GraphError(e.rule, f"{w}: {e.args[0]}") from None
        if len(outs) != len(made):
            raise SchemaError(f"{w}: lists {len(outs)} outputs, the op makes {len(made)}")
        for t, m in zip(outs, made):
            _define(ids, t, m.id, w)


# A decimal exponent beyond this makes Fraction("1e999999999") build a billion-digit integer
# (a hang); no meaningful attribute needs one. Python caps integer literals at 4300 digits.
_MAX_EXPONENT = 4300
_EXPONENT = re.compile(r"[eE]\s*[+-]?([\d_]+)")


def _check_attr_values(attrs: dict[str, Any], where: str) -> None:
    for k, v in attrs.items():
        if isinstance(v, str):
            for m in _EXPONENT.finditer(v):
                digits = m.group(1).replace("_", "").lstrip("0")
                if len(digits) > 6 or int(digits or "0") > _MAX_EXPONENT:
                    raise SchemaError(f"{where}: attribute {k!r}: exponent out of range in {v[:40]!r}")


def block_from_dict(d: Any, in_types: list[TensorType], where: str = "block_graph") -> BlockGraph:
    grid = _int_list(d, "grid_dims", where)
    # block_dims is optional, but when present it must be integers like every other list
    # (it was stored unchecked, so "block_dims": "abc" loaded as ('a', 'b', 'c')).
    block_dims = _int_list(d, "block_dims", where) if "block_dims" in d else (128, 1, 1)
    bg = BlockGraph(grid, _field(d, "forloop_range", int, where), block_dims)
    inputs = _field(d, "inputs", list, where)
    if len(inputs) != len(in_types):
        raise SchemaError(f"{where}: {len(inputs)} block inputs for {len(in_types)} kernel inputs")
    ids: dict[int, int] = {}
    for k, (bi, t) in enumerate(zip(inputs, in_types)):
        w = f"{where}.inputs[{k}]"
        made = bg.new_input(t, _int_list(bi, "imap", w), _field(bi, "forloop_dim", int, w))
        _define(ids, _field(bi, "id", int, w), made.id, w)
    _load_ops(bg, _field(d, "ops", list, where), ids, where)
    for k, od in enumerate(_field(d, "outputs", list, where)):
        w = f"{where}.outputs[{k}]"
        bg.new_output(_lookup(ids, _field(od, "tensor", int, w), w), _int_list(od, "omap", w))
    return bg


def from_dict(d: Any) -> KernelGraph:
    if not isinstance(d, dict):
        raise SchemaError("a graph file holds one JSON object")
    schema = d.get("schema")
    if schema != SCHEMA:
        raise SchemaError(f"unknown schema {schema!r} (this version reads {SCHEMA!r})")
    kg = KernelGraph()
    ids: dict[int, int] = {}
    for k, inp in enumerate(_field(d, "inputs", list, "graph")):
        w = f"inputs[{k}]"
        made = kg.new_input(_int_list(inp, "dims", w), _field(inp, "dtype", str, w), _field(inp, "name", str, w))
        _define(ids, _field(inp, "id", int, w), made.id, w)
    _load_ops(kg, _field(d, "ops", list, "graph"), ids, "graph")
    for k, od in enumerate(_field(d, "outputs", list, "graph")):
        w = f"outputs[{k}]"
        kg.mark_output(_lookup(ids, _field(od, "tensor", int, w), w), _field(od, "name", str, w))
    kg.validate()
    return kg


def loads(text: str) -> KernelGraph:
    try:
        d = json.loads(text)
    except ValueError as e:  # JSONDecodeError, or an integer literal past Python's digit limit
        raise SchemaError(f"not valid JSON: {e}") from None
    except RecursionError:
        raise SchemaError("not valid JSON: nested too deeply") from None
    return from_dict(d)


def load(path: str | Path) -> KernelGraph:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise SchemaError(f"no such file: {p}") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as e:
        raise SchemaError(f"cannot read {p}: {e}") from None
    try:
        return loads(text)
    except (SchemaError, GraphError) as e:
        raise type(e)(*((e.rule, f"{p}: {e.args[0]}") if isinstance(e, GraphError) else (f"{p}: {e}",))) from None
