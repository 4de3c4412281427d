"""Max and average pooling of channels-last (NHWC) int8 feature maps, integer only.

Shapes: ``x`` is ``(N, H, W, C)`` int8; the result is ``(N, Ho, Wo, C)`` int8 with::

    Ho = (H + 2*pad - k) // stride + 1,     Wo = (W + 2*pad - k) // stride + 1

Window ``(oy, ox)`` covers padded rows ``oy*stride .. oy*stride + k - 1`` and padded columns
``ox*stride .. ox*stride + k - 1``; padded coordinate ``t`` is input coordinate ``t - pad``.

Parameters: ``k >= 1``, ``stride >= 1``, ``0 <= pad <= k // 2`` (so every window holds at least
one real pixel, as in PyTorch), ``k <= H + 2*pad`` and ``k <= W + 2*pad``. Anything else raises a
``ValueError`` that names the parameter.

Padding
-------
* max pooling: padding never wins (it acts as -128, which can only tie a real value; every
  window has a real pixel).
* average pooling: a padding position counts as the zero point (the real value 0) and the
  divisor is always ``k*k`` (PyTorch's ``count_include_pad=True`` in the quantized domain).
  The mean of int8 values in the input's quantization is the output in the same quantization.

Average rounding
----------------
``avg = round_half_away_from_zero(S / k**2)`` for the window sum ``S``, computed without a
divider. With ``d = k*k`` and ``(M, AVG_SHIFT) = avg_pool_multiplier(k)``::

    M = ceil(2**AVG_SHIFT / (2*d))                         (AVG_SHIFT = 32)
    n = 2*|S| + d                                          (so n / (2d) = |S|/d + 1/2)
    avg = sign(S) * ((n * M) >> AVG_SHIFT)

which equals ``sign(S) * floor((2|S| + d) / (2d))`` for every ``|S| <= 128*d`` as long as
``514 * k**4 < 2**32``, i.e. for ``k <= MAX_POOL_K`` (a unit test checks every sum).
"""

import numpy as np

__all__ = ["AVG_SHIFT", "MAX_POOL_K", "pool_output_size", "check_pool_params",
           "avg_pool_multiplier", "divide_round_half_away", "max_pool2d", "avg_pool2d",
           "pool_windows"]

AVG_SHIFT = 32
#: Largest kernel whose average the multiplier-and-shift divides exactly (514 k^4 < 2^32).
MAX_POOL_K = 53


def _check_int(name, v, lo, hi=None):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {v!r}")
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {rng}, got {v}")
    return int(v)


def pool_output_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def check_pool_params(h, w, k, stride, pad):
    """Validate pooling parameters against an ``h x w`` input; returns ``(Ho, Wo)``."""
    k = _check_int("k", k, 1)
    stride = _check_int("stride", stride, 1)
    pad = _check_int("pad", pad, 0, k // 2)
    if k > h + 2 * pad:
        raise ValueError(f"k={k} is larger than the padded height H + 2*pad = {h + 2 * pad}")
    if k > w + 2 * pad:
        raise ValueError(f"k={k} is larger than the padded width W + 2*pad = {w + 2 * pad}")
    return pool_output_size(h, k, stride, pad), pool_output_size(w, k, stride, pad)


def _check_x(x):
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise ValueError(f"x must be int8, got dtype {x.dtype}")
    if x.ndim != 4 or 0 in x.shape:
        raise ValueError(f"x must be a non-empty NHWC array (N, H, W, C), got shape {x.shape}")
    return x


def avg_pool_multiplier(k):
    """``(M, AVG_SHIFT)`` with ``M = ceil(2**AVG_SHIFT / (2*k*k))``, for 1 <= k <= MAX_POOL_K."""
    k = _check_int("k", k, 1, MAX_POOL_K)
    d2 = 2 * k * k
    return -(-(1 << AVG_SHIFT) // d2), AVG_SHIFT


def divide_round_half_away(s, k):
    """``round_half_away(s / k**2)`` for int64 window sums ``|s| <= 128*k*k``, by multiplier
    and shift exactly as the hardware does."""
    m, shift = avg_pool_multiplier(k)
    s = np.asarray(s, np.int64)
    if s.size and np.abs(s).max() > 128 * k * k:
        raise ValueError(f"window sum out of range for k={k}")
    n = 2 * np.abs(s) + k * k                   # < 2**20, so n * M < 2**51: exact in int64
    q = (n * np.int64(m)) >> shift
    return np.where(s < 0, -q, q)


def pool_windows(x, k, stride, pad, pad_value):
    """``(N, Ho, Wo, k*k, C)`` int64 array of every window's elements (padding = pad_value)."""
    x = _check_x(x)
    n, h, w, c = x.shape
    ho, wo = check_pool_params(h, w, k, stride, pad)
    xp = np.full((n, h + 2 * pad, w + 2 * pad, c), pad_value, np.int64)
    xp[:, pad:pad + h, pad:pad + w, :] = x
    win = np.empty((n, ho, wo, k * k, c), np.int64)
    for i in range(k):
        for j in range(k):
            win[:, :, :, i * k + j, :] = xp[:, i:i + stride * (ho - 1) + 1:stride,
                                            j:j + stride * (wo - 1) + 1:stride, :]
    return win


def max_pool2d(x, k, stride, pad=0):
    """Max pooling; padding never wins."""
    return pool_windows(x, k, stride, pad, -128).max(axis=3).astype(np.int8)


def avg_pool2d(x, k, stride, pad=0, zero_point=0):
    """Average pooling; padding counts as ``zero_point``, divisor ``k*k``, rounding half away
    from zero through :func:`avg_pool_multiplier`."""
    zp = _check_int("zero_point", zero_point, -128, 127)
    s = pool_windows(x, k, stride, pad, zp).sum(axis=3)
    return divide_round_half_away(s, k).astype(np.int8)
