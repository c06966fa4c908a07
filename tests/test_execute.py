"""The vectorized float executor against a slow reference written here: a Python loop over
every block and every for-loop iteration that slices the inputs in DESIGN.md's split order,
runs the block ops per tile with plain NumPy, accumulates, and places the output tiles by
omap."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

import mirage_py as mp
from mirage_py.ir import run_float
from mirage_py.ir.execute import merge_tiles, split_tiles, walk
from mirage_py.ir.graph import BlockGraph, BlockInput, BlockOutput, KernelGraph

# ---------------------------------------------------------------------------------------
# The slow reference.


def _reduce_sum(x: np.ndarray, dim: int, size: int) -> np.ndarray:
    m = x.shape[dim] // size
    chunks = [np.take(x, range(i * size, (i + 1) * size), axis=dim) for i in range(m)]
    return sum(chunks[1:], chunks[0])


def _rms_norm(x: np.ndarray, eps: Fraction) -> np.ndarray:
    return x / np.sqrt((x**2).sum(axis=-1, keepdims=True) / x.shape[-1] + float(eps))


PLAIN: dict[str, Callable[..., np.ndarray]] = {
    "matmul": lambda a, b: a @ b,
    "exp": np.exp,
    "square": lambda x: x**2,
    "sqrt": np.sqrt,
    "silu": lambda x: x / (1 + np.exp(-x)),
    "neg": lambda x: -x,
    "reciprocal": lambda x: 1 / x,
    "mul_scalar": lambda x, c: x * float(c),
    "add_scalar": lambda x, c: x + float(c),
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "reduce_sum": _reduce_sum,
    "transpose": lambda x: np.swapaxes(x, -1, -2),
    "concat": lambda a, b, dim: np.concatenate([a, b], axis=dim),
    "rms_norm": _rms_norm,
    "concat_matmul": lambda a, b, c, d: np.concatenate([a, b], axis=-1) @ np.concatenate([c, d], axis=-2),
}
ACCUM = {"accum_sum", "accum_sum_lastdim"}
# Inside a kernel, exp results, matmuls and sums stay in float32 (DESIGN.md: "kernels keep
# exp results and sums in float32"); every kernel-level tensor is in its own dtype.
F32_IN_KERNEL = ACCUM | {"exp", "matmul", "concat_matmul", "reduce_sum"}

Rounder = Callable[[np.ndarray, str], np.ndarray]


def _no_round(x: np.ndarray, dtype: str) -> np.ndarray:
    return x


def in_kernel(op: str, dtype: str) -> str:
    return "float32" if op in F32_IN_KERNEL else dtype


def tile_of(
    x: np.ndarray, bi: BlockInput, block: tuple[int, int, int], it: int, grid: tuple[int, ...], F: int
) -> np.ndarray:
    """DESIGN.md's split order: a dim of size n split by grid dim g (size G) gives block b
    the chunk [b*n/G, (b+1)*n/G); split by the for-loop too, iteration i gets sub-chunk i of
    that chunk (size n/(G*F))."""
    index = []
    for d, n in enumerate(x.shape):
        start, length = 0, n
        for g in range(3):
            if bi.imap[g] == d:
                length //= grid[g]
                start += block[g] * length
        if bi.forloop_dim == d:
            length //= F
            start += it * length
        index.append(slice(start, start + length))
    return x[tuple(index)]


def slow_block(bg: BlockGraph, args: list[np.ndarray], rnd: Rounder = _no_round) -> list[np.ndarray]:
    grid, F = bg.grid_dims, bg.forloop_range
    post: set[int] = set()
    for n in bg.nodes:
        if n.op in ACCUM or any(i in post for i in n.inputs):
            post.update(n.outputs)
    outs = [np.full(bg.output_type(k).dims, np.nan) for k in range(len(bg.block_outputs))]
    for block in itertools.product(*(range(g) for g in grid)):
        acc: dict[int, np.ndarray] = {}
        env: dict[int, np.ndarray] = {}
        for it in range(F):
            env = {t: tile_of(x, bi, block, it, grid, F) for t, bi, x in zip(bg.inputs, bg.block_inputs, args)}
            for n in bg.nodes:
                (o,) = n.outputs
                if n.op in ACCUM:
                    part = env[n.inputs[0]]
                    if n.op == "accum_sum_lastdim":
                        part = part.sum(axis=-1, keepdims=True)
                    acc[o] = acc[o] + part if o in acc else part.copy()
                elif o not in post:
                    env[o] = rnd(
                        PLAIN[n.op](*[env[i] for i in n.inputs], **n.attrs), in_kernel(n.op, bg.types[o].dtype)
                    )
        env.update({o: rnd(v, "float32") for o, v in acc.items()})
        for n in bg.nodes:
            (o,) = n.outputs
            if o in post and n.op not in ACCUM:
                env[o] = rnd(PLAIN[n.op](*[env[i] for i in n.inputs], **n.attrs), in_kernel(n.op, bg.types[o].dtype))
        for out, bo in zip(outs, bg.block_outputs):
            tile = rnd(env[bo.tensor], bg.types[bo.tensor].dtype)  # a kernel tensor again
            index = []
            for d, n in enumerate(tile.shape):
                start = sum(block[g] * n for g in range(3) if bo.omap[g] == d)
                index.append(slice(start, start + n))
            assert np.isnan(out[tuple(index)]).all(), "two blocks wrote the same output element"
            out[tuple(index)] = tile
    for out in outs:
        assert not np.isnan(out).any(), "an output element no block wrote"
    return outs


def slow_kernel(kg: KernelGraph, inputs: list[np.ndarray], rnd: Rounder = _no_round) -> list[np.ndarray]:
    def apply(n: Any, args: list[np.ndarray]) -> list[np.ndarray]:
        if n.op == "customized":
            return slow_block(n.attrs["block_graph"], args, rnd)
        return [rnd(PLAIN[n.op](*args, **n.attrs), kg.types[n.outputs[0]].dtype)]

    return walk(kg, [rnd(x, kg.types[t].dtype) for x, t in zip(inputs, kg.inputs)], apply)


def random_inputs(kg: KernelGraph, seed: int, lo: float = -1.0, hi: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(lo, hi, kg.types[t].dims) for t in kg.inputs]


# ---------------------------------------------------------------------------------------
# Block graphs.


def matmul_grid_n_loop_k(dtype: str = "float32") -> KernelGraph:
    """Y = X @ W: grid over N (3 blocks), for-loop over K (4 iterations); X replicated."""
    g = mp.new_kernel_graph()
    x = g.new_input([8, 16], dtype, "X")
    w = g.new_input([16, 12], dtype, "W")
    bg = mp.new_block_graph([3, 1, 1], 4)
    tx = bg.new_input(x, [-1, -1, -1], 1)
    tw = bg.new_input(w, [1, -1, -1], 0)
    assert tx.dims == (8, 4) and tw.dims == (4, 4)
    bg.new_output(bg.accum_sum(bg.matmul(tx, tw)), [1, -1, -1])
    (y,) = g.customized([x, w], bg)
    g.mark_output(y, "Y")
    return g


def row_rms_lastdim(dtype: str = "float32") -> KernelGraph:
    """1 / rms of each row: accum_sum_lastdim of x^2 over a for-loop over the row, then
    exact scaling and sqrt after the loop."""
    g = mp.new_kernel_graph()
    x = g.new_input([4, 24], dtype, "X")
    bg = mp.new_block_graph([4, 1, 1], 3)
    t = bg.new_input(x, [0, -1, -1], 1)
    s = bg.accum_sum_lastdim(bg.square(t))
    r = bg.reciprocal(bg.sqrt(bg.add_scalar(bg.mul_scalar(s, Fraction(1, 24)), Fraction(1, 10**5))))
    bg.new_output(r, [0, -1, -1])
    (y,) = g.customized([x], bg)
    g.mark_output(y)
    return g


def grid_2d(dtype: str = "float32") -> KernelGraph:
    """A 2-D grid (2 x 3): A split on both dims, B split by y only (replicated over x), C
    split by x only; outputs laid out by both grid dims."""
    g = mp.new_kernel_graph()
    a = g.new_input([4, 6], dtype)
    b = g.new_input([6], dtype)
    c = g.new_input([4, 1], dtype)
    bg = mp.new_block_graph([2, 3], 1)
    ta = bg.new_input(a, [0, 1, -1])
    tb = bg.new_input(b, [-1, 0, -1])
    tc = bg.new_input(c, {"x": 0})
    assert ta.dims == (2, 2) and tb.dims == (2,) and tc.dims == (2, 1)
    y = bg.add(bg.mul(ta, tb), tc)
    bg.new_output(y, [0, 1, -1])
    bg.new_output(bg.transpose(y), {"x": 1, "y": 0})  # tiles placed along other dims
    outs = g.customized([a, b, c], bg)
    for o in outs:
        g.mark_output(o)
    return g


def rmsnorm_matmul_invariant_after(dtype: str = "float32") -> KernelGraph:
    """The rmsnorm expert's shape: X@W and sum(x^2) accumulated over one for-loop over K;
    after the loop, divide by the rms and multiply by G, a loop-invariant input used only
    after the accumulators. B, loop-invariant too, is also used before them."""
    g = mp.new_kernel_graph()
    x = g.new_input([4, 32], dtype, "X")
    w = g.new_input([32, 16], dtype, "W")
    gate = g.new_input([4, 16], dtype, "G")
    bias = g.new_input([4, 1], dtype, "B")
    bg = mp.new_block_graph([2, 1, 1], 4)
    tx = bg.new_input(x, [-1, -1, -1], 1)
    tw = bg.new_input(w, [1, -1, -1], 0)
    tg = bg.new_input(gate, [1, -1, -1], -1)
    tb = bg.new_input(bias, [-1, -1, -1], -1)
    mm = bg.accum_sum(bg.matmul(bg.add(tx, tb), tw))
    ss = bg.accum_sum_lastdim(bg.square(bg.add(tx, tb)))
    rms = bg.sqrt(bg.add_scalar(bg.mul_scalar(ss, Fraction(1, 32)), Fraction(1, 10**6)))
    y = bg.mul(bg.div(mm, rms), bg.sub(tg, tb))
    bg.new_output(y, [1, -1, -1])
    (out,) = g.customized([x, w, gate, bias], bg)
    g.mark_output(out, "Y")
    return g


def split_order_3d(dtype: str = "float32") -> KernelGraph:
    """One dim split by grid x and by the for-loop (the split order matters), another by z."""
    g = mp.new_kernel_graph()
    x = g.new_input([3, 4, 24], dtype)
    bg = mp.new_block_graph([2, 1, 3], 3)
    t = bg.new_input(x, [2, -1, 0], 2)
    assert t.dims == (1, 4, 4)
    bg.new_output(bg.accum_sum(bg.exp(t)), [2, -1, 0])
    (y,) = g.customized([x], bg)
    g.mark_output(y)
    return g


def lora_two_kernels(dtype: str = "float32") -> KernelGraph:
    """Y = X@W + (X@A)@B: a predefined matmul, then one customized kernel using
    concat_matmul with the grid over N."""
    g = mp.new_kernel_graph()
    x = g.new_input([8, 16], dtype, "X")
    w = g.new_input([16, 12], dtype, "W")
    a = g.new_input([16, 4], dtype, "A")
    b = g.new_input([4, 12], dtype, "B")
    xa = g.matmul(x, a)
    bg = mp.new_block_graph([3, 1, 1], 1)
    tiles = [
        bg.new_input(x, [-1, -1, -1]),
        bg.new_input(xa, [-1, -1, -1]),
        bg.new_input(w, [1, -1, -1]),
        bg.new_input(b, [1, -1, -1]),
    ]
    bg.new_output(bg.concat_matmul(*tiles), [1, -1, -1])
    (y,) = g.customized([x, xa, w, b], bg)
    g.mark_output(y, "Y")
    return g


def reduce_concat_rows(dtype: str = "float32") -> KernelGraph:
    """Row sums laid along dim 1 (the omap differs from the imap), concat and rms_norm on
    tiles, and a per-iteration silu summed over a loop over dim 0 of a 3-D tensor."""
    g = mp.new_kernel_graph()
    x = g.new_input([4, 6], dtype)
    z = g.new_input([6, 2, 4], dtype)
    bg = mp.new_block_graph([4, 1, 1], 1)
    t = bg.new_input(x, [0, -1, -1])
    s = bg.reduce_sum(t, 1)
    bg.new_output(bg.transpose(bg.concat(s, bg.reduce_sum(bg.rms_norm(t, Fraction(1, 100)), 1, 3), 1)), [1, -1, -1])
    (rows,) = g.customized([x], bg)
    bg2 = mp.new_block_graph([1, 2, 1], 3)
    tz = bg2.new_input(z, [-1, 2, -1], 0)
    assert tz.dims == (2, 2, 2)
    bg2.new_output(bg2.accum_sum(bg2.silu(tz)), [-1, 2, -1])
    (zz,) = g.customized([z], bg2)
    g.mark_output(rows)
    g.mark_output(zz)
    return g


GRAPHS: dict[str, Callable[..., KernelGraph]] = {
    f.__name__: f
    for f in [
        matmul_grid_n_loop_k,
        row_rms_lastdim,
        grid_2d,
        rmsnorm_matmul_invariant_after,
        split_order_3d,
        lora_two_kernels,
        reduce_concat_rows,
    ]
}

# Inputs kept positive where a graph takes a sqrt of something that could be negative.
LOW = {"row_rms_lastdim": 0.1}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_vectorized_matches_slow_reference_float64(name: str) -> None:
    g = GRAPHS[name]()
    xs = random_inputs(g, seed=len(name), lo=LOW.get(name, -1.0))
    got = run_float(g, xs)
    want = slow_kernel(g, xs)
    assert len(got) == len(want) == len(g.outputs)
    for o, a, b in zip(g.outputs, got, want):
        assert a.dtype == np.float64 and a.shape == b.shape == g.types[o].dims
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_float32_mode(name: str) -> None:
    g = GRAPHS[name]()
    xs = random_inputs(g, seed=len(name) + 1, lo=LOW.get(name, -1.0))
    want = slow_kernel(g, xs)
    got = run_float(g, xs, mode="float32")
    for a, b in zip(got, want):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def round_f16(x: np.ndarray, dtype: str) -> np.ndarray:
    assert dtype in ("float16", "float32")
    if dtype == "float32":
        return np.asarray(x, np.float32)
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def round_bf16(x: np.ndarray, dtype: str) -> np.ndarray:
    """Round to nearest even on the top 16 bits of the float32 pattern, written here
    independently of mirage_py.ir.dtypes (via float64 arithmetic on the exponent)."""
    assert dtype in ("bfloat16", "float32")
    if dtype == "float32":
        return np.asarray(x, np.float32)
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for idx, v in np.ndenumerate(x):
        if v == 0 or not np.isfinite(v):
            out[idx] = v
            continue
        e = np.floor(np.log2(abs(v)))
        ulp = 2.0 ** (e - 7)  # bfloat16 keeps 8 significant bits
        out[idx] = np.round(v / ulp) * ulp  # np.round is round-half-even
    return out.astype(np.float32)


def representable(x: np.ndarray, dtype: str) -> bool:
    x = np.asarray(x)
    if dtype == "float16":
        return bool(np.array_equal(x.astype(np.float16).astype(x.dtype), x))
    assert x.dtype == np.float32
    return bool(((x.view(np.uint32) & 0xFFFF) == 0).all())


@pytest.mark.parametrize("dtype, rounder, tol", [("float16", round_f16, 3e-3), ("bfloat16", round_bf16, 2e-2)])
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_dtype_mode(name: str, dtype: str, rounder: Rounder, tol: float) -> None:
    g = GRAPHS[name](dtype)
    xs = random_inputs(g, seed=len(name) + 2, lo=LOW.get(name, -1.0))
    got = run_float(g, xs, mode="dtype")
    emulated = slow_kernel(g, xs, rounder)
    exact = slow_kernel(g, xs)
    for a, b, c in zip(got, emulated, exact):
        assert representable(a, dtype), f"{dtype} mode returned values {dtype} cannot hold"
        # The same per-op rounding as the reference (sums may round differently in places).
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
        # And far from float64 only by the dtype's precision.
        np.testing.assert_allclose(a, c, rtol=8 * tol, atol=8 * tol)


def test_dtype_mode_rounds_inputs_and_every_op() -> None:
    for dtype, rounder in [("float16", round_f16), ("bfloat16", round_bf16)]:
        g = mp.new_kernel_graph()
        x = g.new_input([64], dtype)
        third = g.mul_scalar(x, Fraction(1, 3))
        g.mark_output(g.neg(x))
        g.mark_output(g.mul_scalar(third, 3))
        xs = np.random.default_rng(3).uniform(0.5, 2.0, 64)
        neg, back = run_float(g, [xs], mode="dtype")
        np.testing.assert_array_equal(neg, -rounder(xs, dtype))
        want = rounder(rounder(rounder(xs, dtype) * np.float32(1 / 3), dtype) * 3, dtype)
        np.testing.assert_array_equal(back, want)
        assert representable(back, dtype)
        # Rounding after every op loses information the float64 run keeps.
        assert not np.array_equal(back, run_float(g, [xs])[1])


def test_dtype_rounding_ties_and_range() -> None:
    # Round to nearest, ties to even, on exactly representable float32 inputs.
    cases = {
        "bfloat16": [
            (1 + 2**-8, 1.0),  # halfway between 1 and 1 + 2^-7: to even (1)
            (1 + 3 * 2**-8, 1 + 2**-6),  # halfway: to even (1 + 2^-6)
            (-(1 + 2**-8), -1.0),
            (1 + 2**-8 + 2**-20, 1 + 2**-7),  # above halfway
            (3.0e38, 226 * 2.0**120),  # near the top (bfloat16 keeps float32's exponent range)
            (3.4e38, np.inf),  # beyond the largest bfloat16: overflows
            (2.0**-130, 2.0**-130),  # a float32 subnormal that bfloat16 holds
        ],
        "float16": [(1 + 2**-11, 1.0), (1 + 3 * 2**-11, 1 + 2**-9), (70000.0, np.inf), (2.0**-25, 0.0)],
    }
    for dtype, pairs in cases.items():
        g = mp.new_kernel_graph()
        x = g.new_input([len(pairs)], dtype)
        g.mark_output(g.neg(x))
        xs = np.array([p[0] for p in pairs], dtype=np.float32)
        (got,) = run_float(g, [xs], mode="dtype")
        want = -np.array([p[1] for p in pairs], dtype=np.float32)
        np.testing.assert_allclose(got, want, rtol=2e-4 if dtype == "bfloat16" else 0)
        assert representable(got[np.isfinite(got)], dtype)


def test_split_order_by_hand() -> None:
    # out[z, :, b*4 + r] = sum_i exp(x[z, :, b*12 + i*4 + r]) for the split_order_3d graph.
    g = split_order_3d()
    (x,) = random_inputs(g, seed=5)
    (got,) = run_float(g, [x])
    want = np.zeros((3, 4, 8))
    for b in range(2):
        for i in range(3):
            for r in range(4):
                want[:, :, b * 4 + r] += np.exp(x[:, :, b * 12 + i * 4 + r])
    np.testing.assert_allclose(got, want, rtol=1e-13)


def test_known_values() -> None:
    g = matmul_grid_n_loop_k()
    x, w = random_inputs(g, seed=9)
    np.testing.assert_allclose(run_float(g, {"X": x, "W": w})[0], x @ w, rtol=1e-12)
    g = rmsnorm_matmul_invariant_after()
    x, w, gate, bias = random_inputs(g, seed=10)
    xb = x + bias
    want = xb / np.sqrt((xb**2).mean(-1, keepdims=True) + 1e-6) @ w * (gate - bias)
    np.testing.assert_allclose(run_float(g, [x, w, gate, bias])[0], want, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# split_tiles / merge_tiles and the walker's input checks.


@pytest.mark.parametrize(
    "shape, grid, imap, F, fdim",
    [
        ((6, 8), (2, 1, 1), (0, -1, -1), 1, -1),
        ((8, 8), (2, 4, 1), (0, 1, -1), 2, 0),
        ((6, 8), (2, 4, 1), (1, -1, -1), 2, 1),
        ((2, 6, 8), (2, 3, 2), (2, 1, 0), 2, 2),
        ((4, 4, 2, 6), (1, 2, 3), (-1, 1, 3), 2, 3),
        ((5,), (1, 1, 1), (-1, -1, -1), 5, 0),
    ],
)
def test_split_tiles_matches_split_order(
    shape: tuple[int, ...], grid: tuple[int, int, int], imap: Any, F: int, fdim: int
) -> None:
    x = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    bi = BlockInput(shape, "float32", imap, fdim)
    y = split_tiles(x, bi, grid, F)
    lead = tuple(grid[g] if imap[g] >= 0 else 1 for g in range(3)) + (F if fdim >= 0 else 1,)
    assert y.shape[:4] == lead
    for block in itertools.product(*(range(g) for g in grid)):
        for it in range(F):
            sel = tuple(block[g] if imap[g] >= 0 else 0 for g in range(3)) + (it if fdim >= 0 else 0,)
            np.testing.assert_array_equal(y[sel], tile_of(x, bi, block, it, grid, F))
    if F == 1 or fdim < 0:
        # With one iteration, merging by omap = imap is the inverse of splitting.
        np.testing.assert_array_equal(merge_tiles(y[:, :, :, :1], BlockOutput(0, imap), grid), x)


def test_merge_tiles_broadcasts_unsplit_grid_dims() -> None:
    # A tile that does not vary with grid y (size 3) but is laid out along it is repeated.
    y = np.arange(2 * 4, dtype=np.float64).reshape(2, 1, 1, 1, 1, 4)
    out = merge_tiles(y, BlockOutput(0, (1, 0, -1)), (2, 3, 1))
    assert out.shape == (3, 8)
    np.testing.assert_array_equal(out, np.tile(np.arange(8.0), (3, 1)))


def test_run_float_input_checks() -> None:
    g = matmul_grid_n_loop_k()
    x, w = random_inputs(g, seed=1)
    with pytest.raises(ValueError, match="missing inputs: W"):
        run_float(g, {"X": x})
    with pytest.raises(ValueError, match="shape"):
        run_float(g, [x, w.T])
    with pytest.raises(ValueError, match="takes 2 inputs"):
        run_float(g, [x])
