"""Fingerprints: the residues of a graph's outputs on one fixed random input, as a hashable
value. Two graphs that compute the same tensors have equal fingerprints; unequal graphs
collide with the probability one trial of `equivalent` bounds.

`samples=n` keeps n coordinates per output, chosen from the output's shape and the seed
only (so graphs with equal output shapes sample the same places): cheaper to store and
compare for search dedup, at the price of missing differences confined to other
coordinates. Search may also fingerprint reduced shapes; every reported candidate is
verified at full shape by `equivalent`.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..ir.graph import KernelGraph
from .ffexec import FFTensor, FieldOps, residues, run_ff, sample_inputs
from .fields import DEFAULT_FIELD, Field

Fingerprint = tuple[int, ...]  # one 64-bit digest per output, in output order


def _digest(y: np.ndarray, shape: tuple[int, ...], seed: int, samples: int | None) -> int:
    flat = y.reshape(-1)
    if samples is not None and samples < flat.size:
        rng = np.random.default_rng([seed & 0xFFFFFFFF, *shape])
        flat = flat[np.sort(rng.choice(flat.size, size=samples, replace=False))]
    h = hashlib.blake2b(digest_size=8)
    h.update(np.asarray(shape, dtype=np.int64).tobytes())
    h.update(flat.astype(np.int32).tobytes())
    return int.from_bytes(h.digest(), "little")


def fingerprint(
    kg: KernelGraph,
    seed: int = 0,
    field: Field = DEFAULT_FIELD,
    samples: int | None = None,
    inputs: dict[str, FFTensor] | None = None,
) -> Fingerprint:
    """Raises OutsideFragment for a graph with nested exp. `inputs` (from
    `ffexec.sample_inputs`) may be shared across calls to skip re-sampling."""
    if inputs is None:
        inputs = sample_inputs(kg.input_names, [kg.types[t].dims for t in kg.inputs], seed)
    outs = run_ff(kg, inputs, FieldOps(field, key=seed))
    return tuple(_digest(residues(y, field.p), kg.types[t].dims, seed, samples) for y, t in zip(outs, kg.outputs))
