"""int8 x int8 -> int32 matrix multiplication with int32 bias.

``C[m, n] = sum_k A[m, k] * B[k, n] + bias[n]``, exact in int64 and then checked to fit int32.
A shape whose result would leave int32 is refused (``ValueError``), never wrapped: the hardware
accumulators are 32 bits wide and would wrap silently.

``A`` is ``M x K`` int8, ``B`` is ``K x N`` int8, ``bias`` is ``N`` int32 (per output column,
i.e. per output channel when ``B`` holds filters).
"""

import numpy as np

from .quant import INT32_MAX, INT32_MIN

__all__ = ["gemm", "check_operands"]


def check_operands(a, b, bias=None):
    """Validate GEMM operands; return them as arrays. Raises ``ValueError`` naming the operand."""
    a = np.asarray(a)
    b = np.asarray(b)
    for name, x in (("A", a), ("B", b)):
        if x.dtype != np.int8:
            raise ValueError(f"{name} must be int8, got {x.dtype}")
        if x.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
        if 0 in x.shape:
            raise ValueError(f"{name} must not be empty, got shape {x.shape}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"inner dimensions differ: A is {a.shape}, B is {b.shape}")
    if bias is not None:
        bias = np.asarray(bias)
        if bias.dtype != np.int32:
            raise ValueError(f"bias must be int32, got {bias.dtype}")
        if bias.shape != (b.shape[1],):
            raise ValueError(f"bias must have shape ({b.shape[1]},), got {bias.shape}")
    return a, b, bias


def gemm(a, b, bias=None):
    """Return ``A @ B (+ bias)`` as int32; ``ValueError`` if any element overflows int32."""
    a, b, bias = check_operands(a, b, bias)
    c = a.astype(np.int64) @ b.astype(np.int64)
    if bias is not None:
        c = c + bias.astype(np.int64)
    if c.min() < INT32_MIN or c.max() > INT32_MAX:
        raise ValueError("GEMM result overflows int32 (reduce K or the bias)")
    return c.astype(np.int32)
