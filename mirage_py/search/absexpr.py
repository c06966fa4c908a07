"""Abstract expressions for pruning the search.

Every tensor of a graph gets a term (mirage_py/ir/expr_rules.py). A candidate op is kept
only if its term is a subexpression of the spec's output terms under the axioms below.
The axioms are data, read by two deciders:

* `EgglogOracle` (primary): the spec's terms go into an e-graph, saturated once with the
  axioms (and reduction-splitting rules for the factors of every reduction size present);
  a candidate is a subexpression iff the e-graph already contains it. One lookup is a
  `check` of the term: it never inserts it.
* `Z3Reference`: the same axioms as quantified formulas over an uninterpreted sort plus a
  subexpression relation; confirms by refuting "not a subexpression". Slow, used to
  cross-check the oracle in tests. `unknown` (timeout) keeps the candidate.

The abstraction only has to be *sound for pruning*: it may call too much a
subexpression (less pruning), never too little.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..ir.execute import walk
from ..ir.expr_rules import RULES, Term
from ..ir.graph import BlockGraph, Graph, KernelGraph, Node

# ---------------------------------------------------------------------------------------
# Terms of a graph


def graph_terms(kg: KernelGraph) -> dict[int, Term]:
    """Term of every kernel tensor (ids of `kg`)."""
    env: dict[int, Term] = {tid: ("var", name) for tid, name in zip(kg.inputs, kg.input_names)}
    for node in kg.nodes:
        args = [env[i] for i in node.inputs]
        env.update(zip(node.outputs, node_terms(kg, node, args)))
    return env


def node_terms(g: Graph, node: Node, args: list[Term], forloop_range: int = 1) -> list[Term]:
    if node.op == "customized":
        bg: BlockGraph = node.attrs["block_graph"]
        return block_terms(bg, args)
    dims = [g.types[i].dims for i in node.inputs]
    return [RULES[node.op](args, dims, node.attrs, forloop_range)]


def block_terms(bg: BlockGraph, args: Sequence[Term]) -> list[Term]:
    """Output terms of a block graph whose inputs hold the kernel terms `args`."""
    return walk(bg, list(args), lambda n, a: node_terms(bg, n, a, bg.forloop_range))


def spec_terms(kg: KernelGraph) -> list[Term]:
    """What a candidate's terms may be subexpressions of: the outputs', then every other
    tensor's. The others are subterms of the outputs' except where a transpose hid them
    (rms_norm(K) is in q @ rms_norm(K)ᵀ only transposed, expr_rules.transpose), and an
    expert that normalizes a K tile before transposing it needs that term."""
    env = graph_terms(kg)
    outs = [env[o] for o in kg.outputs]
    return outs + [t for t in dict.fromkeys(env[i] for n in kg.nodes for i in n.outputs) if t not in outs]


# ---------------------------------------------------------------------------------------
# Axioms as data. Patterns are terms whose leaves "?x" are pattern variables: "?n"/"?m"
# are reduction sizes (integers), "?s" a constant's value (a string), others terms. Each axiom is an equality used in both directions.


@dataclass(frozen=True)
class Axiom:
    name: str
    lhs: Term
    rhs: Term


AXIOMS: tuple[Axiom, ...] = (
    Axiom("add-comm", ("add", "?a", "?b"), ("add", "?b", "?a")),
    Axiom("mul-comm", ("mul", "?a", "?b"), ("mul", "?b", "?a")),
    Axiom("add-assoc", ("add", ("add", "?a", "?b"), "?c"), ("add", "?a", ("add", "?b", "?c"))),
    Axiom("mul-assoc", ("mul", ("mul", "?a", "?b"), "?c"), ("mul", "?a", ("mul", "?b", "?c"))),
    Axiom("distribute", ("add", ("mul", "?a", "?c"), ("mul", "?b", "?c")), ("mul", ("add", "?a", "?b"), "?c")),
    Axiom("div-over-add", ("add", ("div", "?a", "?c"), ("div", "?b", "?c")), ("div", ("add", "?a", "?b"), "?c")),
    Axiom("mul-div", ("mul", "?a", ("div", "?b", "?c")), ("div", ("mul", "?a", "?b"), "?c")),
    Axiom("red-merge", ("red", "?n", ("red", "?m", "?a")), ("red", "?n*?m", "?a")),
    Axiom("red-add", ("red", "?n", ("add", "?a", "?b")), ("add", ("red", "?n", "?a"), ("red", "?n", "?b"))),
    # The divisor does not depend on the reduced index in the programs we see (softmax's
    # sum, an RMS); abstractly that cannot be told, so this over-approximates (sound).
    Axiom("red-div", ("red", "?n", ("div", "?a", "?b")), ("div", ("red", "?n", "?a"), "?b")),
    Axiom(
        "red-mul-const", ("red", "?n", ("mul", "?a", ("const", "?s"))), ("mul", ("red", "?n", "?a"), ("const", "?s"))
    ),
    # A matmul's product (bmul) does not commute; scaling or dividing an operand by a
    # value constant along the contracted dim scales the product (over-approximated as
    # red-div is), and it distributes over a sum of operands.
    Axiom("bmul-div-l", ("bmul", ("div", "?a", "?c"), "?b"), ("div", ("bmul", "?a", "?b"), "?c")),
    Axiom("bmul-div-r", ("bmul", "?a", ("div", "?b", "?c")), ("div", ("bmul", "?a", "?b"), "?c")),
    Axiom("bmul-mul-l", ("bmul", ("mul", "?a", "?c"), "?b"), ("mul", ("bmul", "?a", "?b"), "?c")),
    Axiom("bmul-mul-r", ("bmul", "?a", ("mul", "?b", "?c")), ("mul", ("bmul", "?a", "?b"), "?c")),
    Axiom(
        "bmul-distribute-l", ("bmul", ("add", "?a", "?b"), "?c"), ("add", ("bmul", "?a", "?c"), ("bmul", "?b", "?c"))
    ),
    Axiom(
        "bmul-distribute-r", ("bmul", "?a", ("add", "?b", "?c")), ("add", ("bmul", "?a", "?b"), ("bmul", "?a", "?c"))
    ),
)

# The search's first pass uses the axioms without associativity and distributivity: on a
# spec with long add/mul chains (nTrans) those grow the e-graph from ~10^2 to ~10^5 e-nodes
# and let almost every elementwise combination of the inputs through. Every expert's terms
# are kept without them (tests/test_search.py); the second pass restores them.
NARROW_AXIOMS: tuple[Axiom, ...] = tuple(
    a for a in AXIOMS if a.name not in ("add-assoc", "mul-assoc") and "distribute" not in a.name
)

# Constructors and their egglog / z3 names. Unary ops share one constructor keyed by name.
_BINARY = {"add": "Add", "mul": "Mul", "bmul": "BMul", "div": "Div", "concat": "Cat"}


def red_sizes(terms: Sequence[Term]) -> set[int]:
    out: set[int] = set()
    stack = list(terms)
    while stack:
        t = stack.pop()
        if t[0] == "red":
            out.add(t[1])
            stack.append(t[2])
        elif t[0] not in ("var", "const"):
            stack.extend(t[1:])
    return out


def divisors(n: int) -> list[int]:
    return [j for j in range(2, n) if n % j == 0]


def split_axioms(sizes: set[int]) -> list[Axiom]:
    """red(n, x) = red(n/j, red(j, x)) for every factor j of every reduction size present
    and of its divisors: how a tiled reduction (a tile's matmul, then an accumulator, then
    a combine across blocks) meets the spec's."""
    every = sorted({d for n in sizes for d in divisors(n)} | sizes)
    return [
        Axiom(f"red-split-{n}-{j}", ("red", n, "?a"), ("red", n // j, ("red", j, "?a")))
        for n in every
        for j in divisors(n)
    ]


# ---------------------------------------------------------------------------------------
# egglog


def _egg(t: Term | str) -> str:
    if isinstance(t, str):  # pattern variable or size expression
        if "*" in t:
            a, b = t.split("*")
            return f"(* {a[1:]} {b[1:]})"
        return t[1:]
    head = t[0]
    if head == "var":
        return f'(V "{t[1]}")'
    if head == "const":
        return f'(C "{t[1]}")' if not str(t[1]).startswith("?") else f"(C {t[1][1:]})"
    if head == "red":
        n = t[1] if isinstance(t[1], int) else _egg(t[1])
        return f"(Red {n} {_egg(t[2])})"
    if head in _BINARY:
        return f"({_BINARY[head]} {_egg(t[1])} {_egg(t[2])})"
    return f'(Un "{head}" {_egg(t[1])})'


_EGG_DECLS = (
    "(datatype T (V String) (C String) (Red i64 T) (Add T T) (Mul T T) (BMul T T) (Div T T) (Cat T T) (Un String T))"
)


class EgglogOracle:
    """The spec's e-graph, saturated once; `contains(term)` answers lookups.

    After saturation the e-graph is read out once into a hash-cons table (e-node → e-class),
    and a lookup walks the term bottom up: a term is in the e-graph iff each of its nodes,
    with its children's e-classes, is an e-node there. That is what egglog's `check` of the
    term answers, but egglog compiles a check into a join query whose cost grows with the
    term's depth and the e-graph's size (seconds per lookup on nTrans's 10^5 e-nodes); the
    table answers in microseconds."""

    def __init__(self, spec_terms: Sequence[Term], iterations: int = 8, axioms: Sequence[Axiom] = AXIOMS) -> None:
        from egglog import bindings  # imported lazily: GPU machines run without egglog

        self._egraph = bindings.EGraph()
        lines = [_EGG_DECLS]
        for ax in axioms:
            if ax.name == "red-merge":  # sizes multiply: only lhs -> rhs is expressible
                lines.append(f"(rewrite {_egg(ax.lhs)} {_egg(ax.rhs)})")
            else:
                lines.append(f"(birewrite {_egg(ax.lhs)} {_egg(ax.rhs)})")
        for ax in split_axioms(red_sizes(spec_terms)):
            lines.append(f"(rewrite {_egg(ax.lhs)} {_egg(ax.rhs)})")
        for k, t in enumerate(spec_terms):
            lines.append(f"(let $spec{k} {_egg(t)})")
        lines.append(f"(run {iterations})")
        self._run("\n".join(lines))
        self._table = self._hashcons()
        self._cache: dict[Term, str | None] = {}
        self.lookups = 0

    def __len__(self) -> int:
        """E-nodes in the saturated e-graph."""
        return len(self._table)

    def _run(self, text: str) -> Any:
        return self._egraph.run_program(*self._egraph.parse_program(text))

    def _hashcons(self) -> dict[tuple[str, ...], str]:
        """(constructor, child e-classes or primitive literals) → e-class of every e-node."""
        import json

        ser = self._egraph.serialize([])
        if ser.truncated_functions or ser.discarded_functions:  # a partial table would prune wrongly
            raise RuntimeError(f"e-graph serialization incomplete: {ser.truncated_functions} {ser.discarded_functions}")
        nodes = json.loads(ser.to_json())["nodes"]
        # A primitive child (a string or i64) is named by its literal, a function child by
        # its e-class: the same spelling `_key` builds from a term.
        ref = {nid: (n["op"] if nid.startswith("primitive-") else n["eclass"]) for nid, n in nodes.items()}
        return {
            (n["op"], *(ref[c] for c in n["children"])): n["eclass"]
            for nid, n in nodes.items()
            if not nid.startswith("primitive-")
        }

    def _class(self, t: Term) -> str | None:
        if t in self._cache:
            return self._cache[t]
        head = t[0]
        key: tuple[str, ...] | None
        if head in ("var", "const"):
            key = ("V" if head == "var" else "C", f'"{t[1]}"')
        elif head == "red":
            c = self._class(t[2])
            key = None if c is None else ("Red", str(t[1]), c)
        elif head in _BINARY:
            a, b = self._class(t[1]), self._class(t[2])
            key = None if a is None or b is None else (_BINARY[head], a, b)
        else:
            c = self._class(t[1])
            key = None if c is None else ("Un", f'"{head}"', c)
        cls = None if key is None else self._table.get(key)
        self._cache[t] = cls
        return cls

    def contains(self, term: Term) -> bool:
        if term not in self._cache:
            self.lookups += 1
        return self._class(term) is not None

    def contains_by_check(self, term: Term) -> bool:
        """egglog's own `check` (slow): the reference `contains` is tested against."""
        from egglog.bindings import EggSmolError

        try:
            self._run(f"(check {_egg(term)})")
            return True
        except EggSmolError:
            return False


# ---------------------------------------------------------------------------------------
# z3


class Z3Reference:
    """The same axioms in z3. `is_subexpr` returns True (proved), False (refuted) or None
    (unknown: the caller keeps the candidate)."""

    def __init__(self, spec_terms: Sequence[Term], timeout_ms: int = 1000) -> None:
        import z3  # lazily, as egglog

        self.z3 = z3
        self.T = z3.DeclareSort("T")
        T, Int, Str = self.T, z3.IntSort(), z3.StringSort()
        self.f = {
            "V": z3.Function("V", Str, T),
            "C": z3.Function("C", Str, T),
            "Red": z3.Function("Red", Int, T, T),
            "Un": z3.Function("Un", Str, T, T),
            **{name: z3.Function(name, T, T, T) for name in _BINARY.values()},
        }
        self.sub = z3.Function("Sub", T, T, z3.BoolSort())
        self.spec = [self.term(t) for t in spec_terms]
        self.timeout_ms = timeout_ms
        self.axioms = self._axioms(list(AXIOMS) + split_axioms(red_sizes(spec_terms)))
        self.calls = 0

    def term(self, t: Term | str, env: dict[str, Any] | None = None) -> Any:
        z3, f = self.z3, self.f
        if isinstance(t, str):
            assert env is not None
            if "*" in t:
                a, b = t.split("*")
                return env[a] * env[b]
            return env[t]
        head = t[0]
        if head == "var":
            return f["V"](z3.StringVal(t[1]))
        if head == "const":
            if isinstance(t[1], str) and t[1].startswith("?"):
                assert env is not None
                return f["C"](env[t[1]])
            return f["C"](z3.StringVal(t[1]))
        if head == "red":
            return f["Red"](self.term(t[1], env) if isinstance(t[1], str) else z3.IntVal(t[1]), self.term(t[2], env))
        if head in _BINARY:
            return f[_BINARY[head]](self.term(t[1], env), self.term(t[2], env))
        return f["Un"](z3.StringVal(head), self.term(t[1], env))

    def _axioms(self, axioms: list[Axiom]) -> list[Any]:
        z3, T, sub = self.z3, self.T, self.sub
        out = []
        for ax in axioms:
            names = sorted(set(_pattern_vars(ax.lhs)) | set(_pattern_vars(ax.rhs)))
            env = {
                v: (z3.Int(v) if v in ("?n", "?m") else z3.String(v) if v == "?s" else z3.Const(v, T)) for v in names
            }
            eq = self.term(ax.lhs, env) == self.term(ax.rhs, env)
            ints = [env[v] for v in names if v in ("?n", "?m")]
            body = z3.Implies(z3.And(*[i >= 1 for i in ints]), eq) if ints else eq
            out.append(z3.ForAll([env[v] for v in names], body))
        a, b, c = z3.Consts("a b c", T)
        n, m = z3.Ints("n m")
        s = z3.String("s")
        out += [
            z3.ForAll([a], sub(a, a)),
            z3.ForAll([a, b, c], z3.Implies(z3.And(sub(a, b), sub(b, c)), sub(a, c))),
            z3.ForAll([a, s], sub(a, self.f["Un"](s, a))),
            z3.ForAll([a, n], sub(a, self.f["Red"](n, a))),
            z3.ForAll([a, n, m], z3.Implies(z3.And(n >= 1, m >= 1), sub(self.f["Red"](n, a), self.f["Red"](n * m, a)))),
        ]
        for fn in _BINARY.values():
            out += [z3.ForAll([a, b], sub(a, self.f[fn](a, b))), z3.ForAll([a, b], sub(b, self.f[fn](a, b)))]
        return out

    def is_subexpr(self, term: Term) -> bool | None:
        z3 = self.z3
        self.calls += 1
        s = z3.Solver()
        s.set("timeout", self.timeout_ms)
        s.add(self.axioms)
        cand = self.term(term)
        s.add(z3.Not(z3.Or(*[self.sub(cand, sp) for sp in self.spec])))
        r = s.check()
        return True if r == z3.unsat else False if r == z3.sat else None


def _pattern_vars(t: Term | str) -> list[str]:
    if isinstance(t, str):
        return [p for p in t.split("*") if p.startswith("?")]
    if isinstance(t, int):
        return []
    return [v for x in t[1:] for v in _pattern_vars(x)]


def all_terms(kg: KernelGraph) -> list[Term]:
    """Terms of every tensor of `kg`, block tensors included (for tests and diagnostics)."""
    out: list[Term] = []
    env: dict[int, Term] = {tid: ("var", name) for tid, name in zip(kg.inputs, kg.input_names)}
    for node in kg.nodes:
        args = [env[i] for i in node.inputs]
        if node.op == "customized":
            bg = node.attrs["block_graph"]
            benv: dict[int, Term] = dict(zip(bg.inputs, args))
            for bn in bg.nodes:
                benv.update(zip(bn.outputs, node_terms(bg, bn, [benv[i] for i in bn.inputs], bg.forloop_range)))
            out += [benv[t] for bn in bg.nodes for t in bn.outputs]
        env.update(zip(node.outputs, node_terms(kg, node, args)))
        out += [env[t] for t in node.outputs]
    return out
