"""Helpers the benchmark modules share: the paper's dtype and eps, size lookup, inputs."""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import TypeVar

import numpy as np

from ..ir import KernelGraph

# The paper runs every benchmark in half precision.
DTYPE = "float16"
# eps of every RMS norm, kept exact so the verifier and the search see the same constant.
EPS = Fraction(1, 10**6)

T = TypeVar("T")


def pick(table: Mapping[str, T], size: str) -> T:
    """The entry of a per-size table, or a clear error for an unknown size."""
    if size not in table:
        raise ValueError(f"unknown size {size!r} (expected one of {', '.join(table)})")
    return table[size]


def input_dims(graph: KernelGraph) -> dict[str, tuple[int, ...]]:
    return {name: graph.types[tid].dims for tid, name in zip(graph.inputs, graph.input_names)}


def normal(rng: np.random.Generator, dims: tuple[int, ...], std: float = 1.0) -> np.ndarray:
    # float32 straight from the generator: paper-size weights are 100+ MB in float64.
    x = rng.standard_normal(dims, dtype=np.float32)
    if std != 1.0:
        x *= np.float32(std)
    return x


def count_kernels(graph: KernelGraph) -> int:
    """Kernel launches of a kernel graph: one per kernel-level op."""
    return len(graph.nodes)
