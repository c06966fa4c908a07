"""The paper's benchmark programs: for each, a naive spec kernel graph (one kernel per op)
and hand-written expert μGraphs that fuse it the way Mirage's winners do.

Each benchmark module defines one `Benchmark` and this package collects them by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..ir import KernelGraph

Size = Literal["paper", "small"]
SIZES: tuple[str, ...] = ("paper", "small")


@dataclass(frozen=True)
class Benchmark:
    name: str
    preset: str  # the search preset: default | mlp | attention | lora
    description: str
    batches: tuple[int, ...]  # the batch sizes b the paper varies; batches[0] is the default
    build_spec: Callable[[Size, int], KernelGraph]
    build_experts: Callable[[Size, int], dict[str, KernelGraph]]  # first entry is "the" expert
    # Input distribution for numerics: values for every input of the spec (and so of any
    # equivalent graph), chosen so the spec does not overflow in float16.
    make_inputs: Callable[[KernelGraph, np.random.Generator], dict[str, np.ndarray]]

    def spec(self, size: Size = "paper", batch: int | None = None) -> KernelGraph:
        return self.build_spec(size, self._batch(batch))

    def experts(self, size: Size = "paper", batch: int | None = None) -> dict[str, KernelGraph]:
        return self.build_experts(size, self._batch(batch))

    def expert(self, size: Size = "paper", batch: int | None = None) -> KernelGraph:
        return next(iter(self.experts(size, batch).values()))

    def inputs(self, graph: KernelGraph, seed: int = 0) -> dict[str, np.ndarray]:
        return self.make_inputs(graph, np.random.default_rng(seed))

    def _batch(self, batch: int | None) -> int:
        b = self.batches[0] if batch is None else batch
        if not isinstance(b, int) or b < 1:
            raise ValueError(f"{self.name}: batch must be a positive integer, got {batch!r}")
        return b


BENCHMARKS: dict[str, Benchmark] = {}


def register(b: Benchmark) -> Benchmark:
    BENCHMARKS[b.name] = b
    return b


def get_benchmark(name: str) -> Benchmark:
    _load_all()
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r} (known: {', '.join(BENCHMARKS)})")
    return BENCHMARKS[name]


def all_benchmarks() -> dict[str, Benchmark]:
    """All benchmarks, in DESIGN.md's order (whatever order their modules were imported in)."""
    _load_all()
    return {n: BENCHMARKS[n] for n in NAMES} | BENCHMARKS


# DESIGN.md's order, which listings follow; one module per name.
NAMES: tuple[str, ...] = ("rmsnorm", "gated_mlp", "gqa", "qknorm", "lora", "ntrans")


def _load_all() -> None:
    for name in NAMES:
        importlib.import_module(f"{__name__}.{name}")
