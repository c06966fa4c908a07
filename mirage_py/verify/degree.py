"""The degree interpreter: the same `ff` rules over a field whose values are degrees.

It bounds, per output, the total degree of the polynomial a graph computes in its inputs and
its *atoms*: every exp result, every keyed (opaque) function result and every inverse b⁻¹ is
one fresh variable of degree 1 (docs/verification.md, "The bound"). Sums and layout changes
keep the degree, products add it. It also counts the atom-making op applications per graph
(op nodes, not elements), for the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..ir.execute import walk
from ..ir.graph import BlockGraph, Graph, KernelGraph, Node
from ..ir.ops import get_op, numpy_attrs


class DegreeOps:
    def __init__(self) -> None:
        self.exps = 0
        self.opaques = 0
        self.inverses = 0

    def const(self, c: Fraction) -> int:
        return 0

    def add(self, a: int, b: int) -> int:
        return max(a, b)

    sub = add

    def mul(self, a: int, b: int) -> int:
        return a + b

    matmul = mul

    def div(self, a: int, b: int) -> int:
        self.inverses += 1
        return a + 1

    def neg(self, a: int) -> int:
        return a

    def exp(self, a: int) -> int:
        self.exps += 1
        return 1

    def opaque(self, name: str, a: int, **attrs: Any) -> int:
        self.opaques += 1
        return 1

    def reduce_sum(self, a: int, dim: int, size: int) -> int:
        return a

    def accum(self, a: int, lastdim: bool) -> int:
        return a

    def transpose(self, a: int) -> int:
        return a

    def concat(self, a: int, b: int, dim: int) -> int:
        return max(a, b)

    def last_dim(self, a: int) -> int:
        return 1  # only used to build the constant 1/n, whose degree is 0 whatever n is


@dataclass
class DegreeReport:
    degrees: list[int]  # per output
    exps: int = 0
    opaques: int = 0
    inverses: int = 0

    @property
    def degree(self) -> int:
        return max(self.degrees, default=0)


def degrees(kg: KernelGraph) -> DegreeReport:
    F = DegreeOps()

    def run(g: Graph, ins: list[int]) -> list[int]:
        def rule(node: Node, args: list[int]) -> list[int]:
            if node.op == "customized":
                bg: BlockGraph = node.attrs["block_graph"]
                return run(bg, args)
            op = get_op(node.op)
            assert op.ff is not None
            rank = max(len(g.types[i].dims) for i in node.inputs)
            return [op.ff(F, *args, **numpy_attrs(op, node.attrs, rank))]

        return walk(g, ins, rule)

    outs = run(kg, [1] * len(kg.inputs))
    return DegreeReport(outs, F.exps, F.opaques, F.inverses)
