"""The planner's data: where each tensor of a block graph lives and how its elements are laid
out, the register tiles that hold matmul results and accumulators, and the steps a kernel
runs. `plan.py` fills these in; `expr.py` and `emit.py` read them.

Placements of a block tensor (`PT.kind`):
  global   a block input read straight from global memory where it is used
  staged   a block input copied into shared memory (it feeds a matmul)
  inline   an elementwise value computed where it is used (thread-level fusion: registers only)
  smem     materialized in shared memory
  view     a transpose of a shared-memory tensor: the same bytes, strides swapped
  reg      produced by a loop over a register tile (matmul, reduction, accumulator); its
           consumers that read it element for element run inside that loop ("sinks"), and it
           is also stored to shared memory (`self_sink`) when anything else reads it
  accsrc   a matmul accumulated straight into its accumulator's registers
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ir.dtypes import ITEMSIZE

Dims = tuple[int, ...]
Coords = tuple[str, ...]

# C++ spellings of the IR's element types (namespace mp of the runtime).
CTYPE = {"float16": "mp::f16", "bfloat16": "mp::bf16", "float32": "float"}


@dataclass
class Tile:
    """Shared-memory layout of a materialized tensor: `outer` tiles of rows x cols elements,
    each in a rows_p x cols_p area (zero padding a warp matmul may read) with leading
    dimension `ld`. `copies` is 2 for double-buffered loop inputs."""

    store: str
    outer: int
    rows: int
    cols: int
    rows_p: int
    cols_p: int
    ld: int
    zero_pad: bool = False
    copies: int = 1
    offset: int = -1

    @property
    def copy_bytes(self) -> int:
        return self.outer * self.rows_p * self.ld * ITEMSIZE[self.store]

    @property
    def nbytes(self) -> int:
        return self.copy_bytes * self.copies


@dataclass(frozen=True)
class Reg:
    """A register tile and the loop that owns its elements.

    warp    mma accumulators: (batch, m, mp, n) with warps wm x wn, each mt x nt fragments
    thread  ThreadAcc: thread `rank` owns elements rank + j * threads (per batch slice)
    rows    one float per row of a tensor whose last dim is summed (accum_sum_lastdim)
    loop    a value computed by one step's loop (a reduction): nothing outlives the step;
            a warp per output (contiguous rows), the whole block per output (few, long
            sums: block_sum through a scratch tile), else a thread per output
    """

    kind: str
    key: tuple[Any, ...]
    batch: int = 1
    m: int = 0
    mp: int = 0
    n: int = 0
    wm: int = 1
    wn: int = 1
    mt: int = 1
    nt: int = 1
    nreg: int = 0
    warp_mode: bool = False
    block_mode: bool = False  # a reduction by the whole block (few outputs, long sums)


@dataclass
class PT:
    """One tensor of the planned block graph."""

    id: int
    dims: Dims
    dtype: str
    op: str  # "input" or the producing op's name
    args: tuple[int, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)
    stage: str = "post"  # pre | loop | post
    input_index: int = -1
    consumers: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)  # block outputs that store it
    kind: str = ""
    tile: Tile | None = None
    base: int = -1  # the materialized tensor whose bytes a view uses
    strides: tuple[int, ...] = ()
    reg: Reg | None = None
    self_sink: bool = False
    scratch: int = -1  # shared-memory scratch tensor of a block-wide reduction

    @property
    def numel(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        return n

    @property
    def rank(self) -> int:
        return len(self.dims)


@dataclass(frozen=True)
class Sink:
    """Where a step writes a value: a shared-memory tensor or a block output."""

    kind: str  # "smem" | "out"
    tensor: int  # the tensor whose value is written
    output: int = -1  # block output index for "out"


@dataclass
class Step:
    """One block-cooperative piece of a kernel. Steps of one phase touch disjoint shared
    memory; a barrier separates phases."""

    kind: str  # load | elt | concat | matmul | reduce | acc_elem | acc_rows | spill | epilogue | store
    stage: str
    target: int  # the main tensor (for epilogue: the group's first register tensor)
    sinks: list[Sink] = field(default_factory=list)
    group: list[int] = field(default_factory=list)  # register tensors read in an epilogue loop
    reads: set[int] = field(default_factory=set)  # shared-memory base tensors read
    writes: set[int] = field(default_factory=set)  # shared-memory base tensors written
    level: int = 0


def identity_coords(dims: Dims, names: str = "c") -> Coords:
    """Loop coordinates of a tensor: a variable per dim, "0" for dims of size 1."""
    return tuple(f"{names}{d}" if n > 1 else "0" for d, n in enumerate(dims))


def row_major_strides(dims: Dims) -> tuple[int, ...]:
    out = [1] * len(dims)
    for d in range(len(dims) - 2, -1, -1):
        out[d] = out[d + 1] * dims[d + 1]
    return tuple(out)


def tile_strides(dims: Dims, tile: Tile) -> tuple[int, ...]:
    """Element strides of a materialized tensor's logical dims in its tile."""
    r = len(dims)
    if r == 1:
        return (1,)
    out = [0] * r
    out[-1], out[-2] = 1, tile.ld
    below = tile.rows_p * tile.ld
    for d in range(r - 3, -1, -1):
        out[d] = below
        below *= dims[d]
    return tuple(out)


def offset_expr(coords: Coords, strides: tuple[int, ...]) -> str:
    """sum(coord * stride) as C++ text, zero terms dropped."""
    terms = []
    for c, s in zip(coords, strides):
        if c == "0" or s == 0:
            continue
        terms.append(c if s == 1 else f"{c} * {s}" if _is_name(c) else f"({c}) * {s}")
    return " + ".join(terms) if terms else "0"


def _is_name(c: str) -> bool:
    return c.replace("_", "").isalnum()


def smem_name(tid: int) -> str:
    return f"s_t{tid}"


def ptr_name(tid: int) -> str:
    return f"p_t{tid}"


def reg_name(tid: int) -> str:
    return f"acc_t{tid}"
