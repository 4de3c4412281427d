"""golden.quant against independent formulations: exact rationals (fractions.Fraction) for
SRDHM / RDBPOT, and float rounding on cases where float arithmetic is exact."""

import math
from fractions import Fraction

import numpy as np
import pytest

from golden.quant import (INT32_MAX, INT32_MIN, MAX_SHIFT, MIN_SHIFT,
                          multiply_by_quantized_multiplier,
                          multiply_by_quantized_multiplier_single, quantize_multiplier, quantize_multipliers, requantize,
                          rounding_divide_by_pot, saturating_rounding_doubling_high_mul)

SEED = 20261122


def ref_srdhm(a, b):
    """Nearest integer to a*b/2**31: ties away from zero for positive products, toward zero
    for negative ones (gemmlowp's nudge), saturating the single overflow case."""
    if a == b == INT32_MIN:
        return INT32_MAX
    v = Fraction(a * b, 1 << 31)
    if v >= 0:
        return math.floor(v + Fraction(1, 2))
    return -math.ceil(-v - Fraction(1, 2))


def ref_rdbpot(x, e):
    v = Fraction(x, 1 << e)
    return math.floor(v + Fraction(1, 2)) if v >= 0 else -math.floor(-v + Fraction(1, 2))


def interesting_int32(rng, n):
    edge = np.array([INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX,
                     -(1 << 30), 1 << 30, -(1 << 15), 1 << 15], np.int64)
    return np.concatenate([edge, rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True)]).astype(np.int32)


def test_srdhm_matches_rational_reference():
    rng = np.random.default_rng(SEED)
    a = interesting_int32(rng, 400)
    b = interesting_int32(rng, 400)
    A, B = np.meshgrid(a[:40], b[:40])
    pairs = list(zip(A.ravel(), B.ravel())) + list(zip(a, rng.permutation(b)))
    aa = np.array([p[0] for p in pairs], np.int32)
    bb = np.array([p[1] for p in pairs], np.int32)
    got = saturating_rounding_doubling_high_mul(aa, bb)
    want = [ref_srdhm(int(x), int(y)) for x, y in pairs]
    assert got.tolist() == want, f"seed={SEED}"


def test_srdhm_ties():
    # a * 2**30 / 2**31 = a / 2: odd a is an exact tie.
    a = np.array([1, 3, -1, -3, 5, -5], np.int32)
    got = saturating_rounding_doubling_high_mul(a, np.int32(1 << 30))
    assert got.tolist() == [1, 2, 0, -1, 3, -2]


def test_rdbpot_matches_rational_reference_including_ties():
    rng = np.random.default_rng(SEED + 1)
    xs = interesting_int32(rng, 300)
    for e in [0, 1, 2, 5, 17, 30, 31]:
        got = rounding_divide_by_pot(xs, e)
        want = [ref_rdbpot(int(x), e) for x in xs]
        assert got.tolist() == want, f"exponent {e}, seed={SEED + 1}"
    # explicit ties: +-2.5 -> +-3, +-0.5 -> +-1
    assert rounding_divide_by_pot(np.array([5, -5, 1, -1], np.int32), 1).tolist() == [3, -3, 1, -1]


def test_requantize_equals_float_rounding_where_exact():
    """M0 = 2**30 makes the multiplier an exact power of two, 2**(shift-1); with even x SRDHM
    is exact, so the result must equal float round-half-away-from-zero of x * 2**(shift-1)."""
    rng = np.random.default_rng(SEED + 2)
    x = (rng.integers(-(1 << 20), 1 << 20, 2000) * 2).astype(np.int32)
    x[:8] = [2, -2, 6, -6, 10, -10, 0, 4]          # ties after the shift
    for shift in [0, -1, -3, -7, -12]:
        for zp in [-128, -5, 0, 17]:
            got = requantize(x, 1 << 30, shift, zp)
            v = x.astype(np.float64) * 2.0 ** (shift - 1)
            rounded = np.sign(v) * np.floor(np.abs(v) + 0.5)
            want = np.clip(rounded + zp, -128, 127).astype(np.int8)
            np.testing.assert_array_equal(got, want, err_msg=f"shift={shift} zp={zp}")


