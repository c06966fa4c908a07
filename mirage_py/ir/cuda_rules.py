"""CUDA templates, one per op (the op table's `cuda` slot).

Elementwise ops have a float expression: a `str.format` template over the arguments' float
values (`{0}`, `{1}`, always plain variable names, so an argument may appear twice) and the
op's attributes by name (rationals rendered as float literals, choices as their name). The
expressions call only the runtime's functions (`mp::silu`, ...) and the C math library, so
the emulation build computes exactly what the GPU build does.

Every other op names the step template of the code emitter (`mirage_py/codegen/emit.py`)
that renders it, prefixed with `@`: a matmul is a warp tile loop, a reduction a warp or
thread loop, a transpose a change of strides, rms_norm a composition the planner expands.
"""

from __future__ import annotations

RULES: dict[str, str] = {
    # unary (float in, float out)
    "exp": "expf({0})",
    "square": "({0} * {0})",
    "sqrt": "sqrtf({0})",
    "sigmoid": "mp::sigmoid({0})",
    "silu": "mp::silu({0})",
    "gelu": "mp::gelu_{approximate}({0})",
    "relu": "mp::relu({0})",
    "neg": "(-{0})",
    "reciprocal": "(1.0f / {0})",
    "mul_scalar": "({0} * {c})",
    "add_scalar": "({0} + {c})",
    "pow_scalar": "powf({0}, {c})",
    # binary (broadcasting is done by the caller's coordinates)
    "add": "({0} + {1})",
    "sub": "({0} - {1})",
    "mul": "({0} * {1})",
    "div": "({0} / {1})",
    # step templates of the emitter
    "matmul": "@matmul",
    "concat_matmul": "@matmul",
    "reduce_sum": "@reduce",
    "transpose": "@view",
    "concat": "@concat",
    "rms_norm": "@expand",
    "accum_sum": "@accum",
    "accum_sum_lastdim": "@accum_rows",
}
