"""Thread-level fusion: the float value of a block tensor at symbolic coordinates, as C++.

An inline tensor is computed where it is read, from its arguments' values (registers only);
a materialized one is a shared-memory load, a global input a global load, and a register
tile's element a variable of the loop that owns it. Each value becomes one `const float`
line, cached by (tensor, coordinates), so a value read twice is computed once.

The same builder probes expressions for the planner: with `probe=True` it records every leaf
it reaches (shared-memory tensors, global inputs, register tiles and the coordinates they are
read at) instead of failing on a register value that the loop does not hold.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ..ir.ops import get_op
from .tiles import PT, Coords, offset_expr, ptr_name, smem_name


def cfloat(x: Fraction | float) -> str:
    """A C++ float literal for an exact rational (rounded to the nearest float)."""
    f = float(x)
    if not math.isfinite(f):
        raise ValueError(f"constant {x} is not a finite float")
    s = repr(f)
    if "e" not in s and "." not in s:
        s += ".0"
    return s + "f"


def _attr_text(v: Any) -> str:
    if isinstance(v, Fraction | float | int) and not isinstance(v, bool):
        return cfloat(v)
    return str(v)


def broadcast_coords(coords: Coords, out_dims: tuple[int, ...], arg_dims: tuple[int, ...]) -> Coords:
    """Coordinates of an argument of a broadcasting op (dims aligned on the right)."""
    shift = len(out_dims) - len(arg_dims)
    return tuple("0" if n == 1 else coords[k + shift] for k, n in enumerate(arg_dims))


def swap_last(coords: Coords) -> Coords:
    return coords[:-2] + (coords[-1], coords[-2])


@dataclass
class Leaf:
    tensor: int  # for shared memory: the base tensor
    coords: Coords
    kind: str  # "smem" | "global" | "reg"


@dataclass
class ExprBuilder:
    tensors: dict[int, PT]
    regs: dict[int, tuple[Coords, str]] = field(default_factory=dict)  # tensor -> (coords, value)
    probe: bool = False
    names: Iterator[int] = field(default_factory=itertools.count)
    lines: list[str] = field(default_factory=list)
    leaves: list[Leaf] = field(default_factory=list)
    # A builder for the body of a loop: values that do not depend on the loop's coordinates
    # (`variant`) nor on registers bound inside it are computed by the parent, before the loop.
    parent: ExprBuilder | None = None
    variant: frozenset[str] = frozenset()
    _cache: dict[tuple[int, Coords], str] = field(default_factory=dict)

    def scope(self, variant: Iterable[str], regs: dict[int, tuple[Coords, str]] | None = None) -> ExprBuilder:
        """A builder for a loop body nested in this builder's scope."""
        return ExprBuilder(
            self.tensors, dict(regs or {}), self.probe, self.names, [], self.leaves, self, frozenset(variant) - {"0"}
        )

    def _needs_regs(self, tid: int) -> bool:
        p = self.tensors[tid]
        if tid in self.regs:
            return True
        return p.kind == "inline" and any(self._needs_regs(a) for a in p.args)

    def value(self, tid: int, coords: Coords) -> str:
        key = (tid, coords)
        if key in self._cache:
            return self._cache[key]
        p = self.tensors[tid]
        if tid in self.regs and self.regs[tid][0] == coords:
            self.leaves.append(Leaf(tid, coords, "reg"))
            return self.regs[tid][1]
        if self.parent is not None and not set(coords) & self.variant and not self._needs_regs(tid):
            v = self.parent.value(tid, coords)
            self._cache[key] = v
            return v
        if p.kind == "inline" and p.op == "transpose":
            v = self.value(p.args[0], swap_last(coords))
            self._cache[key] = v
            return v
        if p.kind == "inline":
            text = self.op_text(p, coords)
        elif p.kind == "reg" and (self.probe or not p.self_sink):
            if not self.probe:
                raise RuntimeError(f"t{tid} is neither in registers here nor in shared memory")
            self.leaves.append(Leaf(tid, coords, "reg"))
            return f"REG_t{tid}"
        elif p.kind in ("smem", "staged", "view", "reg"):
            base = p.base if p.kind == "view" else tid
            self.leaves.append(Leaf(base, coords, "smem"))
            text = f"mp::to_float({smem_name(base)}.load({offset_expr(coords, p.strides)}))"
        elif p.kind == "global":
            self.leaves.append(Leaf(tid, coords, "global"))
            text = f"mp::to_float({ptr_name(tid)}[{offset_expr(coords, p.strides)}])"
        else:
            raise RuntimeError(f"t{tid} ({p.kind}) has no value here")
        var = f"v{next(self.names)}"
        self.lines.append(f"const float {var} = {text};")
        self._cache[key] = var
        return var

    def op_text(self, p: PT, coords: Coords) -> str:
        """The float expression of elementwise op `p` at `coords` (its arguments become lines)."""
        template = get_op(p.op).cuda
        assert template is not None and not template.startswith("@"), p.op
        args = [self.value(a, broadcast_coords(coords, p.dims, self.tensors[a].dims)) for a in p.args]
        return template.format(*args, **{k: _attr_text(v) for k, v in p.attrs.items()})

    def reg_leaves(self) -> list[Leaf]:
        return [leaf for leaf in self.leaves if leaf.kind == "reg"]

    def smem_reads(self) -> set[int]:
        return {leaf.tensor for leaf in self.leaves if leaf.kind == "smem"}
