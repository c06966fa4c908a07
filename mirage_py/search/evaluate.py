"""The search's value domain: finite-field residues, one fixed trial (DESIGN.md, "Search").

Values are computed incrementally, one op at a time, on the state being extended, and a
tensor's fingerprint is a digest of its p-residues and shape. Block tensors keep their lead
axes (grid x, y, z, iteration), so the digest of a block tensor covers every block and
iteration at once.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..ir.execute import merge_tiles, split_tiles
from ..ir.graph import BlockGraph, Graph, KernelGraph
from ..verify.ffexec import FFInterpreter, FFTensor, FieldOps, OutsideFragment, sample_inputs
from ..verify.fields import DEFAULT_FIELD, Field
from .enumerate import PruneValue

# Row length and weight bound of the fingerprint: 2^21 (a reduced residue) x 2^20 x 2^8
# stays below 2^53, where float64 sums of integers are exact.
_ROW = 1 << 8
_MAX_ABS = float(1 << 21)
_SAMPLE = 1 << 12  # positions a fingerprint reads in a bigger tensor


class FFEvaluator:
    def __init__(self, field: Field = DEFAULT_FIELD, seed: int = 0) -> None:
        self.field, self.seed = field, seed
        self.ops = FieldOps(field, key=seed)
        self.interp = FFInterpreter(self.ops)
        self._w = np.random.default_rng(seed).integers(1, 1 << 20, size=(_ROW, 3)).astype(np.float64)
        self._sampled: dict[tuple[int, ...], tuple[np.ndarray, tuple[np.ndarray, ...]]] = {}

    def inputs(self, spec: KernelGraph) -> list[FFTensor]:
        shapes = [spec.types[t].dims for t in spec.inputs]
        d = sample_inputs(spec.input_names, shapes, self.seed)
        return [d[n] for n in spec.input_names]

    def apply(self, g: Graph, node_index: int, args: list[Any], lead: int) -> list[Any]:
        try:
            return self.interp._apply(g, g.nodes[node_index], args, lead)
        except OutsideFragment as e:
            raise PruneValue(str(e)) from None

    def split(self, x: FFTensor, bg: BlockGraph, k: int) -> FFTensor:
        bi = bg.block_inputs[k]
        return self.ops.map(lambda a: split_tiles(a, bi, bg.grid_dims, bg.forloop_range), x)

    def merge(self, y: FFTensor, bg: BlockGraph, k: int) -> FFTensor:
        bo = bg.block_outputs[k]
        return self.ops.map(lambda a: merge_tiles(a, bo, bg.grid_dims), y)

    def key(self, v: FFTensor) -> bytes:
        """Shape plus three random linear combinations mod p of each 256-element row of
        the p-residues at up to 2^12 fixed sampled positions (the same positions for every
        tensor of a shape). A combination mod p does not depend on which representative of
        a residue the executor holds, so nothing is canonicalized; with |a| < 2^21, weights
        < 2^20 and rows of 2^8 each row sum is an exact float64 integer. Two tensors that
        differ at a sampled position collide with probability below 2^-60.

        Why sampled: a block input holds every block's copy of its tile (2 M elements for
        a matrix replicated over 512 blocks), and reading whole tensors to fingerprint them
        was 3/4 of the search's time at paper size; 2^15 random reads were still half of
        it on gqa (cache misses over tensors of millions of elements), 2^12 about a tenth. A
        tensor that differs from another at a fraction r of its positions is told apart
        unless all 4096 samples miss, probability (1 - r)^4096: about 10^-7 for r = 1/256
        (one row of a 256-row tile). A collision can only cost the search
        a state or send a candidate to full-shape verification, never admit one."""
        r = v.p
        a = np.asarray(r.a)
        if a.size <= _SAMPLE:
            flat = a.reshape(-1)
        else:
            flat_pos, axis_pos = self._positions(a.shape)
            flat = a.reshape(-1)[flat_pos] if a.flags.c_contiguous else a[axis_pos]
        if r.b >= _MAX_ABS:
            flat = np.fmod(flat, self.field.p)  # exact: |a| < 2^53
        if flat.size % _ROW:
            flat = np.concatenate([flat, np.zeros(_ROW - flat.size % _ROW)])
        sums = np.fmod(flat.reshape(-1, _ROW) @ self._w, self.field.p)
        sums[sums < 0] += self.field.p
        h = hashlib.blake2b(repr(v.shape).encode(), digest_size=16)
        h.update(sums.tobytes())
        return h.digest()

    def _positions(self, shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """Sampled positions, flat (for C-contiguous arrays: the fastest gather) and as
        index arrays per axis (any other layout, such as a folded matmul's permuted view,
        without copying the whole array)."""
        if shape not in self._sampled:
            size = int(np.prod(shape))
            rng = np.random.default_rng([self.seed, size])
            flat = np.sort(rng.choice(size, _SAMPLE, replace=False)).astype(np.intp)
            self._sampled[shape] = flat, tuple(i.astype(np.intp) for i in np.unravel_index(flat, shape))
        return self._sampled[shape]
