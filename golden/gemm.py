"""int8 x int8 -> int32 matrix multiplication with int32 bias.

``C[m, n] = sum_k A[m, k] * B[k, n] + bias[n]``, exact in int64 and then checked to fit int32.
A shape whose result would leave int32 is refused (``ValueError``), never wrapped: the hardware
accumulators are 32 bits wide and would wrap silently.

``A`` is ``M x K`` int8, ``B`` is ``K x N`` int8, ``bias`` is ``N`` int32 (per output column,
i.e. per output channel when ``B`` holds filters).
"""

import numpy as np

from .quant import INT32_MAX, INT32_MIN

__all__ = ["gemm", "check_operands", "check_shape", "MAX_K"]

#: Longest reduction for which no int8 x int8 sum can leave int32: K * 2**14 <= 2**31 - 1.
MAX_K = (1 << 17) - 1


def check_shape(M, K, N):
    """Validate a GEMM shape ``M x K x N``; ``ValueError`` names the offending dimension."""
    for name, v in (("M", M), ("K", K), ("N", N)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {v!r}")
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if K > MAX_K:
        raise ValueError(f"K={K} exceeds MAX_K={MAX_K}: int32 accumulators could overflow")
    return int(M), int(K), int(N)


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
