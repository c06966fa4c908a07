"""The μGraph IR: op table, kernel and block graphs, JSON form, float reference executor."""

from .canonical import canonical, graph_hash
from .errors import GraphError, SchemaError
from .execute import FloatInterpreter, run_float, walk
from .graph import BlockGraph, KernelGraph, Tensor, TensorType, new_block_graph, new_kernel_graph
from .ops import OPS, OpDef, get_op
from .serialize import SCHEMA, dumps, load, loads, save

__all__ = [
    "OPS",
    "SCHEMA",
    "BlockGraph",
    "FloatInterpreter",
    "GraphError",
    "KernelGraph",
    "OpDef",
    "SchemaError",
    "Tensor",
    "TensorType",
    "canonical",
    "dumps",
    "get_op",
    "graph_hash",
    "load",
    "loads",
    "new_block_graph",
    "new_kernel_graph",
    "run_float",
    "save",
    "walk",
]
