"""Integer softmax: int8 logits -> int8 probabilities (TFLite convention), integers only.

Output convention
-----------------
int8 with scale 1/256 and zero point -128 (TFLite's int8 softmax output): probability
``p ~= (q + 128) / 256``. The largest representable probability is 255/256, so a probability
above 255.5/256 (a dominant logit, or a vector of length 1) saturates at ``q = 127``.

Input
-----
int8 logits ``x`` with a known input scale ``s`` (``real = s * (x - zero_point)``; the zero
point cancels in softmax, so it is not needed). Softmax is taken over the last axis; one vector
is one AXI4-Stream frame in the hardware (:mod:`hw.softmax`).

Method (base-2 decomposition with one small table, then an exact integer divider)
------------------------------------------------------------------------------------------
Offline, :func:`softmax_params` turns the float ``s`` into a fixed-point multiplier with
:func:`golden.quant.quantize_multiplier`::

    (M0, shift) = quantize_multiplier(s * log2(e) * 2**(F - P))      F = 10, P = 22

It must have ``shift <= 0`` and ``M0 > 0`` (``ValueError`` otherwise), which accepts
``6.6e-7 <= s <= 2839`` approximately (:data:`MIN_SCALE`, :data:`MAX_SCALE`).

Per vector, integers only (every intermediate fits the stated width):

1. ``a_i = max(x) - x_i``                           0 .. 255 (the running maximum is the max)
2. ``u_i = multiply_by_quantized_multiplier(a_i * 2**P, M0, shift)``
   = ``a_i * s * log2(e)`` in fixed point with F = 10 fraction bits, >= 0. With ``a_i >= 0`` and
   ``shift <= 0`` this is ``h = (a_i * M0 + 2**8) >> 9`` (SRDHM) followed by
   ``u = (h + 2**(k-1)) >> k`` for ``k = -shift > 0`` (RDBPOT), i.e. round half up twice.
3. ``n_i = u_i >> F``, ``r_i = u_i mod 2**F``; ``e_i = 2**-u_i/2**F`` scaled by 2**15 is
   ``e_i = RDBPOT(EXP_TABLE[r_i], min(n_i, 31))``, where
   ``EXP_TABLE[r] = round(2**15 * 2**(-r / 2**F))`` (1024 entries of 16 bits, constant, built
   once; ``EXP_TABLE[0] = 2**15``). RDBPOT rounds half up here (``e_i >= 0``); ``e_i = 0`` once
   ``n_i >= 17``. The maximum element has ``e = 2**15`` exactly.
4. ``S = sum(e_i)``                                  2**15 .. L * 2**15 (23 bits for L = 256)
5. ``R = floor(2**32 / S)``                          <= 2**17 (18 bits): an exact divider
6. ``v_i = (e_i * R + 2**23) >> 24``                 round half up, 0 .. 256
7. ``q_i = min(v_i, 255) - 128``                     int8

Error budget: the only relevant approximation is the rounding of ``u`` to 2**-10 in log2
(<= 3.4e-4 relative in each ``e_i``, the maximum element is exact); the table rounding
(2**-16), the shift rounding (0.5 / S) and ``floor`` in ``R`` (< 2**-15 LSB in the output) are
far below that, so the error is the final rounding (0.5 LSB) plus about 0.1 LSB. Measured by
``python -m golden.softmax`` (module :func:`error_table`).
"""

import argparse
import math
from dataclasses import dataclass

import numpy as np

from .quant import multiply_by_quantized_multiplier, quantize_multiplier, rounding_divide_by_pot

__all__ = [
    "SoftmaxParams", "softmax_params", "softmax", "softmax_float", "error_stats", "error_table",
    "EXP_FRAC_BITS", "EXP_ONE_BITS", "IN_PRESHIFT", "RECIP_BITS", "OUT_SHIFT", "EXP_TABLE",
    "MIN_SCALE", "MAX_SCALE", "sum_bits",
]

#: F: fraction bits of the base-2 exponent ``u`` (and index bits of :data:`EXP_TABLE`).
EXP_FRAC_BITS = 10
#: ``e`` of the maximum element is ``2**EXP_ONE_BITS``.
EXP_ONE_BITS = 15
#: P: ``a`` is pre-shifted left by P before the fixed-point multiply (keeps the multiplier < 1).
IN_PRESHIFT = 22
#: K: the reciprocal is ``floor(2**K / S)``.
RECIP_BITS = 32
#: Output scale is 1/256, so ``v = e * R / 2**(K - 8)``.
OUT_SHIFT = RECIP_BITS - 8

