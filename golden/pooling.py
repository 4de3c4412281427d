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

__all__ = ["AVG_SHIFT", "MAX_POOL_K", "MAX_DIVISOR", "pool_output_size", "check_pool_params",
           "avg_pool_multiplier", "divisor_multiplier", "divide_round_half_away",
           "divide_by_count", "max_pool2d", "avg_pool2d", "pool_windows", "window_taps",
           "max_pool2d_window", "avg_pool2d_window", "COUNT_MODES", "average_requantizer"]

AVG_SHIFT = 32
#: Largest kernel whose average the multiplier-and-shift divides exactly (514 k^4 < 2^32).
MAX_POOL_K = 53
#: Largest divisor (window size) the multiplier-and-shift divides exactly: 514 d^2 < 2^32.
MAX_DIVISOR = 2890
#: Average pooling divisors: "kernel" (every tap, padding counting as the zero point:
#: PyTorch's count_include_pad) or "valid" (only the taps inside the input: TFLite, ONNX's
#: count_include_pad = 0).
COUNT_MODES = ("kernel", "valid")


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
    return divisor_multiplier(k * k)


def divisor_multiplier(d):
    """``(M, AVG_SHIFT)`` with ``M = ceil(2**AVG_SHIFT / (2*d))``, for 1 <= d <= MAX_DIVISOR:
    ``sign(S) * ((2|S| + d) * M >> AVG_SHIFT)`` is ``round_half_away(S / d)`` for ``|S| <=
    128 d``."""
    d = _check_int("divisor", d, 1, MAX_DIVISOR)
    return -(-(1 << AVG_SHIFT) // (2 * d)), AVG_SHIFT


def divide_by_count(s, d):
    """``round_half_away(s / d)`` elementwise for window sums ``s`` and divisors ``d`` (arrays
    of the same shape, or ``d`` a number), by multiplier and shift as the hardware does."""
    s = np.asarray(s, np.int64)
    d = np.broadcast_to(np.asarray(d, np.int64), s.shape)
    if s.size and np.any(np.abs(s) > 128 * d):
        raise ValueError("window sum out of range for its divisor")
    out = np.empty_like(s)
    for v in np.unique(d):
        m, shift = divisor_multiplier(int(v))
        sel = d == v
        n = 2 * np.abs(s[sel]) + v
        q = (n * np.int64(m)) >> shift
        out[sel] = np.where(s[sel] < 0, -q, q)
    return out


def average_requantizer(d):
    """``(m0, shift, rounding)`` with ``golden.quant.requantize(S, m0, shift, 0, rounding=
    rounding) == divide_by_count(S, d)`` for every integer ``|S| <= 128 d`` (every sum is
    checked), or None when no candidate near ``1/d`` does. Single rounding (half away from
    zero, like the divisor) is tried first, then double; for each, the mantissa of
    ``quantize_multiplier(1/d)`` and its neighbours."""
    from .quant import quantize_multiplier, requantize
    d = _check_int("divisor", d, 1, MAX_DIVISOR)
    s = np.arange(-128 * d, 128 * d + 1, dtype=np.int64)
    want = np.clip(divide_by_count(s, d), -128, 127)
    m0, shift = quantize_multiplier(1.0 / d)
    for rounding in ("single", "double"):
        for dm in (0, 1, -1, 2, -2):
            if not 0 < m0 + dm < 1 << 31:
                continue
            if np.array_equal(requantize(s, m0 + dm, shift, 0, rounding=rounding), want):
                return m0 + dm, shift, rounding
    return None


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


def window_taps(x, win, pad_value):
    """``(N, Ho, Wo, kh*kw, C)`` int64 window elements for a :class:`golden.conv.Window`
    (padding = ``pad_value``), and ``(Ho, Wo, kh*kw)`` booleans: which taps are inside."""
    from .conv import im2col_window
    x = _check_x(x)
    n, h, w, c = x.shape
    cols, (n, ho, wo) = im2col_window(x.astype(np.int64), win, pad_value=pad_value)
    taps = cols.reshape(n, ho, wo, win.kh * win.kw, c)
    ones = np.ones((1, h, w, 1), np.int64)
    inside, _ = im2col_window(ones, win, pad_value=0)
    return taps, inside.reshape(ho, wo, win.kh * win.kw).astype(bool)


def max_pool2d_window(x, win):
    """Max pooling over a :class:`golden.conv.Window`; padding never wins (every window
    must hold a real pixel)."""
    taps, inside = window_taps(x, win, -128)
    if not inside.any(axis=-1).all():
        raise ValueError("a pooling window lies wholly in the padding")
    return taps.max(axis=3).astype(np.int8)


def avg_pool2d_window(x, win, zero_point=0, count="kernel"):
    """Average pooling over a :class:`golden.conv.Window`, rounding half away from zero:
    ``count="kernel"`` divides by ``kh*kw`` with padding counting as ``zero_point``;
    ``count="valid"`` sums only the taps inside the input and divides by their number
    (TFLite's AVERAGE_POOL_2D)."""
    zp = _check_int("zero_point", zero_point, -128, 127)
    if count not in COUNT_MODES:
        raise ValueError(f"count must be one of {COUNT_MODES}, got {count!r}")
    if count == "kernel":
        taps, _ = window_taps(x, win, zp)
        return divide_by_count(taps.sum(axis=3), win.kh * win.kw).astype(np.int8)
    taps, inside = window_taps(x, win, 0)
    counts = inside.sum(axis=-1)
    if not counts.all():
        raise ValueError("a pooling window lies wholly in the padding")
    s = taps.sum(axis=3)
    return divide_by_count(s, counts[None, :, :, None].repeat(s.shape[-1], -1)
                           .repeat(s.shape[0], 0)).astype(np.int8)
