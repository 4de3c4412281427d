"""Fixed-point requantization, TFLite/gemmlowp convention, in integer NumPy.

This module is the single source of truth for how an int32 accumulator becomes an int8
activation. The hardware requantizer and every golden layer call these functions.

A real multiplier ``m > 0`` (for a conv layer ``m = S_x * S_w[c] / S_y``) is represented
as an int32 fixed-point mantissa ``M0`` and a signed power-of-two exponent ``shift``::

    m ~= M0 * 2**(shift - 31),    2**30 <= M0 < 2**31

computed as TFLite's ``QuantizeMultiplier`` does::

    q, shift = frexp(m)                 # m = q * 2**shift, 0.5 <= q < 1
    M0 = round_half_away(q * 2**31)
    if M0 == 2**31:  M0 = 2**30; shift += 1      # q rounded up to 1.0
    if shift < -31:  M0 = 0; shift = 0            # m < 2**-32: the result is always 0

``shift > 0`` is a left shift, ``shift <= 0`` a right shift. This project supports
``MIN_SHIFT <= shift <= MAX_SHIFT`` (-31 .. 7, i.e. multipliers below 128); anything else is
refused with a ``ValueError`` rather than wrapped.

The integer path, for int32 ``x`` (all intermediate values are exact in int64)::

    left  = max(shift, 0);  right = max(-shift, 0)
    xs    = clamp(x * 2**left, INT32_MIN, INT32_MAX)          # saturating left shift (*)
    h     = SRDHM(xs, M0)
    y     = RDBPOT(h, right)

    SRDHM(a, b)  (SaturatingRoundingDoublingHighMul)
        if a == b == INT32_MIN:  return INT32_MAX              # the only overflow case
        p     = int64(a) * int64(b)
        nudge = 2**30 if p >= 0 else 1 - 2**30
        return trunc((p + nudge) / 2**31)                      # C division: toward zero

    RDBPOT(x, e)  (RoundingDivideByPOT), 0 <= e <= 31
        mask      = 2**e - 1
        remainder = x & mask
        threshold = (mask >> 1) + (1 if x < 0 else 0)
        return (x >> e) + (1 if remainder > threshold else 0)  # arithmetic shift

RDBPOT rounds to nearest with ties away from zero. SRDHM rounds ``a*b / 2**31`` to nearest
with ties away from zero when the product is positive but ties toward zero when it is negative
(gemmlowp's asymmetric nudge; e.g. ``SRDHM(-1, 2**30) == 0`` while ``SRDHM(1, 2**30) == 1``). (*) TFLite computes ``x * (1 << left)`` in int32 and leaves overflow undefined; here it
saturates, which agrees wherever TFLite is defined.

*Single rounding* (``rounding="single"``, :func:`multiply_by_quantized_multiplier_single`):
the same ``xs`` and ``M0``, but the product rounded once, to nearest with ties away from
zero::

    y = round_half_away(xs * M0 / 2**(31 + right))
      = sign(p) * ((|p| + 2**(30 + right)) >> (31 + right)),     p = int64(xs) * M0

This is how TFLite's FULLY_CONNECTED rounds (LiteRT computes ``round(acc * scale)`` in double
precision: the two agree except when ``acc * scale`` lies within about 2**-32 of the scale's
value of a half-integer, see golden.tflite), and how an average pool divides by a window size
exactly.

Requantization then adds the output zero point and saturates::

    q = clamp(y + zero_point, qmin, qmax)        # default [-128, 127], int8

Per-channel parameters broadcast along the last axis (channels last).
"""

import math

import numpy as np