#: ``EXP_TABLE[r] = round(2**15 * 2**(-r / 1024))``; a constant table (ROM in hardware).
EXP_TABLE = tuple(math.floor((1 << EXP_ONE_BITS) * 2.0 ** (-r / (1 << EXP_FRAC_BITS)) + 0.5)
                  for r in range(1 << EXP_FRAC_BITS))
_EXP_TABLE = np.array(EXP_TABLE, dtype=np.int64)

_LOG2E = 1.0 / math.log(2.0)
_REAL_PER_SCALE = _LOG2E * 2.0 ** (EXP_FRAC_BITS - IN_PRESHIFT)
#: Supported input scales (approximately): the multiplier must be in [2**-32, 1).
MIN_SCALE = 2.0 ** -32 / _REAL_PER_SCALE
MAX_SCALE = 1.0 / _REAL_PER_SCALE


def sum_bits(max_len):
    """Width of the unsigned sum ``S`` for vectors of up to ``max_len`` elements."""
    return (max_len * (1 << EXP_ONE_BITS)).bit_length()


@dataclass(frozen=True)
class SoftmaxParams:
    """The integers the hardware needs: ``M0`` (31-bit multiplier) and ``shift`` (<= 0).

    ``right_shift = -shift`` (0 .. 31) is what the hardware port takes."""
    multiplier: int
    shift: int

    @property
    def right_shift(self):
        return -self.shift


def softmax_params(in_scale):
    """Fixed-point parameters for logits of scale ``in_scale``; ``ValueError`` if unrepresentable."""
    try:
        s = float(in_scale)
    except (TypeError, ValueError):
        raise ValueError(f"in_scale must be a number, got {in_scale!r}") from None
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"in_scale must be finite and > 0, got {in_scale!r}")
    try:
        m0, shift = quantize_multiplier(s * _REAL_PER_SCALE)
    except ValueError:
        m0, shift = 1, 1
    if shift > 0:
        raise ValueError(f"in_scale {s!r} too large: the exponent multiplier "
                         f"{s * _REAL_PER_SCALE!r} does not fit below 1 "
                         f"(supported in_scale < {MAX_SCALE:.6g})")
    if m0 == 0:
        raise ValueError(f"in_scale {s!r} too small: the exponent multiplier underflows "
                         f"(supported in_scale >= {MIN_SCALE:.3g})")
    return SoftmaxParams(int(m0), int(shift))


def _check(x, params, max_len=None):
    if not isinstance(params, SoftmaxParams):
        raise ValueError(f"params must be SoftmaxParams (from softmax_params), got {params!r}")
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise ValueError(f"x must be int8, got {x.dtype}")
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"x needs a non-empty last axis, got shape {x.shape}")
    if max_len is not None and x.shape[-1] > max_len:
        raise ValueError(f"vector length {x.shape[-1]} is over L_max = {max_len} (max_len)")
    return x


def exp_values(x, params, max_len=None):
    """Steps 1-3: ``e_i`` (int64, 0 .. 2**15) for each element, over the last axis."""
    x = _check(x, params, max_len).astype(np.int64)
    a = x.max(axis=-1, keepdims=True) - x
    u = multiply_by_quantized_multiplier(a << IN_PRESHIFT, params.multiplier,
                                         params.shift).astype(np.int64)
    n = np.minimum(u >> EXP_FRAC_BITS, 31)
    r = u & ((1 << EXP_FRAC_BITS) - 1)
    return rounding_divide_by_pot(_EXP_TABLE[r], n).astype(np.int64)


def softmax(x, params, max_len=None):
    """int8 softmax over the last axis: int8 with scale 1/256, zero point -128.

    ``max_len``: optional L_max of the hardware; a longer vector raises ``ValueError`` (the
    arithmetic itself works for any length)."""
    e = exp_values(x, params, max_len)
    s = e.sum(axis=-1, keepdims=True)
    recip = (1 << RECIP_BITS) // s
    v = (e * recip + (1 << (OUT_SHIFT - 1))) >> OUT_SHIFT
    return (np.minimum(v, 255) - 128).astype(np.int8)


