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
from ..verify.ffexec import FFInterpreter, FFTensor, FieldOps, OutsideFragment, residues, sample_inputs
from ..verify.fields import DEFAULT_FIELD, Field
from .enumerate import PruneValue

_CHUNK = 1 << 20


class FFEvaluator:
    def __init__(self, field: Field = DEFAULT_FIELD, seed: int = 0) -> None:
        self.field, self.seed = field, seed
        self.ops = FieldOps(field, key=seed)
        self.interp = FFInterpreter(self.ops)
        self._w = np.random.default_rng(seed).integers(1, 1 << 20, size=(2, _CHUNK), dtype=np.int64)
        self._mult: list[int] = []

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
        """Shape plus two random linear combinations of the p-residues: chunk k of the
        flattened residues is dotted with one fixed weight array (exact int64: residues <
        2^21, weights < 2^20, chunks of 2^20) and scaled by a random multiplier of its own.
        Two tensors that differ anywhere collide with probability about 2^-40, and this
        reads the array once (a blake2b of every state's tensors was the search's hot spot
        at paper size, and weights as long as the largest tensor cost memory)."""
        r = residues(v, self.field.p).reshape(-1)
        totals = [0, 0]
        for k, i in enumerate(range(0, r.size, _CHUNK)):
            part = r[i : i + _CHUNK]
            sums = part @ self._w[:, : part.size].T
            c = self._multiplier(k)
            totals = [t + int(x) * c for t, x in zip(totals, sums)]
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((v.shape, totals)).encode())
        return h.digest()

    def _multiplier(self, k: int) -> int:
        while len(self._mult) <= k:
            self._mult.append(int(np.random.default_rng([self.seed, len(self._mult)]).integers(1, 1 << 40)))
        return self._mult[k]
