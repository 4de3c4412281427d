"""Exact rational formulations of the integer rounding steps, for tests: each step's rounding
written as a rule on fractions, independent of the bit tricks of golden.quant."""

import math
from fractions import Fraction

from golden.eltwise import ADD_LEFT_SHIFT


def fraction_round_half_up(v):
    return math.floor(v + Fraction(1, 2))


def fraction_round_half_away(v):
    return math.floor(v + Fraction(1, 2)) if v >= 0 else -math.floor(-v + Fraction(1, 2))


def srdhm_exact(a, b):
    """SaturatingRoundingDoublingHighMul as a rational: a*b/2**31 rounded half up (gemmlowp's
    asymmetric nudge rounds positive ties away from zero and negative ties toward zero)."""
    return fraction_round_half_up(Fraction(a * b, 1 << 31))


def rdbpot_exact(x, e):
    """RoundingDivideByPOT: x / 2**e rounded half away from zero."""
    return fraction_round_half_away(Fraction(x, 1 << e))


def mbqm_exact(x, m0, shift):
    """MultiplyByQuantizedMultiplier: x * 2**max(shift, 0), SRDHM by M0, then the right shift."""
    return rdbpot_exact(srdhm_exact(x << max(shift, 0), m0), max(-shift, 0))


def add_exact(x1, x2, p, qmin=-128, qmax=127):
    """TFLite ADD of two int8 values with golden.eltwise.AddParams ``p``."""
    a1 = mbqm_exact((int(x1) - p.z1) << ADD_LEFT_SHIFT, p.m1, p.shift1)
    a2 = mbqm_exact((int(x2) - p.z2) << ADD_LEFT_SHIFT, p.m2, p.shift2)
    y = mbqm_exact(a1 + a2, p.out_multiplier, p.out_shift) + p.z_out
    return min(max(y, qmin), qmax)