def softmax_float(x, in_scale):
    """Float64 softmax of the dequantized logits (the reference of the error table)."""
    z = np.asarray(x, dtype=np.float64) * float(in_scale)
    z = z - z.max(axis=-1, keepdims=True)
    ez = np.exp(z)
    return ez / ez.sum(axis=-1, keepdims=True)


def random_logits(rng, length):
    """One test vector: uniform, clustered near the top, or with repeated extremes."""
    kind = rng.integers(0, 4)
    if kind == 0:
        return rng.integers(-128, 128, length, dtype=np.int8)
    if kind == 1:                       # a cluster: many comparable probabilities
        c = int(rng.integers(-128, 128))
        w = int(rng.integers(1, 40))
        return np.clip(rng.integers(c - w, c + w + 1, length), -128, 127).astype(np.int8)
    if kind == 2:                       # a few dominant values over a low floor
        x = rng.integers(-128, -60, length)
        x[rng.integers(0, length, max(1, length // 16))] = rng.integers(60, 128)
        return x.astype(np.int8)
    return rng.choice(np.array([-128, 127, 0, -1], dtype=np.int8), length)


def error_stats(x, q, in_scale):
    """For one vector: ``(max |err| in LSB vs float, the same vs float clamped to 255/256,
    sum(p) - 1, sum(p) - 1 of the float softmax rounded to int8)``. The last is the floor
    that the 8-bit output format alone puts on the sum deviation."""
    p = softmax_float(x, in_scale) * 256.0
    got = q.astype(np.float64) + 128.0
    err = np.abs(got - p).max()
    err_clamped = np.abs(got - np.minimum(p, 255.0)).max()
    ideal = np.minimum(np.floor(p + 0.5), 255.0)
    return err, err_clamped, got.sum() / 256.0 - 1.0, ideal.sum() / 256.0 - 1.0


#: Input scales of the error table (logit ranges from +-0.5 to +-256).
TABLE_SCALES = (1 / 256, 1 / 64, 1 / 32, 0.05, 0.1, 0.25, 0.5, 2.0)


def error_table(count=10000, seed=1, max_len=256, scales=TABLE_SCALES):
    """Rows ``(scale, vectors, max err, max err clamped, mean err, max |sum-1|, mean sum-1,
    max |sum-1| of the rounded float softmax)``."""
    rng = np.random.default_rng(seed)
    rows = []
    per = -(-count // len(scales))
    for s in scales:
        params = softmax_params(s)
        errs, errc, devs, ideal = [], [], [], []
        for _ in range(per):
            x = random_logits(rng, int(rng.integers(1, max_len + 1)))
            e, ec, d, di = error_stats(x, softmax(x, params), s)
            ideal.append(abs(di))
            errs.append(e)
            errc.append(ec)
            devs.append(d)
        devs = np.array(devs)
        rows.append((s, per, max(errs), max(errc), float(np.mean(errs)),
                     float(np.abs(devs).max()), float(devs.mean()), max(ideal)))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description="Error table of the integer softmax vs float64.")
    ap.add_argument("--count", type=int, default=10000, help="total random vectors (>= 10000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-len", type=int, default=256)
    args = ap.parse_args(argv)
    rows = error_table(args.count, args.seed, args.max_len)
    n = sum(r[1] for r in rows)
    print(f"integer softmax vs float64 softmax: {n} random vectors, lengths 1..{args.max_len}, "
          f"seed {args.seed}")
    print("errors in output LSBs (1/256); 'clamped' compares with min(p, 255/256), the best "
          "int8 value")
    print(f"{'in_scale':>9} {'vectors':>7} {'max err':>8} {'clamped':>8} {'mean err':>8} "
          f"{'max|sum-1|':>10} {'mean sum-1':>10} {'float->int8 max|sum-1|':>22}")
    for s, cnt, e, ec, me, dmax, dmean, di in rows:
        print(f"{s:>9.5g} {cnt:>7} {e:>8.4f} {ec:>8.4f} {me:>8.4f} {dmax:>10.5f} {dmean:>+10.5f} "
              f"{di:>22.5f}")
    print(f"{'all':>9} {n:>7} {max(r[2] for r in rows):>8.4f} {max(r[3] for r in rows):>8.4f} "
          f"{sum(r[4] * r[1] for r in rows) / n:>8.4f} {max(r[5] for r in rows):>10.5f} "
          f"{sum(r[6] * r[1] for r in rows) / n:>+10.5f} {max(r[7] for r in rows):>22.5f}")


if __name__ == "__main__":
    main()
