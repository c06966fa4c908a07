"""Canonical form and stable hash.

Two graphs that compute the same tensors with the same ops hash the same, whatever order
their ops were built in: every tensor gets a structural (Merkle) key from its op, its
attributes and its inputs' keys; the canonical graph lists the live ops in topological
order with ties broken by key, merges ops with equal keys, and applies the normal forms
DESIGN.md fixes (an F = 1 block graph has no accumulators and no for-loop dims; grid dims of
size 1 map nothing). `block_dims` is a codegen choice and does not enter the hash.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from fractions import Fraction
from typing import Any

from .graph import BlockGraph, Graph, KernelGraph, Node, TensorType
from .serialize import block_to_dict, to_dict


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _attr_key(v: Any) -> Any:
    if isinstance(v, Fraction):
        return f"{v.numerator}/{v.denominator}"
    if isinstance(v, BlockGraph):
        return block_hash(v)
    return v


def _simplified_nodes(g: Graph) -> tuple[list[Node], dict[int, int]]:
    """Nodes after the F = 1 normal form, and an alias map for removed identities."""
    alias: dict[int, int] = {}
    nodes: list[Node] = []
    f1 = isinstance(g, BlockGraph) and g.forloop_range == 1
    for n in g.nodes:
        ins = tuple(alias.get(i, i) for i in n.inputs)
        if f1 and n.op == "accum_sum":
            alias[n.outputs[0]] = ins[0]
        elif f1 and n.op == "accum_sum_lastdim":
            rank = len(g.types[ins[0]].dims)
            nodes.append(Node("reduce_sum", ins, {"dim": rank - 1, "size": 1}, n.outputs))
        else:
            nodes.append(Node(n.op, ins, n.attrs, n.outputs))
    return nodes, alias


def _keys(g: Graph, nodes: list[Node]) -> dict[int, str]:
    keys = {tid: f"in{k}" for k, tid in enumerate(g.inputs)}
    for n in nodes:
        h = _digest([n.op, {k: _attr_key(v) for k, v in n.attrs.items()}, [keys[i] for i in n.inputs]])[:32]
        for j, o in enumerate(n.outputs):
            keys[o] = f"{h}.{j}"
    return keys


def _ordered_live(g: Graph, nodes: list[Node], outputs: list[int], keys: dict[int, str]) -> list[Node]:
    """Live nodes, one per key, in topological order with ties broken by key."""
    by_key: dict[str, Node] = {}
    prod: dict[int, Node] = {}
    for n in nodes:
        by_key.setdefault(keys[n.outputs[0]], n)
        for o in n.outputs:
            prod[o] = by_key[keys[n.outputs[0]]]
    live: dict[str, Node] = {}
    stack = [prod[o] for o in outputs if o in prod]
    while stack:
        n = stack.pop()
        k = keys[n.outputs[0]]
        if k not in live:
            live[k] = n
            stack.extend(prod[i] for i in n.inputs if i in prod)
    waiting = {k: {keys[i] for i in n.inputs if i in prod} for k, n in live.items()}
    # A set per producer: a consumer of two outputs of one multi-output node (flash
    # decoding's combine reads O_part and L_part) must be released once, not once per edge.
    users: dict[str, set[str]] = {}
    for k, deps in waiting.items():
        for d in deps:
            users.setdefault(d.split(".")[0] + ".0", set()).add(k)
    ready = [k for k, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    order: list[Node] = []
    while ready:
        k = heapq.heappop(ready)
        order.append(live[k])
        for u in sorted(users.get(k, ())):
            waiting[u] = {d for d in waiting[u] if d.split(".")[0] + ".0" != k}
            if not waiting[u]:
                heapq.heappush(ready, u)
    return order


def _rebuild(src: Graph, dst: Graph, order: list[Node], keys: dict[int, str]) -> dict[str, int]:
    new = {keys[old]: new for old, new in zip(src.inputs, dst.inputs)}
    for n in order:
        ins = [new[keys[i]] for i in n.inputs]
        if n.op == "customized":
            assert isinstance(dst, KernelGraph)
            made = dst.customized(ins, canonical_block(n.attrs["block_graph"]))
        else:
            made = [dst.add_op(n.op, ins, **n.attrs)]
        for o, m in zip(n.outputs, made):
            new[keys[o]] = m.id
    return new


def canonical_block(bg: BlockGraph) -> BlockGraph:
    out = BlockGraph(bg.grid_dims, bg.forloop_range, bg.block_dims)
    for bi in bg.block_inputs:
        imap = tuple(d if bg.grid_dims[g] > 1 else -1 for g, d in enumerate(bi.imap))
        fdim = bi.forloop_dim if bg.forloop_range > 1 else -1
        out.new_input(TensorType(bi.dims, bi.dtype), imap, fdim)
    nodes, alias = _simplified_nodes(bg)
    outs = [alias.get(o.tensor, o.tensor) for o in bg.block_outputs]
    keys = _keys(bg, nodes)
    new = _rebuild(bg, out, _ordered_live(bg, nodes, outs, keys), keys)
    for o, bo in zip(outs, bg.block_outputs):
        omap = tuple(d if bg.grid_dims[g] > 1 else -1 for g, d in enumerate(bo.omap))
        out.new_output(new[keys[o]], omap)
    return out


def canonical(kg: KernelGraph) -> KernelGraph:
    out = KernelGraph()
    for tid, name in zip(kg.inputs, kg.input_names):
        t = kg.types[tid]
        out.new_input(t.dims, t.dtype, name)
    nodes, alias = _simplified_nodes(kg)
    keys = _keys(kg, nodes)
    new = _rebuild(kg, out, _ordered_live(kg, nodes, [alias.get(o, o) for o in kg.outputs], keys), keys)
    for o, name in zip(kg.outputs, kg.output_names):
        out.mark_output(new[keys[alias.get(o, o)]], name)
    return out


def block_hash(bg: BlockGraph) -> str:
    c = canonical_block(bg)
    return _digest(block_to_dict(c, block_dims=False))


def graph_hash(kg: KernelGraph) -> str:
    """Stable hash over everything that affects results (block_dims excluded)."""
    return _digest(to_dict(canonical(kg), block_dims=False))