__all__ = [
    "INT32_MIN", "INT32_MAX", "MIN_SHIFT", "MAX_SHIFT",
    "quantize_multiplier", "quantize_multipliers",
    "saturating_rounding_doubling_high_mul", "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier", "multiply_by_quantized_multiplier_single",
    "requantize", "add_bias", "ROUNDINGS",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
#: Supported range of the signed shift; the hardware requantizer is built for this range.
MIN_SHIFT = -31
MAX_SHIFT = 7


def quantize_multiplier(real_multiplier):
    """Return ``(M0, shift)`` for one real multiplier, as TFLite's ``QuantizeMultiplier``."""
    m = float(real_multiplier)
    if not math.isfinite(m) or m < 0:
        raise ValueError(f"real multiplier must be finite and >= 0, got {real_multiplier!r}")
    if m == 0.0:
        return 0, 0
    q, shift = math.frexp(m)
    m0 = math.floor(q * (1 << 31) + 0.5)   # q > 0: round half away from zero
    if m0 == (1 << 31):
        m0 //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > MAX_SHIFT:
        raise ValueError(
            f"real multiplier {m!r} needs shift {shift}, above the supported maximum "
            f"{MAX_SHIFT} (multipliers must be below {2.0 ** MAX_SHIFT})")
    return int(m0), int(shift)


def quantize_multipliers(real_multipliers):
    """Vector form of :func:`quantize_multiplier`: returns int32 ``M0`` and int32 ``shift`` arrays."""
    reals = np.atleast_1d(np.asarray(real_multipliers, dtype=np.float64))
    pairs = [quantize_multiplier(r) for r in reals.ravel()]
    m0 = np.array([p[0] for p in pairs], dtype=np.int32).reshape(reals.shape)
    shift = np.array([p[1] for p in pairs], dtype=np.int32).reshape(reals.shape)
    return m0, shift


def _as_int(name, x, lo, hi):
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise ValueError(f"{name} out of range [{lo}, {hi}]: min {arr.min()}, max {arr.max()}")
    return arr.astype(np.int64)


def _trunc_div_pow2(p, e):
    """C-style (toward zero) division of int64 ``p`` by ``2**e``."""
    return np.where(p >= 0, p >> e, -((-p) >> e))


def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 arrays (broadcasting)."""
    a64 = _as_int("a", a, INT32_MIN, INT32_MAX)
    b64 = _as_int("b", b, INT32_MIN, INT32_MAX)
    a64, b64 = np.broadcast_arrays(a64, b64)
    p = a64 * b64
    nudge = np.where(p >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    r = _trunc_div_pow2(p + nudge, 31)
    overflow = (a64 == INT32_MIN) & (b64 == INT32_MIN)
    return np.where(overflow, INT32_MAX, r).astype(np.int32)


def rounding_divide_by_pot(x, exponent):
    """gemmlowp ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded half away from zero."""
    x64 = _as_int("x", x, INT32_MIN, INT32_MAX)
    e = _as_int("exponent", exponent, 0, 31)
    x64, e = np.broadcast_arrays(x64, e)
    mask = (np.int64(1) << e) - 1
    remainder = x64 & mask
    threshold = (mask >> 1) + (x64 < 0)
    return ((x64 >> e) + (remainder > threshold)).astype(np.int32)


def multiply_by_quantized_multiplier(x, m0, shift):
    """``x * M0 * 2**(shift-31)`` with TFLite rounding; int32 in, int32 out."""
    x64 = _as_int("x", x, INT32_MIN, INT32_MAX)
    m0 = _as_int("M0", m0, 0, INT32_MAX)
    shift = _as_int("shift", shift, MIN_SHIFT, MAX_SHIFT)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    xs = np.clip(x64 << left, INT32_MIN, INT32_MAX)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(xs, m0), right)


def add_bias(acc, bias):
    """int32 ``acc + bias`` (bias broadcast on the last axis); refuses int32 overflow."""
    a = _as_int("acc", acc, INT32_MIN, INT32_MAX)
    s = a + _as_int("bias", bias, INT32_MIN, INT32_MAX)
    if s.size and (s.min() < INT32_MIN or s.max() > INT32_MAX):
        raise ValueError("acc + bias overflows int32; the accumulator would wrap")
    return s.astype(np.int32)


def multiply_by_quantized_multiplier_single(x, m0, shift):
    """``x * M0 * 2**(shift-31)`` rounded once, half away from zero (module docstring);
    int32 in, int64 out (a value past int32 only comes from a saturated left shift)."""
    x64 = _as_int("x", x, INT32_MIN, INT32_MAX)
    m0 = _as_int("M0", m0, 0, INT32_MAX)
    shift = _as_int("shift", shift, MIN_SHIFT, MAX_SHIFT)
    left = np.maximum(shift, 0)
    total = 31 + np.maximum(-shift, 0)
    xs = np.clip(x64 << left, INT32_MIN, INT32_MAX)
    p = xs * m0
    q = (np.abs(p) + (np.int64(1) << (total - 1))) >> total
    return np.where(p < 0, -q, q)


ROUNDINGS = ("double", "single")


def requantize(acc, m0, shift, zero_point, bias=None, qmin=-128, qmax=127, rounding="double"):
    """int32 accumulators (+ optional int32 bias) -> int8 (or [qmin, qmax]) activations.

    ``m0``, ``shift`` may be scalars (per tensor) or arrays over the last axis (per channel).
    ``qmin``/``qmax`` narrow the output range (a fused ReLU clamps at the zero point).
    ``rounding``: ``"double"`` (SRDHM then RoundingDivideByPOT, TFLite's conv) or
    ``"single"`` (one rounding half away from zero; module docstring).
    """
    if not -128 <= qmin <= qmax <= 127:
        raise ValueError(f"need -128 <= qmin <= qmax <= 127, got qmin={qmin}, qmax={qmax}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    zp = _as_int("zero_point", zero_point, -128, 127)
    x = acc if bias is None else add_bias(acc, bias)
    scale = (multiply_by_quantized_multiplier if rounding == "double"
             else multiply_by_quantized_multiplier_single)
    y = scale(x, m0, shift).astype(np.int64) + zp
    return np.clip(y, qmin, qmax).astype(np.int8)
