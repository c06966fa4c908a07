"""mirage-py: a multi-level tensor-program superoptimizer (after Mirage, OSDI 2025)."""

from .ir import (
    BlockGraph,
    GraphError,
    KernelGraph,
    SchemaError,
    graph_hash,
    load,
    new_block_graph,
    new_kernel_graph,
    run_float,
    save,
)

__version__ = "0.1.0"

__all__ = [
    "BlockGraph",
    "GraphError",
    "KernelGraph",
    "SchemaError",
    "__version__",
    "graph_hash",
    "load",
    "new_block_graph",
    "new_kernel_graph",
    "run_float",
    "save",
]