def test_quantize_multiplier_tflite_convention():
    rng = np.random.default_rng(SEED + 3)
    for m in np.concatenate([10.0 ** rng.uniform(-9, 2, 500), [0.5, 1.0, 0.25, 1e-3, 127.9]]):
        m0, shift = quantize_multiplier(m)
        assert (1 << 30) <= m0 < (1 << 31), m
        # round(q * 2**31) is within half a unit of q * 2**31
        assert abs(Fraction(m0) - Fraction(float(m)) * 2 ** (31 - shift)) <= Fraction(1, 2)
    # q rounds up to exactly 1.0: the carry moves into the exponent
    assert quantize_multiplier(1.0 - 2.0 ** -40) == (1 << 30, 1)
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(2.0 ** -40) == (0, 0)           # below 2**-32: always 0
    m0, s = quantize_multipliers([0.5, 0.75])
    assert m0.dtype == np.int32 and m0.tolist() == [1 << 30, 3 << 29] and s.tolist() == [0, 0]


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), 2.0 ** MAX_SHIFT])
def test_quantize_multiplier_refuses(bad):
    with pytest.raises(ValueError, match="multiplier"):
        quantize_multiplier(bad)


def test_left_shift_saturates():
    # multiplier 4.0: M0 = 2**30, shift = 3; 2**29 * 8 saturates to INT32_MAX before SRDHM
    m0, shift = quantize_multiplier(4.0)
    got = multiply_by_quantized_multiplier(np.array([1, -3, 1 << 29, -(1 << 29)], np.int32), m0, shift)
    assert got.tolist() == [4, -12, (INT32_MAX + 1) // 2, INT32_MIN // 2]


def test_per_channel_and_bias():
    rng = np.random.default_rng(SEED + 4)
    acc = rng.integers(-(1 << 20), 1 << 20, (5, 3), dtype=np.int32)
    bias = rng.integers(-1000, 1000, 3, dtype=np.int32)
    m0, shift = quantize_multipliers([0.01, 0.002, 0.3])
    got = requantize(acc, m0, shift, -7, bias=bias, qmin=-7)
    for c in range(3):
        col = requantize(acc[:, c] + bias[c], int(m0[c]), int(shift[c]), -7, qmin=-7)
        np.testing.assert_array_equal(got[:, c], col)
    assert got.min() >= -7


def test_single_rounding_matches_rational_reference():
    """rounding="single": x * 2**max(shift, 0) saturated to int32, times M0 / 2**(31 - min(shift,
    0)), rounded once half away from zero; ties forced on a third of the cases."""
    rng = np.random.default_rng(SEED + 5)
    xs = interesting_int32(rng, 300)
    m0s = rng.integers(0, INT32_MAX, xs.size, endpoint=True)
    shifts = rng.integers(MIN_SHIFT, MAX_SHIFT, xs.size, endpoint=True)
    ties = rng.random(xs.size) < 0.33
    m0s[ties] = 1 << 30                                  # x / 2**(1 + right): odd x is a tie
    shifts[ties] = rng.integers(-20, 1, int(ties.sum()))
    got = multiply_by_quantized_multiplier_single(xs, m0s, shifts)
    for x, m0, sh, g in zip(xs.tolist(), m0s.tolist(), shifts.tolist(), got.tolist()):
        xsat = min(max(x << max(sh, 0), INT32_MIN), INT32_MAX)
        want = ref_rdbpot(xsat * m0, 31 + max(-sh, 0))
        assert g == want, (x, m0, sh)
    q = requantize(xs, m0s.astype(np.int32), shifts.astype(np.int32), 3, rounding="single")
    np.testing.assert_array_equal(q, np.clip(got + 3, -128, 127))


def test_bias_overflow_and_bad_args_refused():
    with pytest.raises(ValueError, match="rounding"):
        requantize(np.array([1], np.int32), 1 << 30, 0, 0, rounding="even")
    with pytest.raises(ValueError, match="overflow"):
        requantize(np.array([INT32_MAX], np.int32), 1 << 30, 0, 0, bias=np.array([1], np.int32))
    with pytest.raises(ValueError, match="shift"):
        requantize(np.array([1], np.int32), 1 << 30, MAX_SHIFT + 1, 0)
    with pytest.raises(ValueError, match="zero_point"):
        requantize(np.array([1], np.int32), 1 << 30, 0, 200)
    with pytest.raises(ValueError, match="integer"):
        requantize(np.array([1.5]), 1 << 30, 0, 0)
